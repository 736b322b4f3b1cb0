import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { systemBuild, type QemuBuild } from "../../src/lab/build.js";
import { QemuProcess } from "../../src/lab/process.js";

const execFileP = promisify(execFile);

/**
 * "Hosts" on the test machine (reference two-hosts.md): each a network namespace joined to the test process's
 * own namespace by a veth pair with a private 10.x /30, running its own sshd on that address only, with a private
 * tmpfs on /tmp (`unshare --mount`) that holds its QEMUs' monitors, images and sockets: from the test process,
 * and from every other host, that /tmp is a different directory, so the only way to a host's monitor is ssh.
 * The test process plays bitferry's host (the source host when the source QEMU is started locally, a third,
 * management host when both sides are namespaces). Everything is torn down by pid and `ip netns del`, also when
 * the test fails or the test process exits early.
 */

export interface TestHostsOptions {
  /** Host names, for example ["dst"] or ["src", "dst"]. */
  hosts: string[];
  /** Pairs of hosts joined directly (a veth between them: for TLS or plaintext TCP from host to host). */
  links?: [string, string][];
  /** Extra sshd_config lines per host (they come first, so they win over the defaults). */
  sshd?: Record<string, string[]>;
}

interface Teardown {
  pids: number[];
  netns: string[];
  dirs: string[];
}

const live = new Set<Teardown>();
let exitHook = false;
let sets = 0;

function teardownSync(t: Teardown): void {
  for (const ns of t.netns) {
    for (const pid of netnsPids(ns)) killQuiet(pid);
  }
  for (const pid of t.pids) killQuiet(pid);
  for (const ns of t.netns) {
    try {
      execFileSync("ip", ["netns", "del", ns], { stdio: "ignore" });
    } catch {
      // already gone
    }
  }
  for (const d of t.dirs) rmSync(d, { recursive: true, force: true });
}

function netnsPids(ns: string): number[] {
  try {
    return execFileSync("ip", ["netns", "pids", ns], { encoding: "utf8" })
      .split("\n")
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

function killQuiet(pid: number, signal: NodeJS.Signals = "SIGKILL"): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

/** The third octet of a 10.N.M.0/24 no interface of this machine uses yet. */
function freeSubnet(): string {
  const used = execFileSync("ip", ["-4", "-o", "addr", "show"], { encoding: "utf8" });
  const second = 100 + (process.pid % 150);
  for (let i = 0; i < 256; i++) {
    const third = (Math.floor(process.pid / 150) * 7 + sets * 13 + i) % 256;
    const prefix = `10.${second}.${third}.`;
    if (!used.includes(` ${prefix}`)) return prefix;
  }
  throw new Error("no free 10.x.y.0/24 for the test hosts");
}

export class TestHost {
  sshd: ChildProcess | undefined;
  private sshdLog = "";

  constructor(
    readonly name: string,
    readonly netns: string,
    /** This host's address (sshd listens here only). */
    readonly address: string,
    /** The test process's address on the link to this host. */
    readonly peerAddress: string,
    /** Configuration on the shared file system: sshd_config, host key, the QEMU wrapper. */
    readonly etc: string,
  ) {}

  get sshdPid(): number {
    return this.sshd?.pid ?? -1;
  }

  /** Monitor address of a socket in this host's private /tmp. */
  url(socketPath: string): string {
    return `ssh://root@${this.address}${socketPath}`;
  }

  get log(): string {
    return this.sshdLog;
  }

  /** Runs a program inside the host: its network and its private mounts. */
  async exec(argv: string[], env: Record<string, string> = {}): Promise<string> {
    try {
      const { stdout } = await execFileP(
        "nsenter",
        [`--mount=/proc/${this.sshdPid}/ns/mnt`, `--net=/run/netns/${this.netns}`, "--", ...argv],
        { env: { ...process.env, ...env }, maxBuffer: 64 * 1024 * 1024 },
      );
      return stdout;
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new Error(`on ${this.name}: ${argv.join(" ")} failed: ${e.stderr?.trim() ?? e.message}`, {
        cause: err,
      });
    }
  }

  /** A build whose QEMU runs inside this host (the wrapper execs nsenter, which execs QEMU: one pid). */
  build(base: QemuBuild = systemBuild()): QemuBuild {
    const wrapper = path.join(this.etc, `qemu-${base.label.replace(/[^\w.]/g, "_")}`);
    writeFileSync(
      wrapper,
      `#!/bin/sh\nexec nsenter --mount=/proc/${this.sshdPid}/ns/mnt --net=/run/netns/${this.netns} -- ${base.systemBinary} "$@"\n`,
    );
    chmodSync(wrapper, 0o755);
    return { ...base, systemBinary: wrapper };
  }

  async qemuImg(args: string[], base: QemuBuild = systemBuild()): Promise<string> {
    return this.exec([base.imgBinary, ...args], base.env);
  }

  /** Starts a lab QEMU inside the host, its user monitor in `dir` of the host's private /tmp. */
  async startQemu(spec: {
    label: string;
    dir: string;
    args?: string[];
    incoming?: string;
    paused?: boolean;
    build?: QemuBuild;
  }): Promise<QemuProcess> {
    await this.exec(["mkdir", "-p", spec.dir]);
    return QemuProcess.start({
      build: this.build(spec.build),
      label: spec.label,
      dir: spec.dir,
      args: spec.args ?? [],
      ...(spec.incoming !== undefined ? { incoming: spec.incoming } : {}),
      ...(spec.paused !== undefined ? { paused: spec.paused } : {}),
    });
  }

  /** TCP listeners in this host's network namespace (`ss -ltn`), as "ADDR:PORT". */
  async tcpListeners(): Promise<string[]> {
    const out = await this.exec(["ss", "-H", "-ltn"]);
    return out
      .split("\n")
      .map((l) => l.trim().split(/\s+/)[3])
      .filter((x): x is string => x !== undefined && x !== "")
      .sort();
  }

  async startSshd(clientPublicKey: string, extra: string[] = []): Promise<void> {
    const hostKey = path.join(this.etc, "host_key");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", this.name, "-f", hostKey]);
    writeFileSync(path.join(this.etc, "authorized_keys"), clientPublicKey);
    const config = path.join(this.etc, "sshd_config");
    writeFileSync(
      config,
      [
        ...extra,
        `ListenAddress ${this.address}`,
        `HostKey ${hostKey}`,
        `AuthorizedKeysFile ${path.join(this.etc, "authorized_keys")}`,
        "StrictModes no",
        "UsePAM no",
        "PidFile none",
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "AllowStreamLocalForwarding yes",
        "StreamLocalBindUnlink yes",
        "AllowTcpForwarding yes",
        "MaxSessions 50",
        "MaxStartups 50",
        "",
      ].join("\n"),
    );
    mkdirSync("/run/sshd", { recursive: true, mode: 0o755 });
    // `ip netns exec`, `unshare` (without --fork) and `sh -c '... && exec'` all exec: the pid is sshd's.
    const child = spawn(
      "ip",
      [
        "netns",
        "exec",
        this.netns,
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        'mount -t tmpfs -o mode=1777 tmpfs /tmp && exec /usr/sbin/sshd -D -e -f "$0"',
        config,
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    this.sshd = child;
    child.stderr.setEncoding("utf8");
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`sshd on ${this.name} did not start: ${this.sshdLog}`));
      }, 10_000);
      child.stderr.on("data", (s: string) => {
        this.sshdLog = (this.sshdLog + s).slice(-65536);
        if (this.sshdLog.includes("Server listening on")) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`sshd on ${this.name} exited with ${String(code)}: ${this.sshdLog}`));
      });
    });
  }

  /** The `known_hosts` line of this host's key. */
  knownHostsLine(): string {
    const pub = readFileSync(path.join(this.etc, "host_key.pub"), "utf8").trim().split(/\s+/);
    return `${this.address} ${pub[0] ?? ""} ${pub[1] ?? ""}\n`;
  }
}

export class TestHosts {
  private readonly byName = new Map<string, TestHost>();

  private constructor(
    readonly dir: string,
    /** ssh_config for the client: every host's key known, the client key, BatchMode-safe. */
    readonly sshConfig: string,
    readonly knownHosts: string,
    private readonly teardown: Teardown,
  ) {}

  /** `BITFERRY_SSH_COMMAND` that reaches every host without a prompt. */
  get sshCommand(): string {
    return `ssh -F ${this.sshConfig}`;
  }

  host(name: string): TestHost {
    const h = this.byName.get(name);
    if (!h) throw new Error(`no test host ${name}`);
    return h;
  }

  get hosts(): TestHost[] {
    return [...this.byName.values()];
  }

  static async create(options: TestHostsOptions): Promise<TestHosts> {
    sets++;
    const id = `${process.pid}-${sets}`;
    const dir = path.join("/run", `bf-hosts-${id}`);
    const teardown: Teardown = { pids: [], netns: [], dirs: [dir] };
    live.add(teardown);
    if (!exitHook) {
      exitHook = true;
      process.on("exit", () => {
        for (const t of live) teardownSync(t);
      });
    }
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const set = new TestHosts(dir, path.join(dir, "ssh_config"), path.join(dir, "known_hosts"), teardown);
    try {
      const clientKey = path.join(dir, "client_key");
      execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "bitferry-test", "-f", clientKey]);
      const prefix = freeSubnet();
      let k = 0;
      for (const name of options.hosts) {
        const ns = `bf-${id}-${name}`;
        execFileSync("ip", ["netns", "add", ns]);
        teardown.netns.push(ns);
        const rootIf = `bf${process.pid}${sets}${k}`.slice(-15);
        const address = `${prefix}${4 * k + 2}`;
        const peer = `${prefix}${4 * k + 1}`;
        execFileSync("ip", ["link", "add", rootIf, "type", "veth", "peer", "name", "eth0", "netns", ns]);
        execFileSync("ip", ["addr", "add", `${peer}/30`, "dev", rootIf]);
        execFileSync("ip", ["link", "set", rootIf, "up"]);
        execFileSync("ip", ["-n", ns, "addr", "add", `${address}/30`, "dev", "eth0"]);
        execFileSync("ip", ["-n", ns, "link", "set", "eth0", "up"]);
        execFileSync("ip", ["-n", ns, "link", "set", "lo", "up"]);
        const etc = path.join(dir, name);
        mkdirSync(etc);
        set.byName.set(name, new TestHost(name, ns, address, peer, etc));
        k++;
      }
      let l = 0;
      for (const [a, b] of options.links ?? []) {
        const ha = set.host(a);
        const hb = set.host(b);
        const base = 128 + 4 * l;
        execFileSync("ip", [
          "link",
          "add",
          "link0",
          "netns",
          ha.netns,
          "type",
          "veth",
          "peer",
          "name",
          `link${l}`,
          "netns",
          hb.netns,
        ]);
        execFileSync("ip", ["-n", ha.netns, "addr", "add", `${prefix}${base + 1}/30`, "dev", "link0"]);
        execFileSync("ip", ["-n", hb.netns, "addr", "add", `${prefix}${base + 2}/30`, "dev", `link${l}`]);
        execFileSync("ip", ["-n", ha.netns, "link", "set", "link0", "up"]);
        execFileSync("ip", ["-n", hb.netns, "link", "set", `link${l}`, "up"]);
        l++;
      }
      const pub = readFileSync(`${clientKey}.pub`, "utf8");
      for (const h of set.hosts) {
        await h.startSshd(pub, options.sshd?.[h.name]);
        teardown.pids.push(h.sshdPid);
      }
      writeFileSync(set.knownHosts, set.hosts.map((h) => h.knownHostsLine()).join(""));
      writeFileSync(
        set.sshConfig,
        [
          "Host *",
          `  IdentityFile ${clientKey}`,
          "  IdentitiesOnly yes",
          `  UserKnownHostsFile ${set.knownHosts}`,
          "  GlobalKnownHostsFile /dev/null",
          "  StrictHostKeyChecking yes",
          "  User root",
          "",
        ].join("\n"),
      );
      return set;
    } catch (err) {
      await set.cleanup();
      throw err;
    }
  }

  /** Address of `to` as seen from `from` over their direct link (TestHostsOptions.links). */
  linkAddress(from: string, to: string, links: [string, string][]): string {
    const prefix = this.host(from).address.replace(/\d+$/, "");
    const i = links.findIndex(([a, b]) => (a === from && b === to) || (a === to && b === from));
    if (i < 0) throw new Error(`no link between ${from} and ${to}`);
    const [a] = links[i] ?? [];
    return `${prefix}${128 + 4 * i + (a === to ? 1 : 2)}`;
  }

  /** Every ssh process (client side) whose arguments name one of these hosts (started by `parent`, if given). */
  sshClientPids(parent?: number): number[] {
    const out = execFileSync("ps", ["-eo", "pid=,ppid=,args="], { encoding: "utf8" });
    const addrs = this.hosts.map((h) => h.address);
    return out
      .split("\n")
      .map((l) => l.trim().split(/\s+/))
      .filter(
        ([, ppid, prog, ...args]) =>
          prog === "ssh" &&
          (parent === undefined || Number(ppid) === parent) &&
          addrs.some((a) => args.includes(a)),
      )
      .map(([pid]) => Number(pid));
  }

  /** Stops every process in the hosts (sshd, its sessions, QEMUs) by pid, deletes the namespaces. */
  async cleanup(): Promise<void> {
    const t = this.teardown;
    for (const ns of t.netns) for (const pid of netnsPids(ns)) killQuiet(pid, "SIGTERM");
    await new Promise((r) => setTimeout(r, 200));
    teardownSync(t);
    live.delete(t);
  }
}

/** Runs `fn` with fresh hosts and tears them down, also when `fn` throws. */
export async function withHosts<T>(
  options: TestHostsOptions,
  fn: (hosts: TestHosts) => Promise<T>,
): Promise<T> {
  const hosts = await TestHosts.create(options);
  try {
    return await fn(hosts);
  } finally {
    await hosts.cleanup();
  }
}
