import { writeFile } from "node:fs/promises";
import { stringify } from "yaml";
import { Lab } from "../../src/lab/lab.js";
import { migrate, type MigrateResult } from "../../src/migrate/run.js";
import { planMigration, type PlanResult } from "../../src/migrate/plan.js";
import { parsePolicy } from "../../src/policy/file.js";
import type { Plan } from "../../src/policy/types.js";
import { bitmapPayloadBytes } from "../../src/policy/convergence.js";
import { buildPairCases } from "../helpers/pairs.js";
import { runCli } from "../helpers/cli.js";
import { bitmapStates, Findings, migrationSettings, short, type BitmapState } from "./checks.js";
import type { SetupSpec } from "./model.js";
import { realize, type Realized } from "./setup.js";

export interface ScenarioReport {
  index: number;
  seed: number;
  pair: string;
  planOk: boolean;
  /** Plan error codes (sorted, unique). */
  errorCodes: string[];
  /** Bitmaps the plan migrated and skipped. */
  migrated: number;
  skipped: number;
  outcome: string;
  failures: string[];
  /** Known QEMU defects this run ran into (see docs/reliability.md), which its checks allowed for. */
  notes: string[];
  ms: number;
}

/**
 * One differential run: realize the setup, plan it (library and CLI), migrate it through bitferry with a paused
 * (`-S`) destination, and compare what the destination holds with what the plan promised. A plan with errors must
 * leave both sides untouched.
 */
export async function runScenario(spec: SetupSpec): Promise<ScenarioReport> {
  const t0 = Date.now();
  const pair = buildPairCases[spec.buildPair] ?? buildPairCases[0];
  if (!pair) throw new Error("no QEMU build pair");
  const f = new Findings();
  const report: ScenarioReport = {
    index: spec.index,
    seed: spec.seed,
    pair: pair.name,
    planOk: false,
    errorCodes: [],
    migrated: 0,
    skipped: 0,
    outcome: "setup",
    failures: f.list,
    notes: [],
    ms: 0,
  };
  const lab = Lab.create();
  try {
    const world = await realize(lab, spec, pair.options);
    report.outcome = "planned";
    await differential(lab, spec, world, f, report);
  } catch (err) {
    f.check(
      false,
      `${report.outcome}: threw ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`,
    );
  } finally {
    await lab.cleanup();
    report.ms = Date.now() - t0;
  }
  return report;
}

async function differential(
  lab: Lab,
  spec: SetupSpec,
  world: Realized,
  f: Findings,
  report: ScenarioReport,
): Promise<void> {
  const { source, destination } = world;
  const srcBefore = await bitmapStates(source);
  const dstBefore = await bitmapStates(destination);
  const srcSettings = await migrationSettings(source);
  const dstSettings = await migrationSettings(destination);

  const file = lab.path(`policy.${spec.policy.format}`);
  const text =
    spec.policy.format === "json" ? JSON.stringify(spec.policy.doc, null, 1) : stringify(spec.policy.doc);
  await writeFile(file, text);
  const policy = parsePolicy(text, file);
  const request = {
    policy,
    postcopy: spec.postcopy,
    copyStorage: spec.copyStorage,
    // What the CLI tells the planner about the run's addresses (its plan reports `transport`).
    transport: { source: source.monitorSocket, destination: destination.monitorSocket, insecure: false },
  };
  const planned = await planMigration(source.monitor, destination.monitor, request);
  const plan = planned.plan;
  report.planOk = plan.ok;
  report.errorCodes = [...new Set(plan.errors.map((e) => e.code))].sort();
  report.migrated = plan.bitmaps.filter((b) => b.action === "migrate").length;
  report.skipped = plan.bitmaps.filter((b) => b.action === "skip").length;
  checkPlanContract(f, planned, spec);

  // The CLI reads the same policy file and must print the same plan.
  const cli = await runCli([
    "plan",
    "--source",
    source.monitorSocket,
    "--dest",
    destination.monitorSocket,
    "--policy",
    file,
    "--json",
    ...(spec.postcopy ? ["--postcopy"] : []),
    ...(spec.copyStorage ? ["--copy-storage"] : []),
  ]);
  f.equal(cli.code, plan.ok ? 0 : 1, "bitferry plan exit status");
  try {
    const { error, ...printed } = cli.json() as { error?: { code: string } };
    f.equal(printed, JSON.parse(JSON.stringify(plan)), "bitferry plan --json equals planMigration");
    f.equal(
      error?.code,
      plan.ok ? undefined : "PLAN_ERRORS",
      "bitferry plan --json: error of a plan with errors",
    );
  } catch {
    f.check(
      false,
      `bitferry plan --json printed no JSON document: ${short(cli.stdout)} ${short(cli.stderr)}`,
    );
  }

  report.outcome = "migrating";
  const r = await migrate({
    source: source.monitor,
    destination: destination.monitor,
    uri: `unix:${lab.path("mig.sock")}`,
    ...request,
    maxDowntimeMs: spec.maxDowntimeMs,
    timeoutMs: 120_000,
    resume: spec.resume,
  });
  report.outcome = r.ok ? "migrated" : `failed ${r.error?.code ?? "?"}`;
  f.equal(
    JSON.parse(JSON.stringify(r.plan)),
    JSON.parse(JSON.stringify(plan)),
    "migrate's plan equals plan's",
  );

  if (!plan.ok) {
    report.outcome = "refused";
    f.equal(r.ok, false, "a plan with errors migrates nothing: ok");
    f.equal(r.phase, "planned", "a plan with errors: phase");
    f.equal(r.error?.code, "PLAN_ERRORS", "a plan with errors: error code");
    f.equal(
      await migrationSettings(source),
      srcSettings,
      "source capabilities, parameters, migration and run state",
    );
    f.equal(
      await migrationSettings(destination),
      dstSettings,
      "destination capabilities, parameters, migration and run state",
    );
    f.equal(await bitmapStates(source), srcBefore, "source bitmaps after a refused plan");
    f.equal(await bitmapStates(destination), dstBefore, "destination bitmaps after a refused plan");
    return;
  }
  if (
    !f.check(
      r.ok && r.phase === "verified",
      () => `the plan had no errors, but the migration ended ${r.phase}: ${short(r.error)}`,
    )
  )
    return;
  await checkDestination(f, spec, world, planned, r, srcBefore, dstBefore, report.notes);
  // What bitferry changed is put back (DESIGN 4.9); block-bitmap-mapping cannot be unset.
  const srcAfter = await migrationSettings(source);
  f.equal(srcAfter.capabilities, srcSettings.capabilities, "source capabilities restored");
  f.equal(
    withoutMapping(srcAfter.parameters),
    withoutMapping(srcSettings.parameters),
    "source migration parameters restored (but the mapping)",
  );
  f.equal(srcAfter.status, "postmigrate", "source run state after success");
  const dstAfter = await migrationSettings(destination);
  f.equal(dstAfter.capabilities, dstSettings.capabilities, "destination capabilities restored");
}

function withoutMapping(p: unknown): unknown {
  if (typeof p !== "object" || p === null) return p;
  const { ["block-bitmap-mapping"]: _m, ...rest } = p as Record<string, unknown>;
  return rest;
}

/** The plan document's own rules (DESIGN 5), on every generated plan. */
function checkPlanContract(f: Findings, planned: PlanResult, spec: SetupSpec): void {
  const plan: Plan = planned.plan;
  f.equal(plan.ok, plan.errors.length === 0, "plan.ok iff no errors");
  const key = (e: unknown): string => JSON.stringify(e);
  const top = new Set(plan.errors.map(key));
  for (const b of plan.bitmaps) {
    const where = `${b.source.node}/${b.source.bitmap}`;
    if (b.errors.length > 0) {
      f.equal(b.action, "error", `${where}: action of a bitmap with errors`);
      f.equal(b.rule, b.errors[0]?.code, `${where}: rule is the first error's code`);
      for (const e of b.errors)
        f.check(top.has(key(e)), `${where}: error ${e.code} missing from the top-level errors`);
      for (const e of b.errors) {
        f.equal(
          [e.node, e.bitmap],
          [b.source.node, b.source.bitmap],
          `${where}: error ${e.code} names the source bitmap`,
        );
      }
    } else if (b.action === "migrate")
      f.check(b.target !== null, `${where}: a migrating bitmap without target`);
    else f.equal(b.target, null, `${where}: a skipped bitmap's target`);
  }
  if (spec.copyStorage || !plan.ok) return;
  const nodes = new Map(planned.source.graph.nodes.map((n) => [n.name, n]));
  let payload = 0;
  for (const b of plan.bitmaps) {
    if (b.action !== "migrate") continue;
    payload += bitmapPayloadBytes(nodes.get(b.source.node)?.size ?? 0, b.source.granularity);
  }
  f.equal(plan.payloadBytes, payload, "payloadBytes");
  f.equal(
    plan.mapping.source.reduce((s, n) => s + n.bitmaps.length, 0),
    plan.bitmaps.filter((b) => b.action === "migrate").length,
    "bitmaps in the source mapping",
  );
}

interface Expected {
  why: string;
  persistent?: boolean;
  recording?: boolean;
  granularity?: number;
  inconsistent?: boolean;
  sha256?: string;
  /** The count must equal this (a larger destination node hashes differently). */
  count?: number;
  /** The count must be at least this (content the switchover may have added to, or merged from layers). */
  minCount?: number;
}

/**
 * What the destination must hold after a successful migration, bitmap by bitmap, and nothing else:
 * - every `migrate` row under its planned name, persistence and enabled state, with the source's content;
 * - the destination's own bitmaps (in memory before, or stored in its own images: loaded at activation);
 * - for an image both sides open (shared storage), what the source leaves in it at the switchover: every
 *   persistent bitmap of that node it did not migrate (stored at inactivation, loaded by the destination at
 *   activation, same content), and the stale in-use copy of a stored bitmap it migrated under another name or to
 *   another node (loaded inconsistent);
 * - the bitmaps of a shared read-only backing image, as they are stored.
 */
async function checkDestination(
  f: Findings,
  spec: SetupSpec,
  world: Realized,
  planned: PlanResult,
  r: MigrateResult,
  srcBefore: Map<string, BitmapState>,
  dstBefore: Map<string, BitmapState>,
  notes: string[],
): Promise<void> {
  const { source, destination } = world;
  const plan = planned.plan;
  // QEMU 10.0 reports each node's activation. It leaves some -blockdev nodes without parents active on a source
  // that completed (and inactive on a destination after `cont`) when a named drive or an NBD export exists
  // (docs/reliability.md): a source that keeps an image active neither stores its bitmaps there nor lets go of
  // it. Checks that depend on the image are skipped for those nodes; every migrated bitmap is still checked.
  const stillActive = new Set(activeNodes(await rawNodes(source), true));
  if (stillActive.size > 0)
    notes.push(`QEMU left ${[...stillActive].join(", ")} active on the completed source`);
  // QEMU 10.0 keeps a -S destination's images inactive until `cont` (7.2 activates them at the end of the
  // migration): stored bitmaps are loaded only then. Compare the activated destination.
  const state = (await destination.monitor.status()).status;
  f.equal(state, spec.resume ? "running" : "paused", "destination run state after success");
  let imagesUsable = true;
  if (state !== "running") {
    try {
      await destination.monitor.cont();
    } catch (err) {
      const lock = String(err).includes("lock") && stillActive.size > 0;
      f.check(lock, `cont on the destination: ${String(err)}`);
      imagesUsable = false;
    }
  }
  const inactive = new Set(activeNodes(await rawNodes(destination), false));
  if (inactive.size > 0 && imagesUsable)
    notes.push(`QEMU left ${[...inactive].join(", ")} inactive on the destination`);
  const srcNodes = new Map(planned.source.graph.nodes.map((n) => [n.name, n]));
  const dstNodesAfter = await destination.monitor.namedBlockNodes();
  const dstSize = new Map(dstNodesAfter.map((n) => [n["node-name"], n.image["virtual-size"]]));
  const dstNodeOfFile = (file: string | undefined): string | undefined =>
    dstNodesAfter.find((n) => n.drv === "qcow2" && (n.file === file || n.image.filename === file))?.[
      "node-name"
    ];
  const srcNodeOfFile = (file: string | undefined): string | undefined =>
    planned.source.graph.nodes.find((n) => n.driver === "qcow2" && n.filename === file)?.name;
  /** Whether what an image holds reached the destination node: both sides handed it over as QEMU should. */
  const imageHandedOver = (srcNode: string | undefined, dstNode: string): boolean =>
    imagesUsable && !inactive.has(dstNode) && (srcNode === undefined || !stillActive.has(srcNode));

  const expected = new Map<string, Expected>();
  const skipped = new Set<string>();
  const migrateRows = plan.bitmaps.filter((b) => b.action === "migrate");
  const byTarget = new Map<string, typeof migrateRows>();
  for (const b of migrateRows) {
    const t = b.target;
    if (!t) continue;
    const k = `${t.node}/${t.bitmap}`;
    byTarget.set(k, [...(byTarget.get(k) ?? []), b]);
  }
  for (const [k, rows] of byTarget) {
    const b = rows[0];
    const t = b?.target;
    if (!b || !t) continue;
    const src = srcBefore.get(`${b.source.node}/${b.source.bitmap}`);
    const e: Expected = {
      why: `migrated from ${b.source.node}/${b.source.bitmap} (${b.rule})`,
      persistent: t.persistent,
      recording: t.enabled,
      granularity: b.source.granularity,
      inconsistent: false,
    };
    const merged = rows.length > 1 || b.rule === "chain-merge";
    const protocol = srcNodes.get(b.source.node)?.driver === "file";
    const larger = (dstSize.get(t.node) ?? 0) !== (srcNodes.get(b.source.node)?.size ?? 0);
    if (merged) {
      // The layers travel as one temporary bitmap on the top node: its granularity is the stream row's.
      const stream = r.bitmaps.find((v) => v.target.node === t.node && v.target.bitmap === t.bitmap);
      e.granularity = stream?.source.granularity ?? b.source.granularity;
      e.minCount = Math.max(...rows.map((x) => x.source.dirtyBytes));
    } else if (protocol) e.minCount = src?.count ?? 0;
    else if (larger) e.count = src?.count ?? 0;
    else if (src) e.sha256 = src.sha256;
    expected.set(k, e);
  }
  for (const [k, b] of dstBefore) {
    if (expected.has(k)) continue;
    const own: Expected = { ...pick(b), why: "the destination's own in-memory bitmap" };
    if (spec.copyStorage && b.recording) {
      // The disk copy writes the destination's disk: a recording bitmap there records it.
      delete own.sha256;
      own.minCount = b.count;
    }
    expected.set(k, own);
  }
  spec.disks.forEach((d, i) => {
    const files = world.files[i];
    const t = d.dst;
    if (!files || !t) return;
    if (!d.shared) {
      const node = dstNodeOfFile(files.destination);
      if (node === undefined) return;
      if (!imageHandedOver(undefined, node)) {
        skipped.add(node);
        return;
      }
      for (const s of t.stored) {
        const k = `${node}/${s.name}`;
        if (!expected.has(k))
          expected.set(k, {
            why: "stored in the destination's own image",
            persistent: true,
            recording: s.enabled,
            granularity: s.granularity,
            inconsistent: s.inUse,
            // Exporting the node for --copy-storage activates it: an enabled stored bitmap records the copy.
            ...(spec.copyStorage && s.enabled ? { minCount: 0 } : { count: 0 }),
          });
      }
      return;
    }
    for (const [file, storedAtStart] of [
      [files.source, new Set(d.stored.map((s) => s.name))],
      [files.base, new Set(d.backing?.stored.map((s) => s.name) ?? [])],
    ] as const) {
      if (file === undefined) continue;
      const sNode = srcNodeOfFile(file);
      const dNode = dstNodeOfFile(file);
      if (sNode === undefined || dNode === undefined) continue;
      if (!imageHandedOver(sNode, dNode)) {
        skipped.add(dNode);
        continue;
      }
      for (const b of srcBefore.values()) {
        if (b.node !== sNode || !b.persistent) continue;
        const k = `${dNode}/${b.name}`;
        if (expected.has(k)) continue;
        const migrated = migrateRows.some((m) => m.source.node === sNode && m.source.bitmap === b.name);
        if (migrated || b.inconsistent) {
          if (storedAtStart.has(b.name))
            expected.set(k, {
              why: `the stale in-use copy of ${sNode}/${b.name} in the shared image`,
              persistent: true,
              inconsistent: true,
              count: 0,
            });
        } else {
          expected.set(k, {
            ...pick(b),
            why: `stored in the shared image by the source (${sNode}/${b.name})`,
          });
        }
      }
    }
  });

  const actual = await bitmapStates(destination);
  // Bitmaps loaded from an image that was not handed over are not judged (their expectations were skipped).
  for (const k of [...actual.keys()])
    if (skipped.has(actual.get(k)?.node ?? "") && !expected.has(k)) actual.delete(k);
  for (const [k, e] of expected) {
    const a = actual.get(k);
    if (!f.check(a !== undefined, `destination lacks ${k} (${e.why})`) || !a) continue;
    const w = `destination ${k} (${e.why})`;
    if (e.persistent !== undefined) f.equal(a.persistent, e.persistent, `${w}: persistent`);
    if (e.recording !== undefined) f.equal(a.recording, e.recording, `${w}: recording`);
    if (e.granularity !== undefined) f.equal(a.granularity, e.granularity, `${w}: granularity`);
    if (e.inconsistent !== undefined) f.equal(a.inconsistent, e.inconsistent, `${w}: inconsistent`);
    f.equal(a.busy, false, `${w}: busy`);
    if (e.sha256 !== undefined) f.equal(a.sha256, e.sha256, `${w}: content`);
    if (e.count !== undefined) f.equal(a.count, e.count, `${w}: dirty bytes`);
    if (e.minCount !== undefined)
      f.check(a.count >= e.minCount, `${w}: dirty bytes ${a.count} < ${e.minCount}`);
  }
  for (const k of actual.keys()) f.check(expected.has(k), `unexpected bitmap ${k} on the destination`);

  for (const v of r.bitmaps) {
    const protocol = srcNodes.get(v.source.node)?.driver === "file";
    const larger = (dstSize.get(v.target.node) ?? 0) !== (srcNodes.get(v.source.node)?.size ?? 0);
    const allowed = protocol ? ["strict", "weak"] : larger ? ["count"] : ["strict"];
    f.check(
      allowed.includes(v.verified),
      `${v.target.node}/${v.target.bitmap} verified ${v.verified} (${v.reason ?? ""}), expected ${allowed.join(" or ")}`,
    );
  }
}

function pick(b: BitmapState): Expected {
  return {
    why: "",
    persistent: b.persistent,
    recording: b.recording,
    granularity: b.granularity,
    inconsistent: b.inconsistent,
    sha256: b.sha256,
  };
}

interface RawNode {
  "node-name": string;
  active?: boolean;
}

async function rawNodes(proc: Realized["source"]): Promise<RawNode[]> {
  return (await proc.qmp.execute("query-named-block-nodes", { flat: true })) as RawNode[];
}

/** Nodes whose `active` flag (QEMU 10.0+; absent before) equals `value`. */
function activeNodes(nodes: RawNode[], value: boolean): string[] {
  return nodes.filter((n) => n.active === value).map((n) => n["node-name"]);
}
