/**
 * Captures the QMP replies planning reads, from real QEMU pairs set up by the lab scenarios, into
 * test/fixtures/qmp/<scenario>.json. The planner's unit tests replay them, so they test against what QEMU really
 * says. Run: npm run capture-fixtures [-- scenario-name ...]
 */
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { Lab } from "../src/lab/lab.js";
import { scenarios } from "../src/lab/scenarios.js";
import { captureRawSnapshot } from "../src/qemu/snapshot.js";

// A fixture's features come from its QEMU's own schema, never from what the feature cache remembers.
process.env.BITFERRY_FEATURE_CACHE = "off";

const wanted = process.argv.slice(2);
const outDir = path.join(import.meta.dirname, "..", "test", "fixtures", "qmp");
mkdirSync(outDir, { recursive: true });

for (const scenario of scenarios) {
  if (wanted.length > 0 && !wanted.includes(scenario.name)) continue;
  const lab = Lab.create();
  try {
    const { source, destination } = await scenario.setup(lab);
    const fixture = {
      scenario: scenario.name,
      description: scenario.description,
      capturedWith: `QEMU ${source.qmp.version.major}.${source.qmp.version.minor}.${source.qmp.version.micro}`,
      source: await captureRawSnapshot(source.monitor),
      destination: await captureRawSnapshot(destination.monitor),
    };
    const file = path.join(outDir, `${scenario.name}.json`);
    writeFileSync(file, `${JSON.stringify(fixture, null, 1)}\n`);
    console.log(`captured ${scenario.name} -> ${path.relative(process.cwd(), file)}`);
  } finally {
    await lab.cleanup();
  }
}
