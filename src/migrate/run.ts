import { debug } from "../util/debug.js";
import { arriveDestination, recordSource, verifyArrived } from "./arrival.js";
import { finalTimes, finishDestination } from "./completion.js";
import { RunContext } from "./context.js";
import { follow, startMigration } from "./follow.js";
import { planErrorsMessage, planMigration } from "./plan.js";
import { failureOf, readRunStates, resultOf, toRunError, unverified } from "./result.js";
import { readSourceMigration, setupSides } from "./setup.js";
import { copyDisks, finishCopy } from "./storage.js";
import { describeUndoFailure } from "./steps.js";
import { buildStreams, mergeChains } from "./streams.js";
import type { MigrateOptions, MigrateResult } from "./types.js";

export type { MigrateOptions, MigrateResult, RunOutcomePhase } from "./types.js";

/**
 * Runs DESIGN section 4: plan, set up both sides, migrate, hash every bitmap on the source once it has completed
 * (stopped for good, so outside the downtime), verify each on arrival; on any failure cancel, repair the source's
 * bitmaps and leave the source as it was. Never throws for a failed migration: the result says what happened.
 *
 * Every change to a QEMU or a host is a step on `ctx.steps` (steps.ts), pushed by the phase that makes it, in
 * this order: watch, capabilities (destination, source), mapping (destination, source), with two hosts
 * ssh-watch, socket-dir and tunnel per host and hop, tls-creds and tls-params per side (transport.ts), incoming,
 * with --copy-storage nbd-socket-dir, mirror-events, nbd-server and per disk export, nbd-node, mirror; then
 * merged-bitmap per merged chain, migration, and downtime-limit if the guard raised it. Whatever happens, the
 * stack unwinds at the end (aborts first when the run failed, then cleans, newest first); the phases themselves
 * never undo anything.
 */
export async function migrate(options: MigrateOptions): Promise<MigrateResult> {
  const ctx = new RunContext(options);
  try {
    ctx.watch();
    ctx.progress("plan", { message: "reading both block graphs" });
    const sourceMigration = readSourceMigration(ctx);
    const planned = await planMigration(ctx.src.mon, ctx.dst.mon, options);
    ctx.planned = planned;
    options.onPlanned?.(planned);
    if (!planned.plan.ok) {
      await ctx.steps.unwind(false);
      return await resultOf(ctx, "planned", {
        code: "PLAN_ERRORS",
        message: planErrorsMessage(planned.plan),
      });
    }
    ctx.streams = buildStreams(planned);
    await setupSides(ctx, sourceMigration);
    const storage = options.copyStorage ? await copyDisks(ctx) : undefined;
    await mergeChains(ctx);
    await startMigration(ctx);
    ctx.seen.lastInfo = await finalTimes(ctx, await follow(ctx));
    await finishCopy(ctx, storage);
    // Two QEMUs, two monitors: each side is hashed as soon as it is ready, at the same time as the other. The
    // destination's reads go out first: it has more to wait for (its completion, its run state) before its hashes.
    const [arrived] = await Promise.all([arriveDestination(ctx), recordSource(ctx)]);
    const verified = verifyArrived(ctx, arrived);
    await finishDestination(ctx);
    ctx.progress("done", { message: "all bitmaps verified" });
    // Nothing the cleans undo changes a run state: the result's reads go out with the cleans' first commands,
    // instead of one more round trip after them.
    const states = readRunStates(ctx);
    // A clean that fails after a verified migration leaves the migration as good as it was; NODE_DEBUG says what.
    for (const f of await ctx.steps.unwind(false)) debug("%s", describeUndoFailure(f));
    return await resultOf(ctx, "verified", undefined, verified, states);
  } catch (err) {
    const runError = toRunError(ctx, err);
    debug("migration run failed: %s", runError.message);
    ctx.error = runError;
    const undone = await ctx.steps.unwind(true);
    // Planning itself failed (a monitor gone, QEMU refused a query): nothing was touched.
    if (!ctx.planned) throw runError;
    return await resultOf(ctx, "failed", failureOf(ctx, runError, undone), unverified(ctx, runError));
  }
}
