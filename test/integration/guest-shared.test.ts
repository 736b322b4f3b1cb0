import { it } from "node:test";
import assert from "node:assert/strict";
import * as G from "../../src/lab/guest-scenarios.js";
import { migrateWritingGuest } from "../helpers/guest.js";
import { withLab } from "../helpers/lab.js";
import { describeEachPair } from "../helpers/pairs.js";

describeEachPair("a writing Linux guest, shared storage", (qp) => {
  it("migrates two -blockdev disks; full backup + dirty blocks = destination disk; the guest runs on", async () => {
    await withLab(async (lab) => {
      const pair = await G.guestShared.setup(lab, { ...qp.options, paused: true });
      const run = await migrateWritingGuest(lab, pair);
      assert.equal(run.result.bitmaps.length, 3);
      // The 4 KiB bitmap marks the same writes in 16 granules each.
      const cbt = run.result.bitmaps.find((b) => b.target.bitmap === "cbt-0");
      assert.ok(cbt);
    });
  });

  it("migrates a -drive disk while a drive-mirror of it runs; the proof holds", async () => {
    await withLab(async (lab) => {
      const pair = await G.guestDriveMirror.setup(lab, { ...qp.options, paused: true });
      const jobs = await pair.source.monitor.blockJobs();
      assert.equal(jobs[0]?.type, "mirror");
      const run = await migrateWritingGuest(lab, pair);
      assert.equal(run.result.bitmaps.length, 1);
    });
  });
});
