import { debug } from "../util/debug.js";
import { describeError } from "../util/errors.js";

/**
 * The run as a stack of undoable steps (DESIGN section 6), after QEMU's `util/transactions.c`: every change the run
 * makes to a QEMU or a host is pushed here once it has succeeded, with what undoes it. When the run ends the stack
 * unwinds newest first: the aborts (only when the run failed), then the cleans (however it ended). An undo that
 * fails is reported and the others still run. Nothing here knows QEMU: the sides and the bounded commands are the
 * run's (see sides.ts), so a transport adds steps without touching this file.
 */

/**
 * Every kind of step the run pushes, in the order a full run pushes them. A new kind is added here (and covered by
 * test/integration/step-boundaries.test.ts, which fails for a kind no scenario reaches).
 */
export const STEP_NAMES = [
  /** bitferry's own listeners and timers (monitor close, MIGRATION events, Ctrl-C, --timeout). */
  "watch",
  /** `dirty-bitmaps`, `events` (both sides), `pause-before-switchover` (source). Clean: put back. */
  "capabilities",
  /** `block-bitmap-mapping`. No undo: QEMU cannot unset it, and every run sets it explicitly. */
  "mapping",
  // Two hosts (transport.ts): before the incoming side and the NBD server that use them.
  /** The watch on the run's SSH connections (one that drops fails the run). Clean: remove it. */
  "ssh-watch",
  /** This run's private socket directory on a host (remote: in the SSH connection's own). Clean: remove it. */
  "socket-dir",
  /** One SSH forward of the migration stream's or the disk copy's tunnel. Clean: cancel it. */
  "tunnel",
  /** A `tls-creds-x509` object (server on the destination, client on the source). Clean: `object-del`. */
  "tls-creds",
  /** `tls-creds` (and on the source `tls-hostname`) of the migration. Clean: reset them with "". */
  "tls-params",
  /** `migrate-incoming` on a `-incoming defer` destination. No undo: QEMU cannot stop listening. */
  "incoming",
  /** --copy-storage: the private directory of the NBD socket on this host. Clean: remove it. */
  "nbd-socket-dir",
  /** --copy-storage: bitferry's listeners for the mirrors' job events. Clean: remove them. */
  "mirror-events",
  /** --copy-storage: `nbd-server-start` on the destination. Clean: `nbd-server-stop`. */
  "nbd-server",
  /** --copy-storage: `block-export-add` of one destination disk. Clean: `block-export-del`. */
  "export",
  /** --copy-storage: the source's NBD client node of one exported disk. Clean: `blockdev-del`. */
  "nbd-node",
  /** --copy-storage: one `blockdev-mirror`. Clean: cancel it (no pivot) and wait until it is gone. */
  "mirror",
  /** --copy-storage: a backing chain's bitmaps merged into one temporary bitmap. Clean: remove it. */
  "merged-bitmap",
  /** `migrate`. Abort: cancel, then recovery (resume the source where safe, make its bitmaps storable again). */
  "migration",
  /** `downtime-limit` raised within --max-downtime. Clean: put the user's value back. */
  "downtime-limit",
] as const;

export type StepName = (typeof STEP_NAMES)[number];

/** Where a step's change lives: a side's QEMU, or this host (files, processes, bitferry's own listeners). */
export type StepSide = "source" | "destination" | "local";

export interface Step {
  name: StepName;
  side: StepSide;
  /** What the step made, for the report of an undo that failed ("export 'bitferry-export-0' of vda"). */
  what?: string;
  /** Undoes the change when the run failed; runs before every clean. */
  abort?: () => Promise<void>;
  /** Undoes the change however the run ended. */
  clean?: () => Promise<void>;
  /** Bound of each of its undos (default UNDO_BOUND_MS). */
  boundMs?: number;
  /**
   * Steps next to each other on the stack with the same key are undone at the same time: they change different
   * QEMUs (one step per side), so neither undo has to wait for the other's round trips.
   */
  together?: string;
}

/** One change of `UndoStack.together`. */
export interface TogetherChange {
  step: Step;
  change: () => Promise<unknown>;
  /** Given: recorded before the change is sent, as `sent` does. Absent: recorded once it succeeded, as `push`. */
  refused?: (err: unknown) => boolean;
}

/** An undo that did not complete: the run's result says so (in the error message of a failed run). */
export interface UndoFailure {
  name: StepName;
  side: StepSide;
  what: string | undefined;
  undo: "abort" | "clean";
  message: string;
}

/** A pushed step: `release` runs its clean now and drops it (the storage copy's teardown after the switchover). */
export interface StepHandle {
  readonly step: Step;
  release(): Promise<void>;
}

/** A recorded step as tests and logs see it. */
export interface StepRecord {
  index: number;
  name: StepName;
  side: StepSide;
  what: string | undefined;
}

export interface UndoStackOptions {
  /** A side that is gone or stopped answering: its steps are left as they are (reported when it stopped answering). */
  skip?: (side: StepSide) => "lost" | "unresponsive" | undefined;
  /** Called once the step is recorded; may throw, which fails the run with the step's undo in place (tests). */
  onStep?: (step: StepRecord) => void;
}

/** Default bound of one undo: a side's one bounded wait and then some; a wedged undo is given up on. */
export const UNDO_BOUND_MS = 40_000;

export class UndoStack {
  private readonly stack: Step[] = [];
  private readonly failures: UndoFailure[] = [];
  private count = 0;

  constructor(private readonly options: UndoStackOptions = {}) {}

  /** Records a change that succeeded. Throws only what `onStep` throws. */
  push(step: Step): StepHandle {
    this.stack.push(step);
    const handle: StepHandle = { step, release: () => this.release([handle]) };
    this.options.onStep?.({ index: this.count++, name: step.name, side: step.side, what: step.what });
    return handle;
  }

  /**
   * For a change whose own failure can leave something to undo (QEMU's `migrate` may fail after it began): the
   * step is recorded first, then the change is made; `onStep` sees it only once the change succeeded.
   */
  async around<T>(step: Step, change: () => Promise<T>): Promise<T> {
    this.stack.push(step);
    const out = await change();
    this.options.onStep?.({ index: this.count++, name: step.name, side: step.side, what: step.what });
    return out;
  }

  /**
   * For a change QEMU may make although its reply never arrives (--timeout, Ctrl-C or a reply timeout while the
   * command is in flight): the step is recorded before the command is sent, so its undos run whatever happens to
   * the reply, and they must accept that the change is absent. It is dropped again when `refused(err)` says QEMU
   * answered with an error: nothing was made then, and what already has that name is not the run's to remove.
   */
  async sent(
    step: Step,
    change: () => Promise<unknown>,
    refused: (err: unknown) => boolean,
  ): Promise<StepHandle> {
    const handle: StepHandle = { step, release: () => this.release([handle]) };
    this.stack.push(step);
    try {
      await change();
    } catch (err) {
      if (refused(err)) this.stack.splice(this.stack.indexOf(step), 1);
      throw err;
    }
    this.options.onStep?.({ index: this.count++, name: step.name, side: step.side, what: step.what });
    return handle;
  }

  /**
   * Several changes made at once (on both monitors, or pipelined on one), each recorded as `sent` (when it has
   * `refused`) or `push` (when not) would record it, in the order given: the stack ends as if they had been made
   * one after another, except that a change after a failed one was made too (and is recorded, so it is undone).
   * `onStep` sees them in that order, up to the first that failed, whose error is then thrown; an `onStep` that
   * throws stops there, with every change already recorded.
   */
  async together(changes: TogetherChange[]): Promise<void> {
    const early = changes.filter((c) => c.refused !== undefined).map((c) => c.step);
    this.stack.push(...early);
    const settled = await Promise.allSettled(changes.map((c) => c.change()));
    settled.forEach((r, i) => {
      const c = changes[i];
      if (!c) return;
      if (r.status === "fulfilled") {
        if (c.refused === undefined) this.stack.push(c.step);
      } else if (c.refused?.(r.reason) === true) {
        this.stack.splice(this.stack.indexOf(c.step), 1);
      }
    });
    settled.forEach((r, i) => {
      const step = changes[i]?.step;
      if (!step) return;
      if (r.status === "rejected") throw r.reason;
      this.options.onStep?.({ index: this.count++, name: step.name, side: step.side, what: step.what });
    });
  }

  /** Runs the cleans of these steps now, newest first, and drops them from the stack. */
  async release(handles: StepHandle[]): Promise<void> {
    const steps = new Set(handles.map((h) => h.step));
    const mine = this.stack.filter((s) => steps.has(s)).reverse();
    for (const s of mine) this.stack.splice(this.stack.indexOf(s), 1);
    for (const s of mine) {
      const f = await this.undo(s, "clean");
      if (f) this.failures.push(f);
    }
  }

  /** Unwinds everything: the aborts newest first when the run failed, then every clean newest first. */
  async unwind(failed: boolean): Promise<UndoFailure[]> {
    const groups = groupTogether(this.stack.splice(0).reverse());
    if (failed) for (const g of groups) await this.undoAll(g, "abort");
    for (const g of groups) await this.undoAll(g, "clean");
    return this.failures.splice(0);
  }

  /** One group's undos at once; their failures are reported in the group's order, whichever finished first. */
  private async undoAll(group: Step[], undo: "abort" | "clean"): Promise<void> {
    const failed = await Promise.all(group.map((s) => this.undo(s, undo)));
    for (const f of failed) if (f) this.failures.push(f);
  }

  private async undo(s: Step, undo: "abort" | "clean"): Promise<UndoFailure | undefined> {
    const fn = s[undo];
    if (!fn) return undefined;
    const skipped = this.options.skip?.(s.side);
    if (skipped === "lost") return undefined; // the QEMU is gone, and with it everything the step made there
    const fail = (message: string): UndoFailure => {
      debug("undo (%s) of step %s%s: %s", undo, s.name, s.what ? ` (${s.what})` : "", message);
      return { name: s.name, side: s.side, what: s.what, undo, message };
    };
    if (skipped === "unresponsive") return fail(`the ${s.side} does not answer`);
    try {
      await bounded(fn(), s.boundMs ?? UNDO_BOUND_MS);
      return undefined;
    } catch (err) {
      // A QEMU that ended while its step was undone (a destination whose incoming migration failed) took it along.
      if (this.options.skip?.(s.side) === "lost") return undefined;
      return fail(describeError(err));
    }
  }
}

/** Adjacent steps with the same `together` key, as one group each; every other step alone. */
function groupTogether(steps: Step[]): Step[][] {
  const groups: Step[][] = [];
  for (const s of steps) {
    const last = groups.at(-1);
    const prev = last?.at(-1);
    if (last && s.together !== undefined && prev?.together === s.together) last.push(s);
    else groups.push([s]);
  }
  return groups;
}

/** `p`, or a rejection after `ms` (the work itself goes on; what it returns later is dropped). */
export function bounded<T>(p: Promise<T>, ms: number, onTimeout?: () => void): Promise<T> {
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

/** One sentence per failed undo, for the error message of a failed run. */
export function describeUndoFailure(f: UndoFailure): string {
  const what = f.what ?? f.name;
  return `could not undo ${what} on ${f.side === "local" ? "this host" : `the ${f.side}`}: ${f.message}`;
}
