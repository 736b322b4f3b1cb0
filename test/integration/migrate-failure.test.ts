import { it } from "node:test";
import assert from "node:assert/strict";

import type { Lab } from "../../src/lab/lab.js";
import * as S from "../../src/lab/scenarios.js";
import { bitmapStates, storedBitmaps, type BitmapState } from "../helpers/bitmaps.js";
import type { MigrateResult } from "../../src/migrate/run.js";
import { withLab } from "../helpers/lab.js";
import { interruptAt, onceAt, runMigration } from "../helpers/migrate.js";
import { buildPairCases, describeEachPair } from "../helpers/pairs.js";
import { spawnCli } from "../helpers/cli.js";

/**
 * The guarantee after any failure: the source runs as before, every bitmap is present, unchanged and not busy,
 * and a clean shutdown stores its persistent bitmaps in the image without the in-use flag.
 */
async function assertSourceIntact(
  lab: Lab,
  pair: S.ScenarioPair,
  before: Map<string, BitmapState>,
  image: string,
): Promise<void> {
  assert.equal((await pair.source.monitor.status()).status, "running");
  const after = await bitmapStates(pair.source);
  assert.deepEqual([...after.keys()].sort(), [...before.keys()].sort());
  for (const [key, b] of before) {
    const a = after.get(key);
    assert.ok(a);
    assert.equal(a.sha256, b.sha256, `${key} content`);
    assert.equal(a.busy, false, `${key} busy`);
    assert.equal(a.persistent, b.persistent, `${key} persistence`);
    assert.equal(a.recording, b.recording, `${key} recording`);
  }
  const persistent = [...before].filter(([, b]) => b.persistent).map(([k]) => k.split("/")[1]);
  await pair.source.stop();
  assert.equal(pair.source.exitInfo?.code, 0, "the source quit cleanly");
  const stored = await storedBitmaps(lab, image);
  assert.deepEqual(stored.map((s) => s.name).sort(), persistent.sort(), "every persistent bitmap is stored");
  for (const s of stored)
    assert.ok(!s.flags.includes("in-use"), `${s.name} is stored without in-use: ${s.flags.join(",")}`);
  const disabled = [...before].filter(([, b]) => b.persistent && !b.recording).map(([k]) => k.split("/")[1]);
  for (const s of stored)
    assert.equal(s.flags.includes("auto"), !disabled.includes(s.name), `${s.name} enabled state stored`);
}

describeEachPair("bitferry migrate: failures leave the source whole", (qp) => {
  it("the destination killed while the migration is active", async () => {
    await withLab(async (lab) => {
      const pair = await S.stallingPersistent.setup(lab, qp.options);
      const before = await bitmapStates(pair.source);
      const r = await runMigration(lab, pair, {
        maxDowntimeMs: 60_000,
        onProgress: onceAt(
          (e) => e.status === "active",
          () => {
            pair.destination.kill("SIGKILL");
          },
        ),
      });
      assert.equal(r.ok, false);
      assert.equal(r.phase, "failed");
      assert.ok(
        ["DESTINATION_LOST", "MIGRATION_FAILED"].includes(r.error?.code ?? ""),
        JSON.stringify(r.error),
      );
      assert.equal(r.source.repaired.length, 3);
      assert.ok(r.source.repaired.every((x) => x.ok));
      assert.equal(r.destination.runState, null);
      await assertSourceIntact(lab, pair, before, lab.path("big.qcow2"));
    });
  });

  it("the destination killed after the switch to postcopy: the source is not resumed, and the message says why", async () => {
    await withLab(async (lab) => {
      const pair = await S.largeSingleNode.setup(lab, qp.options);
      const before = await bitmapStates(pair.source);
      let killed = false;
      // The moment QEMU switches (its event reaches every monitor), not when bitferry's poll happens to see it.
      const off = pair.source.monitor.qmp.on("MIGRATION", (ev) => {
        if (!killed && ev.data.status === "postcopy-active") {
          pair.destination.kill("SIGKILL");
          killed = true;
        }
      });
      const r = await runMigration(lab, pair, { postcopy: true }).finally(off);
      assert.ok(killed, "the run switched to postcopy");
      assert.equal(r.ok, false);
      assert.ok(
        ["DESTINATION_LOST", "MIGRATION_FAILED"].includes(r.error?.code ?? ""),
        JSON.stringify(r.error),
      );
      assert.equal(r.migration.postcopy, true);
      // The guest may have run on the destination since the switchover: an older copy must not run again.
      assert.notEqual(r.source.runState, "running");
      assert.match(r.error?.message ?? "", /did not resume the source|cannot simply resume/);
      const after = await bitmapStates(pair.source);
      for (const [key, b] of before) assert.equal(after.get(key)?.sha256, b.sha256, `${key} content`);
    });
  });

  it("a cancel at pre-switchover (the user interrupts while the source is stopped)", async () => {
    await withLab(async (lab) => {
      const pair = await S.stallingPersistent.setup(lab, { ...qp.options, paused: true });
      const before = await bitmapStates(pair.source);
      const r = await runMigration(lab, pair, {
        maxDowntimeMs: 60_000,
        ...interruptAt((e) => e.status === "pre-switchover"),
      });
      assert.equal(r.error?.code, "INTERRUPTED", JSON.stringify(r.error));
      assert.equal(r.source.runState, "running");
      assert.ok(r.source.repaired.every((x) => x.ok && x.sha256After === x.sha256Before));
      await assertSourceIntact(lab, pair, before, lab.path("big.qcow2"));
    });
  });

  it("without repair QEMU would lose them: a cancelled migration leaves persistent bitmaps unstorable", async () => {
    // The hazard bitferry repairs, shown on QEMU itself so that a QEMU that fixes it is noticed.
    await withLab(async (lab) => {
      const pair = await S.stallingPersistent.setup(lab, qp.options);
      const m = pair.source.monitor;
      await m.setMigrationCapabilities({ "dirty-bitmaps": true });
      await pair.destination.monitor.setMigrationCapabilities({ "dirty-bitmaps": true });
      await pair.destination.monitor.migrateIncoming(`unix:${lab.path("raw.sock")}`);
      await m.migrate(`unix:${lab.path("raw.sock")}`);
      for (let i = 0; i < 100 && (await m.migrationInfo()).status !== "active"; i++)
        await new Promise((r) => setTimeout(r, 20));
      await m.migrateCancel();
      for (let i = 0; i < 100 && (await m.migrationInfo()).status !== "cancelled"; i++)
        await new Promise((r) => setTimeout(r, 20));
      await pair.source.stop();
      const stored = await storedBitmaps(lab, lab.path("big.qcow2"));
      assert.ok(
        stored.length < 3 || stored.some((s) => s.flags.includes("in-use")),
        `QEMU stored every bitmap cleanly after a cancel: ${JSON.stringify(stored)} (the repair may no longer be needed)`,
      );
    });
  });

  it("SIGINT to bitferry: exit 130 after cancelling and repairing", async () => {
    await withLab(async (lab) => {
      const pair = await S.stallingPersistent.setup(lab, qp.options);
      const before = await bitmapStates(pair.source);
      let pid = -1;
      const child = spawnCli(
        [
          "migrate",
          "--source",
          pair.source.monitorSocket,
          "--dest",
          pair.destination.monitorSocket,
          "--uri",
          `unix:${lab.path("m.sock")}`,
          "--max-downtime",
          "60000",
          "--json",
        ],
        {
          onSpawn: (p) => (pid = p),
          onStderr: (text) => {
            if (text.includes("(active)") && pid > 0) {
              process.kill(pid, "SIGINT");
              pid = -1;
            }
          },
        },
      );
      const r = await child;
      assert.equal(r.code, 130, r.stderr);
      const doc = r.json() as MigrateResult;
      assert.equal(doc.error?.code, "INTERRUPTED");
      assert.match(r.stderr, /SIGINT: cancelling the migration and repairing the source/);
      await assertSourceIntact(lab, pair, before, lab.path("big.qcow2"));
    });
  });

  it("--timeout expires: cancelled, repaired, TIMEOUT", async () => {
    await withLab(async (lab) => {
      const pair = await S.stallingPersistent.setup(lab, qp.options);
      const before = await bitmapStates(pair.source);
      // A downtime bound too small to ever converge keeps the migration active until the timeout.
      const r = await runMigration(lab, pair, { timeoutMs: 1000, maxDowntimeMs: 301 });
      assert.ok(["TIMEOUT", "NOT_CONVERGING"].includes(r.error?.code ?? ""), JSON.stringify(r.error));
      await assertSourceIntact(lab, pair, before, lab.path("big.qcow2"));
    });
  });
});

// One pair is enough: what is tested is bitferry's own clock, not QEMU's behaviour.
describeEachPair("bitferry migrate: a monitor that stops answering", (qp) => {
  if (qp !== buildPairCases[0]) return;
  it("--timeout ends the run while a command waits on a frozen destination; the VM is not resumed twice", async () => {
    await withLab(async (lab) => {
      const pair = await S.blockdevSame.setup(lab, { ...qp.options, paused: true });
      const before = await bitmapStates(pair.source);
      let frozenAt = 0;
      try {
        const r = await runMigration(lab, pair, {
          timeoutMs: 3000,
          onProgress: onceAt(
            (e) => e.phase === "completing",
            () => {
              // The destination's main loop stops: its monitor reads nothing and answers nothing.
              process.kill(pair.destination.pid, "SIGSTOP");
              frozenAt = Date.now();
            },
          ),
        });
        const took = Date.now() - frozenAt;
        assert.ok(frozenAt > 0, "the run reached the destination's completion");
        assert.equal(r.error?.code, "TIMEOUT", JSON.stringify(r.error));
        // The timeout, then one bounded wait for the frozen side; not the per-command timeout, not for ever.
        assert.ok(took < 20_000, `the run ended ${took} ms after the destination froze`);
        // The migration completed, so the destination may hold the VM: the source must not run it a second time.
        assert.equal(r.source.runState, "postmigrate");
        assert.equal(r.destination.runState, null);
        assert.match(r.error.message, /the destination does not answer: the source stays stopped/);
        const after = await bitmapStates(pair.source);
        for (const [key, b] of before) assert.equal(after.get(key)?.sha256, b.sha256, `${key} content`);
      } finally {
        process.kill(pair.destination.pid, "SIGCONT");
      }
      // Once the destination answers again, it holds the VM, paused, with every bitmap.
      assert.equal((await pair.destination.monitor.status()).status, "paused");
      const there = await bitmapStates(pair.destination);
      for (const [key, b] of before)
        assert.equal(there.get(key)?.sha256, b.sha256, `${key} on the destination`);
    });
  });
});
