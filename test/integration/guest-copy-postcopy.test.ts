import { it } from "node:test";
import assert from "node:assert/strict";
import * as G from "../../src/lab/guest-scenarios.js";
import { migrateWritingGuest } from "../helpers/guest.js";
import { withLab } from "../helpers/lab.js";
import { describeEachPair } from "../helpers/pairs.js";

describeEachPair("a writing Linux guest, --copy-storage and --postcopy", (qp) => {
  it("--copy-storage copies the disks while the guest writes; the proof holds on the copies", async () => {
    await withLab(async (lab) => {
      const pair = await G.guestCopyStorage.setup(lab, { ...qp.options, paused: true });
      const run = await migrateWritingGuest(lab, pair, { copyStorage: true });
      for (const d of run.result.storage?.disks ?? []) assert.ok(d.complete, JSON.stringify(d));
      assert.equal(run.result.storage?.disks.length, 2);
    });
  });

  it("--postcopy with bitmaps on one disk; the proof holds", async () => {
    await withLab(async (lab) => {
      const pair = await G.guestSingle.setup(lab, { ...qp.options, paused: true });
      const run = await migrateWritingGuest(lab, pair, { postcopy: true });
      // A guest this small usually completes in precopy before QEMU would switch (reference: real-guest.md).
      assert.equal(typeof run.result.migration.postcopy, "boolean");
      assert.equal(run.result.plan.ok, true);
    });
  });
});
