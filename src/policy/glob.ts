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
  if (!pattern.bitmap.test(bitmap)) return false;
  const nodeRe = pattern.node;
  if (nodeRe === undefined) return true;
  for (const n of nodeNames) {
    if (nodeRe.test(n)) return true;
  }
  return false;
}

export function firstMatch(
  patterns: readonly CompiledPattern[],
  nodeNames: readonly string[],
  bitmap: string,
): CompiledPattern | undefined {
  for (const p of patterns) {
    if (matchesPattern(p, nodeNames, bitmap)) return p;
  }
  return undefined;
}
