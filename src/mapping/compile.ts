import { isStream, type Work } from "../policy/work.js";
import type { BitmapAliasMapping } from "../qemu/replies.js";
import { validateMapping } from "./validate.js";

export interface MappingPair {
  source: BitmapAliasMapping;
  destination: BitmapAliasMapping;
}

export interface TransformSupport {
  source: boolean;
  destination: boolean;
}

/** Raised when bitferry's own compiler produced a mapping QEMU would reject: a bug, never a user error. */
export class MappingCompileError extends Error {
  readonly code = "MAPPING_INTERNAL";
}

/** One bitmap of the migration stream: where it is read on the source and where it lands. */
export interface StreamBitmap {
  sourceNode: string;
  sourceBitmap: string;
  sourcePersistent: boolean;
  targetNode: string;
  targetBitmap: string;
  targetPersistent: boolean;
}

/** The stream bitmaps of a plan's rows: merged chains travel once, as their temporary bitmap on the top node. */
export function streamBitmaps(work: readonly Work[]): StreamBitmap[] {
  const out: StreamBitmap[] = [];
  work.forEach((w) => {
    const t = w.entry.target;
    if (w.entry.action !== "migrate" || !t || !isStream(w)) return;
    const m = w.merge;
    out.push({
      sourceNode: m ? m.disk.name : w.node.name,
      sourceBitmap: m ? m.temporary : w.bitmap.name,
      sourcePersistent: m ? false : w.bitmap.persistent,
      targetNode: t.node,
      targetBitmap: t.bitmap,
      targetPersistent: t.persistent,
    });
  });
  return out;
}

/** `b0`, `b1`, ...: the same few names on every node, made once. */
const bitmapAliases: string[] = [];
function bitmapAlias(n: number): string {
  return (bitmapAliases[n] ??= `b${n}`);
}

/**
 * Compiles the stream bitmaps of a plan into `block-bitmap-mapping` for both sides: source node-name → alias →
 * destination node-name, with short generated aliases (`n0`, `b0`) that are always well-formed, so names of any
 * length QEMU accepts (up to 1023 bytes) travel. `transform.persistent` appears only where the plan changes
 * persistence, on each side whose QEMU has transforms. Pure.
 */
export function compileMapping(bitmaps: readonly StreamBitmap[], transforms: TransformSupport): MappingPair {
  const source: BitmapAliasMapping = [];
  const destination: BitmapAliasMapping = [];
  const bySourceNode = new Map<
    string,
    { src: BitmapAliasMapping[number]; dst: BitmapAliasMapping[number] }
  >();
  // Stream bitmaps come node by node: the node of the bitmap before is looked up once per run.
  let last: { src: BitmapAliasMapping[number]; dst: BitmapAliasMapping[number] } | undefined;
  bitmaps.forEach((b) => {
    let pair = last?.src["node-name"] === b.sourceNode ? last : bySourceNode.get(b.sourceNode);
    if (!pair) {
      const alias = `n${bySourceNode.size}`;
      pair = {
        src: { "node-name": b.sourceNode, alias, bitmaps: [] },
        dst: { "node-name": b.targetNode, alias, bitmaps: [] },
      };
      bySourceNode.set(b.sourceNode, pair);
      source.push(pair.src);
      destination.push(pair.dst);
    }
    const alias = bitmapAlias(pair.src.bitmaps.length);
    const src: BitmapAliasMapping[number]["bitmaps"][number] = { name: b.sourceBitmap, alias };
    const dst: BitmapAliasMapping[number]["bitmaps"][number] = { name: b.targetBitmap, alias };
    if (b.targetPersistent !== b.sourcePersistent) {
      const transform = { persistent: b.targetPersistent };
      if (transforms.source) src.transform = transform;
      if (transforms.destination) dst.transform = transform;
    }
    last = pair;
    pair.src.bitmaps.push(src);
    pair.dst.bitmaps.push(dst);
  });
  for (const [side, m] of [
    ["source", source],
    ["destination", destination],
  ] as const) {
    const problem = validateMapping(m);
    if (problem) throw new MappingCompileError(`compiled ${side} mapping is invalid: ${problem}`);
  }
  return { source, destination };
}
