import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { cpSync, rmSync } from "node:fs";
import path from "node:path";
import { Lab } from "../../src/lab/lab.js";
import type { QemuProcess } from "../../src/lab/process.js";
import { writeRange } from "../../src/lab/actions.js";
import { qcow2Blockdev } from "../../src/lab/topology.js";
import { discoverBuilds } from "../../src/lab/builds.js";
import type { QemuBuild } from "../../src/lab/build.js";
import { migrate, type MigrateOptions, type MigrateResult } from "../../src/migrate/run.js";
import type { ProgressEvent } from "../../src/migrate/progress.js";
import { connectSshMonitor, sshConnectionOf } from "../../src/transport/monitor.js";
import { QemuMonitor } from "../../src/qemu/monitor.js";
import type { QmpClient } from "../../src/qmp/client.js";
import { spawnCli } from "../helpers/cli.js";
import { bitmapStates } from "../helpers/bitmaps.js";
import { makeCerts, makeOtherCaClient, type CertSet } from "../helpers/certs.js";
import { TestHosts, type TestHost } from "../helpers/hosts.js";
import { alive, until } from "../helpers/processes.js";

/**
 * End to end on two "hosts" (network namespaces with their own sshd and a private /tmp): the SSH tunnel with
 * shared and with copied storage, QEMU's TLS with copied storage, plaintext refused and --insecure, both sides
 * ssh:// from a third host, and the faults: the destination's SSH connection killed mid-run, bitferry killed.
 * `-machine none` QEMUs with dirtied bitmaps (DESIGN allows it until the real guest lands).
 */

const MiB = 1024 * 1024;
const DISK = 32 * MiB;
const LINKS: [string, string][] = [["src", "dst"]];

/** One VM's disk and bitmaps: a qcow2 node "disk0" with a persistent and a plain bitmap, data written. */
async function sourceVm(
  start: (args: string[]) => Promise<QemuProcess>,
  image: string,
): Promise<QemuProcess> {
  const vm = await start(qcow2Blockdev({ nodeName: "disk0", file: image }));
  await vm.monitor.addBitmap("disk0", "backup", { granularity: 65536, persistent: true });
  await vm.monitor.addBitmap("disk0", "cbt", { granularity: 65536 });
  await writeRange(vm.monitor, "disk0", 2 * MiB, MiB, 0x21);
  await writeRange(vm.monitor, "disk0", 9 * MiB, 3 * MiB, 0x22);
  return vm;
}

function listeners(h: TestHost): string[] {
  return execFileSync("ip", ["netns", "exec", h.netns, "ss", "-H", "-ltn"], { encoding: "utf8" })
    .split("\n")
    .map((l) => l.trim().split(/\s+/)[3])
    .filter((x): x is string => x !== undefined && x !== "")
    .sort();
}

function onceAt(pred: (e: ProgressEvent) => boolean, act: () => void): (e: ProgressEvent) => void {
  let done = false;
  return (e) => {
    if (!done && pred(e)) {
      done = true;
      act();
    }
  };
}

const builds = discoverBuilds();

describe("two hosts: bitferry through SSH and TLS", () => {
  let hosts: TestHosts;
  let lab: Lab;
  let certs: CertSet;
  let otherCa: string;
  /** The credentials' path, the same on both hosts (each host's own copy in its own /tmp). */
  const pki = `/tmp/pki-${process.pid}`;
  const started: QemuProcess[] = [];
  const clients: QmpClient[] = [];
  const saved = process.env.BITFERRY_SSH_COMMAND;
  let n = 0;

  before(async () => {
    hosts = await TestHosts.create({ hosts: ["src", "dst"], links: LINKS });
    process.env.BITFERRY_SSH_COMMAND = hosts.sshCommand;
    lab = Lab.create();
    const dst = hosts.host("dst");
    const dstOnLink = hosts.linkAddress("src", "dst", LINKS);
    certs = makeCerts(path.join(hosts.dir, "pki"), { ips: [dst.address, dstOnLink], names: ["dst.test"] });
    otherCa = makeOtherCaClient(path.join(hosts.dir, "pki"));
    // The destination host holds the server's files, this host (the source's) the client's, under one path.
    await dst.exec(["cp", "-r", certs.serverDir, pki]);
    await hosts.host("src").exec(["cp", "-r", certs.clientDir, pki]);
    cpSync(certs.clientDir, pki, { recursive: true });
  });

  after(async () => {
    for (const c of clients) c.close();
    for (const q of started) await q.stop();
    if (saved === undefined) delete process.env.BITFERRY_SSH_COMMAND;
    else process.env.BITFERRY_SSH_COMMAND = saved;
    rmSync(pki, { recursive: true, force: true });
    await lab.cleanup();
    await hosts.cleanup();
  });

  /** A fresh pair: the source on this host (or on host "src"), an empty destination on host "dst". */
  async function pair(o: { sourceOn?: "local" | "src"; copy: boolean; dstBuild?: QemuBuild }): Promise<{
    source: QemuProcess;
    destination: QemuProcess;
    dir: string;
    srcUrl: string;
    dstUrl: string;
  }> {
    n++;
    const dir = `/tmp/q${n}`;
    const dst = hosts.host("dst");
    let source: QemuProcess;
    let srcUrl: string;
    let sharedImage = "";
    if (o.sourceOn === "src") {
      const h = hosts.host("src");
      await h.exec(["mkdir", "-p", dir]);
      await h.qemuImg(["create", "-q", "-f", "qcow2", `${dir}/a.qcow2`, String(DISK)]);
      source = await sourceVm((args) => h.startQemu({ label: "src", dir, args }), `${dir}/a.qcow2`);
      srcUrl = h.url(source.monitorSocket);
    } else {
      // Shared storage: an image on a file system both hosts see (/run, not their private /tmp).
      const img = o.copy
        ? await lab.createImage(`a${n}.qcow2`, DISK)
        : path.join(hosts.dir, `shared${n}.qcow2`);
      if (!o.copy) await lab.qemuImg(["create", "-q", "-f", "qcow2", img, String(DISK)]);
      sharedImage = img;
      source = await sourceVm((args) => lab.start({ label: `src${n}`, args }), img);
      srcUrl = source.monitorSocket;
    }
    started.push(source);
    await dst.exec(["mkdir", "-p", dir]);
    // With --copy-storage the destination gets an empty image of its own; otherwise it opens the shared one.
    const dstImage = o.copy ? `${dir}/b.qcow2` : sharedImage;
    if (o.copy) await dst.qemuImg(["create", "-q", "-f", "qcow2", dstImage, String(DISK)], o.dstBuild);
    const destination = await dst.startQemu({
      label: "dst",
      dir,
      args: qcow2Blockdev({ nodeName: "disk0", file: dstImage }),
      incoming: "defer",
      // Paused until verified (-S): the strict check (DESIGN section 4 item 5).
      paused: true,
      ...(o.dstBuild ? { build: o.dstBuild } : {}),
    });
    started.push(destination);
    return { source, destination, dir, srcUrl, dstUrl: dst.url(destination.monitorSocket) };
  }

  async function open(url: string, label: string): Promise<QemuMonitor> {
    const c = url.startsWith("ssh://")
      ? await connectSshMonitor(url, { label, commandTimeoutMs: 60_000 })
      : await (
          await import("../../src/qmp/client.js")
        ).QmpClient.connect(url, { label, commandTimeoutMs: 60_000 });
    clients.push(c);
    return new QemuMonitor(c);
  }

  function assertStrict(r: MigrateResult): void {
    assert.equal(r.ok, true, JSON.stringify(r.error));
    assert.deepEqual(r.bitmaps.map((b) => [b.source.bitmap, b.verified]).sort(), [
      ["backup", "strict"],
      ["cbt", "strict"],
    ]);
  }

  /** Nothing of bitferry's stays on a QEMU: no TLS object, tls-creds reset, no export, no NBD node. */
  async function assertClean(q: QemuProcess): Promise<void> {
    // A QEMU that never had a user-creatable object has no /objects container at all.
    const objs = ((await q.qmp.execute("qom-list", { path: "/objects" }).catch(() => [])) ?? []) as {
      name: string;
    }[];
    assert.deepEqual(
      objs.map((o) => o.name).filter((x) => x.startsWith("bf-")),
      [],
      "TLS objects left",
    );
    const p = (await q.qmp.execute("query-migrate-parameters")) as Record<string, unknown>;
    assert.equal(p["tls-creds"] ?? "", "", "tls-creds left set");
    assert.deepEqual(await q.qmp.execute("query-block-exports"), [], "exports left");
  }

  async function assertHostsClean(): Promise<void> {
    assert.ok(await until(() => alive(hosts.sshClientPids()).length === 0, 5_000), "ssh processes left");
    for (const h of hosts.hosts) {
      const left = await h.exec(["sh", "-c", "ls -d /tmp/bf-* 2>/dev/null || true"]);
      assert.equal(left, "", `sockets left on ${h.name}`);
    }
  }

  it("tunnel, shared storage: --dest ssh:// without --uri; strictly verified, no TCP listener but sshd", async () => {
    const p = await pair({ copy: false });
    const before = { src: listeners(hosts.host("src")), dst: listeners(hosts.host("dst")) };
    const r = await spawnCli(["migrate", "--source", p.srcUrl, "--dest", p.dstUrl, "--resume", "--json"]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const doc = r.json() as MigrateResult;
    assertStrict(doc);
    assert.equal(doc.migration.transport, "ssh-tunnel");
    assert.deepEqual(doc.plan.transport, {
      monitors: { source: "unix", destination: "ssh" },
      migration: "ssh-tunnel",
      nbd: null,
    });
    assert.deepEqual(listeners(hosts.host("dst")), before.dst);
    assert.equal((await p.destination.monitor.status()).status, "running");
    await assertClean(p.destination);
    await assertHostsClean();
  });

  it("tunnel, --copy-storage: the disk copy through SSH too; nothing listens on TCP during the run", async () => {
    const p = await pair({ copy: true });
    const dst = hosts.host("dst");
    const before = listeners(dst);
    const seen: string[][] = [];
    const source = await open(p.srcUrl, "source");
    const destination = await open(p.dstUrl, "destination");
    const r = await migrate({
      source,
      destination,
      copyStorage: true,
      onProgress: (e) => {
        if (e.phase === "copy" || e.phase === "migrating") seen.push(listeners(dst));
      },
    });
    assertStrict(r);
    assert.equal(r.migration.transport, "ssh-tunnel");
    assert.ok(seen.length > 0);
    for (const l of seen) assert.deepEqual(l, before, "a TCP listener appeared during the run");
    assert.ok(r.storage?.disks.every((d) => d.complete));
    await destination.qmp.execute("quit").catch(() => undefined);
    await p.destination.exited;
    // The data arrived: the destination's image holds what the source wrote.
    await dst.exec([
      "qemu-io",
      "-r",
      "-f",
      "qcow2",
      "-c",
      `read -P 0x22 ${9 * MiB} ${3 * MiB}`,
      `${p.dir}/b.qcow2`,
    ]);
    source.qmp.close();
    await sshConnectionOf(destination.qmp)?.close();
    await assertClean(p.source);
    await assertHostsClean();
  });

  for (const dstBuild of builds) {
    it(`TLS with --copy-storage to ${dstBuild.label}: verified, the NBD server refuses plaintext and another CA`, async () => {
      const p = await pair({ copy: true, dstBuild });
      const dst = hosts.host("dst");
      const probes: { plain?: string; other?: string; good?: string } = {};
      let copyEvents = 0;
      const source = await open(p.srcUrl, "source");
      const destination = await open(p.dstUrl, "destination");
      const uri = `tcp:${dst.address}:4445`;
      const nbd = `tcp:${dst.address}:10809`;
      const probe = (args: string[]): string => {
        try {
          return `ok: ${execFileSync("nbdinfo", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 10_000 }).slice(0, 80)}`;
        } catch (err) {
          return `refused: ${String((err as { stderr?: string }).stderr)}`;
        }
      };
      const r = await migrate({
        source,
        destination,
        uri,
        nbd,
        tlsCreds: pki,
        copyStorage: true,
        transport: { source: p.srcUrl, destination: p.dstUrl, uri, nbd, copyStorage: true, tlsCreds: pki },
        // While the mirrors run: a client without TLS, and one whose certificate another CA signed.
        // The second copy event comes from the copy loop, once the NBD server listens.
        onProgress: onceAt(
          (e) => e.phase === "copy" && ++copyEvents === 2,
          () => {
            probes.plain = probe(["--list", `nbd://${dst.address}:10809`]);
            probes.other = probe(["--list", `nbds://${dst.address}:10809/?tls-certificates=${otherCa}`]);
            probes.good = probe([
              "--list",
              `nbds://${dst.address}:10809/?tls-certificates=${certs.clientDir}`,
            ]);
          },
        ),
      });
      assertStrict(r);
      assert.equal(r.migration.transport, "tls");
      assert.deepEqual(r.plan.transport, {
        monitors: { source: "unix", destination: "ssh" },
        migration: "tls",
        nbd: "tls",
      });
      assert.match(probes.plain ?? "", /^refused/, probes.plain);
      assert.match(probes.other ?? "", /^refused/, probes.other);
      // The same server accepts this CA's client: the refusals above are the TLS checks, not a closed port.
      assert.match(probes.good ?? "", /^ok/, probes.good);
      await assertClean(p.source);
      await assertClean(p.destination);
      source.qmp.close();
      destination.qmp.close();
      await sshConnectionOf(destination.qmp)?.close();
    });
  }

  for (const copy of [false, true]) {
    it(`TLS${copy ? " with --copy-storage" : ""}: a certificate without the name the source expects is TLS_FAILED, the source repaired`, async () => {
      const p = await pair({ copy: true });
      const dst = hosts.host("dst");
      const before = await bitmapStates(p.source);
      const source = await open(p.srcUrl, "source");
      const destination = await open(p.dstUrl, "destination");
      const r = await migrate({
        source,
        destination,
        uri: `tcp:${dst.address}:4447`,
        ...(copy ? { nbd: `tcp:${dst.address}:10811`, copyStorage: true } : {}),
        tlsCreds: pki,
        tlsHostname: "not-the-destination.test",
      });
      assert.equal(r.ok, false);
      assert.equal(r.error?.code, "TLS_FAILED", JSON.stringify(r.error));
      assert.equal(r.migration.transport, "tls");
      assert.equal((await p.source.monitor.status()).status, "running");
      const after = await bitmapStates(p.source);
      for (const [k, b] of before) assert.equal(after.get(k)?.persistent, b.persistent, k);
      await assertClean(p.source);
      // QEMU before 9.1 exits when the incoming migration fails; a destination still there has nothing left either.
      if (p.destination.alive) await assertClean(p.destination);
      source.qmp.close();
      destination.qmp.close();
      await sshConnectionOf(destination.qmp)?.close();
    });
  }

  it("plaintext NBD is refused unless --insecure, which migrates with the warnings", async () => {
    const p = await pair({ copy: true });
    const dst = hosts.host("dst");
    const args = [
      "migrate",
      "--source",
      p.srcUrl,
      "--dest",
      p.dstUrl,
      "--copy-storage",
      "--uri",
      `tcp:${dst.address}:4446`,
      "--nbd",
      `tcp:${dst.address}:10810`,
      "--json",
    ];
    const refused = await spawnCli(args);
    assert.equal(refused.code, 1, refused.stderr + refused.stdout);
    const doc = refused.json() as MigrateResult;
    assert.equal(doc.error?.code, "PLAN_ERRORS");
    assert.deepEqual(
      doc.plan.errors.map((e) => e.code),
      ["INSECURE_NBD"],
    );
    const accepted = await spawnCli([...args, "--insecure"]);
    assert.equal(accepted.code, 0, accepted.stderr + accepted.stdout);
    const ok = accepted.json() as MigrateResult;
    assertStrict(ok);
    assert.equal(ok.migration.transport, "plaintext");
    assert.deepEqual(
      ok.plan.warnings.map((w) => w.code).filter((c) => c === "INSECURE_TRANSPORT"),
      ["INSECURE_TRANSPORT", "INSECURE_TRANSPORT"],
    );
    await assertHostsClean();
  });

  it("both sides ssh:// from a third host: the stream and the copy pass through bitferry's host", async () => {
    const p = await pair({ sourceOn: "src", copy: true });
    const before = { src: listeners(hosts.host("src")), dst: listeners(hosts.host("dst")) };
    const r = await spawnCli([
      "migrate",
      "--source",
      p.srcUrl,
      "--dest",
      p.dstUrl,
      "--copy-storage",
      "--json",
    ]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const doc = r.json() as MigrateResult;
    assertStrict(doc);
    assert.equal(doc.migration.transport, "ssh-tunnel");
    assert.deepEqual(doc.plan.transport?.monitors, { source: "ssh", destination: "ssh" });
    assert.deepEqual(listeners(hosts.host("src")), before.src);
    assert.deepEqual(listeners(hosts.host("dst")), before.dst);
    await assertClean(p.source);
    await assertHostsClean();
  });

  it("library: a remote source and a local destination without uri: the stream comes back through a remote forward", async () => {
    n++;
    const h = hosts.host("src");
    const dir = `/tmp/q${n}`;
    await h.exec(["mkdir", "-p", dir]);
    await h.qemuImg(["create", "-q", "-f", "qcow2", `${dir}/a.qcow2`, String(DISK)]);
    const src = await sourceVm((args) => h.startQemu({ label: "src", dir, args }), `${dir}/a.qcow2`);
    started.push(src);
    const img = await lab.createImage(`b${n}.qcow2`, DISK);
    const dst = await lab.start({
      label: `dst${n}`,
      args: qcow2Blockdev({ nodeName: "disk0", file: img }),
      incoming: "defer",
      paused: true,
    });
    started.push(dst);
    const source = await open(h.url(src.monitorSocket), "source");
    const destination = await open(dst.monitorSocket, "destination");
    const steps: string[] = [];
    const r = await migrate({
      source,
      destination,
      copyStorage: true,
      onStep: (st) => steps.push(`${st.name}:${st.side}`),
    });
    assertStrict(r);
    assert.equal(r.migration.transport, "ssh-tunnel");
    // This host's run directory (the destination listens there) and the source's, one remote forward each.
    assert.deepEqual(
      steps.filter((x) => /^(socket-dir|tunnel)/.test(x)),
      ["socket-dir:local", "socket-dir:source", "tunnel:local", "tunnel:local"],
    );
    await destination.qmp.execute("quit").catch(() => undefined);
    await dst.exited;
    // The data arrived in this host's image.
    await lab.qemuIo(img, `read -P 0x22 ${9 * MiB} ${3 * MiB}`);
    source.qmp.close();
    await sshConnectionOf(source.qmp)?.close();
    await assertClean(src);
    await assertHostsClean();
  });

  it("the destination's SSH connection killed mid-run: TUNNEL_FAILED or DESTINATION_LOST, the source repaired and running", async () => {
    const p = await pair({ copy: true });
    const bitmapsBefore = await bitmapStates(p.source);
    const source = await open(p.srcUrl, "source");
    const destination = await open(p.dstUrl, "destination");
    const conn = sshConnectionOf(destination.qmp);
    assert.ok(conn);
    const options: MigrateOptions = {
      source,
      destination,
      copyStorage: true,
      onProgress: onceAt(
        (e) => e.phase === "copy",
        () => {
          process.kill(conn.pid, "SIGKILL");
        },
      ),
    };
    const r = await migrate(options);
    assert.equal(r.ok, false);
    assert.ok(["TUNNEL_FAILED", "DESTINATION_LOST"].includes(r.error?.code ?? ""), JSON.stringify(r.error));
    assert.equal(r.source.runState, "running");
    assert.equal((await p.source.monitor.status()).status, "running");
    const after = await bitmapStates(p.source);
    assert.deepEqual([...after.keys()].sort(), [...bitmapsBefore.keys()].sort());
    for (const [k, b] of bitmapsBefore) {
      assert.equal(after.get(k)?.persistent, b.persistent, k);
      assert.equal(after.get(k)?.busy, false, k);
    }
    await assertClean(p.source);
    // The run cleaned the source; nothing of the run stays on it (no NBD node, no job).
    assert.deepEqual(await p.source.monitor.blockJobs(), []);
    source.qmp.close();
    await assertHostsClean();
  });

  it("Ctrl-C at a terminal (SIGINT to the whole process group): the ssh connections survive it, the source is repaired through them", async () => {
    const p = await pair({ sourceOn: "src", copy: true });
    const before = await bitmapStates(p.source);
    let pgid = -1;
    const r = await spawnCli(
      ["migrate", "--source", p.srcUrl, "--dest", p.dstUrl, "--copy-storage", "--json"],
      {
        detached: true,
        onSpawn: (x) => (pgid = x),
        onStderr: (text) => {
          if (pgid > 0 && text.includes("copy")) {
            process.kill(-pgid, "SIGINT");
            pgid = -2;
          }
        },
      },
    );
    assert.equal(pgid, -2, r.stderr);
    assert.equal(r.code, 130, r.stderr);
    const doc = r.json() as MigrateResult;
    assert.equal(doc.error?.code, "INTERRUPTED", JSON.stringify(doc.error));
    assert.equal(doc.source.runState, "running");
    const after = await bitmapStates(p.source);
    assert.deepEqual([...after.keys()].sort(), [...before.keys()].sort());
    for (const [k, b] of before) {
      assert.equal(after.get(k)?.persistent, b.persistent, k);
      assert.equal(after.get(k)?.busy, false, k);
    }
    // The run's undo reached the source through ssh: no job, no NBD node of bitferry's is left there.
    assert.deepEqual(await p.source.monitor.blockJobs(), []);
    const nodes = await p.source.monitor.namedBlockNodes();
    assert.deepEqual(
      nodes.filter((x) => x.drv === "nbd").map((x) => x["node-name"]),
      [],
    );
    await assertClean(p.destination);
    await assertHostsClean();
  });

  it("bitferry killed with SIGKILL mid-run: no ssh process remains, the source keeps running", async () => {
    const p = await pair({ sourceOn: "src", copy: true });
    let pid = -1;
    let sshBefore: number[] = [];
    const run = spawnCli(["migrate", "--source", p.srcUrl, "--dest", p.dstUrl, "--copy-storage"], {
      onSpawn: (x) => (pid = x),
      onStderr: (text) => {
        if (pid > 0 && /copying|copy/.test(text)) {
          sshBefore = alive(hosts.sshClientPids(pid));
          process.kill(pid, "SIGKILL");
          pid = -2;
        }
      },
    });
    const r = await run;
    assert.notEqual(r.code, 0);
    assert.equal(pid, -2, `never saw the copy start: ${r.stderr}`);
    assert.ok(sshBefore.length >= 2, `ssh connections to both hosts: ${sshBefore.join(",")}`);
    assert.ok(
      await until(() => alive(sshBefore).length === 0, 5_000),
      `ssh still running: ${alive(sshBefore).join(",")}`,
    );
    await assertHostsClean();
    assert.equal((await p.source.monitor.status()).status, "running");
  });
});

describe("two hosts: a tunnel that cannot be set up", () => {
  it("the source's sshd refuses remote forwards: TUNNEL_FAILED with ssh's reason, every step undone", async () => {
    // sshd_config: the first value of an option wins, so this host allows local unix forwards (the monitor) only.
    const hosts = await TestHosts.create({
      hosts: ["src", "dst"],
      sshd: { src: ["AllowStreamLocalForwarding local"] },
    });
    const saved = process.env.BITFERRY_SSH_COMMAND;
    process.env.BITFERRY_SSH_COMMAND = hosts.sshCommand;
    const procs: QemuProcess[] = [];
    try {
      const s = hosts.host("src");
      const d = hosts.host("dst");
      await s.exec(["mkdir", "-p", "/tmp/q"]);
      await s.qemuImg(["create", "-q", "-f", "qcow2", "/tmp/q/a.qcow2", String(DISK)]);
      const source = await sourceVm(
        (args) => s.startQemu({ label: "src", dir: "/tmp/q", args }),
        "/tmp/q/a.qcow2",
      );
      procs.push(source);
      await d.exec(["mkdir", "-p", "/tmp/q"]);
      await d.qemuImg(["create", "-q", "-f", "qcow2", "/tmp/q/b.qcow2", String(DISK)]);
      const destination = await d.startQemu({
        label: "dst",
        dir: "/tmp/q",
        args: qcow2Blockdev({ nodeName: "disk0", file: "/tmp/q/b.qcow2" }),
        incoming: "defer",
        paused: true,
      });
      procs.push(destination);
      const before = await bitmapStates(source);
      const capsBefore = await source.qmp.execute("query-migrate-capabilities");
      const r = await spawnCli([
        "migrate",
        "--source",
        s.url(source.monitorSocket),
        "--dest",
        d.url(destination.monitorSocket),
        "--copy-storage",
        "--json",
      ]);
      assert.equal(r.code, 1, r.stderr);
      const doc = r.json() as MigrateResult;
      assert.equal(doc.error?.code, "TUNNEL_FAILED", JSON.stringify(doc.error));
      assert.match(doc.error.message, /forwarding the migration stream to the source: .*ssh:\/\/root@/);
      assert.equal(doc.source.runState, "running");
      // Nothing was left changed: capabilities back, bitmaps as they were, no socket directory on either host.
      assert.deepEqual(await source.qmp.execute("query-migrate-capabilities"), capsBefore);
      assert.deepEqual(await bitmapStates(source), before);
      assert.ok(await until(() => alive(hosts.sshClientPids()).length === 0, 5_000), "ssh processes left");
      for (const h of hosts.hosts)
        assert.equal(await h.exec(["sh", "-c", "ls -d /tmp/bf-* 2>/dev/null || true"]), "", h.name);
    } finally {
      for (const p of procs) await p.stop();
      if (saved === undefined) delete process.env.BITFERRY_SSH_COMMAND;
      else process.env.BITFERRY_SSH_COMMAND = saved;
      await hosts.cleanup();
    }
  });
});
