import { it } from "node:test";
import assert from "node:assert/strict";

import { planMigration } from "../../src/migrate/plan.js";
import * as S from "../../src/lab/scenarios.js";
import { bitmapStates } from "../helpers/bitmaps.js";
import { withLab } from "../helpers/lab.js";
import { runMigration } from "../helpers/migrate.js";
import { describeEachPair } from "../helpers/pairs.js";

describeEachPair("bitmap payloads above QEMU's precopy threshold (four 64 GiB nodes, no guest RAM)", (qp) => {
  it("plan warns; migrate without --max-downtime stops cleanly with the numbers", async () => {
    await withLab(async (lab) => {
      const pair = await S.largeBitmaps.setup(lab, { ...qp.options, paused: true });
      const before = await bitmapStates(pair.source);
      const { plan } = await planMigration(pair.source.monitor, pair.destination.monitor);
      assert.ok(plan.ok);
      assert.equal(plan.payloadBytes, 12 * ((64 * 1024 ** 3) / 65536 / 8));
      const w = plan.warnings.find((x) => x.code === "PRECOPY_MAY_NOT_CONVERGE");
      assert.ok(w, "plan predicted it");
      assert.match(w.message, /1572864 bytes/);

      const r = await runMigration(lab, pair);
      assert.equal(r.error?.code, "NOT_CONVERGING");
      assert.match(r.error.message, /1572864 bytes.*Mbit\/s.*--max-downtime \d+/);
      assert.doesNotMatch(r.error.message, /--postcopy/, "postcopy is not offered for bitmaps on four nodes");
      assert.equal(r.migration.postcopy, false);
      assert.equal((await pair.source.monitor.status()).status, "running");
      const after = await bitmapStates(pair.source);
      for (const [k, b] of before) {
        assert.equal(after.get(k)?.sha256, b.sha256);
        assert.equal(after.get(k)?.busy, false);
      }
      assert.equal((await pair.source.monitor.migrationParameters())["downtime-limit"], 300);
    });
  });

  it("with --max-downtime large enough it completes, every bitmap verified, downtime-limit restored", async () => {
    await withLab(async (lab) => {
      const pair = await S.largeBitmaps.setup(lab, { ...qp.options, paused: true });
      const r = await runMigration(lab, pair, { maxDowntimeMs: 120_000 });
      assert.equal(r.ok, true, JSON.stringify(r.error));
      assert.equal(r.bitmaps.length, 12);
      for (const b of r.bitmaps) assert.equal(b.verified, "strict");
      assert.ok(r.migration.downtimeLimitRaisedMs !== undefined && r.migration.downtimeLimitRaisedMs > 300);
      assert.equal((await pair.source.monitor.migrationParameters())["downtime-limit"], 300, "restored");
    });
  });

  it("bitmaps on a single node complete through postcopy, verified against a paused destination", async () => {
    await withLab(async (lab) => {
      const pair = await S.largeSingleNode.setup(lab, { ...qp.options, paused: true });
      const { plan } = await planMigration(pair.source.monitor, pair.destination.monitor, { postcopy: true });
      assert.ok(plan.ok);
      assert.ok(
        !plan.warnings.some((w) => w.code === "PRECOPY_MAY_NOT_CONVERGE"),
        "postcopy takes the bitmaps out of the threshold",
      );
      const r = await runMigration(lab, pair, { postcopy: true, resume: true });
      assert.equal(r.ok, true, JSON.stringify(r.error));
      assert.equal(r.migration.postcopy, true);
      assert.equal(r.bitmaps.length, 3);
      for (const b of r.bitmaps) assert.equal(b.verified, "strict");
      assert.equal(r.destination.runState, "running");
    });
  });
});
