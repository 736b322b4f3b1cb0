import { GraphLookup } from "../graph/lookup.js";
import type { Bitmap, BlockGraph, BlockNode } from "../graph/model.js";
import { checkQemu, runChecks } from "./checks.js";
import { bitmapPayloadBytes, predictConvergence, qemuPendingBytes } from "./convergence.js";
import { compilePattern, Patterns } from "./glob.js";
import type { MapEntry, PlanBitmap, PlanError, PlanWarning, Policy, Rule } from "./types.js";
import { decideChains, planDisks, type DiskPair } from "./copy-storage.js";
import {
  addError,
  addTargetError,
  describeNode,
  isStream,
  preferredName,
  quote,
  streamNode,
  targetOf,
  type MergeGroup,
  type PlanInput,
  type Work,
} from "./work.js";

export interface Decisions {
  bitmaps: PlanBitmap[];
  errors: PlanError[];
  warnings: PlanWarning[];
  payloadBytes: number;
  /** The resolved destination node of each migrating bitmap, index-aligned with `bitmaps`. */
  work: Work[];
  /** The rows of `work` that were bitmaps of the stream when the checks ran (those with errors among them). */
  streams: Work[];
  /** `--copy-storage`: the disks to copy, and the backing-chain bitmaps that travel merged. */
  disks: DiskPair[];
  merges: MergeGroup[];
}

export interface ResolvedEntry {
  entry: MapEntry;
  node: BlockNode;
}

/**
 * The decision procedure of DESIGN section 3 over every named source bitmap, then the checks, in two parts. Pure.
 * decideRows needs only the two graphs: a live plan runs it while QEMU still builds its schema reply (asked last);
 * finishDecisions adds the checks that need the QEMUs' features once it is in.
 */
export interface DecidedRows {
  work: Work[];
  streams: Work[];
  errors: PlanError[];
  warnings: PlanWarning[];
  disks: DiskPair[];
  merges: MergeGroup[];
}

export type RowsInput = Omit<PlanInput, "sourceQemu" | "destinationQemu"> & {
  /** Lookups over `source` and `destination` made already (buildIndexedGraph); any other is not used. */
  lookups?: { source: GraphLookup; destination: GraphLookup };
};

function lookupOf(graph: BlockGraph, made: GraphLookup | undefined): GraphLookup {
  return made?.graph === graph ? made : new GraphLookup(graph);
}

export function decideRows(input: RowsInput): DecidedRows {
  const src = lookupOf(input.source, input.lookups?.source);
  const dst = lookupOf(input.destination, input.lookups?.destination);
  const errors: PlanError[] = [];
  const warnings: PlanWarning[] = [];
  const { perBitmap, perNode } = resolveMap(input.policy, src, errors, warnings);
  const allow = input.policy.allow ? new Patterns(input.policy.allow.map(compilePattern)) : undefined;
  const deny = new Patterns(input.policy.deny.map(compilePattern));

  const ctx: Ctx = { input, src, dst, perBitmap, perNode, allow, deny, namesOf: (n) => src.namesOf(n) };
  const copy = input.options.copyStorage ? planDisks(ctx, errors) : undefined;
  const deferred: Work[] = [];
  const work: Work[] = [];
  // forEach rather than for...of on the rows' paths: unoptimised code (a one-shot CLI plans before V8 optimises
  // anything) allocates an iterator result for every element of a for...of.
  input.source.nodes.forEach((node) => {
    if (node.bitmaps.length === 0) return;
    const drive = src.drivesOf(node.name)[0]?.name ?? null;
    const mappedBitmaps = perBitmap.get(node.name);
    const nodeMapped = perNode.has(node.name);
    const chainTop = copy?.chainTop.has(node.name) === true;
    node.bitmaps.forEach((bitmap) => {
      // Every field set here, in one order: rows keep one shape through the checks (no transitions later). Flat
      // literals, one per object: a nested one is made by copying a template object tree, then filling it in.
      const source: PlanBitmap["source"] = {
        node: node.name,
        drive,
        bitmap: bitmap.name,
        granularity: bitmap.granularity,
        persistent: bitmap.persistent,
        recording: bitmap.recording,
        dirtyBytes: bitmap.count,
      };
      const rowErrors: PlanError[] = [];
      const rowWarnings: PlanWarning[] = [];
      const entry: PlanBitmap = {
        source,
        action: "skip",
        rule: "deny",
        target: null,
        errors: rowErrors,
        warnings: rowWarnings,
      };
      const w: Work = {
        node,
        bitmap,
        dst: undefined,
        explicitPersistent: false,
        explicitEnabled: false,
        merge: undefined,
        entry,
      };
      work.push(w);
      const mapped = mappedBitmaps?.has(bitmap.name) === true || nodeMapped;
      if (chainTop && !mapped) deferred.push(w);
      else decideOne(w, ctx);
    });
  });
  const merges = copy ? decideChains(deferred, work, copy, ctx, decideOne, warnings) : [];
  if (copy) checkDiskTargets(work, copy.disks);

  const streams = runChecks(work, { src, dst, errors, warnings });
  return { work, streams, errors, warnings, disks: copy?.disks ?? [], merges };
}

/** The checks that need both QEMUs' facts, then every row's final action and the plan's payload. */
export function finishDecisions(rows: DecidedRows, input: PlanInput): Decisions {
  const { work, errors, warnings } = rows;
  checkQemu(rows.streams, input, errors, warnings);

  let payloadBytes = 0;
  // The plan's rows, collected in the same pass (map() sizes the list once: at scale it is 100,000s of rows).
  const bitmaps = work.map((w) => {
    if (w.entry.errors.length > 0) {
      w.entry.action = "error";
      const rowErrors = w.entry.errors;
      const first = rowErrors[0];
      if (first) w.entry.rule = first.code;
      for (const e of rowErrors) errors.push(e);
    } else if (w.entry.action === "migrate" && isStream(w)) {
      const node = streamNode(w);
      payloadBytes += bitmapPayloadBytes(node.size, w.merge?.granularity ?? w.bitmap.granularity);
    }
    return w.entry;
  });

  if (!input.options.postcopy && payloadBytes > 0) {
    const p = predictConvergence({
      payloadBytes,
      downtimeLimitMs: input.sourceQemu.downtimeLimitMs,
      maxBandwidth: input.sourceQemu.maxBandwidth,
      guestMemoryBytes: input.sourceQemu.guestMemoryBytes,
    });
    if (p.mayNotConverge) {
      const ram = input.sourceQemu.guestMemoryBytes === 0 ? "the source has no guest RAM, so " : "";
      warnings.push({
        code: "PRECOPY_MAY_NOT_CONVERGE",
        message:
          `the bitmaps add ${payloadBytes} bytes that QEMU sends only at the switchover (it counts them as ` +
          `${qemuPendingBytes(payloadBytes)}); it switches over only when ` +
          `they fit its bandwidth estimate times downtime-limit (${input.sourceQemu.downtimeLimitMs} ms), which needs ` +
          `${p.requiredMbps.toFixed(1)} Mbit/s, and ${ram}QEMU is expected to estimate about ${p.expectedMbps.toFixed(0)} Mbit/s. ` +
          `Allow a longer switchover with --max-downtime ${p.neededDowntimeMs * 2} (bitferry raises downtime-limit only ` +
          `if the migration stalls, and restores it)${postcopyHint(work)}.`,
      });
    }
  }

  return {
    bitmaps,
    errors,
    warnings,
    payloadBytes,
    work,
    streams: rows.streams,
    disks: rows.disks,
    merges: rows.merges,
  };
}

/** With `--copy-storage` a disk's bitmaps must land on the node its data is copied to. */
function checkDiskTargets(work: Work[], disks: DiskPair[]): void {
  const byNode = new Map(disks.map((d) => [d.source.node, d]));
  for (const w of work) {
    const t = w.entry.target;
    const pair = byNode.get(streamNode(w).name);
    if (w.entry.action !== "migrate" || !t || !pair || t.node === pair.target.node) continue;
    addTargetError(
      w.entry,
      "MAPPING_INEXPRESSIBLE",
      `bitmap '${w.bitmap.name}' would go to destination node '${t.node}', but --copy-storage copies its disk ` +
        `'${pair.source.node}' to '${pair.target.node}': a bitmap must land on the copy of its own disk`,
    );
  }
}

function postcopyHint(work: Work[]): string {
  // Whether the migrating bitmaps sit on exactly one node: stops at the second node.
  let node: string | undefined;
  for (const w of work) {
    if (w.entry.action !== "migrate") continue;
    if (node === undefined) node = w.node.name;
    else if (w.node.name !== node) return "";
  }
  return node !== undefined ? ", or send the bitmaps after the switchover with --postcopy" : "";
}

export interface Ctx {
  input: RowsInput;
  src: GraphLookup;
  dst: GraphLookup;
  perBitmap: Map<string, Map<string, ResolvedEntry>>;
  perNode: Map<string, ResolvedEntry>;
  allow: Patterns | undefined;
  deny: Patterns;
  /** The source lookup's namesOf, for the patterns. */
  namesOf: (node: BlockNode) => readonly string[];
  /** Steps 5 and 6 of the last node decided by defaults: its bitmaps come one after another. */
  lastAddress?: DefaultAddress | undefined;
}

/**
 * Where the default address of a node leads on the destination (steps 5 and 6): the same for every bitmap of the
 * node, so worked out once per node.
 */
interface DefaultAddress {
  node: BlockNode;
  rule: "drive-name" | "node-name" | "UNADDRESSABLE";
  /** The destination node found, if any, and the name of its drive. */
  target: BlockNode | undefined;
  targetDrive: string | null;
}

function defaultAddress(ctx: Ctx, node: BlockNode): DefaultAddress {
  const last = ctx.lastAddress;
  if (last?.node === node) return last;
  const drives = ctx.src.drivesOf(node.name);
  let rule: DefaultAddress["rule"] = drives.length > 0 ? "drive-name" : "node-name";
  let target: BlockNode | undefined;
  if (drives.length === 0 && node.generated) rule = "UNADDRESSABLE";
  else {
    // The addresses tried, in order: each drive name, then the node-name unless QEMU generated it.
    for (const d of drives) {
      target = resolveDriveAddress(ctx.dst, d.name);
      if (target) break;
    }
    if (!target && !node.generated) {
      target = resolveNodeAddress(ctx.dst, node.name);
      if (target) rule = "node-name";
    }
  }
  const address: DefaultAddress = {
    node,
    rule,
    target,
    targetDrive: target ? (ctx.dst.drivesOf(target.name)[0]?.name ?? null) : null,
  };
  ctx.lastAddress = address;
  return address;
}

/**
 * The decision procedure for one bitmap. `as` is the node whose names and map entries count: the bitmap's own, or
 * for a bitmap found only in the backing chain of a copied disk (`--copy-storage`), the disk's top node, so that a
 * per-node map entry for the disk covers its chain too.
 */
export function decideOne(w: Work, ctx: Ctx, as: BlockNode = w.node): void {
  const { bitmap, entry } = w;
  const node = as;
  const own = as === w.node;

  // 1. A map entry decides.
  const mapped =
    ctx.perBitmap.size === 0 && ctx.perNode.size === 0
      ? undefined
      : ((own ? ctx.perBitmap.get(node.name)?.get(bitmap.name) : undefined) ?? ctx.perNode.get(node.name));
  if (mapped) {
    const m = mapped.entry;
    if (m.target === null) {
      skip(entry, "map-drop");
      return;
    }
    if (m.source.kind === "node") {
      if (ctx.deny.matches(bitmap.name, node, ctx.namesOf)) {
        skip(entry, "deny");
        return;
      }
      if (ctx.allow && !ctx.allow.matches(bitmap.name, node, ctx.namesOf)) {
        skip(entry, "not-allowed");
        return;
      }
    }
    const resolved = ctx.dst.resolve(m.target.node);
    const target = {
      bitmap: m.target.bitmap ?? bitmap.name,
      persistent: m.target.persistent ?? bitmap.persistent,
      enabled: m.target.enabled ?? bitmap.recording,
    };
    entry.action = "migrate";
    entry.rule = "map";
    w.explicitPersistent = m.target.persistent !== undefined;
    w.explicitEnabled = m.target.enabled !== undefined;
    if (bitmap.readOnly && own) {
      addError(entry, "BITMAP_READ_ONLY", readOnlyMessage(node, bitmap, `map[${m.index}]`));
    }
    if (!resolved) {
      entry.target = { node: m.target.node, drive: null, ...target };
      addError(
        entry,
        "TARGET_NODE_MISSING",
        `map[${m.index}] sends bitmap '${bitmap.name}' to '${m.target.node}', but the destination has no drive or node of that name${candidates(ctx.dst)}`,
        targetOf(entry),
      );
      return;
    }
    const drive = ctx.dst.drivesOf(resolved.node.name)[0]?.name ?? null;
    setTarget(w, resolved.node, drive, target.bitmap, target.persistent, target.enabled);
    return;
  }

  // 2. Read-only nodes (backing images) keep their bitmaps and stay out of QEMU's view.
  if (node.readOnly && own) {
    skip(entry, "read-only-node");
    return;
  }
  decideByDefaults(w, ctx, node);
}

/**
 * Steps 3 to 6 of the decision: strict mode, deny and allow, the default address and its resolution on the
 * destination. `node` is the node whose names count: the bitmap's own, or for a bitmap found only in the backing
 * chain of a copied disk (`--copy-storage`), the disk's top node.
 */
export function decideByDefaults(w: Work, ctx: Ctx, node: BlockNode): void {
  const { bitmap, entry } = w;

  // 3. Strict mode covers every bitmap.
  if (!ctx.input.policy.defaults) {
    addError(
      entry,
      "UNCOVERED",
      `strict mode (defaults: false): no map entry covers bitmap '${bitmap.name}' on ${describeNode(node, ctx.src)}. ` +
        `Add one: {source: {node: ${quote(preferredName(node, ctx.src))}, bitmap: ${quote(bitmap.name)}}, target: <destination node>}, ` +
        `or drop it on purpose with target: null`,
    );
    return;
  }

  // 4. deny, then allow.
  if (ctx.deny.matches(bitmap.name, node, ctx.namesOf)) {
    skip(entry, "deny");
    return;
  }
  if (ctx.allow && !ctx.allow.matches(bitmap.name, node, ctx.namesOf)) {
    skip(entry, "not-allowed");
    return;
  }

  // 5. The default address, 6. resolved on the destination.
  const address = defaultAddress(ctx, node);
  entry.action = "migrate";
  entry.rule = address.rule;
  if (address.rule === "UNADDRESSABLE") {
    addError(entry, "UNADDRESSABLE", unaddressableMessage(node, bitmap, ctx));
    return;
  }
  if (address.target) {
    setTarget(w, address.target, address.targetDrive, bitmap.name, bitmap.persistent, bitmap.recording);
    return;
  }
  const drives = ctx.src.drivesOf(node.name);
  const wanted = [
    ...drives.map((d) => `drive '${d.name}'`),
    ...(node.generated ? [] : [`node '${node.name}'`]),
  ].join(" or ");
  addError(
    entry,
    "TARGET_NODE_MISSING",
    `bitmap '${bitmap.name}' on ${describeNode(node, ctx.src)} has no counterpart: the destination has no ${wanted}${candidates(ctx.dst)}. ` +
      `Start the destination with the same drive id or node-name, or map it: {source: ${quote(preferredName(node, ctx.src))}, target: <destination node>}`,
  );
}

/** `drive:X` on the destination: the drive root of drive X, else a node named X. */
function resolveDriveAddress(dst: GraphLookup, name: string): BlockNode | undefined {
  return dst.driveRootOf(name) ?? dst.node(name);
}

/** `node:N` on the destination: the node named N, else the drive root of drive N. */
function resolveNodeAddress(dst: GraphLookup, name: string): BlockNode | undefined {
  return dst.node(name) ?? dst.driveRootOf(name);
}

/** `drive`: the destination node's drive, if any. */
function setTarget(
  w: Work,
  node: BlockNode,
  drive: string | null,
  bitmap: string,
  persistent: boolean,
  enabled: boolean,
): void {
  w.dst = node;
  w.entry.target = { node: node.name, drive, bitmap, persistent, enabled };
}

function skip(entry: PlanBitmap, rule: Rule): void {
  entry.action = "skip";
  entry.rule = rule;
  entry.target = null;
}

function resolveMap(
  policy: Policy,
  src: GraphLookup,
  errors: PlanError[],
  warnings: PlanWarning[],
): { perBitmap: Map<string, Map<string, ResolvedEntry>>; perNode: Map<string, ResolvedEntry> } {
  const perBitmap = new Map<string, Map<string, ResolvedEntry>>();
  const perNode = new Map<string, ResolvedEntry>();
  for (const entry of policy.map) {
    const where = `map[${entry.index}]`;
    const bitmapName = entry.source.kind === "bitmap" ? entry.source.bitmap : null;
    const resolved = src.resolve(entry.source.node);
    if (!resolved) {
      errors.push({
        code: "MAP_SOURCE_MISSING",
        node: entry.source.node,
        bitmap: bitmapName,
        message: `${where}: the source has no drive or node named '${entry.source.node}'${candidates(src)}`,
      });
      continue;
    }
    const node = resolved.node;
    if (entry.source.node.startsWith("#")) {
      warnings.push({
        code: "GENERATED_NODE_NAME_IN_MAP",
        node: node.name,
        message: `${where} names the source node '${entry.source.node}', a name QEMU generated: it will be different after the next restart of the source. Give the node a node-name.`,
      });
    }
    if (entry.target?.node.startsWith("#")) {
      warnings.push({
        code: "GENERATED_NODE_NAME_IN_MAP",
        node: node.name,
        message: `${where} names the destination node '${entry.target.node}', a name QEMU generated: it will be different after the next restart of the destination. Give the node a node-name.`,
      });
    }
    if (entry.source.kind === "bitmap") {
      const name = entry.source.bitmap;
      if (!node.bitmaps.some((b) => b.name === name)) {
        const have = node.bitmaps.map((b) => `'${b.name}'`).join(", ");
        errors.push({
          code: "MAP_SOURCE_MISSING",
          node: node.name,
          bitmap: name,
          message: `${where}: node '${entry.source.node}' has no bitmap '${name}' (it has ${have || "no named bitmaps"})`,
        });
        continue;
      }
      let byName = perBitmap.get(node.name);
      if (!byName) {
        byName = new Map();
        perBitmap.set(node.name, byName);
      }
      if (!byName.has(name)) byName.set(name, { entry, node });
    } else if (!perNode.has(node.name)) {
      perNode.set(node.name, { entry, node });
    }
  }
  return { perBitmap, perNode };
}

function candidates(lookup: GraphLookup): string {
  return ` (it has: ${lookup.knownNames})`;
}

function readOnlyMessage(node: BlockNode, bitmap: Bitmap, why: string): string {
  return (
    `${why} sends bitmap '${bitmap.name}', but it lives on read-only node '${node.name}' (a backing image?) where QEMU ` +
    `loads persistent bitmaps read-only and refuses to migrate them. Drop it (target: null); it stays stored in that image`
  );
}

function unaddressableMessage(node: BlockNode, bitmap: Bitmap, ctx: Ctx): string {
  const parents = ctx.src.parentsOf(node.name);
  const under = parents
    .map((p) => {
      const d = ctx.src.drivesOf(p.parent.name)[0];
      return d ? `the ${p.role} node of drive '${d.name}'` : `the ${p.role} node of '${p.parent.name}'`;
    })
    .join(", ");
  const unique = ctx.src.bitmapNameCount(bitmap.name) === 1;
  const denyPattern = unique ? bitmap.name : `${node.name}/${bitmap.name}`;
  return (
    `bitmap '${bitmap.name}' is on node '${node.name}'${under ? ` (${under})` : ""}, whose name QEMU generated and ` +
    `changes at every start, and which is not the root of a named drive: no address can find it again. Fix: give the ` +
    `node a node-name, or map it explicitly: {source: {node: ${quote(node.name)}, bitmap: ${quote(bitmap.name)}}, target: ` +
    `<destination node>}, or skip it: deny: [${quote(denyPattern)}]`
  );
}
