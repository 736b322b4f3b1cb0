import { formatVersion, type ExecuteOptions, type QmpClient } from "../qmp/client.js";
import { QmpCommandError } from "../qmp/errors.js";
import { QapiSchema } from "../qmp/schema.js";
import { BitferryError } from "../util/errors.js";
import { featureCacheDir, featureKey, readFeatures, writeFeatures } from "./feature-cache.js";
import { GuardFailure, type Guard } from "./guard.js";
import {
  BlockGraph,
  BlockInfoList,
  BlockJobInfoList,
  MemorySizeSummary,
  MigrationCapabilityList,
  MigrationInfo,
  MigrationParameters,
  NamedBlockNodes,
  Sha256Reply,
  StatusInfo,
  type BitmapAliasMapping,
  type BlockDeviceInfo,
  type BlockInfo,
  type BlockJobInfo,
  type StatusInfo as StatusInfoType,
  type BlockGraph as BlockGraphType,
} from "./replies.js";

/** QEMU answered, but not in the shape this QEMU version is documented to use. */
export class QemuReplyError extends BitferryError {
  readonly code = "QEMU_ERR_REPLY";
  constructor(
    readonly command: string,
    detail: string,
  ) {
    super(`unexpected reply to ${command} from QEMU: ${detail}`);
  }
}

/** Checks one QMP reply against its schema; a mismatch is a QemuReplyError naming the command and the field. */
export function validateReply<T>(schema: Guard<T>, command: string, raw: unknown): T {
  try {
    return schema.check(raw);
  } catch (err) {
    if (!(err instanceof GuardFailure)) throw err;
    throw new QemuReplyError(command, `${err.path.join(".") || "(root)"}: ${err.issue}`);
  }
}

export interface BitmapRef {
  node: string;
  name: string;
}

export interface AddBitmapOptions {
  granularity?: number;
  persistent?: boolean;
  disabled?: boolean;
}

export type TransactionAction =
  | { type: "block-dirty-bitmap-add"; data: BitmapRef & AddBitmapOptions }
  | { type: "block-dirty-bitmap-remove"; data: BitmapRef }
  | { type: "block-dirty-bitmap-clear"; data: BitmapRef }
  | { type: "block-dirty-bitmap-enable"; data: BitmapRef }
  | { type: "block-dirty-bitmap-disable"; data: BitmapRef }
  | {
      type: "block-dirty-bitmap-merge";
      data: { node: string; target: string; bitmaps: (string | BitmapRef)[] };
    };

/**
 * Feature probes, answered from the QAPI schema rather than from version numbers (or by the feature cache, which
 * remembers the schema's answers per QEMU build).
 */
export interface QemuFeatures {
  bitmapMapping: boolean;
  mappingTransform: boolean;
  bitmapSha256: boolean;
  blockGraph: boolean;
  /** `migrate-incoming` takes `exit-on-error` (9.1+). */
  incomingExitOnError: boolean;
}

/**
 * The schema of each monitor connection, probed once however many QemuMonitor wrappers it gets (a library caller
 * passing a QmpClient gets a new wrapper per call): QEMU's schema is its largest reply, and it cannot change while
 * the connection lives.
 */
const schemas = new WeakMap<QmpClient, Promise<QapiSchema>>();

/** The features of each monitor connection, worked out once (from the feature cache or from the schema). */
const featureSets = new WeakMap<QmpClient, Promise<QemuFeatures>>();

/**
 * Typed wrappers for the QMP commands bitferry uses. Every reply is validated; argument objects are built here so
 * the rest of the code never spells a QMP key.
 */
export class QemuMonitor {
  constructor(readonly qmp: QmpClient) {}

  get label(): string {
    return this.qmp.label;
  }

  /** Runs a command and validates its reply against `schema`. */
  async call<T>(
    schema: Guard<T>,
    command: string,
    args?: Record<string, unknown>,
    options?: ExecuteOptions,
  ): Promise<T> {
    return validateReply(schema, command, await this.qmp.execute(command, args, options));
  }

  /** Runs a command whose reply carries nothing (`{}`). */
  async run(command: string, args?: Record<string, unknown>, options?: ExecuteOptions): Promise<void> {
    await this.qmp.execute(command, args, options);
  }

  schema(): Promise<QapiSchema> {
    let schema = schemas.get(this.qmp);
    if (!schema) {
      schema = this.qmp.execute("query-qmp-schema").then((raw) => {
        if (!Array.isArray(raw)) throw new QemuReplyError("query-qmp-schema", "(root): expected a list");
        return new QapiSchema(raw);
      });
      schemas.set(this.qmp, schema);
    }
    return schema;
  }

  /** This QEMU's features: from the feature cache when its build is known there, else from its schema. */
  features(): Promise<QemuFeatures> {
    let f = featureSets.get(this.qmp);
    if (!f) {
      f = this.probeFeatures();
      featureSets.set(this.qmp, f);
    }
    return f;
  }

  private async probeFeatures(): Promise<QemuFeatures> {
    // query-commands is small and answered at once. On a miss the schema is asked right after its reply, while
    // QEMU still works through the queries sent with it, so a miss costs no more than asking the schema outright,
    // and the schema stays behind them in QEMU's queue (it is slow to build, and QEMU slow to answer after it).
    const commands = await this.commandList();
    const dir = featureCacheDir();
    const key = dir === undefined ? undefined : featureKey(this.qmp.version, commands);
    const known = dir !== undefined && key !== undefined ? readFeatures(dir, key) : undefined;
    if (known) return known;
    const f = await this.schemaFeatures();
    if (dir !== undefined && key !== undefined) writeFeatures(dir, key, formatVersion(this.qmp.version), f);
    return f;
  }

  /** `query-commands`, or undefined where QEMU refuses it (then the schema is asked and nothing is remembered). */
  private commandList(): Promise<unknown> {
    return this.qmp.execute("query-commands").catch((err: unknown) => {
      if (err instanceof QmpCommandError) return undefined;
      throw err;
    });
  }

  /** The features, read from the QAPI schema. */
  async schemaFeatures(): Promise<QemuFeatures> {
    const s = await this.schema();
    try {
      return {
        bitmapMapping: s.has("migrate-set-parameters/arg-type/block-bitmap-mapping"),
        mappingTransform: s.has("migrate-set-parameters/arg-type/block-bitmap-mapping/bitmaps/transform"),
        bitmapSha256: s.hasCommand("x-debug-block-dirty-bitmap-sha256"),
        blockGraph: s.hasCommand("x-debug-query-block-graph"),
        incomingExitOnError: s.has("migrate-incoming/arg-type/exit-on-error"),
      };
    } catch (err) {
      // The schema walk trusts the entries' shapes (members a list, ...): a malformed one is QEMU's reply at fault.
      throw new QemuReplyError("query-qmp-schema", err instanceof Error ? err.message : String(err));
    }
  }

  // ---- block graph ----

  namedBlockNodes(): Promise<BlockDeviceInfo[]> {
    return this.call(NamedBlockNodes, "query-named-block-nodes", { flat: true });
  }

  blockBackends(): Promise<BlockInfo[]> {
    return this.call(BlockInfoList, "query-block");
  }

  blockGraph(): Promise<BlockGraphType> {
    return this.call(BlockGraph, "x-debug-query-block-graph");
  }

  // ---- bitmaps ----

  addBitmap(node: string, name: string, options: AddBitmapOptions = {}): Promise<void> {
    return this.run("block-dirty-bitmap-add", { node, name, ...options });
  }

  removeBitmap(node: string, name: string): Promise<void> {
    return this.run("block-dirty-bitmap-remove", { node, name });
  }

  enableBitmap(node: string, name: string): Promise<void> {
    return this.run("block-dirty-bitmap-enable", { node, name });
  }

  disableBitmap(node: string, name: string): Promise<void> {
    return this.run("block-dirty-bitmap-disable", { node, name });
  }

  clearBitmap(node: string, name: string): Promise<void> {
    return this.run("block-dirty-bitmap-clear", { node, name });
  }

  mergeBitmaps(node: string, target: string, sources: (string | BitmapRef)[]): Promise<void> {
    return this.run("block-dirty-bitmap-merge", { node, target, bitmaps: sources });
  }

  transaction(actions: TransactionAction[]): Promise<void> {
    return this.run("transaction", { actions });
  }

  async bitmapSha256(node: string, name: string, options?: ExecuteOptions): Promise<string> {
    const r = await this.call(Sha256Reply, "x-debug-block-dirty-bitmap-sha256", { node, name }, options);
    return r.sha256;
  }

  // ---- migration ----

  async migrationCapabilities(): Promise<Map<string, boolean>> {
    const list = await this.call(MigrationCapabilityList, "query-migrate-capabilities");
    return new Map(list.map((c) => [c.capability, c.state]));
  }

  setMigrationCapabilities(caps: Record<string, boolean>): Promise<void> {
    return this.run("migrate-set-capabilities", {
      capabilities: Object.entries(caps).map(([capability, state]) => ({ capability, state })),
    });
  }

  migrationParameters(): Promise<MigrationParameters> {
    return this.call(MigrationParameters, "query-migrate-parameters");
  }

  setMigrationParameters(params: {
    "block-bitmap-mapping"?: BitmapAliasMapping;
    "downtime-limit"?: number;
  }): Promise<void> {
    return this.run("migrate-set-parameters", params);
  }

  migrationInfo(options?: ExecuteOptions): Promise<MigrationInfo> {
    return this.call(MigrationInfo, "query-migrate", undefined, options);
  }

  migrate(uri: string): Promise<void> {
    return this.run("migrate", { uri });
  }

  migrateIncoming(uri: string, exitOnError?: boolean): Promise<void> {
    return this.run(
      "migrate-incoming",
      exitOnError === undefined ? { uri } : { uri, "exit-on-error": exitOnError },
    );
  }

  migrateCancel(): Promise<void> {
    return this.run("migrate_cancel");
  }

  migrateContinue(state: string): Promise<void> {
    return this.run("migrate-continue", { state });
  }

  migrateStartPostcopy(): Promise<void> {
    return this.run("migrate-start-postcopy");
  }

  // ---- run state and identity ----

  status(options?: ExecuteOptions): Promise<StatusInfoType> {
    return this.call(StatusInfo, "query-status", undefined, options);
  }

  cont(): Promise<void> {
    return this.run("cont");
  }

  stop(): Promise<void> {
    return this.run("stop");
  }

  async guestMemoryBytes(): Promise<number> {
    const s = await this.call(MemorySizeSummary, "query-memory-size-summary");
    return s["base-memory"] + (s["plugged-memory"] ?? 0);
  }

  // ---- jobs, exports, nodes ----

  blockJobs(): Promise<BlockJobInfo[]> {
    return this.call(BlockJobInfoList, "query-block-jobs");
  }

  humanMonitorCommand(commandLine: string): Promise<unknown> {
    return this.qmp.execute("human-monitor-command", { "command-line": commandLine });
  }
}

export type { BitmapAliasMapping };
