import type { MigrationInfo } from "../qemu/replies.js";
import type { RunContext } from "./context.js";
import { ConvergenceGuard } from "./convergence.js";
import { RunError } from "./errors.js";
import { recoverSource } from "./recovery.js";

/** Bound of the migration's abort: the postcopy wait, the cancel, and the repair of every bitmap. */
const RECOVERY_BOUND_MS = 300_000;

/**
 * Step "migration": `migrate` on the source. It is recorded before the command, since QEMU may fail it after it
 * began; its abort is the recovery of recovery.ts.
 */
export async function startMigration(ctx: RunContext): Promise<void> {
  ctx.checkpoint();
  ctx.progress("migrating", {
    status: "setup",
    bitmapBytes: ctx.plan.payloadBytes,
    message: `migrating to ${ctx.o.uri}`,
  });
  await ctx.steps.around(
    {
      name: "migration",
      side: "source",
      what: `the migration to ${ctx.o.uri}`,
      abort: () => recoverSource(ctx),
      boundMs: RECOVERY_BOUND_MS,
    },
    () => ctx.on(ctx.src, (m) => m.migrate(ctx.o.uri), "starting the migration"),
  );
}

/** Follows the source until it reports `completed`: progress, the switchover, postcopy, the convergence guard. */
export async function follow(ctx: RunContext): Promise<MigrationInfo> {
  const poll = ctx.o.pollMs ?? 200;
  const guard = new ConvergenceGuard(ctx);
  const seen = ctx.seen;
  for (;;) {
    ctx.checkpoint();
    if (ctx.dst.lost)
      throw new RunError(
        "DESTINATION_LOST",
        "the destination's monitor closed during the migration (QEMU exited)",
      );
    const info = await ctx.on(ctx.src, (m) => m.migrationInfo(), "following the migration");
    seen.lastInfo = info;
    const status = info.status ?? "none";
    if (status.startsWith("postcopy-")) seen.postcopyEntered = true;
    ctx.progress(ctx.phase === "switchover" ? "switchover" : "migrating", {
      status,
      transferredBytes: info.ram?.transferred,
      remainingBytes: info.ram?.remaining,
      bitmapBytes: ctx.plan.payloadBytes,
    });
    switch (status) {
      case "completed":
        return info;
      case "failed":
        throw await migrationFailed(ctx, info);
      case "cancelled":
        throw new RunError(
          "MIGRATION_FAILED",
          "the migration was cancelled by someone else (migrate_cancel on the source)",
        );
      case "postcopy-paused":
      case "postcopy-recover":
        throw new RunError(
          "MIGRATION_FAILED",
          `postcopy was interrupted (status ${status}): the connection to the destination broke`,
        );
      case "pre-switchover":
        // migrate-continue only wakes QEMU's migration thread: the status can read pre-switchover once more.
        if (!seen.continued) {
          await switchover(ctx);
          guard.reset();
          continue;
        }
        break;
      case "active":
        if (ctx.o.postcopy) {
          if (!seen.postcopyStarted) {
            seen.postcopyStarted = true;
            await ctx.on(ctx.src, (m) => m.migrateStartPostcopy(), "switching to postcopy");
          }
        } else {
          await guard.check(info);
        }
        break;
      default:
        break;
    }
    await ctx.pause(poll);
  }
}

async function migrationFailed(ctx: RunContext, info: MigrationInfo): Promise<RunError> {
  let why = info["error-desc"];
  if (!why && ctx.dst.lost) why = "the destination exited";
  if (!why) {
    const d = await ctx.dst.mon.migrationInfo().catch(() => undefined);
    why = d?.["error-desc"] ?? (ctx.dst.lost ? "the destination exited" : undefined);
  }
  return new RunError(
    "MIGRATION_FAILED",
    `QEMU reports the migration failed: ${why ?? "no reason given (QEMU before 9.1 prints bitmap errors only on the source's stderr)"}`,
  );
}

/**
 * The source is stopped at `pre-switchover`: the last moment a cancel leaves everything as it was. bitferry lets
 * QEMU switch over at once and hashes the bitmaps after completion instead, when the source is stopped for good
 * (postmigrate) and its bitmaps are exactly what it sent: hashing here would add its time to the downtime.
 */
async function switchover(ctx: RunContext): Promise<void> {
  ctx.progress("switchover", { status: "pre-switchover", message: "source stopped: switching over" });
  ctx.checkpoint();
  ctx.seen.continued = true;
  await ctx.on(ctx.src, (m) => m.migrateContinue("pre-switchover"), "continuing after the switchover pause");
  ctx.progress("switchover", { status: "device" });
}
