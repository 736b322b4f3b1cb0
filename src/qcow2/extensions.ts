import { FieldReader, hex, roundUp } from "./bytes.js";
import { Qcow2CorruptError, Qcow2UnsupportedError } from "./errors.js";
import { AUTOCLEAR_BITMAPS, type Qcow2Header } from "./header.js";

export const EXT_END = 0x00000000;
export const EXT_BACKING_FORMAT = 0xe2792aca;
export const EXT_FEATURE_NAMES = 0x6803f857;
export const EXT_BITMAPS = 0x23852875;
export const EXT_ENCRYPTION = 0x0537be77;
export const EXT_DATA_FILE = 0x44415441;

export const BITMAPS_EXT_LENGTH = 24;
/** QEMU's limit on bitmaps per image (the specification allows any u32 of at least 1). */
export const MAX_BITMAPS = 65535;
/** QEMU's limit on the directory: 1024 bytes for each of 65535 bitmaps. */
export const MAX_DIRECTORY_SIZE = 1024 * 65535;
/** The fixed part of a directory entry. */
export const DIR_ENTRY_FIXED_SIZE = 24;

export interface HeaderExtension {
  type: number;
  /** File offset of the 8-byte record header; the data follows it. */
  offset: number;
  length: number;
  data: Uint8Array;
}

/**
 * Walks the header extensions. `area` holds the file's bytes from `header.extensionsStart` up to
 * `header.extensionsEnd` or the end of the file, whichever comes first. Every record is bounds-checked against
 * the extension area (QEMU's rule) and against the file; the walk ends at the end marker or the area's end.
 */
export function walkExtensions(area: Uint8Array, header: Qcow2Header, fileSize: number): HeaderExtension[] {
  const start = header.extensionsStart;
  const end = header.extensionsEnd;
  const r = new FieldReader(area, start);
  const out: HeaderExtension[] = [];
  let off = start;
  while (off < end) {
    if (off + 8 > end) {
      throw new Qcow2CorruptError(
        `a header extension record starts ${end - off} bytes before the end of the extension area (${end}); ` +
          `its 8-byte type and length do not fit`,
        { offset: off, field: "header extension" },
      );
    }
    if (off + 8 > fileSize) {
      throw new Qcow2CorruptError(
        `the file (${fileSize} bytes) ends inside the header extension area, which runs to byte ${end}`,
        { offset: off, field: "header extension" },
      );
    }
    const type = r.u32(off - start, "header extension type");
    const length = r.u32(off - start + 4, "header extension length");
    const dataOffset = off + 8;
    if (type === EXT_END) break;
    if (length > end - dataOffset) {
      throw new Qcow2CorruptError(
        `header extension ${hex(type)} claims ${length} bytes of data, past the end of the extension area ` +
          `(byte ${end}; ${end - dataOffset} bytes left)`,
        { offset: off + 4, field: "header extension length" },
      );
    }
    if (dataOffset + length > fileSize) {
      throw new Qcow2CorruptError(
        `header extension ${hex(type)} claims ${length} bytes of data, past the end of the file (${fileSize} bytes)`,
        { offset: off + 4, field: "header extension length" },
      );
    }
    out.push({
      type,
      offset: off,
      length,
      data: area.subarray(dataOffset - start, dataOffset - start + length),
    });
    off = dataOffset + roundUp(length, 8);
  }
  return out;
}

export type BitmapsExtension =
  | { kind: "absent" }
  | {
      /** Present, but QEMU ignores every bitmap (autoclear bit 0 clear, or a version 2 image). */
      kind: "inconsistent";
      offset: number;
      reason: "autoclear-clear" | "version-2";
    }
  | {
      kind: "present";
      offset: number;
      nbBitmaps: number;
      directorySize: number;
      directoryOffset: number;
    };

/** Finds and validates the bitmaps extension (QEMU's checks, in QEMU's order, plus bounds against the file). */
export function parseBitmapsExtension(
  extensions: readonly HeaderExtension[],
  header: Qcow2Header,
  fileSize: number,
): BitmapsExtension {
  const found = extensions.filter((e) => e.type === EXT_BITMAPS);
  const ext = found[0];
  if (ext === undefined) return { kind: "absent" };
  const second = found[1];
  if (second !== undefined) {
    throw new Qcow2CorruptError(
      `the image has two bitmaps extensions (at bytes ${ext.offset} and ${second.offset}); it may have one`,
      { offset: second.offset, field: "bitmaps extension" },
    );
  }
  if (ext.length !== BITMAPS_EXT_LENGTH) {
    throw new Qcow2CorruptError(
      `the bitmaps extension is ${ext.length} bytes long; it must be exactly ${BITMAPS_EXT_LENGTH}`,
      { offset: ext.offset + 4, field: "bitmaps extension length" },
    );
  }
  // QEMU checks the length first and only then whether the extension is to be trusted at all.
  if (header.version === 2) return { kind: "inconsistent", offset: ext.offset, reason: "version-2" };
  if ((header.autoclearFeatures & AUTOCLEAR_BITMAPS) === 0n) {
    return { kind: "inconsistent", offset: ext.offset, reason: "autoclear-clear" };
  }

  const base = ext.offset + 8;
  const r = new FieldReader(ext.data, base);
  const nbBitmaps = r.u32(0, "nb_bitmaps");
  const reserved = r.u32(4, "reserved32");
  const dirSize = r.u64(8, "bitmap_directory_size");
  const dirOffset = r.u64(16, "bitmap_directory_offset");
  if (reserved !== 0) {
    throw new Qcow2CorruptError(`the bitmaps extension's reserved field is ${hex(reserved)}; it must be 0`, {
      offset: base + 4,
      field: "reserved32",
    });
  }
  if (nbBitmaps > MAX_BITMAPS) {
    throw new Qcow2UnsupportedError(
      `the image claims ${nbBitmaps} bitmaps; QEMU supports at most ${MAX_BITMAPS}`,
      { offset: base, field: "nb_bitmaps" },
    );
  }
  if (nbBitmaps === 0) {
    throw new Qcow2CorruptError(
      "the bitmaps extension says there are zero bitmaps; it must list at least one",
      {
        offset: base,
        field: "nb_bitmaps",
      },
    );
  }
  if (dirOffset % BigInt(header.clusterSize) !== 0n) {
    throw new Qcow2CorruptError(
      `bitmap_directory_offset ${hex(dirOffset)} is not aligned to the cluster size (${header.clusterSize})`,
      { offset: base + 16, field: "bitmap_directory_offset" },
    );
  }
  if (dirSize > BigInt(MAX_DIRECTORY_SIZE)) {
    throw new Qcow2UnsupportedError(
      `bitmap_directory_size is ${dirSize} bytes; QEMU supports at most ${MAX_DIRECTORY_SIZE}`,
      { offset: base + 8, field: "bitmap_directory_size" },
    );
  }
  const directorySize = Number(dirSize);
  if (directorySize < nbBitmaps * DIR_ENTRY_FIXED_SIZE) {
    throw new Qcow2CorruptError(
      `bitmap_directory_size is ${directorySize} bytes, too small for ${nbBitmaps} directory entries of at least ` +
        `${DIR_ENTRY_FIXED_SIZE} bytes each`,
      { offset: base + 8, field: "bitmap_directory_size" },
    );
  }
  if (dirOffset < BigInt(header.clusterSize)) {
    throw new Qcow2CorruptError(
      `bitmap_directory_offset is ${dirOffset}, inside the header cluster; the directory would overlap the header`,
      { offset: base + 16, field: "bitmap_directory_offset" },
    );
  }
  if (dirOffset + dirSize > BigInt(fileSize)) {
    throw new Qcow2CorruptError(
      `the bitmap directory (${directorySize} bytes at ${hex(dirOffset)}) extends past the end of the file ` +
        `(${fileSize} bytes)`,
      { offset: base + 16, field: "bitmap_directory_offset" },
    );
  }
  return {
    kind: "present",
    offset: ext.offset,
    nbBitmaps,
    directorySize,
    directoryOffset: Number(dirOffset),
  };
}
