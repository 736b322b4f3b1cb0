import type { PlanBitmap } from "../policy/types.js";
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

/**
 * Compiles the migrating bitmaps of a plan into `block-bitmap-mapping` for both sides: source node-name → alias →
 * destination node-name, with short generated aliases (`n0`, `b0`) that are always well-formed, so names of any
 * length QEMU accepts (up to 1023 bytes) travel. `transform.persistent` appears only where the plan changes
 * persistence, on each side whose QEMU has transforms. Pure.
 */
export function compileMapping(bitmaps: readonly PlanBitmap[], transforms: TransformSupport): MappingPair {
  const source: BitmapAliasMapping = [];
  const destination: BitmapAliasMapping = [];
  const bySourceNode = new Map<
    string,
    { src: BitmapAliasMapping[number]; dst: BitmapAliasMapping[number] }
  >();
  for (const b of bitmaps) {
    if (b.action !== "migrate" || !b.target) continue;
    let pair = bySourceNode.get(b.source.node);
    if (!pair) {
      const alias = `n${bySourceNode.size}`;
      pair = {
        src: { "node-name": b.source.node, alias, bitmaps: [] },
        dst: { "node-name": b.target.node, alias, bitmaps: [] },
      };
      bySourceNode.set(b.source.node, pair);
      source.push(pair.src);
      destination.push(pair.dst);
    }
    const alias = `b${pair.src.bitmaps.length}`;
    const change = b.target.persistent !== b.source.persistent;
    const transform = { persistent: b.target.persistent };
    pair.src.bitmaps.push({
      name: b.source.bitmap,
      alias,
      ...(change && transforms.source ? { transform } : {}),
    });
    pair.dst.bitmaps.push({
      name: b.target.bitmap,
      alias,
      ...(change && transforms.destination ? { transform } : {}),
    });
  }
  for (const [side, m] of [
    ["source", source],
    ["destination", destination],
  ] as const) {
    const problem = validateMapping(m);
    if (problem) throw new MappingCompileError(`compiled ${side} mapping is invalid: ${problem}`);
  }
  return { source, destination };
}
