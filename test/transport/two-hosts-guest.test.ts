import { describe, it } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { Lab } from "../../src/lab/lab.js";
import * as G from "../../src/lab/guest-scenarios.js";
import { migrate } from "../../src/migrate/run.js";
import { QemuMonitor } from "../../src/qemu/monitor.js";
import { connectSshMonitor, sshConnectionOf } from "../../src/transport/monitor.js";
import { TestHosts } from "../helpers/hosts.js";

/**
 * A real Linux guest writing to its disks while it migrates to another host through the SSH tunnel, disks copied
 * (`--copy-storage`). The destination QEMU runs inside the namespace host and is reached only through
 * `ssh://`; its files live on /run (not its private /tmp) so that the backup proof, run here, can read its disk.
 */
describe("two hosts: a writing Linux guest through the SSH tunnel", () => {
  it("--copy-storage through SSH: strictly verified, full backup + dirty blocks = destination disk, the guest runs on", async () => {
    const hosts = await TestHosts.create({ hosts: ["dst"] });
    const saved = process.env.BITFERRY_SSH_COMMAND;
    process.env.BITFERRY_SSH_COMMAND = hosts.sshCommand;
    const lab = Lab.create({ prefix: path.relative("/tmp", path.join(hosts.dir, "lab-")) });
    try {
      const dst = hosts.host("dst");
      const pair = await G.guestCopyStorage.setup(lab, { paused: true, destinationBuild: dst.build() });
      const destination = new QemuMonitor(
        await connectSshMonitor(dst.url(pair.destination.monitorSocket), {
          label: "destination",
          commandTimeoutMs: 60_000,
        }),
      );
      const result = await migrate({ source: pair.source.monitor, destination, copyStorage: true });
      assert.equal(result.ok, true, JSON.stringify(result.error));
      assert.equal(result.migration.transport, "ssh-tunnel");
      for (const b of result.bitmaps)
        assert.equal(b.verified, "strict", `${b.target.bitmap}: ${b.reason ?? ""}`);
      destination.qmp.close();
      await sshConnectionOf(destination.qmp)?.close();
      const proofs = await G.proveGuestBackup(lab, pair);
      assert.equal(proofs.length, pair.disks.length);
      for (const p of proofs) {
        assert.ok(p.guestBlocks > 0, `${p.node}: the guest wrote nothing`);
        assert.equal(p.unmarkedBlocks, 0, `${p.node}: blocks the guest wrote are not in the bitmap`);
        assert.equal(p.restoredSha256, p.destinationSha256, `${p.node}: full backup + dirty blocks != disk`);
      }
      const { sourceRound, destinationRound } = await G.continueOnDestination(pair);
      assert.ok(
        destinationRound >= sourceRound,
        `destination round ${destinationRound} < source ${sourceRound}`,
      );
    } finally {
      if (saved === undefined) delete process.env.BITFERRY_SSH_COMMAND;
      else process.env.BITFERRY_SSH_COMMAND = saved;
      await lab.cleanup();
      await hosts.cleanup();
    }
  });
});
