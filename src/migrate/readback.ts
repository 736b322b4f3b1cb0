import type { PlanBitmap } from "../policy/types.js";
import type { RunContext } from "./context.js";
import type { RepairOutcome } from "./repair.js";
import { sleep } from "./sides.js";

/** Rounds of "wait until released, repair again" for a bitmap a late migration setup took after its repair. */
const REREPAIR_ROUNDS = 3;

/**
 * QEMU reports `failed` from its migration thread and releases the bitmaps a moment later, in its cleanup: a
 * repair in between is refused ("Bitmap ... is currently in use"), which the fault fuzzer caught once (a cut
 * connection). Wait, bounded, until none of them is busy.
 */
export async function untilReleased(ctx: RunContext, rows: PlanBitmap[]): Promise<void> {
  if (rows.length === 0) return;
  for (let i = 0; i < 100; i++) {
    const nodes = await ctx.src.tidy((m) => m.namedBlockNodes(), "reading the bitmaps");
    if (nodes === undefined) return;
    const busy = rows.some((b) =>
      nodes
        .find((n) => n["node-name"] === b.source.node)
        ?.["dirty-bitmaps"]?.some((x) => x.name === b.source.bitmap && x.busy),
    );
    if (!busy) return;
    await sleep(50);
  }
}

/** What keeps a repaired bitmap from being stored at the next shutdown, as QEMU reports it; undefined: nothing. */
type Problem = { busy: boolean; text: string } | undefined;

async function problems(ctx: RunContext, rows: PlanBitmap[]): Promise<Problem[] | undefined> {
  const nodes = await ctx.src.tidy((m) => m.namedBlockNodes(), "reading the repaired bitmaps");
  if (nodes === undefined) return undefined;
  return rows.map((b): Problem => {
    const x = nodes
      .find((n) => n["node-name"] === b.source.node)
      ?.["dirty-bitmaps"]?.find((d) => d.name === b.source.bitmap);
    if (!x) return { busy: false, text: "QEMU no longer lists it" };
    // Busy after its repair: a migration setup QEMU ran late took it again and marked it "do not store".
    if (x.busy) return { busy: true, text: "a migration setup QEMU ran after the cancel took it again" };
    if (!x.persistent) return { busy: false, text: "QEMU lists it as not persistent" };
    if (x.inconsistent === true) return { busy: false, text: "QEMU lists it as inconsistent" };
    return undefined;
  });
}

/**
 * Reads every repaired bitmap back from QEMU: it must be there, persistent, consistent and not in use, or the
 * next clean shutdown of the source may not store it. One taken again by a migration setup that QEMU ran after
 * reporting the cancel (QEMU 10.0 under load) is repaired again once released; what still fails becomes a failed
 * repair and a note of the run's error naming the bitmap and its node, never a silent loss.
 */
export async function readBack(
  ctx: RunContext,
  rows: PlanBitmap[],
  outcomes: RepairOutcome[],
  repair: (b: PlanBitmap) => Promise<RepairOutcome>,
): Promise<void> {
  if (rows.length === 0) return;
  let found = await problems(ctx, rows);
  for (let round = 0; found !== undefined && round < REREPAIR_ROUNDS; round++) {
    const again = rows.filter((_, i) => found?.[i]?.busy === true);
    if (again.length === 0) break;
    await untilReleased(ctx, again);
    for (const b of again) outcomes[rows.indexOf(b)] = await repair(b);
    found = await problems(ctx, rows);
  }
  outcomes.forEach((out) => {
    // A repair that stopped midway leaves the bitmap "do not store" (a changed content alone does not).
    if (!out.ok && out.message?.startsWith("could not restore persistence") === true)
      ctx.recoveryNotes.push(`${out.message} QEMU will not store it at the next shutdown of the source`);
  });
  if (found === undefined) return; // the source stopped answering: the stack reports that
  found.forEach((p, i) => {
    const out = outcomes[i];
    const b = rows[i];
    if (p === undefined || out?.ok !== true || b === undefined) return;
    out.ok = false;
    out.message = `not restored: ${p.text}`;
    ctx.recoveryNotes.push(
      `persistent bitmap '${b.source.bitmap}' on node '${b.source.node}' could not be made persistent again ` +
        `(${p.text}): QEMU will not store it at the next shutdown of the source; recreate it as persistent ` +
        "(add a temporary bitmap, merge it in, remove and re-add the bitmap as persistent, merge back) before then",
    );
  });
}
