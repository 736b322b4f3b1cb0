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

type EachBitmap = (
  sourceNode: string,
  sourceBitmap: string,
  sourcePersistent: boolean,
  targetNode: string,
  targetBitmap: string,
  targetPersistent: boolean,
) => void;

/** The stream bitmaps of a plan's rows: merged chains travel once, as their temporary bitmap on the top node. */
function eachStream(work: readonly Work[], f: EachBitmap): void {
  work.forEach((w) => {
    const t = w.entry.target;
    if (w.entry.action !== "migrate" || !t || !isStream(w)) return;
    const m = w.merge;
    if (m) f(m.disk.name, m.temporary, false, t.node, t.bitmap, t.persistent);
    else f(w.node.name, w.bitmap.name, w.bitmap.persistent, t.node, t.bitmap, t.persistent);
  });
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
  return compile(transforms, (add) => {
    bitmaps.forEach((b) => {
      add(b.sourceNode, b.sourceBitmap, b.sourcePersistent, b.targetNode, b.targetBitmap, b.targetPersistent);
    });
  });
}

/**
 * compileMapping of the stream bitmaps of a plan's rows, read from the rows as they are compiled: no object per
 * bitmap in between (a plan of 20,000 bitmaps would make 20,000 only to drop them).
 */
export function compileRows(work: readonly Work[], transforms: TransformSupport): MappingPair {
  return compile(transforms, (add) => {
    eachStream(work, add);
  });
}

function compile(transforms: TransformSupport, feed: (add: EachBitmap) => void): MappingPair {
  const source: BitmapAliasMapping = [];
  const destination: BitmapAliasMapping = [];
  const bySourceNode = new Map<
    string,
    { src: BitmapAliasMapping[number]; dst: BitmapAliasMapping[number] }
  >();
  // Stream bitmaps come node by node: the node of the bitmap before is looked up once per run.
  let last: { src: BitmapAliasMapping[number]; dst: BitmapAliasMapping[number] } | undefined;
  feed((sourceNode, sourceBitmap, sourcePersistent, targetNode, targetBitmap, targetPersistent) => {
    let pair = last?.src["node-name"] === sourceNode ? last : bySourceNode.get(sourceNode);
    if (!pair) {
      const alias = `n${bySourceNode.size}`;
      pair = {
        src: { "node-name": sourceNode, alias, bitmaps: [] },
        dst: { "node-name": targetNode, alias, bitmaps: [] },
      };
      bySourceNode.set(sourceNode, pair);
      source.push(pair.src);
      destination.push(pair.dst);
    }
    const alias = bitmapAlias(pair.src.bitmaps.length);
    const src: BitmapAliasMapping[number]["bitmaps"][number] = { name: sourceBitmap, alias };
    const dst: BitmapAliasMapping[number]["bitmaps"][number] = { name: targetBitmap, alias };
    if (targetPersistent !== sourcePersistent) {
      const transform = { persistent: targetPersistent };
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
