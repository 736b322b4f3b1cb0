import { buildGraph, buildIndexedGraph } from "../graph/build.js";
import { GraphLookup } from "../graph/lookup.js";
import type { BlockGraph } from "../graph/model.js";
import { compileRows } from "../mapping/compile.js";
import {
  decideRows,
  finishDecisions,
  type DecidedRows,
  type Decisions,
  type RowsInput,
} from "../policy/decide.js";
import { DEFAULT_POLICY } from "../policy/defaults.js";
import type { Plan, Policy } from "../policy/types.js";
import { planTransport, type TransportRequest } from "../policy/transport.js";
import type { PlanOptions, QemuFacts } from "../policy/work.js";
import { QemuMonitor } from "../qemu/monitor.js";
import { readSnapshot, startSnapshot, type QemuSnapshot, type SnapshotReading } from "../qemu/snapshot.js";
import { QmpClient } from "../qmp/client.js";

/** One line for a plan with errors: how many, and which (the error documents carry the details and fixes). */
export function planErrorsMessage(plan: Plan): string {
  return `the plan has ${plan.errors.length} error(s); nothing was changed on either side: ${plan.errors
    .map((e) => `${e.code}${e.bitmap !== null ? ` (${e.node ?? ""}/${e.bitmap})` : ""}`)
    .join(", ")}`;
}

export interface PlanRequest {
  policy?: Policy;
  postcopy?: boolean;
  copyStorage?: boolean;
  /** The addresses and transport flags of the run: the plan then reports `transport` and its exposures. */
  transport?: TransportRequest;
}

export interface SideState {
  snapshot: QemuSnapshot;
  graph: BlockGraph;
  facts: QemuFacts;
}

export interface PlanResult {
  plan: Plan;
  source: SideState;
  destination: SideState;
  decisions: Decisions;
}

export function factsOf(snap: QemuSnapshot): QemuFacts {
  const v = snap.version;
  return {
    features: snap.features,
    capabilities: snap.migrationCapabilities,
    downtimeLimitMs: snap.migrationParameters["downtime-limit"] ?? 300,
    maxBandwidth: snap.migrationParameters["max-bandwidth"],
    guestMemoryBytes: snap.guestMemoryBytes,
    version: `${v.major}.${v.minor}.${v.micro}`,
    migrationProperties: snap.migrationProperties,
    machineType: snap.machineType,
  };
}

/** Plans from what both QEMUs reported. Pure: this is what fixtures and benchmarks exercise. */
export function planFromSnapshots(
  source: QemuSnapshot,
  destination: QemuSnapshot,
  request: PlanRequest = {},
): PlanResult {
  const s = buildIndexedGraph(source);
  const d = buildIndexedGraph(destination);
  return finishPlan(
    startPlan(s.lookup, d.lookup, request),
    { snapshot: source, graph: s.graph, facts: factsOf(source) },
    { snapshot: destination, graph: d.graph, facts: factsOf(destination) },
    request,
  );
}

export function planFromGraphs(src: SideState, dst: SideState, request: PlanRequest = {}): PlanResult {
  return finishPlan(
    startPlan(new GraphLookup(src.graph), new GraphLookup(dst.graph), request),
    src,
    dst,
    request,
  );
}

/** The part of a plan that needs only the two graphs (decideRows). */
interface StartedPlan {
  input: RowsInput;
  rows: DecidedRows;
}

function startPlan(source: GraphLookup, destination: GraphLookup, request: PlanRequest): StartedPlan {
  const options: PlanOptions = {
    postcopy: request.postcopy ?? false,
    copyStorage: request.copyStorage ?? false,
  };
  const input: RowsInput = {
    source: source.graph,
    destination: destination.graph,
    policy: request.policy ?? DEFAULT_POLICY,
    options,
    lookups: { source, destination },
  };
  return { input, rows: decideRows(input) };
}

function finishPlan(started: StartedPlan, src: SideState, dst: SideState, request: PlanRequest): PlanResult {
  const { options } = started.input;
  const decisions = finishDecisions(started.rows, {
    ...started.input,
    sourceQemu: src.facts,
    destinationQemu: dst.facts,
  });
  // The stream rows, not every row: a row that does not travel is never a stream row later.
  const mapping = compileRows(decisions.streams, {
    source: src.facts.features.mappingTransform,
    destination: dst.facts.features.mappingTransform,
  });
  const plan: Plan = {
    version: 1,
    ok: decisions.errors.length === 0,
    bitmaps: decisions.bitmaps,
    errors: decisions.errors,
    warnings: decisions.warnings,
    mapping,
    payloadBytes: decisions.payloadBytes,
    ...(options.copyStorage
      ? {
          disks: decisions.disks,
          merges: decisions.merges.map((g) => ({
            node: g.disk.name,
            temporary: g.temporary,
            bitmaps: g.sources,
            target: g.representative.entry.target
              ? { node: g.representative.entry.target.node, bitmap: g.representative.entry.target.bitmap }
              : null,
          })),
        }
      : {}),
  };
  if (request.transport) {
    const t = planTransport({ ...request.transport, copyStorage: options.copyStorage });
    plan.errors = [...plan.errors, ...t.errors];
    plan.warnings = [...plan.warnings, ...t.warnings];
    plan.ok = plan.errors.length === 0;
    plan.transport = t.transport;
  }
  return { plan, source: src, destination: dst, decisions };
}

function monitorOf(m: QmpClient | QemuMonitor): QemuMonitor {
  return m instanceof QmpClient ? new QemuMonitor(m) : m;
}

/** Reads one QEMU's block graph. */
export async function readGraph(qemu: QmpClient | QemuMonitor): Promise<BlockGraph> {
  return buildGraph(await readSnapshot(monitorOf(qemu)));
}

/**
 * Plans a migration between two live QEMUs: reads both, decides every bitmap's fate, checks everything QEMU would
 * fail on. Changes nothing on either side.
 */
export async function planMigration(
  source: QmpClient | QemuMonitor,
  destination: QmpClient | QemuMonitor,
  request: PlanRequest = {},
): Promise<PlanResult> {
  const src = startSnapshot(monitorOf(source));
  const dst = startSnapshot(monitorOf(destination));
  // Each side's graph is built as soon as its block replies are in, and the rows decided once both are: QEMU
  // answers the schema last, and takes tens of milliseconds to build it. A problem with those replies is reported
  // by the snapshots below, as readSnapshot reports it.
  const indexedGraphOf = async (r: SnapshotReading): Promise<GraphLookup> =>
    buildIndexedGraph(await r.blocks).lookup;
  const lookups = await Promise.all([indexedGraphOf(src), indexedGraphOf(dst)]).catch(() => undefined);
  const started = lookups && startPlan(lookups[0], lookups[1], request);
  const [s, d] = await Promise.all([src.snapshot, dst.snapshot]);
  if (!started) return planFromSnapshots(s, d, request);
  return finishPlan(
    started,
    { snapshot: s, graph: started.input.source, facts: factsOf(s) },
    { snapshot: d, graph: started.input.destination, facts: factsOf(d) },
    request,
  );
}
