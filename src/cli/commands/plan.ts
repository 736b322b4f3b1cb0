import { Option, type Command } from "@commander-js/extra-typings";
import type { CliContext } from "../main.js";

export function registerPlan(program: Command, ctx: CliContext): void {
  program
    .command("plan")
    .description(
      "Decide every bitmap's fate against both live QEMUs and check everything QEMU would fail on. Changes nothing.",
    )
    .requiredOption("--source <addr>", "source QMP monitor: unix:/path, a socket path, or tcp:HOST:PORT")
    .requiredOption("--dest <addr>", "destination QMP monitor (a QEMU started with -incoming)")
    .option("--policy <file>", "policy file (YAML or JSON): allow, deny, map, defaults")
    .option("--postcopy", "plan a migration that sends bitmaps after the switchover")
    .option("--copy-storage", "plan a migration without shared storage (disks copied to the destination)")
    .option("--json", "print the plan as one JSON document on stdout")
    .addOption(new Option("--html <file>", "also write the plan as a self-contained HTML picture"))
    .addHelpText(
      "after",
      `
Exit status: 0 the plan has no errors, 1 it has errors, 2 bad usage or policy file, 3 cannot connect.

Examples:
  bitferry plan --source /run/src.qmp --dest /run/dst.qmp
  bitferry plan --source unix:/run/src.qmp --dest tcp:10.0.0.2:4444 --policy policy.yaml --json`,
    )
    .action(async (opts) => {
      const { planAction } = await import("./plan-action.js");
      await planAction(opts, ctx);
    });
}
