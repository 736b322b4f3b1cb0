/**
 * The same migration with a disk copy (`copyStorage`, the disk full of data, one bitmap) over each transport: a
 * unix socket on one host (the floor), plaintext TCP, QEMU's TLS and the SSH tunnel, to a destination in a network
 * namespace of this machine (test/helpers/hosts.ts: a veth pair, no real network, so what is measured is what each
 * transport costs the CPUs). Transports alternate run by run so drift on the machine lands on all of them, and
 * every run has fresh QEMUs. Needs root (namespaces, sshd); otherwise the section says it was skipped.
 */
import { cpSync, rmSync } from "node:fs";
import path from "node:path";
import type { Lab } from "../src/lab/lab.js";
import type { QemuProcess } from "../src/lab/process.js";
import { qcow2Blockdev } from "../src/lab/topology.js";
import { migrate } from "../src/migrate/run.js";
import type { MigrateResult } from "../src/migrate/types.js";
import { QmpClient } from "../src/qmp/client.js";
import { connectSshMonitor, sshConnectionOf } from "../src/transport/monitor.js";
import { makeCerts } from "../test/helpers/certs.js";
import { TestHosts, type TestHost } from "../test/helpers/hosts.js";
import { RunFailed, type RunFailure } from "./lib/failures.js";
import { summarize, type Summary } from "./lib/stats.js";

export const TRANSPORTS = ["unix", "plaintext", "tls", "ssh-tunnel"] as const;
export type TransportName = (typeof TRANSPORTS)[number];

export interface TransportRow {
  transport: TransportName;
  /** Wall time of `migrate()` (setup, disk copy, RAM, verification), ms, over the runs that succeeded. */
  ms: Summary;
  /** Bytes the disk copy moved ÷ wall time, MB/s (10^6), per run. */
  mbPerS: Summary;
  /** Runs that failed (kept in results.failures). */
  failed: number;
  /** Every successful run's bitmaps verified strictly (the destination started with -S). */
  verifiedStrict: boolean;
}

export interface TransportsResult {
  status: "measured" | "skipped";
  /** Why it was skipped. */
  reason?: string;
  diskBytes: number;
  rounds: number;
  rows: TransportRow[];
}

export interface TransportsOptions {
  rounds: number;
  diskBytes: number;
  log: (s: string) => void;
  failures: RunFailure[];
}

const TIMEOUT_MS = 300_000;

interface RunSample {
  ms: number;
  copiedBytes: number;
}

async function oneRun(
  lab: Lab,
  dst: TestHost,
  pki: string,
  src: string,
  mode: TransportName,
  i: number,
  size: number,
): Promise<RunSample> {
  const remoteDir = `/tmp/bf-bt-${process.pid}-${i}`;
  const localImage = `d-${mode}-${i}.qcow2`;
  let s: QemuProcess | undefined;
  let d: QemuProcess | undefined;
  let smon: QmpClient | undefined;
  let dmon: QmpClient | undefined;
  try {
    s = await lab.start({ label: `s-${mode}-${i}`, args: qcow2Blockdev({ nodeName: "disk0", file: src }) });
    // A name per run: a failed run resumes the source, which then stores its persistent bitmap in the image.
    await s.monitor.addBitmap("disk0", `backup${i}`, { granularity: 65536, persistent: true });
    if (mode === "unix") {
      const di = await lab.createImage(localImage, size);
      d = await lab.start({
        label: `d-${mode}-${i}`,
        args: qcow2Blockdev({ nodeName: "disk0", file: di }),
        incoming: "defer",
        paused: true,
      });
      dmon = await QmpClient.connect(d.monitorSocket, { label: "dst", commandTimeoutMs: TIMEOUT_MS });
    } else {
      await dst.exec(["mkdir", "-p", remoteDir]);
      const image = `${remoteDir}/d.qcow2`;
      await dst.qemuImg(["create", "-q", "-f", "qcow2", image, String(size)]);
      d = await dst.startQemu({
        label: `dst-${i}`,
        dir: remoteDir,
        args: qcow2Blockdev({ nodeName: "disk0", file: image }),
        incoming: "defer",
        paused: true,
      });
      dmon = await connectSshMonitor(dst.url(d.monitorSocket), {
        label: "dst",
        commandTimeoutMs: TIMEOUT_MS,
      });
    }
    smon = await QmpClient.connect(s.monitorSocket, { label: "src", commandTimeoutMs: TIMEOUT_MS });
    // Fresh ports per run: nothing waits on a socket a previous run's QEMU left in TIME_WAIT.
    const port = 4500 + i;
    const t0 = performance.now();
    const r: MigrateResult = await migrate({
      source: smon,
      destination: dmon,
      copyStorage: true,
      ...(mode === "unix" ? { uri: `unix:${lab.path(`m${i}.sock`)}` } : {}),
      ...(mode === "plaintext"
        ? { uri: `tcp:${dst.address}:${port}`, nbd: `tcp:${dst.address}:${port + 6000}` }
        : {}),
      ...(mode === "tls"
        ? { uri: `tcp:${dst.address}:${port}`, nbd: `tcp:${dst.address}:${port + 6000}`, tlsCreds: pki }
        : {}),
    });
    const ms = performance.now() - t0;
    if (!r.ok)
      throw new RunFailed(r.error?.code ?? "FAILED", r.error?.message ?? "migrate() returned ok: false");
    const weak = r.bitmaps.filter((b) => b.verified !== "strict");
    if (r.bitmaps.length === 0 || weak.length > 0) {
      throw new RunFailed(
        "VERIFY",
        r.bitmaps.length === 0
          ? "no bitmap verified"
          : `not verified strictly: ${weak.map((b) => `${b.source.node}/${b.source.bitmap} (${b.verified})`).join(", ")}`,
      );
    }
    const copiedBytes = r.storage?.disks.reduce((a, x) => a + x.copiedBytes, 0) ?? 0;
    if (copiedBytes < size) throw new RunFailed("VERIFY", `disk copy moved ${copiedBytes} of ${size} bytes`);
    return { ms, copiedBytes };
  } finally {
    smon?.close();
    dmon?.close();
    if (dmon) await sshConnectionOf(dmon)?.close();
    await s?.stop();
    await d?.stop();
    if (mode === "unix") rmSync(lab.path(localImage), { force: true });
    else await dst.exec(["rm", "-rf", remoteDir]).catch(() => undefined);
  }
}

export async function benchTransports(lab: Lab, options: TransportsOptions): Promise<TransportsResult> {
  const { rounds, diskBytes, log } = options;
  const skipped = (reason: string): TransportsResult => {
    log(`transports: skipped: ${reason}`);
    return { status: "skipped", reason, diskBytes, rounds, rows: [] };
  };
  if (process.getuid?.() !== 0)
    return skipped("needs root (network namespaces and sshd for the second host)");
  let hosts: TestHosts;
  try {
    hosts = await TestHosts.create({ hosts: ["dst"] });
  } catch (err) {
    return skipped(`no namespace host: ${err instanceof Error ? err.message : String(err)}`);
  }
  const previousSsh = process.env.BITFERRY_SSH_COMMAND;
  process.env.BITFERRY_SSH_COMMAND = hosts.sshCommand;
  const pki = `/tmp/bf-bt-pki-${process.pid}`;
  const samples = new Map<TransportName, RunSample[]>(TRANSPORTS.map((t) => [t, []]));
  const failed = new Map<TransportName, number>(TRANSPORTS.map((t) => [t, 0]));
  try {
    const dst = hosts.host("dst");
    // The same path on both hosts (each has its own /tmp): the server's credentials there, the client's here.
    const certs = makeCerts(path.join(hosts.dir, "pki"), { ips: [dst.address], names: [] });
    await dst.exec(["cp", "-r", certs.serverDir, pki]);
    cpSync(certs.clientDir, pki, { recursive: true });
    const src = await lab.createImage("bt-src.qcow2", diskBytes);
    await lab.qemuIo(src, `write -P 0x5a 0 ${diskBytes}`);
    let i = 0;
    for (let round = 0; round < rounds; round++) {
      for (const mode of TRANSPORTS) {
        i++;
        try {
          const r = await oneRun(lab, dst, pki, src, mode, i, diskBytes);
          samples.get(mode)!.push(r);
          log(
            `transports: ${mode} round ${round + 1}: ${(r.ms / 1000).toFixed(2)} s, ${(r.copiedBytes / 1e6 / (r.ms / 1000)).toFixed(0)} MB/s`,
          );
        } catch (err) {
          if (!(err instanceof RunFailed)) throw err;
          failed.set(mode, failed.get(mode)! + 1);
          const what = `${mode}, round ${round + 1}`;
          options.failures.push({ section: "transports", what, code: err.code, message: err.message });
          log(`transports: ${what} FAILED: ${err.message}`);
        }
      }
    }
    rmSync(src, { force: true });
  } finally {
    rmSync(pki, { recursive: true, force: true });
    await hosts
      .host("dst")
      .exec(["rm", "-rf", pki])
      .catch(() => undefined);
    await hosts.cleanup();
    if (previousSsh === undefined) delete process.env.BITFERRY_SSH_COMMAND;
    else process.env.BITFERRY_SSH_COMMAND = previousSsh;
  }
  const rows = TRANSPORTS.map((transport): TransportRow => {
    const runs = samples.get(transport)!;
    return {
      transport,
      ms: summarize(runs.map((r) => r.ms)),
      mbPerS: summarize(runs.map((r) => r.copiedBytes / 1e6 / (r.ms / 1000))),
      failed: failed.get(transport)!,
      // Only successful runs land in samples, and each of those checked every bitmap was strict.
      verifiedStrict: runs.length > 0 && failed.get(transport) === 0,
    };
  });
  return { status: "measured", diskBytes, rounds, rows };
}
