import { open, readFile, rm, writeFile, mkdtemp } from "node:fs/promises";
import path from "node:path";
import assert from "node:assert/strict";
import fc from "fast-check";
import { Lab } from "../../src/lab/lab.js";
import { runCli } from "../helpers/cli.js";
import { layoutOf } from "../qcow2/helpers/bytes.js";
import { qemuIoWrite } from "../qcow2/helpers/qemu.js";
import {
  hasStackTrace,
  property,
  within,
  type HostileOptions,
  type HostileReport,
} from "./hostile-common.js";

/**
 * What test/qcow2 does not cover yet: the command line over corrupt images (exit status 1 with a stable code, one
 * JSON document or one line, never a stack trace), and images whose structures point into a large sparse file
 * (the reader's own fuzzing runs on small in-memory buffers, where such pointers fall beyond the end). Both reuse
 * test/qcow2's helpers.
 */

const MiB = 1024 * 1024;
/** Codes `inspect` may end with on a hostile image (exit 1), and BITMAP_NOT_FOUND for --bitmap (exit 2). */
const IMAGE_CODES = new Set([
  "NOT_QCOW2",
  "QCOW2_CORRUPT",
  "QCOW2_UNSUPPORTED",
  "QCOW2_LIMIT",
  "IMAGE_READ_FAILED",
]);
/** The sparse files stay far below this on disk: only the base image's few KiB are ever written. */
const SPARSE_SIZE = 4 * 1024 * MiB;

interface Base {
  bytes: Buffer;
  hot: number[];
  names: string[];
}

async function baseImage(): Promise<Base> {
  const lab = Lab.create({ prefix: "bf-q-" });
  try {
    const file = await lab.createImage("base.qcow2", 8 * MiB, {
      clusterSize: 512,
      bitmaps: [
        { name: "fine", granularity: 512 },
        { name: "coarse", granularity: 65536 },
        { name: "off", granularity: 4096, disabled: true },
      ],
    });
    await qemuIoWrite(file, [
      [0, 1000],
      [4 * MiB - 300, 5000],
    ]);
    const bytes = await readFile(file);
    const l = await layoutOf(bytes);
    const hot = new Set<number>();
    for (let i = 0; i < 120; i++) hot.add(i);
    for (let i = 0; i < 16; i++) hot.add(l.bitmaps.offset + i);
    for (let i = 0; i < l.bitmaps.directorySize; i++) hot.add(l.bitmaps.directoryOffset + i);
    for (const e of l.entries)
      for (let i = 0; i < e.entry.tableSize * 8; i++) hot.add(e.entry.tableOffset + i);
    return {
      bytes,
      hot: [...hot].filter((o) => o < bytes.length),
      names: l.entries.map((e) => e.entry.name),
    };
  } finally {
    await lab.cleanup();
  }
}

interface Patch {
  at: number;
  width: 1 | 4 | 8;
  value: bigint;
}

const INTERESTING = [
  0n,
  1n,
  0x7fn,
  0xffn,
  0x200n,
  0x10000n,
  0x7fffffffn,
  0xffffffffn,
  0x80000000n,
  0xffffffffffffffffn,
];

function patches(base: Base, sparse: boolean): fc.Arbitrary<Patch[]> {
  const at = fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...base.hot) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: base.bytes.length - 1 }) },
  );
  // Offsets into the sparse tail: structures the header claims live there (all zeroes when read).
  const far = fc
    .bigInt({ min: BigInt(base.bytes.length), max: BigInt(SPARSE_SIZE - 4096) })
    .map((v) => v & ~0x1ffn);
  const value = fc.oneof(
    fc.constantFrom(...INTERESTING),
    fc.bigInt({ min: 0n, max: 0xffffffffffffffffn }),
    ...(sparse ? [far] : []),
  );
  return fc.array(fc.record({ at, width: fc.constantFrom(1 as const, 4 as const, 8 as const), value }), {
    minLength: 1,
    maxLength: 6,
  });
}

function apply(buf: Buffer, ps: Patch[]): void {
  for (const p of ps) {
    const at = p.width === 1 ? p.at : p.at & ~(p.width - 1);
    if (at + p.width > buf.length) continue;
    if (p.width === 1) buf.writeUInt8(Number(p.value & 0xffn), at);
    else if (p.width === 4) buf.writeUInt32BE(Number(p.value & 0xffffffffn), at);
    else buf.writeBigUInt64BE(p.value & 0xffffffffffffffffn, at);
  }
}

async function inspectCli(file: string, flags: string[], json: boolean): Promise<void> {
  const heap = process.memoryUsage().heapUsed;
  const r = await within(5_000, `inspect ${flags.join(" ")}`, () =>
    runCli(["inspect", file, ...flags, ...(json ? ["--json"] : [])]),
  );
  const grew = process.memoryUsage().heapUsed - heap;
  assert.ok(grew < 512 * MiB, `heap grew by ${grew} bytes`);
  const bitmapFlag = flags.includes("--bitmap");
  assert.ok(r.code === 0 || r.code === 1 || (bitmapFlag && r.code === 2), `exit ${r.code}: ${r.stderr}`);
  assert.ok(!hasStackTrace(r.stderr), `stack trace: ${r.stderr}`);
  if (json) {
    const doc = r.json() as { ok: boolean; error?: { code: string }; bitmaps?: { name: string }[] };
    if (r.code === 0) assert.equal(doc.ok, true);
    else {
      const code = doc.error?.code ?? "";
      assert.ok(IMAGE_CODES.has(code) || (r.code === 2 && code === "BITMAP_NOT_FOUND"), `code ${code}`);
    }
  } else if (r.code !== 0) {
    assert.equal(r.stdout, "");
    assert.equal(r.stderr.trimEnd().split("\n").length, 1, `one line: ${r.stderr}`);
    assert.match(r.stderr, /\[[A-Z0-9_]+\]\n$/);
  }
}

const flagSets = (names: string[]): fc.Arbitrary<string[]> =>
  fc.oneof(
    fc.constant<string[]>([]),
    fc.constant<string[]>(["--sha256"]),
    fc.constant<string[]>(["--extents", "--sha256"]),
    fc.constantFrom(...names).map((n) => ["--bitmap", n, "--extents"]),
  );

export async function fuzzQcow2(o: HostileOptions): Promise<HostileReport[]> {
  const F = "qcow2 image";
  const base = await baseImage();
  const dir = await mkdtemp("/tmp/bf-img-");
  let n = 0;
  try {
    const out: HostileReport[] = [];
    out.push(
      await property(
        F,
        "bitferry inspect over mutated images: exit 0 or 1 (2 for an unknown --bitmap), a stable code, no stack trace",
        fc.tuple(patches(base, false), flagSets(base.names), fc.boolean()),
        async ([ps, flags, json]) => {
          const buf = Buffer.from(base.bytes);
          apply(buf, ps);
          const file = path.join(dir, `m${n++ % 8}.qcow2`);
          await writeFile(file, buf);
          await inspectCli(file, flags, json);
        },
        o,
      ),
    );
    out.push(
      await property(
        F,
        "structures pointing into a 4 GiB sparse file: bounded time and memory",
        fc.tuple(patches(base, true), flagSets(base.names)),
        async ([ps, flags]) => {
          const buf = Buffer.from(base.bytes);
          apply(buf, ps);
          const file = path.join(dir, `s${n++ % 4}.qcow2`);
          await writeFile(file, buf);
          // Extending with truncate writes nothing: the tail is a hole that reads as zeroes.
          const h = await open(file, "r+");
          await h.truncate(SPARSE_SIZE);
          await h.close();
          await inspectCli(file, flags, true);
        },
        { ...o, runs: Math.max(10, Math.floor(o.runs / 3)) },
      ),
    );
    return out;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
