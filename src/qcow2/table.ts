import { hex } from "./bytes.js";
import { Qcow2CorruptError } from "./errors.js";

/** A table entry whose cluster reads as all zeros. */
export const ZERO_CLUSTER = 0;
/** A table entry whose cluster reads as all ones (bit 0 set, no offset). QEMU never writes it; others may. */
export const ONES_CLUSTER = 1;

/**
 * Entry bits: 0 = all-ones flag (only without an offset), 1–8 reserved, 9–55 the data cluster's offset,
 * 56–63 reserved. QEMU's reserved mask for the whole entry is 0xFF000000000001FE.
 */
const HI_RESERVED = 0xff000000;
const LO_RESERVED = 0x000001fe;
const HI_OFFSET = 0x00ffffff;
const LO_OFFSET = 0xfffffe00;

/**
 * Decodes a bitmap table (`buf` holds its `tableSize * 8` bytes, read from `tableOffset`). Each result is
 * ZERO_CLUSTER, ONES_CLUSTER or the data cluster's file offset (cluster-aligned and nonzero, so never 0 or 1).
 * `bytesNeeded` is how much of the data stream the bitmap uses; every data cluster must hold its share of it
 * inside the file.
 */
export function parseBitmapTable(
  buf: Uint8Array,
  tableOffset: number,
  clusterSize: number,
  bytesNeeded: number,
  fileSize: number,
  bitmapName: string,
): Float64Array {
  const n = buf.byteLength >>> 3;
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const hi = dv.getUint32(i * 8, false);
    const lo = dv.getUint32(i * 8 + 4, false);
    const at = tableOffset + i * 8;
    if ((hi & HI_RESERVED) !== 0 || (lo & LO_RESERVED) !== 0) {
      throw new Qcow2CorruptError(
        `entry ${i} of the bitmap table of ${JSON.stringify(bitmapName)} is ${entryHex(hi, lo)}, ` +
          `with reserved bits set (mask 0xff000000000001fe must be clear)`,
        { offset: at, field: "bitmap table entry" },
      );
    }
    const offset = (hi & HI_OFFSET) * 2 ** 32 + ((lo & LO_OFFSET) >>> 0);
    const allOnes = (lo & 1) !== 0;
    if (offset === 0) {
      out[i] = allOnes ? ONES_CLUSTER : ZERO_CLUSTER;
      continue;
    }
    if (allOnes) {
      throw new Qcow2CorruptError(
        `entry ${i} of the bitmap table of ${JSON.stringify(bitmapName)} is ${entryHex(hi, lo)}: it has a data ` +
          `cluster offset and the all-ones bit, which is reserved when an offset is given`,
        { offset: at, field: "bitmap table entry" },
      );
    }
    if (offset % clusterSize !== 0) {
      throw new Qcow2CorruptError(
        `entry ${i} of the bitmap table of ${JSON.stringify(bitmapName)} points at ${hex(offset)}, ` +
          `not aligned to the cluster size (${clusterSize})`,
        { offset: at, field: "bitmap table entry" },
      );
    }
    const need = Math.min(clusterSize, bytesNeeded - i * clusterSize);
    if (need > 0 && offset + need > fileSize) {
      throw new Qcow2CorruptError(
        `entry ${i} of the bitmap table of ${JSON.stringify(bitmapName)} points at a data cluster at ` +
          `${hex(offset)}, past the end of the file (${fileSize} bytes)`,
        { offset: at, field: "bitmap table entry" },
      );
    }
    out[i] = offset;
  }
  return out;
}

function entryHex(hi: number, lo: number): string {
  return `0x${hi.toString(16).padStart(8, "0")}${lo.toString(16).padStart(8, "0")}`;
}
