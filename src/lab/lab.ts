import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { rm } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { systemBuild, QemuNotFoundError, type QemuBuild } from "./build.js";
import { QemuProcess } from "./process.js";

const execFileP = promisify(execFile);

export interface VmSpec {
  label: string;
  args?: string[];
  incoming?: string;
  paused?: boolean;
  build?: QemuBuild;
}

export interface ImageOptions {
  format?: "qcow2" | "raw";
  /** Backing file (qcow2 only); its format is taken as qcow2. */
  backing?: string;
  /** qcow2 compat level; "0.10" makes a v2 image that cannot store bitmaps. */
  compat?: "0.10" | "1.1";
  clusterSize?: number;
  /** Persistent bitmaps stored in the image before any QEMU opens it. */
  bitmaps?: { name: string; granularity?: number; disabled?: boolean }[];
}

const liveDirs = new Set<string>();
let dirHookInstalled = false;

/**
 * A scratch world for tests, the demo and benchmarks: a short private directory under /tmp and the QEMU processes
 * started in it. `cleanup()` stops every process (quit, SIGTERM, SIGKILL) and removes the directory; a process exit
 * hook does the same if the caller never gets there.
 */
export class Lab implements AsyncDisposable {
  readonly processes: QemuProcess[] = [];

  private constructor(
    readonly dir: string,
    readonly build: QemuBuild,
  ) {}

  static create(options: { build?: QemuBuild; prefix?: string } = {}): Lab {
    // /tmp, not os.tmpdir(): TMPDIR can be deep, and unix socket paths must stay under 107 bytes.
    const dir = mkdtempSync(path.join("/tmp", options.prefix ?? "bf-"));
    liveDirs.add(dir);
    if (!dirHookInstalled) {
      dirHookInstalled = true;
      process.on("exit", () => {
        for (const d of liveDirs) rmSync(d, { recursive: true, force: true });
      });
    }
    return new Lab(dir, options.build ?? systemBuild());
  }

  path(name: string): string {
    return path.join(this.dir, name);
  }

  async start(spec: VmSpec): Promise<QemuProcess> {
    const proc = await QemuProcess.start({
      build: spec.build ?? this.build,
      label: spec.label,
      dir: this.dir,
      args: spec.args ?? [],
      ...(spec.incoming !== undefined ? { incoming: spec.incoming } : {}),
      ...(spec.paused !== undefined ? { paused: spec.paused } : {}),
    });
    this.processes.push(proc);
    return proc;
  }

  /** Runs qemu-img of the lab's build and returns its stdout. */
  async qemuImg(args: string[], build: QemuBuild = this.build): Promise<string> {
    try {
      const { stdout } = await execFileP(build.imgBinary, args, {
        env: { ...process.env, ...build.env },
        maxBuffer: 64 * 1024 * 1024,
      });
      return stdout;
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { stderr?: string };
      if (e.code === "ENOENT") throw new QemuNotFoundError(build.imgBinary);
      throw new Error(`qemu-img ${args.join(" ")} failed: ${e.stderr?.trim() ?? e.message}`, { cause: err });
    }
  }

  /** Runs one qemu-io command on an image file (no QEMU may hold it), e.g. "write -P 0xab 0 1M". */
  async qemuIo(file: string, command: string, format = "qcow2"): Promise<void> {
    const qemuIo = path.join(path.dirname(this.build.imgBinary), "qemu-io");
    const binary = this.build.imgBinary.includes("/") ? qemuIo : "qemu-io";
    try {
      await execFileP(binary, ["-f", format, "-c", command, file], {
        env: { ...process.env, ...this.build.env },
      });
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { stderr?: string };
      throw new Error(`qemu-io -c '${command}' ${file} failed: ${e.stderr?.trim() ?? e.message}`, {
        cause: err,
      });
    }
  }

  /** Creates an image in the lab directory and returns its path. */
  async createImage(name: string, size: number, options: ImageOptions = {}): Promise<string> {
    const file = this.path(name);
    const format = options.format ?? "qcow2";
    const opts: string[] = [];
    if (options.compat) opts.push(`compat=${options.compat}`);
    if (options.clusterSize) opts.push(`cluster_size=${options.clusterSize}`);
    const args = ["create", "-q", "-f", format];
    if (opts.length > 0) args.push("-o", opts.join(","));
    if (options.backing) args.push("-b", options.backing, "-F", "qcow2");
    args.push(file, String(size));
    await this.qemuImg(args);
    for (const b of options.bitmaps ?? []) {
      const bitmapArgs = ["bitmap", "--add"];
      if (b.granularity) bitmapArgs.push("-g", String(b.granularity));
      if (b.disabled) bitmapArgs.push("--disable");
      await this.qemuImg([...bitmapArgs, file, b.name]);
    }
    return file;
  }

  /** Stops every process this lab started and removes its directory. Safe to call twice. */
  async cleanup(): Promise<void> {
    const procs = this.processes.splice(0);
    await Promise.all(procs.map((p) => p.stop()));
    await rm(this.dir, { recursive: true, force: true });
    liveDirs.delete(this.dir);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.cleanup();
  }
}
