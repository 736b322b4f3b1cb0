import type { QmpClient } from "../qmp/client.js";
import type { QemuMonitor } from "../qemu/monitor.js";
import type { Plan } from "../policy/types.js";
import type { RunErrorCode } from "./errors.js";
import type { PlanRequest, PlanResult } from "./plan.js";
import type { ProgressListener } from "./progress.js";
import type { RepairOutcome } from "./repair.js";
import type { StepRecord } from "./steps.js";
import type { DiskCopy } from "./storage.js";
import type { VerifiedBitmap } from "./verify.js";

export interface MigrateOptions extends PlanRequest {
  source: QmpClient | QemuMonitor;
  destination: QmpClient | QemuMonitor;
  /** Where the source sends the migration stream (`unix:/path`, `tcp:HOST:PORT`). */
  uri: string;
  /** Resume a paused destination after verification. */
  resume?: boolean;
  /** Upper bound for raising `downtime-limit` when bitmap data keeps precopy from converging. */
  maxDowntimeMs?: number;
  /** Give up (cancel, repair) after this long. */
  timeoutMs?: number;
  signal?: AbortSignal;
  onProgress?: ProgressListener;
  /** How often to poll `query-migrate` besides the events (ms). */
  pollMs?: number;
  /**
   * `--copy-storage`: where the destination's NBD server listens, as the source reaches it (`unix:/path` or
   * `tcp:HOST:PORT`); default a private unix socket (both QEMUs on one host).
   */
  nbd?: string;
  /** Called once the plan is made, with both graphs as read (for pictures and logs). */
  onPlanned?: (planned: PlanResult) => void;
  /**
   * For tests: called after each step of the run is recorded (see steps.ts). Throwing from it fails the run right
   * there, as any failure would, so a test can check that every step is undone (test/integration/step-boundaries).
   */
  onStep?: (step: StepRecord) => void;
}

export type RunOutcomePhase = "planned" | "migrating" | "verified" | "failed";

/** The `migrate --json` document. */
export interface MigrateResult {
  version: 1;
  ok: boolean;
  plan: Plan;
  phase: RunOutcomePhase;
  bitmaps: VerifiedBitmap[];
  migration: {
    status: string;
    totalTimeMs: number | null;
    downtimeMs: number | null;
    postcopy: boolean;
    /** Set when bitferry raised `downtime-limit` to let bitmap data through (and restored it afterwards). */
    downtimeLimitRaisedMs?: number;
  };
  source: { runState: string | null; repaired: RepairOutcome[] };
  destination: { runState: string | null };
  /** `--copy-storage`: what each disk's copy came to. */
  storage?: { disks: DiskCopy[] };
  error?: { code: RunErrorCode; message: string };
}
