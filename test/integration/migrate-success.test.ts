import { it } from "node:test";
import assert from "node:assert/strict";
import type { MigrateOptions, MigrateResult } from "../../src/migrate/run.js";
import type { Lab } from "../../src/lab/lab.js";
import * as S from "../../src/lab/scenarios.js";
import { validatePolicy } from "../../src/policy/file.js";
import { bitmapStates } from "../helpers/bitmaps.js";
import { withLab } from "../helpers/lab.js";
import { runMigration } from "../helpers/migrate.js";
import { describeEachPair } from "../helpers/pairs.js";
import { runCli } from "../helpers/cli.js";

/** Every migrating bitmap of the plan is on the destination with the planned name, persistence, state and content. */
async function assertArrived(
  pair: S.ScenarioPair,
  r: MigrateResult,
  sourceBefore: Map<string, { sha256: string }>,
): Promise<void> {
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.equal(r.phase, "verified");
  const dst = await bitmapStates(pair.destination);
  const migrating = r.plan.bitmaps.filter((b) => b.action === "migrate");
  assert.equal(r.bitmaps.length, migrating.length);
  for (const b of migrating) {
    const t = b.target;
    assert.ok(t);
    const got = dst.get(`${t.node}/${t.bitmap}`);
    assert.ok(got, `${t.node}/${t.bitmap} missing on the destination`);
    assert.equal(got.persistent, t.persistent, `${t.bitmap} persistence`);
    assert.equal(got.recording, t.enabled, `${t.bitmap} enabled state`);
    assert.equal(got.granularity, b.source.granularity);
    assert.equal(got.busy, false);
    assert.equal(
      got.sha256,
      sourceBefore.get(`${b.source.node}/${b.source.bitmap}`)?.sha256,
      `${t.bitmap} content`,
    );
  }
  for (const v of r.bitmaps) assert.equal(v.verified, "strict", `${v.target.bitmap}: ${v.reason ?? ""}`);
}

/** Migrates with a policy given as the file's data. */
const run = (
  lab: Lab,
  pair: S.ScenarioPair,
  policy: unknown = {},
  extra: Partial<MigrateOptions> = {},
): Promise<MigrateResult> => runMigration(lab, pair, { policy: validatePolicy(policy, "test"), ...extra });

describeEachPair("bitferry migrate: successful migrations, strictly verified", (qp) => {
  it("-drive under a running drive-mirror", async () => {
    await withLab(async (lab) => {
      const pair = await S.driveMirror.setup(lab, { ...qp.options, paused: true });
      const before = await bitmapStates(pair.source);
      const r = await run(lab, pair, { deny: ["onfile"] });
      await assertArrived(pair, r, before);
      assert.deepEqual(
        r.bitmaps.map((b) => b.target.drive),
        ["drive0", "drive0"],
      );
      assert.equal(r.source.runState, "postmigrate");
      assert.equal(r.destination.runState, "paused");
    });
  });

  it("different node-names with a map; rename, persistence and enabled overrides", async () => {
    await withLab(async (lab) => {
      const pair = await S.blockdevRenamed.setup(lab, { ...qp.options, paused: true });
      const before = await bitmapStates(pair.source);
      const r = await run(lab, pair, {
        map: [
          {
            source: { node: "disk0", bitmap: "old" },
            target: { node: "vda", bitmap: "renamed", persistent: true, enabled: false },
          },
          { source: { node: "disk0", bitmap: "backup-0" }, target: { node: "vda", persistent: false } },
          { source: "disk0", target: "vda" },
          { source: "disk1", target: "vdb" },
        ],
      });
      await assertArrived(pair, r, before);
      const dst = await bitmapStates(pair.destination);
      assert.equal(dst.get("vda/renamed")?.persistent, true);
      assert.equal(dst.get("vda/renamed")?.recording, false);
      assert.equal(dst.get("vda/backup-0")?.persistent, false);
      assert.equal(dst.has("vda/old"), false);
    });
  });

  it("several disks with several bitmaps each, through the CLI, with --resume", async () => {
    await withLab(async (lab) => {
      const pair = await S.blockdevSame.setup(lab, { ...qp.options, paused: true });
      const before = await bitmapStates(pair.source);
      const r = await runCli([
        "migrate",
        "--source",
        pair.source.monitorSocket,
        "--dest",
        pair.destination.monitorSocket,
        "--uri",
        `unix:${lab.path("m.sock")}`,
        "--resume",
        "--json",
      ]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const result = r.json() as MigrateResult;
      assert.equal(result.bitmaps.length, 5);
      assert.equal(result.destination.runState, "running");
      const dst = await bitmapStates(pair.destination);
      for (const v of result.bitmaps) {
        assert.equal(v.verified, "strict");
        assert.equal(v.sourceSha256, before.get(`${v.source.node}/${v.source.bitmap}`)?.sha256);
        assert.equal(v.targetSha256, v.sourceSha256);
        assert.equal(dst.get(`${v.target.node}/${v.target.bitmap}`)?.count, v.source.dirtyBytes);
      }
      assert.equal(result.migration.status, "completed");
      assert.ok(result.migration.totalTimeMs !== null && result.migration.downtimeMs !== null);
      assert.match(r.stderr, /verifying 5 bitmap\(s\)/, "progress goes to stderr");
      // bitferry put the capabilities back as they were.
      const caps = await pair.source.monitor.migrationCapabilities();
      assert.equal(caps.get("dirty-bitmaps"), false);
      assert.equal(caps.get("pause-before-switchover"), false);
    });
  });

  it("many bitmaps hashed at once: no Node warning reaches the user's terminal", async () => {
    await withLab(async (lab) => {
      const pair = await S.blockdevSame.setup(lab, { ...qp.options, paused: true });
      for (let i = 0; i < 24; i++)
        await pair.source.monitor.addBitmap("disk1", `many-${i}`, { granularity: 65536 });
      const warnings: string[] = [];
      const onWarning = (w: Error): void => {
        warnings.push(`${w.name}: ${w.message}`);
      };
      process.on("warning", onWarning);
      try {
        const r = await run(lab, pair);
        assert.equal(r.ok, true, JSON.stringify(r.error));
        assert.equal(r.bitmaps.length, 29);
      } finally {
        process.off("warning", onWarning);
      }
      assert.deepEqual(warnings, []);
    });
  });

  it("a machine with guest RAM and disks on guest devices, the guest running", async () => {
    await withLab(async (lab) => {
      const pair = await S.guestWithRam.setup(lab, { ...qp.options, paused: true });
      const before = await bitmapStates(pair.source);
      assert.equal((await pair.source.monitor.status()).status, "running");
      const r = await run(lab, pair);
      await assertArrived(pair, r, before);
      assert.equal(r.bitmaps.length, 3);
      const ram = (await pair.source.monitor.migrationInfo()).ram;
      assert.ok((ram?.total ?? 0) >= 128 * S.MiB, "the guest's RAM went along");
      assert.equal(r.source.runState, "postmigrate");
    });
  });

  it("a 512-character bitmap name and a backing chain's read-only bitmap left in place", async () => {
    await withLab(async (lab) => {
      const long = await S.longName.setup(lab, { ...qp.options, paused: true });
      const before = await bitmapStates(long.source);
      await assertArrived(long, await run(lab, long), before);
    });
    await withLab(async (lab) => {
      const chain = await S.backingChain.setup(lab, { ...qp.options, paused: true });
      const before = await bitmapStates(chain.source);
      const r = await run(lab, chain);
      await assertArrived(chain, r, before);
      assert.equal(r.bitmaps.length, 1);
    });
  });

  it("a destination that resumed on its own gets the weaker check, and says so", async () => {
    await withLab(async (lab) => {
      const pair = await S.blockdevSame.setup(lab, qp.options);
      const r = await run(lab, pair, { deny: ["tmp-*"] });
      assert.equal(r.ok, true, JSON.stringify(r.error));
      assert.equal(r.destination.runState, "running");
      for (const v of r.bitmaps) {
        assert.equal(v.verified, "weak");
        assert.match(v.reason ?? "", /resumed before verification/);
      }
    });
  });

  it("a destination node larger than the source's is verified by count", async () => {
    await withLab(async (lab) => {
      const pair = await S.sizes.setup(lab, { ...qp.options, paused: true });
      const r = await run(lab, pair, { allow: ["same/*", "big-ok/*"] });
      assert.equal(r.ok, true, JSON.stringify(r.error));
      const byNode = new Map(r.bitmaps.map((b) => [b.source.node, b]));
      assert.equal(byNode.get("same")?.verified, "strict");
      assert.equal(byNode.get("big-ok")?.verified, "count");
      assert.match(byNode.get("big-ok")?.reason ?? "", /larger/);
    });
  });

  it("a plan with errors changes nothing on either side", async () => {
    await withLab(async (lab) => {
      const pair = await S.driveMirror.setup(lab, { ...qp.options, paused: true });
      const capsBefore = await Promise.all([
        pair.source.monitor.migrationCapabilities(),
        pair.destination.monitor.migrationCapabilities(),
      ]);
      const r = await run(lab, pair);
      assert.equal(r.ok, false);
      assert.equal(r.phase, "planned");
      assert.equal(r.error?.code, "PLAN_ERRORS");
      assert.match(r.error.message, /UNADDRESSABLE/);
      for (const [i, p] of [pair.source, pair.destination].entries()) {
        assert.deepEqual(await p.monitor.migrationCapabilities(), capsBefore[i]);
        const params = await p.qmp.execute("query-migrate-parameters");
        assert.equal(
          (params as Record<string, unknown>)["block-bitmap-mapping"],
          undefined,
          "no mapping was set",
        );
      }
      assert.equal((await pair.source.monitor.status()).status, "running");
      assert.equal((await pair.destination.monitor.status()).status, "inmigrate");
    });
  });

  it("--postcopy on a plan with bitmaps on several nodes is refused before anything is touched", async () => {
    await withLab(async (lab) => {
      const pair = await S.blockdevSame.setup(lab, { ...qp.options, paused: true });
      const r = await run(lab, pair, {}, { postcopy: true });
      assert.equal(r.phase, "planned");
      assert.deepEqual(
        r.plan.errors.map((e) => e.code),
        ["POSTCOPY_UNSAFE"],
      );
      const params = await pair.source.qmp.execute("query-migrate-parameters");
      assert.equal((params as Record<string, unknown>)["block-bitmap-mapping"], undefined);
      assert.equal((await pair.source.monitor.migrationInfo()).status, undefined, "no migration was started");
    });
  });
});
