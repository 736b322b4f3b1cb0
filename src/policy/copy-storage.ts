import type { GraphLookup, Resolved } from "../graph/lookup.js";
import type { BlockNode } from "../graph/model.js";
import type { Ctx } from "./decide.js";
import type { PlanError, PlanWarning } from "./types.js";
import { addError, describeNode, type MergeGroup, type Work } from "./work.js";

/** A disk `--copy-storage` copies: a source node, the node QEMU mirrors from, and its destination node. */
export interface DiskPair {
  source: { node: string; drive: string | null; mirrorFrom: string; size: number };
  target: { node: string; drive: string | null; size: number };
}

export interface CopyStoragePlan {
  disks: DiskPair[];
  /** Each backing node of a copied disk's chain, to the disk's top node. */
  chainTop: Map<string, BlockNode>;
}

/**
 * The disks to copy: the root of every named drive, every node a per-node map entry names, and every top-level
 * node with bitmaps. Each is paired with a destination node by the same resolution as bitmaps; QEMU's mirror
 * needs both of the same size.
 */
export function planDisks(ctx: Ctx, errors: PlanError[]): CopyStoragePlan {
  const { src, dst } = ctx;
  const disks = new Map<string, BlockNode>();
  for (const d of src.graph.drives) {
    const n = d.driveRoot === undefined ? undefined : src.node(d.driveRoot);
    if (n && !n.readOnly) disks.set(n.name, n);
  }
  const mappedTarget = new Map<string, string>();
  for (const r of ctx.perNode.values()) {
    if (r.entry.target === null) continue;
    disks.set(r.node.name, r.node);
    mappedTarget.set(r.node.name, r.entry.target.node);
  }
  for (const n of src.graph.nodes) {
    if (n.bitmaps.length > 0 && !n.readOnly && src.parentsOf(n.name).length === 0) disks.set(n.name, n);
  }
  const chainTop = new Map<string, BlockNode>();
  const pairs: DiskPair[] = [];
  const byTarget = new Map<string, string[]>();
  for (const disk of disks.values()) {
    for (let b = src.backingOf(disk); b && !chainTop.has(b.name); b = src.backingOf(b))
      chainTop.set(b.name, disk);
    const drive = src.drivesOf(disk.name)[0];
    const resolved = resolveDisk(disk, mappedTarget.get(disk.name), src, dst);
    const where = describeNode(disk, src);
    if (!resolved) {
      errors.push({
        code: "TARGET_NODE_MISSING",
        node: disk.name,
        bitmap: null,
        message:
          `--copy-storage copies ${where}, but the destination has no node for it (it has: ${dst.knownNames}). ` +
          `Start the destination with an empty image of ${disk.size} bytes under the same drive id or node-name, or map it: ` +
          `{source: ${drive?.name ?? disk.name}, target: <destination node>}`,
      });
      continue;
    }
    const t = resolved.node;
    const target = { node: t.name, bitmap: "" };
    if (t.size !== disk.size) {
      errors.push({
        code: t.size < disk.size ? "TARGET_TOO_SMALL" : "TARGET_SIZE_MISMATCH",
        node: disk.name,
        bitmap: null,
        target,
        message:
          `--copy-storage copies ${where} (${disk.size} bytes) to destination node '${t.name}' (${t.size} bytes): QEMU's ` +
          `mirror needs both of the same size. Create the destination image with exactly ${disk.size} bytes`,
      });
    }
    if (t.readOnly) {
      errors.push({
        code: "TARGET_READ_ONLY",
        node: disk.name,
        bitmap: null,
        target,
        message: `--copy-storage would write ${where} into destination node '${t.name}', which is read-only`,
      });
    }
    const list = byTarget.get(t.name) ?? [];
    list.push(disk.name);
    byTarget.set(t.name, list);
    pairs.push({
      source: {
        node: disk.name,
        drive: drive?.name ?? null,
        mirrorFrom: mirrorRoot(disk, src),
        size: disk.size,
      },
      target: { node: t.name, drive: dst.drivesOf(t.name)[0]?.name ?? null, size: t.size },
    });
  }
  for (const [t, sources] of byTarget) {
    if (sources.length < 2) continue;
    errors.push({
      code: "MAPPING_INEXPRESSIBLE",
      node: null,
      bitmap: null,
      message: `--copy-storage would copy ${sources.length} source disks (${sources.join(", ")}) into the one destination node '${t}'`,
    });
  }
  return { disks: pairs, chainTop };
}

function resolveDisk(
  disk: BlockNode,
  mapped: string | undefined,
  src: GraphLookup,
  dst: GraphLookup,
): Resolved | undefined {
  if (mapped !== undefined) return dst.resolve(mapped);
  for (const d of src.drivesOf(disk.name)) {
    const r = dst.driveRootOf(d.name) ?? dst.node(d.name);
    if (r) return { node: r, via: "drive" };
  }
  if (disk.generated) return undefined;
  const n = dst.node(disk.name) ?? dst.driveRootOf(disk.name);
  return n ? { node: n, via: "node" } : undefined;
}

/**
 * QEMU mirrors from a root node: the node under a drive's BlockBackend (a filter such as throttle included), or
 * the topmost filter above a node.
 */
function mirrorRoot(disk: BlockNode, src: GraphLookup): string {
  const drive = src.drivesOf(disk.name)[0];
  if (drive) return drive.root;
  let cur = disk;
  for (let depth = 0; depth < 16; depth++) {
    const parent = src.parentsOf(cur.name).find((p) => p.parent.filter && p.parent.filtered === cur.name);
    if (!parent) break;
    cur = parent.parent;
  }
  return cur.name;
}

/**
 * Decides the bitmaps of backing layers of copied disks: a layer's bitmap follows the decision for the same-named
 * bitmap on the disk's top node, and travels merged with it; a name found only in backing layers is decided as if
 * it were on the top node (DESIGN section 3, step 2), a per-node map entry of the disk included.
 */
export function decideChains(
  deferred: Work[],
  all: Work[],
  plan: CopyStoragePlan,
  ctx: Ctx,
  decideAs: (w: Work, ctx: Ctx, node: BlockNode) => void,
  warnings: PlanWarning[],
): MergeGroup[] {
  const groups = new Map<string, { disk: BlockNode; rows: Work[] }>();
  for (const w of deferred) {
    const disk = plan.chainTop.get(w.node.name);
    if (!disk) continue;
    const key = `${disk.name}\u0000${w.bitmap.name}`;
    const g = groups.get(key) ?? { disk, rows: [] };
    g.rows.push(w);
    groups.set(key, g);
  }
  const top = new Map(all.map((w) => [`${w.node.name}\u0000${w.bitmap.name}`, w]));
  const merges: MergeGroup[] = [];
  const taken = new Map<string, Set<string>>();
  for (const [key, { disk, rows }] of groups) {
    const head = top.get(key);
    const rep = head ?? rows[0];
    if (!rep) continue;
    if (!head) decideAs(rep, ctx, disk);
    const followers = head ? rows : rows.slice(1);
    if (rep.entry.action !== "migrate") {
      for (const w of followers) {
        w.entry.action = "skip";
        w.entry.rule = rep.entry.rule;
        w.entry.target = null;
      }
      if (!head && rep.entry.action === "skip") {
        warnings.push({
          code: "CHAIN_BITMAP_DROPPED",
          node: rep.node.name,
          bitmap: rep.bitmap.name,
          message:
            `bitmap '${rep.bitmap.name}' exists only in the backing chain of ${describeNode(disk, ctx.src)}, which ` +
            `--copy-storage flattens: the destination will not have it (rule ${rep.entry.rule})`,
        });
      }
      continue;
    }
    const used = taken.get(disk.name) ?? new Set(disk.bitmaps.map((b) => b.name));
    taken.set(disk.name, used);
    let temporary = `bitferry-merge-${merges.length}`;
    for (let i = merges.length; used.has(temporary); i++) temporary = `bitferry-merge-${i + 1}`;
    used.add(temporary);
    const recording = head?.bitmap.recording ?? true;
    const group: MergeGroup = {
      disk,
      name: rep.bitmap.name,
      temporary,
      granularity: head?.bitmap.granularity ?? rep.bitmap.granularity,
      recording,
      sources: [...(head ? [head] : []), ...rows].map((w) => ({ node: w.node.name, bitmap: w.bitmap.name })),
      representative: rep,
    };
    merges.push(group);
    // The merged bitmap is made on the destination for good (libvirt's behaviour) unless the map says otherwise.
    const t = rep.entry.target;
    if (t) {
      if (!rep.explicitPersistent) t.persistent = true;
      if (!rep.explicitEnabled) t.enabled = recording;
    }
    for (const w of [rep, ...followers]) w.merge = group;
    for (const w of followers) {
      w.entry.action = "migrate";
      w.entry.rule = "chain-merge";
      w.entry.target = t ? { ...t } : null;
      w.dst = rep.dst;
      // A layer follows its top's decision, errors included: one that cannot be resolved cannot travel merged.
      for (const e of rep.entry.errors) {
        addError(
          w.entry,
          e.code,
          `travels merged with '${rep.bitmap.name}' of ${describeNode(disk, ctx.src)}: ${e.message}`,
          e.target,
        );
      }
    }
  }
  return merges;
}
