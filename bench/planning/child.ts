/**
 * One planning size, in a process of its own so that its peak memory is its own:
 *
 *   node --expose-gc build/bench/planning/child.js DISKS RUNS WARMUP   (compiled by bench/lib/build.ts)
 *
 * Prints one JSON line (PlanningChildResult) on stdout.
 */
import { PerformanceObserver } from "node:perf_hooks";
import { parseSnapshot, type QemuSnapshot } from "../../src/qemu/snapshot.js";
import { planFromSnapshots, type PlanResult } from "../../src/migrate/plan.js";
import { parsePolicy } from "../../src/policy/file.js";
import type { Policy } from "../../src/policy/types.js";
import { summarize, type Summary } from "../lib/stats.js";
import { syntheticCase } from "./synthetic.js";

export interface PlanningChildResult {
  disks: number;
  sourceNodes: number;
  bitmaps: number;
  /** parseSnapshot of both sides (the reply validation every live plan runs first), ms. */
  parseMs: Summary;
  /** planFromSnapshots (graph building, decisions, checks, mapping), ms of wall-clock time. */
  planMs: Summary;
  /** The same runs in CPU time of the process (GC threads included): less sensitive to a busy machine. */
  planCpuMs: Summary;
  /**
   * The same plans back to back without the full GC before each (wall-clock, ms): a forced GC leaves V8 a low limit
   * for its next marking, so the timed plans above run with incremental marking (and its write barrier) active;
   * these show the planning code without that. Shown beside the targets, not judged.
   */
  steadyMs?: Summary;
  /** Plans per timed sample (each sample is divided back to one plan). */
  batch: number;
  /** GC pause time inside the timed plans, per plan (PerformanceObserver "gc" entries), ms. */
  planGcMs: Summary;
  /** Plans run in all, warm-up included (to normalise a CPU profile of this process). */
  plansRun: number;
  /** Process peak RSS (resourceUsage().maxRSS), bytes. */
  peakRssBytes: number;
  /** RSS with the input loaded and collected, before the first plan, bytes. */
  inputRssBytes: number;
  /** Heap still held by one plan result after a full GC, bytes. */
  retainedHeapBytes: number;
  /** How the plan decided, to prove each size exercised the same rules. */
  rules: Record<string, number>;
  ok: boolean;
  errors: number;
  warnings: string[];
}

function gc(): void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (!g) throw new Error("run with --expose-gc");
  g();
}

const disks = Number(process.argv[2] ?? "200");
const runs = Number(process.argv[3] ?? "5");
const warmup = Number(process.argv[4] ?? "1");
/** Stop taking samples after this long (at least one is taken): a plan that grows faster than linearly must not hold the whole benchmark. */
const budgetMs = Number(process.argv[5] ?? "Infinity");

/**
 * The input, validated as a live plan validates the replies (timed). The raw replies are dropped then, as a live
 * plan drops them: a second copy of the input in the heap would be marked at every major GC of the plans.
 */
function readInput(): {
  src: QemuSnapshot;
  dst: QemuSnapshot;
  policy: Policy;
  sourceNodes: number;
  bitmaps: number;
  parseSamples: number[];
} {
  const c = syntheticCase(disks);
  const parseSamples: number[] = [];
  let src = parseSnapshot(c.source);
  let dst = parseSnapshot(c.destination);
  for (let i = 0; i < warmup + runs; i++) {
    const t0 = performance.now();
    src = parseSnapshot(c.source);
    dst = parseSnapshot(c.destination);
    if (i >= warmup) parseSamples.push(performance.now() - t0);
  }
  const policy = parsePolicy(c.policyJson, "policy.json");
  return { src, dst, policy, sourceNodes: c.sourceNodes, bitmaps: c.bitmaps, parseSamples };
}

const { src, dst, policy, sourceNodes, bitmaps, parseSamples } = readInput();
gc();
const inputRss = process.memoryUsage().rss;
const heap0 = process.memoryUsage().heapUsed;

const planSamples: number[] = [];
const cpuSamples: number[] = [];
// A sample of a small size is several plans back to back (divided back to one plan), so that every sample covers
// about as much work as one plan of 2,000 disks: a single 2,000-bitmap plan lasts a few milliseconds, and whether
// a young-generation GC happens to fall inside it would decide its median.
const batch = Math.max(1, Math.ceil(20_000 / bitmaps));
// GC pauses inside the timed plans: garbage collection is where planning's time goes as it grows.
const gcEntries: { start: number; ms: number }[] = [];
const gcObserver = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gcEntries.push({ start: e.startTime, ms: e.duration });
});
gcObserver.observe({ entryTypes: ["gc"] });
const windows: { from: number; to: number }[] = [];
/**
 * `batch` plans; only the last result is returned. The others are never stored in a variable: the interpreter keeps
 * a variable's last value in its register until it is written again, so a result held in one would still be alive
 * while the next plan runs, and every young-generation GC in that plan would copy it.
 */
function planBatch(): PlanResult {
  for (let k = 1; k < batch; k++) planFromSnapshots(src, dst, { policy });
  return planFromSnapshots(src, dst, { policy });
}
let last: PlanResult | undefined;
let plansRun = 0;
const loopStart = performance.now();
for (let i = 0; i < warmup + runs; i++) {
  if (windows.length > 0 && performance.now() - loopStart > budgetMs) break;
  // A warm-up plan that already takes a quarter of the budget: go straight to the timed ones.
  if (i < warmup && i > 0 && performance.now() - loopStart > budgetMs / 4) i = warmup;
  last = undefined;
  gc();
  // The full GC collects the hidden classes of the planner's helper objects (no instance outlives a plan), and V8
  // then throws away every optimised function that checked for them (`--trace-deopt`: "weak objects", about 20
  // functions at each GC). A plan timed right after it would run half in the interpreter and measure V8
  // recompiling: as many untimed plans first as a sample holds, as a long-lived process that plans again is warm.
  for (let k = 0; k < batch; k++) planFromSnapshots(src, dst, { policy });
  plansRun += batch;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  // Only the batch's last result is kept (to be checked below): holding each plan's result while the next one
  // runs would double what every young-generation GC inside the sample copies, and a caller planning again drops it.
  last = planBatch();
  const t1 = performance.now();
  plansRun += batch;
  const c1 = process.cpuUsage(c0);
  if (i >= warmup) {
    planSamples.push((t1 - t0) / batch);
    cpuSamples.push((c1.user + c1.system) / 1000 / batch);
    windows.push({ from: t0, to: t1 });
  }
}
// Read before the plans back to back below, which hold more garbage at once: the peak is the timed plans'.
const peakRssBytes = process.resourceUsage().maxRSS * 1024;
// Steady state: the same plans back to back, no forced GC in between (as many as were timed, within the budget).
const steadySamples: number[] = [];
const steadyStart = performance.now();
while (steadySamples.length < planSamples.length) {
  if (steadySamples.length > 0 && performance.now() - steadyStart > budgetMs / 2) break;
  const t0 = performance.now();
  last = undefined;
  last = planBatch();
  steadySamples.push((performance.now() - t0) / batch);
}
// The observer is told about GCs asynchronously.
await new Promise((r) => setTimeout(r, 100));
gcObserver.disconnect();
const gcSamples = windows.map(
  (w) => gcEntries.filter((e) => e.start >= w.from && e.start <= w.to).reduce((a, e) => a + e.ms, 0) / batch,
);
gc();
const retained = process.memoryUsage().heapUsed - heap0;
if (!last) throw new Error("no plan");
const rules: Record<string, number> = {};
for (const b of last.plan.bitmaps) rules[b.rule] = (rules[b.rule] ?? 0) + 1;

const result: PlanningChildResult = {
  disks,
  sourceNodes,
  bitmaps: last.plan.bitmaps.length,
  parseMs: summarize(parseSamples),
  planMs: summarize(planSamples),
  planCpuMs: summarize(cpuSamples),
  steadyMs: summarize(steadySamples),
  batch,
  planGcMs: summarize(gcSamples),
  plansRun,
  peakRssBytes,
  inputRssBytes: inputRss,
  retainedHeapBytes: retained,
  rules,
  ok: last.plan.ok,
  errors: last.plan.errors.length,
  warnings: [...new Set(last.plan.warnings.map((w) => w.code))],
};
process.stdout.write(`${JSON.stringify(result)}\n`);
