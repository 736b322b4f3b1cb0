import { BitferryError, UsageError } from "../util/errors.js";

/** Where in the file a problem was found, so that a message (and a program) can point at the bytes. */
export interface Qcow2Location {
  /** Byte offset in the image file of the field or structure at fault. */
  offset?: number;
  /** The field's name as the qcow2 specification spells it, for example `bitmap_table_size`. */
  field?: string;
}

/** Base of every error the qcow2 reader raises about an image's contents. */
export abstract class Qcow2Error extends BitferryError {
  readonly offset: number | undefined;
  readonly field: string | undefined;

  constructor(message: string, where: Qcow2Location = {}, options?: ErrorOptions) {
    super(withLocation(message, where), options);
    this.offset = where.offset;
    this.field = where.field;
  }
}

function withLocation(message: string, where: Qcow2Location): string {
  const { field, offset } = where;
  const at = offset === undefined ? undefined : `byte ${offset}, 0x${offset.toString(16)}`;
  if (field !== undefined && at !== undefined) return `${message} (field ${field} at ${at})`;
  if (field !== undefined) return `${message} (field ${field})`;
  if (at !== undefined) return `${message} (at ${at})`;
  return message;
}

/** The file is not a qcow2 image at all (wrong magic, or too short to carry one). */
export class NotQcow2Error extends Qcow2Error {
  readonly code = "NOT_QCOW2";
}

/** The image breaks the qcow2 specification (or a rule QEMU enforces when it loads bitmaps). */
export class Qcow2CorruptError extends Qcow2Error {
  readonly code = "QCOW2_CORRUPT";
}

/**
 * The image is valid by the specification but uses something neither QEMU nor bitferry can load (an unknown
 * version or incompatible feature, a granularity or name length beyond QEMU's limits, bitmap extra data).
 */
export class Qcow2UnsupportedError extends Qcow2Error {
  readonly code = "QCOW2_UNSUPPORTED";
}

/** A result would exceed a limit the caller set (for example the number of extents to collect). */
export class Qcow2LimitError extends Qcow2Error {
  readonly code = "QCOW2_LIMIT";
}

/** Reading the file failed below the format (an I/O error, or the file shrank while being read). */
export class ImageReadError extends Qcow2Error {
  readonly code = "IMAGE_READ_FAILED";
}

/** The image cannot be opened: missing, a directory, or not readable. Exit status 2, like any bad argument. */
export class ImageAccessError extends UsageError {
  override readonly code: "IMAGE_NOT_FOUND" | "IMAGE_UNREADABLE";

  constructor(
    readonly path: string,
    cause: unknown,
  ) {
    const errno = (cause as NodeJS.ErrnoException | undefined)?.code;
    const missing = errno === "ENOENT" || errno === "ENOTDIR";
    super(
      missing
        ? `image ${path} does not exist`
        : errno === "EISDIR"
          ? `image ${path} is a directory, not an image file`
          : errno === "EACCES" || errno === "EPERM"
            ? `image ${path} is not readable (permission denied); run as a user that can read it`
            : `cannot open image ${path}: ${cause instanceof Error ? cause.message : String(cause)}`,
      { cause },
    );
    this.code = missing ? "IMAGE_NOT_FOUND" : "IMAGE_UNREADABLE";
  }
}

/** `--bitmap NAME` names a bitmap the image does not have. A usage error: exit status 2. */
export class BitmapNotFoundError extends UsageError {
  override readonly code = "BITMAP_NOT_FOUND";

  constructor(
    readonly bitmap: string,
    readonly available: readonly string[],
    reason?: string,
  ) {
    super(
      `image has no bitmap named ${JSON.stringify(bitmap)}` +
        (reason !== undefined
          ? `: ${reason}`
          : available.length > 0
            ? `; it has ${available.map((n) => JSON.stringify(n)).join(", ")}`
            : "; it has no bitmaps"),
    );
  }
}
