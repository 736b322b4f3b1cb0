import { PassThrough } from "node:stream";
import { spawn } from "node:child_process";
import path from "node:path";
import { main } from "../../src/cli/main.js";
import type { CliIO } from "../../src/cli/output.js";

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout parsed as JSON (throws when it is not exactly one document). */
  json(): unknown;
}

function result(code: number, stdout: string, stderr: string): CliRun {
  return {
    code,
    stdout,
    stderr,
    json() {
      return JSON.parse(stdout) as unknown;
    },
  };
}

/** `--source SOCKET --dest SOCKET` for a lab pair's user monitors. */
export function pairArgs(pair: {
  source: { monitorSocket: string };
  destination: { monitorSocket: string };
}): string[] {
  return ["--source", pair.source.monitorSocket, "--dest", pair.destination.monitorSocket];
}

/** Runs the CLI in-process with captured output. */
export async function runCli(args: string[]): Promise<CliRun> {
  const out = new PassThrough();
  const err = new PassThrough();
  let stdout = "";
  let stderr = "";
  out.on("data", (c: Buffer) => (stdout += c.toString()));
  err.on("data", (c: Buffer) => (stderr += c.toString()));
  const io: CliIO = { stdout: out, stderr: err };
  const code = await main(args, io);
  return result(code, stdout, stderr);
}

const root = path.join(import.meta.dirname, "..", "..");

/** Runs the CLI as a real process (exit statuses, signals). */
export function spawnCli(
  args: string[],
  options: {
    onSpawn?: (pid: number) => void;
    onStderr?: (textSoFar: string) => void;
    cwd?: string;
    /** In its own process group (pid = pgid), as a shell runs a foreground job: for signals to the whole group. */
    detached?: boolean;
  } = {},
): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    // From another directory `--import tsx` would look for tsx there: name this checkout's.
    const tsx = options.cwd === undefined ? "tsx" : import.meta.resolve("tsx");
    const child = spawn(process.execPath, ["--import", tsx, path.join(root, "src/cli/main.ts"), ...args], {
      cwd: options.cwd ?? root,
      stdio: ["ignore", "pipe", "pipe"],
      detached: options.detached ?? false,
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => {
      stderr += c.toString();
      options.onStderr?.(stderr);
    });
    child.on("error", reject);
    child.on("spawn", () => options.onSpawn?.(child.pid ?? -1));
    child.on("close", (code, signal) => {
      resolve(result(code ?? (signal ? 128 : 1), stdout, stderr));
    });
  });
}
