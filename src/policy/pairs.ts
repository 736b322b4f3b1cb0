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

export class PairMap<V> {
  private readonly byNode = new Map<string, { names: Names; values: V[] }>();
  /** Every value, in the order its pair was first set (as one flat map would iterate). */
  private readonly order: V[] = [];

  get(node: string, bitmap: string): V | undefined {
    const e = this.byNode.get(node);
    if (!e) return undefined;
    const i = e.names.find(bitmap);
    return i === -1 ? undefined : e.values[i];
  }

  /** Sets the value of a pair not set before. */
  set(node: string, bitmap: string, value: V): void {
    let e = this.byNode.get(node);
    if (!e) {
      e = { names: new Names(), values: [] };
      this.byNode.set(node, e);
    }
    e.values[e.names.add(bitmap)] = value;
    this.order.push(value);
  }

  values(): readonly V[] {
    return this.order;
  }
}

export class PairSet {
  private readonly byNode = new Map<string, Names>();

  add(node: string, bitmap: string): void {
    let e = this.byNode.get(node);
    if (!e) {
      e = new Names();
      this.byNode.set(node, e);
    }
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

  add(key: string, name: string): void {
    const cur = this.byKey.get(key);
    if (cur === undefined) this.byKey.set(key, name);
    else if (typeof cur !== "string") cur.add(name);
    else if (cur !== name) {
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
