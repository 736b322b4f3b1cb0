import { mkdtempSync, rmSync } from "node:fs";
import path from "node:path";
import type { PlanDisk } from "../policy/types.js";
import type { QemuMonitor } from "../qemu/monitor.js";
import { parseSocketAddress, type SocketAddress } from "../qmp/address.js";
import type { QmpEvent } from "../qmp/messages.js";
import { debug } from "../util/debug.js";
import { describeError } from "../util/errors.js";
import { RunError } from "./errors.js";

/** What the copy of one disk came to. */
export interface DiskCopy {
  source: PlanDisk["source"];
  target: PlanDisk["target"];
  /** Bytes QEMU's mirror reports copied, and the disk's length. */
  copiedBytes: number;
  totalBytes: number;
  /** The mirror reached `ready` and completed without error, offset equal to length. */
  complete: boolean;
  error?: string;
}

interface Job {
  disk: PlanDisk;
  id: string;
  exportId: string;
  exportName: string;
  nbdNode: string;
  ready: boolean;
  done: boolean;
  error: string | undefined;
  offset: number;
  len: number;
}

/**
 * Copies disks for a migration without shared storage: the destination exports its (empty) target nodes over NBD,
 * the source mirrors each disk into them, and after the switchover the mirrors complete without pivot. Every
 * export, NBD client node and job is removed again, also on failure, so both sides end as they began.
 */
export class StorageCopy {
  private readonly jobs: Job[];
  private readonly socketDir: string | undefined;
  private readonly address: SocketAddress;
  private serverStarted = false;
  private readonly offs: (() => void)[] = [];

  constructor(
    private readonly src: QemuMonitor,
    private readonly dst: QemuMonitor,
    disks: PlanDisk[],
    nbd: string | undefined,
  ) {
    if (nbd === undefined) {
      // Both QEMUs on this host: a private socket nobody else can reach.
      this.socketDir = mkdtempSync(path.join("/tmp", "bf-nbd-"));
      this.address = { type: "unix", path: path.join(this.socketDir, "nbd.sock") };
    } else {
      this.address = parseSocketAddress(nbd);
    }
    const tag = `${process.pid}-${Date.now() % 100000}`;
    this.jobs = disks.map((disk, i) => ({
      disk,
      id: `bitferry-mirror-${i}`,
      exportId: `bitferry-export-${i}`,
      exportName: `bitferry-${tag}-${i}`,
      nbdNode: `bf-nbd-${i}`,
      ready: false,
      done: false,
      error: undefined,
      offset: 0,
      len: disk.source.size,
    }));
  }

  get totalBytes(): number {
    return this.jobs.reduce((s, j) => s + j.len, 0);
  }

  get copiedBytes(): number {
    return this.jobs.reduce((s, j) => s + j.offset, 0);
  }

  /** Exports the destination nodes, attaches them on the source and starts one mirror per disk. */
  async start(): Promise<void> {
    const onEvent = (e: QmpEvent): void => {
      const job = this.jobs.find((j) => j.id === e.data.device);
      if (!job) return;
      if (e.event === "BLOCK_JOB_READY") job.ready = true;
      if (e.event === "BLOCK_JOB_ERROR")
        job.error ??= `I/O error (${String(e.data.operation)}: ${String(e.data.action)})`;
      if (e.event === "BLOCK_JOB_COMPLETED" || e.event === "BLOCK_JOB_CANCELLED") {
        job.done = true;
        if (typeof e.data.error === "string") job.error ??= e.data.error;
        if (typeof e.data.offset === "number") job.offset = e.data.offset;
        if (typeof e.data.len === "number") job.len = e.data.len;
      }
    };
    for (const ev of ["BLOCK_JOB_READY", "BLOCK_JOB_ERROR", "BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED"]) {
      this.offs.push(this.src.qmp.on(ev, onEvent));
    }
    const addr =
      this.address.type === "unix"
        ? { type: "unix", data: { path: this.address.path } }
        : { type: "inet", data: { host: this.address.host, port: String(this.address.port) } };
    await this.step("destination", "starting the NBD server", () =>
      this.dst.run("nbd-server-start", { addr }),
    );
    this.serverStarted = true;
    const server =
      this.address.type === "unix"
        ? { type: "unix", path: this.address.path }
        : { type: "inet", host: this.address.host, port: String(this.address.port) };
    for (const j of this.jobs) {
      await this.step("destination", `exporting ${j.disk.target.node}`, () =>
        this.dst.run("block-export-add", {
          type: "nbd",
          id: j.exportId,
          "node-name": j.disk.target.node,
          name: j.exportName,
          writable: true,
        }),
      );
      await this.step("source", `attaching the destination's ${j.disk.target.node} over NBD`, () =>
        this.src.run("blockdev-add", { driver: "nbd", "node-name": j.nbdNode, server, export: j.exportName }),
      );
      await this.step("source", `starting to mirror ${j.disk.source.node}`, () =>
        this.src.run("blockdev-mirror", {
          "job-id": j.id,
          device: j.disk.source.mirrorFrom,
          target: j.nbdNode,
          sync: "full",
        }),
      );
    }
  }

  /** Refreshes offsets from QEMU and reports whether every mirror is ready; throws COPY_FAILED on a failed one. */
  async poll(): Promise<boolean> {
    const jobs = await this.src.blockJobs();
    for (const j of this.jobs) {
      const info = jobs.find((x) => x.device === j.id);
      if (info) {
        j.offset = info.offset;
        j.len = info.len;
        if (info.ready) j.ready = true;
      }
      if (j.error !== undefined || (j.done && !info)) {
        throw new RunError(
          "COPY_FAILED",
          `copying ${j.disk.source.node} to the destination's ${j.disk.target.node} failed: ${j.error ?? "the mirror ended early"}`,
        );
      }
    }
    return this.jobs.every((j) => j.ready);
  }

  /** After the switchover: completes every mirror without pivot (the source keeps its own disks). */
  async complete(): Promise<DiskCopy[]> {
    for (const j of this.jobs) {
      if (!j.done)
        await this.step("source", `completing the mirror of ${j.disk.source.node}`, () =>
          this.src.run("block-job-cancel", { device: j.id }),
        );
    }
    for (let i = 0; i < 600 && this.jobs.some((j) => !j.done); i++) await sleep(50);
    return this.jobs.map((j) => ({
      source: j.disk.source,
      target: j.disk.target,
      copiedBytes: j.offset,
      totalBytes: j.len,
      complete: j.done && j.ready && j.error === undefined && j.offset === j.len,
      ...(j.error !== undefined
        ? { error: j.error }
        : !j.done
          ? { error: "the mirror did not complete" }
          : {}),
    }));
  }

  /** Removes every job, NBD client node and export on both sides; safe to call after any failure, and twice. */
  async teardown(srcAlive: boolean, dstAlive: boolean): Promise<void> {
    for (const off of this.offs.splice(0)) off();
    if (srcAlive) {
      for (const j of this.jobs) {
        if (!j.done) {
          await this.src.run("block-job-cancel", { device: j.id, force: true }).catch(quiet);
        }
      }
      for (let i = 0; i < 200; i++) {
        const jobs = await this.src.blockJobs().catch(() => []);
        if (!jobs.some((x) => this.jobs.some((j) => j.id === x.device))) break;
        await sleep(50);
      }
      for (const j of this.jobs) await this.src.run("blockdev-del", { "node-name": j.nbdNode }).catch(quiet);
    }
    if (dstAlive) {
      for (const j of this.jobs) await this.dst.run("block-export-del", { id: j.exportId }).catch(quiet);
      if (this.serverStarted) await this.dst.run("nbd-server-stop").catch(quiet);
    }
    this.serverStarted = false;
    if (this.socketDir) rmSync(this.socketDir, { recursive: true, force: true });
  }

  private async step(side: string, what: string, fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      throw new RunError("COPY_FAILED", `${side}: ${what}: ${describeError(err)}`, { cause: err });
    }
  }
}

function quiet(err: unknown): void {
  debug("storage teardown: %s", describeError(err));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
