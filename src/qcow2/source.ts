import { open, readFile, type FileHandle } from "node:fs/promises";
import { ImageAccessError, ImageReadError } from "./errors.js";

/**
 * Random access to the bytes of an image. The reader never asks for a byte at or past `size`; a source may
 * assume so, and the tests hold it to that through an instrumented source.
 */
export interface ByteSource {
  readonly size: number;
  /** Fills `buf` with the bytes at [position, position + buf.byteLength), or throws. */
  read(buf: Uint8Array, position: number): Promise<void>;
  close(): Promise<void>;
}

/** An image already in memory (tests, fuzzing, embedders holding a buffer). */
export class BufferSource implements ByteSource {
  constructor(readonly bytes: Uint8Array) {}

  get size(): number {
    return this.bytes.byteLength;
  }

  read(buf: Uint8Array, position: number): Promise<void> {
    if (position < 0 || position + buf.byteLength > this.bytes.byteLength) {
      return Promise.reject(
        new RangeError(
          `read of ${buf.byteLength} bytes at ${position} outside ${this.bytes.byteLength} bytes`,
        ),
      );
    }
    buf.set(this.bytes.subarray(position, position + buf.byteLength));
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/**
 * A file read with positional reads: opened read-only and without any lock, so that an image a running QEMU
 * holds (QEMU takes only advisory byte-range locks) can be inspected.
 */
export class FileSource implements ByteSource {
  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    readonly size: number,
  ) {}

  static async open(path: string): Promise<FileSource> {
    let fh: FileHandle;
    try {
      fh = await open(path, "r");
    } catch (err) {
      throw new ImageAccessError(path, err);
    }
    try {
      const st = await fh.stat();
      if (st.isDirectory()) throw Object.assign(new Error("is a directory"), { code: "EISDIR" });
      let size: number;
      if (st.isFile()) size = st.size;
      else if (st.isBlockDevice()) size = await blockDeviceSize(st.rdev);
      else {
        throw new Error("not a regular file or block device");
      }
      return new FileSource(path, fh, size);
    } catch (err) {
      await fh.close();
      throw new ImageAccessError(path, err);
    }
  }

  async read(buf: Uint8Array, position: number): Promise<void> {
    let done = 0;
    while (done < buf.byteLength) {
      let n: number;
      try {
        ({ bytesRead: n } = await this.fh.read(buf, done, buf.byteLength - done, position + done));
      } catch (err) {
        throw new ImageReadError(`reading ${this.path} failed: ${(err as Error).message}`, {
          offset: position + done,
        });
      }
      if (n === 0) {
        throw new ImageReadError(
          `${this.path} ended at byte ${position + done} while ${this.size} bytes were expected; ` +
            `the file changed while it was being read`,
          { offset: position + done },
        );
      }
      done += n;
    }
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}

/** A block device's size from sysfs (an fstat of a device reports 0). Linux's dev_t encoding. */
async function blockDeviceSize(rdev: number): Promise<number> {
  const dev = BigInt(rdev);
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  const sectors = Number((await readFile(`/sys/dev/block/${major}:${minor}/size`, "utf8")).trim());
  if (!Number.isSafeInteger(sectors)) throw new Error("cannot determine the block device's size");
  return sectors * 512;
}
