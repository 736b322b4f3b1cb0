import type { BlockReplies } from "../qemu/snapshot.js";
import type { BlockDeviceInfo, BlockDirtyInfo, Qcow2StoredBitmap } from "../qemu/replies.js";
import { filteredChildRole, isFilterDriver } from "./filters.js";
import { GraphLookup } from "./lookup.js";
import type { Bitmap, BlockGraph, BlockNode, Child, Drive, StoredBitmap } from "./model.js";

/** Builds the graph model from one QEMU's replies. Pure. */
export function buildGraph(snap: BlockReplies): BlockGraph {
  return buildIndexedGraph(snap).graph;
}

/**
 * The graph and the lookup planning makes over it, which shares the index of nodes by name that building the
 * graph needs anyway (at scale both sides hold tens of thousands of nodes).
 */
export function buildIndexedGraph(snap: BlockReplies): { graph: BlockGraph; lookup: GraphLookup } {
  const byName = new Map<string, BlockNode>();
  // Each node gets its children from the edges below, pushed straight into its list: no index of lists by name.
  // A reply that repeats a node-name gives every node of that name one list, as edges name their nodes by name.
  const nodes = snap.namedNodes.map((info) => {
    const twin = byName.get(info["node-name"]);
    const node = toNode(info, twin === undefined ? [] : twin.children);
    byName.set(node.name, node);
    return node;
  });
  const roots = readEdges(snap, byName, byName.size === nodes.length);
  // forEach rather than for...of over nodes, edges and rows: code that runs once (a CLI plans before V8 optimises
  // anything) allocates an iterator result for every element of a for...of.
  nodes.forEach(setFiltered);
  const drives: Drive[] = [];
  snap.blockBackends.forEach((bb) => {
    if (bb.device === "") return;
    const root = roots.get(bb.device) ?? bb.inserted?.["node-name"];
    if (root === undefined) return; // a drive without medium has no node at all
    drives.push({ name: bb.device, root, driveRoot: walkToDriveRoot(root, byName) });
  });
  const graph: BlockGraph = { nodes, drives, runState: snap.runState };
  return { graph, lookup: new GraphLookup(graph, byName) };
}

/** A filter's `filtered`: the child it passes I/O to, once the edges are in. */
function setFiltered(node: BlockNode): void {
  if (!node.filter) return;
  const role = filteredChildRole(node.driver);
  // A loop, not find() with a closure over `role`: that would be made for every filter node of the graph.
  for (const c of node.children) {
    if (c.role === role) {
      node.filtered = c.node;
      return;
    }
  }
}

// Module-level callbacks, one per read-only state: a graph of 10,000s of nodes makes no closure per node, and
// map() sizes each list exactly.
const isNamed = (b: BlockDirtyInfo): boolean => b.name !== undefined;
const toBitmap = (b: BlockDirtyInfo, readOnly: boolean): Bitmap => ({
  // Anonymous bitmaps are counted, not listed: only named ones get here.
  name: b.name ?? "",
  granularity: b.granularity,
  count: b.count,
  recording: b.recording,
  busy: b.busy,
  persistent: b.persistent,
  inconsistent: b.inconsistent ?? false,
  readOnly: readOnly && b.persistent,
});
const toWritableBitmap = (b: BlockDirtyInfo): Bitmap => toBitmap(b, false);
const toReadOnlyBitmap = (b: BlockDirtyInfo): Bitmap => toBitmap(b, true);
const toStored = (s: Qcow2StoredBitmap): StoredBitmap => ({
  name: s.name,
  granularity: s.granularity,
  inUse: s.flags.includes("in-use"),
  auto: s.flags.includes("auto"),
});

function toNode(info: BlockDeviceInfo, children: Child[]): BlockNode {
  const name = info["node-name"];
  const ro = info.ro;
  const listed = info["dirty-bitmaps"];
  const bitmaps =
    listed === undefined
      ? []
      : (listed.every(isNamed) ? listed : listed.filter(isNamed)).map(
          ro ? toReadOnlyBitmap : toWritableBitmap,
        );
  const anonymous = listed === undefined ? 0 : listed.length - bitmaps.length;
  const spec = info.image["format-specific"];
  const storedInfo = spec?.type === "qcow2" ? spec.data?.bitmaps : undefined;
  const stored: StoredBitmap[] = storedInfo === undefined ? [] : storedInfo.map(toStored);
  return {
    name,
    generated: name.startsWith("#"),
    driver: info.drv,
    readOnly: ro,
    size: info.image["virtual-size"],
    filename: info.image.filename ?? info.file,
    filter: isFilterDriver(info.drv),
    // Set once the edges are read (setFiltered).
    filtered: undefined,
    canStoreBitmaps: info.drv === "qcow2" && spec?.type === "qcow2" && spec.data?.compat === "1.1",
    children,
    bitmaps,
    anonymousBitmaps: anonymous,
    storedBitmaps: stored,
  };
}

type GraphEntry = NonNullable<BlockReplies["blockGraph"]>["nodes"][number];

/**
 * From `x-debug-query-block-graph` (empty when QEMU lacks it), in one pass over its edges: each edge between two
 * block-driver nodes is added to its parent's children (`byName`: the nodes by name; `uniqueNames`: no two share
 * one), and the node under each named BlockBackend is returned, filters included (query-block hides implicit ones).
 */
function readEdges(
  snap: BlockReplies,
  byName: Map<string, BlockNode>,
  uniqueNames: boolean,
): Map<string, string> {
  const roots = new Map<string, string>();
  const g = snap.blockGraph;
  if (!g) return roots;
  const entryOf = entriesById(g.nodes);
  // The block-driver node of an id is the last entry of that id unless a reply repeats an id with another type:
  // only then is it indexed on its own (the parent and child of every edge are looked up, 100,000s at scale).
  const drivers = entryOf.distinct === g.nodes.length ? undefined : driversById(g.nodes);
  const driverName = (id: number): string | undefined => {
    if (drivers) return drivers.get(id);
    const n = entryOf.get(id);
    return n?.type === "block-driver" ? n.name : undefined;
  };
  g.edges.forEach((e) => {
    const parent = driverName(e.parent);
    const child = driverName(e.child);
    const node = parent === undefined || child === undefined ? undefined : byName.get(parent);
    if (node !== undefined && child !== undefined) {
      const edge: Child = { role: e.name, node: child };
      // Most nodes have one child: a list of one, made at its size (a push would make room for 17). Nodes that
      // share a name share their list, which is only ever pushed to.
      if (uniqueNames && node.children.length === 0) node.children = [edge];
      else node.children.push(edge);
    }
    if (e.name !== "root") return;
    const backend = entryOf.get(e.parent);
    const root = entryOf.get(e.child);
    if (backend?.type === "block-backend" && backend.name !== "" && root?.type === "block-driver") {
      roots.set(backend.name, root.name);
    }
  });
  return roots;
}

/** The graph's entries by id (the last of an id wins), and how many ids there are. */
interface EntriesById {
  get(id: number): GraphEntry | undefined;
  distinct: number;
}

/**
 * QEMU numbers the entries of its graph reply 1, 2, 3, ...: those are indexed by a table of positions, which holds
 * no object for the GC to trace or copy. Any other numbering (a reply need not be QEMU's) falls back to a map.
 */
function entriesById(entries: readonly GraphEntry[]): EntriesById {
  let max = -1;
  const numbered = entries.every((n) => {
    if (n.id > max) max = n.id;
    return Number.isInteger(n.id) && n.id >= 0;
  });
  if (numbered && max < 4 * entries.length + 64) {
    // Position + 1 of the last entry of each id; 0 for none.
    const at = new Int32Array(max + 1);
    let distinct = 0;
    entries.forEach((n, i) => {
      if (at[n.id] === 0) distinct++;
      at[n.id] = i + 1;
    });
    // A typed array answers undefined for any id it has no slot for (negative, fractional, beyond the last).
    const get = (id: number): GraphEntry | undefined => {
      const k = at[id] ?? 0;
      return k === 0 ? undefined : entries[k - 1];
    };
    return { get, distinct };
  }
  const byId = new Map<number, GraphEntry>();
  entries.forEach((n) => byId.set(n.id, n));
  return { get: (id) => byId.get(id), distinct: byId.size };
}

function driversById(nodes: readonly GraphEntry[]): Map<number, string> {
  const drivers = new Map<number, string>();
  nodes.forEach((n) => {
    if (n.type === "block-driver") drivers.set(n.id, n.name);
  });
  return drivers;
}

/**
 * QEMU 7.2's rule for which node a drive name stands for: walk down through filters that carry no named
 * bitmaps. A filter with named bitmaps ends the walk without a drive root.
 */
function walkToDriveRoot(start: string, byName: Map<string, BlockNode>): string | undefined {
  let cur = byName.get(start);
  // Made only for a walk through a filter: most drive roots are the drive's own node.
  let seen: Set<string> | undefined;
  while (cur && seen?.has(cur.name) !== true) {
    if (!cur.filter) return cur.name;
    if (cur.bitmaps.length > 0 || cur.filtered === undefined) return undefined;
    (seen ??= new Set()).add(cur.name);
    cur = byName.get(cur.filtered);
  }
  return undefined;
}
