import type { GraphLookup } from "../graph/lookup.js";
import type { BlockGraph, Bitmap, BlockNode } from "../graph/model.js";
import type { QemuFeatures } from "../qemu/monitor.js";
import type { PlanBitmap, PlanError, Policy } from "./types.js";

/** What planning needs to know about one QEMU besides its graph. */
export interface QemuFacts {
  features: QemuFeatures;
  /** Capabilities QEMU offers (`query-migrate-capabilities`), by name. */
  capabilities: Record<string, boolean>;
  downtimeLimitMs: number;
  maxBandwidth: number | undefined;
  guestMemoryBytes: number | undefined;
  version: string;
  /** The migration object's properties, when known (`send-switchover-start` exists from QEMU 10.0). */
  migrationProperties: string[] | undefined;
  machineType: string | undefined;
}

export interface PlanOptions {
  postcopy: boolean;
  copyStorage: boolean;
}

export interface PlanInput {
  source: BlockGraph;
  destination: BlockGraph;
  policy: Policy;
  options: PlanOptions;
  sourceQemu: QemuFacts;
  destinationQemu: QemuFacts;
}

/**
 * `--copy-storage` flattens a disk's backing chain into one image on the destination, so the same-named bitmaps of
 * every layer travel once, merged into a temporary bitmap on the disk's top node (libvirt's approach).
 */
export interface MergeGroup {
  /** The copied disk's top node, where the temporary bitmap is made. */
  disk: BlockNode;
  /** The bitmap name shared by the layers. */
  name: string;
  /** The temporary bitmap's name on `disk`. */
  temporary: string;
  granularity: number;
  recording: boolean;
  /** The bitmaps merged, top layer first. */
  sources: { node: string; bitmap: string }[];
  /** The row that stands for the merged bitmap in the stream and in verification. */
  representative: Work;
}

/** One source bitmap while it is being decided; `dst` is the resolved destination node. */
export interface Work {
  node: BlockNode;
  bitmap: Bitmap;
  entry: PlanBitmap;
  dst: BlockNode | undefined;
  /** The map entry set the target's persistence / enabled state explicitly. */
  explicitPersistent?: boolean;
  explicitEnabled?: boolean;
  /** Set on every row whose bitmap travels merged with its chain (`--copy-storage`). */
  merge?: MergeGroup | undefined;
}

/** The node whose bitmap actually travels for this row: the copied disk's top for merged chains. */
export function streamNode(w: Work): BlockNode {
  return w.merge?.disk ?? w.node;
}

/** Whether this row is one bitmap of the migration stream (merged chains travel as one). */
export function isStream(w: Work): boolean {
  return w.merge === undefined || w.merge.representative === w;
}

export function addError(
  entry: PlanBitmap,
  code: PlanError["code"],
  message: string,
  target?: { node: string; bitmap: string },
): void {
  if (entry.errors.some((e) => e.code === code)) return;
  const err: PlanError = { code, message, node: entry.source.node, bitmap: entry.source.bitmap };
  if (target) err.target = target;
  entry.errors.push(err);
}

/** The destination side of a bitmap's plan, for errors about it. */
export function targetOf(entry: PlanBitmap): { node: string; bitmap: string } | undefined {
  return entry.target ? { node: entry.target.node, bitmap: entry.target.bitmap } : undefined;
}

/** An error about the bitmap's destination side: it carries `target`. */
export function addTargetError(entry: PlanBitmap, code: PlanError["code"], message: string): void {
  addError(entry, code, message, targetOf(entry));
}

export function quote(s: string): string {
  return /^[A-Za-z_][\w.-]*$/.test(s) ? s : JSON.stringify(s);
}

/** The name a user should write for a node: its drive, else its node-name. */
export function preferredName(node: BlockNode, lookup: GraphLookup): string {
  return lookup.drivesOf(node.name)[0]?.name ?? node.name;
}

export function describeNode(node: BlockNode, lookup: GraphLookup): string {
  const drive = lookup.drivesOf(node.name)[0];
  return drive ? `drive '${drive.name}' (node '${node.name}')` : `node '${node.name}'`;
}
