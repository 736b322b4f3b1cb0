/**
 * The bitmap payload and whether QEMU will ever complete a precopy migration carrying it (reference R25): QEMU
 * sends bitmap data only in the final phase and switches over only when everything pending fits its threshold,
 * its bandwidth estimate times `downtime-limit`.
 */

/** Bytes of bitmap data one bitmap puts on the wire: one bit per granule. */
export function bitmapPayloadBytes(nodeSize: number, granularity: number): number {
  return Math.ceil(nodeSize / (granularity * 8));
}

/**
 * What QEMU believes is pending for a bitmap payload: its `dirty_bitmap_state_pending` counts one byte per granule,
 * eight times the bytes it really sends, and compares that with its threshold (7.2 to 10.2).
 */
export function qemuPendingBytes(payloadBytes: number): number {
  return payloadBytes * 8;
}

/**
 * With no guest RAM to move, QEMU's bandwidth estimate comes from a trickle of section headers: observed between
 * 2 and 28 Mbit/s (QEMU 7.2 and 10.0, `-machine none`), highest in the first iterations where the switchover is
 * decided. 10 Mbit/s separates what converged in the lab (24 KiB of bitmaps) from what did not (192 KiB).
 */
export const NO_RAM_ESTIMATE_MBPS = 10;

export interface ConvergenceInput {
  payloadBytes: number;
  downtimeLimitMs: number;
  /** `max-bandwidth` in bytes per second: QEMU's estimate never exceeds what it is allowed to send. */
  maxBandwidth: number | undefined;
  guestMemoryBytes: number | undefined;
}

export interface ConvergencePrediction {
  /** The bandwidth QEMU must estimate to switch over at the current downtime-limit, in Mbit/s. */
  requiredMbps: number;
  /** What we expect QEMU to estimate, in Mbit/s. */
  expectedMbps: number;
  /** The downtime-limit at which the expected estimate would suffice, in ms. */
  neededDowntimeMs: number;
  mayNotConverge: boolean;
}

export function predictConvergence(input: ConvergenceInput): ConvergencePrediction {
  const bits = qemuPendingBytes(input.payloadBytes) * 8;
  const requiredMbps = bits / 1e6 / (Math.max(1, input.downtimeLimitMs) / 1000);
  const maxMbps =
    input.maxBandwidth !== undefined && input.maxBandwidth > 0 ? (input.maxBandwidth * 8) / 1e6 : Infinity;
  const expectedMbps = input.guestMemoryBytes === 0 ? NO_RAM_ESTIMATE_MBPS : Math.min(maxMbps, 10_000);
  const neededDowntimeMs = Math.ceil((bits / (expectedMbps * 1e6)) * 1000);
  return { requiredMbps, expectedMbps, neededDowntimeMs, mayNotConverge: requiredMbps > expectedMbps };
}

/** Time the payload adds to the downtime at a given link speed, in ms. */
export function addedDowntimeMs(payloadBytes: number, linkBitsPerSecond: number): number {
  return (payloadBytes * 8 * 1000) / linkBitsPerSecond;
}
