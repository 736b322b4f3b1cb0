import type { PlanBitmap } from "../policy/types.js";
import { debug } from "../util/debug.js";
import { describeError } from "../util/errors.js";
import type { RunContext } from "./context.js";
import { readBack, untilReleased } from "./readback.js";
import { repairPersistence, type RepairOutcome } from "./repair.js";
import { CANCELLABLE, RUNNING_STATUSES, sleep } from "./sides.js";

/**
 * After the switch to postcopy a destination started without -S runs the guest: the source's VM is then out of
 * date, and resuming it would run an older copy over disks the newer one wrote.
 */
const POSTCOPY_COMPLETED_NOTE =
  "The destination was lost after the migration completed through postcopy, so bitferry did not resume the " +
  "source: unless the destination was started with -S, the guest ran there and the source's VM state is from the " +
  "switchover. If it was started with -S, resuming the source (cont) is safe. The source keeps every bitmap";

/** QEMU keeps a source whose postcopy broke in `postcopy-paused` and refuses `cont` ("not finalized yet"). */
function postcopyBrokenNote(status: string | undefined): string {
  return (
    `Postcopy had started (QEMU's migration status: ${status ?? "unknown"}), so the source cannot simply resume: ` +
    "if the destination is still alive, resume the paused postcopy (migrate-recover on the destination, then " +
    "migrate with resume: true on the source); if it is gone, the VM's state since the switchover went with it. " +
    "The source keeps every bitmap"
  );
}

/**
 * The abort of step "migration" (DESIGN section 4 item 6 and "Failure after the source completed"): cancel a
 * migration still running, resume a source that completed into a destination that died, and restore persistence
 * of the bitmaps QEMU marked "do not store". What it cannot do goes into `ctx.recoveryNotes`, what it repaired
 * into `ctx.repaired`. Runs only while the source answers (the stack skips a lost source).
 */
export async function recoverSource(ctx: RunContext): Promise<void> {
  ctx.repaired = await recover(ctx);
}

async function recover(ctx: RunContext): Promise<RepairOutcome[]> {
  const code = ctx.error?.code ?? "QEMU_ERROR";
  ctx.progress("repair", { message: `${code}: cancelling and repairing the source` });
  const { src, dst, seen } = ctx;
  const migrationStatus = async (): Promise<string | undefined> =>
    (await src.tidy((m) => m.migrationInfo(), "reading the migration status"))?.status;
  let status = await migrationStatus();
  if (status === "postcopy-active") {
    // The guest already runs on the destination; cancelling now would lose the bitmaps on both sides.
    for (let i = 0; i < 300 && status === "postcopy-active"; i++) {
      await sleep(100);
      status = await migrationStatus();
    }
  }
  if (status !== undefined && CANCELLABLE.has(status)) {
    await src.mon.migrateCancel().catch((e: unknown) => {
      debug("migrate_cancel: %s", describeError(e));
    });
    for (let i = 0; i < 200; i++) {
      status = await migrationStatus();
      if (status === undefined || !RUNNING_STATUSES.has(status)) break;
      await sleep(50);
    }
  }
  // The result's migration.status is where QEMU left the migration (`cancelled`), not the last status the
  // follow loop saw before the cancel (`active`).
  if (status !== undefined) seen.lastInfo = { ...seen.lastInfo, status };
  const state = (await src.tidy((m) => m.status(), "reading the run state"))?.status;
  const sourceRunState0 = ctx.planResult.source.snapshot.runState;
  if (status === "completed" && state === "postmigrate") {
    if (code === "VERIFY_FAILED") return []; // both sides alive: the operator decides which runs
    if (dst.lost && seen.postcopyEntered) {
      ctx.recoveryNotes.push(POSTCOPY_COMPLETED_NOTE);
      return [];
    }
    // Two running copies of one VM are worse than a stopped one: resume the source only when the destination
    // is gone or answers that it does not run the guest.
    if (!dst.lost) {
      const there = (await dst.tidy((m) => m.status(), "reading the run state"))?.status;
      if (there === undefined || there === "running") {
        ctx.recoveryNotes.push(
          there === "running"
            ? "the migration had completed and the destination already runs the guest with its bitmaps; the " +
                "source stays stopped"
            : "the migration had completed but the destination does not answer: the source stays stopped so " +
                "that the VM cannot run twice; once the destination answers, resume it, or quit it and resume the source",
        );
        return [];
      }
    }
    // The destination never ran the guest: bring the VM back where it was. `cont` re-activates the source's
    // disks, which also makes QEMU store the migrated bitmaps again.
    const resumed = await src.mon.cont().then(
      () => true,
      (e: unknown) => {
        debug("cont: %s", describeError(e));
        // QEMU refuses when the destination already took the disks' locks (shared storage): then the VM and
        // its bitmaps are on the destination, paused, and only the operator can choose which side runs.
        ctx.recoveryNotes.push(
          `the source could not be resumed (QEMU refused cont: ${describeError(e)}); the migration had ` +
            "completed, so the VM and its bitmaps are on the destination, which has not run the guest: resume " +
            "the destination, or quit it and then resume the source",
        );
        return false;
      },
    );
    if (resumed && sourceRunState0 !== "running") await src.mon.stop().catch(() => undefined);
    return [];
  }
  const persistent = ctx.rows.filter((b) => b.source.persistent);
  await fenceLateSetup(ctx, persistent);
  await untilReleased(ctx, persistent);
  const hash = ctx.planResult.source.facts.features.bitmapSha256;
  const repair = (b: PlanBitmap): Promise<RepairOutcome> =>
    repairPersistence(
      src.mon,
      {
        node: b.source.node,
        name: b.source.bitmap,
        granularity: b.source.granularity,
        recording: b.source.recording,
      },
      hash,
    );
  const outcomes: RepairOutcome[] = [];
  for (const b of persistent) outcomes.push(await repair(b));
  await readBack(ctx, persistent, outcomes, repair);
  const now = (await src.tidy((m) => m.status(), "reading the run state"))?.status;
  if (seen.postcopyEntered) {
    ctx.recoveryNotes.push(postcopyBrokenNote(status));
  } else if (sourceRunState0 === "running" && now !== undefined && now !== "running") {
    await src.mon.cont().catch((e: unknown) => {
      debug("cont: %s", describeError(e));
    });
  }
  return outcomes;
}

/**
 * QEMU 10.0 reports `cancelled` at once for a migration cancelled before its connection is up, and still runs the
 * setup once it is, which then marks every mapped bitmap busy and "do not store" (seen under load: a MIGRATION_PASS event
 * after `cancelled`, and a bitmap repaired just before it lost at the next shutdown). A mapping that names a node
 * but no bitmap makes such a late setup select none (QEMU skips a bitmap without an alias). QEMU applies both under
 * its big lock, so a setup either ran before the fence (its bitmaps stay busy until its cleanup, which
 * untilReleased waits for) or selects nothing. The run's own mapping cannot be put back anyway (DESIGN section 4
 * item 9), and every run sets its own.
 */
async function fenceLateSetup(ctx: RunContext, rows: PlanBitmap[]): Promise<void> {
  const node = rows[0]?.source.node;
  if (node === undefined) return;
  await ctx.src.tidy(
    (m) =>
      m.setMigrationParameters({
        "block-bitmap-mapping": [{ "node-name": node, alias: "bitferry-none", bitmaps: [] }],
      }),
    "fencing a late migration setup",
  );
}
