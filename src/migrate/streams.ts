import type { PlanBitmap } from "../policy/types.js";
import { isStream, type MergeGroup } from "../policy/work.js";
import type { RunContext } from "./context.js";
import type { PlanResult } from "./plan.js";
import { refused, undoIfPresent } from "./sides.js";

/** The bitmaps of the migration stream, and the backing chains merged into temporaries for `--copy-storage`. */
export interface Streams {
  rows: PlanBitmap[];
  temporaries: Map<PlanBitmap, MergeGroup>;
  mergedFrom: Map<PlanBitmap, { node: string; bitmap: string }[]>;
}

/**
 * The bitmaps of the migration stream, one row each. A backing chain merged for `--copy-storage` travels as one
 * temporary bitmap on the disk's top node: its row names the disk's node and the bitmap name the layers share.
 */
export function buildStreams(planned: PlanResult): Streams {
  const out: Streams = { rows: [], temporaries: new Map(), mergedFrom: new Map() };
  for (const w of planned.decisions.work) {
    if (w.entry.action !== "migrate" || !w.entry.target || !isStream(w)) continue;
    const g = w.merge;
    if (!g) {
      out.rows.push(w.entry);
      continue;
    }
    const row: PlanBitmap = {
      ...w.entry,
      source: {
        node: g.disk.name,
        drive: planned.source.graph.drives.find((d) => d.driveRoot === g.disk.name)?.name ?? null,
        bitmap: g.name,
        granularity: g.granularity,
        persistent: false,
        recording: g.recording,
        dirtyBytes: w.entry.source.dirtyBytes,
      },
    };
    out.temporaries.set(row, g);
    out.mergedFrom.set(row, g.sources);
    out.rows.push(row);
  }
  return out;
}

/** The bitmap QEMU reads for a stream row: a merged chain's temporary, or the bitmap itself. */
export function readName(streams: Streams | undefined, b: PlanBitmap): string {
  return streams?.temporaries.get(b)?.temporary ?? b.source.bitmap;
}

/**
 * Step "merged-bitmap": `--copy-storage` flattens backing chains. The same-named bitmaps of a disk's layers are
 * merged into one temporary bitmap on its top node, atomically, just before the migration starts (it keeps
 * recording writes); the clean removes it from the source, after a success as after a failure.
 */
export async function mergeChains(ctx: RunContext): Promise<void> {
  const groups = [...new Set(ctx.streams?.temporaries.values())];
  for (const g of groups) {
    // Recorded before the transaction is sent: QEMU creates the bitmap even if --timeout or Ctrl-C fires first.
    await ctx.steps.sent(
      {
        name: "merged-bitmap",
        side: "source",
        what: `the temporary bitmap ${g.disk.name}/${g.temporary}`,
        clean: () =>
          ctx.src.undo((m) =>
            undoIfPresent(() => m.removeBitmap(g.disk.name, g.temporary), /^Dirty bitmap '.*' not found$/),
          ),
      },
      () =>
        ctx.on(
          ctx.src,
          (m) =>
            m.transaction([
              {
                type: "block-dirty-bitmap-add",
                data: {
                  node: g.disk.name,
                  name: g.temporary,
                  granularity: g.granularity,
                  disabled: !g.recording,
                },
              },
              {
                type: "block-dirty-bitmap-merge",
                data: {
                  node: g.disk.name,
                  target: g.temporary,
                  bitmaps: g.sources.map((x) => ({ node: x.node, name: x.bitmap })),
                },
              },
            ]),
          `merging the backing chain's '${g.name}' bitmaps on ${g.disk.name}`,
        ),
      refused,
    );
  }
}
