export * from "./errors.js";
export * from "./inspect.js";
export { Qcow2Reader, DEFAULT_CHUNK_BYTES } from "./reader.js";
export type {
  BitmapData,
  Qcow2Warning,
  Qcow2WarningCode,
  ReadBitmapOptions,
  ReaderOptions,
} from "./reader.js";
export { BufferSource, FileSource } from "./source.js";
export type { ByteSource } from "./source.js";
export { BitmapScanner, scanStream } from "./bits.js";
export type { RunSink, ScanOptions, ScanResult } from "./bits.js";
export type { Qcow2Header } from "./header.js";
export type { BitmapDirEntry, BitmapGeometry } from "./directory.js";
export type { BitmapsExtension, HeaderExtension } from "./extensions.js";
