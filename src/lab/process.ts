import { spawn, type ChildProcess } from "node:child_process";
import { appendFileSync } from "node:fs";
import type { Socket } from "node:net";
import path from "node:path";
import { QmpClient } from "../qmp/client.js";
import { QemuMonitor } from "../qemu/monitor.js";
import { BitferryError } from "../util/errors.js";
import { QemuNotFoundError, type QemuBuild } from "./build.js";

export interface QemuProcessOptions {
  build: QemuBuild;
  label: string;
  /** Directory for this process's sockets (keep it short: unix socket paths are limited to 107 bytes). */
  dir: string;
  args: string[];
  /** `-incoming` value: "defer" or a URI. */
  incoming?: string;
  /** Start with `-S` (CPUs stopped until `cont`). */
  paused?: boolean;
}

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** QEMU exited (or never came up) while the lab needed it. */
export class QemuExitedError extends BitferryError {
  readonly code = "QEMU_ERR_EXITED";
  constructor(
    readonly label: string,
    readonly status: ExitStatus,
    readonly stderrTail: string,
  ) {
    super(
      `QEMU (${label}) exited with ${status.signal ? `signal ${status.signal}` : `status ${status.code}`}` +
        (stderrTail ? `: ${stderrTail.trim().split("\n").slice(-3).join(" | ")}` : ""),
    );
  }
}

const STDERR_TAIL_BYTES = 64 * 1024;
const live = new Set<ChildProcess>();
let exitHookInstalled = false;

/** Last resort: a test runner that dies must not leave QEMUs behind. */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const child of live) child.kill("SIGKILL");
  });
}

/**
 * One supervised QEMU process. The lab talks to it over a socketpair monitor (no path, no race, its death is an
 * EOF); a second QMP monitor on a unix socket is left for the code under test, as a user's would be.
 */
export class QemuProcess {
  readonly monitor: QemuMonitor;
  readonly exited: Promise<ExitStatus>;
  private stderrBuf = "";
  private exitStatus: ExitStatus | undefined;

  private constructor(
    readonly label: string,
    readonly build: QemuBuild,
    private readonly child: ChildProcess,
    readonly qmp: QmpClient,
    /** Unix socket of the monitor reserved for the code under test. */
    readonly monitorSocket: string,
    readonly argv: readonly string[],
    exited: Promise<ExitStatus>,
  ) {
    this.monitor = new QemuMonitor(qmp);
    this.exited = exited;
    void exited.then((s) => {
      this.exitStatus = s;
    });
  }

  static async start(options: QemuProcessOptions): Promise<QemuProcess> {
    installExitHook();
    const monitorSocket = path.join(options.dir, `${options.label}.qmp`);
    if (Buffer.byteLength(monitorSocket) > 107) {
      throw new Error(
        `socket path too long for a unix socket (${monitorSocket}); use a shorter lab directory`,
      );
    }
    const argv = [
      "-machine",
      "none",
      "-nodefaults",
      "-display",
      "none",
      "-name",
      `bitferry-lab-${options.label}`,
      "-chardev",
      "socket,id=labmon,fd=3",
      "-mon",
      "chardev=labmon,mode=control",
      "-chardev",
      `socket,id=usermon,path=${monitorSocket},server=on,wait=off`,
      "-mon",
      "chardev=usermon,mode=control",
      ...options.build.extraArgs,
      ...(options.paused ? ["-S"] : []),
      ...(options.incoming !== undefined ? ["-incoming", options.incoming] : []),
      ...options.args,
    ];
    const child = spawn(options.build.systemBinary, argv, {
      stdio: ["ignore", "ignore", "pipe", "pipe"],
      env: { ...process.env, ...options.build.env },
    });
    const spawned = await new Promise<Error | undefined>((resolve) => {
      child.once("spawn", () => {
        resolve(undefined);
      });
      child.once("error", (err) => {
        resolve(err);
      });
    });
    if (spawned) {
      if ((spawned as NodeJS.ErrnoException).code === "ENOENT")
        throw new QemuNotFoundError(options.build.systemBinary);
      throw spawned;
    }
    live.add(child);
    const pidFile = process.env.BITFERRY_LAB_PIDS_FILE;
    if (pidFile && child.pid !== undefined) appendFileSync(pidFile, `${child.pid}\n`);

    let stderr = "";
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (s: string) => {
      stderr = (stderr + s).slice(-STDERR_TAIL_BYTES);
    });
    const exited = new Promise<ExitStatus>((resolve) => {
      child.once("exit", (code, signal) => {
        live.delete(child);
        resolve({ code, signal });
      });
    });

    let qmp: QmpClient;
    try {
      qmp = await QmpClient.connect(child.stdio[3] as Socket, {
        label: `lab:${options.label}`,
        connectTimeoutMs: 20_000,
      });
    } catch (err) {
      child.kill("SIGKILL");
      const status = await exited;
      throw new QemuExitedError(options.label, status, stderr || String(err));
    }
    const proc = new QemuProcess(options.label, options.build, child, qmp, monitorSocket, argv, exited);
    proc.stderrBuf = stderr;
    child.stderr?.removeAllListeners("data");
    child.stderr?.on("data", (s: string) => {
      proc.stderrBuf = (proc.stderrBuf + s).slice(-STDERR_TAIL_BYTES);
    });
    return proc;
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get alive(): boolean {
    return this.exitStatus === undefined;
  }

  get exitInfo(): ExitStatus | undefined {
    return this.exitStatus;
  }

  /** What QEMU printed on stderr (the last 64 KiB). Destination-side bitmap drops are only reported there. */
  get stderr(): string {
    return this.stderrBuf;
  }

  kill(signal: NodeJS.Signals = "SIGKILL"): void {
    if (this.alive) this.child.kill(signal);
  }

  /** Stops QEMU by escalation: QMP `quit`, then SIGTERM, then SIGKILL, each given `graceMs`. */
  async stop(graceMs = 3_000): Promise<ExitStatus> {
    if (!this.alive) return this.exitStatus ?? (await this.exited);
    if (!this.qmp.isClosed) {
      try {
        await this.qmp.quit(graceMs);
      } catch {
        // A monitor that does not answer is handled by the signals below.
      }
    }
    for (const signal of ["SIGTERM", "SIGKILL"] as const) {
      const done = await Promise.race([this.exited, delay(graceMs)]);
      if (done) return done;
      this.child.kill(signal);
    }
    return this.exited;
  }
}

function delay(ms: number): Promise<undefined> {
  return new Promise((resolve) => {
    setTimeout(() => {
      resolve(undefined);
    }, ms).unref();
  });
}
