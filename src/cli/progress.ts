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
  private lastMessage: string | undefined;

  constructor(
    private readonly out: NodeJS.WritableStream & { isTTY?: boolean },
    private readonly intervalMs = 2000,
  ) {}

  readonly update = (e: ProgressEvent): void => {
    const text = describe(e);
    if (this.out.isTTY) {
      // Messages (what bitferry decided, such as raising downtime-limit) stay on screen; the bar is redrawn below.
      const { message, ...rest } = e;
      if (message !== undefined && message !== this.lastMessage) {
        this.out.write(`\r\x1b[2K${describe(rest, false)} - ${message}\n`);
        this.lastMessage = message;
      }
      this.out.write(`\r\x1b[2K${describe(rest, true)}`);
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

const BAR_WIDTH = 24;

/** A text bar for a known fraction: `[#########-----------]  45%`. */
export function bar(done: number, total: number): string {
  const f = total > 0 ? Math.min(1, Math.max(0, done / total)) : 0;
  const n = Math.round(f * BAR_WIDTH);
  return `[${"#".repeat(n)}${"-".repeat(BAR_WIDTH - n)}] ${String(Math.floor(f * 100)).padStart(3)}%`;
}

/** Where the bitmaps are, in words: they travel only at the switchover (or after it, in postcopy). */
function bitmapPhase(e: ProgressEvent): string | undefined {
  switch (e.phase) {
    case "copy":
    case "migrating":
      return e.bitmapBytes === undefined
        ? undefined
        : `bitmaps: ${formatBytes(e.bitmapBytes)} wait for the switchover`;
    case "switchover":
      return e.status === "pre-switchover" ? "bitmaps: source stopped, sent next" : "bitmaps: on the wire";
    case "completing":
      return "bitmaps: arriving";
    case "verifying":
      return "bitmaps: verifying";
    case "plan":
    case "setup":
    case "repair":
    case "done":
      return undefined;
  }
}

function describe(e: ProgressEvent, withBar = false): string {
  const t = `[${(e.elapsedMs / 1000).toFixed(1)}s]`;
  const parts = [t, e.phase];
  if (e.status) parts.push(`(${e.status})`);
  if (withBar && e.copyTotalBytes !== undefined) parts.push(bar(e.copiedBytes ?? 0, e.copyTotalBytes));
  else if (withBar && e.transferredBytes !== undefined && e.remainingBytes !== undefined) {
    parts.push(bar(e.transferredBytes, e.transferredBytes + e.remainingBytes));
  }
  if (e.copyTotalBytes !== undefined)
    parts.push(`copied ${formatBytes(e.copiedBytes ?? 0)} of ${formatBytes(e.copyTotalBytes)}`);
  if (e.transferredBytes !== undefined) parts.push(`sent ${formatBytes(e.transferredBytes)}`);
  if (e.remainingBytes !== undefined) parts.push(`remaining ${formatBytes(e.remainingBytes)}`);
  const bitmaps = bitmapPhase(e);
  if (bitmaps) parts.push(`· ${bitmaps}`);
  if (e.message) parts.push(`- ${e.message}`);
  return parts.join(" ");
}
