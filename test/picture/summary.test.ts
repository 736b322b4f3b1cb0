import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { MigrateResult } from "../../src/migrate/run.js";
import { renderPlanHtml } from "../../src/picture/index.js";
import { planFixture } from "../helpers/fixtures.js";
import { resultFor } from "./result.js";

async function summaryText(result: MigrateResult): Promise<string> {
  const r = planFixture("blockdev-same");
  const html = await renderPlanHtml({
    plan: r.plan,
    source: r.source.graph,
    destination: r.destination.graph,
    result,
  });
  const m = /<div class="summary" data-summary>(.*?)<\/div>/s.exec(html);
  assert.ok(m?.[1], "the summary is there");
  return m[1]
    .replace(/<[^>]+>/g, " ")
    .replace(/\s+/g, " ")
    .trim();
}

describe("the picture's summary", () => {
  it("says the outcome once: verified, failed, or refused by the plan", async () => {
    const plan = planFixture("blockdev-same").plan;
    const ok = await summaryText(resultFor(plan, ["strict"]));
    assert.match(ok, /migration verified/);
    assert.doesNotMatch(ok, /verified \(verified\)|\(verified\)/);
    assert.equal(ok.match(/migration verified/g)?.length, 1);
    const failed = await summaryText(resultFor(plan, ["strict", "failed"]));
    assert.match(failed, /migration failed/);
    assert.doesNotMatch(failed, /\(failed\)/);
    const refused = await summaryText({
      ...resultFor(plan, ["strict"]),
      ok: false,
      phase: "planned",
      bitmaps: [],
    });
    assert.match(refused, /migration refused by the plan/);
    assert.doesNotMatch(refused, /\(planned\)/);
  });
});
