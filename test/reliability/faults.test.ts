import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { faultCaseOf, runFault } from "../fuzz/faults.js";

/**
 * A fixed, seeded subset of the fault injection (`npm run fuzz -- --faults 60` runs every case several times): one
 * fault of each kind, on both scenarios, each followed by the checks of the source and a fresh migration.
 */
const SEED = 20251126;
/** Indexes into FAULT_CASES: kill the destination (active, during a disk copy), kill the source, cut the link, SIGINT, --timeout. */
const FAULTS = [1, 4, 6, 9, 11, 16];

describe(`fault injection (seed ${SEED})`, () => {
  for (const i of FAULTS) {
    const c = faultCaseOf(i);
    it(`${c.kind} at ${c.point} (${c.scenario})`, async () => {
      const r = await runFault(SEED, i);
      assert.deepEqual(
        r.failures,
        [],
        `${r.pair}; replay: npm run fuzz -- --faults 1 --seed ${SEED} --only ${i}`,
      );
      assert.ok(r.injected, `the fault hit the run (${r.code})`);
    });
  }
});
