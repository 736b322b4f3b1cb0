import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fc from "fast-check";
import { BitmapScanner, scanStream } from "../../src/qcow2/bits.js";

/** The obvious bit-by-bit reading of the specification, to hold the word-at-a-time scanner to. */
function naive(stream: Uint8Array, nbits: number, hashBytes: number) {
  let setBits = 0;
  const runs: [number, number][] = [];
  let start = -1;
  for (let i = 0; i < nbits; i++) {
    const set = (((stream[i >> 3] ?? 0) >> (i & 7)) & 1) === 1;
    if (set) setBits++;
    if (set && start < 0) start = i;
    if (!set && start >= 0) {
      runs.push([start, i]);
      start = -1;
    }
  }
  if (start >= 0) runs.push([start, nbits]);
  const sha256 = createHash("sha256").update(stream.subarray(0, hashBytes)).digest("hex");
  return { setBits, runs, sha256 };
}

type Piece = { kind: "bytes"; bytes: Uint8Array } | { kind: "fill"; n: number; ones: boolean };

/** Byte patterns that exercise the scanner's fast paths (0x00 and 0xff words) as well as mixed words. */
const byteArb = fc.oneof(
  { weight: 3, arbitrary: fc.constant(0) },
  { weight: 3, arbitrary: fc.constant(0xff) },
  { weight: 4, arbitrary: fc.integer({ min: 0, max: 255 }) },
);

const pieceArb: fc.Arbitrary<Piece> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc
      .array(byteArb, { minLength: 0, maxLength: 40 })
      .map((a) => ({ kind: "bytes" as const, bytes: Uint8Array.from(a) })),
  },
  {
    // Fed as bytes, long runs of one value make whole 0x00000000 / 0xffffffff words.
    weight: 2,
    arbitrary: fc
      .record({ b: byteArb, n: fc.integer({ min: 0, max: 40 }) })
      .map(({ b, n }) => ({ kind: "bytes" as const, bytes: new Uint8Array(n).fill(b) })),
  },
  {
    weight: 1,
    arbitrary: fc
      .record({ n: fc.integer({ min: 0, max: 24 }), ones: fc.boolean() })
      .map((r) => ({ kind: "fill" as const, ...r })),
  },
);

describe("BitmapScanner", () => {
  it("finds the runs, the count and the hash of the specification's worked example", () => {
    // Reference 1.6: bit 0, bits 48-63 and bit 160 set; 161 bits; 24 hashed bytes.
    const stream = new Uint8Array(64);
    stream[0] = 0x01;
    stream[6] = 0xff;
    stream[7] = 0xff;
    stream[20] = 0x01;
    const runs: [number, number][] = [];
    const r = scanStream(stream, 161, 24, { sha256: true, onRun: (s, e) => runs.push([s, e]) });
    assert.deepEqual(runs, [
      [0, 1],
      [48, 64],
      [160, 161],
    ]);
    assert.equal(r.setBits, 18);
    assert.equal(r.sha256, createHash("sha256").update(stream.subarray(0, 24)).digest("hex"));
  });

  it("hashes an empty bitmap as QEMU's documented empty hashes", () => {
    const h = (n: number) => scanStream(new Uint8Array(n), n * 8, n, { sha256: true }).sha256;
    assert.equal(h(8), "af5570f5a1810b7af78caf4bc70a660f0df51e42baf91d4de5b2328de0e83dfc");
    assert.equal(h(24), "9d908ecfb6b256def8b49a7c504e6c889c4b0e41fe6ce3e01863dd7b61a20aa0");
  });

  it("ignores tail bits for count and runs, but keeps them in the hash", () => {
    const stream = new Uint8Array(8).fill(0xff);
    const runs: [number, number][] = [];
    const r = scanStream(stream, 11, 8, { sha256: true, onRun: (s, e) => runs.push([s, e]) });
    assert.equal(r.setBits, 11);
    assert.deepEqual(runs, [[0, 11]]);
    // Reference 2.2: an 11-bit bitmap read from an all-ones entry hashes as 8 bytes of 0xff.
    assert.equal(r.sha256, "12a3ae445661ce5dee78d0650d33362dec29c4f82af05e7e57fb595bbbacf0ca");
  });

  it("keeps a run open across an empty fill", () => {
    const runs: [number, number][] = [];
    const s = new BitmapScanner(9, 2, { onRun: (a, b) => runs.push([a, b]) });
    s.feed(Uint8Array.of(0xff));
    s.fill(0, false);
    s.feed(Uint8Array.of(0x01));
    assert.equal(s.finish().setBits, 9);
    assert.deepEqual(runs, [[0, 9]]);
  });

  it("agrees with a bit-by-bit reading for any stream, chunking, fills, offset alignment and length", () => {
    fc.assert(
      fc.property(
        fc.array(pieceArb, { minLength: 0, maxLength: 12 }),
        fc.integer({ min: 0, max: 3 }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        (pieces, misalign, nbitsFrac, hashFrac) => {
          const whole: number[] = [];
          for (const p of pieces) {
            if (p.kind === "bytes") whole.push(...p.bytes);
            else for (let i = 0; i < p.n; i++) whole.push(p.ones ? 0xff : 0);
          }
          const stream = Uint8Array.from(whole);
          const nbits = Math.floor(nbitsFrac * stream.length * 8);
          const hashBytes = Math.floor(hashFrac * stream.length);
          const runs: [number, number][] = [];
          const s = new BitmapScanner(nbits, hashBytes, { sha256: true, onRun: (a, b) => runs.push([a, b]) });
          const counting = new BitmapScanner(nbits, hashBytes);
          for (const p of pieces) {
            if (p.kind === "fill") {
              s.fill(p.n, p.ones);
              counting.fill(p.n, p.ones);
            } else {
              // Copy to a misaligned view so that both the Uint32Array and the copying path run.
              const backing = new Uint8Array(p.bytes.length + misalign);
              backing.set(p.bytes, misalign);
              const view = backing.subarray(misalign);
              s.feed(view);
              counting.feed(view);
            }
          }
          const got = s.finish();
          const want = naive(stream, nbits, hashBytes);
          assert.equal(got.setBits, want.setBits);
          assert.equal(counting.finish().setBits, want.setBits);
          assert.deepEqual(runs, want.runs);
          assert.equal(got.sha256, want.sha256);
        },
      ),
      { numRuns: 1000 },
    );
  });
});
