import { createHash } from "node:crypto";
import { BitmapScanner, type RunSink, type ScanResult } from "./bits.js";
import { bitmapGeometry, parseDirectory, type BitmapDirEntry, type BitmapGeometry } from "./directory.js";
import {
  parseBitmapsExtension,
  walkExtensions,
  type BitmapsExtension,
  type HeaderExtension,
} from "./extensions.js";
import { HEADER_READ_LENGTH, INCOMPAT_CORRUPT, parseHeader, type Qcow2Header } from "./header.js";
import { DataClusterTracker, RegionIndex, metadataRegions } from "./layout.js";
import { FileSource, type ByteSource } from "./source.js";
import { ONES_CLUSTER, ZERO_CLUSTER, parseBitmapTable } from "./table.js";

/** Reads of bitmap data are coalesced up to this size (or one cluster, if larger): memory stays bounded. */
export const DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024;

export type Qcow2WarningCode = "BITMAPS_INCONSISTENT" | "IMAGE_MARKED_CORRUPT";

export interface Qcow2Warning {
  code: Qcow2WarningCode;
  message: string;
}

export interface ReadBitmapOptions {
  sha256?: boolean;
  /** Runs of set bits, in bit indexes (see BitmapScanner). */
  onRun?: RunSink;
}

export interface BitmapData extends ScanResult {
  geometry: BitmapGeometry;
  /** The bitmap was in use: its data was not read and it reads as QEMU loads it, empty. */
  stale: boolean;
}

export interface ReaderOptions {
  chunkBytes?: number;
}

/**
 * An open qcow2 image: header, extensions and the validated bitmap directory, read eagerly (they are small and
 * bounded by the file); bitmap tables and data are read on demand, data in bounded chunks.
 */
export class Qcow2Reader {
  private readonly tables = new Map<number, Float64Array>();
  private readonly emptyHashes = new Map<number, string>();

  private constructor(
    readonly source: ByteSource,
    readonly header: Qcow2Header,
    readonly extensions: readonly HeaderExtension[],
    readonly bitmapsExtension: BitmapsExtension,
    readonly bitmaps: readonly BitmapDirEntry[],
    readonly warnings: readonly Qcow2Warning[],
    private readonly clusters: DataClusterTracker | undefined,
    private readonly chunkBytes: number,
  ) {}

  static async openFile(path: string, options: ReaderOptions = {}): Promise<Qcow2Reader> {
    const source = await FileSource.open(path);
    try {
      return await Qcow2Reader.open(source, options);
    } catch (err) {
      await source.close();
      throw err;
    }
  }

  /** Parses the metadata of the image in `source`; the caller keeps ownership of the source. */
  static async open(source: ByteSource, options: ReaderOptions = {}): Promise<Qcow2Reader> {
    const fileSize = source.size;
    const head = await readAt(source, 0, Math.min(fileSize, HEADER_READ_LENGTH));
    const header = parseHeader(head);

    const areaEnd = Math.min(header.extensionsEnd, fileSize);
    const area =
      areaEnd > header.extensionsStart
        ? await readAt(source, header.extensionsStart, areaEnd - header.extensionsStart)
        : new Uint8Array(0);
    const extensions = walkExtensions(area, header, fileSize);
    const bitmapsExtension = parseBitmapsExtension(extensions, header, fileSize);

    const warnings: Qcow2Warning[] = [];
    if ((header.incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n) {
      warnings.push({
        code: "IMAGE_MARKED_CORRUPT",
        message:
          "the image is marked corrupt (incompatible feature bit 1): QEMU opens it read-only only; " +
          "run 'qemu-img check -r all' on a copy before trusting it",
      });
    }
    let bitmaps: BitmapDirEntry[] = [];
    let clusters: DataClusterTracker | undefined;
    if (bitmapsExtension.kind === "inconsistent") {
      warnings.push({
        code: "BITMAPS_INCONSISTENT",
        message:
          bitmapsExtension.reason === "version-2"
            ? "this qcow2 version 2 image carries a bitmaps extension, which version 2 cannot keep consistent: " +
              "QEMU considers every bitmap in it inconsistent and ignores them all"
            : "the bitmaps extension is present but autoclear bit 0 is clear: a program without bitmap support " +
              "modified the image, so QEMU considers every bitmap inconsistent and ignores them all " +
              "(run 'qemu-img check -r leaks' to reclaim their clusters)",
      });
    } else if (bitmapsExtension.kind === "present") {
      const dir = await readAt(source, bitmapsExtension.directoryOffset, bitmapsExtension.directorySize);
      bitmaps = parseDirectory(
        dir,
        bitmapsExtension.directoryOffset,
        bitmapsExtension.nbBitmaps,
        header,
        fileSize,
      );
      const regions = metadataRegions(
        header,
        { offset: bitmapsExtension.directoryOffset, size: bitmapsExtension.directorySize },
        bitmaps,
      );
      clusters = new DataClusterTracker(new RegionIndex(regions));
    }
    const chunkBytes = Math.max(options.chunkBytes ?? DEFAULT_CHUNK_BYTES, header.clusterSize);
    return new Qcow2Reader(
      source,
      header,
      extensions,
      bitmapsExtension,
      bitmaps,
      warnings,
      clusters,
      chunkBytes,
    );
  }

  close(): Promise<void> {
    return this.source.close();
  }

  geometry(bitmap: BitmapDirEntry): BitmapGeometry {
    return bitmapGeometry(this.header.virtualSize, bitmap.granularity, this.header.clusterSize);
  }

  /**
   * Streams one bitmap's data through a BitmapScanner: set-bit count, runs, and optionally QEMU's SHA-256. An
   * in-use bitmap is not read (its data is stale): it scans as the empty bitmap QEMU would load in its place.
   */
  async readBitmap(bitmap: BitmapDirEntry, options: ReadBitmapOptions = {}): Promise<BitmapData> {
    const geometry = this.geometry(bitmap);
    // QEMU hashes at least one 64-bit word, even for a zero-length bitmap.
    const hashBytes = Math.max(8, geometry.streamBytes);
    if (bitmap.inUse) {
      const result: BitmapData = { setBits: 0, geometry, stale: true };
      if (options.sha256) result.sha256 = this.emptyHash(hashBytes);
      return result;
    }
    const scanner = new BitmapScanner(geometry.nbits, hashBytes, {
      ...(options.sha256 !== undefined ? { sha256: options.sha256 } : {}),
      ...(options.onRun !== undefined ? { onRun: options.onRun } : {}),
    });
    const table = await this.table(bitmap, geometry);
    const cs = this.header.clusterSize;
    const need = (i: number): number => Math.min(cs, geometry.streamBytes - i * cs);

    // Runs of consecutive table entries whose clusters are adjacent in the file become one read, so that QEMU's
    // usual layout (data clusters allocated one after another) costs a few large reads.
    type Segment =
      { kind: "fill"; bytes: number; ones: boolean } | { kind: "read"; offset: number; bytes: number };
    const segments: Segment[] = [];
    for (let i = 0; i < table.length; i++) {
      const e = table[i] ?? ZERO_CLUSTER;
      const bytes = need(i);
      const last = segments[segments.length - 1];
      if (e === ZERO_CLUSTER || e === ONES_CLUSTER) {
        const ones = e === ONES_CLUSTER;
        if (last?.kind === "fill" && last.ones === ones) last.bytes += bytes;
        else segments.push({ kind: "fill", bytes, ones });
      } else if (
        last?.kind === "read" &&
        last.offset + last.bytes === e &&
        last.bytes + bytes <= this.chunkBytes
      ) {
        last.bytes += bytes;
      } else {
        segments.push({ kind: "read", offset: e, bytes });
      }
    }

    // Two buffers: the next read runs while the current chunk is scanned.
    const reads = segments.filter((s) => s.kind === "read");
    const size = reads.reduce((m, s) => Math.max(m, s.bytes), 0);
    const buffers = [Buffer.allocUnsafeSlow(size), Buffer.allocUnsafeSlow(size)] as const;
    const start = (r: number): Promise<Uint8Array> | undefined => {
      const s = reads[r];
      if (s === undefined) return undefined;
      const buf = buffers[r % 2 === 0 ? 0 : 1].subarray(0, s.bytes);
      const p = this.source.read(buf, s.offset).then(() => buf);
      // Handled here so that a read failing while an error ends the scan is not an unhandled rejection.
      p.catch(() => undefined);
      return p;
    };
    let r = 0;
    let pending = start(0);
    for (const s of segments) {
      if (s.kind === "fill") {
        scanner.fill(s.bytes, s.ones);
        continue;
      }
      const data = await (pending ?? Promise.reject(new Error("internal: no read pending")));
      r++;
      pending = start(r);
      scanner.feed(data);
    }
    return { ...scanner.finish(), geometry, stale: false };
  }

  /**
   * SHA-256 of `bytes` zero bytes, the hash of an empty bitmap. The lengths every in-use bitmap of the image needs
   * are hashed in one pass over zeros (a copy of the running hash at each length), so that many in-use bitmaps
   * cost no more than the largest one, at most 512 MiB of zeros.
   */
  private emptyHash(bytes: number): string {
    const cached = this.emptyHashes.get(bytes);
    if (cached !== undefined) return cached;
    const lengths = new Set([bytes]);
    for (const b of this.bitmaps) {
      if (b.inUse) lengths.add(Math.max(8, this.geometry(b).streamBytes));
    }
    const zeros = new Uint8Array(Math.min(DEFAULT_CHUNK_BYTES, Math.max(...lengths)));
    const hash = createHash("sha256");
    let done = 0;
    for (const n of [...lengths].sort((a, b) => a - b)) {
      while (done < n) {
        const k = Math.min(zeros.byteLength, n - done);
        hash.update(zeros.subarray(0, k));
        done += k;
      }
      this.emptyHashes.set(n, hash.copy().digest("hex"));
    }
    return this.emptyHashes.get(bytes) ?? "";
  }

  /** Loads and validates a bitmap's table once; its data clusters are claimed against every other structure. */
  private async table(bitmap: BitmapDirEntry, geometry: BitmapGeometry): Promise<Float64Array> {
    const cached = this.tables.get(bitmap.index);
    if (cached !== undefined) return cached;
    const raw = await readAt(this.source, bitmap.tableOffset, bitmap.tableSize * 8);
    const table = parseBitmapTable(
      raw,
      bitmap.tableOffset,
      this.header.clusterSize,
      geometry.streamBytes,
      this.source.size,
      bitmap.name,
    );
    const owner = `the bitmap table of ${JSON.stringify(bitmap.name)}`;
    for (let i = 0; i < table.length; i++) {
      const e = table[i] ?? ZERO_CLUSTER;
      if (e !== ZERO_CLUSTER && e !== ONES_CLUSTER) {
        this.clusters?.claim(
          e,
          this.header.clusterSize,
          `entry ${i} of ${owner}`,
          bitmap.tableOffset + i * 8,
        );
      }
    }
    this.tables.set(bitmap.index, table);
    return table;
  }
}

async function readAt(source: ByteSource, position: number, length: number): Promise<Uint8Array> {
  const buf = new Uint8Array(length);
  if (length > 0) await source.read(buf, position);
  return buf;
}
