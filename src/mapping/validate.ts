import type { BitmapAliasMapping } from "../qemu/replies.js";

/** Whether `s` is longer than `max` bytes in UTF-8, counted only when its length allows it (3 bytes a unit at most). */
function longerThan(s: string, max: number): boolean {
  return s.length * 3 > max && Buffer.byteLength(s) > max;
}

type Entry = BitmapAliasMapping[number]["bitmaps"][number];

/**
 * The first bitmap of `bitmaps` whose `key` repeats an earlier one's, or -1: a scan for the few bitmaps a node
 * usually has, a set for many. Plain loops: a plan validates thousands of these lists once, in cold code.
 */
function repeatAt(bitmaps: readonly Entry[], key: "name" | "alias"): number {
  const n = bitmaps.length;
  if (n <= 16) {
    for (let i = 1; i < n; i++) {
      const value = bitmaps[i]?.[key];
      for (let j = 0; j < i; j++) if (bitmaps[j]?.[key] === value) return i;
    }
    return -1;
  }
  const seen = new Set<string | undefined>();
  for (let i = 0; i < n; i++) {
    const value = bitmaps[i]?.[key];
    if (seen.has(value)) return i;
    seen.add(value);
  }
  return -1;
}

const WELL_FORMED = /^[A-Za-z][A-Za-z0-9._-]*$/;

/**
 * Every check of validateMapping at once, in one pass: true when none fails. The mapping bitferry compiles passes,
 * and then the ordered passes below, which find the first problem in QEMU's order, never run. A node of more than
 * 16 bitmaps is left to them.
 */
function plainlyValid(mapping: BitmapAliasMapping, strict: boolean): boolean {
  const names = new Set<string>();
  const aliases = new Set<string>();
  for (const n of mapping) {
    const alias = n.alias;
    const name = n["node-name"];
    if (!WELL_FORMED.test(alias) || longerThan(alias, 255) || longerThan(name, 31)) return false;
    const before = names.size;
    names.add(name);
    aliases.add(alias);
    if (names.size === before || aliases.size === before) return false;
    const bitmaps = n.bitmaps;
    if (bitmaps.length > 16) return false;
    for (let i = 0; i < bitmaps.length; i++) {
      const b = bitmaps[i];
      if (b === undefined || longerThan(b.alias, 255) || longerThan(b.name, 1023)) return false;
      if (strict && b.alias === "") return false;
      for (let j = 0; j < i; j++) {
        const other = bitmaps[j];
        if (other === undefined || other.name === b.name || other.alias === b.alias) return false;
      }
    }
  }
  return true;
}

/**
 * QEMU's own validation of `block-bitmap-mapping` (migration/block-dirty-bitmap.c, 7.2 to 10.2), in QEMU's order
 * and with QEMU's texts, so bitferry never hands QEMU a mapping it rejects. Pure. Returns the error QEMU would
 * report (after its "Invalid mapping given for block-bitmap-mapping: " prefix), or undefined.
 *
 * QEMU accepts some mappings that fail later (an empty bitmap alias kills the destination mid-migration); those
 * are rejected here too, under `strict`.
 */
export function validateMapping(mapping: BitmapAliasMapping, strict = true): string | undefined {
  if (plainlyValid(mapping, strict)) return undefined;
  // Pass 1: name -> alias (duplicate node-names and bitmap names).
  const nodeNames = new Set<string>();
  for (const n of mapping) {
    if (!WELL_FORMED.test(n.alias)) return `The node alias '${n.alias}' is not well-formed`;
    if (longerThan(n.alias, 255)) return `The node alias '${n.alias}' is longer than 255 bytes`;
    if (longerThan(n["node-name"], 31)) return `The node name '${n["node-name"]}' is longer than 31 bytes`;
    if (nodeNames.has(n["node-name"])) return `The node name '${n["node-name"]}' is mapped twice`;
    nodeNames.add(n["node-name"]);
    const bitmaps = n.bitmaps;
    const twice = repeatAt(bitmaps, "name");
    // The first bitmap with a problem, then its first problem.
    let bad: Entry | undefined;
    let at = 0;
    for (; at < bitmaps.length; at++) {
      const b = bitmaps[at];
      if (b === undefined) break;
      if (
        longerThan(b.alias, 255) ||
        longerThan(b.name, 1023) ||
        at === twice ||
        (strict && b.alias === "")
      ) {
        bad = b;
        break;
      }
    }
    if (bad) {
      if (longerThan(bad.alias, 255)) return `The bitmap alias '${bad.alias}' is longer than 255 bytes`;
      if (longerThan(bad.name, 1023)) return `The bitmap name '${bad.name}' is longer than 1023 bytes`;
      if (at === twice) return `The bitmap '${n["node-name"]}'/'${bad.name}' is mapped twice`;
      return `The bitmap alias for '${n["node-name"]}'/'${bad.name}' is empty (QEMU accepts it, then fails the migration)`;
    }
  }
  // Pass 2: alias -> name (duplicate aliases).
  const nodeAliases = new Set<string>();
  for (const n of mapping) {
    if (nodeAliases.has(n.alias)) return `The node alias '${n.alias}' is used twice`;
    nodeAliases.add(n.alias);
    const twice = repeatAt(n.bitmaps, "alias");
    if (twice !== -1)
      return `The bitmap alias '${n.alias}'/'${(n.bitmaps[twice] as { alias: string }).alias}' is used twice`;
  }
  return undefined;
}
