import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { Plan } from "../../src/policy/types.js";
import type { QemuProcess } from "../../src/lab/process.js";
import { Lab } from "../../src/lab/lab.js";
import { nullBlockdev } from "../../src/lab/topology.js";
import { runCli } from "../helpers/cli.js";
import { TestHosts } from "../helpers/hosts.js";
import { alive, until } from "../helpers/processes.js";

const MiB = 1024 * 1024;

interface FailureDoc {
  ok: boolean;
  error: { code: string; message: string };
}

describe("ssh:// monitors across network namespaces", () => {
  let hosts: TestHosts;
  let lab: Lab;
  let dst: QemuProcess;
  let src: QemuProcess;
  const savedCommand = process.env.BITFERRY_SSH_COMMAND;

  before(async () => {
    hosts = await TestHosts.create({ hosts: ["dst"] });
    process.env.BITFERRY_SSH_COMMAND = hosts.sshCommand;
    lab = Lab.create();
    const args = nullBlockdev("disk0", 64 * MiB);
    src = await lab.start({ label: "src", args });
    await src.monitor.addBitmap("disk0", "bm0", { granularity: 65536 });
    dst = await hosts.host("dst").startQemu({ label: "dst", dir: "/tmp/q", args, incoming: "defer" });
  });

  after(async () => {
    if (savedCommand === undefined) delete process.env.BITFERRY_SSH_COMMAND;
    else process.env.BITFERRY_SSH_COMMAND = savedCommand;
    await dst.stop();
    await lab.cleanup();
    await hosts.cleanup();
  });

  it("the destination's monitor is only reachable through ssh://", () => {
    assert.equal(dst.monitorSocket, "/tmp/q/dst.qmp");
    assert.equal(existsSync(dst.monitorSocket), false, "the destination's /tmp is its own");
  });

  it("plan --dest ssh://: plans across the hosts, transport says ssh and the SSH tunnel", async () => {
    const r = await runCli([
      "plan",
      "--source",
      src.monitorSocket,
      "--dest",
      hosts.host("dst").url(dst.monitorSocket),
      "--json",
    ]);
    assert.equal(r.code, 0, r.stderr);
    const plan = r.json() as Plan;
    assert.equal(plan.ok, true);
    assert.deepEqual(plan.transport, {
      monitors: { source: "unix", destination: "ssh" },
      migration: "ssh-tunnel",
      nbd: null,
    });
    assert.equal(plan.bitmaps[0]?.action, "migrate");
    assert.deepEqual(plan.warnings, []);
    // Nothing of the connection stays: no ssh process, no local socket directory of ours.
    assert.deepEqual(alive(hosts.sshClientPids()), []);
    assert.deepEqual(await hosts.host("dst").exec(["sh", "-c", "ls -d /tmp/bf-* 2>/dev/null || true"]), "");
  });

  it("a changed host key: exit 3, QMP_ERR_CONNECT, ssh's reason and the address", async () => {
    const other = path.join(hosts.dir, "other_known_hosts");
    // Another host's key under this host's address.
    writeFileSync(
      other,
      `${hosts.host("dst").address} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n`,
    );
    process.env.BITFERRY_SSH_COMMAND = `${hosts.sshCommand} -o UserKnownHostsFile=${other}`;
    try {
      const url = hosts.host("dst").url(dst.monitorSocket);
      const r = await runCli(["plan", "--source", src.monitorSocket, "--dest", url, "--json"]);
      assert.equal(r.code, 3, r.stderr);
      const doc = r.json() as FailureDoc;
      assert.equal(doc.error.code, "QMP_ERR_CONNECT");
      assert.ok(doc.error.message.includes(url), doc.error.message);
      assert.match(doc.error.message, /Host key verification failed/);
      const human = await runCli(["plan", "--source", src.monitorSocket, "--dest", url]);
      assert.equal(human.code, 3);
      assert.match(human.stderr, /Host key verification failed.*\[QMP_ERR_CONNECT\]/);
    } finally {
      process.env.BITFERRY_SSH_COMMAND = hosts.sshCommand;
    }
  });

  it("the socket path missing on the remote host: exit 3 naming the path and the host", async () => {
    const url = hosts.host("dst").url("/tmp/q/nothing.qmp");
    const r = await runCli(["plan", "--source", src.monitorSocket, "--dest", url, "--json"]);
    assert.equal(r.code, 3, r.stderr);
    const doc = r.json() as FailureDoc;
    assert.equal(doc.error.code, "QMP_ERR_CONNECT");
    assert.ok(doc.error.message.includes(url), doc.error.message);
    assert.match(doc.error.message, /no unix socket at \/tmp\/q\/nothing\.qmp on /);
  });

  it("a socket nobody listens on: exit 3 with ssh's 'connect failed'", async () => {
    const h = hosts.host("dst");
    // A listener that exits without closing leaves its socket file behind, as a killed QEMU does.
    await h.exec([
      process.execPath,
      "-e",
      "require('net').createServer().listen('/tmp/q/dead.qmp', () => process.exit(0))",
    ]);
    const r = await runCli([
      "plan",
      "--source",
      src.monitorSocket,
      "--dest",
      h.url("/tmp/q/dead.qmp"),
      "--json",
    ]);
    assert.equal(r.code, 3, r.stderr);
    const doc = r.json() as FailureDoc;
    assert.equal(doc.error.code, "QMP_ERR_CONNECT");
    assert.match(doc.error.message, /ssh: .*connect failed.*could not connect to \/tmp\/q\/dead\.qmp/);
  });

  it("no route to the host: exit 3 with ssh's reason", async () => {
    // An address of the host's /30 that nobody has: ssh's connect times out or is refused, never hangs.
    const addr = hosts.host("dst").address.replace(/\d+$/, (d) => String(Number(d) + 1));
    const r = await runCli([
      "plan",
      "--source",
      src.monitorSocket,
      "--dest",
      `ssh://root@${addr}:22/tmp/x.qmp`,
      "--json",
    ]);
    assert.equal(r.code, 3, r.stderr);
    const doc = r.json() as FailureDoc;
    assert.equal(doc.error.code, "QMP_ERR_CONNECT");
    assert.match(doc.error.message, /ssh: .*(port 22|No route|timed out|refused)/i);
  });

  it("a BITFERRY_SSH_COMMAND that does not exist: exit 3 naming the program", async () => {
    process.env.BITFERRY_SSH_COMMAND = "/nonexistent/ssh -v";
    try {
      const r = await runCli([
        "plan",
        "--source",
        src.monitorSocket,
        "--dest",
        hosts.host("dst").url(dst.monitorSocket),
        "--json",
      ]);
      assert.equal(r.code, 3, r.stderr);
      const doc = r.json() as FailureDoc;
      assert.equal(doc.error.code, "QMP_ERR_CONNECT");
      assert.match(doc.error.message, /\/nonexistent\/ssh not found/);
    } finally {
      process.env.BITFERRY_SSH_COMMAND = hosts.sshCommand;
    }
  });

  it("SIGKILL of the process holding the connection: its ssh exits within seconds, both hosts are clean", async () => {
    const url = hosts.host("dst").url(dst.monitorSocket);
    const child = spawn(
      process.execPath,
      ["--import", "tsx", path.join(import.meta.dirname, "..", "helpers", "hold-ssh-monitor.ts"), url],
      { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env } },
    );
    let out = "";
    let err = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    child.stderr.on("data", (c: Buffer) => (err += c.toString()));
    const exited = new Promise((r) => child.once("exit", r));
    try {
      assert.ok(await until(() => out.includes("READY"), 30_000), `never ready: ${err}`);
      const ssh = alive(hosts.sshClientPids());
      assert.equal(ssh.length, 1, "one ssh connection carries the monitor");
      const remote = await hosts.host("dst").exec(["sh", "-c", "ls -d /tmp/bf-* 2>/dev/null || true"]);
      assert.match(remote, /\/tmp\/bf-/, "the remote command made its private directory");
      const localDirs = () => readdirSync("/tmp").filter((d) => d.startsWith("bf-ssh-"));
      const before = localDirs();
      child.kill("SIGKILL");
      await exited;
      assert.ok(await until(() => alive(ssh).length === 0, 5_000), `ssh ${ssh.join(",")} still running`);
      assert.ok(
        await until(
          async () =>
            (await hosts.host("dst").exec(["sh", "-c", "ls -d /tmp/bf-* 2>/dev/null || true"])) === "",
          5_000,
        ),
        "the remote directory is removed",
      );
      assert.ok(
        await until(() => localDirs().length < before.length, 5_000),
        "the local socket directory is removed",
      );
      // The QEMU behind the monitor is untouched.
      assert.equal((await dst.monitor.status()).status, "inmigrate");
    } finally {
      child.kill("SIGKILL");
    }
  });
});
