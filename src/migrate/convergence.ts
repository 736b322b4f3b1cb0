import { qemuPendingBytes } from "../policy/convergence.js";
import type { MigrationInfo } from "../qemu/replies.js";
import type { RunContext } from "./context.js";
import { RunError } from "./errors.js";
import { refused } from "./sides.js";

/**
 * The convergence guard of DESIGN section 4 item 8: precopy that only bitmap data holds back gets a higher
 * `downtime-limit` within --max-downtime (step "downtime-limit", whose clean puts the user's value back), or a
 * clean NOT_CONVERGING with the numbers and the ways out. It never switches to postcopy on its own.
 */
export class ConvergenceGuard {
  private since: number | undefined;
  private lastRaise = 0;

  constructor(private readonly ctx: RunContext) {}

  /** The switchover began: the stall clock starts again. */
  reset(): void {
    this.since = undefined;
  }

  /** One `active` poll of the source. Throws NOT_CONVERGING when the run has to give up. */
  async check(info: MigrationInfo): Promise<void> {
    const now = Date.now();
    if (!this.stalled(info, now)) return;
    if (await this.unstall(info, now - this.lastRaise)) this.lastRaise = Date.now();
    this.since = undefined;
  }

  /**
   * Precopy is stuck on bitmap data when, for 1.5 s in a row, the RAM still to send would fit the downtime but
   * QEMU keeps iterating: it counts the bitmaps as pending and they exceed its threshold (reference R25). Judged by
   * time, not by QEMU's pass counter, which 7.2 advances on every iteration and 10.0 does not.
   */
  private stalled(info: MigrationInfo, now: number): boolean {
    const ram = info.ram;
    const seen = this.ctx.seen;
    const limit = seen.downtimeRaised ?? seen.downtimeOriginal ?? 300;
    const mbps = ram?.mbps ?? 0;
    const remaining = ram?.remaining ?? 0;
    const ramMs = remaining === 0 ? 0 : mbps > 0 ? ((remaining * 8) / (mbps * 1e6)) * 1000 : Infinity;
    if (ramMs > limit) {
      this.since = undefined;
      return false;
    }
    this.since ??= now;
    return now - this.since >= 1500;
  }

  /** Raises downtime-limit within --max-downtime (true), waits a little longer at the bound (false), or gives up. */
  private async unstall(info: MigrationInfo, sinceLastRaiseMs: number): Promise<boolean> {
    const ctx = this.ctx;
    const seen = ctx.seen;
    const payload = ctx.plan.payloadBytes;
    const mbps = Math.max(info.ram?.mbps ?? 0, 0.1);
    const current = seen.downtimeRaised ?? seen.downtimeOriginal ?? 300;
    // QEMU weighs the payload as one byte per granule (eight times what it sends), so that is what must fit.
    const neededMs = Math.ceil(((qemuPendingBytes(payload) * 8) / (mbps * 1e6)) * 1000);
    const numbers =
      `the bitmaps add ${payload} bytes that QEMU sends only at the switchover (and counts as ${qemuPendingBytes(payload)} while it decides), and it estimates the link at ` +
      `${mbps.toFixed(1)} Mbit/s, so it needs a downtime-limit of about ${neededMs} ms (now ${current} ms)`;
    const max = ctx.o.maxDowntimeMs;
    if (max === undefined) {
      throw new RunError(
        "NOT_CONVERGING",
        `precopy cannot converge: ${numbers}. Allow a longer switchover with --max-downtime ${Math.max(neededMs * 2, current + 1)}` +
          (this.postcopyAllowed() ? ", or send the bitmaps after the switchover with --postcopy" : ""),
      );
    }
    if (current >= max) {
      if (sinceLastRaiseMs < 3000) return false;
      throw new RunError(
        "NOT_CONVERGING",
        `precopy cannot converge even with downtime-limit at --max-downtime ${max} ms: ${numbers}` +
          (this.postcopyAllowed() ? "; --postcopy would send the bitmaps after the switchover" : ""),
      );
    }
    const next = Math.min(max, Math.max(neededMs * 2, current * 2));
    ctx.progress("migrating", {
      message: `bitmap data holds the switchover back: raising downtime-limit ${current} → ${next} ms (bounded by --max-downtime ${max})`,
    });
    const raise = (): Promise<void> =>
      ctx.on(ctx.src, (m) => m.setMigrationParameters({ "downtime-limit": next }), "raising downtime-limit");
    const first = seen.downtimeRaised === undefined;
    const original = seen.downtimeOriginal;
    if (first && original !== undefined) {
      // Recorded before the first raise is sent: QEMU takes it even if --timeout or Ctrl-C fires first.
      await ctx.steps.sent(
        {
          name: "downtime-limit",
          side: "source",
          what: `the source's downtime-limit (raised from ${original} ms)`,
          clean: () => ctx.src.undo((m) => m.setMigrationParameters({ "downtime-limit": original })),
        },
        raise,
        refused,
      );
    } else {
      await raise();
    }
    seen.downtimeRaised = next;
    return true;
  }

  private postcopyAllowed(): boolean {
    return new Set(this.ctx.rows.map((b) => b.source.node)).size === 1;
  }
}
