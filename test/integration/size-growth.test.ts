import { it } from "node:test";
import assert from "node:assert/strict";
import { writeRange } from "../../src/lab/actions.js";
import { qcow2Blockdev } from "../../src/lab/topology.js";
import type { Lab } from "../../src/lab/lab.js";
import { validatePolicy } from "../../src/policy/file.js";
import { withLab } from "../helpers/lab.js";
import { runMigration } from "../helpers/migrate.js";
import { describeEachPair, type BuildPairCase } from "../helpers/pairs.js";
import type { ScenarioPair } from "../../src/lab/scenarios.js";

const MiB = 1024 * 1024;

/**
 * Found by random setups: a bitmap on the file node of a writable qcow2 was planned OK, and the migration failed
 * verification with both sides stopped, because the image file grew at the switchover (here: the source stores its
 * skipped persistent bitmap 'keep' into the image as it hands the disk over).
 */
async function setup(lab: Lab, qp: BuildPairCase): Promise<ScenarioPair> {
  const img = await lab.createImage("a.qcow2", 64 * MiB);
  const args = qcow2Blockdev({ nodeName: "disk0", file: img, fileNodeName: "f0" });
  const source = await lab.start({
    label: "src",
    args: [...args, ...(qp.options.sourceArgs ?? [])],
    build: qp.source,
  });
  await source.monitor.addBitmap("f0", "onfile", { granularity: 65536 });
  await source.monitor.addBitmap("disk0", "keep", { granularity: 65536, persistent: true });
  await source.monitor.addBitmap("disk0", "bm", { granularity: 65536 });
  await writeRange(source.monitor, "disk0", 0, MiB);
  // Started after the writes, so both file nodes have the same size when the plan is made.
  const destination = await lab.start({
    label: "dst",
    args,
    incoming: "defer",
    paused: true,
    build: qp.destination,
  });
  return { source, destination };
}

describeEachPair("a bitmap on a file node that grows during the migration", (qp) => {
  it("is refused by the plan (SOURCE_NODE_GROWS, with the fix); both sides untouched", async () => {
    await withLab(async (lab) => {
      const pair = await setup(lab, qp);
      const r = await runMigration(lab, pair, { policy: validatePolicy({ deny: ["keep"] }, "test") });
      assert.equal(r.ok, false);
      assert.equal(r.phase, "planned");
      assert.deepEqual(
        r.plan.errors.map((e) => [e.code, e.node, e.bitmap]),
        [["SOURCE_NODE_GROWS", "f0", "onfile"]],
      );
      const message = r.plan.errors[0]?.message ?? "";
      assert.match(message, /deny: \[onfile\]/);
      assert.match(message, /format node 'disk0'/);
      assert.equal((await pair.source.monitor.status()).status, "running");
      assert.equal((await pair.destination.monitor.status()).status, "inmigrate");
    });
  });

  it("the fix the message gives (deny it) migrates and verifies; a format-node bitmap is not refused", async () => {
    await withLab(async (lab) => {
      const pair = await setup(lab, qp);
      const r = await runMigration(lab, pair, {
        policy: validatePolicy({ deny: ["keep", "onfile"] }, "test"),
      });
      assert.equal(r.ok, true, JSON.stringify(r.error));
      assert.deepEqual(r.plan.errors, []);
      assert.equal(r.phase, "verified");
      assert.deepEqual(
        r.bitmaps.map((b) => [b.target.node, b.target.bitmap, b.verified]),
        [["disk0", "bm", "strict"]],
      );
    });
  });
});
