import { writeFile } from "node:fs/promises";
import { Lab } from "../../src/lab/lab.js";
import type { QemuProcess } from "../../src/lab/process.js";
import * as S from "../../src/lab/scenarios.js";
import { migrate, type MigrateResult } from "../../src/migrate/run.js";
import { planMigration } from "../../src/migrate/plan.js";
import type { ProgressEvent } from "../../src/migrate/progress.js";
import { validatePolicy } from "../../src/policy/file.js";
import { inspectImage } from "../../src/qcow2/inspect.js";
import { buildPairCases } from "../helpers/pairs.js";
import { spawnCli, type CliRun } from "../helpers/cli.js";
import {
  bitmapStates,
  checkSourceAlive,
  checkStored,
  Findings,
  migrationSettings,
  short,
  type BitmapState,
} from "./checks.js";
import { Rng } from "./prng.js";
import { freePort, Relay } from "./relay.js";

export type FaultKind =
  "kill-destination" | "kill-source" | "cut-connection" | "timeout" | "sigint" | "sigterm";
export type FaultPoint = "setup" | "copy" | "active" | "pre-switchover" | "completed" | "random";
export type FaultScenario = "stalling" | "copy-storage";

export interface FaultCase {
  kind: FaultKind;
  point: FaultPoint;
  scenario: FaultScenario;
}

/**
 * Every kind at every point where it makes sense, on both scenarios that hold a migration long enough to inject:
 * `stalling-persistent` (its bitmap payload keeps precopy `active` until bitferry raises downtime-limit) and
 * `copy-storage` (disks copied over NBD first). Fault i is case i modulo this list, so any 19 consecutive faults
 * cover every case.
 */
export const FAULT_CASES: readonly FaultCase[] = [
  { kind: "kill-destination", point: "setup", scenario: "stalling" },
  { kind: "kill-destination", point: "active", scenario: "stalling" },
  { kind: "kill-destination", point: "pre-switchover", scenario: "stalling" },
  { kind: "kill-destination", point: "completed", scenario: "stalling" },
  { kind: "kill-source", point: "active", scenario: "stalling" },
  { kind: "kill-source", point: "pre-switchover", scenario: "stalling" },
  { kind: "cut-connection", point: "active", scenario: "stalling" },
  { kind: "cut-connection", point: "pre-switchover", scenario: "stalling" },
  { kind: "timeout", point: "random", scenario: "stalling" },
  { kind: "sigint", point: "active", scenario: "stalling" },
  { kind: "sigterm", point: "active", scenario: "stalling" },
  { kind: "kill-destination", point: "copy", scenario: "copy-storage" },
  { kind: "kill-destination", point: "pre-switchover", scenario: "copy-storage" },
  { kind: "kill-destination", point: "completed", scenario: "copy-storage" },
  { kind: "kill-source", point: "copy", scenario: "copy-storage" },
  { kind: "cut-connection", point: "pre-switchover", scenario: "copy-storage" },
  { kind: "timeout", point: "random", scenario: "copy-storage" },
  { kind: "sigterm", point: "copy", scenario: "copy-storage" },
  { kind: "sigint", point: "setup", scenario: "copy-storage" },
];

export interface FaultReport {
  index: number;
  seed: number;
  pair: string;
  case: FaultCase;
  /** The fault hit the run (it did not complete before the fault landed). */
  injected: boolean;
  /** The run's error code (or "ok"). */
  code: string;
  failures: string[];
  ms: number;
}

const EXPECTED: Record<FaultKind, readonly string[]> = {
  "kill-destination": ["DESTINATION_LOST", "MIGRATION_FAILED", "COPY_FAILED"],
  "kill-source": ["SOURCE_LOST"],
  "cut-connection": ["MIGRATION_FAILED", "DESTINATION_LOST"],
  timeout: ["TIMEOUT"],
  sigint: ["INTERRUPTED"],
  sigterm: ["INTERRUPTED"],
};

/** bitferry must come back within this long after any fault (a hang is a failure). */
const RETURN_BOUND_MS = 150_000;

function trigger(point: FaultPoint): (e: ProgressEvent) => boolean {
  switch (point) {
    case "setup":
      return (e) => e.phase === "setup";
    case "copy":
      return (e) => e.phase === "copy" && e.copiedBytes !== undefined && e.message === undefined;
    case "active":
      return (e) => e.status === "active";
    case "pre-switchover":
      return (e) => e.status === "pre-switchover";
    case "completed":
      return (e) => e.phase === "completing";
    case "random":
      return () => false;
  }
}

/** The progress line the CLI prints on stderr at a point (non-TTY format). */
function cliTrigger(point: FaultPoint): RegExp {
  switch (point) {
    case "setup":
      return /\] setup/;
    case "copy":
      return /\] copy .*copied/;
    case "active":
      return /\(active\)/;
    case "pre-switchover":
      return /\(pre-switchover\)/;
    case "completed":
      return /\] completing/;
    case "random":
      return /$^/;
  }
}

/** The arguments a lab QEMU was started with after the lab's own (monitors, build, -S, -incoming). */
function userArgs(proc: QemuProcess): string[] {
  let rest = proc.argv.slice(
    proc.argv.indexOf("chardev=usermon,mode=control") + 1 + proc.build.extraArgs.length,
  );
  if (rest[0] === "-S") rest = rest.slice(1);
  if (rest[0] === "-incoming") rest = rest.slice(2);
  return rest;
}

/** Image file → node-name of every writable or read-only qcow2 node of a QEMU. */
async function imagesOf(proc: QemuProcess): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const n of await proc.monitor.namedBlockNodes()) {
    const file = n.image.filename ?? n.file;
    if (n.drv === "qcow2" && file !== undefined) out.set(file, n["node-name"]);
  }
  return out;
}

async function withBound<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new Error(`${what} did not return within ${RETURN_BOUND_MS / 1000} s (a hang)`));
    }, RETURN_BOUND_MS);
  });
  try {
    return await Promise.race([p, bound]);
  } finally {
    clearTimeout(timer);
  }
}

export function faultCaseOf(index: number): FaultCase {
  const c = FAULT_CASES[index % FAULT_CASES.length];
  if (!c) throw new Error("no fault cases");
  return c;
}

/**
 * Injects fault `index` of run `seed` into a real migration through bitferry, then checks the guarantee: the
 * source runs as before with every bitmap present, unchanged and not busy, bitferry's changes are undone, a clean
 * shutdown stores its persistent bitmaps without in-use (read back with bitferry's own qcow2 reader), and a fresh
 * migration of the restarted source to a new destination succeeds.
 */
export async function runFault(seed: number, index: number): Promise<FaultReport> {
  const t0 = Date.now();
  const rng = Rng.for(seed, index, 1);
  const c = faultCaseOf(index);
  const pairCase = buildPairCases[rng.int(0, buildPairCases.length - 1)] ?? buildPairCases[0];
  if (!pairCase) throw new Error("no QEMU build pair");
  const f = new Findings();
  const report: FaultReport = {
    index,
    seed,
    pair: pairCase.name,
    case: c,
    injected: false,
    code: "?",
    failures: f.list,
    ms: 0,
  };
  const lab = Lab.create();
  let relay: Relay | undefined;
  try {
    const copy = c.scenario === "copy-storage";
    const paused = rng.chance(0.5);
    const scenario = copy ? S.copyStorage : S.stallingPersistent;
    const pair = await scenario.setup(lab, { ...pairCase.options, paused });
    const { source, destination } = pair;
    const srcBefore = await bitmapStates(source);
    const srcSettings = await migrationSettings(source);
    const images = await imagesOf(source);
    const readOnly = new Set(
      (await source.monitor.namedBlockNodes()).filter((n) => n.ro).map((n) => n["node-name"]),
    );
    // What each image stores before the run (a killed source keeps only these, flagged in use).
    const storedAtStart = new Set<string>();
    for (const [file, node] of images) {
      for (const b of (await inspectImage(file)).bitmaps) storedAtStart.add(`${node}/${b.name}`);
    }
    const policyDoc = copy ? { map: [{ source: "disk0", target: "vda" }] } : {};
    const policy = validatePolicy(policyDoc, "fault-policy");

    let uri = `unix:${lab.path("mig.sock")}`;
    if (c.kind === "cut-connection") {
      // The destination listens on its own port; bitferry's uri points at the relay in between. Its own
      // migrate-incoming then finds the incoming side already started, as with `-incoming tcp:...`.
      const port = await freePort();
      await destination.monitor.migrateIncoming(`tcp:127.0.0.1:${port}`);
      relay = await Relay.start(port);
      uri = `tcp:127.0.0.1:${relay.port}`;
    }

    const fire = (): void => {
      switch (c.kind) {
        case "kill-destination":
          destination.kill("SIGKILL");
          break;
        case "kill-source":
          source.kill("SIGKILL");
          break;
        case "cut-connection":
          relay?.cut();
          break;
        case "timeout":
        case "sigint":
        case "sigterm":
          // Injected by the run itself (--timeout) or sent to the CLI process.
          break;
      }
    };

    let result: MigrateResult | undefined;
    let cli: CliRun | undefined;
    if (c.kind === "sigint" || c.kind === "sigterm" || (c.kind === "timeout" && !copy && rng.chance(0.4))) {
      const policyFile = lab.path("policy.json");
      await writeFile(policyFile, JSON.stringify(policyDoc));
      const args = [
        "migrate",
        "--source",
        source.monitorSocket,
        "--dest",
        destination.monitorSocket,
        "--uri",
        uri,
        "--policy",
        policyFile,
        "--max-downtime",
        "60000",
        "--json",
        ...(copy ? ["--copy-storage"] : []),
        // The stall alone keeps the migration active for 1.5 s after it starts.
        ...(c.kind === "timeout" ? ["--timeout", "1"] : []),
      ];
      let pid = -1;
      const signal = c.kind === "sigint" ? "SIGINT" : "SIGTERM";
      const re = cliTrigger(c.point);
      cli = await withBound(
        spawnCli(args, {
          onSpawn: (p) => (pid = p),
          onStderr: (text) => {
            if ((c.kind === "sigint" || c.kind === "sigterm") && pid > 0 && re.test(text)) {
              process.kill(pid, signal);
              pid = -1;
            }
          },
        }),
        "bitferry migrate (CLI)",
      );
      f.check(!/\n\s+at /.test(cli.stderr), `the CLI printed a stack trace: ${short(cli.stderr)}`);
      try {
        result = cli.json() as MigrateResult;
      } catch {
        f.check(false, `the CLI printed no single JSON document: ${short(cli.stdout)}`);
      }
      const want = c.kind === "sigint" ? 130 : c.kind === "sigterm" ? 143 : 1;
      if (result?.ok === false) f.equal(cli.code, want, "CLI exit status");
    } else {
      // Early enough to land before the migration completes: the stall holds it 1.5 s, a disk copy less.
      const timeoutMs = c.kind === "timeout" ? rng.int(copy ? 20 : 200, copy ? 400 : 1400) : undefined;
      let fired = false;
      const when = trigger(c.point);
      result = await withBound(
        migrate({
          source: source.monitor,
          destination: destination.monitor,
          uri,
          policy,
          copyStorage: copy,
          maxDowntimeMs: 60_000,
          ...(timeoutMs !== undefined ? { timeoutMs } : {}),
          onProgress: (e) => {
            if (!fired && when(e)) {
              fired = true;
              fire();
            }
          },
        }),
        "migrate()",
      );
    }
    report.code = result?.error?.code ?? (result?.ok ? "ok" : "?");
    report.injected = result !== undefined && !result.ok;

    if (!result) return report;
    if (!report.injected) {
      // The migration finished before the fault landed: then it must simply have succeeded.
      f.equal(result.phase, "verified", "a run the fault missed: phase");
      return report;
    }
    f.check(
      EXPECTED[c.kind].includes(report.code),
      `error code ${report.code} (${short(result.error?.message)}), expected ${EXPECTED[c.kind].join(" or ")}`,
    );
    f.equal(result.phase, "failed", "phase after a fault");
    for (const r of result.source.repaired) {
      f.check(r.ok && r.sha256After === r.sha256Before, `repair of ${r.node}/${r.name}: ${short(r)}`);
    }

    if (c.kind === "kill-source") {
      await pair.source.exited;
      await freshMigration(f, lab, pair, { srcBefore, images, readOnly, storedAtStart }, policy, copy, true);
      return report;
    }
    f.check(source.alive, "the source is alive");
    if (!source.alive) return report;
    await checkSourceAlive(f, source, srcBefore, srcSettings.status);
    const settings = await migrationSettings(source);
    f.equal(settings.capabilities, srcSettings.capabilities, "source capabilities put back");
    f.equal(
      withoutMapping(settings.parameters),
      withoutMapping(srcSettings.parameters),
      "source parameters put back",
    );
    if (copy) await checkNoLeftovers(f, source, destination);

    // A clean shutdown stores every persistent bitmap, without in-use, with its content.
    await source.stop();
    f.equal(source.exitInfo?.code, 0, "the source quit cleanly");
    for (const [file, node] of images) await checkStored(f, file, node, srcBefore);

    await freshMigration(f, lab, pair, { srcBefore, images, readOnly, storedAtStart }, policy, copy, false);
  } catch (err) {
    f.check(false, `threw ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  } finally {
    await relay?.close();
    await lab.cleanup();
    report.ms = Date.now() - t0;
  }
  return report;
}

function withoutMapping(p: unknown): unknown {
  if (typeof p !== "object" || p === null) return p;
  const { ["block-bitmap-mapping"]: _m, ...rest } = p as Record<string, unknown>;
  return rest;
}

/** No export, NBD client node, job or temporary bitmap of bitferry's is left (--copy-storage). */
async function checkNoLeftovers(f: Findings, source: QemuProcess, destination: QemuProcess): Promise<void> {
  const nodes = await source.monitor.namedBlockNodes();
  f.equal(
    nodes.filter((n) => n.drv === "nbd" || n["node-name"].startsWith("bf-")).map((n) => n["node-name"]),
    [],
    "NBD client nodes left on the source",
  );
  f.equal(await source.monitor.blockJobs(), [], "block jobs left on the source");
  if (destination.alive) {
    try {
      f.equal(await destination.qmp.execute("query-block-exports"), [], "exports left on the destination");
    } catch {
      // It may be on its way out (a failed incoming migration ends the destination).
    }
  }
}

/**
 * The restarted source (same images) migrates to a fresh destination. After the source was killed its persistent
 * bitmaps are flagged in use: the plan must refuse them as inconsistent, and after the documented fix (remove
 * them) the migration succeeds.
 */
async function freshMigration(
  f: Findings,
  lab: Lab,
  pair: S.ScenarioPair,
  before: {
    srcBefore: Map<string, BitmapState>;
    images: Map<string, string>;
    readOnly: Set<string>;
    storedAtStart: Set<string>;
  },
  policy: ReturnType<typeof validatePolicy>,
  copy: boolean,
  sourceKilled: boolean,
): Promise<void> {
  const { srcBefore, images, readOnly, storedAtStart } = before;
  const old = pair.source;
  const src2 = await lab.start({ label: "src2", args: userArgs(old), build: old.build });
  let dstArgs = userArgs(pair.destination);
  if (copy) {
    // A new destination gets new, empty images.
    for (const name of ["dst-a.qcow2", "dst-sys.qcow2"]) {
      const fresh = await lab.createImage(`fresh-${name}`, 64 * S.MiB);
      dstArgs = dstArgs.map((a) => a.split(lab.path(name)).join(fresh));
    }
  }
  const dst2 = await lab.start({
    label: "dst2",
    args: dstArgs,
    incoming: "defer",
    paused: true,
    build: pair.destination.build,
  });
  const loaded = await bitmapStates(src2);
  // Generated node-names change at every start: follow each node by its image.
  const after = await imagesOf(src2);
  const renamed = new Map([...images].map(([file, node]) => [node, after.get(file) ?? node]));
  const persistent = [...srcBefore.values()].filter((b) => b.persistent);
  for (const b of persistent) {
    const now = loaded.get(`${renamed.get(b.node) ?? b.node}/${b.name}`);
    // A killed QEMU never stored the persistent bitmaps it made: only those stored before it ran come back.
    const lost = sourceKilled && !storedAtStart.has(`${b.node}/${b.name}`);
    if (lost) {
      f.equal(now, undefined, `${b.node}/${b.name} (never stored) after the source was killed`);
      continue;
    }
    if (!f.check(now !== undefined, `restarted source lacks ${b.node}/${b.name}`) || !now) continue;
    if (sourceKilled && !readOnly.has(b.node)) {
      f.equal(now.inconsistent, true, `${b.name} after the source was killed: inconsistent`);
    } else {
      f.equal(now.inconsistent, false, `${b.name} reloaded: inconsistent`);
      f.equal(now.sha256, b.sha256, `${b.name} reloaded: content`);
    }
  }
  if (sourceKilled && [...loaded.values()].some((b) => b.inconsistent)) {
    const planned = await planMigration(src2.monitor, dst2.monitor, { policy, copyStorage: copy });
    f.check(
      planned.plan.errors.some((e) => e.code === "BITMAP_INCONSISTENT"),
      `the plan after a killed source: ${short(planned.plan.errors.map((e) => e.code))}`,
    );
    for (const b of loaded.values()) if (b.inconsistent) await src2.monitor.removeBitmap(b.node, b.name);
  }
  const r = await withBound(
    migrate({
      source: src2.monitor,
      destination: dst2.monitor,
      uri: `unix:${lab.path("mig2.sock")}`,
      policy,
      copyStorage: copy,
      maxDowntimeMs: 60_000,
    }),
    "the fresh migration",
  );
  f.check(r.ok && r.phase === "verified", () => `the fresh migration failed: ${short(r.error)}`);
  for (const v of r.bitmaps) f.equal(v.verified, "strict", `fresh migration: ${v.target.bitmap} verified`);
}
