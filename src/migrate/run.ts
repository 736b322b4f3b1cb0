import { setMaxListeners } from "node:events";
import { QmpClient } from "../qmp/client.js";
import { QmpCommandError, QmpConnectionClosedError, QmpError } from "../qmp/errors.js";
import { QemuMonitor } from "../qemu/monitor.js";
import type { BlockDirtyInfo, MigrationInfo } from "../qemu/replies.js";
import type { Plan, PlanBitmap } from "../policy/types.js";
import { debug } from "../util/debug.js";
import { BitferryError, describeError } from "../util/errors.js";
import { RunError, type RunErrorCode } from "./errors.js";
import { planErrorsMessage, planMigration, type PlanRequest, type PlanResult } from "./plan.js";
import type { ProgressListener, RunPhase } from "./progress.js";
import { repairPersistence, type RepairOutcome } from "./repair.js";
import { qemuPendingBytes } from "../policy/convergence.js";
import { judgeBitmap, type SourceRecord, type VerifiedBitmap } from "./verify.js";
import { StorageCopy, type DiskCopy } from "./storage.js";
import { isStream, type MergeGroup } from "../policy/work.js";

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

const RUNNING_STATUSES = new Set([
  "setup",
  "active",
  "pre-switchover",
  "device",
  "wait-unplug",
  "cancelling",
]);
const CANCELLABLE = new Set(["setup", "active", "pre-switchover", "device", "wait-unplug"]);

function monitorOf(m: QmpClient | QemuMonitor): QemuMonitor {
  return m instanceof QmpClient ? new QemuMonitor(m) : m;
}

function sentence(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * After the switch to postcopy a destination started without -S runs the guest: the source's VM is then out of
 * date, and resuming it would run an older copy over disks the newer one wrote.
 */
const POSTCOPY_COMPLETED_NOTE =
  "The destination was lost after the migration completed through postcopy, so bitferry did not resume the " +
  "source: unless the destination was started with -S, the guest ran there and the source's VM state is from the " +
  "switchover. If it was started with -S, resuming the source (cont) is safe. The source keeps every bitmap";

/** QEMU keeps a source whose postcopy broke in `postcopy-paused` and refuses `cont` ("not finalized yet"). */
function postcopyBrokenNote(status: string | undefined): string {
  return (
    `Postcopy had started (QEMU's migration status: ${status ?? "unknown"}), so the source cannot simply resume: ` +
    "if the destination is still alive, resume the paused postcopy (migrate-recover on the destination, then " +
    "migrate with resume: true on the source); if it is gone, the VM's state since the switchover went with it. " +
    "The source keeps every bitmap"
  );
}

/** How long cleanup waits for a side's answer before leaving that side as it is. */
const RESTORE_WAIT_MS = 10_000;

/** `p`, or a rejection after `ms` (the command itself stays in flight; its late reply is dropped). */
function within<T>(p: Promise<T>, ms: number, onTimeout?: () => void): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const timer = new Promise<never>((_, reject) => {
    t = setTimeout(() => {
      onTimeout?.();
      reject(new Error(`no answer within ${ms} ms`));
    }, ms);
  });
  p.catch(() => undefined);
  return Promise.race([p, timer]).finally(() => {
    clearTimeout(t);
  });
}

/**
 * Runs DESIGN section 4: plan, set up both sides, migrate, hash every bitmap on the source once it has completed
 * (stopped for good, so outside the downtime), verify each on arrival; on any failure cancel, repair the source's
 * bitmaps and leave the source as it was. Never throws for a failed migration: the result says what happened.
 */
export async function migrate(options: MigrateOptions): Promise<MigrateResult> {
  return new MigrationRun(options).run();
}

/** A migrating bitmap as the destination has it after the migration. */
interface ArrivedBitmap {
  info: BlockDirtyInfo | undefined;
  nodeSize: number | undefined;
  sha256: string | null;
}

interface Side {
  mon: QemuMonitor;
  name: "source" | "destination";
  lost: boolean;
  /** Left a cleanup command unanswered for RESTORE_WAIT_MS: later cleanup leaves this side alone. */
  unresponsive?: boolean;
  originalCaps: Record<string, boolean>;
  changedCaps: Record<string, boolean>;
}

class MigrationRun {
  private readonly src: Side;
  private readonly dst: Side;
  private readonly started = Date.now();
  private readonly abort = new AbortController();
  private readonly cleanups: (() => void)[] = [];
  private wake: (() => void) | undefined;
  private pendingWake = false;
  private planResult: PlanResult | undefined;
  private migrating: PlanBitmap[] = [];
  private readonly temporaries = new Map<PlanBitmap, MergeGroup>();
  private readonly mergedFrom = new Map<PlanBitmap, { node: string; bitmap: string }[]>();
  private storage: StorageCopy | undefined;
  private copies: DiskCopy[] = [];
  private temporariesMade = false;
  private sourceRecords = new Map<PlanBitmap, SourceRecord>();
  private sourceRunState0: string | null = null;
  private migrateIssued = false;
  private continued = false;
  /** What recovery could not do, in words for the error message (the operator has to act on it). */
  private readonly recoveryNotes: string[] = [];
  /** bitferry asked QEMU to switch to postcopy. */
  private postcopyStarted = false;
  /** QEMU did switch: the destination may have run the guest since. */
  private postcopyEntered = false;
  private lastInfo: MigrationInfo | undefined;
  private downtimeOriginal: number | undefined;
  private downtimeRaised: number | undefined;
  private destinationRan = false;
  private phase: RunPhase = "plan";

  constructor(private readonly o: MigrateOptions) {
    // Every command in flight listens for the abort (see `abortable`), hundreds at once when bitmaps are hashed;
    // each listener goes with its command, so Node's leak warning would only be noise on the user's terminal.
    setMaxListeners(0, this.abort.signal);
    this.src = { mon: monitorOf(o.source), name: "source", lost: false, originalCaps: {}, changedCaps: {} };
    this.dst = {
      mon: monitorOf(o.destination),
      name: "destination",
      lost: false,
      originalCaps: {},
      changedCaps: {},
    };
  }

  async run(): Promise<MigrateResult> {
    this.watch();
    let plan: Plan | undefined;
    try {
      this.progress("plan", { message: "reading both block graphs" });
      this.planResult = await planMigration(this.src.mon, this.dst.mon, this.o);
      plan = this.planResult.plan;
      this.o.onPlanned?.(this.planResult);
      if (!plan.ok) {
        return await this.result("planned", {
          code: "PLAN_ERRORS",
          message: planErrorsMessage(plan),
        });
      }
      this.migrating = this.buildStreams(this.planResult);
      this.sourceRunState0 = this.planResult.source.snapshot.runState;
      await this.setup();
      await this.startMigration();
      const info = await this.follow();
      this.lastInfo = await this.finalTimes(info);
      await this.finishCopy();
      // Two QEMUs, two monitors: each side is hashed as soon as it is ready, at the same time as the other.
      const [, arrived] = await Promise.all([
        this.recordSource(),
        this.completeDestination().then(() => this.readDestination()),
      ]);
      const verified = this.verify(arrived);
      const failed = verified.filter((v) => v.verified === "failed");
      if (failed.length > 0) {
        throw new RunError(
          "VERIFY_FAILED",
          `${failed.length} of ${verified.length} bitmap(s) failed verification on the destination: ` +
            failed.map((v) => `${v.target.node}/${v.target.bitmap}: ${v.reason ?? ""}`).join("; ") +
            ". Neither side was resumed: the source is stopped after the switchover; decide which one runs",
        );
      }
      await this.finishDestination();
      this.progress("done", { message: "all bitmaps verified" });
      return await this.result("verified", undefined, verified);
    } catch (err) {
      const runError = this.toRunError(err);
      debug("migration run failed: %s", runError.message);
      const repaired = await this.recover(runError);
      if (!plan) {
        // Planning itself failed (a monitor gone, QEMU refused a query): nothing was touched.
        throw runError;
      }
      return await this.result(
        "failed",
        { code: runError.code, message: [runError.message, ...this.recoveryNotes.map(sentence)].join(". ") },
        this.verifiedFromError(runError),
        repaired,
      );
    } finally {
      await this.cleanupTemporaries();
      await this.restore();
      for (const c of this.cleanups) c();
    }
  }

  /** After the switchover: the mirrors complete without pivot; every export and NBD node goes. */
  private async finishCopy(): Promise<void> {
    const storage = this.storage;
    if (!storage) return;
    this.progress("completing", { message: "completing the disk copies" });
    this.copies = await storage.complete();
    await storage.teardown(!this.src.lost, !this.dst.lost);
    this.storage = undefined;
    const bad = this.copies.filter((c) => !c.complete);
    if (bad.length > 0) {
      throw new RunError(
        "COPY_FAILED",
        `the copy of ${bad.map((c) => `${c.source.node} (${c.copiedBytes} of ${c.totalBytes} bytes${c.error ? `: ${c.error}` : ""})`).join(", ")} did not complete`,
      );
    }
  }

  /** Removes the storage copy's exports and nodes and the merged temporaries, on success and on failure alike. */
  private async cleanupTemporaries(): Promise<void> {
    if (this.storage) {
      const storage = this.storage;
      this.storage = undefined;
      await within(
        storage.teardown(!this.src.lost && !this.src.unresponsive, !this.dst.lost && !this.dst.unresponsive),
        4 * RESTORE_WAIT_MS,
      ).catch((e: unknown) => {
        debug("removing the disk copies' exports and nodes: %s", describeError(e));
      });
    }
    if (!this.temporariesMade) return;
    for (const g of new Set(this.temporaries.values())) {
      await this.tidy(
        this.src,
        (m) => m.removeBitmap(g.disk.name, g.temporary),
        `removing ${g.disk.name}/${g.temporary}`,
      );
    }
  }

  // ---- plumbing ----

  private watch(): void {
    for (const side of [this.src, this.dst]) {
      this.cleanups.push(
        side.mon.qmp.onClose(() => {
          side.lost = true;
          this.notify();
        }),
        side.mon.qmp.on("MIGRATION", (ev) => {
          // The events, not the polls, tell whether QEMU really switched: a poll can miss a short postcopy phase,
          // and a migration asked to switch may complete in precopy first.
          if (
            side === this.src &&
            typeof ev.data.status === "string" &&
            ev.data.status.startsWith("postcopy-")
          )
            this.postcopyEntered = true;
          this.notify();
        }),
      );
    }
    const user = this.o.signal;
    if (user) {
      const onAbort = (): void => {
        this.abort.abort(
          new RunError("INTERRUPTED", `interrupted (${describeReason(user.reason)}) during ${this.phase}`),
        );
      };
      if (user.aborted) onAbort();
      else user.addEventListener("abort", onAbort, { once: true });
      this.cleanups.push(() => {
        user.removeEventListener("abort", onAbort);
      });
    }
    if (this.o.timeoutMs !== undefined && this.o.timeoutMs > 0) {
      const ms = this.o.timeoutMs;
      const t = setTimeout(() => {
        this.abort.abort(
          new RunError("TIMEOUT", `--timeout expired after ${Math.round(ms / 1000)} s during ${this.phase}`),
        );
      }, ms);
      this.cleanups.push(() => {
        clearTimeout(t);
      });
    }
    this.abort.signal.addEventListener("abort", () => {
      this.notify();
    });
  }

  /**
   * Something changed: wake the loop now. An event that arrives while the loop is busy with a command is kept, so
   * the next pause returns at once instead of sleeping through it (a missed wake-up once cost 200 ms of downtime).
   */
  private notify(): void {
    if (this.wake) this.wake();
    else this.pendingWake = true;
  }

  /** Throws if the run was interrupted or timed out. */
  private checkpoint(): void {
    if (this.abort.signal.aborted) throw this.abort.signal.reason;
  }

  /** Waits up to `ms`, waking early on a MIGRATION event, a lost monitor or an abort. */
  private async pause(ms: number): Promise<void> {
    this.checkpoint();
    if (this.pendingWake) {
      this.pendingWake = false;
      return;
    }
    await new Promise<void>((resolve) => {
      const t = setTimeout(done, ms);
      function done(): void {
        clearTimeout(t);
        resolve();
      }
      this.wake = done;
    });
    this.wake = undefined;
    this.checkpoint();
  }

  private progress(phase: RunPhase, extra: Partial<Parameters<ProgressListener>[0]> = {}): void {
    this.phase = phase;
    this.o.onProgress?.({ phase, elapsedMs: Date.now() - this.started, ...extra });
  }

  /** Runs a command on one side; a closed monitor or a refusal becomes the run error that says where. */
  private async on<T>(side: Side, fn: (m: QemuMonitor) => Promise<T>, what: string): Promise<T> {
    try {
      return await this.abortable(fn(side.mon));
    } catch (err) {
      throw this.sideError(side, err, what);
    }
  }

  /**
   * `--timeout` and Ctrl-C take effect even while a command waits on a wedged monitor, not only after the
   * per-command timeout. The command stays in flight (its late reply is dropped); recovery asks QEMU what happened.
   */
  private abortable<T>(p: Promise<T>): Promise<T> {
    const signal = this.abort.signal;
    if (signal.aborted) {
      p.catch(() => undefined);
      return Promise.reject(signal.reason as Error);
    }
    return new Promise<T>((resolve, reject) => {
      const onAbort = (): void => {
        p.catch(() => undefined);
        reject(signal.reason as Error);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      p.then(
        (v) => {
          signal.removeEventListener("abort", onAbort);
          resolve(v);
        },
        (e: unknown) => {
          signal.removeEventListener("abort", onAbort);
          // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- passes the command's own error on
          reject(e);
        },
      );
    });
  }

  private sideError(side: Side, err: unknown, what: string): unknown {
    if (err instanceof QmpConnectionClosedError) {
      side.lost = true;
      return new RunError(
        side.name === "source" ? "SOURCE_LOST" : "DESTINATION_LOST",
        `the ${side.name}'s monitor closed while ${what} (QEMU exited or the socket dropped)`,
        { cause: err },
      );
    }
    if (err instanceof QmpCommandError) {
      return new RunError(
        "QEMU_ERROR",
        `${side.name} QEMU refused ${err.command} while ${what}: ${err.desc}`,
        { cause: err },
      );
    }
    return err;
  }

  // ---- phases ----

  private async setup(): Promise<void> {
    this.checkpoint();
    this.progress("setup", { message: "setting capabilities and bitmap mappings on both sides" });
    const plan = this.plan();
    const info = await this.on(this.src, (m) => m.migrationInfo(), "checking for a running migration");
    if (info.status !== undefined && RUNNING_STATUSES.has(info.status)) {
      throw new RunError(
        "QEMU_ERROR",
        `a migration is already in progress on the source (status ${info.status})`,
      );
    }
    const srcCaps = this.planResult?.source.snapshot.migrationCapabilities ?? {};
    const dstCaps = this.planResult?.destination.snapshot.migrationCapabilities ?? {};
    await this.setCaps(this.dst, dstCaps, { "dirty-bitmaps": true, events: true });
    await this.setCaps(this.src, srcCaps, {
      "dirty-bitmaps": true,
      events: true,
      "pause-before-switchover": true,
    });
    this.downtimeOriginal = this.planResult?.source.snapshot.migrationParameters["downtime-limit"];
    await this.on(
      this.dst,
      (m) => m.setMigrationParameters({ "block-bitmap-mapping": plan.mapping.destination }),
      "setting the bitmap mapping",
    );
    await this.on(
      this.src,
      (m) => m.setMigrationParameters({ "block-bitmap-mapping": plan.mapping.source }),
      "setting the bitmap mapping",
    );
    const exitOnError = this.planResult?.destination.facts.features.incomingExitOnError ? false : undefined;
    try {
      await this.dst.mon.migrateIncoming(this.o.uri, exitOnError);
    } catch (err) {
      // A destination started with `-incoming URI` already listens; only `-incoming defer` needs the command.
      if (!(err instanceof QmpCommandError && err.desc.includes("already been started"))) {
        throw this.sideError(this.dst, err, "starting the incoming side");
      }
    }
    if (this.o.copyStorage) await this.copyStorage();
    await this.makeTemporaries();
  }

  /** `--copy-storage`: copy every disk to the destination and wait until each mirror is in sync. */
  private async copyStorage(): Promise<void> {
    const disks = this.plan().disks ?? [];
    if (disks.length === 0) return;
    const storage = new StorageCopy(this.src.mon, this.dst.mon, disks, this.o.nbd);
    this.storage = storage;
    this.progress("copy", {
      message: `copying ${disks.length} disk(s) to the destination`,
      copiedBytes: 0,
      copyTotalBytes: storage.totalBytes,
    });
    await storage.start();
    for (;;) {
      this.checkpoint();
      if (this.src.lost) throw new RunError("SOURCE_LOST", "the source's monitor closed while copying disks");
      if (this.dst.lost)
        throw new RunError("DESTINATION_LOST", "the destination's monitor closed while copying disks");
      const ready = await storage.poll();
      this.progress("copy", { copiedBytes: storage.copiedBytes, copyTotalBytes: storage.totalBytes });
      if (ready) return;
      await this.pause(200);
    }
  }

  /**
   * `--copy-storage` flattens backing chains: the same-named bitmaps of a disk's layers are merged into one
   * temporary bitmap on its top node, atomically, just before the migration starts (it keeps recording writes).
   */
  private async makeTemporaries(): Promise<void> {
    const groups = [...new Set(this.temporaries.values())];
    if (groups.length === 0) return;
    this.temporariesMade = true;
    for (const g of groups) {
      await this.on(
        this.src,
        (m) =>
          m.transaction([
            {
              type: "block-dirty-bitmap-add",
              data: {
                node: g.disk.name,
                name: g.temporary,
                granularity: g.granularity,
                disabled: !g.recording,
              },
            },
            {
              type: "block-dirty-bitmap-merge",
              data: {
                node: g.disk.name,
                target: g.temporary,
                bitmaps: g.sources.map((x) => ({ node: x.node, name: x.bitmap })),
              },
            },
          ]),
        `merging the backing chain's '${g.name}' bitmaps on ${g.disk.name}`,
      );
    }
  }

  private async setCaps(
    side: Side,
    current: Record<string, boolean>,
    wanted: Record<string, boolean>,
  ): Promise<void> {
    const change: Record<string, boolean> = {};
    for (const [cap, state] of Object.entries(wanted)) {
      if (current[cap] !== state) {
        change[cap] = state;
        side.originalCaps[cap] = current[cap] ?? false;
      }
    }
    if (Object.keys(change).length === 0) return;
    await this.on(side, (m) => m.setMigrationCapabilities(change), "setting migration capabilities");
    Object.assign(side.changedCaps, change);
  }

  private async startMigration(): Promise<void> {
    this.checkpoint();
    this.progress("migrating", {
      status: "setup",
      bitmapBytes: this.plan().payloadBytes,
      message: `migrating to ${this.o.uri}`,
    });
    this.migrateIssued = true;
    await this.on(this.src, (m) => m.migrate(this.o.uri), "starting the migration");
  }

  /** Follows the source until it reports `completed`. */
  private async follow(): Promise<MigrationInfo> {
    const poll = this.o.pollMs ?? 200;
    const stall: { since: number | undefined } = { since: undefined };
    let lastRaise = 0;
    for (;;) {
      this.checkpoint();
      if (this.dst.lost)
        throw new RunError(
          "DESTINATION_LOST",
          "the destination's monitor closed during the migration (QEMU exited)",
        );
      const info = await this.on(this.src, (m) => m.migrationInfo(), "following the migration");
      this.lastInfo = info;
      const status = info.status ?? "none";
      if (status.startsWith("postcopy-")) this.postcopyEntered = true;
      this.progress(this.phase === "switchover" ? "switchover" : "migrating", {
        status,
        transferredBytes: info.ram?.transferred,
        remainingBytes: info.ram?.remaining,
        bitmapBytes: this.plan().payloadBytes,
      });
      switch (status) {
        case "completed":
          return info;
        case "failed":
          throw await this.migrationFailed(info);
        case "cancelled":
          throw new RunError(
            "MIGRATION_FAILED",
            "the migration was cancelled by someone else (migrate_cancel on the source)",
          );
        case "postcopy-paused":
        case "postcopy-recover":
          throw new RunError(
            "MIGRATION_FAILED",
            `postcopy was interrupted (status ${status}): the connection to the destination broke`,
          );
        case "pre-switchover":
          // migrate-continue only wakes QEMU's migration thread: the status can read pre-switchover once more.
          if (!this.continued) {
            await this.switchover();
            stall.since = undefined;
            continue;
          }
          break;
        case "active":
          if (this.o.postcopy) {
            if (!this.postcopyStarted) {
              this.postcopyStarted = true;
              await this.on(this.src, (m) => m.migrateStartPostcopy(), "switching to postcopy");
            }
          } else {
            const now = Date.now();
            if (this.stalled(info, stall, now)) {
              if (await this.unstall(info, now - lastRaise)) lastRaise = Date.now();
              stall.since = undefined;
            }
          }
          break;
        default:
          break;
      }
      await this.pause(poll);
    }
  }

  /**
   * Precopy is stuck on bitmap data when, for 1.5 s in a row, the RAM still to send would fit the downtime but
   * QEMU keeps iterating: it counts the bitmaps as pending and they exceed its threshold (reference R25). Judged by
   * time, not by QEMU's pass counter, which 7.2 advances on every iteration and 10.0 does not.
   */
  private stalled(info: MigrationInfo, stall: { since: number | undefined }, now: number): boolean {
    const ram = info.ram;
    const limit = this.downtimeRaised ?? this.downtimeOriginal ?? 300;
    const mbps = ram?.mbps ?? 0;
    const remaining = ram?.remaining ?? 0;
    const ramMs = remaining === 0 ? 0 : mbps > 0 ? ((remaining * 8) / (mbps * 1e6)) * 1000 : Infinity;
    if (ramMs > limit) {
      stall.since = undefined;
      return false;
    }
    stall.since ??= now;
    return now - stall.since >= 1500;
  }

  /** Raises downtime-limit within --max-downtime (true), waits a little longer at the bound (false), or gives up. */
  private async unstall(info: MigrationInfo, sinceLastRaiseMs: number): Promise<boolean> {
    const payload = this.plan().payloadBytes;
    const mbps = Math.max(info.ram?.mbps ?? 0, 0.1);
    const current = this.downtimeRaised ?? this.downtimeOriginal ?? 300;
    // QEMU weighs the payload as one byte per granule (eight times what it sends), so that is what must fit.
    const neededMs = Math.ceil(((qemuPendingBytes(payload) * 8) / (mbps * 1e6)) * 1000);
    const numbers =
      `the bitmaps add ${payload} bytes that QEMU sends only at the switchover (and counts as ${qemuPendingBytes(payload)} while it decides), and it estimates the link at ` +
      `${mbps.toFixed(1)} Mbit/s, so it needs a downtime-limit of about ${neededMs} ms (now ${current} ms)`;
    const max = this.o.maxDowntimeMs;
    if (max === undefined) {
      throw new RunError(
        "NOT_CONVERGING",
        `precopy cannot converge: ${numbers}. Allow a longer switchover with --max-downtime ${Math.max(neededMs * 2, current + 1)}` +
          (this.postcopyAllowed() ? ", or send the bitmaps after the switchover with --postcopy" : ""),
      );
    }
    if (current >= max) {
      if (sinceLastRaiseMs < 3000) return false;
      throw new RunError(
        "NOT_CONVERGING",
        `precopy cannot converge even with downtime-limit at --max-downtime ${max} ms: ${numbers}` +
          (this.postcopyAllowed() ? "; --postcopy would send the bitmaps after the switchover" : ""),
      );
    }
    const next = Math.min(max, Math.max(neededMs * 2, current * 2));
    this.progress("migrating", {
      message: `bitmap data holds the switchover back: raising downtime-limit ${current} → ${next} ms (bounded by --max-downtime ${max})`,
    });
    await this.on(
      this.src,
      (m) => m.setMigrationParameters({ "downtime-limit": next }),
      "raising downtime-limit",
    );
    this.downtimeRaised = next;
    return true;
  }

  private postcopyAllowed(): boolean {
    return new Set(this.migrating.map((b) => b.source.node)).size === 1;
  }

  private async migrationFailed(info: MigrationInfo): Promise<RunError> {
    let why = info["error-desc"];
    if (!why && this.dst.lost) why = "the destination exited";
    if (!why) {
      const d = await this.dst.mon.migrationInfo().catch(() => undefined);
      why = d?.["error-desc"] ?? (this.dst.lost ? "the destination exited" : undefined);
    }
    return new RunError(
      "MIGRATION_FAILED",
      `QEMU reports the migration failed: ${why ?? "no reason given (QEMU before 9.1 prints bitmap errors only on the source's stderr)"}`,
    );
  }

  /**
   * The source is stopped at `pre-switchover`: the last moment a cancel leaves everything as it was. bitferry lets
   * QEMU switch over at once and hashes the bitmaps after completion instead, when the source is stopped for good
   * (postmigrate) and its bitmaps are exactly what it sent: hashing here would add its time to the downtime.
   */
  private async switchover(): Promise<void> {
    this.progress("switchover", { status: "pre-switchover", message: "source stopped: switching over" });
    this.checkpoint();
    this.continued = true;
    await this.on(
      this.src,
      (m) => m.migrateContinue("pre-switchover"),
      "continuing after the switchover pause",
    );
    this.progress("switchover", { status: "device" });
  }

  /** After completion (the source stopped, its disks handed over): what each migrated bitmap was. */
  private async recordSource(): Promise<void> {
    const graph = this.planResult?.source.graph;
    const hash = this.planResult?.source.facts.features.bitmapSha256 ?? false;
    const nodes = await this.on(this.src, (m) => m.namedBlockNodes(), "reading the migrated bitmaps");
    const byName = new Map(nodes.map((n) => [n["node-name"], n]));
    const graphNodes = new Map((graph?.nodes ?? []).map((n) => [n.name, n]));
    const records = await Promise.all(
      this.migrating.map(async (b) => {
        const n = byName.get(b.source.node);
        const info = n?.["dirty-bitmaps"]?.find((x) => x.name === this.readName(b));
        const node = graphNodes.get(b.source.node);
        const sha = hash
          ? await this.on(this.src, (m) => m.bitmapSha256(b.source.node, this.readName(b)), "hashing bitmaps")
          : null;
        const rec: SourceRecord = {
          sha256: sha,
          count: info?.count ?? b.source.dirtyBytes,
          nodeSize: n?.image["virtual-size"] ?? node?.size ?? 0,
        };
        return [b, rec] as const;
      }),
    );
    this.sourceRecords = new Map(records);
  }

  /** QEMU reports `completed` a moment before it fills in the times: read them once they are there. */
  private async finalTimes(info: MigrationInfo): Promise<MigrationInfo> {
    let last = info;
    for (let i = 0; i < 20 && !last["total-time"]; i++) {
      await sleep(10);
      last = await this.on(this.src, (m) => m.migrationInfo(), "reading the migration's times");
    }
    return last;
  }

  /** After the source completed: wait for the destination to complete and settle its run state. */
  private async completeDestination(): Promise<void> {
    const hashing = this.planResult?.source.facts.features.bitmapSha256 === true && this.migrating.length > 0;
    this.progress("completing", {
      message: hashing
        ? "waiting for the destination; hashing the source's bitmaps meanwhile"
        : "waiting for the destination",
    });
    const until = Date.now() + 120_000;
    for (;;) {
      this.checkpoint();
      if (this.dst.lost) {
        throw new RunError(
          "DESTINATION_LOST",
          "the destination exited after the source completed: it did not load the migration",
        );
      }
      const info = await this.on(
        this.dst,
        (m) => m.migrationInfo(),
        "waiting for the destination to complete",
      );
      if (info.status === "completed") break;
      if (info.status === "failed") {
        throw new RunError(
          "MIGRATION_FAILED",
          `the destination failed to load the migration: ${info["error-desc"] ?? "no reason given"}`,
        );
      }
      if (Date.now() > until)
        throw new RunError(
          "TIMEOUT",
          `the destination did not complete within 120 s (status ${info.status ?? "none"})`,
        );
      await this.pause(100);
    }
    // The completed event can precede the final run state.
    for (let i = 0; i < 300; i++) {
      const s = await this.on(this.dst, (m) => m.status(), "reading the destination's run state");
      if (s.status !== "inmigrate") {
        this.destinationRan = s.status === "running";
        return;
      }
      await this.pause(100);
    }
  }

  /** What arrived on the destination for each migrating bitmap, hashed before the destination runs. */
  private async readDestination(): Promise<Map<PlanBitmap, ArrivedBitmap>> {
    this.progress("verifying", {
      message: `verifying ${this.migrating.length} bitmap(s) on the destination`,
    });
    const hash = this.planResult?.destination.facts.features.bitmapSha256 ?? false;
    let nodes = await this.on(this.dst, (m) => m.namedBlockNodes(), "verifying");
    // Postcopy delivers bitmaps after the switchover: wait until none of ours is busy.
    for (let i = 0; i < 100; i++) {
      const busyNames = new Set(
        nodes.flatMap((n) =>
          (n["dirty-bitmaps"] ?? []).filter((x) => x.busy).map((x) => `${n["node-name"]}/${x.name ?? ""}`),
        ),
      );
      const busy = this.migrating.some(
        (b) => b.target !== null && busyNames.has(`${b.target.node}/${b.target.bitmap}`),
      );
      if (!busy) break;
      await this.pause(100);
      nodes = await this.on(this.dst, (m) => m.namedBlockNodes(), "verifying");
    }
    const byName = new Map(nodes.map((n) => [n["node-name"], n]));
    const ran = this.destinationRan;
    const arrived = await Promise.all(
      this.migrating.map(async (b): Promise<[PlanBitmap, ArrivedBitmap]> => {
        const t = b.target;
        if (!t) throw new Error("a migrating bitmap without a target");
        const n = byName.get(t.node);
        const info = n?.["dirty-bitmaps"]?.find((x) => x.name === t.bitmap);
        const sha256 =
          hash && info && !ran
            ? await this.on(this.dst, (m) => m.bitmapSha256(t.node, t.bitmap), "hashing bitmaps")
            : null;
        return [b, { info, nodeSize: n?.image["virtual-size"], sha256 }];
      }),
    );
    return new Map(arrived);
  }

  /** Judges every migrating bitmap: what the source sent against what arrived. */
  private verify(arrived: Map<PlanBitmap, ArrivedBitmap>): VerifiedBitmap[] {
    const ran = this.destinationRan;
    return this.migrating.map((b) => {
      const t = b.target;
      if (!t) throw new Error("a migrating bitmap without a target");
      const got = arrived.get(b);
      const info = got?.info;
      const rec = this.sourceRecords.get(b) ?? {
        sha256: null,
        count: b.source.dirtyBytes,
        nodeSize: 0,
      };
      const merged = this.mergedFrom.get(b);
      const judged = judgeBitmap(b.source, t, rec, {
        bitmap: info
          ? {
              name: t.bitmap,
              granularity: info.granularity,
              count: info.count,
              recording: info.recording,
              busy: info.busy,
              persistent: info.persistent,
              inconsistent: info.inconsistent ?? false,
              readOnly: false,
            }
          : undefined,
        nodeSize: got?.nodeSize,
        sha256: got?.sha256 ?? null,
        ran,
      });
      return merged ? { ...judged, mergedFrom: merged } : judged;
    });
  }

  /**
   * The bitmaps of the migration stream, one row each. A backing chain merged for `--copy-storage` travels as one
   * temporary bitmap on the disk's top node: its row names the disk's node and the bitmap name the layers share.
   */
  private buildStreams(planned: PlanResult): PlanBitmap[] {
    const rows: PlanBitmap[] = [];
    for (const w of planned.decisions.work) {
      if (w.entry.action !== "migrate" || !w.entry.target || !isStream(w)) continue;
      const g = w.merge;
      if (!g) {
        rows.push(w.entry);
        continue;
      }
      const row: PlanBitmap = {
        ...w.entry,
        source: {
          node: g.disk.name,
          drive: planned.source.graph.drives.find((d) => d.driveRoot === g.disk.name)?.name ?? null,
          bitmap: g.name,
          granularity: g.granularity,
          persistent: false,
          recording: g.recording,
          dirtyBytes: w.entry.source.dirtyBytes,
        },
      };
      this.temporaries.set(row, g);
      this.mergedFrom.set(row, g.sources);
      rows.push(row);
    }
    return rows;
  }

  /** The bitmap QEMU reads for a stream row: a merged chain's temporary, or the bitmap itself. */
  private readName(b: PlanBitmap): string {
    return this.temporaries.get(b)?.temporary ?? b.source.bitmap;
  }

  /** Applies `enabled` overrides and, with --resume, starts a paused destination. */
  private async finishDestination(): Promise<void> {
    for (const b of this.migrating) {
      const t = b.target;
      if (!t || t.enabled === b.source.recording) continue;
      await this.on(
        this.dst,
        (m) => (t.enabled ? m.enableBitmap(t.node, t.bitmap) : m.disableBitmap(t.node, t.bitmap)),
        `applying enabled=${t.enabled} to ${t.node}/${t.bitmap}`,
      );
    }
    if (this.o.resume) {
      const s = await this.on(this.dst, (m) => m.status(), "reading the destination's run state");
      if (s.status !== "running") await this.on(this.dst, (m) => m.cont(), "resuming the destination");
    }
  }

  // ---- failure ----

  /**
   * Puts the source back: cancel a migration still running, resume a source that completed into a destination
   * that died, and restore persistence of bitmaps QEMU marked "do not store".
   */
  private async recover(err: RunError): Promise<RepairOutcome[]> {
    if (!this.migrateIssued || this.src.lost) return [];
    this.progress("repair", { message: `${err.code}: cancelling and repairing the source` });
    const src = this.src.mon;
    const migrationStatus = async (): Promise<string | undefined> =>
      (await this.tidy(this.src, (m) => m.migrationInfo(), "reading the migration status"))?.status;
    let status = await migrationStatus();
    if (status === "postcopy-active") {
      // The guest already runs on the destination; cancelling now would lose the bitmaps on both sides.
      for (let i = 0; i < 300 && status === "postcopy-active"; i++) {
        await sleep(100);
        status = await migrationStatus();
      }
    }
    if (status !== undefined && CANCELLABLE.has(status)) {
      await src.migrateCancel().catch((e: unknown) => {
        debug("migrate_cancel: %s", describeError(e));
      });
      for (let i = 0; i < 200; i++) {
        status = await migrationStatus();
        if (status === undefined || !RUNNING_STATUSES.has(status)) break;
        await sleep(50);
      }
    }
    // The result's migration.status is where QEMU left the migration (`cancelled`), not the last status the
    // follow loop saw before the cancel (`active`).
    if (status !== undefined) this.lastInfo = { ...this.lastInfo, status };
    const state = (await this.tidy(this.src, (m) => m.status(), "reading the run state"))?.status;
    if (status === "completed" && state === "postmigrate") {
      if (err.code === "VERIFY_FAILED") return []; // both sides alive: the operator decides which runs
      if (this.dst.lost && this.postcopyEntered) {
        this.recoveryNotes.push(POSTCOPY_COMPLETED_NOTE);
        return [];
      }
      // Two running copies of one VM are worse than a stopped one: resume the source only when the destination
      // is gone or answers that it does not run the guest.
      if (!this.dst.lost) {
        const there = (await this.tidy(this.dst, (m) => m.status(), "reading the run state"))?.status;
        if (there === undefined || there === "running") {
          this.recoveryNotes.push(
            there === "running"
              ? "the migration had completed and the destination already runs the guest with its bitmaps; the " +
                  "source stays stopped"
              : "the migration had completed but the destination does not answer: the source stays stopped so " +
                  "that the VM cannot run twice; once the destination answers, resume it, or quit it and resume the source",
          );
          return [];
        }
      }
      // The destination never ran the guest: bring the VM back where it was. `cont` re-activates the source's
      // disks, which also makes QEMU store the migrated bitmaps again.
      const resumed = await src.cont().then(
        () => true,
        (e: unknown) => {
          debug("cont: %s", describeError(e));
          // QEMU refuses when the destination already took the disks' locks (shared storage): then the VM and
          // its bitmaps are on the destination, paused, and only the operator can choose which side runs.
          this.recoveryNotes.push(
            `the source could not be resumed (QEMU refused cont: ${describeError(e)}); the migration had ` +
              "completed, so the VM and its bitmaps are on the destination, which has not run the guest: resume " +
              "the destination, or quit it and then resume the source",
          );
          return false;
        },
      );
      if (resumed && this.sourceRunState0 !== "running") await src.stop().catch(() => undefined);
      return [];
    }
    const persistent = this.migrating.filter((b) => b.source.persistent);
    const hash = this.planResult?.source.facts.features.bitmapSha256 ?? false;
    const outcomes: RepairOutcome[] = [];
    for (const b of persistent) {
      outcomes.push(
        await repairPersistence(
          src,
          {
            node: b.source.node,
            name: b.source.bitmap,
            granularity: b.source.granularity,
            recording: b.source.recording,
          },
          hash,
        ),
      );
    }
    const now = (await this.tidy(this.src, (m) => m.status(), "reading the run state"))?.status;
    if (this.postcopyEntered) {
      this.recoveryNotes.push(postcopyBrokenNote(status));
    } else if (this.sourceRunState0 === "running" && now !== undefined && now !== "running") {
      await src.cont().catch((e: unknown) => {
        debug("cont: %s", describeError(e));
      });
    }
    return outcomes;
  }

  /**
   * A cleanup command: never throws, and a side that stopped answering (the reason the run failed, perhaps) holds
   * the cleanup up once, for RESTORE_WAIT_MS, not for every command or for ever.
   */
  private async tidy<T>(
    side: Side,
    fn: (m: QemuMonitor) => Promise<T>,
    what: string,
  ): Promise<T | undefined> {
    if (side.lost || side.unresponsive) return undefined;
    try {
      return await within(fn(side.mon), RESTORE_WAIT_MS, () => {
        side.unresponsive = true;
      });
    } catch (e) {
      debug("%s on the %s: %s", what, side.name, describeError(e));
      return undefined;
    }
  }

  /** Puts back what bitferry changed (capabilities, downtime-limit), where QEMU allows it. */
  private async restore(): Promise<void> {
    if (this.downtimeRaised !== undefined && this.downtimeOriginal !== undefined) {
      const original = this.downtimeOriginal;
      await this.tidy(
        this.src,
        (m) => m.setMigrationParameters({ "downtime-limit": original }),
        "restoring downtime-limit",
      );
    }
    await Promise.all(
      [this.src, this.dst].map(async (side) => {
        if (Object.keys(side.originalCaps).length === 0) return;
        const info = await this.tidy(side, (m) => m.migrationInfo(), "reading the migration status");
        if (info === undefined || (info.status !== undefined && RUNNING_STATUSES.has(info.status))) return;
        await this.tidy(side, (m) => m.setMigrationCapabilities(side.originalCaps), "restoring capabilities");
      }),
    );
  }

  // ---- results ----

  private plan(): Plan {
    if (!this.planResult) throw new Error("no plan yet");
    return this.planResult.plan;
  }

  private toRunError(err: unknown): RunError {
    if (err instanceof RunError) return err;
    if (err instanceof QmpConnectionClosedError) {
      // A command sent outside `on()` (the storage copy's polling, for one): the watchers know which side went.
      const lost = this.src.lost ? this.src : this.dst.lost ? this.dst : undefined;
      if (lost) {
        return new RunError(
          lost.name === "source" ? "SOURCE_LOST" : "DESTINATION_LOST",
          `the ${lost.name}'s monitor closed (QEMU exited or the socket dropped): ${err.message}`,
          { cause: err },
        );
      }
      return new RunError("QEMU_ERROR", `a monitor closed: ${err.message}`, { cause: err });
    }
    if (err instanceof QmpError || err instanceof BitferryError)
      return new RunError("QEMU_ERROR", err.message, { cause: err });
    return new RunError("QEMU_ERROR", describeError(err), { cause: err });
  }

  private verifiedFromError(err: RunError): VerifiedBitmap[] {
    return this.migrating.flatMap((b) => {
      const t = b.target;
      if (!t) return [];
      const rec = this.sourceRecords.get(b);
      return [
        {
          source: b.source,
          target: t,
          sourceSha256: rec?.sha256 ?? null,
          targetSha256: null,
          verified: "failed" as const,
          reason: `not verified: ${err.code}`,
        },
      ];
    });
  }

  private async result(
    phase: RunOutcomePhase,
    error: MigrateResult["error"],
    bitmaps: VerifiedBitmap[] = [],
    repaired: RepairOutcome[] = [],
  ): Promise<MigrateResult> {
    const info = this.lastInfo;
    const runState = async (side: Side): Promise<string | null> =>
      (await this.tidy(side, (m) => m.status(), "reading the run state"))?.status ?? null;
    const plan = this.plan();
    return {
      version: 1,
      ok: error === undefined,
      plan,
      phase,
      bitmaps,
      migration: {
        status: info?.status ?? "none",
        totalTimeMs: info?.["total-time"] ?? null,
        downtimeMs: info?.downtime ?? null,
        postcopy: this.postcopyEntered,
        ...(this.downtimeRaised !== undefined ? { downtimeLimitRaisedMs: this.downtimeRaised } : {}),
      },
      source: { runState: await runState(this.src), repaired },
      destination: { runState: await runState(this.dst) },
      ...(this.o.copyStorage ? { storage: { disks: this.copies } } : {}),
      ...(error ? { error } : {}),
    };
  }
}

function describeReason(reason: unknown): string {
  if (typeof reason === "string") return reason;
  if (reason instanceof Error) return reason.message;
  return "abort";
}
