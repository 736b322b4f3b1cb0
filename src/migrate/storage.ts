import { mkdtempSync, rmSync } from "node:fs";
import path from "node:path";
import type { PlanDisk } from "../policy/types.js";
import { parseSocketAddress, type SocketAddress } from "../qmp/address.js";
import type { QmpEvent } from "../qmp/messages.js";
import { QmpCommandError, QmpConnectionClosedError } from "../qmp/errors.js";
import type { QemuMonitor } from "../qemu/monitor.js";
import { describeError } from "../util/errors.js";
import type { RunContext } from "./context.js";
import { RunError } from "./errors.js";
import { refused, sleep, undoIfPresent } from "./sides.js";
import type { Step, StepHandle } from "./steps.js";
import { isTlsFailure, nbdClientTls, nbdServerTls } from "../transport/tls.js";

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

/** How often, 50 ms apart, an export's clean asks again while QEMU still sees its NBD client (about 2 s). */
const EXPORT_RELEASE_TRIES = 40;

/**
 * block-export-del once the export has no client. Its clean runs right after the clean of the source's NBD node (newest
 * first), but the destination sees that connection close a moment later, and until then QEMU refuses ("export '…'
 * still in use"). If the client is still there after EXPORT_RELEASE_TRIES, it is disconnected (mode hard): the only
 * client of the export is bitferry's own NBD node on the source, never the VM's disks.
 */
export async function deleteExport(m: QemuMonitor, id: string): Promise<void> {
  for (let i = 0; ; i++) {
    const force = i >= EXPORT_RELEASE_TRIES;
    try {
      await m.run("block-export-del", force ? { id, mode: "hard" } : { id });
      return;
    } catch (err) {
      if (force || !(err instanceof QmpCommandError) || !/^export '.*' still in use$/.test(err.desc))
        throw err;
      await sleep(50);
    }
  }
}

/**
 * Copies disks for a migration without shared storage: the destination exports its (empty) target nodes over NBD,
 * the source mirrors each disk into them, and after the switchover the mirrors complete without pivot. Each export,
 * NBD client node and mirror is a step of the run, so each is removed again, also on failure, and both sides end
 * as they began.
 */
export class StorageCopy {
  private readonly jobs: Job[];
  private readonly handles: StepHandle[] = [];

  constructor(
    private readonly ctx: RunContext,
    disks: PlanDisk[],
  ) {
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

  /** Exports the destination nodes, attaches them on the source and starts one mirror per disk: a step each. */
  async start(): Promise<void> {
    const { listen, connect } = this.socketAddresses();
    // QEMU's TLS for the export and its client when the run uses --tls-creds over TCP (transport.ts).
    const tls = this.ctx.route?.nbdTls;
    this.listen();
    const addr =
      listen.type === "unix"
        ? { type: "unix", data: { path: listen.path } }
        : { type: "inet", data: { host: listen.host, port: String(listen.port) } };
    const { src, dst } = this.ctx;
    await this.sent(
      {
        name: "nbd-server",
        side: "destination",
        what: "the NBD server",
        clean: () =>
          dst.undo((m) => undoIfPresent(() => m.run("nbd-server-stop"), /^NBD server not running$/)),
      },
      () =>
        this.command("destination", "starting the NBD server", () =>
          dst.mon.run("nbd-server-start", { addr, ...(tls ? nbdServerTls(tls.id) : {}) }),
        ),
    );
    const server =
      connect.type === "unix"
        ? { type: "unix", path: connect.path }
        : { type: "inet", host: connect.host, port: String(connect.port) };
    for (const j of this.jobs) {
      await this.sent(
        {
          name: "export",
          side: "destination",
          what: `the export '${j.exportId}' of ${j.disk.target.node}`,
          clean: () =>
            dst.undo((m) => undoIfPresent(() => deleteExport(m, j.exportId), /^Export '.*' is not found$/)),
        },
        () =>
          this.command("destination", `exporting ${j.disk.target.node}`, () =>
            dst.mon.run("block-export-add", {
              type: "nbd",
              id: j.exportId,
              "node-name": j.disk.target.node,
              name: j.exportName,
              writable: true,
            }),
          ),
      );
      await this.sent(
        {
          name: "nbd-node",
          side: "source",
          what: `the NBD client node ${j.nbdNode}`,
          clean: () =>
            src.undo((m) =>
              undoIfPresent(
                () => m.run("blockdev-del", { "node-name": j.nbdNode }),
                /^Failed to find node with node-name='.*'$/,
              ),
            ),
        },
        () =>
          this.command("source", `attaching the destination's ${j.disk.target.node} over NBD`, () =>
            src.mon.run("blockdev-add", {
              driver: "nbd",
              "node-name": j.nbdNode,
              server,
              export: j.exportName,
              ...(tls ? nbdClientTls(tls.id, tls.hostname) : {}),
            }),
          ),
      );
      // The clean asks QEMU whether the job exists before it cancels it.
      await this.sent(
        {
          name: "mirror",
          side: "source",
          what: `the mirror '${j.id}' of ${j.disk.source.node}`,
          clean: () => this.endJob(j),
        },
        () =>
          this.command("source", `starting to mirror ${j.disk.source.node}`, () =>
            src.mon.run("blockdev-mirror", {
              "job-id": j.id,
              device: j.disk.source.mirrorFrom,
              target: j.nbdNode,
              sync: "full",
            }),
          ),
      );
    }
  }

  /** Refreshes offsets from QEMU and reports whether every mirror is ready; throws COPY_FAILED on a failed one. */
  async poll(): Promise<boolean> {
    const jobs = await this.ctx.src.mon.blockJobs();
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
        await this.command("source", `completing the mirror of ${j.disk.source.node}`, () =>
          this.ctx.src.mon.run("block-job-cancel", { device: j.id }),
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

  /** Removes every mirror, NBD client node and export and the NBD server now, newest first (their steps' cleans). */
  teardown(): Promise<void> {
    return this.ctx.steps.release(this.handles.splice(0));
  }

  private push(step: Step): void {
    this.handles.push(this.ctx.steps.push(step));
  }

  /**
   * A step recorded before its command is sent (a reply lost to --timeout, Ctrl-C or a reply timeout may follow
   * QEMU's change); dropped when QEMU refused the command. Its clean accepts what is absent.
   */
  private async sent(step: Step, change: () => Promise<void>): Promise<void> {
    this.handles.push(await this.ctx.steps.sent(step, change, refused));
  }

  /** Step "nbd-socket-dir" when both QEMUs are on this host: a private socket nobody else can reach. */
  private socketAddresses(): { listen: SocketAddress; connect: SocketAddress } {
    const { nbdListen, nbdConnect } = this.ctx.endpoints;
    if (nbdListen !== undefined) {
      return { listen: parseSocketAddress(nbdListen), connect: parseSocketAddress(nbdConnect ?? nbdListen) };
    }
    const dir = mkdtempSync(path.join("/tmp", "bf-nbd-"));
    this.push({
      name: "nbd-socket-dir",
      side: "local",
      what: `the directory ${dir}`,
      clean: () => {
        rmSync(dir, { recursive: true, force: true });
        return Promise.resolve();
      },
    });
    const local: SocketAddress = { type: "unix", path: path.join(dir, "nbd.sock") };
    return { listen: local, connect: local };
  }

  /** Step "mirror-events": the mirrors' job events tell readiness, errors and the final offsets. */
  private listen(): void {
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
    const events = ["BLOCK_JOB_READY", "BLOCK_JOB_ERROR", "BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED"];
    const offs = events.map((ev) => this.ctx.src.mon.qmp.on(ev, onEvent));
    this.push({
      name: "mirror-events",
      side: "local",
      what: "the mirrors' event listeners",
      clean: () => {
        for (const off of offs) off();
        return Promise.resolve();
      },
    });
  }

  /** The mirror's clean: a job still running is cancelled without pivot; then wait until QEMU has dropped it. */
  private async endJob(j: Job): Promise<void> {
    const { src } = this.ctx;
    const present = async (): Promise<boolean> =>
      (await src.undo((m) => m.blockJobs())).some((x) => x.device === j.id);
    if (!(await present())) return;
    if (!j.done) await src.undo((m) => m.run("block-job-cancel", { device: j.id, force: true }));
    for (let i = 0; i < 200; i++) {
      if (!(await present())) return;
      await sleep(50);
    }
    throw new Error(`the job '${j.id}' is still there 10 s after it was cancelled`);
  }

  private async command(side: string, what: string, fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      // A side that went away mid-copy is that side lost (or its SSH connection's failure), not a failed copy.
      if (this.ctx.abort.signal.aborted) throw this.ctx.abort.signal.reason;
      if (err instanceof QmpConnectionClosedError)
        throw (side === "source" ? this.ctx.src : this.ctx.dst).error(err, what);
      const why = describeError(err);
      // QEMU's TLS refusing a peer shows up as the NBD client's connection failing.
      const code = this.ctx.route?.nbdTls && isTlsFailure(why) ? "TLS_FAILED" : "COPY_FAILED";
      throw new RunError(code, `${side}: ${what}: ${why}`, { cause: err });
    }
  }
}

/** `--copy-storage`: copy every disk to the destination and wait until each mirror is in sync. */
export async function copyDisks(ctx: RunContext): Promise<StorageCopy | undefined> {
  const disks = ctx.plan.disks ?? [];
  if (disks.length === 0) return undefined;
  const storage = new StorageCopy(ctx, disks);
  ctx.progress("copy", {
    message: `copying ${disks.length} disk(s) to the destination`,
    copiedBytes: 0,
    copyTotalBytes: storage.totalBytes,
  });
  await storage.start();
  for (;;) {
    ctx.checkpoint();
    if (ctx.src.lost) throw new RunError("SOURCE_LOST", "the source's monitor closed while copying disks");
    if (ctx.dst.lost)
      throw new RunError("DESTINATION_LOST", "the destination's monitor closed while copying disks");
    const ready = await storage.poll();
    ctx.progress("copy", { copiedBytes: storage.copiedBytes, copyTotalBytes: storage.totalBytes });
    if (ready) return storage;
    await ctx.pause(200);
  }
}

/** After the switchover: the mirrors complete without pivot; every export and NBD node goes (their cleans, now). */
export async function finishCopy(ctx: RunContext, storage: StorageCopy | undefined): Promise<void> {
  if (!storage) return;
  ctx.progress("completing", { message: "completing the disk copies" });
  ctx.copies = await storage.complete();
  await storage.teardown();
  const bad = ctx.copies.filter((c) => !c.complete);
  if (bad.length > 0) {
    throw new RunError(
      "COPY_FAILED",
      `the copy of ${bad.map((c) => `${c.source.node} (${c.copiedBytes} of ${c.totalBytes} bytes${c.error ? `: ${c.error}` : ""})`).join(", ")} did not complete`,
    );
  }
}
