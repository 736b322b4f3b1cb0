import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { debug } from "../util/debug.js";

/**
 * bitferry can be killed with SIGKILL, and then none of its code runs: an `ssh -M` whose session command has
 * ended still waits for its open forwarded channels (observed with OpenSSH 9.2: a master outlives the end of its
 * remote command while a source QEMU holds a tunnelled migration connection), so the end of input alone does not
 * end it. The reaper is a small `sh` reading a pipe from bitferry: the kernel closes that pipe however bitferry
 * ends, and the reaper then kills every ssh listed in its directory's `pids` file and removes the directory with
 * the local sockets and control sockets in it. It is started in its own session (as the ssh processes are) so
 * that a terminal's Ctrl-C, which bitferry answers by repairing the source through those very connections,
 * reaches neither.
 */
const REAPER_SCRIPT =
  'cat >/dev/null; for p in $(cat "$1/pids" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done; rm -rf -- "$1"';

class Reaper {
  private readonly pids = new Set<number>();
  private users = 0;

  private constructor(
    readonly dir: string,
    private readonly child: ChildProcess,
  ) {}

  static start(): Reaper {
    // /tmp, not os.tmpdir(): unix socket paths must stay under 107 bytes.
    const dir = mkdtempSync(path.join("/tmp", "bf-ssh-"));
    const child = spawn("/bin/sh", ["-c", REAPER_SCRIPT, "bitferry-reaper", dir], {
      stdio: ["pipe", "ignore", "ignore"],
      detached: true,
    });
    child.on("error", (err) => {
      debug("reaper: %s", err.message);
    });
    return new Reaper(dir, child);
  }

  acquire(): void {
    this.users++;
  }

  /** The last user gone: the reaper cleans up now (the processes it would kill are already gone). */
  release(): boolean {
    this.users--;
    if (this.users > 0) return false;
    this.write();
    this.child.stdin?.end();
    return true;
  }

  track(pid: number): void {
    this.pids.add(pid);
    this.write();
  }

  untrack(pid: number): void {
    this.pids.delete(pid);
    this.write();
  }

  /** Synchronous, for process exit: kill what is listed and remove the directory. */
  reapNow(): void {
    for (const pid of this.pids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    this.pids.clear();
    rmSync(this.dir, { recursive: true, force: true });
  }

  private write(): void {
    try {
      writeFileSync(path.join(this.dir, "pids"), [...this.pids].map((p) => `${p}\n`).join(""));
    } catch (err) {
      debug("reaper: cannot write pids: %s", (err as Error).message);
    }
  }
}

let current: Reaper | undefined;
let exitHook = false;

/** The reaper of this process, started on first use; each SSH connection holds it until it is closed. */
export function acquireReaper(): {
  dir: string;
  track(pid: number): void;
  untrack(pid: number): void;
  release(): void;
} {
  if (!exitHook) {
    exitHook = true;
    process.on("exit", () => {
      current?.reapNow();
    });
  }
  current ??= Reaper.start();
  const r = current;
  r.acquire();
  let released = false;
  return {
    dir: r.dir,
    track: (pid) => {
      r.track(pid);
    },
    untrack: (pid) => {
      r.untrack(pid);
    },
    release: () => {
      if (released) return;
      released = true;
      if (r.release() && current === r) current = undefined;
    },
  };
}
