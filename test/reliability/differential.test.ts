import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { buildPairCases } from "../helpers/pairs.js";
import { generateSetup } from "../fuzz/generate.js";
import { runScenario } from "../fuzz/differential.js";

/**
 * A fixed, seeded subset of the differential fuzzing (`npm run fuzz` runs many more): random setups planned,
 * migrated through bitferry to a paused destination, and compared with the plan.
 */
const SEED = 20251126;
const COUNT = 20;

describe(`differential scenarios (seed ${SEED})`, () => {
  for (let i = 0; i < COUNT; i++) {
    it(`scenario ${i}`, async () => {
      const spec = generateSetup(SEED, i, { buildPairs: buildPairCases.map((p) => p.name) });
      const r = await runScenario(spec);
      assert.deepEqual(
        r.failures,
        [],
        `${r.pair}, ${r.planOk ? "migrated" : `refused (${r.errorCodes.join(",")})`}; replay: ` +
          `npm run fuzz -- --scenarios 1 --seed ${SEED} --only ${i}`,
      );
    });
  }
});
