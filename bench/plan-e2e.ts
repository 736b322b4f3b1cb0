import { spawn } from "node:child_process";
import { mkdir, open, readFile } from "node:fs/promises";
import path from "node:path";
import { Lab } from "../src/lab/lab.js";
import { nullBlockdev } from "../src/lab/topology.js";
import type { TransactionAction } from "../src/qemu/monitor.js";
import type { Plan } from "../src/policy/types.js";
import type { CompiledTree } from "./lib/build.js";
import { summarizeProfile, type ProfileSummary } from "./lib/cpuprofile.js";
import { load1 } from "./lib/machine.js";
import { interleave, ratio, summarize, type Summary } from "./lib/stats.js";

const GiB = 1024 ** 3;

/** A CLI run that asks each QEMU its schema, as on first contact with a build. */
export const COLD = { BITFERRY_FEATURE_CACHE: "off" };

/** The stages of a plan run, by the bitferry function that does each (inclusive time in the profile). */
export const PROFILED_FUNCTIONS = [
  "validateReply",
  "buildGraph",
  "decideRows",
  "finishDecisions",
  "compileRows",
  "writeJson",
];

export interface PlanE2eResult {
  nodes: number;
  bitmapsPerNode: number;
  /** Starting both QEMUs, then creating every bitmap (pipelined transactions), ms. Done once. */
  setup: { startMs: number; bitmapsMs: number };
  /**
   * `bitferry plan --json` (compiled, as bin/bitferry.js runs it) as a fresh process, stdout to a file, ms. The
   * feature cache knows the QEMU build (the warm-up runs filled it), as on any host after its first plan.
   */
  cli: Summary;
  /** The same, with the feature cache off (BITFERRY_FEATURE_CACHE=off): QEMU builds its schema reply each time. */
  cliCold: Summary;
  /** The floor: a fresh node process sending the same queries to both monitors and parsing the replies, ms. */
  floor: Summary;
  /** cli ÷ floor. Target ≤ 1.5. */
  ratio: number;
  /** Where the difference goes, each a fresh process or an in-process measurement of one part. */
  parts: {
    /** `node -e 0`: Node's own start-up, ms. */
    nodeStartup: Summary;
    /** `bitferry --version`: start-up plus the command registrations main.ts loads, ms. */
    cliStartup: Summary;
    /**
     * `bitferry plan --json` against a socket that does not exist: start-up, loading every module the plan
     * command loads, and the connection refused at once (exit 3), ms.
     */
    planStartup: Summary;
  };
  /** Size of what bitferry printed and of what QEMU sent, bytes. */
  outputBytes: number;
  qmpBytes: number;
  /** Where one CLI run spends its time (one extra run under --cpu-prof). */
  profile?: ProfileSummary;
  load: { start: number; end: number };
}

/** Runs `node ARGS` as a fresh process, stdout to a file (or nowhere), and times it from spawn to exit. */
export function timeProcess(
  args: string[],
  cwd: string,
  stdoutFile?: string,
  env?: NodeJS.ProcessEnv,
): Promise<{ ms: number; code: number | null; stderr: string }> {
  return (async () => {
    const fh = stdoutFile ? await open(stdoutFile, "w") : undefined;
    try {
      return await new Promise<{ ms: number; code: number | null; stderr: string }>((resolve, reject) => {
        const t0 = performance.now();
        const child = spawn(process.execPath, args, {
          cwd,
          env: env ? { ...process.env, ...env } : process.env,
          stdio: ["ignore", fh ? fh.fd : "ignore", "pipe"],
        });
        let stderr = "";
        child.stderr?.setEncoding("utf8").on("data", (s: string) => (stderr += s));
        child.on("error", reject);
        child.on("exit", (code) => {
          resolve({ ms: performance.now() - t0, code, stderr });
        });
      });
    } finally {
      await fh?.close();
    }
  })();
}

/**
 * `bitferry plan --json` against two real QEMUs holding `nodes` null-co nodes with `bitmapsPerNode` bitmaps on the
 * source, against a floor script that only asks both QEMUs the same questions. Both are fresh node processes, so
 * Node's start-up is on both sides; the CLI is the compiled JavaScript users run (tsx would add its own loader).
 */
export async function benchPlanE2e(
  tree: CompiledTree,
  options: {
    nodes: number;
    bitmapsPerNode: number;
    runs: number;
    warmup: number;
    profile: boolean;
    log: (s: string) => void;
  },
): Promise<PlanE2eResult> {
  const lab = Lab.create({ prefix: "bf-bench-" });
  try {
    const loadStart = load1();
    const args = Array.from({ length: options.nodes }, (_, i) => nullBlockdev(`n${i}`, GiB)).flat();
    let t0 = performance.now();
    const [src, dst] = await Promise.all([
      lab.start({ label: "src", args }),
      lab.start({ label: "dst", args, incoming: "defer" }),
    ]);
    const startMs = performance.now() - t0;
    t0 = performance.now();
    // One transaction per 100 nodes, all in flight at once: QEMU runs them back to back without waiting on us.
    const batches: TransactionAction[][] = [];
    for (let i = 0; i < options.nodes; i += 100) {
      const batch: TransactionAction[] = [];
      for (let n = i; n < Math.min(options.nodes, i + 100); n++) {
        for (let b = 0; b < options.bitmapsPerNode; b++) {
          batch.push({
            type: "block-dirty-bitmap-add",
            data: { node: `n${n}`, name: `bm${b}`, granularity: 65536 },
          });
        }
      }
      batches.push(batch);
    }
    await Promise.all(batches.map((b) => src.monitor.transaction(b)));
    const bitmapsMs = performance.now() - t0;
    options.log(
      `plan e2e: ${options.nodes} nodes started in ${startMs.toFixed(0)} ms, ` +
        `${options.nodes * options.bitmapsPerNode} bitmaps in ${bitmapsMs.toFixed(0)} ms`,
    );

    const srcSock = src.monitorSocket;
    const dstSock = dst.monitorSocket;
    const out = lab.path("plan.json");
    const cliArgs = [tree.cli, "plan", "--source", `unix:${srcSock}`, "--dest", `unix:${dstSock}`, "--json"];
    const floorArgs = [tree.planFloor, srcSock, dstSock];
    const nowhere = `unix:${lab.path("nowhere.qmp")}`;
    const noQemuArgs = [tree.cli, "plan", "--source", nowhere, "--dest", nowhere, "--json"];

    // Correctness first: the contenders must have done the work before their times mean anything.
    const check = await timeProcess(cliArgs, tree.dir, out);
    const text = await readFile(out, "utf8");
    const plan = JSON.parse(text) as Plan;
    const expected = options.nodes * options.bitmapsPerNode;
    if (
      check.code !== 0 ||
      !plan.ok ||
      plan.bitmaps.filter((b) => b.action === "migrate").length !== expected
    ) {
      throw new Error(
        `bitferry plan did not plan ${expected} migrating bitmaps (exit ${check.code}): ${check.stderr}`,
      );
    }
    const floorOut = lab.path("floor.json");
    const fcheck = await timeProcess(floorArgs, tree.dir, floorOut);
    const floorReport = JSON.parse(await readFile(floorOut, "utf8")) as Record<
      string,
      { replies: number; bytes: number }
    >;
    if (fcheck.code !== 0 || floorReport.source?.replies !== 9 || floorReport.destination?.replies !== 9) {
      throw new Error(`floor script failed (exit ${fcheck.code}): ${fcheck.stderr}`);
    }

    const runs = await interleave<undefined>(
      [
        { id: "cli", run: async () => ({ value: (await timeProcess(cliArgs, tree.dir, out)).ms }) },
        {
          id: "cliCold",
          run: async () => ({ value: (await timeProcess(cliArgs, tree.dir, out, COLD)).ms }),
        },
        { id: "floor", run: async () => ({ value: (await timeProcess(floorArgs, tree.dir)).ms }) },
        { id: "node", run: async () => ({ value: (await timeProcess(["-e", "0"], tree.dir)).ms }) },
        {
          id: "version",
          run: async () => ({ value: (await timeProcess([tree.cli, "--version"], tree.dir)).ms }),
        },
        {
          id: "planStartup",
          run: async () => {
            const r = await timeProcess(noQemuArgs, tree.dir);
            if (r.code !== 3) throw new Error(`plan without QEMU exited ${r.code}, not 3: ${r.stderr}`);
            return { value: r.ms };
          },
        },
      ],
      { warmup: options.warmup, runs: options.runs },
    );
    const cli = summarize(runs.get("cli")!.samples);
    const floor = summarize(runs.get("floor")!.samples);

    let profile: ProfileSummary | undefined;
    if (options.profile) {
      const dir = path.join(tree.dir, "prof-plan-cli");
      await mkdir(dir, { recursive: true });
      await timeProcess(
        // tsc's one file per module, so that the profile names bitferry's files (the bundle is one file).
        [
          "--cpu-prof",
          "--cpu-prof-dir",
          dir,
          "--cpu-prof-name",
          "plan.cpuprofile",
          ...tree.cliV8Flags,
          tree.cliModules,
          ...cliArgs.slice(1),
        ],
        tree.dir,
        out,
      );
      profile = await summarizeProfile(path.join(dir, "plan.cpuprofile"), 12, PROFILED_FUNCTIONS);
    }
    return {
      nodes: options.nodes,
      bitmapsPerNode: options.bitmapsPerNode,
      setup: { startMs, bitmapsMs },
      cli,
      cliCold: summarize(runs.get("cliCold")!.samples),
      floor,
      ratio: ratio(cli, floor),
      parts: {
        nodeStartup: summarize(runs.get("node")!.samples),
        cliStartup: summarize(runs.get("version")!.samples),
        planStartup: summarize(runs.get("planStartup")!.samples),
      },
      outputBytes: Buffer.byteLength(text),
      qmpBytes: floorReport.source.bytes + floorReport.destination.bytes,
      ...(profile ? { profile } : {}),
      load: { start: loadStart, end: load1() },
    };
  } finally {
    await lab.cleanup();
  }
}
