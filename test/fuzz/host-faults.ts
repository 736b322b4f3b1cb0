import { qcow2Blockdev } from "../../src/lab/topology.js";
import { writeRange } from "../../src/lab/actions.js";
import type { QemuProcess } from "../../src/lab/process.js";
import { migrate, type MigrateResult } from "../../src/migrate/run.js";
import type { ProgressEvent } from "../../src/migrate/progress.js";
import { QemuMonitor } from "../../src/qemu/monitor.js";
import { connectSshMonitor, sshConnectionOf } from "../../src/transport/monitor.js";
import { spawnCli } from "../helpers/cli.js";
import { TestHosts } from "../helpers/hosts.js";
import { alive, until } from "../helpers/processes.js";
import { bitmapStates, Findings } from "./checks.js";
import { Rng } from "./prng.js";

/**
 * Faults of the two-host transport (DESIGN section 4, Two hosts), injected into a `--copy-storage` migration
 * between two namespace hosts, both sides `ssh://` from this (third) host: an SSH connection killed (the
 * destination's, the source's), bitferry killed with SIGKILL, a terminal's Ctrl-C to bitferry's process group. Each
 * at a seeded phase. Checked: the run's error is one the contract allows, the source QEMU is alive (and, when its
 * connection survived, running with its bitmaps as they were), no ssh process of the run remains, no socket
 * directory stays on either host.
 */

export type HostFaultKind = "kill-ssh-destination" | "kill-ssh-source" | "sigkill-bitferry" | "sigint-group";

export const HOST_FAULT_CASES: readonly HostFaultKind[] = [
  "kill-ssh-destination",
  "kill-ssh-source",
  "sigkill-bitferry",
  "sigint-group",
];

const POINTS = ["setup", "copy", "migrating"] as const;

export interface HostFaultReport {
  index: number;
  kind: HostFaultKind;
  point: string;
  /** The run's error code, "ok" when the migration finished before the fault, or "killed". */
  code: string;
  failures: string[];
  ms: number;
}

const EXPECTED: Record<HostFaultKind, readonly string[]> = {
  "kill-ssh-destination": ["TUNNEL_FAILED", "DESTINATION_LOST", "MIGRATION_FAILED", "COPY_FAILED"],
  "kill-ssh-source": ["TUNNEL_FAILED", "SOURCE_LOST", "MIGRATION_FAILED", "COPY_FAILED"],
  "sigkill-bitferry": ["killed"],
  "sigint-group": ["INTERRUPTED"],
};

const DISK = 32 * 1024 * 1024;

async function vm(hosts: TestHosts, name: "src" | "dst"): Promise<{ proc: QemuProcess; url: string }> {
  const h = hosts.host(name);
  await h.exec(["mkdir", "-p", "/tmp/q"]);
  await h.qemuImg(["create", "-q", "-f", "qcow2", "/tmp/q/d.qcow2", String(DISK)]);
  const proc = await h.startQemu({
    label: name,
    dir: "/tmp/q",
    args: qcow2Blockdev({ nodeName: "disk0", file: "/tmp/q/d.qcow2" }),
    ...(name === "dst" ? { incoming: "defer", paused: true } : {}),
  });
  if (name === "src") {
    await proc.monitor.addBitmap("disk0", "backup", { granularity: 65536, persistent: true });
    await proc.monitor.addBitmap("disk0", "cbt", { granularity: 65536 });
    await writeRange(proc.monitor, "disk0", 0, 4 * 1024 * 1024, 0x33);
  }
  return { proc, url: h.url(proc.monitorSocket) };
}

function at(point: string): (e: ProgressEvent) => boolean {
  return (e) => e.phase === point;
}

export async function runHostFault(seed: number, index: number): Promise<HostFaultReport> {
  const t0 = Date.now();
  const rng = Rng.for(seed, index, 7);
  const kind = HOST_FAULT_CASES[index % HOST_FAULT_CASES.length] ?? "kill-ssh-destination";
  const point = POINTS[rng.u32() % POINTS.length] ?? "copy";
  const f = new Findings();
  let code = "ok";
  const hosts = await TestHosts.create({ hosts: ["src", "dst"] });
  const saved = process.env.BITFERRY_SSH_COMMAND;
  process.env.BITFERRY_SSH_COMMAND = hosts.sshCommand;
  const procs: QemuProcess[] = [];
  try {
    const src = await vm(hosts, "src");
    procs.push(src.proc);
    const dst = await vm(hosts, "dst");
    procs.push(dst.proc);
    const before = await bitmapStates(src.proc);
    let sourceReachable = true;
    if (kind === "kill-ssh-destination" || kind === "kill-ssh-source") {
      const source = new QemuMonitor(await connectSshMonitor(src.url, { label: "source" }));
      const destination = new QemuMonitor(await connectSshMonitor(dst.url, { label: "destination" }));
      const victim = sshConnectionOf((kind === "kill-ssh-source" ? source : destination).qmp);
      const shot = { fired: false };
      const r: MigrateResult = await migrate({
        source,
        destination,
        copyStorage: true,
        onProgress: (e) => {
          if (!shot.fired && at(point)(e) && victim) {
            shot.fired = true;
            process.kill(victim.pid, "SIGKILL");
          }
        },
      });
      code = r.ok ? "ok" : (r.error?.code ?? "?");
      if (shot.fired) f.check(EXPECTED[kind].includes(code), `error ${code}: ${JSON.stringify(r.error)}`);
      sourceReachable = kind !== "kill-ssh-source";
      source.qmp.close();
      destination.qmp.close();
      await Promise.all([sshConnectionOf(source.qmp)?.close(), sshConnectionOf(destination.qmp)?.close()]);
    } else {
      let pid = -1;
      const shot = { fired: false };
      const pattern = point === "setup" ? /setup|setting/ : point === "copy" ? /copy/ : /migrating|active/;
      const run = await spawnCli(
        ["migrate", "--source", src.url, "--dest", dst.url, "--copy-storage", "--json"],
        {
          detached: true,
          onSpawn: (p) => (pid = p),
          onStderr: (text) => {
            if (!shot.fired && pid > 0 && pattern.test(text)) {
              shot.fired = true;
              if (kind === "sigkill-bitferry") process.kill(pid, "SIGKILL");
              else process.kill(-pid, "SIGINT");
            }
          },
        },
      );
      code = kind === "sigkill-bitferry" && shot.fired ? "killed" : run.code === 0 ? "ok" : "?";
      if (kind === "sigint-group" && run.code !== 0) {
        const doc = run.json() as MigrateResult;
        code = doc.error?.code ?? "?";
        f.equal(run.code, 130, "exit status");
      }
      if (shot.fired) f.check(EXPECTED[kind].includes(code), `error ${code}: ${run.stderr.slice(-300)}`);
      // Killed, bitferry repaired nothing: the source runs on, its copy job may still be there.
      sourceReachable = kind === "sigint-group";
    }
    f.check(src.proc.alive, "the source QEMU is alive");
    if (src.proc.alive) {
      const status = (await src.proc.monitor.status()).status;
      f.check(status === "running" || code === "ok", `the source is ${status}`);
      if (sourceReachable && code !== "ok") {
        const after = await bitmapStates(src.proc);
        f.equal([...after.keys()].sort(), [...before.keys()].sort(), "the source's bitmaps");
        for (const [k, b] of before) f.equal(after.get(k)?.persistent, b.persistent, `${k} persistent`);
      }
    }
    f.check(
      await until(() => alive(hosts.sshClientPids()).length === 0, 5_000),
      () => `ssh processes left: ${alive(hosts.sshClientPids()).join(",")}`,
    );
    for (const h of hosts.hosts) {
      const ok = await until(
        async () => (await h.exec(["sh", "-c", "ls -d /tmp/bf-* 2>/dev/null || true"])) === "",
        5_000,
      );
      f.check(ok, `socket directories left on ${h.name}`);
    }
  } catch (err) {
    f.check(false, `the fault run itself failed: ${String(err)}`);
  } finally {
    for (const p of procs) await p.stop();
    if (saved === undefined) delete process.env.BITFERRY_SSH_COMMAND;
    else process.env.BITFERRY_SSH_COMMAND = saved;
    await hosts.cleanup();
  }
  return { index, kind, point, code, failures: f.list, ms: Date.now() - t0 };
}
