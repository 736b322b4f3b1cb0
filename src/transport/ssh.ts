import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import path from "node:path";
import { debug } from "../util/debug.js";
import { TransportError } from "./errors.js";
import { acquireReaper } from "./reaper.js";
import { shellQuote, sshCommand } from "./ssh-command.js";

/** Where an SSH connection goes: passed to ssh as written, so the user's `Host` entries apply. */
export interface SshTarget {
  user?: string;
  host: string;
  port?: number;
}

export interface SshConnectOptions {
  /** For messages and logs ("destination"). */
  label?: string;
  /** A unix socket that must exist on the remote host (the monitor): its absence fails the connection at once. */
  requireSocket?: string;
  /** How long the connection (authentication, the remote command's first line) may take. */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

export interface SshExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** What ssh said last on stderr (the reason a connection failed or broke). */
  reason: string;
}

/** One forward carried by the connection; `cancel` removes it from the master. */
export interface SshForward {
  kind: "local" | "remote";
  /** The socket that listens: on this host for "local", on the remote host for "remote". */
  listen: string;
  /** Where its connections go: on the remote host for "local", on this host for "remote". */
  connect: string;
}

/**
 * The command the remote host runs for the whole connection: it makes the private directory for this run's
 * sockets, says where it is, and waits for the end of its input, which comes when bitferry closes the connection
 * or dies in any way (the pipe closes, or the connection drops and sshd closes it); then it removes the directory
 * and the sockets in it. A required socket that is missing is reported before anything is made.
 */
const REMOTE_SCRIPT = [
  "umask 077",
  'if [ -n "$1" ] && [ ! -S "$1" ]; then echo "BITFERRY-NOSOCKET"; exit 0; fi',
  "d=$(mktemp -d /tmp/bf-XXXXXXXX) || exit 1",
  'echo "BITFERRY-DIR $d"',
  "cat >/dev/null",
  'rm -rf -- "$d"',
].join("; ");

const live = new Set<ChildProcess>();
let exitHook = false;

/**
 * One SSH connection to a host, through the system's OpenSSH client, that carries the monitor and every tunnel
 * of a run. It is an OpenSSH control master (`-M`, `ControlPersist=no`) to which forwards are added and removed
 * with `ssh -O forward` / `-O cancel` while it runs. We chose the master over one ssh process started with all
 * its `-L`/`-R` forwards because the forwards of a run are only known step by step: a remote forward's socket
 * goes into the private directory the remote command makes once the connection is up, and the migration's
 * and the disk copy's tunnels come and go with the steps that need them, each removable on its own. Either way
 * there is one TCP connection and one authentication per host; the `-O` clients only talk to the master's
 * control socket and exit at once.
 */
export class SshConnection {
  /** Resolves (never rejects) when the master has exited. */
  readonly exited: Promise<SshExit>;
  private closing = false;
  private exitInfo: SshExit | undefined;
  private stderrText = "";
  private readonly lostListeners = new Set<(exit: SshExit) => void>();
  private readonly forwards: SshForward[] = [];
  private counter = 0;

  private constructor(
    readonly target: SshTarget,
    readonly label: string,
    /** This connection's private directory on this host (local sockets, the control socket). */
    readonly localDir: string,
    /** The private directory on the remote host, removed by the remote command when the connection ends. */
    readonly remoteDir: string,
    private readonly command: string[],
    private readonly child: ChildProcess,
    exited: Promise<Omit<SshExit, "reason">>,
    stderrSoFar: string,
    private readonly reaper: ReturnType<typeof acquireReaper>,
  ) {
    this.stderrText = stderrSoFar;
    child.stderr?.on("data", (s: string) => {
      this.stderrText = (this.stderrText + s).slice(-16_384);
      debug("ssh[%s] %s", label, s.trimEnd());
    });
    this.exited = exited.then((e) => {
      const exit = { ...e, reason: sshReason(this.stderrText) };
      this.exitInfo = exit;
      this.reaper.untrack(child.pid ?? -1);
      rmSync(localDir, { recursive: true, force: true });
      this.reaper.release();
      if (!this.closing) for (const l of this.lostListeners) l(exit);
      return exit;
    });
  }

  /** `ssh://user@host:port` for messages. */
  get where(): string {
    return describeTarget(this.target);
  }

  get alive(): boolean {
    return this.exitInfo === undefined;
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  /** What ssh said last on stderr. */
  get stderr(): string {
    return this.stderrText;
  }

  /** Called once if the master exits without `close()` (the connection dropped, ssh was killed). */
  onLost(listener: (exit: SshExit) => void): () => void {
    this.lostListeners.add(listener);
    return () => this.lostListeners.delete(listener);
  }

  /**
   * Connects. A failure (host key unknown or changed, key refused, no route, a required socket missing) is a
   * TransportError whose `reason` is ssh's own words.
   */
  static async open(target: SshTarget, options: SshConnectOptions = {}): Promise<SshConnection> {
    const label = options.label ?? target.host;
    const command = sshCommand(options.env);
    const [program, ...baseArgs] = command as [string, ...string[]];
    const reaper = acquireReaper();
    let localDir: string;
    try {
      localDir = mkdtempSync(path.join(reaper.dir, "c-"));
    } catch (err) {
      reaper.release();
      throw err;
    }
    const remote = `sh -c ${shellQuote(REMOTE_SCRIPT)} bitferry ${shellQuote(options.requireSocket ?? "")}`;
    const args = [
      ...baseArgs,
      ...forcedOptions(),
      "-o",
      "ControlMaster=yes",
      "-o",
      `ControlPath=${path.join(localDir, "ctl")}`,
      "-o",
      "ControlPersist=no",
      // A link that dies silently is noticed within about 15 s, as a broken tunnel, not a hang.
      "-o",
      "ServerAliveInterval=5",
      "-o",
      "ServerAliveCountMax=3",
      "-o",
      "ConnectTimeout=15",
      "-o",
      "StreamLocalBindUnlink=yes",
      "-T",
      ...targetArgs(target),
      remote,
    ];
    debug("ssh[%s] %s %s", label, program, args.join(" "));
    installExitHook();
    const child = spawn(program, args, { stdio: ["pipe", "pipe", "pipe"], detached: true });
    child.stdout.setEncoding("utf8");
    child.stderr.setEncoding("utf8");
    child.stdin.on("error", () => undefined);
    const exited = new Promise<Omit<SshExit, "reason">>((resolve) => {
      child.once("exit", (code, signal) => {
        live.delete(child);
        resolve({ code, signal });
      });
    });
    const spawnError = await new Promise<Error | undefined>((resolve) => {
      child.once("spawn", () => {
        resolve(undefined);
      });
      child.once("error", resolve);
    });
    if (spawnError || child.pid === undefined) {
      rmSync(localDir, { recursive: true, force: true });
      reaper.release();
      const e = spawnError as NodeJS.ErrnoException | undefined;
      const why =
        e?.code === "ENOENT" ? `${program} not found (install OpenSSH's client)` : String(e?.message);
      throw new TransportError("TUNNEL_FAILED", `cannot start ${program}: ${why}`, why);
    }
    live.add(child);
    reaper.track(child.pid);

    let stderr = "";
    const onErr = (s: string): void => {
      stderr += s;
    };
    child.stderr.on("data", onErr);
    const stderrEnded = new Promise<void>((r) =>
      child.stderr.once("close", () => {
        r();
      }),
    );
    const timeoutMs = options.timeoutMs ?? 30_000;
    const first = await new Promise<{ dir: string } | { fail: string }>((resolve) => {
      let out = "";
      const timer = setTimeout(() => {
        resolve({
          fail: `no answer from ${describeTarget(target)} within ${Math.round(timeoutMs / 1000)} s`,
        });
      }, timeoutMs);
      const onData = (s: string): void => {
        out += s;
        const nl = out.indexOf("\n");
        if (nl < 0) return;
        const line = out.slice(0, nl).trim();
        clearTimeout(timer);
        child.stdout.off("data", onData);
        if (line.startsWith("BITFERRY-DIR /")) resolve({ dir: line.slice("BITFERRY-DIR ".length) });
        else if (line === "BITFERRY-NOSOCKET")
          resolve({ fail: `no unix socket at ${options.requireSocket ?? "?"} on ${target.host}` });
        else resolve({ fail: `unexpected output from the remote host: ${line.slice(0, 200)}` });
      };
      child.stdout.on("data", onData);
      void exited.then(async (e) => {
        clearTimeout(timer);
        // 'exit' can come before the last of stderr has been read (seen under load: the reason was lost): wait for
        // the pipe's end, bounded in case something ssh started still holds it open.
        await Promise.race([stderrEnded, new Promise((r) => setTimeout(r, 1000).unref())]);
        resolve({
          fail:
            sshReason(stderr) ||
            `ssh exited with ${e.signal ? `signal ${e.signal}` : `status ${String(e.code)}`}`,
        });
      });
    });
    child.stderr.off("data", onErr);
    if ("fail" in first) {
      child.stdin.end();
      child.kill("SIGKILL");
      await exited;
      reaper.untrack(child.pid);
      rmSync(localDir, { recursive: true, force: true });
      reaper.release();
      throw new TransportError(
        "TUNNEL_FAILED",
        `ssh to ${describeTarget(target)}: ${first.fail}`,
        first.fail,
      );
    }
    // Nothing of the remote command's output matters once it has said where its directory is.
    child.stdout.resume();
    return new SshConnection(target, label, localDir, first.dir, command, child, exited, stderr, reaper);
  }

  /** A local unix socket whose connections reach `remotePath` on the remote host. */
  async forwardLocal(remotePath: string, name = this.nextName("l")): Promise<SshForward> {
    const listen = path.join(this.localDir, name);
    const fwd: SshForward = { kind: "local", listen, connect: remotePath };
    await this.control(
      ["-O", "forward", "-L", `${listen}:${remotePath}`],
      `forward ${listen} to ${remotePath}`,
    );
    await waitForSocket(listen, 5_000).catch((err: unknown) => {
      throw new TransportError(
        "TUNNEL_FAILED",
        `ssh to ${this.where}: the forward ${listen} did not appear`,
        String(err),
      );
    });
    this.forwards.push(fwd);
    return fwd;
  }

  /**
   * A unix socket on the remote host (`listen`, by default a name in the connection's private directory) whose
   * connections reach `localPath` on this host, which may itself be the listening end of another connection's
   * local forward: that is how a stream crosses from one remote host to another through bitferry's host. The
   * master returns once the remote sshd has bound it.
   */
  async forwardRemote(
    localPath: string,
    listen = `${this.remoteDir}/${this.nextName("r")}`,
  ): Promise<SshForward> {
    const fwd: SshForward = { kind: "remote", listen, connect: localPath };
    await this.control(
      ["-O", "forward", "-R", `${listen}:${localPath}`],
      `forward ${listen} to ${localPath}`,
    );
    this.forwards.push(fwd);
    return fwd;
  }

  /**
   * Runs a shell command on the remote host over the master's connection (a new session, no new
   * authentication) and returns its output; a failure is TUNNEL_FAILED with what the command or ssh said.
   */
  async exec(command: string, timeoutMs = 15_000): Promise<string> {
    const [program, args] = this.clientCommand(["-T"], [command]);
    const r = await runShort(program, args, timeoutMs, true);
    if (r.code !== 0) {
      const reason = sshReason(r.stderr) || `exited with status ${String(r.code)}`;
      throw new TransportError("TUNNEL_FAILED", `ssh to ${this.where}: ${command}: ${reason}`, reason);
    }
    return r.stdout;
  }

  /** Removes a forward (its listening socket; connections already made through it stay). */
  async cancel(fwd: SshForward): Promise<void> {
    const i = this.forwards.indexOf(fwd);
    if (i >= 0) this.forwards.splice(i, 1);
    if (!this.alive) return;
    const flag = fwd.kind === "local" ? "-L" : "-R";
    await this.control(["-O", "cancel", flag, `${fwd.listen}:${fwd.connect}`], `cancel ${fwd.listen}`);
    if (fwd.kind === "local") rmSync(fwd.listen, { force: true });
  }

  /**
   * Ends the connection: the remote command sees the end of its input and removes its directory; a master still
   * held by an open channel is stopped after `graceMs`.
   */
  async close(graceMs = 2_000): Promise<void> {
    if (!this.alive) {
      await this.exited;
      return;
    }
    this.closing = true;
    this.child.stdin?.end();
    for (const signal of ["SIGTERM", "SIGKILL"] as const) {
      const done = await Promise.race([this.exited, delay(graceMs)]);
      if (done) return;
      this.child.kill(signal);
    }
    await this.exited;
  }

  /** An ssh client that goes through the master's control socket: `before` the target, `after` it. */
  private clientCommand(before: string[], after: string[]): [string, string[]] {
    const [program, ...base] = this.command as [string, ...string[]];
    const ctl = path.join(this.localDir, "ctl");
    return [
      program,
      [...base, ...forcedOptions(), "-S", ctl, ...before, ...targetArgs(this.target), ...after],
    ];
  }

  private nextName(prefix: string): string {
    this.counter++;
    return `${prefix}${this.counter}.sock`;
  }

  /** Runs one `ssh -O` client against the master; its failure is TUNNEL_FAILED with ssh's reason. */
  private async control(op: string[], what: string): Promise<void> {
    if (!this.alive)
      throw new TransportError(
        "TUNNEL_FAILED",
        `ssh to ${this.where}: cannot ${what}: the connection is gone (${this.exitInfo?.reason ?? "ssh exited"})`,
        this.exitInfo?.reason ?? "ssh exited",
      );
    const [program, args] = this.clientCommand(op, []);
    const r = await runShort(program, args, 15_000);
    if (r.code !== 0) {
      const reason = sshReason(r.stderr) || `ssh -O exited with status ${String(r.code)}`;
      throw new TransportError("TUNNEL_FAILED", `ssh to ${this.where}: cannot ${what}: ${reason}`, reason);
    }
  }
}

/** Options no user configuration may change: bitferry never prompts. */
function forcedOptions(): string[] {
  return ["-o", "BatchMode=yes"];
}

function targetArgs(t: SshTarget): string[] {
  return [
    ...(t.port !== undefined ? ["-p", String(t.port)] : []),
    ...(t.user !== undefined ? ["-l", t.user] : []),
    "--",
    t.host,
  ];
}

export function describeTarget(t: SshTarget): string {
  const host = t.host.includes(":") ? `[${t.host}]` : t.host;
  return `ssh://${t.user !== undefined ? `${t.user}@` : ""}${host}${t.port !== undefined ? `:${t.port}` : ""}`;
}

/**
 * ssh's reason for a failure, from its stderr: the last lines that say something, without the host-key banner's
 * decoration or the "Warning: Permanently added" chatter.
 */
export function sshReason(stderr: string): string {
  const lines = stderr
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter(
      (l) =>
        l !== "" &&
        !l.startsWith("@") &&
        !l.startsWith("Warning: Permanently added") &&
        !/^(debug\d?|Pseudo-terminal|Transferred|Bytes per second):?/.test(l),
    );
  return lines.slice(-2).join("; ");
}

function runShort(
  program: string,
  args: string[],
  timeoutMs: number,
  output = false,
): Promise<{ code: number | null; stderr: string; stdout: string }> {
  return new Promise((resolve) => {
    const child = spawn(program, args, {
      stdio: ["ignore", output ? "pipe" : "ignore", "pipe"],
      detached: true,
    });
    let stderr = "";
    let stdout = "";
    child.stdout?.setEncoding("utf8");
    child.stdout?.on("data", (s: string) => (stdout += s));
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (s: string) => (stderr += s));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      stderr += `\nno answer from ssh within ${timeoutMs} ms`;
    }, timeoutMs);
    child.on("error", (err) => {
      clearTimeout(timer);
      resolve({ code: -1, stderr: err.message, stdout });
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stderr, stdout });
    });
  });
}

async function waitForSocket(file: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (statSync(file).isSocket()) return;
    } catch {
      // not there yet
    }
    if (Date.now() > deadline) throw new Error(`${file} did not appear within ${timeoutMs} ms`);
    await delay(20);
  }
}

function delay(ms: number): Promise<undefined> {
  return new Promise((resolve) => {
    setTimeout(() => {
      resolve(undefined);
    }, ms).unref();
  });
}

/** A process that exits through process.exit() runs no more async code: its masters are killed here. */
function installExitHook(): void {
  if (exitHook) return;
  exitHook = true;
  process.on("exit", () => {
    for (const c of live) c.kill("SIGKILL");
  });
}
