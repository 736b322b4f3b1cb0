import { spawn } from "node:child_process";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import type { CompiledTree } from "../lib/build.js";
import { selfTimes, summarizeProfile, type ProfileSummary } from "../lib/cpuprofile.js";
import { load1 } from "../lib/machine.js";
import { ratio } from "../lib/stats.js";
import type { PlanningChildResult } from "./child.js";

/** Per size: stop sampling after this long (at least one sample). */
const SIZE_BUDGET_MS = 45_000;
/** A size whose plan is predicted to take longer than this is skipped. */
const MAX_PREDICTED_PLAN_MS = 10_000;

export interface PlanningResult {
  function: "planFromSnapshots";
  sizes: PlanningChildResult[];
  /** median(next size) ÷ median(this size), wall-clock: the cost of 10× more disks. */
  growth: {
    from: number;
    to: number;
    wall: number;
    /** The same from the fastest runs: noise only ever adds time, so this is the steadier figure on a busy host. */
    wallMin: number;
    cpu: number;
    peakRss: number;
    retainedHeap: number;
  }[];
  /** The 2,000-disk (20,000-bitmap) case, called out on its own. */
  twentyThousandBitmaps: PlanningChildResult | undefined;
  /** Where the largest profiled size spends its time (one extra child run under --cpu-prof). */
  profile?: ProfileSummary;
  profiledDisks?: number;
  /**
   * Self time per bitmap of each bitferry function at two sizes (10× apart), sorted by how much it grew: a function
   * whose cost per bitmap grows with the size is what makes planning grow faster than linearly.
   */
  perBitmapGrowth?: { from: number; to: number; rows: { what: string; nsFrom: number; nsTo: number }[] };
  /** Sizes not measured because the previous ones predicted minutes per plan. */
  skipped: { disks: number; predictedMs: number }[];
  load: { start: number; end: number };
}

function runChild(
  tree: CompiledTree,
  args: string[],
  nodeFlags: string[] = [],
): Promise<PlanningChildResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--expose-gc", ...nodeFlags, tree.planningChild, ...args], {
      cwd: tree.dir,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.setEncoding("utf8").on("data", (s: string) => (out += s));
    child.stderr.setEncoding("utf8").on("data", (s: string) => (err += s));
    child.on("error", reject);
    child.on("close", (code) => {
      if (code !== 0) {
        reject(new Error(`planning child ${args.join(" ")} exited ${code}: ${err.trim()}`));
        return;
      }
      try {
        resolve(JSON.parse(out.trim().split("\n").pop() ?? "") as PlanningChildResult);
      } catch (e) {
        reject(new Error(`planning child printed no result: ${out} ${err}`, { cause: e }));
      }
    });
  });
}

/**
 * Pure planning at 200, 2,000 and 20,000 disks (10 bitmaps each), each size in a fresh process so that its peak
 * RSS is its own. planFromSnapshots rather than planFromGraphs: it is the pure function a live plan calls once
 * the replies are in, so graph building (which also grows with the node count) is part of what is measured.
 * Reply validation (parseSnapshot) is timed beside it, separately.
 */
export async function benchPlanning(
  tree: CompiledTree,
  options: { sizes: number[]; runs: number; warmup: number; profile: boolean; log: (s: string) => void },
): Promise<PlanningResult> {
  const start = load1();
  const sizes: PlanningChildResult[] = [];
  const skipped: PlanningResult["skipped"] = [];
  for (const disks of options.sizes) {
    const prev = sizes[sizes.length - 1];
    const prev2 = sizes[sizes.length - 2];
    if (prev && prev2) {
      // Extrapolate with the growth just seen (at least linear): minutes per plan would blow the time budget.
      const k = disks / prev.disks;
      const growth = Math.max(
        k,
        (prev.planMs.median / prev2.planMs.median) ** (Math.log(k) / Math.log(prev.disks / prev2.disks)),
      );
      const predictedMs = prev.planMs.median * growth;
      if (predictedMs > MAX_PREDICTED_PLAN_MS) {
        skipped.push({ disks, predictedMs });
        options.log(
          `planning ${disks} disks: skipped, about ${(predictedMs / 1000).toFixed(0)} s per plan predicted`,
        );
        continue;
      }
    }
    // The smallest size gets more warm-up to get past the JIT's; it costs milliseconds.
    // The largest size takes seconds per run; the others are cheap enough for more runs against the noise.
    const runs = disks >= 20_000 ? options.runs : options.runs * 2;
    const warmup = disks <= 200 ? options.warmup * 5 : options.warmup;
    const r = await runChild(tree, [String(disks), String(runs), String(warmup), String(SIZE_BUDGET_MS)]);
    if (!r.ok)
      throw new Error(`synthetic plan at ${disks} disks has ${r.errors} errors: the generator is wrong`);
    options.log(
      `planning ${disks} disks / ${r.bitmaps} bitmaps: median ${r.planMs.median.toFixed(1)} ms ` +
        `(cpu ${r.planCpuMs.median.toFixed(1)} ms), peak RSS ${(r.peakRssBytes / 2 ** 20).toFixed(0)} MiB`,
    );
    sizes.push(r);
  }
  const growth: PlanningResult["growth"] = [];
  for (let i = 1; i < sizes.length; i++) {
    const a = sizes[i - 1]!;
    const b = sizes[i]!;
    growth.push({
      from: a.disks,
      to: b.disks,
      wall: ratio(b.planMs, a.planMs),
      wallMin: b.planMs.min / a.planMs.min,
      cpu: ratio(b.planCpuMs, a.planCpuMs),
      peakRss: b.peakRssBytes / a.peakRssBytes,
      retainedHeap: b.retainedHeapBytes / a.retainedHeapBytes,
    });
  }
  let profile: ProfileSummary | undefined;
  let profiledDisks: number | undefined;
  let perBitmapGrowth: PlanningResult["perBitmapGrowth"];
  // Profile the two largest sizes that plan in seconds, to compare them function by function.
  const cheap = sizes.filter((x) => x.planMs.median < 5000);
  const big = cheap[cheap.length - 1];
  const smaller = cheap[cheap.length - 2];
  if (options.profile && big) {
    const dir = path.join(tree.dir, "prof-planning");
    await mkdir(dir, { recursive: true });
    const profileOf = async (x: PlanningChildResult): Promise<{ file: string; r: PlanningChildResult }> => {
      const name = `planning-${x.disks}.cpuprofile`;
      const r = await runChild(
        tree,
        [String(x.disks), "2", "1", String(SIZE_BUDGET_MS)],
        ["--cpu-prof", "--cpu-prof-dir", dir, "--cpu-prof-name", name],
      );
      return { file: path.join(dir, name), r };
    };
    const b = await profileOf(big);
    profile = await summarizeProfile(b.file);
    profiledDisks = big.disks;
    if (smaller) {
      const a = await profileOf(smaller);
      const [sa, sb] = await Promise.all([selfTimes(a.file), selfTimes(b.file)]);
      // ns per bitmap per plan; input generation and validation are outside planFromSnapshots and are not bitferry's.
      const perA = a.r.plansRun * a.r.bitmaps;
      const perB = b.r.plansRun * b.r.bitmaps;
      const rows = [...new Set([...sa.keys(), ...sb.keys()])]
        .map((what) => ({
          what,
          nsFrom: ((sa.get(what) ?? 0) * 1000) / perA,
          nsTo: ((sb.get(what) ?? 0) * 1000) / perB,
        }))
        .sort((x, y) => y.nsTo - y.nsFrom - (x.nsTo - x.nsFrom))
        .slice(0, 10);
      perBitmapGrowth = { from: smaller.disks, to: big.disks, rows };
    }
  }
  return {
    function: "planFromSnapshots",
    sizes,
    growth,
    twentyThousandBitmaps: sizes.find((s) => s.bitmaps === 20_000),
    ...(profile ? { profile } : {}),
    ...(profiledDisks !== undefined ? { profiledDisks } : {}),
    ...(perBitmapGrowth ? { perBitmapGrowth } : {}),
    skipped,
    load: { start, end: load1() },
  };
}
