/**
 * Sets and maps keyed by a (node, bitmap) pair of names, held as a map per node: planning looks pairs up for every
 * bitmap, and joining the two names into one key string would build and hash a new string at each lookup.
 */
export class PairMap<V> {
  private readonly byNode = new Map<string, Map<string, V>>();
  /** Every value, in the order its pair was first set (as one flat map would iterate). */
  private readonly order: V[] = [];

  get(node: string, bitmap: string): V | undefined {
    return this.byNode.get(node)?.get(bitmap);
  }

  /** Sets the value of a pair not set before. */
  set(node: string, bitmap: string, value: V): void {
    let inner = this.byNode.get(node);
    if (!inner) {
      inner = new Map();
      this.byNode.set(node, inner);
    }
    inner.set(bitmap, value);
    this.order.push(value);
  }

  values(): readonly V[] {
    return this.order;
  }
}

export class PairSet {
  private readonly byNode = new Map<string, Set<string>>();

  add(node: string, bitmap: string): void {
    const inner = this.byNode.get(node);
    if (inner) inner.add(bitmap);
    else this.byNode.set(node, new Set([bitmap]));
  }

  has(node: string, bitmap: string): boolean {
    return this.byNode.get(node)?.has(bitmap) === true;
  }
}
