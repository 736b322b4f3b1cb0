import { createHash, type Hash } from "node:crypto";
import { endianness } from "node:os";

/** Called with each maximal run of set bits [startBit, endBit), in order; endBit never exceeds nbits. */
export type RunSink = (startBit: number, endBit: number) => void;

export interface ScanOptions {
  /** Also hash the first `hashBytes` bytes of the stream (SHA-256). */
  sha256?: boolean;
  onRun?: RunSink;
}

export interface ScanResult {
  /** Set bits among the first nbits (QEMU's `count` is this times the granularity). */
  setBits: number;
  /** Lowercase hex SHA-256 of the first hashBytes of the stream, when asked for. */
  sha256?: string;
}

const LITTLE_ENDIAN = endianness() === "LE";
const FILL_CHUNK = 64 * 1024;
let zeroFill: Uint8Array | undefined;
let onesFill: Uint8Array | undefined;

function popcount32(v: number): number {
  let w = v - ((v >>> 1) & 0x55555555);
  w = (w & 0x33333333) + ((w >>> 2) & 0x33333333);
  return Math.imul((w + (w >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24;
}

/**
 * Consumes a bitmap's data stream front to back, in chunks of any size: bit i is stream byte i >> 3, bit i & 7
 * (LSB first). Counts the set bits among the first `nbits`, reports runs of them (tail bits beyond nbits are
 * ignored), and hashes the first `hashBytes` bytes unmasked, as QEMU's x-debug-block-dirty-bitmap-sha256 does.
 * Memory use is constant whatever the bitmap's size.
 */
export class BitmapScanner {
  private pos = 0;
  private setBits = 0;
  private inRun = false;
  private runStart = 0;
  private readonly hash: Hash | undefined;
  private readonly onRun: RunSink | undefined;

  constructor(
    readonly nbits: number,
    readonly hashBytes: number,
    options: ScanOptions = {},
  ) {
    this.hash = options.sha256 ? createHash("sha256") : undefined;
    this.onRun = options.onRun;
  }

  /** Stream bytes consumed so far. */
  get bytesConsumed(): number {
    return this.pos / 8;
  }

  /** Consumes the next bytes of the stream. */
  feed(chunk: Uint8Array): void {
    this.hashPart(chunk);
    const startBit = this.pos;
    this.pos += chunk.byteLength * 8;
    if (startBit >= this.nbits) return;
    const usable = Math.min(chunk.byteLength, Math.ceil((this.nbits - startBit) / 8));
    const whole = usable & ~3;
    if (whole > 0) this.scanWords(wordsOf(chunk, whole), startBit);
    for (let b = whole; b < usable; b++) this.scanWord(chunk[b] ?? 0, startBit + b * 8, 8);
  }

  /** Consumes `byteCount` bytes that all equal 0x00 (ones = false) or 0xFF (ones = true) without materializing them. */
  fill(byteCount: number, ones: boolean): void {
    if (byteCount <= 0) return;
    if (this.hash !== undefined && this.pos / 8 < this.hashBytes) {
      const fill = ones
        ? (onesFill ??= new Uint8Array(FILL_CHUNK).fill(0xff))
        : (zeroFill ??= new Uint8Array(FILL_CHUNK));
      let left = Math.min(byteCount, this.hashBytes - this.pos / 8);
      while (left > 0) {
        const n = Math.min(left, FILL_CHUNK);
        this.hash.update(fill.subarray(0, n));
        left -= n;
      }
    }
    const start = this.pos;
    this.pos += byteCount * 8;
    if (start >= this.nbits) return;
    if (ones) {
      this.setBits += Math.min(this.pos, this.nbits) - start;
      if (!this.inRun) {
        this.inRun = true;
        this.runStart = start;
      }
    } else if (this.inRun) {
      this.endRun(start);
    }
  }

  finish(): ScanResult {
    if (this.inRun) this.endRun(this.nbits);
    const result: ScanResult = { setBits: this.setBits };
    if (this.hash !== undefined) result.sha256 = this.hash.digest("hex");
    return result;
  }

  private hashPart(chunk: Uint8Array): void {
    if (this.hash === undefined) return;
    const done = this.pos / 8;
    if (done >= this.hashBytes) return;
    this.hash.update(
      chunk.byteLength <= this.hashBytes - done ? chunk : chunk.subarray(0, this.hashBytes - done),
    );
  }

  private endRun(at: number): void {
    this.inRun = false;
    this.emit(this.runStart, at);
  }

  private emit(start: number, at: number): void {
    const end = Math.min(at, this.nbits);
    if (this.onRun !== undefined && end > start) this.onRun(start, end);
  }

  /**
   * The hot loop. Whole words below nbits only; the word that straddles nbits goes through scanWord, which masks.
   * Long stretches of 0x00000000 (outside a run) and 0xffffffff (inside one) are skipped in tight loops, and
   * run state lives in locals: this is what makes a 32 MiB bitmap a matter of milliseconds.
   */
  private scanWords(words: Uint32Array, startBit: number): void {
    const n = words.length;
    const full = Math.min(n, Math.max(0, Math.floor((this.nbits - startBit) / 32)));
    let setBits = this.setBits;
    let k = 0;
    if (this.onRun === undefined) {
      for (; k < full; k++) {
        const w = words[k] ?? 0;
        if (w !== 0) setBits += popcount32(w);
      }
      this.setBits = setBits;
    } else {
      let inRun = this.inRun;
      while (k < full) {
        if (inRun) {
          const from = k;
          while (k < full && words[k] === 0xffffffff) k++;
          setBits += (k - from) * 32;
        } else {
          while (k < full && words[k] === 0) k++;
        }
        if (k === full) break;
        // A word where the run state changes at least once.
        const w = words[k] ?? 0;
        const p = startBit + k * 32;
        setBits += popcount32(w);
        let x = inRun ? ~w >>> 0 : w;
        while (x !== 0) {
          const tz = 31 - Math.clz32(x & -x);
          if (inRun) this.emit(this.runStart, p + tz);
          else this.runStart = p + tz;
          inRun = !inRun;
          const above = tz === 31 ? 0 : (~0 << (tz + 1)) >>> 0;
          x = (inRun ? ~w & above : w & above) >>> 0;
        }
        k++;
      }
      this.inRun = inRun;
      this.setBits = setBits;
    }
    if (k < n) this.scanWord(words[k] ?? 0, startBit + k * 32, 32);
  }

  /** The general case: one word of `width` bits (8 or 32) starting at bit `p`, masked to nbits. */
  private scanWord(word: number, p: number, width: number): void {
    const valid = Math.min(width, this.nbits - p);
    if (valid <= 0) return;
    const w = valid >= 32 ? word >>> 0 : (word & (2 ** valid - 1)) >>> 0;
    const full = valid >= 32 ? 0xffffffff : 2 ** valid - 1;
    this.setBits += popcount32(w);
    // Walk the positions where the bit value changes relative to the current run state.
    let inRun = this.inRun;
    let x = inRun ? (~w & full) >>> 0 : w;
    while (x !== 0) {
      const tz = 31 - Math.clz32(x & -x);
      if (inRun) this.emit(this.runStart, p + tz);
      else this.runStart = p + tz;
      inRun = !inRun;
      const above = tz >= 31 ? 0 : (full & ~(2 ** (tz + 1) - 1)) >>> 0;
      x = inRun ? (~w & above) >>> 0 : (w & above) >>> 0;
    }
    this.inRun = inRun;
  }
}

/** A Uint32Array over the first `length` bytes (a multiple of 4) whose element k holds bits 32k..32k+31. */
function wordsOf(chunk: Uint8Array, length: number): Uint32Array {
  if (LITTLE_ENDIAN && chunk.byteOffset % 4 === 0)
    return new Uint32Array(chunk.buffer, chunk.byteOffset, length / 4);
  const copy = Buffer.alloc(length);
  copy.set(chunk.subarray(0, length));
  // On a big-endian host a u32 read of stream bytes must be byte-swapped to keep bit i at position i % 32.
  if (!LITTLE_ENDIAN) copy.swap32();
  return new Uint32Array(copy.buffer, copy.byteOffset, length / 4);
}

/** Convenience for whole in-memory streams (tests, small bitmaps). */
export function scanStream(
  stream: Uint8Array,
  nbits: number,
  hashBytes: number,
  options: ScanOptions = {},
): ScanResult {
  const s = new BitmapScanner(nbits, hashBytes, options);
  s.feed(stream);
  return s.finish();
}
