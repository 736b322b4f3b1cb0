import type { GraphLookup } from "../graph/lookup.js";
import type { Bitmap, BlockNode } from "../graph/model.js";
import { Fans, PairMap, PairSet } from "./pairs.js";
import {
  addError,
  addTargetError,
  describeNode,
  isStream,
  streamNode,
  type PlanInput,
  type QemuFacts,
  type Work,
} from "./work.js";
import { checkSizeGrowth } from "./size-growth.js";
import type { PlanError, PlanWarning } from "./types.js";

/**
 * A list for a message that every member of a group carries: capped, so that n members do not make n² text (a
 * QEMU reply listing thousands of nodes once made `plan --json` print gigabytes).
 */
function listOf(items: readonly string[], max = 10): string {
  if (items.length <= max) return items.join(", ");
  return `${items.slice(0, max).join(", ")} and ${items.length - max} more`;
}

/** QEMU's limit on bitmap names (block-dirty-bitmap-add, the mapping's `name`). */
export const MAX_BITMAP_NAME_BYTES = 1023;
/** QEMU's limit on node-names, which block-bitmap-mapping enforces (reference R22, §5.2). */
export const MAX_NODE_NAME_BYTES = 31;

interface CheckCtx {
  src: GraphLookup;
  dst: GraphLookup;
  errors: PlanError[];
  warnings: PlanWarning[];
}

/**
 * The checks that look across bitmaps and at the destination: everything QEMU would otherwise fail on, crash on
 * or silently drop. Each adds errors to the bitmaps concerned (plan-level ones to `ctx.errors`). All but checkQemu,
 * which needs the QEMUs' features: it is run on the stream rows this returns.
 */
export function runChecks(work: Work[], ctx: CheckCtx): Work[] {
  checkBlockers(work, ctx);
  // The checks of one row on its own, all in one pass: a plan's rows lie scattered over the heap, and every pass
  // over them costs a few cache misses per row, more than the checks themselves. The pass also collects the row
  // lists the checks across rows read.
  const streams: Work[] = [];
  const images = sharedImages(ctx);
  // The persistent bitmaps of shared images whose rows keep them behind, by node and name: only they can make
  // checkSharedImages find anything, and usually every one migrates. Rows come node by node: a node is looked up
  // once per run of rows. Set in the callback below, where the compiler does not look.
  let kept = undefined as Kept | undefined;
  let node: BlockNode | undefined;
  let nodeShared = false;
  work.forEach((w) => {
    if (images && w.bitmap.persistent && !w.bitmap.inconsistent && !leaves(w)) {
      if (w.node !== node) {
        node = w.node;
        nodeShared = images.sources.has(w.node.name);
      }
      if (nodeShared) {
        kept ??= { pairs: new PairSet(), nodes: [] };
        if (kept.nodes[kept.nodes.length - 1] !== w.node) kept.nodes.push(w.node);
        kept.pairs.add(w.node.name, w.bitmap.name);
      }
    }
    // Most rows are neither busy nor merged: those two checks are not even called for them.
    if (w.bitmap.busy) checkBusyPersistent(w, ctx);
    if (w.entry.action !== "migrate") return;
    if (w.merge) checkMergeSource(w, ctx);
    checkName(w);
    checkSizeGrowth(w, ctx.src);
    if (!isStream(w)) return;
    streams.push(w);
    if (w.dst !== undefined) checkDestination(w, w.dst, ctx);
  });
  if (images && kept) checkSharedImages(work, images, kept, ctx);
  checkGroups(streams);
  return streams;
}

/** Rows by a (node, bitmap) pair: almost every pair has one row, held as is until a second one arrives. */
type Rows = Work | Work[];

/** Returns whether the pair already had a row. */
function addRow(map: PairMap<Rows>, node: string, bitmap: string, w: Work): boolean {
  const cur = map.get(node, bitmap);
  if (cur === undefined) map.set(node, bitmap, w);
  else if (Array.isArray(cur)) cur.push(w);
  else map.replace(node, bitmap, [cur, w]);
  return cur !== undefined;
}

function rowsOf(rows: Rows | undefined): readonly Work[] {
  return rows === undefined ? [] : Array.isArray(rows) ? rows : [rows];
}

/**
 * QEMU checks every named bitmap of a node it migrates bitmaps from: one busy, inconsistent or read-only bitmap
 * fails the whole migration, even one that is not itself migrating. (A merged chain migrates from its top node.)
 */
function checkBlockers(work: Work[], ctx: CheckCtx): void {
  // Most plans have no such bitmap at all: nothing to index then.
  if (!ctx.src.hasBlockingBitmap) return;
  const migratingByNode = new Map<string, Work[]>();
  for (const w of work) {
    if (w.entry.action !== "migrate") continue;
    const node = streamNode(w).name;
    const list = migratingByNode.get(node);
    if (list) list.push(w);
    else migratingByNode.set(node, [w]);
  }
  for (const w of work) {
    const b = w.bitmap;
    if (!b.busy && !b.inconsistent && !b.readOnly) continue;
    const moving = migratingByNode.get(w.node.name);
    if (!moving) continue;
    const problem = b.busy
      ? {
          code: "BITMAP_BUSY" as const,
          what: "is in use by another operation (a block job, an NBD export or a backup)",
          end: "end what holds it (block-export-del, or let the job finish)",
        }
      : b.inconsistent
        ? {
            code: "BITMAP_INCONSISTENT" as const,
            what: "is inconsistent (QEMU was not shut down cleanly; its content is lost)",
            end: `remove it (block-dirty-bitmap-remove node=${w.node.name} name=${b.name})`,
          }
        : b.readOnly
          ? {
              code: "BITMAP_READ_ONLY" as const,
              what: "is read-only (its node is opened read-only)",
              end: "",
            }
          : undefined;
    if (!problem) continue;
    const others = [...new Set(moving.filter((m) => m !== w).map((m) => `'${m.bitmap.name}'`))];
    const where = describeNode(w.node, ctx.src);
    const nodeDeny = `deny: ['${ctx.src.drivesOf(w.node.name)[0]?.name ?? w.node.name}/*']`;
    let message = `bitmap '${b.name}' on ${where} ${problem.what}. QEMU refuses to migrate any bitmap of a node that has such a bitmap`;
    if (others.length > 0) {
      message += `, so it blocks ${listOf(others)}. Fix: ${problem.end ? `${problem.end}, or ` : ""}skip every bitmap of the node (${nodeDeny})`;
    } else if (w.entry.action === "migrate") {
      message += `. Fix: ${problem.end ? `${problem.end}, or ` : ""}skip it (deny: ['${w.node.name}/${b.name}'])`;
    }
    addError(w.entry, problem.code, message);
  }
}

/**
 * At the switchover the source hands its disks over: qcow2 stores every persistent bitmap it does not migrate and
 * releases it, and QEMU (7.2 and 10.0 alike) aborts on one that is in use (`bdrv_release_dirty_bitmap_locked:
 * Assertion '!bdrv_dirty_bitmap_busy(bitmap)' failed`): the source dies, and the destination with it. So a busy
 * persistent bitmap anywhere on the source fails the plan, whether or not its node migrates anything.
 */
function checkBusyPersistent(w: Work, ctx: CheckCtx): void {
  const b = w.bitmap;
  if (!b.busy || !b.persistent || w.node.readOnly) return;
  addError(
    w.entry,
    "BITMAP_BUSY",
    `bitmap '${b.name}' on ${describeNode(w.node, ctx.src)} is persistent and in use by another operation (a block ` +
      `job, an NBD export or a backup): when the source hands its disks over at the switchover, QEMU stores it and ` +
      `aborts because it is in use, and the VM is lost on both sides, whether or not the bitmap migrates. Fix: end ` +
      `what holds it (block-export-del, or let the job finish) before migrating`,
  );
}

/** A merged chain is made with block-dirty-bitmap-merge, which refuses busy and inconsistent sources and size changes. */
function checkMergeSource(w: Work, ctx: CheckCtx): void {
  const g = w.merge;
  if (!g || w.node === g.disk) return;
  const b = w.bitmap;
  const where = describeNode(w.node, ctx.src);
  if (b.busy || b.inconsistent) {
    addError(
      w.entry,
      b.busy ? "BITMAP_BUSY" : "BITMAP_INCONSISTENT",
      `bitmap '${b.name}' on backing node ${where} is ${b.busy ? "in use by another operation" : "inconsistent"}: ` +
        `QEMU cannot merge it into the copy of ${describeNode(g.disk, ctx.src)}. Skip the name (deny: ['${b.name}']) ` +
        `or ${b.busy ? "end what holds it" : "remove it from the backing image (qemu-img bitmap --remove)"}`,
    );
  }
  if (w.node.size !== g.disk.size) {
    addError(
      w.entry,
      "QEMU_UNSUPPORTED",
      `bitmap '${b.name}' on backing node ${where} (${w.node.size} bytes) cannot be merged into the top node ` +
        `'${g.disk.name}' (${g.disk.size} bytes): QEMU merges only bitmaps of nodes of the same size. Skip the name (deny: ['${b.name}'])`,
    );
  }
}

/**
 * Whether `s` may be longer than `max` bytes in UTF-8: a UTF-16 unit is at most 3 bytes, so most names are known
 * to fit from their length alone, without counting.
 */
export function mayExceed(s: string, max: number): boolean {
  return s.length * 3 > max && Buffer.byteLength(s) > max;
}

function checkName(w: Work): void {
  const t = w.entry.target;
  checkBitmapName(w, w.bitmap.name);
  checkBitmapName(w, t?.bitmap ?? "");
  // QEMU itself never reports longer node-names; a reply that does cannot be put into block-bitmap-mapping.
  checkNodeName(w, streamNode(w).name);
  checkNodeName(w, t?.node ?? "");
}

function checkBitmapName(w: Work, name: string): void {
  if (!mayExceed(name, MAX_BITMAP_NAME_BYTES)) return;
  addError(
    w.entry,
    "NAME_TOO_LONG",
    `bitmap name '${name.slice(0, 40)}…' is ${Buffer.byteLength(name)} bytes; QEMU accepts at most ${MAX_BITMAP_NAME_BYTES}. Rename it with a per-bitmap map entry`,
  );
}

function checkNodeName(w: Work, node: string): void {
  if (!mayExceed(node, MAX_NODE_NAME_BYTES)) return;
  addError(
    w.entry,
    "NAME_TOO_LONG",
    `node-name '${node.slice(0, 40)}…' is ${Buffer.byteLength(node)} bytes; QEMU's block-bitmap-mapping accepts at most ${MAX_NODE_NAME_BYTES}`,
  );
}

/** The bitmap called `name` among `list`: a scan, as nodes carry few bitmaps. */
function named<T extends { name: string }>(list: readonly T[], name: string): T | undefined {
  // An incoming destination shows no bitmaps in memory, and most nodes store none.
  if (list.length === 0) return undefined;
  for (const x of list) {
    if (x.name === name) return x;
  }
  return undefined;
}

function checkDestination(w: Work, dst: BlockNode, ctx: CheckCtx): void {
  const t = w.entry.target;
  if (!t) return;
  const src = w.node;
  const g = w.bitmap.granularity;
  if (dst.readOnly) {
    addTargetError(
      w.entry,
      "TARGET_READ_ONLY",
      `destination ${describeNode(dst, ctx.dst)} is read-only: QEMU cannot create bitmap '${t.bitmap}' there`,
    );
  }
  if (dst.size < src.size) {
    addTargetError(
      w.entry,
      "TARGET_TOO_SMALL",
      `destination ${describeNode(dst, ctx.dst)} is ${dst.size} bytes, smaller than the source's ${src.size}: QEMU would crash the destination ` +
        `(hbitmap assertion) after the source reported success. Give the destination node at least ${src.size} bytes`,
    );
  } else if (dst.size > src.size && src.size % (64 * g) !== 0) {
    addTargetError(
      w.entry,
      "TARGET_SIZE_MISMATCH",
      `destination ${describeNode(dst, ctx.dst)} is ${dst.size} bytes, larger than the source's ${src.size}, and the source size is not a ` +
        `multiple of 64 × the granularity (${64 * g}): QEMU 7.2 would crash the destination. Make both nodes the same size`,
    );
  }
  const inRam = named(dst.bitmaps, t.bitmap);
  if (inRam) {
    addTargetError(
      w.entry,
      "TARGET_BITMAP_EXISTS",
      `destination ${describeNode(dst, ctx.dst)} already has a bitmap '${t.bitmap}' in memory: QEMU would kill the destination. Remove it there ` +
        `(block-dirty-bitmap-remove) or rename this one with a map entry`,
    );
  } else {
    const stored = named(dst.storedBitmaps, t.bitmap);
    // An in-use copy is what a shared image shows while the source holds it open: the migrated bitmap replaces it.
    // Anything else makes the destination's activation fail ("Bitmap already exists").
    const sharedCopy = stored?.inUse === true && w.bitmap.name === t.bitmap && w.bitmap.persistent;
    if (stored && !sharedCopy) {
      addTargetError(
        w.entry,
        "TARGET_BITMAP_EXISTS",
        `destination ${describeNode(dst, ctx.dst)} stores a bitmap '${t.bitmap}' in its image${stored.inUse ? " (flagged in use)" : ""}: the ` +
          `destination would fail to activate the disk after the migration. Remove it before starting the destination ` +
          `(qemu-img bitmap --remove ${dst.filename ?? "IMAGE"} ${t.bitmap}) or rename this one with a map entry`,
      );
    }
  }
  if (t.persistent && !dst.canStoreBitmaps) {
    addTargetError(
      w.entry,
      "PERSISTENCE_UNSUPPORTED",
      `bitmap '${t.bitmap}' would be persistent on destination ${describeNode(dst, ctx.dst)} (driver ${dst.driver}), which cannot store bitmaps ` +
        `(only qcow2 v3 can): it would vanish at the destination's next shutdown. To accept that, map it with ` +
        `persistent: false: {source: {node: ${src.name}, bitmap: ${w.bitmap.name}}, target: {node: ${dst.name}, persistent: false}}`,
    );
  }
}

interface SharedImages {
  /** Each destination node that opens an image a source node has open, with that source node. */
  shared: { dst: BlockNode; src: BlockNode }[];
  /** The names of those source nodes. */
  sources: Set<string>;
}

/** The qcow2 images both sides open (shared storage), if any. */
function sharedImages(ctx: CheckCtx): SharedImages | undefined {
  const sourceOf = new Map<string, BlockNode>();
  ctx.src.graph.nodes.forEach((n) => {
    if (n.driver === "qcow2" && n.filename !== undefined && !n.readOnly) sourceOf.set(n.filename, n);
  });
  if (sourceOf.size === 0) return undefined;
  // The destination nodes that open a source image, with it: only their bitmaps and those nodes' can conflict, so
  // only those are indexed in checkSharedImages.
  const images: SharedImages = { shared: [], sources: new Set() };
  const targets = new Set<string>();
  ctx.dst.graph.nodes.forEach((dst) => {
    const src = dst.driver === "qcow2" && dst.filename !== undefined ? sourceOf.get(dst.filename) : undefined;
    if (!src || targets.has(dst.name)) return;
    targets.add(dst.name);
    images.sources.add(src.name);
    images.shared.push({ dst, src });
  });
  return images.shared.length === 0 ? undefined : images;
}

/** The rows that keep a persistent bitmap of a shared image behind: their (node, bitmap) pairs, and their nodes. */
interface Kept {
  pairs: PairSet;
  nodes: BlockNode[];
}

/** Whether two bitmaps of the node have one name (QEMU refuses that; a reply could still say it). */
function repeatsName(node: BlockNode): boolean {
  const names = new Set<string>();
  node.bitmaps.forEach((b) => names.add(b.name));
  return names.size !== node.bitmaps.length;
}

/** Whether the row's bitmap leaves its node in the stream (a merged chain's bitmaps stay where they are). */
function leaves(w: Work): boolean {
  return w.entry.action === "migrate" && !w.merge;
}

/**
 * Shared storage: when the source hands a qcow2 image over at the switchover it stores there every persistent
 * bitmap it does not migrate, and the destination loads them when it activates the image (reference §6.1). A
 * stored bitmap whose name the destination node already has in memory, migrated or its own, makes that activation
 * fail ("Bitmap already exists"; the disk is then unusable, reference R12). The planner sees those names only on
 * the source: a bitmap added since the image was opened is not in the image yet.
 */
function checkSharedImages(work: Work[], images: SharedImages, kept: Kept, ctx: CheckCtx): void {
  const { shared, sources: sharedSources } = images;
  // A kept bitmap still leaves when another row of its node-name and name does (a reply that names two nodes or two
  // bitmaps of a node alike): the image then stores nothing under that name. Only the kept pairs are looked for,
  // and only when names repeat.
  const leaving = new PairSet();
  if (!ctx.src.uniqueNodeNames || kept.nodes.some(repeatsName)) {
    // Rows come node by node: whether a node is shared is looked up once per run of rows.
    let fromNode: BlockNode | undefined;
    let fromShared = false;
    work.forEach((w) => {
      if (!leaves(w)) return;
      if (w.node !== fromNode) {
        fromNode = w.node;
        fromShared = sharedSources.has(w.node.name);
      }
      if (fromShared && kept.pairs.has(w.node.name, w.bitmap.name)) leaving.add(w.node.name, w.bitmap.name);
    });
  }
  // Every bitmap of a source node has its own row, so a stored bitmap that stays behind is a kept one.
  const staying = (src: BlockNode, b: Bitmap): boolean =>
    b.persistent && !b.inconsistent && kept.pairs.has(src.name, b.name) && !leaving.has(src.name, b.name);
  // By destination node, the names its image will store: the arrivals under those names are all that is indexed.
  const stayingAt = new PairSet();
  let anyStaying = false as boolean;
  shared.forEach(({ dst, src }) => {
    src.bitmaps.forEach((b) => {
      if (!staying(src, b)) return;
      anyStaying = true;
      stayingAt.add(dst.name, b.name);
    });
  });
  if (!anyStaying) return;
  const arriving = new PairMap<Rows>();
  work.forEach((w) => {
    const t = w.entry.target;
    if (w.entry.action !== "migrate" || !t) return;
    if (stayingAt.has(t.node, t.bitmap)) addRow(arriving, t.node, t.bitmap, w);
  });
  let rowOf: Map<Bitmap, Work> | undefined;
  // forEach, not for...of: this runs once a plan, in unoptimised code, which allocates an iterator result per element.
  shared.forEach(({ dst, src }) => {
    const inMemory = dst.bitmaps.length === 0 ? undefined : new Set(dst.bitmaps.map((x) => x.name));
    src.bitmaps.forEach((b) => {
      if (!staying(src, b)) return;
      const incoming = arriving.get(dst.name, b.name);
      const row =
        inMemory?.has(b.name) === true
          ? (rowOf ??= new Map(work.map((w) => [w.bitmap, w]))).get(b)
          : undefined;
      if (!incoming && !row) return;
      // Messages are built only for the conflicts: most stored bitmaps of a shared image conflict with nothing.
      const dstDesc = describeNode(dst, ctx.dst);
      const why =
        `the source stores its bitmap '${b.name}' (which does not migrate) in image ${dst.filename ?? ""}, which ` +
        `destination ${dstDesc} opens too, when it hands the disk over; the destination would then fail to activate ` +
        `the disk ("Bitmap already exists")`;
      for (const w of rowsOf(incoming)) {
        addTargetError(
          w.entry,
          "TARGET_BITMAP_EXISTS",
          `bitmap '${w.bitmap.name}' would arrive as '${b.name}' on destination ${dstDesc}, but ${why}. Rename it ` +
            `with a map entry, or migrate '${b.name}' too`,
        );
      }
      if (row) {
        addError(
          row.entry,
          "TARGET_BITMAP_EXISTS",
          `destination ${dstDesc} already has a bitmap '${b.name}' in memory, and ${why}. Remove it there ` +
            `(block-dirty-bitmap-remove node=${dst.name} name=${b.name})`,
          { node: dst.name, bitmap: b.name },
        );
      }
    });
  });
}

/**
 * QEMU's mapping pairs nodes one to one, and two bitmaps cannot land on one name. Over the stream rows whose
 * destination node was found.
 */
function checkGroups(migrating: Work[]): void {
  const byTarget = new PairMap<Rows>();
  const dstsOfSrc = new Fans();
  const srcsOfDst = new Fans();
  // Rows come node by node: a pair of nodes just added is skipped (adding it again changes nothing).
  let lastFrom: string | undefined;
  let lastTo: string | undefined;
  // Set in the callback below, where the compiler does not look.
  let shared = false as boolean;
  migrating.forEach((w) => {
    const t = w.entry.target;
    if (!t || w.dst === undefined) return;
    if (addRow(byTarget, t.node, t.bitmap, w)) shared = true;
    const from = streamNode(w).name;
    if (from === lastFrom && t.node === lastTo) return;
    lastFrom = from;
    lastTo = t.node;
    dstsOfSrc.add(from, t.node);
    srcsOfDst.add(t.node, from);
  });
  // Both passes below find nothing in most plans, and each would read every row again: they run only when needed.
  for (const group of shared ? byTarget.values() : []) {
    if (!Array.isArray(group)) continue;
    const names = listOf(group.map((w) => `'${w.node.name}/${w.bitmap.name}'`));
    for (const w of group) {
      const t = w.entry.target;
      if (!t) continue;
      addTargetError(
        w.entry,
        "TARGET_CONFLICT",
        `${names} would all land on bitmap '${t.bitmap}' of destination node '${t.node}'. Rename all but one with map entries, or skip them`,
      );
    }
  }
  if (!dstsOfSrc.spread && !srcsOfDst.spread) return;
  // Most rows share their nodes with the row before: their counts are looked up once per run of rows.
  let countedFrom: string | undefined;
  let countedTo: string | undefined;
  let fanOut = 0;
  let fanIn = 0;
  migrating.forEach((w) => {
    const t = w.entry.target;
    if (!t || w.dst === undefined) return;
    const from = streamNode(w).name;
    if (from !== countedFrom) {
      countedFrom = from;
      fanOut = dstsOfSrc.count(from);
    }
    if (t.node !== countedTo) {
      countedTo = t.node;
      fanIn = srcsOfDst.count(t.node);
    }
    if (fanOut > 1) {
      addTargetError(
        w.entry,
        "MAPPING_INEXPRESSIBLE",
        `the bitmaps of source node '${streamNode(w).name}' would go to ${fanOut} destination nodes (${listOf(dstsOfSrc.list(streamNode(w).name))}); QEMU's mapping sends all bitmaps of one node to one node. Send them to one node, or skip some`,
      );
    }
    if (fanIn > 1) {
      addTargetError(
        w.entry,
        "MAPPING_INEXPRESSIBLE",
        `destination node '${t.node}' would receive bitmaps from ${fanIn} source nodes (${listOf(srcsOfDst.list(t.node))}); QEMU's mapping pairs nodes one to one. Send them to different nodes, or skip some`,
      );
    }
  });
}

/**
 * What the two QEMUs must support for the stream rows (`migrating`, as runChecks returns them): the last of the
 * checks, and the only one that needs their features. Plan-level findings go to `errors` and `warnings`.
 */
export function checkQemu(
  migrating: Work[],
  input: PlanInput,
  errors: PlanError[],
  warnings: PlanWarning[],
): void {
  if (input.destination.runState !== "inmigrate") {
    errors.push({
      code: "DESTINATION_NOT_INCOMING",
      node: null,
      bitmap: null,
      message: `the destination is ${input.destination.runState}, not waiting for a migration: start it with -incoming defer (or -incoming URI)`,
    });
  }
  if (migrating.length === 0) return;
  for (const [side, facts] of [
    ["source", input.sourceQemu],
    ["destination", input.destinationQemu],
  ] as const) {
    if (!facts.features.bitmapMapping) {
      errors.push({
        code: "QEMU_UNSUPPORTED",
        node: null,
        bitmap: null,
        message: `QEMU ${facts.version} on the ${side} has no block-bitmap-mapping (QEMU 5.2 or later needed)`,
      });
    }
    if (!("dirty-bitmaps" in facts.capabilities)) {
      errors.push({
        code: "QEMU_UNSUPPORTED",
        node: null,
        bitmap: null,
        message: `QEMU ${facts.version} on the ${side} has no dirty-bitmaps migration capability`,
      });
    }
  }
  const canTransform =
    input.sourceQemu.features.mappingTransform || input.destinationQemu.features.mappingTransform;
  if (!canTransform)
    migrating.forEach((w) => {
      const t = w.entry.target;
      // A merged chain travels as a temporary, transient bitmap.
      const sourcePersistent = w.merge ? false : w.bitmap.persistent;
      if (t && t.persistent !== sourcePersistent) {
        addError(
          w.entry,
          "QEMU_UNSUPPORTED",
          `changing the persistence of '${w.bitmap.name}' needs block-bitmap-mapping transforms (QEMU 6.0 or later on either side); QEMU here is ${input.sourceQemu.version} → ${input.destinationQemu.version}`,
        );
      }
    });
  if (input.options.postcopy) {
    const nodes = new Set(migrating.map((w) => streamNode(w).name));
    if (nodes.size > 1) {
      errors.push({
        code: "POSTCOPY_UNSAFE",
        node: null,
        bitmap: null,
        message:
          `--postcopy with bitmaps on ${nodes.size} nodes (${[...nodes].slice(0, 5).join(", ")}${nodes.size > 5 ? ", …" : ""}): ` +
          `QEMU crashes the destination when postcopy carries bitmaps of more than one node. Migrate without --postcopy ` +
          `(use --max-downtime if the plan warns about convergence), or migrate the bitmaps of one node only`,
      });
    }
  }
  const mismatch = switchoverStartMismatch(input.sourceQemu, input.destinationQemu);
  if (mismatch) warnings.push({ code: "SWITCHOVER_START_MISMATCH", message: mismatch });
  if (!input.sourceQemu.features.bitmapSha256 || !input.destinationQemu.features.bitmapSha256) {
    warnings.push({
      code: "NO_CONTENT_HASH",
      message:
        "one side lacks x-debug-block-dirty-bitmap-sha256: bitmaps will be verified by granularity and dirty count only",
    });
  }
}

/**
 * Reference R28: QEMU 10.0+ sends a switchover-start command that older destinations do not know; they exit after
 * the source already reported success. Versioned machine types older than 10.0 switch it off by compatibility
 * properties, and so does `-global migration.send-switchover-start=off`, which QMP cannot read back: a warning,
 * not an error (the run checks the destination and resumes the source if it happens).
 */
export function switchoverStartMismatch(src: QemuFacts, dst: QemuFacts): string | undefined {
  const srcHas = src.migrationProperties?.includes("send-switchover-start");
  const dstHas = dst.migrationProperties?.includes("send-switchover-start");
  if (srcHas !== true || dstHas !== false) return undefined;
  const m = /-(\d+)\.(\d+)(?:-machine)?$/.exec(src.machineType ?? "");
  if (m && Number(m[1]) * 100 + Number(m[2]) < 1000) return undefined;
  return (
    `the source (QEMU ${src.version}, machine ${src.machineType ?? "unknown"}) sends a switchover-start command that the ` +
    `destination (QEMU ${dst.version}) does not know: the destination would exit after the source reports success. ` +
    `Start the source with -global migration.send-switchover-start=off (or a machine type of 9.2 or older); ` +
    `if it happens anyway, bitferry detects the destination's failure and resumes the source`
  );
}
