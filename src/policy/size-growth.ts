import type { GraphLookup } from "../graph/lookup.js";
import type { BlockNode } from "../graph/model.js";
import { addError, describeNode, quote, type Work } from "./work.js";

/**
 * A bitmap's size is its node's size, and a migrated bitmap must arrive at its destination node's size. A regular
 * file under a writable image format (the `file` node of a qcow2 a VM writes to) is not a fixed size: its length
 * grows whenever the format allocates clusters, as the guest writes and, at the switchover, when the source stores
 * its persistent bitmaps or other metadata. The destination node's size was read when the destination opened the
 * image, so the bitmap arrives with another length: verification fails after the source has handed over, and
 * neither side can simply run (observed: a file node growing from 1,376,256 to 1,507,840 bytes at the switchover
 * as the source stored a skipped persistent bitmap). Block devices and raw-format parents keep their size; only
 * writable non-raw formats over a `file` node are refused.
 */

/** Drivers that never change the length of the file below them on their own. */
const FIXED_LAYOUT_FORMATS = new Set(["raw"]);

/** The writable format node that can grow `node`, if `node` is a file node under one. */
function growingParent(node: BlockNode, lookup: GraphLookup): BlockNode | undefined {
  if (node.driver !== "file") return undefined;
  return lookup
    .parentsOf(node.name)
    .find(
      (p) =>
        p.role === "file" &&
        !p.parent.readOnly &&
        !p.parent.filter &&
        !FIXED_LAYOUT_FORMATS.has(p.parent.driver),
    )?.parent;
}

/** Adds SOURCE_NODE_GROWS to a migrating bitmap whose source node's size can change during the migration. */
export function checkSizeGrowth(w: Work, src: GraphLookup): void {
  // A bitmap already refused (typically UNADDRESSABLE: a file node's name is usually generated) is not refused
  // twice; once it is addressed, this check speaks.
  if (w.entry.errors.length > 0) return;
  const parent = growingParent(w.node, src);
  if (!parent) return;
  addError(
    w.entry,
    "SOURCE_NODE_GROWS",
    `bitmap '${w.bitmap.name}' is on ${describeNode(w.node, src)}, the file under writable ${parent.driver} ` +
      `${describeNode(parent, src)}: that file grows whenever ${parent.driver} allocates space (guest writes, and ` +
      `metadata the source writes at the switchover), so the bitmap would arrive with another size than its ` +
      `destination node and fail verification after the source has stopped. Fix: skip it (deny: ` +
      `[${quote(w.bitmap.name)}]), and track the disk with a bitmap on the format node '${parent.name}' instead`,
  );
}
