import type { BlockGraph, BlockNode, Drive } from "./model.js";

export type ResolvedVia = "drive" | "node";

export interface Resolved {
  node: BlockNode;
  via: ResolvedVia;
}

/** Most nodes are no drive's root: one list for all of them (asked for every bitmap). */
const NO_DRIVES: readonly Drive[] = Object.freeze([]);

/** Indexes over one graph for the lookups planning does thousands of times. */
export class GraphLookup {
  private readonly nodes: Map<string, BlockNode>;
  private readonly drives = new Map<string, Drive>();
  private readonly drivesByRoot = new Map<string, Drive[]>();
  private readonly names = new Map<BlockNode, readonly string[]>();
  private parents: Map<string, { parent: BlockNode; role: string }[]> | undefined;
  private bitmapNames: Map<string, number> | undefined;
  private known: string | undefined;
  private blocking: boolean | undefined;

  /** `nodes`: the graph's nodes by name, when the caller made that index already (the last of a name wins). */
  constructor(
    readonly graph: BlockGraph,
    nodes?: Map<string, BlockNode>,
  ) {
    if (nodes) this.nodes = nodes;
    else {
      this.nodes = new Map();
      graph.nodes.forEach((n) => this.nodes.set(n.name, n));
    }
    graph.drives.forEach((d) => {
      this.drives.set(d.name, d);
      if (d.driveRoot === undefined) return;
      // Almost every root has one drive: a list of one, made at its size (a push would make room for 17).
      const list = this.drivesByRoot.get(d.driveRoot);
      if (list) list.push(d);
      else this.drivesByRoot.set(d.driveRoot, [d]);
    });
  }

  /** No two nodes of the graph have one name (QEMU's are unique; a reply could still repeat one). */
  get uniqueNodeNames(): boolean {
    return this.nodes.size === this.graph.nodes.length;
  }

  node(name: string): BlockNode | undefined {
    return this.nodes.get(name);
  }

  drive(name: string): Drive | undefined {
    return this.drives.get(name);
  }

  /** Drives whose drive root is `node` (usually zero or one). */
  drivesOf(node: string): readonly Drive[] {
    return this.drivesByRoot.get(node) ?? NO_DRIVES;
  }

  /** The node a drive name stands for (its drive root). */
  driveRootOf(drive: string): BlockNode | undefined {
    const d = this.drives.get(drive);
    return d?.driveRoot === undefined ? undefined : this.nodes.get(d.driveRoot);
  }

  /**
   * Resolves a name as users write it: a drive name (its drive root) or a node-name. QEMU keeps drive names and
   * node-names in one namespace, so at most one of the two can match.
   */
  resolve(name: string): Resolved | undefined {
    const viaDrive = this.driveRootOf(name);
    if (viaDrive) return { node: viaDrive, via: "drive" };
    const node = this.nodes.get(name);
    return node ? { node, via: "node" } : undefined;
  }

  /** Every name a node is known by: its node-name and the names of the drives it is the root of. */
  namesOf(node: BlockNode): readonly string[] {
    // Asked once per bitmap: kept per node.
    let names = this.names.get(node);
    if (names === undefined) {
      const drives = this.drivesOf(node.name);
      names = drives.length === 0 ? [node.name] : [node.name, ...drives.map((d) => d.name)];
      this.names.set(node, names);
    }
    return names;
  }

  /** The image this node reads through for unallocated data, if any. */
  backingOf(node: BlockNode): BlockNode | undefined {
    const edge = node.children.find((c) => c.role === "backing");
    return edge ? this.nodes.get(edge.node) : undefined;
  }

  /** Nodes that have `node` as a child, with the edge's role. */
  parentsOf(node: string): { parent: BlockNode; role: string }[] {
    if (!this.parents) {
      this.parents = new Map();
      for (const n of this.graph.nodes) {
        for (const c of n.children) {
          const list = this.parents.get(c.node) ?? [];
          list.push({ parent: n, role: c.role });
          this.parents.set(c.node, list);
        }
      }
    }
    return this.parents.get(node) ?? [];
  }

  /** Whether a named bitmap is busy, inconsistent or read-only: QEMU refuses to migrate any bitmap of its node. */
  get hasBlockingBitmap(): boolean {
    this.blocking ??= this.graph.nodes.some((n) =>
      n.bitmaps.some((b) => b.busy || b.inconsistent || b.readOnly),
    );
    return this.blocking;
  }

  /** How many nodes carry a named bitmap called `name`. */
  bitmapNameCount(name: string): number {
    if (!this.bitmapNames) {
      this.bitmapNames = new Map();
      for (const n of this.graph.nodes)
        for (const b of n.bitmaps) this.bitmapNames.set(b.name, (this.bitmapNames.get(b.name) ?? 0) + 1);
    }
    return this.bitmapNames.get(name) ?? 0;
  }

  /** A short list of the names a user can write for this graph's nodes, for error messages. */
  get knownNames(): string {
    if (this.known === undefined) {
      const names = [
        ...this.graph.drives.map((d) => d.name),
        ...this.graph.nodes.filter((n) => !n.generated).map((n) => n.name),
      ];
      this.known =
        names.length === 0
          ? "no named drives or nodes"
          : `${names.slice(0, 8).join(", ")}${names.length > 8 ? `, and ${names.length - 8} more` : ""}`;
    }
    return this.known;
  }
}
