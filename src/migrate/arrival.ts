import type { BlockDeviceInfo, BlockDirtyInfo } from "../qemu/replies.js";
import type { PlanBitmap } from "../policy/types.js";
import { completeDestination, type FirstLook } from "./completion.js";
import type { RunContext } from "./context.js";
import { RunError } from "./errors.js";
import { quiet } from "./sides.js";
import { readName } from "./streams.js";
import { judgeBitmap, type SourceRecord, type VerifiedBitmap } from "./verify.js";

/** A migrating bitmap as the destination has it after the migration. */
interface ArrivedBitmap {
  info: BlockDirtyInfo | undefined;
  nodeSize: number | undefined;
  sha256: string | null;
}

/** After completion (the source stopped, its disks handed over): what each migrated bitmap was. */
export async function recordSource(ctx: RunContext): Promise<void> {
  const graph = ctx.planResult.source.graph;
  const hash = ctx.planResult.source.facts.features.bitmapSha256;
  const reading = ctx.on(ctx.src, (m) => m.namedBlockNodes(), "reading the migrated bitmaps");
  // The hashes go out behind the read, without waiting for its reply: QEMU answers them in order anyway. Should
  // the read fail, its error is the run's, and the hashes' answers are dropped.
  const hashes = ctx.rows.map((b) => {
    if (!hash) return Promise.resolve(null);
    return quiet(
      ctx.on(ctx.src, (m) => m.bitmapSha256(b.source.node, readName(ctx.streams, b)), "hashing bitmaps"),
    );
  });
  const nodes = await reading;
  const byName = new Map(nodes.map((n) => [n["node-name"], n]));
  const graphNodes = new Map(graph.nodes.map((n) => [n.name, n]));
  const records = await Promise.all(
    ctx.rows.map(async (b, i) => {
      const n = byName.get(b.source.node);
      const name = readName(ctx.streams, b);
      const info = n?.["dirty-bitmaps"]?.find((x) => x.name === name);
      const node = graphNodes.get(b.source.node);
      const sha = (await hashes[i]) ?? null;
      const rec: SourceRecord = {
        sha256: sha,
        count: info?.count ?? b.source.dirtyBytes,
        nodeSize: n?.image["virtual-size"] ?? node?.size ?? 0,
      };
      return [b, rec] as const;
    }),
  );
  ctx.sourceRecords = new Map(records);
}

/**
 * After the source completed: waits for the destination and reads what arrived. Its status, run state and block
 * nodes are asked at once (and then its hashes), as a bare QMP sequence would: when it has settled, as it usually
 * has by then, that is one round trip before the hashes instead of three; when not, the loops ask again.
 */
export async function arriveDestination(ctx: RunContext): Promise<Map<PlanBitmap, ArrivedBitmap>> {
  const hashing = ctx.planResult.source.facts.features.bitmapSha256 && ctx.rows.length > 0;
  ctx.progress("completing", {
    message: hashing
      ? "waiting for the destination; hashing the source's bitmaps meanwhile"
      : "waiting for the destination",
  });
  let first: FirstLook | undefined;
  let nodes: Promise<BlockDeviceInfo[]> | undefined;
  if (!ctx.dst.lost) {
    first = {
      info: quiet(ctx.on(ctx.dst, (m) => m.migrationInfo(), "waiting for the destination to complete")),
      status: quiet(ctx.on(ctx.dst, (m) => m.status(), "reading the destination's run state")),
    };
    nodes = quiet(ctx.on(ctx.dst, (m) => m.namedBlockNodes(), "verifying"));
  }
  const settled = await completeDestination(ctx, first);
  return readDestination(ctx, settled ? nodes : undefined);
}

/**
 * What arrived on the destination for each migrating bitmap, hashed before the destination runs. `asked`: the
 * block nodes, already asked behind the run state that said the destination settled.
 */
async function readDestination(
  ctx: RunContext,
  asked?: Promise<BlockDeviceInfo[]>,
): Promise<Map<PlanBitmap, ArrivedBitmap>> {
  ctx.progress("verifying", { message: `verifying ${ctx.rows.length} bitmap(s) on the destination` });
  const hash = ctx.planResult.destination.facts.features.bitmapSha256;
  const ran = ctx.seen.destinationRan;
  const hashOf = (node: string, bitmap: string): Promise<string> =>
    ctx.on(ctx.dst, (m) => m.bitmapSha256(node, bitmap), "hashing bitmaps");
  // Sent before the block nodes are answered, so that QEMU goes from one to the next: a bitmap that did not
  // arrive answers with an error, dropped, and a read that finds one of ours busy makes them all stale.
  const early =
    asked && hash && !ran
      ? ctx.rows.map((b) => (b.target ? quiet(hashOf(b.target.node, b.target.bitmap)) : undefined))
      : undefined;
  let nodes = await (asked ?? ctx.on(ctx.dst, (m) => m.namedBlockNodes(), "verifying"));
  let waited = false;
  // Postcopy delivers bitmaps after the switchover: wait until none of ours is busy.
  for (let i = 0; i < 100; i++) {
    const busyNames = new Set(
      nodes.flatMap((n) =>
        (n["dirty-bitmaps"] ?? []).filter((x) => x.busy).map((x) => `${n["node-name"]}/${x.name ?? ""}`),
      ),
    );
    const busy = ctx.rows.some(
      (b) => b.target !== null && busyNames.has(`${b.target.node}/${b.target.bitmap}`),
    );
    if (!busy) break;
    waited = true;
    await ctx.pause(100);
    nodes = await ctx.on(ctx.dst, (m) => m.namedBlockNodes(), "verifying");
  }
  const byName = new Map(nodes.map((n) => [n["node-name"], n]));
  const arrived = await Promise.all(
    ctx.rows.map(async (b, i): Promise<[PlanBitmap, ArrivedBitmap]> => {
      const t = b.target;
      if (!t) throw new Error("a migrating bitmap without a target");
      const n = byName.get(t.node);
      const info = n?.["dirty-bitmaps"]?.find((x) => x.name === t.bitmap);
      const sha256 =
        hash && info && !ran ? await ((waited ? undefined : early?.[i]) ?? hashOf(t.node, t.bitmap)) : null;
      return [b, { info, nodeSize: n?.image["virtual-size"], sha256 }];
    }),
  );
  return new Map(arrived);
}

/** Judges every migrating bitmap: what the source sent against what arrived. Throws VERIFY_FAILED on any. */
export function verifyArrived(ctx: RunContext, arrived: Map<PlanBitmap, ArrivedBitmap>): VerifiedBitmap[] {
  const ran = ctx.seen.destinationRan;
  const verified = ctx.rows.map((b) => {
    const t = b.target;
    if (!t) throw new Error("a migrating bitmap without a target");
    const got = arrived.get(b);
    const info = got?.info;
    const rec = ctx.sourceRecords.get(b) ?? { sha256: null, count: b.source.dirtyBytes, nodeSize: 0 };
    const merged = ctx.streams?.mergedFrom.get(b);
    const judged = judgeBitmap(b.source, t, rec, {
      bitmap: info
        ? {
            name: t.bitmap,
            granularity: info.granularity,
            count: info.count,
            recording: info.recording,
            busy: info.busy,
            persistent: info.persistent,
            inconsistent: info.inconsistent ?? false,
            readOnly: false,
          }
        : undefined,
      nodeSize: got?.nodeSize,
      sha256: got?.sha256 ?? null,
      ran,
    });
    return merged ? { ...judged, mergedFrom: merged } : judged;
  });
  const failed = verified.filter((v) => v.verified === "failed");
  if (failed.length > 0) {
    throw new RunError(
      "VERIFY_FAILED",
      `${failed.length} of ${verified.length} bitmap(s) failed verification on the destination: ` +
        failed.map((v) => `${v.target.node}/${v.target.bitmap}: ${v.reason ?? ""}`).join("; ") +
        ". Neither side was resumed: the source is stopped after the switchover; decide which one runs",
    );
  }
  return verified;
}
