/**
 * How fast `inspect` reads a large bitmap, against the standard tools.
 *
 *   node --import tsx bench/inspect.ts
 *
 * The image: 128 GiB virtual, one persistent bitmap at 512-byte granularity (2^28 bits = 32 MiB of bitmap data,
 * every one of its 512 data clusters allocated), dirtied by 100 000 writes spread uniformly over the disk by a
 * seeded generator. The file sits in the page cache for every contender (each is warmed up first).
 */
import { spawn, execFile } from "node:child_process";
import { cpus } from "node:os";
import { existsSync } from "node:fs";
import { stat, symlink } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import Table from "cli-table3";
import { Lab } from "../src/lab/lab.js";
import { qcow2Blockdev } from "../src/lab/topology.js";
import { inspectImage } from "../src/qcow2/inspect.js";
import { isEntryPoint } from "../src/util/entry-point.js";
// The same oracle the tests compare bitferry with.
import { dirtyFromNbdinfo, nbdMapArgs } from "../test/qcow2/helpers/qemu.js";

const execFileP = promisify(execFile);
const GiB = 1024 ** 3;

export interface BenchOptions {
  /** Timed runs per contender (after warm-up). */
  runs?: number;
  warmup?: number;
  /** Guest writes that dirty the bitmap. */
  writes?: number;
}

export interface BenchRow {
  id: string;
  label: string;
  runs: number;
  medianMs: number;
  minMs: number;
  maxMs: number;
}

export interface BenchResult {
  image: {
    virtualSize: number;
    granularity: number;
    bitmapDataBytes: number;
    fileBytes: number;
    dirtyExtents: number;
    dirtyBytes: number;
  };
  environment: { cpu: string; node: string; qemu: string };
  rows: BenchRow[];
  /** Medians divided, from this one run. */
  ratios: {
    /** qemu-nbd + nbdinfo --map (one command) ÷ bitferry extents. */
    extentsVsNbdCommand: number;
    /** nbdinfo --map against an already running qemu-nbd ÷ bitferry extents. */
    extentsVsNbdMapOnly: number;
    /** QEMU started on the image + x-debug-block-dirty-bitmap-sha256 ÷ bitferry sha256. */
    sha256VsQemuCold: number;
    /** The QMP command alone on a bitmap QEMU already holds in memory ÷ bitferry sha256 (not the same work). */
    sha256VsQemuLoaded: number;
    /** qemu-nbd + nbdinfo --map (one command) ÷ the compiled bitferry CLI process (NaN if not measured). */
    cliProcessVsNbdCommand: number;
  };
}

async function measure(
  id: string,
  label: string,
  fn: () => Promise<unknown>,
  warmup: number,
  runs: number,
): Promise<BenchRow> {
  for (let i = 0; i < warmup; i++) await fn();
  const t: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await fn();
    t.push(performance.now() - t0);
  }
  t.sort((a, b) => a - b);
  const mid = Math.floor(t.length / 2);
  const median = t.length % 2 === 1 ? (t[mid] ?? 0) : ((t[mid - 1] ?? 0) + (t[mid] ?? 0)) / 2;
  return { id, label, runs, medianMs: median, minMs: t[0] ?? 0, maxMs: t[t.length - 1] ?? 0 };
}

/** A small seeded generator (mulberry32): the same image on every run. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function runWithInput(cmd: string, args: string[], input: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["pipe", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    child.on("error", reject);
    child.on("close", (code) => {
      if (code === 0) resolve();
      else reject(new Error(`${cmd} failed (${code}): ${stderr.trim()}`));
    });
    child.stdin.end(input);
  });
}

async function waitFor(file: string, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!existsSync(file)) {
    if (Date.now() > end) throw new Error(`${file} did not appear within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export async function benchInspect(options: BenchOptions = {}): Promise<BenchResult> {
  const runs = options.runs ?? 21;
  const warmup = options.warmup ?? 5;
  const writes = options.writes ?? 100_000;
  const virtualSize = 128 * GiB;
  const granularity = 512;
  const bitmap = "b";
  const lab = Lab.create({ prefix: "bf-bench-" });
  try {
    const file = await lab.createImage("bench.qcow2", virtualSize, {
      bitmaps: [{ name: bitmap, granularity }],
    });
    const next = rng(5);
    const lengths = [512, 1024, 4096, 65536, 1024 * 1024];
    const cmds: string[] = [];
    for (let i = 0; i < writes; i++) {
      const off = Math.floor(next() * (virtualSize / 512)) * 512;
      const len = Math.min(lengths[Math.floor(next() * lengths.length)] ?? 512, virtualSize - off);
      // Zero writes dirty the bitmap like any write but allocate no guest data: the file stays small.
      cmds.push(`write -z ${off} ${len}`);
    }
    await runWithInput("qemu-io", ["-t", "unsafe", "-f", "qcow2", file], `${cmds.join("\n")}\n`);

    // Correctness first: the contenders must agree before their times mean anything.
    const ours = await inspectImage(file, { bitmap, extents: true, sha256: true });
    const b = ours.bitmaps[0];
    if (b?.extents === undefined || b.sha256 === undefined) throw new Error("no bitmap in the bench image");
    const { stdout: nbdJson } = await execFileP("nbdinfo", nbdMapArgs(bitmap, file), { maxBuffer: 1 << 30 });
    if (JSON.stringify(dirtyFromNbdinfo(nbdJson)) !== JSON.stringify(b.extents)) {
      throw new Error("bitferry's extents differ from nbdinfo's");
    }

    const rows: BenchRow[] = [];
    rows.push(
      await measure(
        "bitferry-extents",
        "bitferry extents: inspectImage(--extents), in process",
        () => inspectImage(file, { bitmap, extents: true }),
        warmup,
        runs,
      ),
    );
    rows.push(
      await measure(
        "nbd-command",
        "qemu-nbd -r -B + nbdinfo --json --map (one command: start, load, map, JSON)",
        () => execFileP("nbdinfo", nbdMapArgs(bitmap, file), { maxBuffer: 1 << 30 }),
        warmup,
        runs,
      ),
    );
    const sock = lab.path("nbd.sock");
    const server = spawn(
      "qemu-nbd",
      ["-r", "-f", "qcow2", "-B", bitmap, "-k", sock, "-t", "--shared=8", file],
      {
        stdio: "ignore",
      },
    );
    try {
      await waitFor(sock, 10_000);
      rows.push(
        await measure(
          "nbd-map-only",
          "nbdinfo --json --map against a qemu-nbd already serving the bitmap",
          () =>
            execFileP(
              "nbdinfo",
              ["--json", `--map=qemu:dirty-bitmap:${bitmap}`, `nbd+unix:///?socket=${sock}`],
              {
                maxBuffer: 1 << 30,
              },
            ),
          warmup,
          runs,
        ),
      );
    } finally {
      server.kill("SIGTERM");
    }

    rows.push(
      await measure(
        "bitferry-sha256",
        "bitferry sha256: inspectImage(--sha256), in process",
        () => inspectImage(file, { bitmap, sha256: true }),
        warmup,
        runs,
      ),
    );
    let qemuHash = "";
    let label = 0;
    rows.push(
      await measure(
        "qemu-cold-sha256",
        "QEMU started on the image (read-only) + x-debug-block-dirty-bitmap-sha256 + quit",
        async () => {
          const vm = await lab.start({
            label: `h${++label}`,
            args: qcow2Blockdev({ nodeName: "ro", file, readOnly: true }),
          });
          try {
            qemuHash = await vm.monitor.bitmapSha256("ro", bitmap);
          } finally {
            await vm.stop();
          }
        },
        1,
        Math.min(runs, 7),
      ),
    );
    if (qemuHash !== b.sha256) throw new Error(`sha256 differs: QEMU ${qemuHash}, bitferry ${b.sha256}`);
    const vm = await lab.start({
      label: "loaded",
      args: qcow2Blockdev({ nodeName: "ro", file, readOnly: true }),
    });
    try {
      rows.push(
        await measure(
          "qemu-loaded-sha256",
          "x-debug-block-dirty-bitmap-sha256 alone, bitmap already in QEMU's memory (QMP round trip)",
          () => vm.monitor.bitmapSha256("ro", bitmap),
          warmup,
          runs,
        ),
      );
    } finally {
      await vm.stop();
    }
    // The CLI as users run it: compiled JavaScript (what bin/bitferry.js loads), built into the lab directory
    // with the project's own build settings; node_modules is linked so that packages resolve.
    const root = path.join(import.meta.dirname, "..");
    const dist = lab.path("dist");
    let cliRow: BenchRow | undefined;
    try {
      await execFileP(process.execPath, [
        path.join(root, "node_modules/typescript/bin/tsc"),
        "-p",
        path.join(root, "tsconfig.build.json"),
        "--outDir",
        dist,
        "--declaration",
        "false",
        "--sourceMap",
        "false",
      ]).catch((err: unknown) => {
        // tsc exits 1 on type errors elsewhere in the tree but still emits; only a missing entry point matters.
        if (!existsSync(path.join(dist, "cli/main.js"))) throw err;
      });
      await symlink(path.join(root, "node_modules"), lab.path("node_modules"));
      cliRow = await measure(
        "bitferry-cli",
        "bitferry inspect --extents --json as a process (compiled; node startup + module loading + JSON output)",
        () =>
          execFileP(
            process.execPath,
            [path.join(dist, "cli/main.js"), "inspect", file, "--extents", "--json"],
            {
              maxBuffer: 1 << 30,
            },
          ),
        1,
        Math.min(runs, 7),
      );
      rows.push(cliRow);
    } catch (err) {
      console.error(`bench: the compiled CLI could not be measured: ${String(err)}`);
    }

    const med = (id: string): number => rows.find((r) => r.id === id)?.medianMs ?? NaN;
    const { stdout: qemuVersion } = await execFileP("qemu-img", ["--version"]);
    const { size: fileBytes } = await stat(file);
    return {
      image: {
        virtualSize,
        granularity,
        bitmapDataBytes: virtualSize / granularity / 8,
        fileBytes,
        dirtyExtents: b.extents.length,
        dirtyBytes: b.dirtyBytes,
      },
      environment: {
        cpu: `${cpus()[0]?.model ?? "unknown"} (${cpus().length} CPUs)`,
        node: process.version,
        qemu: qemuVersion.split("\n")[0] ?? "",
      },
      rows,
      ratios: {
        extentsVsNbdCommand: med("nbd-command") / med("bitferry-extents"),
        extentsVsNbdMapOnly: med("nbd-map-only") / med("bitferry-extents"),
        sha256VsQemuCold: med("qemu-cold-sha256") / med("bitferry-sha256"),
        sha256VsQemuLoaded: med("qemu-loaded-sha256") / med("bitferry-sha256"),
        cliProcessVsNbdCommand: med("nbd-command") / med("bitferry-cli"),
      },
    };
  } finally {
    await lab.cleanup();
  }
}

function printResult(r: BenchResult): void {
  const MiB = 1024 * 1024;
  console.log(
    `image: ${r.image.virtualSize / GiB} GiB virtual, granularity ${r.image.granularity}, ` +
      `${r.image.bitmapDataBytes / MiB} MiB of bitmap data, file ${(r.image.fileBytes / MiB).toFixed(1)} MiB, ` +
      `${r.image.dirtyExtents} dirty extents, ${r.image.dirtyBytes} dirty bytes`,
  );
  console.log(`environment: ${r.environment.cpu}; node ${r.environment.node}; ${r.environment.qemu}`);
  const table = new Table({
    head: ["contender", "median ms", "min ms", "max ms", "runs"],
    style: { head: [], border: [] },
  });
  for (const row of r.rows) {
    table.push([row.label, row.medianMs.toFixed(1), row.minMs.toFixed(1), row.maxMs.toFixed(1), row.runs]);
  }
  console.log(table.toString());
  console.log(
    `extents: bitferry is ${r.ratios.extentsVsNbdCommand.toFixed(1)}x faster than the qemu-nbd + nbdinfo command, ` +
      `${r.ratios.extentsVsNbdMapOnly.toFixed(1)}x faster than nbdinfo against a running qemu-nbd`,
  );
  console.log(
    `sha256: bitferry is ${r.ratios.sha256VsQemuCold.toFixed(1)}x faster than starting QEMU to ask it; a QEMU that ` +
      `already holds the bitmap answers in ${(r.ratios.sha256VsQemuLoaded * 100).toFixed(0)}% of bitferry's time`,
  );
  if (Number.isFinite(r.ratios.cliProcessVsNbdCommand)) {
    console.log(
      `processes: the compiled bitferry CLI takes ${(1 / r.ratios.cliProcessVsNbdCommand).toFixed(2)}x the time of ` +
        `the qemu-nbd + nbdinfo command (node startup and module loading dominate)`,
    );
  }
}

if (isEntryPoint(import.meta.url)) {
  printResult(await benchInspect());
}
