import { execFile } from "node:child_process";
import os from "node:os";
import { promisify } from "node:util";
import { systemBuild } from "../../src/lab/build.js";

const execFileP = promisify(execFile);

export interface Machine {
  cpu: string;
  cpus: number;
  cpuMHz: number;
  memoryBytes: number;
  os: string;
  node: string;
  qemu: string;
  /** 1-minute load average when the run started and ended: above the CPU count, other work shared the machine. */
  loadStart: number;
  loadEnd?: number;
}

export async function describeMachine(): Promise<Machine> {
  const cpus = os.cpus();
  const build = systemBuild();
  let qemu = "unknown";
  try {
    const { stdout } = await execFileP(build.systemBinary, ["--version"], {
      env: { ...process.env, ...build.env },
    });
    qemu = stdout.split("\n")[0]?.trim() ?? qemu;
  } catch {
    // Reported as unknown; the QEMU sections fail on their own with a clearer message.
  }
  return {
    cpu: cpus[0]?.model.trim() ?? "unknown",
    cpus: cpus.length,
    cpuMHz: cpus[0]?.speed ?? 0,
    memoryBytes: os.totalmem(),
    os: `${os.type()} ${os.release()} (${os.arch()})`,
    node: process.version,
    qemu,
    loadStart: os.loadavg()[0] ?? NaN,
  };
}

export function load1(): number {
  return os.loadavg()[0] ?? NaN;
}
