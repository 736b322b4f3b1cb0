import type { Command } from "@commander-js/extra-typings";
import type { CliContext } from "../main.js";

export function registerDemo(program: Command, ctx: CliContext): void {
  program
    .command("demo")
    .description(
      "Run the whole job on two local QEMUs with a writing Linux guest: plan, refuse, fix with a policy, migrate, verify, prove the next backup.",
    )
    .option(
      "--json",
      "print the demo's numbers (plan, verification, backup proof) as one JSON document on stdout",
    )
    .action(async (opts) => {
      const { demoAction } = await import("./demo-action.js");
      await demoAction(ctx, opts);
    });
}
