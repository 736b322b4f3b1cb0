import type { BitmapAliasMapping } from "../qemu/replies.js";

/** Whether `s` is longer than `max` bytes in UTF-8, counted only when its length allows it (3 bytes a unit at most). */
function longerThan(s: string, max: number): boolean {
  return s.length * 3 > max && Buffer.byteLength(s) > max;
}

/**
 * Whether an earlier bitmap of the list has the same `key` as the i-th: a scan for the few bitmaps a node usually
 * has, a set (built on the first call for the list) for many.
 */
class Seen {
  private set: Set<string> | undefined;
  constructor(
    private readonly list: readonly { name: string; alias: string }[],
    private readonly key: "name" | "alias",
  ) {}

  before(i: number): boolean {
    const list = this.list;
    const k = this.key;
    const value = (list[i] as { name: string; alias: string })[k];
    if (list.length <= 16) {
      for (let j = 0; j < i; j++) if ((list[j] as { name: string; alias: string })[k] === value) return true;
      return false;
    }
    const set = (this.set ??= new Set());
    const had = set.has(value);
    set.add(value);
    return had;
  }
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
  const wellFormed = /^[A-Za-z][A-Za-z0-9._-]*$/;
  // Pass 1: name -> alias (duplicate node-names and bitmap names).
  const nodeNames = new Set<string>();
  for (const n of mapping) {
    if (!wellFormed.test(n.alias)) return `The node alias '${n.alias}' is not well-formed`;
    if (longerThan(n.alias, 255)) return `The node alias '${n.alias}' is longer than 255 bytes`;
    if (longerThan(n["node-name"], 31)) return `The node name '${n["node-name"]}' is longer than 31 bytes`;
    if (nodeNames.has(n["node-name"])) return `The node name '${n["node-name"]}' is mapped twice`;
    nodeNames.add(n["node-name"]);
    const names = new Seen(n.bitmaps, "name");
    let i = 0;
    for (const b of n.bitmaps) {
      if (longerThan(b.alias, 255)) return `The bitmap alias '${b.alias}' is longer than 255 bytes`;
      if (longerThan(b.name, 1023)) return `The bitmap name '${b.name}' is longer than 1023 bytes`;
      if (names.before(i++)) return `The bitmap '${n["node-name"]}'/'${b.name}' is mapped twice`;
      if (strict && b.alias === "")
        return `The bitmap alias for '${n["node-name"]}'/'${b.name}' is empty (QEMU accepts it, then fails the migration)`;
    }
  }
  // Pass 2: alias -> name (duplicate aliases).
  const nodeAliases = new Set<string>();
  for (const n of mapping) {
    if (nodeAliases.has(n.alias)) return `The node alias '${n.alias}' is used twice`;
    nodeAliases.add(n.alias);
    const aliases = new Seen(n.bitmaps, "alias");
    let i = 0;
    for (const b of n.bitmaps) {
      if (aliases.before(i++)) return `The bitmap alias '${n.alias}'/'${b.alias}' is used twice`;
    }
  }
  return undefined;
}
