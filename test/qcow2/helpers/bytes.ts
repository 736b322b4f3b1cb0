import { Qcow2Reader } from "../../../src/qcow2/reader.js";
import { BufferSource, type ByteSource } from "../../../src/qcow2/source.js";
import type { BitmapDirEntry } from "../../../src/qcow2/directory.js";
import type { Qcow2Header } from "../../../src/qcow2/header.js";
import type { BitmapsExtension } from "../../../src/qcow2/extensions.js";

/**
 * A source that records every read and refuses (and remembers) any read outside the file, so that tests can
 * prove the reader never asks for bytes that are not there.
 */
export class InstrumentedSource implements ByteSource {
  readonly reads: { position: number; length: number }[] = [];
  readonly violations: string[] = [];
  bytesRead = 0;
  largestRead = 0;

  constructor(readonly bytes: Uint8Array) {}

  get size(): number {
    return this.bytes.byteLength;
  }

  read(buf: Uint8Array, position: number): Promise<void> {
    const length = buf.byteLength;
    if (!Number.isSafeInteger(position) || position < 0 || position + length > this.bytes.byteLength) {
      const v = `read of ${length} bytes at ${position} outside a ${this.bytes.byteLength}-byte file`;
      this.violations.push(v);
      return Promise.reject(new RangeError(v));
    }
    this.reads.push({ position, length });
    this.bytesRead += length;
    this.largestRead = Math.max(this.largestRead, length);
    buf.set(this.bytes.subarray(position, position + length));
    return Promise.resolve();
  }

  /** One past the last byte any read touched. */
  get highestByte(): number {
    return this.reads.reduce((m, r) => Math.max(m, r.position + r.length), 0);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

export function setU8(buf: Uint8Array, at: number, v: number): void {
  new DataView(buf.buffer, buf.byteOffset, buf.byteLength).setUint8(at, v);
}
export function setU16(buf: Uint8Array, at: number, v: number): void {
  new DataView(buf.buffer, buf.byteOffset, buf.byteLength).setUint16(at, v, false);
}
export function setU32(buf: Uint8Array, at: number, v: number): void {
  new DataView(buf.buffer, buf.byteOffset, buf.byteLength).setUint32(at, v >>> 0, false);
}
export function setU64(buf: Uint8Array, at: number, v: bigint | number): void {
  new DataView(buf.buffer, buf.byteOffset, buf.byteLength).setBigUint64(at, BigInt(v), false);
}
export function getU32(buf: Uint8Array, at: number): number {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength).getUint32(at, false);
}
export function getU64(buf: Uint8Array, at: number): bigint {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength).getBigUint64(at, false);
}

export interface EntryLayout {
  entry: BitmapDirEntry;
  /** Raw table entries, read straight from the bytes (not through the reader's table parser). */
  table: bigint[];
  /** File offsets of the data clusters the table points at. */
  dataClusters: number[];
}

export interface Layout {
  header: Qcow2Header;
  bitmaps: Extract<BitmapsExtension, { kind: "present" }>;
  entries: EntryLayout[];
}

/** Where the structures of a valid image with bitmaps are, so that tests can patch them. */
export async function layoutOf(bytes: Uint8Array): Promise<Layout> {
  const reader = await Qcow2Reader.open(new BufferSource(bytes));
  const ext = reader.bitmapsExtension;
  if (ext.kind !== "present") throw new Error(`expected an image with bitmaps, got ${ext.kind}`);
  const entries = reader.bitmaps.map((entry) => {
    const table: bigint[] = [];
    for (let i = 0; i < entry.tableSize; i++) table.push(getU64(bytes, entry.tableOffset + i * 8));
    const dataClusters = table.map((e) => Number(e & 0x00fffffffffffe00n)).filter((o) => o !== 0);
    return { entry, table, dataClusters };
  });
  return { header: reader.header, bitmaps: ext, entries };
}
