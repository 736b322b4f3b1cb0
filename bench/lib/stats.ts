/** Sample summaries: every figure the benchmarks report is a median with its spread, from one run. */

export interface Summary {
  /** How many timed samples (warm-up runs excluded). */
  n: number;
  median: number;
  min: number;
  max: number;
}

export function summarize(samples: readonly number[]): Summary {
  if (samples.length === 0) return { n: 0, median: NaN, min: NaN, max: NaN };
  const s = [...samples].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  const median = s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  return { n: s.length, median, min: s[0]!, max: s[s.length - 1]! };
}

/** a ÷ b of two medians; NaN when either is missing, so a broken run never reads as a met target. */
export function ratio(a: Summary | undefined, b: Summary | undefined): number {
  if (!a || !b || a.n === 0 || b.n === 0 || b.median === 0) return NaN;
  return a.median / b.median;
}

export interface Contender<T> {
  id: string;
  /** One timed run; returns the sample (usually ms) plus anything the caller wants to keep. */
  run: (iteration: number) => Promise<{ value: number; extra?: T }>;
}

/**
 * Runs contenders in alternation (A B A B ...) after a shared warm-up, so that drift on the machine (page cache,
 * CPU frequency, another process) lands on both sides of every ratio instead of on one.
 */
export async function interleave<T>(
  contenders: readonly Contender<T>[],
  options: { warmup: number; runs: number },
): Promise<Map<string, { samples: number[]; extras: T[] }>> {
  const out = new Map<string, { samples: number[]; extras: T[] }>();
  for (const c of contenders) out.set(c.id, { samples: [], extras: [] });
  for (let i = 0; i < options.warmup + options.runs; i++) {
    // Alternate the order too: the first of a pair sometimes pays for what the second reuses.
    const order = i % 2 === 0 ? contenders : [...contenders].reverse();
    for (const c of order) {
      const r = await c.run(i);
      if (i < options.warmup) continue;
      const slot = out.get(c.id)!;
      slot.samples.push(r.value);
      if (r.extra !== undefined) slot.extras.push(r.extra);
    }
  }
  return out;
}

export function fmtMs(ms: number, digits?: number): string {
  if (!Number.isFinite(ms)) return "n/a";
  const d = digits ?? (ms < 10 ? 2 : ms < 100 ? 1 : 0);
  return ms.toFixed(d);
}

export function fmtRatio(r: number): string {
  return Number.isFinite(r) ? `${r.toFixed(2)}×` : "n/a";
}

export function fmtBytes(n: number): string {
  if (!Number.isFinite(n)) return "n/a";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(u === 0 || Number.isInteger(v) ? 0 : 1)} ${units[u]!}`;
}

export const now = (): number => performance.now();
