import type { QemuMonitor } from "../qemu/monitor.js";

/** Guest-like actions the lab performs on a running QEMU: writes that dirty bitmaps, jobs that insert filters. */

/**
 * Writes `length` bytes at `offset` through HMP qemu-io. `target` is a drive name (the write goes through the
 * BlockBackend and any filter on top) or a node-name (straight to that node).
 */
export async function writeRange(
  mon: QemuMonitor,
  target: string,
  offset: number,
  length: number,
  pattern = 0xab,
): Promise<void> {
  const out = await mon.humanMonitorCommand(`qemu-io ${target} "write -P ${pattern} ${offset} ${length}"`);
  // qemu-io's own output goes to QEMU's stdout; anything returned here is an HMP-level error.
  if (typeof out === "string" && out.trim() !== "")
    throw new Error(`qemu-io on ${target} failed: ${out.trim()}`);
}

/**
 * Starts a `drive-mirror` of drive `device` into a new image and waits until it is ready. The job keeps running,
 * so the drive stays under QEMU's `mirror_top` filter: the topology that made bitmaps unmigratable in 2019.
 */
export async function startDriveMirror(
  mon: QemuMonitor,
  device: string,
  targetFile: string,
  jobId = "mirror0",
): Promise<void> {
  const ready = mon.qmp.waitForEvent("BLOCK_JOB_READY", {
    filter: (e) => e.data.device === jobId,
    timeoutMs: 30_000,
  });
  await mon.run("drive-mirror", {
    device,
    target: targetFile,
    format: "qcow2",
    sync: "full",
    mode: "absolute-paths",
    "job-id": jobId,
  });
  await ready;
}

/** Ends a mirror started by startDriveMirror without pivoting to its target. */
export async function cancelJob(mon: QemuMonitor, jobId: string): Promise<void> {
  const done = mon.qmp.waitForEvent("BLOCK_JOB_COMPLETED", {
    filter: (e) => e.data.device === jobId,
    timeoutMs: 30_000,
  });
  const cancelled = mon.qmp.waitForEvent("BLOCK_JOB_CANCELLED", {
    filter: (e) => e.data.device === jobId,
    timeoutMs: 30_000,
  });
  await mon.run("block-job-cancel", { device: jobId });
  await Promise.race([done, cancelled]);
}

/** Exports `node` over NBD with `bitmap`, which makes the bitmap busy until the export is removed. */
export async function exportBitmap(
  mon: QemuMonitor,
  socketPath: string,
  node: string,
  bitmap: string,
  exportId = "exp0",
): Promise<void> {
  await mon.run("nbd-server-start", { addr: { type: "unix", data: { path: socketPath } } });
  await mon.run("block-export-add", {
    type: "nbd",
    id: exportId,
    "node-name": node,
    writable: false,
    bitmaps: [bitmap],
  });
}
