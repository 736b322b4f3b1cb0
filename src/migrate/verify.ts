import type { Bitmap } from "../graph/model.js";
import type { PlanBitmapSource, PlanBitmapTarget } from "../policy/types.js";

export type Verification = "strict" | "count" | "weak" | "failed";

/** One migrated bitmap in the `migrate --json` result. */
export interface VerifiedBitmap {
  source: PlanBitmapSource;
  target: PlanBitmapTarget;
  sourceSha256: string | null;
  targetSha256: string | null;
  verified: Verification;
  /** Why the check is weaker than strict, or what failed. */
  reason?: string;
  /** The destination bitmap's dirty bytes. */
  targetDirtyBytes?: number;
  /** `--copy-storage`: the backing-chain bitmaps merged into this one. */
  mergedFrom?: { node: string; bitmap: string }[];
}

/**
 * What the source bitmap was after the migration completed: the source is stopped for good and its images are
 * inactive, so this is exactly what it sent, including what its own switchover wrote (reference R31).
 */
export interface SourceRecord {
  sha256: string | null;
  count: number;
  nodeSize: number;
}

export interface DestinationRecord {
  bitmap: Bitmap | undefined;
  nodeSize: number | undefined;
  sha256: string | null;
  /** The destination ran its guest before we looked, so its bitmaps may have recorded writes. */
  ran: boolean;
}

/**
 * Judges one bitmap: strict when the content hash matches, count when only granularity and dirty count can be
 * compared (a larger destination node hashes a longer bitmap), weak when the destination already ran. Pure.
 */
export function judgeBitmap(
  source: PlanBitmapSource,
  target: PlanBitmapTarget,
  src: SourceRecord,
  dst: DestinationRecord,
): VerifiedBitmap {
  const base = { source, target, sourceSha256: src.sha256, targetSha256: dst.sha256 };
  const fail = (reason: string): VerifiedBitmap => ({ ...base, verified: "failed", reason });
  const b = dst.bitmap;
  if (!b) {
    return fail(
      `bitmap '${target.bitmap}' is not on destination node '${target.node}': QEMU dropped it on the way ` +
        `(the destination reports why only on its stderr)`,
    );
  }
  const withCount = { ...base, targetDirtyBytes: b.count };
  if (b.granularity !== source.granularity)
    return fail(`granularity ${b.granularity}, expected ${source.granularity}`);
  if (b.persistent !== target.persistent)
    return fail(`persistent is ${b.persistent}, planned ${target.persistent}`);
  if (b.inconsistent) return fail("the destination bitmap is inconsistent");
  if (b.busy) return fail("the destination bitmap is still busy (its migration did not finish)");
  if (b.recording !== source.recording)
    return fail(`recording is ${b.recording}, the source's was ${source.recording}`);
  if (dst.ran) {
    return b.count >= src.count
      ? {
          ...withCount,
          verified: "weak",
          reason:
            "the destination resumed before verification: checked existence, granularity and that the dirty count did not shrink",
        }
      : {
          ...withCount,
          verified: "failed",
          reason: `dirty count ${b.count} is below the source's ${src.count}`,
        };
  }
  const sameSize = dst.nodeSize === src.nodeSize;
  if (sameSize && src.sha256 !== null && dst.sha256 !== null) {
    if (src.sha256 === dst.sha256) return { ...withCount, verified: "strict" };
    return {
      ...withCount,
      verified: "failed",
      reason: `content differs: SHA-256 ${dst.sha256}, the source's ${src.sha256}`,
    };
  }
  const why = !sameSize
    ? `destination node is larger (${dst.nodeSize ?? "?"} bytes, source ${src.nodeSize}): QEMU's hash covers the whole, longer bitmap`
    : "no content hash available (x-debug-block-dirty-bitmap-sha256 missing)";
  if (b.count === src.count)
    return { ...withCount, verified: "count", reason: `${why}; granularity and dirty count match` };
  return {
    ...withCount,
    verified: "failed",
    reason: `dirty count ${b.count}, the source's ${src.count} (${why})`,
  };
}
