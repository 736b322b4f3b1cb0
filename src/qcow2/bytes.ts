import { Qcow2CorruptError, Qcow2UnsupportedError } from "./errors.js";

/**
 * Field access over a slice of the image. Every read names the field and the absolute file offset, so that a
 * violation found later can say where it is; values beyond Number's exact range become errors, never silently
 * rounded numbers.
 */
export class FieldReader {
  private readonly dv: DataView;

  constructor(
    readonly buf: Uint8Array,
    /** File offset of `buf[0]`. */
    readonly base: number,
  ) {
    this.dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  private need(at: number, size: number, field: string): void {
    if (at < 0 || at + size > this.buf.byteLength) {
      throw new Qcow2CorruptError(`the image ends inside field ${field}`, {
        offset: this.base + at,
        field,
      });
    }
  }

  u8(at: number, field: string): number {
    this.need(at, 1, field);
    return this.dv.getUint8(at);
  }

  u16(at: number, field: string): number {
    this.need(at, 2, field);
    return this.dv.getUint16(at, false);
  }

  u32(at: number, field: string): number {
    this.need(at, 4, field);
    return this.dv.getUint32(at, false);
  }

  u64(at: number, field: string): bigint {
    this.need(at, 8, field);
    return this.dv.getBigUint64(at, false);
  }

  /** A u64 that must fit in a safe integer (offsets, sizes); larger values are a format violation. */
  u64n(at: number, field: string, tooLarge: "corrupt" | "unsupported" = "corrupt"): number {
    const v = this.u64(at, field);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
      const Err = tooLarge === "corrupt" ? Qcow2CorruptError : Qcow2UnsupportedError;
      throw new Err(`${field} is ${v}, beyond what bitferry can address (2^53 - 1)`, {
        offset: this.base + at,
        field,
      });
    }
    return Number(v);
  }

  /** Absolute file offset of a position in this slice. */
  at(pos: number): number {
    return this.base + pos;
  }
}

export function roundUp(value: number, multiple: number): number {
  return Math.ceil(value / multiple) * multiple;
}

export function hex(value: number | bigint): string {
  return `0x${value.toString(16)}`;
}
