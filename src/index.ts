/**
 * bitferry as a library: the same functions the CLI calls, returning the same documents `--json` prints.
 */
export { QmpClient, formatVersion } from "./qmp/client.js";
export type { QmpClientOptions, ExecuteOptions, WaitForEventOptions } from "./qmp/client.js";
export * from "./qmp/errors.js";
export type { QmpEvent, QmpVersion } from "./qmp/messages.js";
export { QapiSchema } from "./qmp/schema.js";
export { QemuMonitor, QemuReplyError } from "./qemu/monitor.js";
export type { QemuFeatures } from "./qemu/monitor.js";
export { readSnapshot, parseSnapshot, captureRawSnapshot } from "./qemu/snapshot.js";
export type { QemuSnapshot, RawSnapshot } from "./qemu/snapshot.js";
export { buildGraph } from "./graph/build.js";
export type { BlockGraph, BlockNode, Bitmap, Drive, StoredBitmap } from "./graph/model.js";
export { parsePolicy, validatePolicy, PolicyError, DEFAULT_POLICY } from "./policy/file.js";
export type * from "./policy/types.js";
export { compileMapping } from "./mapping/compile.js";
export { validateMapping } from "./mapping/validate.js";
export { planMigration, planFromSnapshots, readGraph } from "./migrate/plan.js";
export type { PlanRequest, PlanResult } from "./migrate/plan.js";
export { migrate } from "./migrate/run.js";
export type { MigrateOptions, MigrateResult } from "./migrate/run.js";
export type { StepName, StepRecord, StepSide } from "./migrate/steps.js";
export type { VerifiedBitmap, Verification } from "./migrate/verify.js";
export type { ProgressEvent, ProgressListener } from "./migrate/progress.js";
export { RunError } from "./migrate/errors.js";
export type { RunErrorCode } from "./migrate/errors.js";
export { BitferryError, UsageError } from "./util/errors.js";
export * from "./qcow2/index.js";
