import type { Command } from "@commander-js/extra-typings";
import type { CliContext } from "../main.js";

export function registerDemo(program: Command, ctx: CliContext): void {
  program
    .command("demo")
    .description("Run the whole job on two local QEMUs: plan, refuse, fix with a policy, migrate, verify.")
    .action(async () => {
      const { demoAction } = await import("./demo-action.js");
      await demoAction(ctx);
    });
}
