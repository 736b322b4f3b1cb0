/**
 * Writes the screenshots in docs/ (docs/picture.md shows them):
 *   node --import tsx test/picture/docs-pictures.ts          from fixtures and the synthetic 200-node graph
 *   node --import tsx test/picture/docs-pictures.ts --live   also the demo's real migration on two local QEMUs
 */
import { statSync } from "node:fs";
import path from "node:path";
import { Lab } from "../../src/lab/lab.js";
import { demo } from "../../src/lab/scenarios.js";
import { planMigration } from "../../src/migrate/plan.js";
import { migrate } from "../../src/migrate/run.js";
import { validatePolicy } from "../../src/policy/file.js";
import { renderPlanHtml } from "../../src/picture/index.js";
import { planFixture } from "../helpers/fixtures.js";
import { Browser } from "./browser.js";
import { syntheticPlan } from "./synthetic.js";

const docs = path.join(import.meta.dirname, "..", "..", "docs");

async function shoot(browser: Browser, html: string, name: string, maxHeight?: number): Promise<void> {
  const o = await browser.open(html, name);
  const file = path.join(docs, `${name}.png`);
  const size = await o.page.evaluate(
    "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]",
  );
  const [width, height] = Array.isArray(size) ? size.map(Number) : [1400, 900];
  await o.page.setViewportSize({ width: Math.max(1000, width ?? 1400), height: 900 });
  // A clip is taken from the full page, so a tall picture can be cut to its top part.
  await o.page.screenshot({
    path: file,
    fullPage: true,
    ...(maxHeight !== undefined
      ? { clip: { x: 0, y: 0, width: width ?? 1400, height: Math.min(maxHeight, height ?? maxHeight) } }
      : {}),
  });
  console.log(`${file}: ${Math.round(statSync(file).size / 1024)} KiB`);
  await o.page.close();
}

const browser = await Browser.start();
try {
  const r = planFixture("drive-mirror", { policy: { deny: ["bm0"] } });
  await shoot(
    browser,
    await renderPlanHtml({
      plan: r.plan,
      source: r.source.graph,
      destination: r.destination.graph,
      title: "bitferry plan — drive-mirror fixture, policy deny: [bm0]",
    }),
    "picture-plan",
  );

  const big = syntheticPlan();
  const t0 = performance.now();
  const html = await renderPlanHtml({
    plan: big.plan,
    source: big.source.graph,
    destination: big.destination.graph,
    title: `bitferry plan — synthetic graph, ${big.source.graph.nodes.length} source and ${big.destination.graph.nodes.length} destination nodes`,
  });
  console.log(`200-node picture rendered in ${Math.round(performance.now() - t0)} ms`);
  await shoot(browser, html, "picture-200-nodes", 2400);

  if (process.argv.includes("--live")) {
    const lab = Lab.create({ prefix: "bf-picture-" });
    try {
      const { source, destination } = await demo.setup(lab, { paused: true });
      const policy = validatePolicy(
        { map: [{ source: "data0", target: "vdb" }], deny: ["forgotten"] },
        "demo",
      );
      const planned = await planMigration(source.monitor, destination.monitor, { policy });
      const result = await migrate({
        source: source.monitor,
        destination: destination.monitor,
        uri: `unix:${lab.path("migration.sock")}`,
        policy,
        resume: true,
      });
      console.log(`live migration: ${result.phase}, ${result.bitmaps.map((b) => b.verified).join(", ")}`);
      await shoot(
        browser,
        await renderPlanHtml({
          plan: result.plan,
          source: planned.source.graph,
          destination: planned.destination.graph,
          result,
          title: "bitferry migrate — the demo, on two local QEMUs",
        }),
        "picture-migration",
      );
    } finally {
      await lab.cleanup();
    }
  }
} finally {
  await browser.close();
}
