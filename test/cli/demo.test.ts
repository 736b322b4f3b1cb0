import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import path from "node:path";
import type { DemoDocument } from "../../src/cli/commands/demo-action.js";
import { spawnCli } from "../helpers/cli.js";

let cwd: string;

before(() => {
  cwd = mkdtempSync("/tmp/bf-dt-");
});

after(() => {
  rmSync(cwd, { recursive: true, force: true });
});

describe("bitferry demo --json", () => {
  it("migrates the writing guest and proves the next backup from measured data, then removes what it made", async () => {
    const r = await spawnCli(["demo", "--json"], { cwd });
    assert.equal(r.code, 0, r.stderr);
    const doc = r.json() as DemoDocument;
    assert.equal(doc.ok, true, JSON.stringify(doc.error));
    assert.deepEqual([...new Set(doc.firstPlanErrors)].sort(), ["TARGET_NODE_MISSING", "UNADDRESSABLE"]);
    assert.equal(doc.result?.phase, "verified");
    assert.ok(doc.result.bitmaps.every((b) => b.verified === "strict"));
    assert.deepEqual(
      doc.proof.map((p) => `${p.node}/${p.bitmap}`),
      ["drive0/backup-daily", "vdb/backup-daily"],
    );
    for (const p of doc.proof) {
      assert.ok(p.guestBlocks > 0);
      assert.equal(p.unmarkedBlocks, 0);
      assert.ok(p.dirtyBlocks >= p.guestBlocks && p.dirtyBlocks <= p.guestBlocks + 1);
      assert.equal(p.restoredSha256, p.destinationSha256);
      assert.notEqual(p.backupSha256, p.destinationSha256);
      assert.match(p.destinationSha256, /^[0-9a-f]{64}$/);
    }
    assert.ok(doc.guest);
    assert.ok(
      doc.guest.destinationFirstRound !== null &&
        doc.guest.destinationFirstRound >= doc.guest.sourceLastRound,
    );
    assert.ok(doc.guest.sourceLastRound >= doc.guest.roundsBeforeMigration);
    assert.equal(doc.picture, path.join(cwd, "bitferry-demo.html"));
    assert.ok(existsSync(doc.picture));
    // Progress on stderr names the migration socket in the demo's lab directory.
    const lab = /migrating to unix:(\/tmp\/bf-demo-[^/\s]+)\//.exec(r.stderr)?.[1];
    assert.ok(lab, r.stderr);
    assert.equal(existsSync(lab), false, `${lab} is removed`);
  });
});
