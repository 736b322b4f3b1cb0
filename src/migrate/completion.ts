import type { MigrationInfo, StatusInfo } from "../qemu/replies.js";
import type { RunContext } from "./context.js";
import { RunError } from "./errors.js";
import { sleep } from "./sides.js";
import { failureCodeFor } from "./transport.js";

/** QEMU reports `completed` a moment before it fills in the times: read them once they are there. */
export async function finalTimes(ctx: RunContext, info: MigrationInfo): Promise<MigrationInfo> {
  let last = info;
  for (let i = 0; i < 20 && !last["total-time"]; i++) {
    await sleep(10);
    last = await ctx.on(ctx.src, (m) => m.migrationInfo(), "reading the migration's times");
  }
  return last;
}

/** The destination's first status and run state, asked together right after the source completed. */
export interface FirstLook {
  info: Promise<MigrationInfo>;
  status: Promise<StatusInfo>;
}

/**
 * After the source completed: wait for the destination to complete and settle its run state. `first`, when given,
 * answers the first read of each (they were pipelined, so the destination is usually done by the time they are
 * answered and no further round trip is needed). True when the first run state was the one used: anything asked
 * behind it on the destination's monitor sees the destination as settled.
 */
export async function completeDestination(ctx: RunContext, first?: FirstLook): Promise<boolean> {
  const until = Date.now() + 120_000;
  let pending = first?.info;
  for (;;) {
    ctx.checkpoint();
    if (ctx.dst.lost) {
      throw new RunError(
        "DESTINATION_LOST",
        "the destination exited after the source completed: it did not load the migration",
      );
    }
    const info = await (pending ??
      ctx.on(ctx.dst, (m) => m.migrationInfo(), "waiting for the destination to complete"));
    if (info.status === "completed") {
      // The source completed before this is asked (follow).
      ctx.seen.completed = true;
      break;
    }
    // Asked before the destination had completed: the run state read with it says nothing yet.
    first = undefined;
    pending = undefined;
    if (info.status === "failed") {
      throw new RunError(
        failureCodeFor(ctx, info["error-desc"]),
        `the destination failed to load the migration: ${info["error-desc"] ?? "no reason given"}`,
      );
    }
    if (Date.now() > until)
      throw new RunError(
        "TIMEOUT",
        `the destination did not complete within 120 s (status ${info.status ?? "none"})`,
      );
    await ctx.pause(100);
  }
  // The completed event can precede the final run state.
  let status = first?.status;
  for (let i = 0; i < 300; i++) {
    const s = await (status ?? ctx.on(ctx.dst, (m) => m.status(), "reading the destination's run state"));
    if (s.status !== "inmigrate") {
      ctx.seen.destinationRan = s.status === "running";
      return i === 0 && status !== undefined;
    }
    status = undefined;
    await ctx.pause(100);
  }
  return false;
}

/** Applies `enabled` overrides and, with --resume, starts a paused destination. */
export async function finishDestination(ctx: RunContext): Promise<void> {
  for (const b of ctx.rows) {
    const t = b.target;
    if (!t || t.enabled === b.source.recording) continue;
    await ctx.on(
      ctx.dst,
      (m) => (t.enabled ? m.enableBitmap(t.node, t.bitmap) : m.disableBitmap(t.node, t.bitmap)),
      `applying enabled=${t.enabled} to ${t.node}/${t.bitmap}`,
    );
  }
  if (ctx.o.resume) {
    const s = await ctx.on(ctx.dst, (m) => m.status(), "reading the destination's run state");
    if (s.status !== "running") await ctx.on(ctx.dst, (m) => m.cont(), "resuming the destination");
  }
}
