import { QmpClient } from "../qmp/client.js";
import { QmpCommandError, QmpConnectionClosedError } from "../qmp/errors.js";
import { QemuMonitor } from "../qemu/monitor.js";
import { debug } from "../util/debug.js";
import { describeError } from "../util/errors.js";
import { RunError } from "./errors.js";
import { bounded } from "./steps.js";

/** How long an undo waits for a side's answer before leaving that side as it is. */
export const RESTORE_WAIT_MS = 10_000;

/** One of the two QEMUs of a run, and what the run knows about its monitor. */
export class Side {
  lost = false;
  /** Left an undo command unanswered for RESTORE_WAIT_MS: later undos leave this side alone. */
  unresponsive = false;
  readonly mon: QemuMonitor;

  constructor(
    m: QmpClient | QemuMonitor,
    readonly name: "source" | "destination",
  ) {
    this.mon = monitorOf(m);
  }

  /** Why the undos of this side's steps are skipped, if they are. */
  get gone(): "lost" | "unresponsive" | undefined {
    return this.lost ? "lost" : this.unresponsive ? "unresponsive" : undefined;
  }

  /**
   * A command of an undo: bounded, so that a side that stopped answering (the reason the run failed, perhaps)
   * holds the unwinding up once, for RESTORE_WAIT_MS, not for every command or for ever. Throws what failed.
   */
  async undo<T>(fn: (m: QemuMonitor) => Promise<T>): Promise<T> {
    if (this.lost) throw new Error(`the ${this.name}'s monitor is closed`);
    if (this.unresponsive) throw new Error(`the ${this.name} does not answer`);
    return bounded(fn(this.mon), RESTORE_WAIT_MS, () => {
      this.unresponsive = true;
    });
  }

  /** A bounded command whose failure only means "unknown" (a status read during recovery): never throws. */
  async tidy<T>(fn: (m: QemuMonitor) => Promise<T>, what: string): Promise<T | undefined> {
    if (this.lost || this.unresponsive) return undefined;
    try {
      return await this.undo(fn);
    } catch (e) {
      debug("%s on the %s: %s", what, this.name, describeError(e));
      return undefined;
    }
  }

  /** A closed monitor or a refusal, as the run error that says where. */
  error(err: unknown, what: string): unknown {
    if (err instanceof QmpConnectionClosedError) {
      this.lost = true;
      return new RunError(
        this.name === "source" ? "SOURCE_LOST" : "DESTINATION_LOST",
        `the ${this.name}'s monitor closed while ${what} (QEMU exited or the socket dropped)`,
        { cause: err },
      );
    }
    if (err instanceof QmpCommandError) {
      return new RunError(
        "QEMU_ERROR",
        `${this.name} QEMU refused ${err.command} while ${what}: ${err.desc}`,
        { cause: err },
      );
    }
    return err;
  }
}

/** QEMU answered this command with an error (also when wrapped as a run error): it changed nothing. */
export function refused(err: unknown): boolean {
  for (let e: unknown = err; e instanceof Error; e = e.cause) if (e instanceof QmpCommandError) return true;
  return false;
}

/** `p`, whose rejection is handled where it is awaited, or dropped when its answer turns out not to be needed. */
export function quiet<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}

/**
 * The undo of a change that may never have been made (a step recorded before its command, see `UndoStack.sent`):
 * QEMU's "not found" answer means there is nothing to undo. `absent` matches that answer's text.
 */
export async function undoIfPresent(run: () => Promise<unknown>, absent: RegExp): Promise<void> {
  try {
    await run();
  } catch (err) {
    if (err instanceof QmpCommandError && absent.test(err.desc)) return;
    throw err;
  }
}

export function monitorOf(m: QmpClient | QemuMonitor): QemuMonitor {
  return m instanceof QmpClient ? new QemuMonitor(m) : m;
}

/** QEMU's migration statuses while a migration runs (capabilities cannot change then). */
export const RUNNING_STATUSES = new Set([
  "setup",
  "active",
  "pre-switchover",
  "device",
  "wait-unplug",
  "cancelling",
]);
export const CANCELLABLE = new Set(["setup", "active", "pre-switchover", "device", "wait-unplug"]);

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
