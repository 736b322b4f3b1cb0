import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { BlockGraph } from "../../src/graph/model.js";
import type { MigrateResult } from "../../src/migrate/run.js";
import type { PlanResult } from "../../src/migrate/plan.js";
import type { Plan } from "../../src/policy/types.js";
import { renderPlanHtml } from "../../src/picture/index.js";
import { planFixture } from "../helpers/fixtures.js";
import { Browser, type Opened } from "./browser.js";
import { countColour, decodePng, inkRatio } from "./png.js";
import { resultFor } from "./result.js";
import { syntheticPlan } from "./synthetic.js";

/** The colour of a migration arrow, and the red of errors (src/picture/svg.ts). */
const ARROW_BLUE = "#0969da";
const ERROR_RED = "#cf222e";

let browser: Browser | undefined;
let missing: unknown;

// A missing Chromium fails every test that needs it, each with the message saying how to install it.
before(async () => {
  try {
    browser = await Browser.start();
  } catch (err) {
    missing = err;
  }
});

after(async () => {
  await browser?.close();
});

async function open(html: string, name: string): Promise<Opened> {
  if (!browser) throw missing;
  return browser.open(html, name);
}

async function render(r: PlanResult, result?: MigrateResult): Promise<string> {
  return renderPlanHtml({
    plan: r.plan,
    source: r.source.graph,
    destination: r.destination.graph,
    ...(result ? { result } : {}),
  });
}

function sorted(xs: string[]): string[] {
  return [...xs].sort();
}

/**
 * Evaluates `expr` (JavaScript, with `e` the element) in the page for every element matching `selector`. The
 * project compiles without DOM types, so page code is a string and its results are checked here.
 */
async function each(o: Opened, selector: string, expr: string): Promise<string[]> {
  const out: unknown = await o.page.evaluate(
    `Array.from(document.querySelectorAll(${JSON.stringify(selector)}), (e) => String(${expr}))`,
  );
  assert.ok(Array.isArray(out) && out.every((x): x is string => typeof x === "string"));
  return out;
}

/** Attribute values of every element matching `selector`. */
async function values(o: Opened, selector: string, attr: string): Promise<string[]> {
  return each(o, selector, `e.getAttribute(${JSON.stringify(attr)}) ?? "<missing>"`);
}

/** `[node, bitmap]` of every bitmap badge matching `selector`. */
async function badges(o: Opened, selector: string): Promise<string[]> {
  return each(o, selector, `JSON.stringify([e.getAttribute("data-on"), e.getAttribute("data-bitmap")])`);
}

function pair(node: string, bitmap: string): string {
  return JSON.stringify([node, bitmap]);
}

/** The checks every picture must pass: everything in both graphs is drawn, and only what the plan says moves. */
async function checkPicture(
  o: Opened,
  plan: Plan,
  source: BlockGraph,
  destination: BlockGraph,
): Promise<void> {
  for (const [side, g] of [
    ["source", source],
    ["destination", destination],
  ] as const) {
    assert.deepEqual(
      sorted(await values(o, `[data-node][data-side="${side}"]`, "data-node")),
      sorted(g.nodes.map((n) => n.name)),
      `${side}: one card per node`,
    );
    assert.deepEqual(
      sorted(await values(o, `[data-drive][data-side="${side}"]`, "data-drive")),
      sorted(g.drives.map((d) => d.name)),
      `${side}: one card per drive`,
    );
    const drawn = await badges(o, `[data-bitmap][data-kind="bitmap"][data-side="${side}"]`);
    assert.deepEqual(
      sorted(drawn),
      sorted(g.nodes.flatMap((n) => n.bitmaps.map((b) => pair(n.name, b.name)))),
      `${side}: one badge per named bitmap, on its node`,
    );
  }

  const migrating = plan.bitmaps.filter((b) => b.action === "migrate");
  const arrows = await each(
    o,
    "[data-arrow]",
    `JSON.stringify(["data-from-node", "data-from-bitmap", "data-to-node", "data-to-bitmap"].map((a) => e.getAttribute(a)))`,
  );
  assert.equal(arrows.length, migrating.length, "one arrow per migrating bitmap");
  assert.deepEqual(
    sorted(arrows),
    sorted(
      migrating.map((b) =>
        JSON.stringify([b.source.node, b.source.bitmap, b.target?.node, b.target?.bitmap]),
      ),
    ),
    "each arrow goes from its bitmap to its target",
  );
  // Every arrow was routed: a path with a real length.
  const lengths = (await each(o, "[data-arrow] path:last-child", "e.getTotalLength()")).map(Number);
  assert.ok(
    lengths.every((l) => l > 5),
    `every arrow has a route: ${lengths.join(", ")}`,
  );

  const codes = await values(o, "[data-error]", "data-error");
  const texts = (await each(o, "[data-error]", "e.textContent")).map((t) => t.replace(/\s+/g, ""));
  assert.deepEqual(
    codes,
    plan.errors.map((e) => e.code),
    "every plan error is listed",
  );
  plan.errors.forEach((e, i) => {
    assert.ok(texts[i]?.includes(e.message.replace(/\s+/g, "")), `error ${e.code} shows its whole message`);
  });
  const erroneous = plan.bitmaps
    .filter((b) => b.action === "error")
    .map((b) => pair(b.source.node, b.source.bitmap));
  const red = await badges(o, '[data-bitmap][data-side="source"][data-tone="error"]');
  assert.deepEqual(sorted(red), sorted(erroneous), "bitmaps in error are red on the source");
  const skipped = await values(o, '[data-bitmap][data-side="source"][data-tone="skip"]', "data-tag");
  assert.deepEqual(
    sorted(skipped),
    sorted(plan.bitmaps.filter((b) => b.action === "skip").map((b) => b.rule)),
    "skipped bitmaps are grey and carry their rule",
  );

  assert.deepEqual(o.requests, [o.url], "the page requests nothing but itself");
  assert.deepEqual(o.consoleErrors, [], "no console errors");
}

async function screenshotOf(o: Opened): Promise<ReturnType<typeof decodePng>> {
  return decodePng(await o.page.locator("svg.graph").screenshot());
}

describe("the picture of a plan", () => {
  it("the drive-mirror plan: filter node, generated names, arrows, the UNADDRESSABLE error and its fix", async () => {
    const r = planFixture("drive-mirror");
    const o = await open(await render(r), "drive-mirror");
    await checkPicture(o, r.plan, r.source.graph, r.destination.graph);
    assert.equal(r.plan.errors[0]?.code, "UNADDRESSABLE");
    assert.equal(await o.page.locator('[data-node][data-filter][data-driver="mirror_top"]').count(), 1);
    assert.equal(
      await o.page.locator('[data-side="source"][data-node][data-generated]').count(),
      r.source.graph.nodes.filter((n) => n.generated).length,
    );
    assert.match(
      (await o.page.locator("[data-error] .fix").textContent()) ?? "",
      /^Fix: give the node a node-name/,
    );
    assert.equal(await o.page.locator('[data-bitmap="onfile"] [data-error-ref="1"]').count(), 1);
    assert.equal(await o.page.locator('[data-count="migrate"]').textContent(), "2 migrate");
    assert.equal(await o.page.locator('[data-count="error"]').textContent(), "1 error");
    assert.equal(
      await o.page.locator("[data-payload]").getAttribute("data-payload"),
      String(r.plan.payloadBytes),
    );
    const png = await screenshotOf(o);
    assert.ok(inkRatio(png) > 0.05, `the picture is not blank (${inkRatio(png)})`);
    assert.ok(countColour(png, ARROW_BLUE, 10) > 50, "the arrows are drawn in blue");
    assert.ok(countColour(png, ERROR_RED, 10) > 20, "the error marker is drawn in red");
  });

  it("a policy that fixes the plan: arrows and grey skips, no errors", async () => {
    const r = planFixture("drive-mirror", { policy: { deny: ["onfile"] } });
    const o = await open(await render(r), "drive-mirror-ok");
    await checkPicture(o, r.plan, r.source.graph, r.destination.graph);
    assert.equal(await o.page.locator("[data-error]").count(), 0);
    assert.equal(await o.page.locator('[data-plan-ok="true"]').count(), 1);
    assert.equal(await o.page.locator('[data-bitmap="onfile"]').getAttribute("data-tag"), "deny");
  });

  it("every captured topology", async () => {
    const cases: [string, Parameters<typeof planFixture>[1]][] = [
      ["backing-chain", { copyStorage: true }],
      ["blockdev-renamed", { policy: { map: [{ source: "disk0", target: "vda" }] } }],
      ["blockdev-same", { policy: { deny: ["tmp-*"] } }],
      ["busy-inconsistent", {}],
      ["destination-existing", {}],
      ["drive-node-name", {}],
      ["long-name", {}],
      ["raw-destination", {}],
      ["sizes", {}],
      ["throttle", {}],
    ];
    for (const [name, options] of cases) {
      const r = planFixture(name, options);
      const o = await open(await render(r), name);
      await checkPicture(o, r.plan, r.source.graph, r.destination.graph);
      await o.page.close();
    }
  });

  it("an error about a destination bitmap points at it", async () => {
    const r = planFixture("destination-existing");
    const o = await open(await render(r), "destination-existing-links");
    const links = await values(o, "[data-error-link]", "data-to-bitmap");
    assert.deepEqual(sorted(links), ["ram", "stored"]);
    assert.equal(
      await o.page.locator('[data-side="destination"][data-bitmap="stored"][data-kind="stored"]').count(),
      1,
    );
  });

  it("the 512-character name is cut short on the card, whole in its tooltip and in the table's", async () => {
    const r = planFixture("long-name");
    const long = r.plan.bitmaps[0]?.source.bitmap ?? "";
    assert.ok(long.length >= 512);
    const o = await open(await render(r), "long-name-title");
    const badge = o.page.locator('[data-side="source"][data-bitmap][data-truncated]');
    assert.equal(await badge.count(), 1);
    assert.equal(await badge.getAttribute("data-bitmap"), long);
    assert.ok(((await badge.locator("text").first().textContent()) ?? "").length < 40);
    assert.ok(((await badge.locator("title").textContent()) ?? "").includes(long));
    const cell = o.page.locator(`[data-plan-bitmap] [title="${long}"]`);
    assert.equal(await cell.count(), 2, "the table's source and destination cells");
    const box = await o.page.locator('[data-side="source"][data-node]').boundingBox();
    assert.ok(box && box.width < 400, "the card stays narrow");
  });

  it("names with markup in them are text, never markup", async () => {
    const r = planFixture("blockdev-same");
    const evil = `</text></svg><img src=x onerror="alert(1)">&amp;'"<script>`;
    const g = r.source.graph;
    const node = g.nodes.find((n) => n.name === "disk1");
    const bm = node?.bitmaps[0];
    assert.ok(bm);
    bm.name = evil;
    for (const b of r.plan.bitmaps)
      if (b.source.node === "disk1" && b.source.bitmap === "tmp-y") {
        b.source.bitmap = evil;
        b.action = "skip";
        b.rule = "deny";
        b.target = null;
      }
    const html = await render(r);
    const o = await open(html, "escaping");
    assert.equal(await o.page.locator("img, script").count(), 0);
    assert.equal(
      await o.page.locator('[data-side="source"][data-bitmap]').first().getAttribute("data-bitmap"),
      evil,
    );
    await checkPicture(o, r.plan, r.source.graph, r.destination.graph);
  });

  it("an error about the plan as a whole, and a side with nothing on it", async () => {
    const r = planFixture("blockdev-same", { postcopy: true });
    assert.ok(r.plan.errors.some((e) => e.code === "POSTCOPY_UNSAFE" && e.node === null));
    const o = await open(await render(r), "postcopy");
    await checkPicture(o, r.plan, r.source.graph, r.destination.graph);
    assert.match(
      (await o.page.locator('[data-error="POSTCOPY_UNSAFE"]').textContent()) ?? "",
      /the plan as a whole/,
    );
    const empty: BlockGraph = { nodes: [], drives: [], runState: "inmigrate" };
    const bare = await open(
      await renderPlanHtml({ plan: r.plan, source: r.source.graph, destination: empty }),
      "empty-destination",
    );
    assert.equal(
      await bare.page.locator('[data-side="source"][data-node]').count(),
      r.source.graph.nodes.length,
    );
    assert.equal(await bare.page.locator('[data-side="destination"][data-node]').count(), 0);
    assert.equal(await bare.page.locator("[data-arrow]").count(), 0, "no arrow into nothing");
    assert.deepEqual(bare.consoleErrors, []);
  });

  it("the document is self-contained: no script, no URL, and the same input gives the same document", async () => {
    const r = planFixture("drive-mirror");
    const html = await render(r);
    assert.doesNotMatch(html, /<script|<link|<img|<iframe|@import|https?:|wss?:|ftp:|src=|href=/i);
    assert.doesNotMatch(html, /url\((?!#)/, "only references inside the document");
    assert.equal(await render(r), html);
  });

  it("after migrate: each bitmap's verification and its reason", async () => {
    const r = planFixture("blockdev-same");
    const result = resultFor(r.plan, ["strict", "count", "weak", "failed", "strict"]);
    const o = await open(await render(r, result), "verified");
    await checkPicture(o, r.plan, r.source.graph, r.destination.graph);
    const verified = await values(
      o,
      '[data-side="destination"][data-bitmap][data-verified]',
      "data-verified",
    );
    assert.deepEqual(sorted(verified), ["count", "failed", "strict", "strict", "weak"]);
    assert.deepEqual(
      sorted(await values(o, "[data-arrow]", "data-tone")),
      ["count", "failed", "strict", "strict", "weak"],
      "arrows take their bitmap's verification colour",
    );
    assert.equal(await o.page.locator("[data-verified-ok]").getAttribute("data-verified-ok"), "4");
    assert.equal(await o.page.locator("[data-verified-failed]").getAttribute("data-verified-failed"), "1");
    assert.equal(await o.page.locator('[data-result="failed"]').count(), 1);
    assert.equal(await o.page.locator('[data-run-error="VERIFY_FAILED"]').count(), 1);
    const failedRow = o.page.locator('tr[data-verified="failed"]');
    assert.match(
      (await failedRow.textContent()) ?? "",
      /content differs: SHA-256 a1b2, the source's c3d4 <&"'>/,
    );
    const countBadge = o.page.locator('[data-side="destination"][data-verified="count"] title');
    assert.match((await countBadge.textContent()) ?? "", /verified: count \(destination node is larger/);
    const png = await screenshotOf(o);
    assert.ok(countColour(png, "#1a7f37", 10) > 30, "strictly verified arrows are green");
    assert.ok(countColour(png, ERROR_RED, 10) > 30, "the failed one is red");
  });

  // How long the layout takes is the benchmark's business; this checks what it lays out.
  it("200 nodes lay out and stay in reading order", async () => {
    const r = syntheticPlan();
    assert.ok(r.source.graph.nodes.length >= 200, `${r.source.graph.nodes.length} source nodes`);
    const html = await render(r);
    const o = await open(html, "synthetic");
    await checkPicture(o, r.plan, r.source.graph, r.destination.graph);
    // Arrows run left to right: every source badge's arrow ends right of where it starts.
    const dx = await each(
      o,
      "[data-arrow] path:last-child",
      "e.getPointAtLength(e.getTotalLength()).x - e.getPointAtLength(0).x",
    );
    assert.ok(
      dx.every((d) => Number(d) > 0),
      "every arrow points from the source side to the destination side",
    );
    const svg = await o.page.locator("svg.graph").boundingBox();
    assert.ok(
      svg && svg.width < 2600,
      `the picture wraps instead of growing sideways (${svg?.width} px wide)`,
    );
    const png = decodePng(await o.page.screenshot());
    assert.ok(inkRatio(png) > 0.05);
  });
});
