/**
 * Sets and maps keyed by a (node, bitmap) pair of names, held per node: planning looks pairs up for every bitmap,
 * and joining the two names into one key string would build and hash a new string at each lookup. A node's own
 * entries are a short list scanned in place (nodes carry a few bitmaps), indexed only once they are many.
 */
const SCAN_MAX = 16;

class Entries<V> {
  readonly names: string[] = [];
  readonly values: V[] = [];
  private index: Map<string, number> | undefined;

  find(name: string): number {
    if (this.index) return this.index.get(name) ?? -1;
    const names = this.names;
    for (let i = 0; i < names.length; i++) if (names[i] === name) return i;
    return -1;
  }

  add(name: string, value: V): void {
    const i = this.names.length;
    this.names.push(name);
    this.values.push(value);
    if (this.index) this.index.set(name, i);
    else if (i + 1 > SCAN_MAX) this.index = new Map(this.names.map((n, k) => [n, k]));
  }
}

export class PairMap<V> {
  private readonly byNode = new Map<string, Entries<V>>();
  /** Every value, in the order its pair was first set (as one flat map would iterate). */
  private readonly order: V[] = [];

  get(node: string, bitmap: string): V | undefined {
    const e = this.byNode.get(node);
    if (!e) return undefined;
    const i = e.find(bitmap);
    return i === -1 ? undefined : e.values[i];
  }

  /** Sets the value of a pair not set before. */
  set(node: string, bitmap: string, value: V): void {
    let e = this.byNode.get(node);
    if (!e) {
      e = new Entries();
      this.byNode.set(node, e);
    }
    e.add(bitmap, value);
    this.order.push(value);
  }

  values(): readonly V[] {
    return this.order;
  }
}

export class PairSet {
  private readonly byNode = new Map<string, Entries<true>>();

  add(node: string, bitmap: string): void {
    let e = this.byNode.get(node);
    if (!e) {
      e = new Entries();
      this.byNode.set(node, e);
    }
    if (e.find(bitmap) === -1) e.add(bitmap, true);
  }

  has(node: string, bitmap: string): boolean {
    const e = this.byNode.get(node);
    return e !== undefined && e.find(bitmap) !== -1;
  }
}

/** A set of names in insertion order: a short list scanned in place, indexed once it is long. */
export class NameSet {
  private readonly entries = new Entries<true>();

  add(name: string): void {
    if (this.entries.find(name) === -1) this.entries.add(name, true);
  }

  get size(): number {
    return this.entries.names.length;
  }

  list(): readonly string[] {
    return this.entries.names;
  }
}
