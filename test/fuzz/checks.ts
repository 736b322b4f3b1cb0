import { isDeepStrictEqual } from "node:util";
import type { QemuProcess } from "../../src/lab/process.js";
import { inspectImage } from "../../src/qcow2/inspect.js";
import { bitmapStates, type BitmapState } from "../helpers/bitmaps.js";

/** Collects failed expectations instead of throwing at the first, so one run reports everything that differs. */
export class Findings {
  readonly list: string[] = [];

  check(ok: boolean, message: string | (() => string)): boolean {
    if (!ok) this.list.push(typeof message === "string" ? message : message());
    return ok;
  }

  equal(actual: unknown, expected: unknown, what: string): boolean {
    return this.check(
      isDeepStrictEqual(actual, expected),
      () => `${what}: got ${short(actual)}, expected ${short(expected)}`,
    );
  }

  get ok(): boolean {
    return this.list.length === 0;
  }
}

/** JSON.stringify, typed as what it returns at run time (undefined for undefined and functions). */
export function toJson(v: unknown): string | undefined {
  const out: unknown = JSON.stringify(v);
  return typeof out === "string" ? out : undefined;
}

export function short(v: unknown): string {
  const s = toJson(v) ?? String(v);
  return s.length > 300 ? `${s.slice(0, 300)}…` : s;
}

// One reading of a QEMU's bitmaps for the tests and the fuzzer alike.
export { bitmapStates, type BitmapState };

/** What bitferry may change on a QEMU: read raw, so that any difference at all shows. */
export interface MigrationSettings {
  capabilities: unknown;
  parameters: unknown;
  migration: unknown;
  status: string;
}

export async function migrationSettings(proc: QemuProcess): Promise<MigrationSettings> {
  const q = proc.qmp;
  const status = (await proc.monitor.status()).status;
  return {
    capabilities: await q.execute("query-migrate-capabilities"),
    parameters: await q.execute("query-migrate-parameters"),
    migration: await q.execute("query-migrate"),
    status,
  };
}

/**
 * The source's guarantee after a failure: it runs in its previous state, every bitmap is present, unchanged and
 * not busy. Returns the findings; `before` is the state taken before the run.
 */
export async function checkSourceAlive(
  f: Findings,
  source: QemuProcess,
  before: Map<string, BitmapState>,
  runState: string,
): Promise<void> {
  f.equal((await source.monitor.status()).status, runState, "source run state");
  const after = await bitmapStates(source);
  f.equal([...after.keys()].sort(), [...before.keys()].sort(), "source bitmaps");
  for (const [key, b] of before) {
    const a = after.get(key);
    if (!a) continue;
    f.equal(a.sha256, b.sha256, `${key} content`);
    f.equal(a.busy, b.busy, `${key} busy`);
    f.equal(a.persistent, b.persistent, `${key} persistence`);
    f.equal(a.recording, b.recording, `${key} recording`);
    f.equal(a.granularity, b.granularity, `${key} granularity`);
  }
}

/**
 * After a clean shutdown the source's image stores every persistent bitmap of `node` without in-use, with the
 * content and enabled state it had (read with bitferry's own qcow2 reader).
 */
export async function checkStored(
  f: Findings,
  image: string,
  node: string,
  before: Map<string, BitmapState>,
): Promise<void> {
  const expected = [...before.values()].filter((b) => b.node === node && b.persistent);
  let doc;
  try {
    doc = await inspectImage(image, { sha256: true });
  } catch (err) {
    f.check(false, `inspect ${image}: ${String(err)}`);
    return;
  }
  f.equal(
    doc.bitmaps.map((b) => b.name).sort(),
    expected.map((b) => b.name).sort(),
    `bitmaps stored in ${image}`,
  );
  for (const b of doc.bitmaps) {
    const e = expected.find((x) => x.name === b.name);
    f.check(!b.inUse, `${b.name} is stored in ${image} flagged in use`);
    if (!e) continue;
    f.equal(b.sha256, e.sha256, `${b.name} stored content`);
    f.equal(b.auto, e.recording, `${b.name} stored enabled state`);
    f.equal(b.granularity, e.granularity, `${b.name} stored granularity`);
  }
}
