import { QmpConnectionClosedError, QmpError } from "../qmp/errors.js";
import { BitferryError, describeError } from "../util/errors.js";
import type { RunContext } from "./context.js";
import { RunError } from "./errors.js";
import type { Side } from "./sides.js";
import { describeUndoFailure, type UndoFailure } from "./steps.js";
import type { MigrateResult, RunOutcomePhase } from "./types.js";
import type { VerifiedBitmap } from "./verify.js";

function sentence(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/** Whatever a phase threw, as the run error of the result. */
export function toRunError(ctx: RunContext, err: unknown): RunError {
  if (err instanceof RunError) return err;
  if (err instanceof QmpConnectionClosedError) {
    // A command sent outside `on()` (the storage copy's polling, for one): the watchers know which side went.
    const lost = ctx.src.lost ? ctx.src : ctx.dst.lost ? ctx.dst : undefined;
    if (lost) {
      return new RunError(
        lost.name === "source" ? "SOURCE_LOST" : "DESTINATION_LOST",
        `the ${lost.name}'s monitor closed (QEMU exited or the socket dropped): ${err.message}`,
        { cause: err },
      );
    }
    return new RunError("QEMU_ERROR", `a monitor closed: ${err.message}`, { cause: err });
  }
  if (err instanceof QmpError || err instanceof BitferryError)
    return new RunError("QEMU_ERROR", err.message, { cause: err });
  return new RunError("QEMU_ERROR", describeError(err), { cause: err });
}

/** The error of a failed run: what failed, then what recovery and the undos could not do, one sentence each. */
export function failureOf(ctx: RunContext, err: RunError, undone: UndoFailure[]): MigrateResult["error"] {
  const notes = [...ctx.recoveryNotes, ...undone.map(describeUndoFailure)];
  return { code: err.code, message: [err.message, ...notes.map(sentence)].join(". ") };
}

/** Every migrating bitmap of a failed run, as not verified. */
export function unverified(ctx: RunContext, err: RunError): VerifiedBitmap[] {
  return ctx.rows.flatMap((b) => {
    const t = b.target;
    if (!t) return [];
    const rec = ctx.sourceRecords.get(b);
    return [
      {
        source: b.source,
        target: t,
        sourceSha256: rec?.sha256 ?? null,
        targetSha256: null,
        verified: "failed" as const,
        reason: `not verified: ${err.code}`,
      },
    ];
  });
}

/** Both sides' run states for the result (null: unknown), asked at once. */
export function readRunStates(ctx: RunContext): Promise<[string | null, string | null]> {
  const runState = async (side: Side): Promise<string | null> =>
    (await side.tidy((m) => m.status(), "reading the run state"))?.status ?? null;
  return Promise.all([runState(ctx.src), runState(ctx.dst)]);
}

/**
 * The `migrate --json` document. `states`: the run states, when the caller asked for them already (readRunStates
 * never rejects).
 */
export async function resultOf(
  ctx: RunContext,
  phase: RunOutcomePhase,
  error: MigrateResult["error"],
  bitmaps: VerifiedBitmap[] = [],
  states: Promise<[string | null, string | null]> = readRunStates(ctx),
): Promise<MigrateResult> {
  const info = ctx.seen.lastInfo;
  const raised = ctx.seen.downtimeRaised;
  const [sourceState, destinationState] = await states;
  return {
    version: 1,
    ok: error === undefined,
    plan: ctx.plan,
    phase,
    bitmaps,
    migration: {
      status: info?.status ?? "none",
      totalTimeMs: info?.["total-time"] ?? null,
      downtimeMs: info?.downtime ?? null,
      postcopy: ctx.seen.postcopyEntered,
      transport: ctx.route?.migration ?? ctx.plan.transport?.migration ?? null,
      ...(raised !== undefined ? { downtimeLimitRaisedMs: raised } : {}),
    },
    source: { runState: sourceState, repaired: phase === "failed" ? ctx.repaired : [] },
    destination: { runState: destinationState },
    ...(ctx.o.copyStorage ? { storage: { disks: ctx.copies } } : {}),
    ...(error ? { error } : {}),
  };
}
