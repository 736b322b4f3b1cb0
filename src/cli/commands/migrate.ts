import { InvalidArgumentError, Option, type Command } from "@commander-js/extra-typings";
import type { CliContext } from "../main.js";
import { AddressSyntaxError, parseSocketAddress } from "../../qmp/address.js";

function positiveInt(what: string): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0)
      throw new InvalidArgumentError(`${what} must be a positive whole number`);
    return n;
  };
}

/**
 * `--uri` and `--nbd`: `unix:/path` or `tcp:HOST:PORT`. A malformed one (`tcp:host`, `unix:`) must fail as the
 * parser's own InvalidArgumentError: any other error escapes commander's usage handling (exit 1, no JSON).
 */
export function socketUri(v: string): string {
  if (v.startsWith("unix:") || v.startsWith("tcp:")) {
    try {
      parseSocketAddress(v);
    } catch (err) {
      if (err instanceof AddressSyntaxError) throw new InvalidArgumentError(err.message);
      throw err;
    }
    return v;
  }
  throw new InvalidArgumentError("expected unix:/path or tcp:HOST:PORT");
}

export function registerMigrate(program: Command, ctx: CliContext): void {
  program
    .command("migrate")
    .description(
      "Plan, migrate with the bitmaps, verify every bitmap on arrival; on failure cancel and repair the source.",
    )
    .requiredOption(
      "--source <addr>",
      "source QMP monitor: unix:/path, a socket path, tcp:HOST:PORT, or ssh://[USER@]HOST[:PORT]/path",
    )
    .requiredOption("--dest <addr>", "destination QMP monitor (a QEMU started with -incoming)")
    .option(
      "--uri <uri>",
      "migration URI the source sends to (unix:/path or tcp:HOST:PORT); required unless --dest is ssh:// (then the SSH tunnel)",
      socketUri,
    )
    .option("--policy <file>", "policy file (YAML or JSON): allow, deny, map, defaults")
    .option("--postcopy", "send the bitmaps after the switchover (only for bitmaps on a single node)")
    .option(
      "--copy-storage",
      "no shared storage: copy every disk to the destination's (empty) nodes, bitmaps included",
    )
    .option(
      "--nbd <addr>",
      "with --copy-storage: where the destination's NBD server listens, as the source reaches it (unix:/path or tcp:HOST:PORT; default: a private unix socket, through SSH when --dest is ssh://)",
      socketUri,
    )
    .option(
      "--tls-creds <dir>",
      "QEMU's TLS for the stream and NBD: x509 files in DIR (the same path on both hosts)",
    )
    .option(
      "--tls-hostname <name>",
      "with --tls-creds: the name the destination's certificate carries (default: HOST of --uri)",
    )
    .option("--insecure", "accept a plaintext TCP NBD export (--copy-storage --nbd tcp: without --tls-creds)")
    .option("--resume", "resume a paused destination (started with -S) once verified")
    .option(
      "--max-downtime <ms>",
      "allow raising downtime-limit up to this many ms if bitmap data stalls precopy",
      positiveInt("--max-downtime"),
    )
    .option(
      "--timeout <seconds>",
      "give up (cancel and repair) after this many seconds",
      positiveInt("--timeout"),
    )
    .option("--json", "print the result as one JSON document on stdout (progress goes to stderr)")
    .addOption(
      new Option("--html <file>", "also write the plan and verification as a self-contained HTML picture"),
    )
    .addHelpText(
      "after",
      `
Exit status: 0 migrated and verified, 1 plan errors or the migration/verification failed, 2 bad usage or policy
file, 3 cannot connect, 130/143 interrupted by SIGINT/SIGTERM (after cancelling and repairing the source).

Examples:
  bitferry migrate --source /run/src.qmp --dest /run/dst.qmp --uri unix:/run/mig.sock
  bitferry migrate --source /run/src.qmp --dest ssh://root@host2/run/dst.qmp --copy-storage
  bitferry migrate --source /run/src.qmp --dest ssh://host2/run/dst.qmp --uri tcp:host2:4445 \\
      --tls-creds /etc/pki/qemu --policy policy.yaml --max-downtime 2000 --resume --json`,
    )
    .action(async (opts) => {
      const { migrateAction } = await import("./migrate-action.js");
      await migrateAction(opts, ctx);
    });
}
