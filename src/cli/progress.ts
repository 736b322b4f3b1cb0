import type { ProgressEvent } from "../migrate/progress.js";
import { formatBytes } from "../util/format.js";

/**
 * Draws run progress on stderr: one live line on a terminal, plain lines every few seconds (and at every phase
 * change) otherwise, so logs of non-interactive runs stay readable.
 */
export class ProgressReporter {
  private lastPhase = "";
  private lastStatus: string | undefined;
  private lastLine = 0;
  private live = false;

  constructor(
    private readonly out: NodeJS.WritableStream & { isTTY?: boolean },
    private readonly intervalMs = 2000,
  ) {}

  readonly update = (e: ProgressEvent): void => {
    const text = describe(e);
    if (this.out.isTTY) {
      this.out.write(`\r\x1b[2K${text}`);
      this.live = true;
      if (e.phase === "done") this.end();
      return;
    }
    const now = Date.now();
    const changed = e.phase !== this.lastPhase || e.status !== this.lastStatus;
    if (changed || e.message !== undefined || now - this.lastLine >= this.intervalMs) {
      this.out.write(`${text}\n`);
      this.lastLine = now;
    }
    this.lastPhase = e.phase;
    this.lastStatus = e.status;
  };

  /** Ends the live line so that what follows starts on a fresh one. */
  end(): void {
    if (this.live) {
      this.out.write("\n");
      this.live = false;
    }
  }
}

function describe(e: ProgressEvent): string {
  const t = `[${(e.elapsedMs / 1000).toFixed(1)}s]`;
  const parts = [t, e.phase];
  if (e.status) parts.push(`(${e.status})`);
  if (e.copyTotalBytes !== undefined)
    parts.push(`copied ${formatBytes(e.copiedBytes ?? 0)} of ${formatBytes(e.copyTotalBytes)}`);
  if (e.transferredBytes !== undefined) parts.push(`sent ${formatBytes(e.transferredBytes)}`);
  if (e.remainingBytes !== undefined) parts.push(`remaining ${formatBytes(e.remainingBytes)}`);
  if (e.bitmapBytes !== undefined && e.phase === "migrating")
    parts.push(`bitmaps ${formatBytes(e.bitmapBytes)} at switchover`);
  if (e.message) parts.push(`- ${e.message}`);
  return parts.join(" ");
}
