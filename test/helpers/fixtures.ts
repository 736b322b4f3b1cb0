import { readFileSync } from "node:fs";
import path from "node:path";
import { parseSnapshot, type QemuSnapshot, type RawSnapshot } from "../../src/qemu/snapshot.js";
import { planFromSnapshots, type PlanResult } from "../../src/migrate/plan.js";
import { validatePolicy } from "../../src/policy/file.js";
import type { Plan, PlanBitmap } from "../../src/policy/types.js";

export interface Fixture {
  scenario: string;
  source: QemuSnapshot;
  destination: QemuSnapshot;
}

const dir = path.join(import.meta.dirname, "..", "fixtures", "qmp");

/** A source/destination pair captured from real QEMU by scripts/capture-fixtures.ts. */
export function loadFixture(name: string): Fixture {
  const raw = JSON.parse(readFileSync(path.join(dir, `${name}.json`), "utf8")) as {
    scenario: string;
    source: RawSnapshot;
    destination: RawSnapshot;
  };
  return {
    scenario: raw.scenario,
    source: parseSnapshot(raw.source),
    destination: parseSnapshot(raw.destination),
  };
}

export interface PlanFixtureOptions {
  policy?: unknown;
  postcopy?: boolean;
  copyStorage?: boolean;
  /** Edits the snapshots before planning (for facts no scenario produces, such as an old QEMU). */
  edit?: (f: Fixture) => void;
}

export function planFixture(name: string, options: PlanFixtureOptions = {}): PlanResult {
  const f = loadFixture(name);
  options.edit?.(f);
  return planFromSnapshots(f.source, f.destination, {
    policy: validatePolicy(options.policy ?? {}, "test-policy"),
    postcopy: options.postcopy ?? false,
    copyStorage: options.copyStorage ?? false,
  });
}

/** The plan row of bitmap `bitmap` (on node or drive `node` when given). */
export function row(plan: Plan, bitmap: string, node?: string): PlanBitmap {
  const found = plan.bitmaps.filter(
    (b) =>
      b.source.bitmap === bitmap && (node === undefined || b.source.node === node || b.source.drive === node),
  );
  if (found.length !== 1)
    throw new Error(`expected one row for ${node ?? "*"}/${bitmap}, found ${found.length}`);
  const only = found[0];
  if (!only) throw new Error("unreachable");
  return only;
}

export function codes(plan: Plan): string[] {
  return plan.errors.map((e) => e.code).sort();
}
