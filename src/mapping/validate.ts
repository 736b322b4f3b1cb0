import type { BitmapAliasMapping } from "../qemu/replies.js";

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
    if (Buffer.byteLength(n.alias) > 255) return `The node alias '${n.alias}' is longer than 255 bytes`;
    if (Buffer.byteLength(n["node-name"]) > 31)
      return `The node name '${n["node-name"]}' is longer than 31 bytes`;
    if (nodeNames.has(n["node-name"])) return `The node name '${n["node-name"]}' is mapped twice`;
    nodeNames.add(n["node-name"]);
    const names = new Set<string>();
    for (const b of n.bitmaps) {
      if (Buffer.byteLength(b.alias) > 255) return `The bitmap alias '${b.alias}' is longer than 255 bytes`;
      if (Buffer.byteLength(b.name) > 1023) return `The bitmap name '${b.name}' is longer than 1023 bytes`;
      if (names.has(b.name)) return `The bitmap '${n["node-name"]}'/'${b.name}' is mapped twice`;
      names.add(b.name);
      if (strict && b.alias === "")
        return `The bitmap alias for '${n["node-name"]}'/'${b.name}' is empty (QEMU accepts it, then fails the migration)`;
    }
  }
  // Pass 2: alias -> name (duplicate aliases).
  const nodeAliases = new Set<string>();
  for (const n of mapping) {
    if (nodeAliases.has(n.alias)) return `The node alias '${n.alias}' is used twice`;
    nodeAliases.add(n.alias);
    const aliases = new Set<string>();
    for (const b of n.bitmaps) {
      if (aliases.has(b.alias)) return `The bitmap alias '${n.alias}'/'${b.alias}' is used twice`;
      aliases.add(b.alias);
    }
  }
  return undefined;
}
