/**
 * Sets and maps keyed by a (node, bitmap) pair of names, held per node: planning looks pairs up for every bitmap,
 * and joining the two names into one key string would build and hash a new string at each lookup. A node's own
 * entries are a short list scanned in place (nodes carry a few bitmaps), indexed only once they are many.
 */
const SCAN_MAX = 16;

/** Names in insertion order, with their positions: scanned while few, indexed once many. */
class Names {
  readonly list: string[] = [];
  private index: Map<string, number> | undefined;

  find(name: string): number {
    if (this.index) return this.index.get(name) ?? -1;
    return this.list.indexOf(name);
  }

  /** Adds a name not there yet; returns its position. */
  add(name: string): number {
    const i = this.list.length;
    this.list.push(name);
    if (this.index) this.index.set(name, i);
    else if (i + 1 > SCAN_MAX) this.index = new Map(this.list.map((n, k) => [n, k]));
    return i;
  }
}

/** Per node-name, one entry; remembers the node asked last, as pairs are mostly asked node by node. */
class ByNode<E> {
  private readonly map = new Map<string, E>();
  private lastNode: string | undefined;
  private lastEntry: E | undefined;

  get(node: string): E | undefined {
    if (node === this.lastNode) return this.lastEntry;
    const e = this.map.get(node);
    this.lastNode = node;
    this.lastEntry = e;
    return e;
  }

  /** The node's entry, made by `make` if it has none yet. */
  entry(node: string, make: () => E): E {
    let e = this.get(node);
    if (e === undefined) {
      e = make();
      this.map.set(node, e);
      this.lastEntry = e;
    }
    return e;
  }
}

const newSlots = (): { names: Names; at: number[] } => ({ names: new Names(), at: [] });
const newNames = (): Names => new Names();

export class PairMap<V> {
  /** Per node: its bitmap names, and where each pair's value sits in `order`. */
  private readonly byNode = new ByNode<{ names: Names; at: number[] }>();
  /** Every value, in the order its pair was first set (as one flat map would iterate). */
  private readonly order: V[] = [];

  private slot(node: string, bitmap: string): number {
    const e = this.byNode.get(node);
    if (!e) return -1;
    const i = e.names.find(bitmap);
    return i === -1 ? -1 : (e.at[i] ?? -1);
  }

  get(node: string, bitmap: string): V | undefined {
    const k = this.slot(node, bitmap);
    return k === -1 ? undefined : this.order[k];
  }

  /** Sets the value of a pair not set before. */
  set(node: string, bitmap: string, value: V): void {
    const e = this.byNode.entry(node, newSlots);
    e.at[e.names.add(bitmap)] = this.order.length;
    this.order.push(value);
  }

  /** Replaces the value of a pair already set, keeping its place in the order. */
  replace(node: string, bitmap: string, value: V): void {
    const k = this.slot(node, bitmap);
    if (k === -1) throw new Error(`PairMap.replace: ${node}/${bitmap} was never set`);
    this.order[k] = value;
  }

  values(): readonly V[] {
    return this.order;
  }
}

export class PairSet {
  private readonly byNode = new ByNode<Names>();

  add(node: string, bitmap: string): void {
    const e = this.byNode.entry(node, newNames);
    if (e.find(bitmap) === -1) e.add(bitmap);
  }

  has(node: string, bitmap: string): boolean {
    const e = this.byNode.get(node);
    return e !== undefined && e.find(bitmap) !== -1;
  }
}

/** A set of names in insertion order: a short list scanned in place, indexed once it is long. */
export class NameSet {
  private readonly names = new Names();

  add(name: string): void {
    if (this.names.find(name) === -1) this.names.add(name);
  }

  get size(): number {
    return this.names.list.length;
  }

  list(): readonly string[] {
    return this.names.list;
  }
}

/**
 * The distinct names seen with each key, in insertion order (the destination nodes of each source node): almost
 * every key has one, held as the name itself until a second one arrives.
 */
export class Fans {
  private readonly byKey = new Map<string, string | NameSet>();
  /** Whether some key has more than one name. */
  spread = false;

  add(key: string, name: string): void {
    const cur = this.byKey.get(key);
    if (cur === undefined) this.byKey.set(key, name);
    else if (typeof cur !== "string") cur.add(name);
    else if (cur !== name) {
      this.spread = true;
      const set = new NameSet();
      set.add(cur);
      set.add(name);
      this.byKey.set(key, set);
    }
  }

  count(key: string): number {
    const cur = this.byKey.get(key);
    return cur === undefined ? 0 : typeof cur === "string" ? 1 : cur.size;
  }

  list(key: string): readonly string[] {
    const cur = this.byKey.get(key);
    return cur === undefined ? [] : typeof cur === "string" ? [cur] : cur.list();
  }
}
