import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { deleteExport } from "../../src/migrate/storage.js";
import { nullBlockdev } from "../../src/lab/topology.js";
import type { Lab } from "../../src/lab/lab.js";
import type { QemuProcess } from "../../src/lab/process.js";
import type { QemuBuild } from "../../src/lab/build.js";
import { discoverBuilds } from "../../src/lab/builds.js";
import { withLab } from "../helpers/lab.js";

/** The ids of the exports QEMU has, once it has finished removing the ones it was asked to (removal is async). */
async function exportIds(q: QemuProcess, gone: string): Promise<string[]> {
  for (let i = 0; ; i++) {
    const ids = ((await q.qmp.execute("query-block-exports")) as { id: string }[]).map((e) => e.id);
    if (!ids.includes(gone) || i >= 100) return ids;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A destination exporting node t0 over NBD, and a source attached to it as node c0 (as --copy-storage does). */
async function exported(lab: Lab, build: QemuBuild): Promise<{ dst: QemuProcess; src: QemuProcess }> {
  const dst = await lab.start({ label: "dst", build, args: nullBlockdev("t0", 64 * 1024 ** 2) });
  const src = await lab.start({ label: "src", build, args: [] });
  const sock = lab.path("nbd.sock");
  await dst.monitor.run("nbd-server-start", { addr: { type: "unix", data: { path: sock } } });
  await dst.monitor.run("block-export-add", {
    type: "nbd",
    id: "e0",
    "node-name": "t0",
    name: "t0",
    writable: true,
  });
  await src.monitor.run("blockdev-add", {
    driver: "nbd",
    "node-name": "c0",
    server: { type: "unix", path: sock },
    export: "t0",
  });
  return { dst, src };
}

for (const build of discoverBuilds()) {
  describe(`the export's clean (--copy-storage) against real QEMU [${build.label}]`, () => {
    it("removes the export right after the source's NBD node goes, before QEMU may have seen it go", async () => {
      await withLab(async (lab) => {
        const { dst, src } = await exported(lab, build);
        // The source's NBD node is cleaned first (newest step first), and the export's clean follows at once.
        await src.monitor.run("blockdev-del", { "node-name": "c0" });
        await deleteExport(dst.monitor, "e0");
        assert.deepEqual(await exportIds(dst, "e0"), []);
      });
    });

    it("an export whose client stays connected: QEMU refuses, and the clean disconnects it and removes the export", async () => {
      await withLab(async (lab) => {
        const { dst } = await exported(lab, build);
        // QEMU's own answer while a client is connected, which the clean waits out before it forces the removal.
        await assert.rejects(dst.monitor.run("block-export-del", { id: "e0" }), /export 'e0' still in use/);
        await deleteExport(dst.monitor, "e0");
        assert.deepEqual(await exportIds(dst, "e0"), []);
      });
    });
  });
}
