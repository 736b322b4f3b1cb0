import { QmpProtocolError } from "./errors.js";

/** QEMU's schema reply alone is 200 KB; 16 MiB leaves room for huge graphs while bounding memory. */
export const DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024;

const LF = 0x0a;
const CR = 0x0d;

/**
 * Splits a byte stream into lines (QEMU ends each message with CRLF). Pure: no I/O, so it is tested on bytes.
 * Memory stays bounded by `maxLineBytes`: a longer line is a protocol error, not an allocation.
 */
export class LineDecoder {
  private parts: Buffer[] = [];
  private partBytes = 0;

  constructor(private readonly maxLineBytes = DEFAULT_MAX_LINE_BYTES) {}

  /** Feeds one chunk and returns the complete lines it finished, without their line ends. */
  push(chunk: Buffer): string[] {
    const lines: string[] = [];
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(LF, start);
      if (nl === -1) break;
      let piece = chunk.subarray(start, nl);
      if (this.partBytes + piece.length > this.maxLineBytes) this.overflow();
      if (this.parts.length > 0) {
        this.parts.push(piece);
        piece = Buffer.concat(this.parts, this.partBytes + piece.length);
        this.parts = [];
        this.partBytes = 0;
      }
      const end = piece.length > 0 && piece[piece.length - 1] === CR ? piece.length - 1 : piece.length;
      if (end > 0) lines.push(piece.toString("utf8", 0, end));
      start = nl + 1;
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      if (this.partBytes + rest.length > this.maxLineBytes) this.overflow();
      // Copy: the caller may reuse the chunk's memory.
      this.parts.push(Buffer.from(rest));
      this.partBytes += rest.length;
    }
    return lines;
  }

  /** Bytes of an unfinished line held back. */
  get pending(): number {
    return this.partBytes;
  }

  private overflow(): never {
    const held = this.partBytes;
    this.parts = [];
    this.partBytes = 0;
    throw new QmpProtocolError(
      `QMP line longer than ${this.maxLineBytes} bytes (already holding ${held} bytes of it)`,
    );
  }
}

/** One command on the wire. QEMU accepts LF alone. */
export function encodeMessage(message: object): Buffer {
  return Buffer.from(`${JSON.stringify(message)}\n`, "utf8");
}
