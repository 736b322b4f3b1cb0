/** What a running migration reports as it goes; the CLI draws it, a library user may log it. */
export type RunPhase =
  "plan" | "setup" | "copy" | "migrating" | "switchover" | "completing" | "verifying" | "repair" | "done";

export interface ProgressEvent {
  phase: RunPhase;
  /** QEMU's migration status on the source, when known. */
  status?: string;
  /** RAM bytes sent and still to send (the bitmaps follow at the switchover). */
  transferredBytes?: number | undefined;
  remainingBytes?: number | undefined;
  /** Bitmap bytes the switchover (or postcopy) will carry. */
  bitmapBytes?: number;
  /** Storage copy progress (`--copy-storage`). */
  copiedBytes?: number;
  copyTotalBytes?: number;
  elapsedMs: number;
  message?: string;
}

export type ProgressListener = (event: ProgressEvent) => void;
