import type { MigrateResult } from "../../src/migrate/run.js";
import type { Verification, VerifiedBitmap } from "../../src/migrate/verify.js";
import type { Plan } from "../../src/policy/types.js";

const REASONS: Record<Verification, string | undefined> = {
  strict: undefined,
  count:
    "destination node is larger (68719476736 bytes, source 67108864): QEMU's hash covers the whole, longer bitmap; granularity and dirty count match",
  weak: "the destination resumed before verification: checked existence, granularity and that the dirty count did not shrink",
  failed: "content differs: SHA-256 a1b2, the source's c3d4 <&\"'>",
};

/**
 * A `migrate` result for a plan, as `migrate` returns it, with the verifications given in turn (the picture only
 * reads results, and a live run can only produce the outcome its QEMUs allow).
 */
export function resultFor(plan: Plan, verdicts: Verification[]): MigrateResult {
  const bitmaps: VerifiedBitmap[] = plan.bitmaps
    .filter((b) => b.action === "migrate")
    .map((b, i) => {
      const verified = verdicts[i % verdicts.length] ?? "strict";
      const reason = REASONS[verified];
      if (!b.target) throw new Error("a migrating bitmap without a target");
      return {
        source: b.source,
        target: b.target,
        sourceSha256: "c3d4",
        targetSha256: verified === "strict" ? "c3d4" : "a1b2",
        verified,
        ...(reason !== undefined ? { reason } : {}),
        targetDirtyBytes: b.source.dirtyBytes,
      };
    });
  const failed = bitmaps.some((b) => b.verified === "failed");
  return {
    version: 1,
    ok: !failed,
    plan,
    phase: failed ? "failed" : "verified",
    bitmaps,
    migration: { status: "completed", totalTimeMs: 1834, downtimeMs: 41, postcopy: false },
    source: { runState: "postmigrate", repaired: [] },
    destination: { runState: "paused" },
    ...(failed
      ? {
          error: {
            code: "VERIFY_FAILED" as const,
            message: `1 of ${bitmaps.length} bitmap(s) failed verification on the destination`,
          },
        }
      : {}),
  };
}
