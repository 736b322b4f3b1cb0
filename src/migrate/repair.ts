import type { QemuMonitor } from "../qemu/monitor.js";
import { describeError } from "../util/errors.js";
import { debug } from "../util/debug.js";

/** A persistent bitmap that took part in a migration that did not complete. */
export interface RepairTarget {
  node: string;
  name: string;
  granularity: number;
  recording: boolean;
}

export interface RepairOutcome {
  node: string;
  name: string;
  ok: boolean;
  /** The bitmap's SHA-256 before and after the repair (equal when it worked). */
  sha256Before?: string;
  sha256After?: string;
  message?: string;
}

let repairCounter = 0;

/**
 * QEMU (7.2 to 10.2) marks every bitmap it starts migrating "do not store" and never clears the mark when the
 * migration fails or is cancelled, so a later clean shutdown silently drops persistent bitmaps (reference §6.3).
 * Recreating the bitmap clears the mark: copy it to a temporary bitmap, remove it, add it again as persistent, copy
 * the content back, remove the temporary. One command at a time, as verified on QEMU 7.2; the content survives in
 * one of the two bitmaps at every step, and a failure midway says where.
 */
export async function repairPersistence(
  mon: QemuMonitor,
  t: RepairTarget,
  hash: boolean,
): Promise<RepairOutcome> {
  const tmp = `bitferry-repair-${process.pid}-${repairCounter++}`;
  const out: RepairOutcome = { node: t.node, name: t.name, ok: false };
  const disabled = !t.recording;
  let step = "hash";
  try {
    if (hash) out.sha256Before = await mon.bitmapSha256(t.node, t.name);
    step = `add temporary bitmap '${tmp}'`;
    await mon.addBitmap(t.node, tmp, { granularity: t.granularity, disabled });
    step = `copy '${t.name}' into '${tmp}'`;
    await mon.mergeBitmaps(t.node, tmp, [t.name]);
    step = `remove '${t.name}'`;
    await mon.removeBitmap(t.node, t.name);
    step = `re-add '${t.name}' as persistent`;
    await mon.addBitmap(t.node, t.name, { granularity: t.granularity, persistent: true, disabled });
    step = `copy '${tmp}' back into '${t.name}'`;
    await mon.mergeBitmaps(t.node, t.name, [tmp]);
    step = `remove '${tmp}'`;
    await mon.removeBitmap(t.node, tmp);
    if (hash) out.sha256After = await mon.bitmapSha256(t.node, t.name);
    out.ok = !hash || out.sha256After === out.sha256Before;
    if (!out.ok)
      out.message = `content changed during the repair (a guest write?): ${out.sha256Before ?? ""} → ${out.sha256After ?? ""}`;
  } catch (err) {
    const keep =
      step.startsWith("re-add") || step.startsWith("copy '" + tmp)
        ? ` Its content is safe in '${tmp}' on node '${t.node}': re-create '${t.name}' (persistent, granularity ${t.granularity}) and merge '${tmp}' into it.`
        : "";
    out.message = `could not restore persistence of '${t.name}' on '${t.node}' at step "${step}": ${describeError(err)}.${keep}`;
  }
  debug("repair %s/%s: %s", t.node, t.name, out.ok ? "ok" : (out.message ?? "failed"));
  return out;
}
