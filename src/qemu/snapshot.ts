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
import type { Infer } from "./guard.js";

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

type Queries = Record<keyof Checked | "migrationProperties" | "machineType" | "features", Promise<unknown>>;

/** The queries of a snapshot, all in flight at once, each reply handed to `then` as it arrives. */
function querySnapshot(
  mon: QemuMonitor,
  then: { [K in keyof Checked]: (reply: unknown) => unknown },
): Queries {
  const optional = (p: Promise<unknown>): Promise<unknown> =>
    p.catch((err: unknown) => {
      if (err instanceof QmpCommandError) return null;
      throw err;
    });
  // All in flight at once, sent in this order (the block graph query is unstable, so a QEMU without it simply
  // answers CommandNotFound). The feature probe goes first: it sends query-commands now, and the schema (where
  // the feature cache does not know this build) only once that is answered, so behind all the others.
  return {
    features: mon.features(),
    version: mon.qmp.execute("query-version").then(then.version),
    status: mon.qmp.execute("query-status").then(then.status),
    namedNodes: mon.qmp.execute("query-named-block-nodes", { flat: true }).then(then.namedNodes),
    blockBackends: mon.qmp.execute("query-block").then(then.blockBackends),
    blockGraph: optional(mon.qmp.execute("x-debug-query-block-graph")).then(then.blockGraph),
    migrationParameters: mon.qmp.execute("query-migrate-parameters").then(then.migrationParameters),
    migrationCapabilities: mon.qmp.execute("query-migrate-capabilities").then(then.migrationCapabilities),
    memory: optional(mon.qmp.execute("query-memory-size-summary")).then(then.memory),
    migrationProperties: optional(mon.qmp.execute("qom-list-properties", { typename: "migration" })),
    machineType: optional(mon.qmp.execute("qom-get", { path: "/machine", property: "type" })),
  };
}

/** Every query's answer, once all are in. */
async function answers(q: Queries): Promise<Record<keyof Queries, unknown>> {
  const keys = Object.keys(q) as (keyof Queries)[];
  const values = await Promise.all(keys.map((k) => q[k]));
  return Object.fromEntries(keys.map((k, i) => [k, values[i]])) as Record<keyof Queries, unknown>;
}

export async function captureRawSnapshot(mon: QemuMonitor): Promise<RawSnapshot> {
  const keep = (reply: unknown): unknown => reply;
  const r = await answers(
    querySnapshot(mon, {
      version: keep,
      status: keep,
      namedNodes: keep,
      blockBackends: keep,
      blockGraph: keep,
      migrationParameters: keep,
      migrationCapabilities: keep,
      memory: keep,
    }),
  );
  return {
    version: r.version,
    status: r.status,
    namedNodes: r.namedNodes,
    blockBackends: r.blockBackends,
    blockGraph: r.blockGraph,
    migrationParameters: r.migrationParameters,
    migrationCapabilities: r.migrationCapabilities,
    memory: r.memory,
    features: r.features as QemuFeatures,
    migrationProperties: r.migrationProperties,
    machineType: r.machineType,
  };
}

/** The validated replies of a snapshot. */
interface Checked {
  version: VersionInfo;
  migrationCapabilities: Infer<typeof MigrationCapabilityList>;
  memory: Infer<typeof MemorySizeSummary> | undefined;
  status: StatusInfo;
  namedNodes: BlockDeviceInfo[];
  blockBackends: BlockInfo[];
  blockGraph: BlockGraph | undefined;
  migrationParameters: MigrationParameters;
}

/** Each reply's validation. Keys in the order parseSnapshot checks them: the first problem in it is reported. */
const CHECK: { [K in keyof Checked]: (reply: unknown) => Checked[K] } = {
  version: (r) => validateReply(VersionInfo, "query-version", r),
  migrationCapabilities: (r) => validateReply(MigrationCapabilityList, "query-migrate-capabilities", r),
  memory: (r) => (r === null ? undefined : validateReply(MemorySizeSummary, "query-memory-size-summary", r)),
  status: (r) => validateReply(StatusInfo, "query-status", r),
  namedNodes: (r) => validateReply(NamedBlockNodes, "query-named-block-nodes", r),
  blockBackends: (r) => validateReply(BlockInfoList, "query-block", r),
  blockGraph: (r) => (r === null ? undefined : validateReply(BlockGraph, "x-debug-query-block-graph", r)),
  migrationParameters: (r) => validateReply(MigrationParameters, "query-migrate-parameters", r),
};

function assemble(
  c: Checked,
  rest: Pick<RawSnapshot, "features" | "migrationProperties" | "machineType">,
): QemuSnapshot {
  const v = c.version;
  const mem = c.memory;
  return {
    version: { ...v.qemu, package: v.package },
    runState: c.status.status,
    namedNodes: c.namedNodes,
    blockBackends: c.blockBackends,
    blockGraph: c.blockGraph,
    migrationParameters: c.migrationParameters,
    migrationCapabilities: Object.fromEntries(c.migrationCapabilities.map((x) => [x.capability, x.state])),
    guestMemoryBytes: mem ? mem["base-memory"] + (mem["plugged-memory"] ?? 0) : undefined,
    features: rest.features,
    migrationProperties: Array.isArray(rest.migrationProperties)
      ? rest.migrationProperties.flatMap((p: unknown) =>
          typeof p === "object" && p !== null && typeof (p as { name?: unknown }).name === "string"
            ? [(p as { name: string }).name]
            : [],
        )
      : undefined,
    machineType: typeof rest.machineType === "string" ? rest.machineType : undefined,
  };
}

/** Every validated reply, taken in CHECK's order: the first one `take` throws for is the problem reported. */
function inOrder(take: (key: keyof Checked) => unknown): Checked {
  const checked = {} as Record<keyof Checked, unknown>;
  for (const key of Object.keys(CHECK) as (keyof Checked)[]) checked[key] = take(key);
  return checked as unknown as Checked;
}

/** Validates a raw snapshot. Pure. */
export function parseSnapshot(raw: RawSnapshot): QemuSnapshot {
  return assemble(
    inOrder((key) => CHECK[key](raw[key])),
    raw,
  );
}

/** What buildGraph reads of a snapshot: the block replies, validated. */
export type BlockReplies = Pick<QemuSnapshot, "namedNodes" | "blockBackends" | "blockGraph" | "runState">;

/** One monitor's snapshot being read: the block replies as soon as they are in, and the whole snapshot. */
export interface SnapshotReading {
  /** Rejects on any problem with those replies; the snapshot then reports the first problem of all. */
  blocks: Promise<BlockReplies>;
  snapshot: Promise<QemuSnapshot>;
}

/** Snapshots asked before their reader runs (prefetchSnapshot), each taken by the next reading of its monitor. */
const prefetched = new WeakMap<QmpClient, SnapshotReading>();

/**
 * Sends the snapshot's queries now; the next readSnapshot of this monitor takes their answers instead of asking
 * again. The CLI asks as soon as it is connected, so that QEMU answers while the rest of the command loads.
 */
export function prefetchSnapshot(mon: QemuMonitor): void {
  prefetched.set(mon.qmp, askSnapshot(mon));
}

/**
 * Reads and validates one QEMU's snapshot. Each reply is validated as it arrives, while QEMU still works on the
 * next ones, and its raw form dropped at once (only the validated copy lives on); a problem is reported once every
 * reply is in, the same first problem parseSnapshot reports for the same replies.
 */
export function readSnapshot(mon: QemuMonitor): Promise<QemuSnapshot> {
  return startSnapshot(mon).snapshot;
}

/** readSnapshot, with the block replies on their own as soon as they are in (the schema comes last). */
export function startSnapshot(mon: QemuMonitor): SnapshotReading {
  const early = prefetched.get(mon.qmp);
  prefetched.delete(mon.qmp);
  return early ?? askSnapshot(mon);
}

type Settled = { ok: true; value: unknown } | { ok: false; error: unknown };

function unwrap(s: Settled): unknown {
  if (!s.ok) throw s.error;
  return s.value;
}

function askSnapshot(mon: QemuMonitor): SnapshotReading {
  const settle =
    (check: (reply: unknown) => unknown) =>
    (reply: unknown): Settled => {
      try {
        return { ok: true, value: check(reply) };
      } catch (error) {
        return { ok: false, error };
      }
    };
  const then = {} as Record<keyof Checked, (reply: unknown) => Settled>;
  for (const key of Object.keys(CHECK) as (keyof Checked)[]) then[key] = settle(CHECK[key]);
  const pending = querySnapshot(mon, then);
  const value = async (p: Promise<unknown>): Promise<unknown> => unwrap((await p) as Settled);
  const blocks = (async (): Promise<BlockReplies> => {
    const [status, namedNodes, blockBackends, blockGraph] = await Promise.all(
      [pending.status, pending.namedNodes, pending.blockBackends, pending.blockGraph].map(value),
    );
    return {
      runState: (status as StatusInfo).status,
      namedNodes: namedNodes as BlockDeviceInfo[],
      blockBackends: blockBackends as BlockInfo[],
      blockGraph: blockGraph as BlockGraph | undefined,
    };
  })();
  const snapshot = (async (): Promise<QemuSnapshot> => {
    const r = await answers(pending);
    return assemble(
      inOrder((key) => unwrap(r[key] as Settled)),
      {
        features: r.features as QemuFeatures,
        migrationProperties: r.migrationProperties,
        machineType: r.machineType,
      },
    );
  })();
  // Either may be left unread (a reader that fails early, a prefetch nobody takes): its failure is the reader's.
  blocks.catch(() => undefined);
  snapshot.catch(() => undefined);
  return { blocks, snapshot };
}
