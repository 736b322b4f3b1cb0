// The same migration with a 1 GiB disk copy (--copy-storage) over each transport: a unix socket on one host (the
// floor), plaintext TCP, QEMU's TLS and the SSH tunnel, to a destination in a network namespace of this machine
// (test/helpers/hosts.ts). Needs root. Prints time and copy throughput per transport. Usage:
//   node --import tsx scripts/measure-transports.ts
import { Lab } from "../src/lab/lab.js";
import { qcow2Blockdev } from "../src/lab/topology.js";
import { migrate } from "../src/migrate/run.js";
import { connectSshMonitor, sshConnectionOf } from "../src/transport/monitor.js";
import { QmpClient } from "../src/qmp/client.js";
import type { QemuProcess } from "../src/lab/process.js";
import { TestHosts } from "../test/helpers/hosts.js";
import { makeCerts } from "../test/helpers/certs.js";
import path from "node:path";
import { cpSync, rmSync } from "node:fs";

const GiB = 1024 * 1024 * 1024;
const hosts = await TestHosts.create({ hosts: ["dst"] });
process.env.BITFERRY_SSH_COMMAND = hosts.sshCommand;
const lab = Lab.create();
const dst = hosts.host("dst");
const pki = `/tmp/pki-m${process.pid}`;
try {
  const certs = makeCerts(path.join(hosts.dir, "pki"), { ips: [dst.address], names: [] });
  await dst.exec(["cp", "-r", certs.serverDir, pki]);
  cpSync(certs.clientDir, pki, { recursive: true });
  const src = await lab.createImage("src.qcow2", GiB);
  await lab.qemuIo(src, `write -P 0x5a 0 ${GiB}`);
  const rows: string[] = [];
  for (const mode of ["unix", "plaintext", "tls", "ssh-tunnel"] as const) {
    const s = await lab.start({ label: `s-${mode}`, args: qcow2Blockdev({ nodeName: "disk0", file: src }) });
    await s.monitor.addBitmap("disk0", "backup", { granularity: 65536, persistent: true });
    let d: QemuProcess;
    let dmon: QmpClient;
    if (mode === "unix") {
      const di = await lab.createImage(`d-${mode}.qcow2`, GiB);
      d = await lab.start({
        label: `d-${mode}`,
        args: qcow2Blockdev({ nodeName: "disk0", file: di }),
        incoming: "defer",
        paused: true,
      });
      dmon = await QmpClient.connect(d.monitorSocket, { label: "dst" });
    } else {
      await dst.exec(["mkdir", "-p", "/tmp/m"]);
      await dst.qemuImg(["create", "-q", "-f", "qcow2", "/tmp/m/d.qcow2", String(GiB)]);
      d = await dst.startQemu({
        label: "dst",
        dir: "/tmp/m",
        args: qcow2Blockdev({ nodeName: "disk0", file: "/tmp/m/d.qcow2" }),
        incoming: "defer",
        paused: true,
      });
      dmon = await connectSshMonitor(dst.url(d.monitorSocket), { label: "dst", commandTimeoutMs: 120000 });
    }
    const smon = await QmpClient.connect(s.monitorSocket, { label: "src", commandTimeoutMs: 120000 });
    const t0 = Date.now();
    const r = await migrate({
      source: smon,
      destination: dmon,
      copyStorage: true,
      ...(mode === "unix" ? { uri: `unix:${lab.path("m.sock")}` } : {}),
      ...(mode === "plaintext" ? { uri: `tcp:${dst.address}:4500`, nbd: `tcp:${dst.address}:10900` } : {}),
      ...(mode === "tls"
        ? { uri: `tcp:${dst.address}:4501`, nbd: `tcp:${dst.address}:10901`, tlsCreds: pki }
        : {}),
    });
    const ms = Date.now() - t0;
    const bytes = r.storage?.disks.reduce((a, x) => a + x.copiedBytes, 0) ?? 0;
    rows.push(
      `${mode}\tok=${r.ok}\t${(ms / 1000).toFixed(2)} s\t${(bytes / 1e6 / (ms / 1000)).toFixed(0)} MB/s\t${r.error?.code ?? ""}`,
    );
    console.log(rows.at(-1));
    smon.close();
    dmon.close();
    await sshConnectionOf(dmon)?.close();
    await s.stop();
    await d.stop();
    if (mode !== "unix") await dst.exec(["rm", "-rf", "/tmp/m"]);
  }
  console.log(rows.join("\n"));
} finally {
  rmSync(pki, { recursive: true, force: true });
  await lab.cleanup();
  await hosts.cleanup();
}
