import type { z } from "zod";
import { QmpCommandError } from "../qmp/errors.js";
import { QemuReplyError, type QemuFeatures, type QemuMonitor } from "./monitor.js";
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
}

export interface QemuSnapshot {
  version: { major: number; minor: number; micro: number; package: string };
  runState: string;
  namedNodes: BlockDeviceInfo[];
  blockBackends: BlockInfo[];
  blockGraph: z.infer<typeof BlockGraph> | undefined;
  migrationParameters: z.infer<typeof MigrationParameters>;
  migrationCapabilities: Record<string, boolean>;
  guestMemoryBytes: number | undefined;
  features: QemuFeatures;
}

export async function captureRawSnapshot(mon: QemuMonitor): Promise<RawSnapshot> {
  const features = await mon.features();
  const optional = (p: Promise<unknown>): Promise<unknown> =>
    p.catch((err: unknown) => {
      if (err instanceof QmpCommandError) return null;
      throw err;
    });
  const [
    version,
    status,
    namedNodes,
    blockBackends,
    blockGraph,
    migrationParameters,
    migrationCapabilities,
    memory,
  ] = await Promise.all([
    mon.qmp.execute("query-version"),
    mon.qmp.execute("query-status"),
    mon.qmp.execute("query-named-block-nodes", { flat: true }),
    mon.qmp.execute("query-block"),
    features.blockGraph ? mon.qmp.execute("x-debug-query-block-graph") : Promise.resolve(null),
    mon.qmp.execute("query-migrate-parameters"),
    mon.qmp.execute("query-migrate-capabilities"),
    optional(mon.qmp.execute("query-memory-size-summary")),
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
  };
}

function parse<T extends z.ZodType>(schema: T, command: string, raw: unknown): z.infer<T> {
  const r = schema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new QemuReplyError(
      command,
      issue ? `${issue.path.join(".") || "(root)"}: ${issue.message}` : "invalid",
    );
  }
  return r.data;
}

/** Validates a raw snapshot. Pure. */
export function parseSnapshot(raw: RawSnapshot): QemuSnapshot {
  const v = parse(VersionInfo, "query-version", raw.version);
  const caps = parse(MigrationCapabilityList, "query-migrate-capabilities", raw.migrationCapabilities);
  const mem =
    raw.memory === null ? undefined : parse(MemorySizeSummary, "query-memory-size-summary", raw.memory);
  return {
    version: { ...v.qemu, package: v.package },
    runState: parse(StatusInfo, "query-status", raw.status).status,
    namedNodes: parse(NamedBlockNodes, "query-named-block-nodes", raw.namedNodes),
    blockBackends: parse(BlockInfoList, "query-block", raw.blockBackends),
    blockGraph:
      raw.blockGraph === null ? undefined : parse(BlockGraph, "x-debug-query-block-graph", raw.blockGraph),
    migrationParameters: parse(MigrationParameters, "query-migrate-parameters", raw.migrationParameters),
    migrationCapabilities: Object.fromEntries(caps.map((c) => [c.capability, c.state])),
    guestMemoryBytes: mem ? mem["base-memory"] + (mem["plugged-memory"] ?? 0) : undefined,
    features: raw.features,
  };
}

export async function readSnapshot(mon: QemuMonitor): Promise<QemuSnapshot> {
  return parseSnapshot(await captureRawSnapshot(mon));
}
