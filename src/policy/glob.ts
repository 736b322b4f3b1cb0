/**
 * allow/deny patterns: a glob on the bitmap name (`backup-*`), or `NODE/BITMAP` where NODE is a node-name or a
 * drive name (globs allowed in both parts). `*` matches any run of characters, `?` one character. Node and drive
 * names cannot contain `/`, so the first `/` separates the parts.
 */
export interface CompiledPattern {
  text: string;
  node: RegExp | undefined;
  bitmap: RegExp;
}

function globToRegExp(glob: string): RegExp {
  let re = "^";
  for (const ch of glob) {
    if (ch === "*") re += "[\\s\\S]*";
    else if (ch === "?") re += "[\\s\\S]";
    else re += ch.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`${re}$`, "u");
}

export function compilePattern(text: string): CompiledPattern {
  const slash = text.indexOf("/");
  if (slash === -1) return { text, node: undefined, bitmap: globToRegExp(text) };
  return { text, node: globToRegExp(text.slice(0, slash)), bitmap: globToRegExp(text.slice(slash + 1)) };
}

/** True when `pattern` matches bitmap `bitmap` on a node known by any of `nodeNames` (node-name, drive names). */
export function matchesPattern(
  pattern: CompiledPattern,
  nodeNames: readonly string[],
  bitmap: string,
): boolean {
  return pattern.bitmap.test(bitmap) && matchesNode(pattern, nodeNames);
}

/** The node part of a pattern (none matches every node) against the names a node is known by. */
function matchesNode(pattern: CompiledPattern, nodeNames: readonly string[]): boolean {
  const nodeRe = pattern.node;
  if (nodeRe === undefined) return true;
  // Unoptimised for...of allocates an iterator result for each name.
  // eslint-disable-next-line @typescript-eslint/prefer-for-of -- see above
  for (let i = 0; i < nodeNames.length; i++) {
    const n = nodeNames[i];
    if (n !== undefined && nodeRe.test(n)) return true;
  }
  return false;
}

/**
 * What a bitmap name alone decides: whether a name-only pattern matches it, and the node patterns whose bitmap
 * part does.
 */
interface NameVerdict {
  matched: boolean;
  nodePatterns: readonly CompiledPattern[];
}

/**
 * A list of patterns asked, for every bitmap of a plan, whether any matches. A plan asks the same few bitmap names
 * on every node: what a name alone decides is worked out once per name.
 */
export class Patterns {
  private readonly byName: readonly CompiledPattern[];
  private readonly byNode: readonly CompiledPattern[];
  /** Per bitmap name: whether a name-only pattern matches it, and the node patterns whose bitmap part does. */
  private readonly seen = new Map<string, NameVerdict>();

  constructor(readonly list: readonly CompiledPattern[]) {
    this.byName = list.filter((p) => p.node === undefined);
    this.byNode = list.filter((p) => p.node !== undefined);
  }

  /**
   * What the name alone decides, worked out at its first sight. A method of its own: closures over `bitmap` in
   * matches() would make unoptimised code allocate their context at every call, sighted or not.
   */
  private see(bitmap: string): NameVerdict {
    const s: NameVerdict = {
      matched: this.byName.some((p) => p.bitmap.test(bitmap)),
      nodePatterns: this.byNode.filter((p) => p.bitmap.test(bitmap)),
    };
    this.seen.set(bitmap, s);
    return s;
  }

  /** Whether any pattern matches bitmap `bitmap` on `node`, known by any of `namesOf(node)`. */
  matches<N>(bitmap: string, node: N, namesOf: (node: N) => readonly string[]): boolean {
    if (this.list.length === 0) return false;
    const s = this.seen.get(bitmap) ?? this.see(bitmap);
    if (s.matched) return true;
    if (s.nodePatterns.length === 0) return false;
    // An indexed loop, not some() with a closure over the names (nor for...of, whose iterator results unoptimised
    // code allocates): this runs for every bitmap a node pattern may match.
    const names = namesOf(node);
    const patterns = s.nodePatterns;
    // eslint-disable-next-line @typescript-eslint/prefer-for-of -- see above
    for (let i = 0; i < patterns.length; i++) {
      const p = patterns[i];
      if (p && matchesNode(p, names)) return true;
    }
    return false;
  }
}
