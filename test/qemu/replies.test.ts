/**
 * The hand-written reply guards of src/qemu/replies.ts against the zod schemas they replaced (kept here, verbatim,
 * as the reference): on replies captured from real QEMU and on thousands of broken variants of them, both accept
 * the same replies with the same result (same keys, same order) and reject the others with the same first problem.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { z } from "zod";
import * as R from "../../src/qemu/replies.js";
import { validateReply, QemuReplyError } from "../../src/qemu/monitor.js";
import type { Guard } from "../../src/qemu/guard.js";

const safeInt = z.number().int().refine(Number.isSafeInteger, "integer beyond 2^53");
const BlockDirtyInfo = z.object({
  name: z.string().optional(),
  count: safeInt,
  granularity: safeInt,
  recording: z.boolean(),
  busy: z.boolean(),
  persistent: z.boolean(),
  inconsistent: z.boolean().optional(),
});
const Qcow2StoredBitmap = z.object({ name: z.string(), granularity: safeInt, flags: z.array(z.string()) });
const ImageInfo = z.object({
  "virtual-size": safeInt,
  filename: z.string().optional(),
  format: z.string().optional(),
  "format-specific": z
    .object({
      type: z.string(),
      data: z
        .object({ compat: z.string().optional(), bitmaps: z.array(Qcow2StoredBitmap).optional() })
        .optional(),
    })
    .optional(),
});
const BlockDeviceInfo = z.object({
  "node-name": z.string(),
  drv: z.string(),
  ro: z.boolean(),
  file: z.string().optional(),
  image: ImageInfo,
  "dirty-bitmaps": z.array(BlockDirtyInfo).optional(),
});
const BlockInfo = z.object({
  device: z.string(),
  qdev: z.string().optional(),
  inserted: z.object({ "node-name": z.string() }).optional(),
});
const BlockGraph = z.object({
  nodes: z.array(z.object({ id: safeInt, type: z.string(), name: z.string() })),
  edges: z.array(z.object({ parent: safeInt, child: safeInt, name: z.string() })),
});
const BitmapAliasMapping = z.array(
  z.object({
    "node-name": z.string(),
    alias: z.string(),
    bitmaps: z.array(
      z.object({
        name: z.string(),
        alias: z.string(),
        transform: z.object({ persistent: z.boolean().optional() }).optional(),
      }),
    ),
  }),
);
const RamStats = z.object({
  transferred: safeInt,
  remaining: safeInt,
  total: safeInt,
  mbps: z.number().optional(),
  "dirty-sync-count": safeInt.optional(),
});
const reference = {
  NamedBlockNodes: z.array(BlockDeviceInfo),
  BlockInfoList: z.array(BlockInfo),
  BlockGraph,
  StatusInfo: z.object({ status: z.string(), running: z.boolean() }),
  MigrationCapabilityList: z.array(z.object({ capability: z.string(), state: z.boolean() })),
  MigrationParameters: z.object({
    "downtime-limit": safeInt.optional(),
    "max-bandwidth": safeInt.optional(),
    "block-bitmap-mapping": BitmapAliasMapping.optional(),
  }),
  MigrationInfo: z.object({
    status: z.string().optional(),
    "error-desc": z.string().optional(),
    "total-time": safeInt.optional(),
    downtime: safeInt.optional(),
    "expected-downtime": safeInt.optional(),
    "setup-time": safeInt.optional(),
    ram: RamStats.optional(),
  }),
  Sha256Reply: z.object({ sha256: z.string().regex(/^[0-9a-f]{64}$/) }),
  VersionInfo: z.object({
    qemu: z.object({ major: safeInt, minor: safeInt, micro: safeInt }),
    package: z.string(),
  }),
  MemorySizeSummary: z.object({ "base-memory": safeInt, "plugged-memory": safeInt.optional() }),
  BlockJobInfoList: z.array(
    z.object({
      device: z.string(),
      type: z.string(),
      len: safeInt,
      offset: safeInt,
      ready: z.boolean(),
      status: z.string().optional(),
    }),
  ),
};
type Name = keyof typeof reference;

/** What zod said, in the words validateReply used with it. */
function viaZod(
  schema: z.ZodType,
  raw: unknown,
): { ok: true; value: string } | { ok: false; message: string } {
  const r = schema.safeParse(raw);
  if (r.success) return { ok: true, value: JSON.stringify(r.data) };
  const issue = r.error.issues[0];
  return { ok: false, message: issue ? `${issue.path.join(".") || "(root)"}: ${issue.message}` : "invalid" };
}

function viaGuard(
  guard: Guard<unknown>,
  raw: unknown,
): { ok: true; value: string } | { ok: false; message: string } {
  try {
    return { ok: true, value: JSON.stringify(validateReply(guard, "cmd", raw)) };
  } catch (err) {
    assert.ok(err instanceof QemuReplyError, String(err));
    return { ok: false, message: err.message.replace(/^unexpected reply to cmd from QEMU: /, "") };
  }
}

/** Valid replies of every shape: the captured fixtures, and hand-made ones for what fixtures do not hold. */
function samples(): [Name, unknown][] {
  const out: [Name, unknown][] = [];
  const dir = path.join(import.meta.dirname, "..", "fixtures", "qmp");
  for (const f of readdirSync(dir)
    .filter((n) => n.endsWith(".json"))
    .sort()) {
    const fx = JSON.parse(readFileSync(path.join(dir, f), "utf8")) as Record<string, Record<string, unknown>>;
    for (const side of [fx.source, fx.destination]) {
      if (!side) continue;
      out.push(["VersionInfo", side.version], ["StatusInfo", side.status]);
      out.push(["NamedBlockNodes", side.namedNodes], ["BlockInfoList", side.blockBackends]);
      if (side.blockGraph !== null) out.push(["BlockGraph", side.blockGraph]);
      out.push(["MigrationParameters", side.migrationParameters]);
      out.push(["MigrationCapabilityList", side.migrationCapabilities]);
      if (side.memory !== null) out.push(["MemorySizeSummary", side.memory]);
    }
  }
  out.push(["Sha256Reply", { sha256: "a".repeat(64), extra: 1 }]);
  out.push([
    "MigrationInfo",
    { status: "active", "total-time": 12, ram: { transferred: 1, remaining: 2, total: 3, mbps: 0.5, x: 1 } },
  ]);
  out.push([
    "MigrationParameters",
    {
      "downtime-limit": 300,
      "block-bitmap-mapping": [
        {
          "node-name": "n",
          alias: "a",
          bitmaps: [{ name: "b", alias: "c", transform: { persistent: true } }],
        },
      ],
    },
  ]);
  out.push([
    "BlockJobInfoList",
    [{ device: "d", type: "mirror", len: 10, offset: 5, ready: false, status: "running", busy: false }],
  ]);
  return out;
}

const HOSTILE: (() => unknown)[] = [
  () => null,
  () => "x",
  () => "",
  () => 0,
  () => 1.5,
  () => -1,
  () => 2 ** 53,
  () => -(2 ** 60),
  () => JSON.parse("1e400") as number,
  () => JSON.parse("-1e400") as number,
  () => true,
  () => [],
  () => [1],
  () => ({}),
  () => ({ a: 1 }),
  () => "0".repeat(64),
  () => "g".repeat(64),
];

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Every place in a JSON value (containers and the key or index leading to each member). */
function places(
  v: unknown,
  out: { parent: Record<string, unknown> | unknown[]; key: string | number }[] = [],
) {
  if (Array.isArray(v)) {
    v.forEach((x, i) => {
      out.push({ parent: v, key: i });
      places(x, out);
    });
  } else if (typeof v === "object" && v !== null) {
    for (const [k, x] of Object.entries(v)) {
      out.push({ parent: v as Record<string, unknown>, key: k });
      places(x, out);
    }
  }
  return out;
}

describe("reply guards", () => {
  it("accept and reject exactly what the zod schemas did, with the same first problem", () => {
    const random = rng(16);
    let rejected = 0;
    let compared = 0;
    for (const [name, sample] of samples()) {
      const guard = R[name] as Guard<unknown>;
      const schema = reference[name];
      assert.deepEqual(viaGuard(guard, sample), viaZod(schema, sample), `${name}: valid sample`);
      for (const h of HOSTILE) assert.deepEqual(viaGuard(guard, h()), viaZod(schema, h()), `${name}: root`);
      // Large replies (hundreds of nodes) get fewer variants each: their places are alike.
      for (let n = 0; n < 60; n++) {
        const broken = structuredClone(sample);
        const all = places(broken);
        const p = all[Math.floor(random() * all.length)];
        if (!p) continue;
        const r = random();
        if (r < 0.15 && !Array.isArray(p.parent)) Reflect.deleteProperty(p.parent, p.key);
        else {
          const h = HOSTILE[Math.floor(random() * HOSTILE.length)] as () => unknown;
          (p.parent as Record<string | number, unknown>)[p.key] = h();
        }
        const expected = viaZod(schema, broken);
        assert.deepEqual(viaGuard(guard, broken), expected, `${name}: broken at ${String(p.key)}`);
        compared++;
        if (!expected.ok) rejected++;
      }
    }
    // The variants must include many that zod rejected, or the comparison would prove little.
    assert.ok(rejected > compared / 4, `${rejected} of ${compared} variants rejected`);
  });

  it("name the command and the field in the error", () => {
    assert.throws(
      () => validateReply(R.NamedBlockNodes, "query-named-block-nodes", [{ "node-name": "a", drv: 1 }]),
      (err: unknown) =>
        err instanceof QemuReplyError &&
        err.message ===
          "unexpected reply to query-named-block-nodes from QEMU: 0.drv: Invalid input: expected string, received number",
    );
  });
});
