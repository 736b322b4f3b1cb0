import { describe } from "node:test";
import { buildPairs, discoverBuilds, labelVersion, QEMU10_MISSING_HINT } from "../../src/lab/builds.js";
import type { QemuBuild } from "../../src/lab/build.js";
import type { ScenarioOptions } from "../../src/lab/scenarios.js";

/** One source/destination combination of QEMU builds the integration tests run on. */
export interface BuildPairCase {
  name: string;
  source: QemuBuild;
  destination: QemuBuild;
  /** Pass to Scenario.setup: the builds, plus what a cross-version pair needs to work at all. */
  options: ScenarioOptions;
}

function version(b: QemuBuild): number {
  const v = labelVersion(b.label);
  return v ? v[0] * 100 + v[1] : 0;
}

const builds = discoverBuilds();
const only = process.env.BITFERRY_TEST_PAIRS?.split(",").map((s) => s.trim());

/**
 * Every same-version pair and every cross pair in both directions (7.2→7.2, 10.0→10.0, 7.2→10.0, 10.0→7.2 when
 * 10.0 is installed). BITFERRY_TEST_PAIRS="7.2→7.2" narrows it for quick local runs.
 */
export const buildPairCases: BuildPairCase[] = buildPairs(builds)
  .map((p) => {
    // Reference R28: a 10.0 source with -machine none sends a switchover-start command QEMU before 10.0 rejects.
    const r28 = version(p.source) >= 1000 && version(p.destination) < 1000;
    return {
      name: `${p.source.label}→${p.destination.label}`,
      source: p.source,
      destination: p.destination,
      options: {
        sourceBuild: p.source,
        destinationBuild: p.destination,
        ...(r28 ? { sourceArgs: ["-global", "migration.send-switchover-start=off"] } : {}),
      },
    };
  })
  .filter((c) => only === undefined || only.includes(c.name));

if (!builds.some((b) => version(b) >= 1000))
  console.log(`# ${QEMU10_MISSING_HINT}; integration tests run on 7.2 only`);

/** Declares the same suite once per build pair. */
export function describeEachPair(title: string, fn: (pair: BuildPairCase) => void): void {
  for (const c of buildPairCases) {
    describe(`${title} [${c.name}]`, () => {
      fn(c);
    });
  }
}
