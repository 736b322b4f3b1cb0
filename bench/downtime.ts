import { spawn } from "node:child_process";
import { closeSync, openSync, statSync, truncateSync } from "node:fs";
import { rm, statfs } from "node:fs/promises";
import net from "node:net";
import pc from "picocolors";
import { renderPlanText } from "../src/cli/render/plan-text.js";
import type { Lab } from "../src/lab/lab.js";
import type { QemuProcess } from "../src/lab/process.js";
import { planMigration } from "../src/migrate/plan.js";
import { addedDowntimeMs } from "../src/policy/convergence.js";
import type { QemuMonitor } from "../src/qemu/monitor.js";
import { load1 } from "./lib/machine.js";
import { finalMigrationInfo, RunFailed, type RunFailure } from "./lib/failures.js";
import { fmtBytes, summarize, type Summary } from "./lib/stats.js";
import { timedStrictMigrate } from "./lib/timed-migrate.js";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const GRANULARITY = 512;
/** One bit per 512-byte granule: the node size that gives a payload, and back. */
const BYTES_OF_DISK_PER_PAYLOAD_BYTE = GRANULARITY * 8;
/** QEMU 7.2 refuses a downtime-limit above 2000 s. */
const MAX_DOWNTIME_MS = 2_000_000;
const LOOPBACK_RUNS = 7;
const LOOPBACK_WARMUP = 2;
const MAX_RETRIES = 2;
const WAKEUP_PROBE_RUNS = 8;

export interface PayloadRow {
  payloadBytes: number;
  nodeSize: number;
  /** The physical floor: the median time to push the payload's bytes through a unix socket, process to process, ms. */
  floorMs: number;
  loopback: Summary;
  precopy: {
    downtime: Summary;
    wall: Summary;
    pause: Summary;
    raisedTo: number[];
    /** Runs that ended NOT_CONVERGING even with downtime-limit raised to QEMU's maximum. */
    notConverging: number;
  };
  /** `postcopy` as bitferry's result reported it, per run (false: the migration completed before the switch). */
  postcopy: { downtime: Summary; wall: Summary; pause: Summary; used: boolean[] };
  /** x-debug-block-dirty-bitmap-sha256 of this bitmap on the source, alone, ms. */
  hash: Summary;
  prediction: {
    /** plan.payloadBytes: what the plan says the migration carries. */
    planPayloadBytes: number;
    /** addedDowntimeMs(payload, measured loopback bits/s), ms. */
    atLoopbackMs: number;
    /** What `bitferry plan` prints: ms at 1 Gbit/s and at 10 Gbit/s. */
    at1GbitMs: number;
    at10GbitMs: number;
    /** The plan's "Bitmap payload: ..." line, verbatim. */
    printed: string;
    /** The PRECOPY_MAY_NOT_CONVERGE warning, if the plan gave one. */
    warning: string | undefined;
  };
}

export interface DowntimeResult {
  granularity: number;
  /** Measured loopback throughput (unix socket, process to process), bytes per second. */
  loopbackBytesPerSecond: number;
  rows: PayloadRow[];
  /**
   * Postcopy runs with nothing to migrate, several times: QEMU stops the source as soon as postcopy is asked for,
   * so the downtime is how quickly bitferry notices `pre-switchover` (only runs that did switch to postcopy).
   */
  wakeupProbe: { downtimeMs: number[]; postcopyRuns: number; runs: number };
  /** Runs in which bitferry's reported `downtimeMs` differed from QEMU's final figure, of all runs. */
  staleDowntime: { count: number; of: number };
  /** Postcopy downtime at the largest payload ÷ at the smallest non-zero one: 1 means flat. */
  postcopyGrowth: number;
  precopyGrowth: number;
  load: { start: number; end: number };
}

/**
 * A sparse raw file as the disk, opened with `discard: unmap`. Zero writes that may unmap (`write -z -u`) then
 * punch holes in it: no space, a fraction of a second per terabyte, and they dirty the bitmap like any write.
 * null-co would be simpler but has no zero-write fast path (QEMU zeroes bounce buffers: about 15 s of CPU per
 * terabyte). Plain `write -z` (without `-u`) is NOT safe on a file: QEMU zeroes the range with
 * FALLOC_FL_ZERO_RANGE, which allocates, and a terabyte of it fills the disk; dirtyAll checks after the first
 * gigabyte that nothing was allocated, and stops before the rest if something was.
 */
function sparseDisk(lab: Lab, name: string, size: number): { file: string; args: string[] } {
  const file = lab.path(name);
  closeSync(openSync(file, "w"));
  truncateSync(file, size);
  return {
    file,
    args: [
      "-blockdev",
      JSON.stringify({ driver: "file", filename: file, "node-name": "disk0", discard: "unmap" }),
    ],
  };
}

/** Bytes the file really occupies on disk. */
function allocated(file: string): number {
  return statSync(file).blocks * 512;
}

/**
 * Sets every bit. QEMU sends an all-zero 1 KiB chunk of bitmap as a flag without data, so a clean bitmap would
 * carry almost nothing however large it is; a full one carries its whole size.
 */
async function dirtyAll(mon: QemuMonitor, size: number, file: string): Promise<void> {
  const step = GiB;
  const write = async (off: number): Promise<void> => {
    const len = Math.min(step, size - off);
    const out = await mon.humanMonitorCommand(`qemu-io disk0 "write -z -u ${off} ${len}"`);
    if (typeof out === "string" && out.trim() !== "") throw new Error(`qemu-io failed: ${out.trim()}`);
  };
  await write(0);
  // The guard for the machine's disk: holes only.
  if (allocated(file) > 16 * MiB) {
    throw new Error(
      `${file} allocated ${allocated(file)} bytes for one gigabyte of zero writes: not sparse, stopping`,
    );
  }
  const rest: Promise<void>[] = [];
  for (let off = step; off < size; off += step) rest.push(write(off));
  await Promise.all(rest);
  if (allocated(file) > 64 * MiB) throw new Error(`${file} allocated ${allocated(file)} bytes: not sparse`);
}

/** The disks are sparse, but refuse to start on a nearly full filesystem all the same. */
async function checkFreeSpace(dir: string): Promise<void> {
  const st = await statfs(dir);
  const free = st.bavail * st.bsize;
  if (free < 8 * GiB)
    throw new Error(`only ${free} bytes free under ${dir}: the downtime benchmark wants 8 GiB of room`);
}

async function startPair(lab: Lab, tag: string, payloadBytes: number): Promise<Pair> {
  const size = payloadBytes === 0 ? 64 * GiB : payloadBytes * BYTES_OF_DISK_PER_PAYLOAD_BYTE;
  const s = sparseDisk(lab, `s${tag}.raw`, size);
  const d = sparseDisk(lab, `d${tag}.raw`, size);
  const [source, destination] = await Promise.all([
    lab.start({ label: `s${tag}`, args: s.args }),
    lab.start({ label: `d${tag}`, args: d.args, incoming: "defer", paused: true }),
  ]);
  const pair: Pair = {
    source,
    destination,
    size,
    stop: async () => {
      await Promise.all([source.stop(), destination.stop()]);
      await rm(s.file, { force: true });
      await rm(d.file, { force: true });
    },
  };
  try {
    if (payloadBytes > 0) {
      await source.monitor.addBitmap("disk0", "bm0", { granularity: GRANULARITY });
      await dirtyAll(source.monitor, size, s.file);
    }
  } catch (err) {
    await pair.stop();
    throw err;
  }
  return pair;
}

interface Pair {
  source: QemuProcess;
  destination: QemuProcess;
  size: number;
  /** Stops both QEMUs and deletes their disks. */
  stop: () => Promise<void>;
}

/** Pushes `bytes` through a unix socket from a fresh node process to this one; ms from first byte to last. */
async function loopbackOnce(lab: Lab, bytes: number, tag: string): Promise<number> {
  const sock = lab.path(`lb${tag}.sock`);
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(sock, resolve));
  try {
    const received = new Promise<number>((resolve, reject) => {
      server.once("connection", (c) => {
        let got = 0;
        let t0 = 0;
        c.on("data", (d: Buffer) => {
          if (got === 0) t0 = performance.now();
          got += d.length;
        });
        c.on("end", () => {
          if (got !== bytes) reject(new Error(`loopback: got ${got} of ${bytes} bytes`));
          else resolve(performance.now() - t0);
        });
        c.on("error", reject);
      });
    });
    const writer =
      `const s=require("net").createConnection(${JSON.stringify(sock)});` +
      `s.on("connect",()=>s.end(Buffer.alloc(${bytes},255)));`;
    const child = spawn(process.execPath, ["-e", writer], { stdio: "ignore" });
    const ms = await received;
    await new Promise((r) => child.once("exit", r));
    return ms;
  } finally {
    server.close();
  }
}

interface RunOutcome {
  /** QEMU's downtime, read once QEMU has finalised it. */
  downtimeMs: number;
  /** What bitferry's result said (its `migration.downtimeMs`). */
  reportedDowntimeMs: number | null;
  totalTimeMs: number;
  wallMs: number;
  pauseMs: number;
  raisedTo: number | undefined;
  postcopyUsed: boolean;
}

async function runOnce(lab: Lab, payloadBytes: number, postcopy: boolean, tag: string): Promise<RunOutcome> {
  const pair = await startPair(lab, tag, payloadBytes);
  const { source, destination } = pair;
  try {
    const {
      result: r,
      wallMs,
      pauseMs,
    } = await timedStrictMigrate({
      source: source.monitor,
      destination: destination.monitor,
      uri: `unix:${lab.path(`m${tag}.sock`)}`,
      ...(postcopy ? { postcopy: true } : { maxDowntimeMs: MAX_DOWNTIME_MS }),
      timeoutMs: 300_000,
    });
    if (postcopy && payloadBytes > 0 && !r.migration.postcopy) throw new Error("postcopy was not used");
    const final = await finalMigrationInfo(source.monitor);
    return {
      downtimeMs: final.downtime ?? NaN,
      reportedDowntimeMs: r.migration.downtimeMs,
      totalTimeMs: final["total-time"] ?? NaN,
      wallMs,
      pauseMs,
      raisedTo: r.migration.downtimeLimitRaisedMs,
      postcopyUsed: r.migration.postcopy,
    };
  } finally {
    await pair.stop();
  }
}

/**
 * QEMU-reported downtime against bitmap payload (one node, so postcopy is safe), with precopy (downtime-limit
 * raised by bitferry within a large bound) and with postcopy, beside the physical floor measured in the same run.
 */
export async function benchDowntime(
  lab: Lab,
  options: {
    payloadsMiB: number[];
    runs: number;
    warmup: number;
    log: (s: string) => void;
    failures: RunFailure[];
  },
): Promise<DowntimeResult> {
  await checkFreeSpace(lab.dir);
  const loadStart = load1();
  // Loopback first (it does not depend on QEMU): the same number of bytes as each payload, several times.
  const loopbacks = new Map<number, Summary>();
  for (const mib of options.payloadsMiB) {
    if (mib === 0) continue;
    const samples: number[] = [];
    for (let i = 0; i < LOOPBACK_WARMUP + LOOPBACK_RUNS; i++) {
      const ms = await loopbackOnce(lab, mib * MiB, `${mib}-${i}`);
      if (i >= LOOPBACK_WARMUP) samples.push(ms);
    }
    loopbacks.set(mib, summarize(samples));
  }
  const largest = Math.max(...options.payloadsMiB);
  const loopbackBytesPerSecond = (largest * MiB) / ((loopbacks.get(largest)?.median ?? NaN) / 1000);
  options.log(
    `loopback: ${((loopbackBytesPerSecond * 8) / 1e9).toFixed(2)} Gbit/s (unix socket, process to process)`,
  );

  // Warm-up: one small migration each way, so the first timed run does not pay for cold caches.
  for (let w = 0; w < options.warmup; w++) {
    for (const pc of [false, true]) {
      try {
        await runOnce(lab, 16 * MiB, pc, `w${pc ? "q" : "p"}${w}`);
      } catch (err) {
        if (!(err instanceof RunFailed)) throw err;
        options.failures.push({
          section: "downtime",
          what: `warm-up ${pc ? "postcopy" : "precopy"} migrate()`,
          code: err.code,
          message: err.message,
        });
      }
    }
  }

  const rows: PayloadRow[] = [];
  const staleDowntime = { count: 0, of: 0 };
  for (const mib of options.payloadsMiB) {
    const payloadBytes = mib * MiB;
    const tag = `p${mib}`;
    const loop = loopbacks.get(mib) ?? summarize([]);
    // The plan's prediction and the hashing cost, on a pair of their own (untimed for the migration).
    const probe = await startPair(lab, `${tag}x`, payloadBytes);
    let prediction: PayloadRow["prediction"];
    const hashes: number[] = [];
    try {
      const { plan } = await planMigration(probe.source.monitor, probe.destination.monitor);
      const printed =
        renderPlanText(plan, pc.createColors(false))
          .split("\n")
          .find((l) => l.startsWith("Bitmap payload:")) ?? "(no payload line: nothing migrates)";
      prediction = {
        planPayloadBytes: plan.payloadBytes,
        atLoopbackMs: addedDowntimeMs(plan.payloadBytes, loopbackBytesPerSecond * 8),
        at1GbitMs: addedDowntimeMs(plan.payloadBytes, 1e9),
        at10GbitMs: addedDowntimeMs(plan.payloadBytes, 10e9),
        printed,
        warning: plan.warnings.find((w) => w.code === "PRECOPY_MAY_NOT_CONVERGE")?.message,
      };
      if (payloadBytes > 0) {
        for (let i = 0; i < options.runs; i++) {
          const t0 = performance.now();
          await probe.source.monitor.bitmapSha256("disk0", "bm0");
          hashes.push(performance.now() - t0);
        }
      }
    } finally {
      await probe.stop();
    }
    const pre: RunOutcome[] = [];
    const post: RunOutcome[] = [];
    let notConverging = 0;
    // A failed run is recorded (it is a finding about bitferry) and retried, a bounded number of times; a precopy
    // run that does not converge is an outcome of this payload, counted and not retried.
    for (let i = 0; i < options.runs + MAX_RETRIES; i++) {
      // Alternate which mode goes first, as everywhere else.
      const order = i % 2 === 0 ? [false, true] : [true, false];
      for (const pc of order) {
        const done = pc ? post.length : pre.length + notConverging;
        if (done >= options.runs) continue;
        const what = `${pc ? "postcopy" : "precopy"} migrate() of a ${fmtBytes(payloadBytes)} bitmap payload`;
        try {
          (pc ? post : pre).push(await runOnce(lab, payloadBytes, pc, `${tag}${pc ? "q" : "r"}${i}`));
        } catch (err) {
          if (!(err instanceof RunFailed)) throw err;
          if (err.code === "NOT_CONVERGING" && !pc) notConverging++;
          options.failures.push({ section: "downtime", what, code: err.code, message: err.message });
          options.log(`FAILED: ${what}: ${err.message}`);
        }
      }
    }
    const s = (xs: RunOutcome[], k: "downtimeMs" | "wallMs" | "pauseMs" | "totalTimeMs"): Summary =>
      summarize(xs.map((x) => x[k]).filter((v) => Number.isFinite(v)));
    const all = [...pre, ...post];
    staleDowntime.count += all.filter((o) => o.reportedDowntimeMs !== o.downtimeMs).length;
    staleDowntime.of += all.length;
    const row: PayloadRow = {
      payloadBytes,
      nodeSize: probe.size,
      floorMs: payloadBytes === 0 ? 0 : loop.median,
      loopback: loop,
      precopy: {
        downtime: s(pre, "downtimeMs"),
        wall: s(pre, "wallMs"),
        pause: s(pre, "pauseMs"),
        raisedTo: pre.map((p) => p.raisedTo ?? 0),
        notConverging,
      },
      postcopy: {
        downtime: s(post, "downtimeMs"),
        wall: s(post, "wallMs"),
        pause: s(post, "pauseMs"),
        used: post.map((p) => p.postcopyUsed),
      },
      hash: summarize(hashes),
      prediction,
    };
    options.log(
      `downtime ${mib} MiB: precopy ${row.precopy.downtime.median} ms, postcopy ${row.postcopy.downtime.median} ms, ` +
        `floor ${row.floorMs.toFixed(1)} ms, hash ${row.hash.median.toFixed(0)} ms`,
    );
    rows.push(row);
  }
  const probe: RunOutcome[] = [];
  for (let i = 0; i < WAKEUP_PROBE_RUNS; i++) probe.push(await runOnce(lab, 0, true, `wake${i}`));
  const switched = probe.filter((o) => o.postcopyUsed);
  options.log(
    `wake-up probe: downtimes ${probe.map((o) => o.downtimeMs).join(", ")} ms (${switched.length} switched to postcopy)`,
  );

  const nonZero = rows.filter((r) => r.payloadBytes > 0);
  const first = nonZero[0];
  const last = nonZero[nonZero.length - 1];
  return {
    granularity: GRANULARITY,
    loopbackBytesPerSecond,
    rows,
    staleDowntime,
    wakeupProbe: {
      // Every run: a lost wake-up shows at pre-switchover whether or not QEMU then switches to postcopy.
      downtimeMs: probe.map((o) => o.downtimeMs),
      postcopyRuns: switched.length,
      runs: probe.length,
    },
    postcopyGrowth: first && last ? last.postcopy.downtime.median / first.postcopy.downtime.median : NaN,
    precopyGrowth: first && last ? last.precopy.downtime.median / first.precopy.downtime.median : NaN,
    load: { start: loadStart, end: load1() },
  };
}
