import { Option, type Command } from "@commander-js/extra-typings";
import type { CliContext } from "../main.js";
import { socketUri } from "./migrate.js";

export function registerPlan(program: Command, ctx: CliContext): void {
  program
    .command("plan")
    .description(
      "Decide every bitmap's fate against both live QEMUs and check everything QEMU would fail on. Changes nothing.",
    )
    .requiredOption(
      "--source <addr>",
      "source QMP monitor: unix:/path, a socket path, tcp:HOST:PORT, or ssh://[USER@]HOST[:PORT]/path",
    )
    .requiredOption("--dest <addr>", "destination QMP monitor (a QEMU started with -incoming)")
    .option("--uri <uri>", "the migration URI that will be used (unix:/path or tcp:HOST:PORT)", socketUri)
    .option("--policy <file>", "policy file (YAML or JSON): allow, deny, map, defaults")
    .option("--postcopy", "plan a migration that sends bitmaps after the switchover")
    .option("--copy-storage", "plan a migration without shared storage (disks copied to the destination)")
    .option("--nbd <addr>", "with --copy-storage: where the destination's NBD server will listen", socketUri)
    .option("--tls-creds <dir>", "the run will use QEMU's TLS with the x509 files in DIR")
    .option("--tls-hostname <name>", "with --tls-creds: the name the destination's certificate carries")
    .option("--insecure", "accept a plaintext TCP NBD export (a warning instead of INSECURE_NBD)")
    .option("--json", "print the plan as one JSON document on stdout")
    .addOption(new Option("--html <file>", "also write the plan as a self-contained HTML picture"))
    .addHelpText(
      "after",
      `
Exit status: 0 the plan has no errors, 1 it has errors, 2 bad usage or policy file, 3 cannot connect.

Examples:
  bitferry plan --source /run/src.qmp --dest /run/dst.qmp
  bitferry plan --source unix:/run/src.qmp --dest ssh://root@host2/run/dst.qmp --policy policy.yaml --json
  bitferry plan --source /run/src.qmp --dest ssh://host2/run/dst.qmp --uri tcp:host2:4445 --tls-creds /etc/pki/qemu`,
    )
    .action(async (opts) => {
      const { planAction } = await import("./plan-action.js");
      await planAction(opts, ctx);
    });
}
