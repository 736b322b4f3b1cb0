import { it } from "node:test";
import assert from "node:assert/strict";
import type { MigrateOptions, MigrateResult } from "../../src/migrate/run.js";
import type { Lab } from "../../src/lab/lab.js";
import type { QemuProcess } from "../../src/lab/process.js";
import * as S from "../../src/lab/scenarios.js";
import { validatePolicy } from "../../src/policy/file.js";
import { bitmapStates, storedBitmaps, type BitmapState } from "../helpers/bitmaps.js";
import { withLab } from "../helpers/lab.js";
import { interruptAt, onceAt, runMigration } from "../helpers/migrate.js";
import { describeEachPair } from "../helpers/pairs.js";

const POLICY = validatePolicy({ map: [{ source: "disk0", target: "vda" }] }, "test");

/** No export, NBD client node, job or temporary bitmap of bitferry's is left on a side. */
async function assertNoLeftovers(proc: QemuProcess, before?: Map<string, BitmapState>): Promise<void> {
  const nodes = await proc.monitor.namedBlockNodes();
  assert.deepEqual(
    nodes.filter((n) => n.drv === "nbd" || n["node-name"].startsWith("bf-")).map((n) => n["node-name"]),
    [],
    "NBD client nodes left",
  );
  assert.deepEqual(await proc.monitor.blockJobs(), [], "block jobs left");
  assert.deepEqual(await proc.qmp.execute("query-block-exports"), [], "exports left");
  const bitmaps = await bitmapStates(proc);
  assert.deepEqual(
    [...bitmaps.keys()].filter((k) => k.includes("bitferry")),
    [],
    "temporary bitmaps left",
  );
  if (before) {
    assert.deepEqual([...bitmaps.keys()].sort(), [...before.keys()].sort());
    for (const [k, b] of before) {
      assert.equal(bitmaps.get(k)?.sha256, b.sha256, `${k} content`);
      assert.equal(bitmaps.get(k)?.busy, false, `${k} busy`);
    }
  }
}

const run = (lab: Lab, pair: S.ScenarioPair, extra: Partial<MigrateOptions> = {}): Promise<MigrateResult> =>
  runMigration(lab, pair, { policy: POLICY, copyStorage: true, ...extra });

describeEachPair("bitferry migrate --copy-storage", (qp) => {
  it("copies two disks, merges a backing chain's bitmaps, verifies every bitmap, leaves nothing behind", async () => {
    await withLab(async (lab) => {
      const pair = await S.copyStorage.setup(lab, { ...qp.options, paused: true });
      const r = await run(lab, pair);
      assert.equal(r.ok, true, JSON.stringify(r.error));
      assert.equal(r.bitmaps.length, 4);
      for (const b of r.bitmaps) assert.equal(b.verified, "strict", `${b.target.bitmap}: ${b.reason ?? ""}`);
      const daily = r.bitmaps.find((b) => b.target.bitmap === "daily");
      assert.deepEqual(daily?.mergedFrom, [
        { node: "disk0", bitmap: "daily" },
        { node: "base0", bitmap: "daily" },
      ]);
      const copies = r.storage?.disks ?? [];
      assert.equal(copies.length, 2);
      for (const d of copies) {
        assert.ok(d.complete, JSON.stringify(d));
        assert.equal(d.copiedBytes, d.totalBytes);
      }
      await assertNoLeftovers(pair.source);
      await assertNoLeftovers(pair.destination);
      // The merged bitmap holds what was dirty in either layer: the backing image's writes and the overlay's.
      const dst = await bitmapStates(pair.destination);
      assert.equal(dst.get("vda/daily")?.count, (1024 + 512 + 1024 + 3072) * 1024);
      assert.equal(dst.get("vda/archive")?.count, (1024 + 512) * 1024);
      assert.equal(dst.get("vda/daily")?.persistent, true);
      // Shut both down cleanly: the copies equal their sources, and the destination stores the persistent bitmaps.
      await pair.source.stop();
      await pair.destination.qmp.execute("cont");
      await pair.destination.stop();
      assert.match(
        await lab.qemuImg(["compare", lab.path("top.qcow2"), lab.path("dst-a.qcow2")]),
        /identical/,
      );
      assert.match(
        await lab.qemuImg(["compare", lab.path("sys.qcow2"), lab.path("dst-sys.qcow2")]),
        /identical/,
      );
      assert.deepEqual((await storedBitmaps(lab, lab.path("dst-a.qcow2"))).map((b) => b.name).sort(), [
        "archive",
        "daily",
      ]);
      assert.deepEqual(
        (await storedBitmaps(lab, lab.path("dst-sys.qcow2"))).map((b) => b.name),
        ["backup"],
      );
    });
  });

  it("the destination dies during the copy: the source keeps its disks, bitmaps and chain, nothing left behind", async () => {
    await withLab(async (lab) => {
      const pair = await S.copyStorage.setup(lab, qp.options);
      const before = await bitmapStates(pair.source);
      const r = await run(lab, pair, {
        onProgress: onceAt(
          (e) => e.phase === "copy" && e.copiedBytes !== undefined && e.message === undefined,
          () => {
            pair.destination.kill("SIGKILL");
          },
        ),
      });
      assert.equal(r.ok, false);
      assert.ok(["COPY_FAILED", "DESTINATION_LOST"].includes(r.error?.code ?? ""), JSON.stringify(r.error));
      assert.equal((await pair.source.monitor.status()).status, "running");
      await assertNoLeftovers(pair.source, before);
    });
  });

  it("a destination whose NBD server is taken: COPY_FAILED before anything moves, and its server is left alone", async () => {
    await withLab(async (lab) => {
      const pair = await S.copyStorage.setup(lab, qp.options);
      const before = await bitmapStates(pair.source);
      await pair.destination.monitor.run("nbd-server-start", {
        addr: { type: "unix", data: { path: lab.path("users.sock") } },
      });
      const r = await run(lab, pair);
      assert.equal(r.error?.code, "COPY_FAILED");
      assert.match(r.error.message, /NBD server/);
      await assertNoLeftovers(pair.source, before);
      // The user's server still runs: starting another one is refused.
      await assert.rejects(
        pair.destination.monitor.run("nbd-server-start", {
          addr: { type: "unix", data: { path: lab.path("x.sock") } },
        }),
      );
    });
  });

  it("interrupted at the switchover: cancelled, mirrors and exports removed on both sides, source intact", async () => {
    await withLab(async (lab) => {
      const pair = await S.copyStorage.setup(lab, { ...qp.options, paused: true });
      const before = await bitmapStates(pair.source);
      const r = await run(
        lab,
        pair,
        interruptAt((e) => e.status === "pre-switchover"),
      );
      assert.equal(r.error?.code, "INTERRUPTED", JSON.stringify(r.error));
      assert.equal((await pair.source.monitor.status()).status, "running");
      await assertNoLeftovers(pair.source, before);
      if (pair.destination.alive) {
        assert.deepEqual(await pair.destination.qmp.execute("query-block-exports"), []);
      }
      // The source's persistent bitmaps are stored cleanly at shutdown.
      await pair.source.stop();
      const stored = await storedBitmaps(lab, lab.path("top.qcow2"));
      assert.deepEqual(
        stored.map((b) => [b.name, b.flags.includes("in-use")]),
        [["daily", false]],
      );
      const base = await storedBitmaps(lab, lab.path("base.qcow2"));
      assert.deepEqual(
        base.map((b) => b.name).sort(),
        ["archive", "daily"],
        "the backing chain is unchanged",
      );
    });
  });
});
