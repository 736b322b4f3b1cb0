import { migrate, type MigrateOptions, type MigrateResult } from "../../src/migrate/run.js";
import { RunFailed } from "./failures.js";

export interface TimedMigration {
  result: MigrateResult;
  wallMs: number;
  /** bitferry's switchover pause: its `pre-switchover` progress event to its `device` one (NaN if not seen). */
  pauseMs: number;
}

/** One `migrate()` run, timed; anything but success with every bitmap `strict` is a RunFailed. */
export async function timedStrictMigrate(options: MigrateOptions): Promise<TimedMigration> {
  let pre: number | undefined;
  let cont: number | undefined;
  const t0 = performance.now();
  const result = await migrate({
    ...options,
    onProgress: (p) => {
      if (p.status === "pre-switchover") pre ??= performance.now();
      if (p.phase === "switchover" && p.status === "device") cont ??= performance.now();
    },
  });
  const wallMs = performance.now() - t0;
  if (!result.ok || result.bitmaps.some((b) => b.verified !== "strict")) {
    throw new RunFailed(
      result.error?.code ?? "VERIFY",
      result.error?.message ?? JSON.stringify(result.bitmaps.map((b) => b.verified)),
    );
  }
  return { result, wallMs, pauseMs: pre !== undefined && cont !== undefined ? cont - pre : NaN };
}
