import { StringDecoder } from "node:string_decoder";
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
  /** The unfinished line, decoded as its chunks arrive (a string of pieces V8 joins once, in JSON.parse). */
  private text = "";
  private partBytes = 0;
  /** Holds a character's bytes cut by a chunk boundary until the rest arrives. */
  private readonly utf8 = new StringDecoder("utf8");

  constructor(private readonly maxLineBytes = DEFAULT_MAX_LINE_BYTES) {}

  /** Feeds one chunk and returns the complete lines it finished, without their line ends. */
  push(chunk: Buffer): string[] {
    const lines: string[] = [];
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(LF, start);
      if (nl === -1) break;
      if (this.partBytes + (nl - start) > this.maxLineBytes) this.overflow();
      // end(): a character left cut at the line end is a replacement character, as toString makes it, not a
      // prefix of the next line.
      let line = this.text + this.utf8.write(chunk.subarray(start, nl)) + this.utf8.end();
      this.text = "";
      this.partBytes = 0;
      if (line.charCodeAt(line.length - 1) === CR) line = line.slice(0, -1);
      if (line.length > 0) lines.push(line);
      start = nl + 1;
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      if (this.partBytes + rest.length > this.maxLineBytes) this.overflow();
      this.text += this.utf8.write(rest);
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
    this.text = "";
    this.utf8.end();
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
