import { before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import fc from "fast-check";
import { NotQcow2Error, Qcow2CorruptError, Qcow2UnsupportedError } from "../../src/qcow2/errors.js";
import { inspectSource, type InspectDocument } from "../../src/qcow2/inspect.js";
import { HEADER_READ_LENGTH } from "../../src/qcow2/header.js";
import { withLab } from "../helpers/lab.js";
import { InstrumentedSource, layoutOf } from "./helpers/bytes.js";
import { qemuIoWrite } from "./helpers/qemu.js";

const MiB = 1024 * 1024;

let base: Buffer;
/** Offsets of every metadata byte of the base image: header, extensions, directory, tables, data clusters. */
let hot: number[];

/** The only outcomes allowed: a document, or one of the reader's own format errors. */
async function check(bytes: Uint8Array): Promise<void> {
  const src = new InstrumentedSource(bytes);
  let doc: InspectDocument | undefined;
  try {
    doc = await inspectSource(src, "fuzz.qcow2", { extents: true, sha256: true });
  } catch (err) {
    const own =
      err instanceof NotQcow2Error ||
      err instanceof Qcow2CorruptError ||
      err instanceof Qcow2UnsupportedError;
    if (!own) throw new Error(`unexpected ${String(err)}`, { cause: err });
  }
  assert.deepEqual(src.violations, []);
  // No byte is read twice (but the header, which the extension area read may cover again): each structure is
  // read once and none overlaps another, so the work is bounded by the file, whatever sizes it claims.
  const times = new Uint8Array(bytes.byteLength);
  for (const r of src.reads) {
    for (let i = r.position; i < r.position + r.length; i++) {
      times[i] = (times[i] ?? 0) + 1;
      if ((times[i] ?? 0) > (i < HEADER_READ_LENGTH ? 2 : 1)) assert.fail(`byte ${i} read more than once`);
    }
  }
  if (doc !== undefined) checkDocument(doc);
}

function checkDocument(doc: InspectDocument): void {
  for (const b of doc.bitmaps) {
    const extents = b.extents ?? [];
    let covered = 0;
    let prevEnd = -1;
    for (const e of extents) {
      assert.ok(e.length > 0 && e.start > prevEnd, `${b.name}: extents sorted, merged, not empty`);
      assert.ok(e.start + e.length <= doc.image.virtualSize, `${b.name}: clipped to the virtual size`);
      prevEnd = e.start + e.length;
      covered += e.length;
    }
    // Only the partial last granule can make the count exceed the extents.
    assert.ok(covered <= b.dirtyBytes && b.dirtyBytes - covered < b.granularity, b.name);
    assert.match(b.sha256 ?? "", /^[0-9a-f]{64}$/);
  }
}

const interesting = [
  0, 1, 2, 7, 8, 0x7f, 0x80, 0xff, 0x100, 0x1ff, 0x200, 0xfff, 0x1000, 0xffff, 0x10000, 0x7fffffff,
  0x80000000, 0xffffffff,
];

type Mutation =
  | { kind: "byte"; at: number; value: number }
  | { kind: "u32"; at: number; value: number }
  | { kind: "u64"; at: number; hi: number; lo: number }
  | { kind: "bit"; at: number; bit: number };

function mutationArb(size: number): fc.Arbitrary<Mutation> {
  const at = fc.oneof(
    { weight: 3, arbitrary: fc.integer({ min: 0, max: hot.length - 1 }).map((i) => hot[i] ?? 0) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: size - 1 }) },
  );
  const word = fc.oneof(fc.constantFrom(...interesting), fc.integer({ min: 0, max: 0xffffffff }));
  return fc.oneof(
    fc.record({ kind: fc.constant("byte" as const), at, value: fc.integer({ min: 0, max: 255 }) }),
    fc.record({ kind: fc.constant("bit" as const), at, bit: fc.integer({ min: 0, max: 7 }) }),
    fc.record({ kind: fc.constant("u32" as const), at: at.map((a) => a & ~3), value: word }),
    fc.record({ kind: fc.constant("u64" as const), at: at.map((a) => a & ~7), hi: word, lo: word }),
  );
}

function apply(buf: Buffer, m: Mutation): void {
  const fits = (n: number) => m.at >= 0 && m.at + n <= buf.length;
  switch (m.kind) {
    case "byte":
      if (fits(1)) buf[m.at] = m.value;
      break;
    case "bit":
      if (fits(1)) buf[m.at] = (buf[m.at] ?? 0) ^ (1 << m.bit);
      break;
    case "u32":
      if (fits(4)) buf.writeUInt32BE(m.value >>> 0, m.at);
      break;
    case "u64":
      if (fits(8)) {
        buf.writeUInt32BE(m.hi >>> 0, m.at);
        buf.writeUInt32BE(m.lo >>> 0, m.at + 4);
      }
      break;
  }
}

describe("fuzzing the qcow2 reader", () => {
  before(async () => {
    await withLab(async (lab) => {
      // 512-byte clusters keep the image a few KiB while tables still have several entries.
      const file = await lab.createImage("fuzz.qcow2", 8 * MiB, {
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
        [8 * MiB - 512, 512],
      ]);
      base = await readFile(file);
    });
    const l = await layoutOf(base);
    const set = new Set<number>();
    for (let i = 0; i < 600; i++) set.add(i);
    for (let i = 0; i < l.bitmaps.directorySize; i++) set.add(l.bitmaps.directoryOffset + i);
    for (const e of l.entries) {
      for (let i = 0; i < e.entry.tableSize * 8; i++) set.add(e.entry.tableOffset + i);
      for (const d of e.dataClusters) for (let i = 0; i < 32; i++) set.add(d + i);
    }
    hot = [...set].filter((o) => o < base.length);
    assert.ok(
      l.entries.some((e) => e.table.length > 1),
      "tables with several entries",
    );
  });

  it("survives random mutations of a valid image: a result or its own error, in bounds and in time", async () => {
    await check(base);
    await fc.assert(
      fc.asyncProperty(fc.array(mutationArb(base.length), { minLength: 1, maxLength: 8 }), async (ms) => {
        const buf = Buffer.from(base);
        for (const m of ms) apply(buf, m);
        await check(buf);
      }),
      { numRuns: 2000 },
    );
  });

  it("survives truncated and mutated images", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: base.length }),
        fc.array(mutationArb(base.length), { maxLength: 3 }),
        async (len, ms) => {
          const buf = Buffer.from(base.subarray(0, len));
          for (const m of ms) apply(buf, m);
          await check(buf);
        },
      ),
      { numRuns: 500 },
    );
  });

  it("survives random buffers, with and without a qcow2 header in front", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(0, 4, 72, 104, 600),
        fc.uint8Array({ minLength: 0, maxLength: 8192 }),
        async (keep, tail) => {
          await check(Buffer.concat([base.subarray(0, keep), tail]));
        },
      ),
      { numRuns: 500 },
    );
  });
});
