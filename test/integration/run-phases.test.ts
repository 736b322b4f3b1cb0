import { it } from "node:test";
import assert from "node:assert/strict";
import type { RunPhase } from "../../src/migrate/progress.js";
import type { MigrateResult } from "../../src/migrate/run.js";
import * as S from "../../src/lab/scenarios.js";
import { pairArgs, runCli } from "../helpers/cli.js";
import { withLab } from "../helpers/lab.js";
import { onceAt, runMigration } from "../helpers/migrate.js";
import { describeEachPair } from "../helpers/pairs.js";

/**
 * docs/json.md: a finished run reports `planned`, `verified` or `failed`, never `migrating` (that name is for a
 * run under way: progress events carry it). `ok` is true exactly when the phase is `verified`.
 */
function assertFinished(r: MigrateResult, expected: MigrateResult["phase"]): void {
  assert.equal(r.phase, expected, JSON.stringify(r.error));
  assert.notEqual(r.phase, "migrating");
  assert.equal(r.ok, r.phase === "verified");
  assert.equal(r.error === undefined, r.ok);
}

describeEachPair("the phase a finished run reports", (qp) => {
  it("planned when the plan refuses; the run never reached migrating", async () => {
    await withLab(async (lab) => {
      const pair = await S.sizes.setup(lab, qp.options);
      const seen = new Set<RunPhase>();
      const r = await runMigration(lab, pair, { onProgress: (e) => seen.add(e.phase) });
      assertFinished(r, "planned");
      assert.equal(r.error?.code, "PLAN_ERRORS");
      assert.ok(!seen.has("migrating"));

      // The same refusal through the CLI: one document on stdout, its error's one line on stderr (section 5).
      const cli = await runCli([
        "migrate",
        ...pairArgs(pair),
        "--uri",
        `unix:${lab.path("mig.sock")}`,
        "--json",
      ]);
      assert.equal(cli.code, 1, cli.stderr);
      const doc = cli.json() as MigrateResult;
      assertFinished(doc, "planned");
      assert.ok(
        cli.stderr.endsWith(`bitferry: ${doc.error?.message ?? ""} [PLAN_ERRORS]\n`),
        `stderr: ${cli.stderr}`,
      );
    });
  });

  it("verified after a success, though progress said migrating on the way; the same in migrate --json", async () => {
    await withLab(async (lab) => {
      const pair = await S.blockdevSame.setup(lab, qp.options);
      const seen = new Set<RunPhase>();
      const r = await runMigration(lab, pair, { onProgress: (e) => seen.add(e.phase) });
      assertFinished(r, "verified");
      assert.ok(seen.has("migrating"), [...seen].join(","));
      assert.ok(seen.has("done"));
    });
    await withLab(async (lab) => {
      const pair = await S.blockdevSame.setup(lab, qp.options);
      const cli = await runCli([
        "migrate",
        ...pairArgs(pair),
        "--uri",
        `unix:${lab.path("mig.sock")}`,
        "--json",
      ]);
      assert.equal(cli.code, 0, cli.stderr);
      assertFinished(cli.json() as MigrateResult, "verified");
    });
  });

  it("failed when the destination dies during the migration", async () => {
    await withLab(async (lab) => {
      const pair = await S.stallingPersistent.setup(lab, qp.options);
      const r = await runMigration(lab, pair, {
        maxDowntimeMs: 60_000,
        onProgress: onceAt(
          (e) => e.phase === "migrating" && e.status === "active",
          () => {
            pair.destination.kill("SIGKILL");
          },
        ),
      });
      assertFinished(r, "failed");
    });
  });
});
