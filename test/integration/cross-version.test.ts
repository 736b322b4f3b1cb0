import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { migrate } from "../../src/migrate/run.js";
import { planMigration } from "../../src/migrate/plan.js";
import * as S from "../../src/lab/scenarios.js";
import { labelVersion, QEMU10_MISSING_HINT } from "../../src/lab/builds.js";
import { bitmapStates } from "../helpers/bitmaps.js";
import { withLab } from "../helpers/lab.js";
import { buildPairCases } from "../helpers/pairs.js";

const major = (label: string): number => labelVersion(label)?.[0] ?? 0;
/** A 10.0 source and an older destination: reference R28. */
const r28 = buildPairCases.find((c) => major(c.source.label) >= 10 && major(c.destination.label) < 10);

describe("a 10.0 source and a 7.2 destination without -global migration.send-switchover-start=off (R28)", () => {
  it("plan warns, and migrate reports the destination's failure instead of success, with the source resumed", async (t) => {
    if (!r28) {
      assert.ok(!process.env.CI, `CI must run the cross-version pairs: ${QEMU10_MISSING_HINT}`);
      t.diagnostic(QEMU10_MISSING_HINT);
      return;
    }
    await withLab(async (lab) => {
      const pair = await S.blockdevSame.setup(lab, {
        sourceBuild: r28.source,
        destinationBuild: r28.destination,
        paused: true,
      });
      const before = await bitmapStates(pair.source);
      const { plan } = await planMigration(pair.source.monitor, pair.destination.monitor);
      assert.ok(
        plan.warnings.some((w) => w.code === "SWITCHOVER_START_MISMATCH"),
        JSON.stringify(plan.warnings),
      );
      const r = await migrate({
        source: pair.source.monitor,
        destination: pair.destination.monitor,
        uri: `unix:${lab.path("m.sock")}`,
      });
      assert.equal(r.ok, false, "a migration whose destination died must not report success");
      assert.ok(
        ["DESTINATION_LOST", "MIGRATION_FAILED"].includes(r.error?.code ?? ""),
        JSON.stringify(r.error),
      );
      assert.match(pair.destination.stderr, /MIG_CMD 0xb unknown|load of migration failed/);
      assert.equal((await pair.source.monitor.status()).status, "running", "the source runs the VM again");
      const after = await bitmapStates(pair.source);
      for (const [k, b] of before) {
        assert.equal(after.get(k)?.sha256, b.sha256, k);
        assert.equal(after.get(k)?.busy, false, k);
      }
    });
  });
});
