import { setMaxListeners } from "node:events";
import type { QemuMonitor } from "../qemu/monitor.js";
import type { MigrationInfo } from "../qemu/replies.js";
import type { Plan, PlanBitmap } from "../policy/types.js";
import { RunError } from "./errors.js";
import type { PlanResult } from "./plan.js";
import type { ProgressListener, RunPhase } from "./progress.js";
import type { RepairOutcome } from "./repair.js";
import { Side } from "./sides.js";
import type { DiskCopy } from "./storage.js";
import { UndoStack } from "./steps.js";
import type { Streams } from "./streams.js";
import type { Route } from "./transport.js";
import type { MigrateOptions } from "./types.js";
import type { SourceRecord } from "./verify.js";

/** What the run has seen of the migration so far (the observing phases write it, the result reads it). */
export interface MigrationSeen {
  lastInfo: MigrationInfo | undefined;
  /** bitferry asked QEMU to switch to postcopy. */
  postcopyStarted: boolean;
  /** QEMU did switch (seen from its MIGRATION events or a poll): the destination may have run the guest since. */
  postcopyEntered: boolean;
  /** `migrate-continue` was sent at pre-switchover. */
  continued: boolean;
  downtimeOriginal: number | undefined;
  downtimeRaised: number | undefined;
  /** The destination was running when the run looked after completion. */
  destinationRan: boolean;
  /** Both sides reported `completed`: no migration runs on either any more (a status that stays until the next). */
  completed: boolean;
}

/**
 * Where the streams go. Without a transport both sides see the same addresses (the user's `--uri` and `--nbd`);
 * a transport step (an SSH tunnel, say) that runs before the incoming side may point each side elsewhere.
 */
export interface Endpoints {
  /** What the destination's `migrate-incoming` listens on. */
  incoming: string;
  /** What the source's `migrate` sends to. */
  outgoing: string;
  /** `--copy-storage`: where the destination's NBD server listens; undefined: a private socket on this host. */
  nbdListen: string | undefined;
  /** Where the source reaches that server (default: `nbdListen`). */
  nbdConnect: string | undefined;
}

/**
 * The state of one run: both sides, the stack of steps, the plan, and what the phases have seen. The phases are
 * functions over it (setup.ts, follow.ts, completion.ts, ...); this class holds only the plumbing they share: the
 * abort (Ctrl-C, --timeout), waiting that wakes on events, progress, and side-aware commands.
 */
export class RunContext {
  readonly src: Side;
  readonly dst: Side;
  readonly started = Date.now();
  readonly abort = new AbortController();
  readonly steps: UndoStack;
  planned: PlanResult | undefined;
  streams: Streams | undefined;
  /** How the stream and the disk copy travel (transport.ts); set before the incoming side starts. */
  route: Route | undefined;
  phase: RunPhase = "plan";
  readonly endpoints: Endpoints;
  readonly seen: MigrationSeen = {
    lastInfo: undefined,
    postcopyStarted: false,
    postcopyEntered: false,
    continued: false,
    downtimeOriginal: undefined,
    downtimeRaised: undefined,
    destinationRan: false,
    completed: false,
  };
  sourceRecords = new Map<PlanBitmap, SourceRecord>();
  copies: DiskCopy[] = [];
  /** Why the run failed, once it did (the migration's abort reads it). */
  error: RunError | undefined;
  /** What recovery could not do, in words for the error message (the operator has to act on it). */
  readonly recoveryNotes: string[] = [];
  repaired: RepairOutcome[] = [];
  private wake: (() => void) | undefined;
  private pendingWake = false;

  constructor(readonly o: MigrateOptions) {
    // Every command in flight listens for the abort (see `abortable`), hundreds at once when bitmaps are hashed;
    // each listener goes with its command, so Node's leak warning would only be noise on the user's terminal.
    setMaxListeners(0, this.abort.signal);
    this.src = new Side(o.source, "source");
    this.dst = new Side(o.destination, "destination");
    // Without --uri the transport's steps (transport.ts) fill these in before anything uses them.
    this.endpoints = { incoming: o.uri ?? "", outgoing: o.uri ?? "", nbdListen: o.nbd, nbdConnect: o.nbd };
    this.steps = new UndoStack({
      skip: (side) =>
        side === "source" ? this.src.gone : side === "destination" ? this.dst.gone : undefined,
      ...(o.onStep ? { onStep: o.onStep } : {}),
    });
    this.abort.signal.addEventListener("abort", () => {
      this.notify();
    });
  }

  get plan(): Plan {
    return this.planResult.plan;
  }

  get planResult(): PlanResult {
    if (!this.planned) throw new Error("no plan yet");
    return this.planned;
  }

  /** The bitmaps of the migration stream (empty before the plan). */
  get rows(): PlanBitmap[] {
    return this.streams?.rows ?? [];
  }

  /** The first step: bitferry's own listeners and timers, removed last. */
  watch(): void {
    const offs: (() => void)[] = [];
    for (const side of [this.src, this.dst]) {
      offs.push(
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
            this.seen.postcopyEntered = true;
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
      offs.push(() => {
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
      offs.push(() => {
        clearTimeout(t);
      });
    }
    this.steps.push({
      name: "watch",
      side: "local",
      what: "bitferry's listeners",
      clean: () => {
        for (const off of offs) off();
        return Promise.resolve();
      },
    });
  }

  /**
   * Something changed: wake the loop now. An event that arrives while the loop is busy with a command is kept, so
   * the next pause returns at once instead of sleeping through it (a missed wake-up once cost 200 ms of downtime).
   */
  notify(): void {
    if (this.wake) this.wake();
    else this.pendingWake = true;
  }

  /** Throws if the run was interrupted or timed out. */
  checkpoint(): void {
    if (this.abort.signal.aborted) throw this.abort.signal.reason;
  }

  /** Waits up to `ms`, waking early on a MIGRATION event, a lost monitor or an abort. */
  async pause(ms: number): Promise<void> {
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

  progress(phase: RunPhase, extra: Partial<Parameters<ProgressListener>[0]> = {}): void {
    this.phase = phase;
    this.o.onProgress?.({ phase, elapsedMs: Date.now() - this.started, ...extra });
  }

  /** Runs a command on one side; a closed monitor or a refusal becomes the run error that says where. */
  async on<T>(side: Side, fn: (m: QemuMonitor) => Promise<T>, what: string): Promise<T> {
    try {
      return await this.abortable(fn(side.mon));
    } catch (err) {
      throw side.error(err, what);
    }
  }

  /**
   * `--timeout` and Ctrl-C take effect even while a command waits on a wedged monitor, not only after the
   * per-command timeout. The command stays in flight (its late reply is dropped); recovery asks QEMU what happened.
   */
  abortable<T>(p: Promise<T>): Promise<T> {
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
}

function describeReason(reason: unknown): string {
  if (typeof reason === "string") return reason;
  if (reason instanceof Error) return reason.message;
  return "abort";
}
