import type { QmpClient } from "../qmp/client.js";
import { QmpCommandError } from "../qmp/errors.js";
import { validateReply, type QemuFeatures, type QemuMonitor } from "./monitor.js";
import {
  BlockGraph,
  BlockInfoList,
  MemorySizeSummary,
  MigrationCapabilityList,
  MigrationParameters,
  NamedBlockNodes,
  StatusInfo,
  VersionInfo,
  type BlockDeviceInfo,
  type BlockInfo,
} from "./replies.js";

/**
 * Everything bitferry reads from one QEMU before planning, as the raw QMP replies. Raw, so that fixtures captured
 * from real QEMU (scripts/capture-fixtures.ts) replay exactly what QEMU said.
 */
export interface RawSnapshot {
  version: unknown;
  status: unknown;
  namedNodes: unknown;
  blockBackends: unknown;
  /** `x-debug-query-block-graph`, or null when this QEMU lacks it. */
  blockGraph: unknown;
  migrationParameters: unknown;
  migrationCapabilities: unknown;
  /** `query-memory-size-summary`, or null when unavailable. */
  memory: unknown;
  features: QemuFeatures;
  /** `qom-list-properties` of the migration object, or null (absent in fixtures captured before it was read). */
  migrationProperties?: unknown;
  /** `qom-get /machine type`, e.g. "none-machine" or "pc-q35-10.0-machine". */
  machineType?: unknown;
}

export interface QemuSnapshot {
  version: { major: number; minor: number; micro: number; package: string };
  runState: string;
  namedNodes: BlockDeviceInfo[];
  blockBackends: BlockInfo[];
  blockGraph: BlockGraph | undefined;
  migrationParameters: MigrationParameters;
  migrationCapabilities: Record<string, boolean>;
  guestMemoryBytes: number | undefined;
  features: QemuFeatures;
  /** Names of the migration object's properties (for example `send-switchover-start`, QEMU 10.0+). */
  migrationProperties: string[] | undefined;
  machineType: string | undefined;
}

export async function captureRawSnapshot(mon: QemuMonitor): Promise<RawSnapshot> {
  const optional = (p: Promise<unknown>): Promise<unknown> =>
    p.catch((err: unknown) => {
      if (err instanceof QmpCommandError) return null;
      throw err;
    });
  // All in flight at once (the block graph query is unstable, so a QEMU without it simply answers CommandNotFound).
  // The schema probe goes last: QEMU takes tens of milliseconds to build that reply and is slow to answer the next
  // command after it, so the others are answered (and parsed) while it builds, not after.
  const [
    version,
    status,
    namedNodes,
    blockBackends,
    blockGraph,
    migrationParameters,
    migrationCapabilities,
    memory,
    migrationProperties,
    machineType,
    features,
  ] = await Promise.all([
    mon.qmp.execute("query-version"),
    mon.qmp.execute("query-status"),
    mon.qmp.execute("query-named-block-nodes", { flat: true }),
    mon.qmp.execute("query-block"),
    optional(mon.qmp.execute("x-debug-query-block-graph")),
    mon.qmp.execute("query-migrate-parameters"),
    mon.qmp.execute("query-migrate-capabilities"),
    optional(mon.qmp.execute("query-memory-size-summary")),
    optional(mon.qmp.execute("qom-list-properties", { typename: "migration" })),
    optional(mon.qmp.execute("qom-get", { path: "/machine", property: "type" })),
    mon.features(),
  ]);
  return {
    version,
    status,
    namedNodes,
    blockBackends,
    blockGraph,
    migrationParameters,
    migrationCapabilities,
    memory,
    features,
    migrationProperties,
    machineType,
  };
}

/** Validates a raw snapshot. Pure. */
export function parseSnapshot(raw: RawSnapshot): QemuSnapshot {
  const v = validateReply(VersionInfo, "query-version", raw.version);
  const caps = validateReply(
    MigrationCapabilityList,
    "query-migrate-capabilities",
    raw.migrationCapabilities,
  );
  const mem =
    raw.memory === null
      ? undefined
      : validateReply(MemorySizeSummary, "query-memory-size-summary", raw.memory);
  return {
    version: { ...v.qemu, package: v.package },
    runState: validateReply(StatusInfo, "query-status", raw.status).status,
    namedNodes: validateReply(NamedBlockNodes, "query-named-block-nodes", raw.namedNodes),
    blockBackends: validateReply(BlockInfoList, "query-block", raw.blockBackends),
    blockGraph:
      raw.blockGraph === null
        ? undefined
        : validateReply(BlockGraph, "x-debug-query-block-graph", raw.blockGraph),
    migrationParameters: validateReply(
      MigrationParameters,
      "query-migrate-parameters",
      raw.migrationParameters,
    ),
    migrationCapabilities: Object.fromEntries(caps.map((c) => [c.capability, c.state])),
    guestMemoryBytes: mem ? mem["base-memory"] + (mem["plugged-memory"] ?? 0) : undefined,
    features: raw.features,
    migrationProperties: Array.isArray(raw.migrationProperties)
      ? raw.migrationProperties.flatMap((p: unknown) =>
          typeof p === "object" && p !== null && typeof (p as { name?: unknown }).name === "string"
            ? [(p as { name: string }).name]
            : [],
        )
      : undefined,
    machineType: typeof raw.machineType === "string" ? raw.machineType : undefined,
  };
}

/** Snapshots asked before their reader runs (prefetchSnapshot), each taken by the next readSnapshot of its monitor. */
const prefetched = new WeakMap<QmpClient, Promise<RawSnapshot>>();

/**
 * Sends the snapshot's queries now; the next readSnapshot of this monitor takes their answers instead of asking
 * again. The CLI asks as soon as it is connected, so that QEMU answers while the rest of the command loads.
 */
export function prefetchSnapshot(mon: QemuMonitor): void {
  const raw = captureRawSnapshot(mon);
  // Its failure is the reader's to report, as if the reader had asked.
  raw.catch(() => undefined);
  prefetched.set(mon.qmp, raw);
}

export async function readSnapshot(mon: QemuMonitor): Promise<QemuSnapshot> {
  const early = prefetched.get(mon.qmp);
  prefetched.delete(mon.qmp);
  return parseSnapshot(await (early ?? captureRawSnapshot(mon)));
}
