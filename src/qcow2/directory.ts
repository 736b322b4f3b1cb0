import { FieldReader, hex, roundUp } from "./bytes.js";
import { Qcow2CorruptError, Qcow2UnsupportedError } from "./errors.js";
import { DIR_ENTRY_FIXED_SIZE } from "./extensions.js";
import type { Qcow2Header } from "./header.js";

export const FLAG_IN_USE = 1 << 0;
export const FLAG_AUTO = 1 << 1;
/** Defined by the specification, but QEMU treats it as reserved and refuses the image. */
export const FLAG_EXTRA_DATA_COMPATIBLE = 1 << 2;
export const BITMAP_TYPE_DIRTY_TRACKING = 1;
/** QEMU accepts granularities from 512 bytes to 2 GiB. */
export const MIN_GRANULARITY_BITS = 9;
export const MAX_GRANULARITY_BITS = 31;
/** The specification's bound on granularity_bits. */
export const SPEC_MAX_GRANULARITY_BITS = 63;
export const MAX_NAME_SIZE = 1023;
export const MAX_TABLE_SIZE = 0x8000000;
/** QEMU's limit on a bitmap's data: `bitmap_table_size * cluster_size` at most 512 MiB. */
export const MAX_BITMAP_DATA_BYTES = 512 * 1024 * 1024;

export interface BitmapDirEntry {
  /** Position in the directory (QEMU keeps its own order; new bitmaps are appended). */
  index: number;
  /** File offset of the entry. */
  offset: number;
  tableOffset: number;
  tableSize: number;
  flags: number;
  inUse: boolean;
  auto: boolean;
  type: number;
  granularityBits: number;
  granularity: number;
  name: string;
  nameBytes: Uint8Array;
}

/** The bitmap's geometry: how many bits, and how many bytes of the data stream QEMU keeps and hashes. */
export interface BitmapGeometry {
  nbits: number;
  /** 8 · ceil(nbits / 64): the stream bytes QEMU deserializes (and x-debug-block-dirty-bitmap-sha256 hashes). */
  streamBytes: number;
  /** The table size QEMU expects: ceil(streamBytes / cluster size). */
  expectedTableSize: number;
}

export function bitmapGeometry(
  virtualSize: number,
  granularity: number,
  clusterSize: number,
): BitmapGeometry {
  const nbits = Math.ceil(virtualSize / granularity);
  const streamBytes = Math.ceil(nbits / 64) * 8;
  return { nbits, streamBytes, expectedTableSize: Math.ceil(streamBytes / clusterSize) };
}

const utf8 = new TextDecoder("utf-8", { fatal: false });

/**
 * Parses and validates the bitmap directory (`buf` is exactly `directorySize` bytes from `directoryOffset`):
 * QEMU's per-entry constraints, an exact entry count and total size, unique names, and bitmap tables that lie
 * inside the file.
 */
export function parseDirectory(
  buf: Uint8Array,
  directoryOffset: number,
  nbBitmaps: number,
  header: Qcow2Header,
  fileSize: number,
): BitmapDirEntry[] {
  const r = new FieldReader(buf, directoryOffset);
  const size = buf.byteLength;
  const entries: BitmapDirEntry[] = [];
  const names = new Map<string, number>();
  let pos = 0;
  while (pos < size) {
    const index = entries.length;
    const at = directoryOffset + pos;
    if (pos + DIR_ENTRY_FIXED_SIZE > size) {
      throw new Qcow2CorruptError(
        `broken bitmap directory: entry ${index} starts ${size - pos} bytes before the directory's end ` +
          `(bitmap_directory_size ${size}), too few for its ${DIR_ENTRY_FIXED_SIZE}-byte fixed part`,
        { offset: at, field: "bitmap directory entry" },
      );
    }
    if (index + 1 > nbBitmaps) {
      throw new Qcow2CorruptError(
        `the bitmap directory holds more entries than nb_bitmaps (${nbBitmaps}) says: entry ${index} ` +
          `starts ${size - pos} bytes before the directory's end`,
        { offset: at, field: "nb_bitmaps" },
      );
    }
    const tableOffset64 = r.u64(pos, "bitmap_table_offset");
    const tableSize = r.u32(pos + 8, "bitmap_table_size");
    const flags = r.u32(pos + 12, "flags");
    const type = r.u8(pos + 16, "type");
    const granularityBits = r.u8(pos + 17, "granularity_bits");
    const nameSize = r.u16(pos + 18, "name_size");
    const extraDataSize = r.u32(pos + 20, "extra_data_size");
    const entrySize = roundUp(DIR_ENTRY_FIXED_SIZE + extraDataSize + nameSize, 8);
    if (pos + entrySize > size) {
      throw new Qcow2CorruptError(
        `broken bitmap directory: entry ${index} (name_size ${nameSize}, extra_data_size ${extraDataSize}) ` +
          `is ${entrySize} bytes long and runs past the directory's end (bitmap_directory_size ${size})`,
        { offset: at + 18, field: "name_size" },
      );
    }
    const nameStart = pos + DIR_ENTRY_FIXED_SIZE + extraDataSize;
    const nameBytes = buf.subarray(nameStart, nameStart + nameSize);
    const name = utf8.decode(nameBytes);
    const label = `bitmap directory entry ${index} (${JSON.stringify(name)})`;

    if (extraDataSize !== 0) {
      throw new Qcow2UnsupportedError(
        `${label} has ${extraDataSize} bytes of extra data; QEMU refuses to load images with bitmap extra data`,
        { offset: at + 20, field: "extra_data_size" },
      );
    }
    if (nameSize === 0) {
      throw new Qcow2CorruptError(`bitmap directory entry ${index} has an empty name (name_size 0)`, {
        offset: at + 18,
        field: "name_size",
      });
    }
    if (nameSize > MAX_NAME_SIZE) {
      throw new Qcow2UnsupportedError(
        `${label} has a ${nameSize}-byte name; QEMU supports names of at most ${MAX_NAME_SIZE} bytes`,
        { offset: at + 18, field: "name_size" },
      );
    }
    if (type !== BITMAP_TYPE_DIRTY_TRACKING) {
      throw new Qcow2UnsupportedError(`${label} has type ${type}; only type 1 (dirty tracking) is defined`, {
        offset: at + 16,
        field: "type",
      });
    }
    if (granularityBits > SPEC_MAX_GRANULARITY_BITS) {
      throw new Qcow2CorruptError(
        `${label} has granularity_bits ${granularityBits}; the specification allows 0 to ${SPEC_MAX_GRANULARITY_BITS}`,
        { offset: at + 17, field: "granularity_bits" },
      );
    }
    if (granularityBits < MIN_GRANULARITY_BITS || granularityBits > MAX_GRANULARITY_BITS) {
      throw new Qcow2UnsupportedError(
        `${label} has granularity_bits ${granularityBits} (granularity 2^${granularityBits}); QEMU supports ` +
          `${MIN_GRANULARITY_BITS} to ${MAX_GRANULARITY_BITS} (512 bytes to 2 GiB)`,
        { offset: at + 17, field: "granularity_bits" },
      );
    }
    if ((flags & ~(FLAG_IN_USE | FLAG_AUTO | FLAG_EXTRA_DATA_COMPATIBLE)) !== 0) {
      throw new Qcow2CorruptError(
        `${label} has reserved flag bits set (flags ${hex(flags)}); bits 3 to 31 must be 0`,
        { offset: at + 12, field: "flags" },
      );
    }
    if ((flags & FLAG_EXTRA_DATA_COMPATIBLE) !== 0) {
      throw new Qcow2UnsupportedError(
        `${label} sets the extra_data_compatible flag (bit 2), which QEMU treats as reserved and refuses`,
        { offset: at + 12, field: "flags" },
      );
    }
    const key = Buffer.from(nameBytes).toString("latin1");
    const first = names.get(key);
    if (first !== undefined) {
      throw new Qcow2CorruptError(
        `bitmap directory entries ${first} and ${index} have the same name ${JSON.stringify(name)}; names must be unique`,
        { offset: at + DIR_ENTRY_FIXED_SIZE, field: "name" },
      );
    }
    names.set(key, index);

    if (tableSize === 0) {
      throw new Qcow2CorruptError(`${label} has an empty bitmap table (bitmap_table_size 0)`, {
        offset: at + 8,
        field: "bitmap_table_size",
      });
    }
    if (tableOffset64 === 0n) {
      throw new Qcow2CorruptError(`${label} has no bitmap table (bitmap_table_offset 0)`, {
        offset: at,
        field: "bitmap_table_offset",
      });
    }
    if (tableOffset64 % BigInt(header.clusterSize) !== 0n) {
      throw new Qcow2CorruptError(
        `${label} has bitmap_table_offset ${hex(tableOffset64)}, not aligned to the cluster size (${header.clusterSize})`,
        { offset: at, field: "bitmap_table_offset" },
      );
    }
    const inUse = (flags & FLAG_IN_USE) !== 0;
    // An in-use bitmap's table is never read (QEMU does not read it either), so only its header fields count.
    if (!inUse && tableOffset64 + BigInt(tableSize) * 8n > BigInt(fileSize)) {
      throw new Qcow2CorruptError(
        `${label} has a bitmap table of ${tableSize} entries at ${hex(tableOffset64)} that extends past the end of ` +
          `the file (${fileSize} bytes)`,
        { offset: at + 8, field: "bitmap_table_size" },
      );
    }
    if (tableSize > MAX_TABLE_SIZE || tableSize * header.clusterSize > MAX_BITMAP_DATA_BYTES) {
      throw new Qcow2UnsupportedError(
        `${label} has a bitmap table of ${tableSize} entries (${tableSize * header.clusterSize} bytes of bitmap ` +
          `data); QEMU supports at most ${MAX_BITMAP_DATA_BYTES} bytes (and ${MAX_TABLE_SIZE} entries)`,
        { offset: at + 8, field: "bitmap_table_size" },
      );
    }
    const granularity = 2 ** granularityBits;
    const geo = bitmapGeometry(header.virtualSize, granularity, header.clusterSize);
    if (inUse && geo.streamBytes > MAX_BITMAP_DATA_BYTES) {
      // Its table is not read, so only the size says what QEMU would have to allocate to load it (empty).
      throw new Qcow2UnsupportedError(
        `${label} would take ${geo.streamBytes} bytes at granularity ${granularity} on a ${header.virtualSize}-byte ` +
          `image; QEMU cannot hold bitmaps of more than ${MAX_BITMAP_DATA_BYTES} bytes`,
        { offset: at + 17, field: "granularity_bits" },
      );
    }
    if (!inUse) {
      if (tableSize !== geo.expectedTableSize) {
        throw new Qcow2CorruptError(
          `${label} has a bitmap table of ${tableSize} entries, but a ${header.virtualSize}-byte image at ` +
            `granularity ${granularity} needs ${geo.expectedTableSize} (${geo.nbits} bits in ${geo.streamBytes} ` +
            `bytes, ${header.clusterSize}-byte clusters)`,
          { offset: at + 8, field: "bitmap_table_size" },
        );
      }
    }
    entries.push({
      index,
      offset: at,
      tableOffset: Number(tableOffset64),
      tableSize,
      flags,
      inUse,
      auto: (flags & FLAG_AUTO) !== 0,
      type,
      granularityBits,
      granularity,
      name,
      nameBytes,
    });
    pos += entrySize;
  }
  if (entries.length !== nbBitmaps) {
    throw new Qcow2CorruptError(
      `the bitmap directory holds ${entries.length} entries, but nb_bitmaps says ${nbBitmaps}`,
      { offset: directoryOffset, field: "nb_bitmaps" },
    );
  }
  return entries;
}
