import { describe, it } from "node:test";
import assert from "node:assert/strict";
import type { HostileOptions, HostileReport } from "../fuzz/hostile-common.js";
import { fuzzPolicies } from "../fuzz/hostile-policy.js";
import { fuzzQmp } from "../fuzz/hostile-qmp.js";
import { fuzzQcow2 } from "../fuzz/hostile-qcow2.js";

/** A fixed, seeded subset of the hostile-input fuzzing (`npm run fuzz -- --hostile 300` runs many more). */
const OPTIONS: HostileOptions = { seed: 20251126, runs: 40 };

function assertAllPass(reports: HostileReport[]): void {
  assert.ok(reports.length > 0);
  for (const r of reports)
    assert.equal(r.failure, undefined, `${r.family}: ${r.property}\n${r.failure ?? ""}`);
}

describe(`hostile inputs (seed ${OPTIONS.seed})`, () => {
  it("policy files: structure-aware documents, YAML soup, alias bombs, deep nesting, huge files, the CLI", async () => {
    assertAllPass(await fuzzPolicies(OPTIONS));
  });
  it("QMP replies: broken replies to planning and the CLI, random frames to the client", async () => {
    assertAllPass(await fuzzQmp(OPTIONS));
  });
  it("qcow2 images: the inspect CLI over mutated images and sparse files", async () => {
    assertAllPass(await fuzzQcow2(OPTIONS));
  });
});
