import { migrate, type MigrateOptions, type MigrateResult } from "../../src/migrate/run.js";
import type { ProgressEvent } from "../../src/migrate/progress.js";
import type { Lab } from "../../src/lab/lab.js";
import type { ScenarioPair } from "../../src/lab/scenarios.js";

/** Migrates a lab pair through bitferry's library, over a unix socket in the lab directory. */
export function runMigration(
  lab: Lab,
  pair: ScenarioPair,
  extra: Partial<MigrateOptions> = {},
): Promise<MigrateResult> {
  return migrate({
    source: pair.source.monitor,
    destination: pair.destination.monitor,
    uri: `unix:${lab.path("mig.sock")}`,
    ...extra,
  });
}

/** A progress listener that acts once, on the first event matching `pred` (to inject a fault at a phase). */
export function onceAt(pred: (e: ProgressEvent) => boolean, act: () => void): (e: ProgressEvent) => void {
  let done = false;
  return (e) => {
    if (!done && pred(e)) {
      done = true;
      act();
    }
  };
}

/** Options that interrupt a run (as a user's Ctrl-C would) at the first progress event matching `pred`. */
export function interruptAt(pred: (e: ProgressEvent) => boolean): {
  signal: AbortSignal;
  onProgress: (e: ProgressEvent) => void;
} {
  const ac = new AbortController();
  return {
    signal: ac.signal,
    onProgress: onceAt(pred, () => {
      ac.abort("test");
    }),
  };
}
