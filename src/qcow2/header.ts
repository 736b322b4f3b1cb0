import { FieldReader } from "./bytes.js";
import { NotQcow2Error, Qcow2CorruptError, Qcow2UnsupportedError } from "./errors.js";

export const QCOW2_MAGIC = 0x514649fb;
/** Version 2 headers are exactly this long; extensions follow immediately. */
export const V2_HEADER_LENGTH = 72;
/** Version 3 headers are at least this long (`header_length` says how long). */
export const V3_MIN_HEADER_LENGTH = 104;
/** Enough bytes for every header field bitferry reads. */
export const HEADER_READ_LENGTH = 112;
export const MIN_CLUSTER_BITS = 9;
/** QEMU's implementation limit (2 MiB clusters); the specification has no upper bound. */
export const MAX_CLUSTER_BITS = 21;

/** Incompatible feature bits QEMU 7.2 knows: dirty, corrupt, external data file, compression type, extended L2. */
export const KNOWN_INCOMPATIBLE_FEATURES = 0x1fn;
export const INCOMPAT_CORRUPT = 1n << 1n;
/** Autoclear bit 0: the bitmaps extension is consistent with the image. */
export const AUTOCLEAR_BITMAPS = 1n;

export interface Qcow2Header {
  version: 2 | 3;
  backingFileOffset: number;
  clusterBits: number;
  clusterSize: number;
  /** The guest-visible size in bytes: the logical length of every bitmap. */
  virtualSize: number;
  incompatibleFeatures: bigint;
  compatibleFeatures: bigint;
  autoclearFeatures: bigint;
  /** 72 for version 2. */
  headerLength: number;
  /** Header extensions live in [extensionsStart, extensionsEnd). */
  extensionsStart: number;
  extensionsEnd: number;
}

/**
 * Parses the fixed qcow2 header from the first bytes of the file (`buf` holds at most HEADER_READ_LENGTH of
 * them; a shorter buffer means a shorter file). Applies QEMU's own open-time checks for the fields it reads.
 */
export function parseHeader(buf: Uint8Array): Qcow2Header {
  const r = new FieldReader(buf, 0);
  if (buf.byteLength < 4) {
    throw new NotQcow2Error(
      `not a qcow2 image: the file is ${buf.byteLength} bytes long, too short for the qcow2 magic`,
      { offset: 0, field: "magic" },
    );
  }
  const magic = r.u32(0, "magic");
  if (magic !== QCOW2_MAGIC) {
    const bytes = Array.from(buf.subarray(0, 4), (b) => b.toString(16).padStart(2, "0")).join(" ");
    throw new NotQcow2Error(
      `not a qcow2 image: the file starts with ${bytes}, not the qcow2 magic 51 46 49 fb ("QFI\\xfb")`,
      { offset: 0, field: "magic" },
    );
  }
  if (buf.byteLength < V2_HEADER_LENGTH) {
    throw new Qcow2CorruptError(
      `the file is ${buf.byteLength} bytes long and ends inside the qcow2 header (${V2_HEADER_LENGTH} bytes at least)`,
      { offset: buf.byteLength, field: "header" },
    );
  }
  const version = r.u32(4, "version");
  if (version !== 2 && version !== 3) {
    throw new Qcow2UnsupportedError(`qcow2 version ${version} is not supported (versions 2 and 3 exist)`, {
      offset: 4,
      field: "version",
    });
  }
  const clusterBits = r.u32(20, "cluster_bits");
  if (clusterBits < MIN_CLUSTER_BITS) {
    throw new Qcow2CorruptError(
      `cluster_bits is ${clusterBits}; the specification requires at least ${MIN_CLUSTER_BITS} (512-byte clusters)`,
      { offset: 20, field: "cluster_bits" },
    );
  }
  if (clusterBits > MAX_CLUSTER_BITS) {
    throw new Qcow2UnsupportedError(
      `cluster_bits is ${clusterBits}; QEMU supports clusters of at most 2 MiB (cluster_bits ${MAX_CLUSTER_BITS})`,
      { offset: 20, field: "cluster_bits" },
    );
  }
  const clusterSize = 2 ** clusterBits;
  const virtualSize = r.u64n(24, "size", "unsupported");
  const backing = r.u64(8, "backing_file_offset");
  if (backing > BigInt(clusterSize)) {
    throw new Qcow2CorruptError(
      `backing_file_offset is ${backing}, beyond the first cluster (${clusterSize} bytes), where QEMU requires it`,
      { offset: 8, field: "backing_file_offset" },
    );
  }
  const backingFileOffset = Number(backing);

  let incompatibleFeatures = 0n;
  let compatibleFeatures = 0n;
  let autoclearFeatures = 0n;
  let headerLength = V2_HEADER_LENGTH;
  if (version === 3) {
    if (buf.byteLength < V3_MIN_HEADER_LENGTH) {
      throw new Qcow2CorruptError(
        `the file is ${buf.byteLength} bytes long and ends inside the version 3 header (${V3_MIN_HEADER_LENGTH} bytes at least)`,
        { offset: buf.byteLength, field: "header" },
      );
    }
    incompatibleFeatures = r.u64(72, "incompatible_features");
    compatibleFeatures = r.u64(80, "compatible_features");
    autoclearFeatures = r.u64(88, "autoclear_features");
    headerLength = r.u32(100, "header_length");
    if (headerLength < V3_MIN_HEADER_LENGTH) {
      throw new Qcow2CorruptError(
        `header_length is ${headerLength}; a version 3 header is at least ${V3_MIN_HEADER_LENGTH} bytes`,
        { offset: 100, field: "header_length" },
      );
    }
    if (headerLength > clusterSize) {
      throw new Qcow2CorruptError(
        `header_length is ${headerLength}, larger than the cluster size (${clusterSize})`,
        { offset: 100, field: "header_length" },
      );
    }
    const unknown = incompatibleFeatures & ~KNOWN_INCOMPATIBLE_FEATURES;
    if (unknown !== 0n) {
      throw new Qcow2UnsupportedError(
        `the image uses incompatible features unknown to QEMU 7.2 (bits ${bitList(unknown)}); ` +
          `no reader that lacks them may interpret it`,
        { offset: 72, field: "incompatible_features" },
      );
    }
  }
  return {
    version,
    backingFileOffset,
    clusterBits,
    clusterSize,
    virtualSize,
    incompatibleFeatures,
    compatibleFeatures,
    autoclearFeatures,
    headerLength,
    extensionsStart: headerLength,
    extensionsEnd: backingFileOffset !== 0 ? backingFileOffset : clusterSize,
  };
}

function bitList(mask: bigint): string {
  const bits: number[] = [];
  for (let i = 0; i < 64; i++) if ((mask >> BigInt(i)) & 1n) bits.push(i);
  return bits.join(", ");
}
