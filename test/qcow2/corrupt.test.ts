import { before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { Qcow2Error } from "../../src/qcow2/errors.js";
import { inspectSource, type InspectDocument } from "../../src/qcow2/inspect.js";
import { withLab } from "../helpers/lab.js";
import {
  InstrumentedSource,
  getU32,
  getU64,
  layoutOf,
  setU16,
  setU32,
  setU64,
  setU8,
  type Layout,
} from "./helpers/bytes.js";
import { qemuIoWrite } from "./helpers/qemu.js";

const MiB = 1024 * 1024;

type Expect =
  | { code: "NOT_QCOW2" | "QCOW2_CORRUPT" | "QCOW2_UNSUPPORTED"; message: RegExp }
  | { warning: "BITMAPS_INCONSISTENT" | "IMAGE_MARKED_CORRUPT" | "BITMAPS_IN_USE"; bitmaps: number };

interface Case {
  name: string;
  patch: (buf: Buffer, l: Layout) => Buffer;
  expect: Expect;
}

let base: Buffer;
let layout: Layout;

async function inspect(
  buf: Uint8Array,
): Promise<{ doc?: InspectDocument; err?: unknown; src: InstrumentedSource }> {
  const src = new InstrumentedSource(buf);
  try {
    return { doc: await inspectSource(src, "corpus.qcow2", { extents: true, sha256: true }), src };
  } catch (err) {
    return { err, src };
  }
}

/** Entry i's field at `rel` bytes into its directory entry. */
const entryAt = (l: Layout, i: number, rel: number): number => (l.entries[i]?.entry.offset ?? NaN) + rel;
const extData = (l: Layout, rel: number): number => l.bitmaps.offset + 8 + rel;

const cases: Case[] = [
  // ---- header ----
  { name: "empty file", patch: (b) => b.subarray(0, 0), expect: { code: "NOT_QCOW2", message: /too short/ } },
  {
    name: "bad magic",
    patch: (b) => (setU8(b, 3, 0xfa), b),
    expect: { code: "NOT_QCOW2", message: /not a qcow2 image.*51 46 49 fa/ },
  },
  {
    name: "a raw disk's first sector",
    patch: (b) => (b.fill(0, 0, 512), setU16(b, 510, 0x55aa), b),
    expect: { code: "NOT_QCOW2", message: /00 00 00 00/ },
  },
  {
    name: "version 1",
    patch: (b) => (setU32(b, 4, 1), b),
    expect: { code: "QCOW2_UNSUPPORTED", message: /version 1 /i },
  },
  {
    name: "version 4",
    patch: (b) => (setU32(b, 4, 4), b),
    expect: { code: "QCOW2_UNSUPPORTED", message: /version 4 /i },
  },
  {
    name: "version 2 with a bitmaps extension",
    patch: (b, l) => {
      // A v2 header is 72 bytes: move the bitmaps extension record there and end the list after it.
      const rec = Buffer.from(b.subarray(l.bitmaps.offset, l.bitmaps.offset + 32));
      setU32(b, 4, 2);
      rec.copy(b, 72);
      b.fill(0, 104, 112);
      return b;
    },
    expect: { warning: "BITMAPS_INCONSISTENT", bitmaps: 0 },
  },
  {
    name: "cluster_bits 8",
    patch: (b) => (setU32(b, 20, 8), b),
    expect: { code: "QCOW2_CORRUPT", message: /cluster_bits is 8/ },
  },
  {
    name: "cluster_bits 22",
    patch: (b) => (setU32(b, 20, 22), b),
    expect: { code: "QCOW2_UNSUPPORTED", message: /cluster_bits is 22/ },
  },
  {
    name: "cluster_bits 2^32-1",
    patch: (b) => (setU32(b, 20, 0xffffffff), b),
    expect: { code: "QCOW2_UNSUPPORTED", message: /cluster_bits is 4294967295/ },
  },
  {
    name: "header_length 103",
    patch: (b) => (setU32(b, 100, 103), b),
    expect: { code: "QCOW2_CORRUPT", message: /header_length is 103/ },
  },
  {
    name: "header_length beyond the cluster",
    patch: (b) => (setU32(b, 100, 65544), b),
    expect: { code: "QCOW2_CORRUPT", message: /header_length is 65544, larger than the cluster size/ },
  },
  {
    name: "backing_file_offset beyond the first cluster",
    patch: (b) => (setU64(b, 8, 65537), b),
    expect: { code: "QCOW2_CORRUPT", message: /backing_file_offset is 65537/ },
  },
  {
    name: "unknown incompatible feature bit 5",
    patch: (b) => (setU64(b, 72, getU64(b, 72) | (1n << 5n)), b),
    expect: { code: "QCOW2_UNSUPPORTED", message: /incompatible features.*bits 5\)/ },
  },
  {
    name: "virtual size beyond 2^53",
    patch: (b) => (setU64(b, 24, 1n << 60n), b),
    expect: { code: "QCOW2_UNSUPPORTED", message: /size is 1152921504606846976/ },
  },
  {
    name: "corrupt bit set (QEMU still reads such an image read-only)",
    patch: (b) => (setU64(b, 72, getU64(b, 72) | 2n), b),
    expect: { warning: "IMAGE_MARKED_CORRUPT", bitmaps: 2 },
  },
  {
    name: "autoclear bit 0 clear",
    patch: (b) => (setU64(b, 88, getU64(b, 88) & ~1n), b),
    expect: { warning: "BITMAPS_INCONSISTENT", bitmaps: 0 },
  },
  // ---- extensions ----
  {
    name: "bitmaps extension length past the end of the extension area",
    patch: (b, l) => (setU32(b, l.bitmaps.offset + 4, 0xffffffff), b),
    expect: {
      code: "QCOW2_CORRUPT",
      message: /claims 4294967295 bytes of data, past the end of the extension area/,
    },
  },
  {
    name: "first extension length past the end of the extension area",
    patch: (b) => (setU32(b, 116, 65536), b),
    expect: { code: "QCOW2_CORRUPT", message: /past the end of the extension area/ },
  },
  {
    name: "extension record cut by the end of the extension area",
    // The backing file name would start right after the bitmaps extension, 4 bytes into the end marker.
    patch: (b, l) => (setU64(b, 8, l.bitmaps.offset + 32 + 4), b),
    expect: { code: "QCOW2_CORRUPT", message: /do not fit/ },
  },
  {
    name: "bitmaps extension of 16 bytes",
    patch: (b, l) => (setU32(b, l.bitmaps.offset + 4, 16), b),
    expect: { code: "QCOW2_CORRUPT", message: /16 bytes long; it must be exactly 24/ },
  },
  {
    name: "two bitmaps extensions",
    patch: (b, l) => {
      const end = l.bitmaps.offset + 32;
      b.copy(b, end, l.bitmaps.offset, end);
      b.fill(0, end + 32, end + 40);
      return b;
    },
    expect: { code: "QCOW2_CORRUPT", message: /two bitmaps extensions/ },
  },
  {
    name: "bitmaps extension reserved field set",
    patch: (b, l) => (setU32(b, extData(l, 4), 1), b),
    expect: { code: "QCOW2_CORRUPT", message: /reserved field is 0x1/ },
  },
  {
    name: "nb_bitmaps 0",
    patch: (b, l) => (setU32(b, extData(l, 0), 0), b),
    expect: { code: "QCOW2_CORRUPT", message: /zero bitmaps/ },
  },
  {
    name: "nb_bitmaps beyond QEMU's limit",
    patch: (b, l) => (setU32(b, extData(l, 0), 65536), b),
    expect: { code: "QCOW2_UNSUPPORTED", message: /65536 bitmaps/ },
  },
  {
    name: "nb_bitmaps smaller than the directory",
    patch: (b, l) => (setU32(b, extData(l, 0), 1), b),
    expect: { code: "QCOW2_CORRUPT", message: /more entries than nb_bitmaps \(1\)/ },
  },
  {
    name: "nb_bitmaps larger than the directory",
    patch: (b, l) => (setU32(b, extData(l, 0), 3), b),
    expect: { code: "QCOW2_CORRUPT", message: /too small for 3 directory entries/ },
  },
  {
    name: "nb_bitmaps larger than the entries found",
    patch: (b, l) => {
      // 72 bytes hold three fixed parts, but a longer second name makes two entries fill them exactly.
      const grown = Buffer.concat([b, Buffer.alloc(8)]);
      setU32(grown, extData(l, 0), 3);
      setU64(grown, extData(l, 8), 72);
      setU16(grown, entryAt(l, 1, 18), 10);
      return grown;
    },
    expect: { code: "QCOW2_CORRUPT", message: /holds 2 entries, but nb_bitmaps says 3/ },
  },
  // ---- directory ----
  {
    name: "directory offset past the end of the file",
    patch: (b, l) => (setU64(b, extData(l, 16), Math.ceil(b.length / 65536) * 65536 + 65536), b),
    expect: { code: "QCOW2_CORRUPT", message: /bitmap directory .* extends past the end of the file/ },
  },
  {
    name: "directory offset 2^63",
    patch: (b, l) => (setU64(b, extData(l, 16), 1n << 63n), b),
    expect: { code: "QCOW2_CORRUPT", message: /extends past the end of the file/ },
  },
  {
    name: "directory offset not cluster-aligned",
    patch: (b, l) => (setU64(b, extData(l, 16), l.bitmaps.directoryOffset + 8), b),
    expect: { code: "QCOW2_CORRUPT", message: /not aligned/ },
  },
  {
    name: "directory inside the header cluster",
    patch: (b, l) => (setU64(b, extData(l, 16), 0), b),
    expect: { code: "QCOW2_CORRUPT", message: /inside the header cluster/ },
  },
  {
    name: "directory size beyond QEMU's limit",
    patch: (b, l) => (setU64(b, extData(l, 8), 67107841), b),
    expect: { code: "QCOW2_UNSUPPORTED", message: /67107841 bytes/ },
  },
  {
    name: "directory size cutting the second entry",
    patch: (b, l) => (setU64(b, extData(l, 8), 48), b),
    expect: { code: "QCOW2_CORRUPT", message: /broken bitmap directory: entry 1/ },
  },
  {
    name: "name size past the directory",
    patch: (b, l) => (setU16(b, entryAt(l, 1, 18), 0xffff), b),
    expect: { code: "QCOW2_CORRUPT", message: /entry 1 \(name_size 65535.*runs past the directory's end/ },
  },
  {
    name: "name size 0",
    patch: (b, l) => (setU16(b, entryAt(l, 0, 18), 0), b),
    expect: { code: "QCOW2_CORRUPT", message: /empty name/ },
  },
  {
    name: "duplicate names",
    patch: (b, l) => (b.copy(b, entryAt(l, 1, 24), entryAt(l, 0, 24), entryAt(l, 0, 26)), b),
    expect: { code: "QCOW2_CORRUPT", message: /entries 0 and 1 have the same name "b0"/ },
  },
  {
    name: "extra data",
    patch: (b, l) => (setU32(b, entryAt(l, 0, 20), 8), b),
    expect: { code: "QCOW2_UNSUPPORTED", message: /extra data/ },
  },
  {
    name: "reserved flag bit 3",
    patch: (b, l) => (setU32(b, entryAt(l, 0, 12), getU32(b, entryAt(l, 0, 12)) | 8), b),
    expect: { code: "QCOW2_CORRUPT", message: /reserved flag bits set \(flags 0xa\)/ },
  },
  {
    name: "reserved flag bit 31",
    patch: (b, l) => (setU32(b, entryAt(l, 1, 12), 0x80000002), b),
    expect: { code: "QCOW2_CORRUPT", message: /reserved flag bits/ },
  },
  {
    name: "extra_data_compatible flag (QEMU refuses it)",
    patch: (b, l) => (setU32(b, entryAt(l, 0, 12), 6), b),
    expect: { code: "QCOW2_UNSUPPORTED", message: /extra_data_compatible/ },
  },
  {
    name: "bitmap type 0",
    patch: (b, l) => (setU8(b, entryAt(l, 0, 16), 0), b),
    expect: { code: "QCOW2_UNSUPPORTED", message: /type 0/ },
  },
  {
    name: "bitmap type 2",
    patch: (b, l) => (setU8(b, entryAt(l, 1, 16), 2), b),
    expect: { code: "QCOW2_UNSUPPORTED", message: /type 2/ },
  },
  ...[8, 32].map((g) => ({
    name: `granularity_bits ${g}`,
    patch: (b: Buffer, l: Layout) => (setU8(b, entryAt(l, 0, 17), g), b),
    expect: { code: "QCOW2_UNSUPPORTED" as const, message: new RegExp(`granularity_bits ${g} `) },
  })),
  ...[64, 255].map((g) => ({
    name: `granularity_bits ${g}`,
    patch: (b: Buffer, l: Layout) => (setU8(b, entryAt(l, 0, 17), g), b),
    expect: { code: "QCOW2_CORRUPT" as const, message: new RegExp(`granularity_bits ${g};`) },
  })),
  // ---- bitmap tables ----
  {
    name: "table size 0",
    patch: (b, l) => (setU32(b, entryAt(l, 0, 8), 0), b),
    expect: { code: "QCOW2_CORRUPT", message: /empty bitmap table/ },
  },
  {
    name: "table size 2^32-1",
    patch: (b, l) => (setU32(b, entryAt(l, 0, 8), 0xffffffff), b),
    expect: { code: "QCOW2_CORRUPT", message: /table of 4294967295 entries .* past the end of the file/ },
  },
  {
    name: "table size larger than the image needs",
    patch: (b, l) => (setU32(b, entryAt(l, 1, 8), 2), b),
    expect: { code: "QCOW2_CORRUPT", message: /table of 2 entries, but .* needs 1/ },
  },
  {
    name: "virtual size no longer matching the tables",
    patch: (b) => (setU64(b, 24, 1n << 40n), b),
    expect: { code: "QCOW2_CORRUPT", message: /1099511627776-byte image at granularity 65536 needs 32 / },
  },
  {
    name: "virtual size 0",
    patch: (b) => (setU64(b, 24, 0), b),
    expect: { code: "QCOW2_CORRUPT", message: /0-byte image .* needs 0/ },
  },
  {
    name: "table offset 0",
    patch: (b, l) => (setU64(b, entryAt(l, 0, 0), 0), b),
    expect: { code: "QCOW2_CORRUPT", message: /no bitmap table/ },
  },
  {
    name: "table offset not aligned",
    patch: (b, l) => (setU64(b, entryAt(l, 0, 0), (l.entries[0]?.entry.tableOffset ?? 0) + 512), b),
    expect: { code: "QCOW2_CORRUPT", message: /not aligned/ },
  },
  {
    name: "table offset past the end of the file",
    patch: (b, l) => (setU64(b, entryAt(l, 0, 0), 1n << 55n), b),
    expect: { code: "QCOW2_CORRUPT", message: /past the end of the file/ },
  },
  {
    name: "two bitmaps sharing one table",
    patch: (b, l) => (setU64(b, entryAt(l, 1, 0), l.entries[0]?.entry.tableOffset ?? 0), b),
    expect: { code: "QCOW2_CORRUPT", message: /bitmap table of "b\d" .* overlaps the bitmap table of "b\d"/ },
  },
  {
    name: "a table inside the directory",
    patch: (b, l) => (setU64(b, entryAt(l, 0, 0), l.bitmaps.directoryOffset), b),
    expect: { code: "QCOW2_CORRUPT", message: /overlaps/ },
  },
  {
    name: "table entry with reserved bit 1",
    patch: (b, l) => (
      setU64(b, l.entries[0]?.entry.tableOffset ?? 0, (l.entries[0]?.table[0] ?? 0n) | 2n),
      b
    ),
    expect: { code: "QCOW2_CORRUPT", message: /entry 0 of the bitmap table of "b0" .* reserved bits/ },
  },
  {
    name: "table entry with reserved bit 63",
    patch: (b, l) => (
      setU64(b, l.entries[1]?.entry.tableOffset ?? 0, (l.entries[1]?.table[0] ?? 0n) | (1n << 63n)),
      b
    ),
    expect: { code: "QCOW2_CORRUPT", message: /reserved bits/ },
  },
  {
    name: "table entry with an offset and the all-ones bit",
    patch: (b, l) => (
      setU64(b, l.entries[0]?.entry.tableOffset ?? 0, (l.entries[0]?.table[0] ?? 0n) | 1n),
      b
    ),
    expect: { code: "QCOW2_CORRUPT", message: /all-ones bit/ },
  },
  {
    name: "data cluster not aligned",
    patch: (b, l) => (
      setU64(b, l.entries[0]?.entry.tableOffset ?? 0, (l.entries[0]?.table[0] ?? 0n) + 512n),
      b
    ),
    expect: { code: "QCOW2_CORRUPT", message: /not aligned to the cluster size/ },
  },
  {
    name: "data cluster past the end of the file",
    patch: (b, l) => (setU64(b, l.entries[0]?.entry.tableOffset ?? 0, 0x00fffffffffe0000n), b),
    expect: { code: "QCOW2_CORRUPT", message: /data cluster at 0xfffffffffe0000, past the end of the file/ },
  },
  {
    name: "data cluster shared by two bitmaps",
    patch: (b, l) => (setU64(b, l.entries[1]?.entry.tableOffset ?? 0, l.entries[0]?.table[0] ?? 0n), b),
    expect: { code: "QCOW2_CORRUPT", message: /which entry 0 of the bitmap table of "b0" uses too/ },
  },
  {
    name: "in-use bitmaps with garbage tables (stale data is never read, as in QEMU)",
    patch: (b, l) => {
      for (const [i, e] of l.entries.entries()) {
        setU32(b, entryAt(l, i, 12), getU32(b, entryAt(l, i, 12)) | 1);
        setU64(b, e.entry.tableOffset, 0xffffffffffffffffn);
      }
      return b;
    },
    expect: { warning: "BITMAPS_IN_USE", bitmaps: 2 },
  },
  {
    name: "an in-use bitmap too large for QEMU to load",
    patch: (b, l) => {
      setU32(b, entryAt(l, 0, 12), getU32(b, entryAt(l, 0, 12)) | 1);
      setU64(b, 24, 1n << 52n);
      return b;
    },
    expect: { code: "QCOW2_UNSUPPORTED", message: /would take 8589934592 bytes/ },
  },
  {
    name: "data cluster inside the directory",
    patch: (b, l) => (setU64(b, l.entries[0]?.entry.tableOffset ?? 0, l.bitmaps.directoryOffset), b),
    expect: { code: "QCOW2_CORRUPT", message: /inside the bitmap directory/ },
  },
];

describe("corrupt and hostile images", () => {
  before(async () => {
    await withLab(async (lab) => {
      const file = await lab.createImage("base.qcow2", 8 * MiB + 512, {
        bitmaps: [
          { name: "b0", granularity: 65536 },
          { name: "b1", granularity: 512 },
        ],
      });
      await qemuIoWrite(file, [
        [0, 4096],
        [5 * MiB, 100_000],
      ]);
      base = await readFile(file);
    });
    layout = await layoutOf(base);
    assert.deepEqual(
      layout.entries.map((e) => [e.entry.name, e.dataClusters.length]),
      [
        ["b0", 1],
        ["b1", 1],
      ],
      "the corpus patches assume two bitmaps with one data cluster each",
    );
  });

  it("reads the unpatched base image", async () => {
    const { doc, err, src } = await inspect(base);
    assert.equal(err, undefined);
    assert.deepEqual(
      doc?.bitmaps.map((b) => [b.name, b.dirtyBytes]),
      [
        ["b0", 65536 + 2 * 65536],
        ["b1", 4096 + 100_352],
      ],
    );
    assert.deepEqual(src.violations, []);
  });

  for (const c of cases) {
    it(`${c.name}: ${"code" in c.expect ? c.expect.code : `warning ${c.expect.warning}`}`, async () => {
      const buf = c.patch(Buffer.from(base), layout);
      const { doc, err, src } = await inspect(buf);
      assert.deepEqual(src.violations, [], "read outside the file");
      const e = c.expect;
      if ("code" in e) {
        assert.ok(
          err instanceof Qcow2Error,
          `expected ${e.code}, got ${err instanceof Error ? err.stack : JSON.stringify(doc)}`,
        );
        assert.equal(err.code, e.code, err.message);
        assert.match(err.message, e.message);
        assert.equal(typeof err.offset, "number", `the error must say where: ${err.message}`);
      } else {
        assert.equal(err, undefined, String(err));
        assert.ok(doc);
        assert.ok(
          doc.warnings.some((w) => w.code === e.warning),
          JSON.stringify(doc.warnings),
        );
        assert.equal(doc.bitmaps.length, e.bitmaps);
      }
    });
  }

  it("fails cleanly on a truncation anywhere before the last byte it needs, and reads the same above it", async () => {
    const full = await inspect(base);
    assert.ok(full.doc);
    // Bytes the reader needed: every read except the fixed-size extension area, of which only the records count.
    const needed = full.src.reads
      .filter((r) => r.position >= 65536)
      .reduce((m, r) => Math.max(m, r.position + r.length), 0);
    const points = new Set<number>();
    for (let t = 0; t <= 700; t++) points.add(t);
    const marks = [
      layout.bitmaps.directoryOffset,
      layout.bitmaps.directoryOffset + layout.bitmaps.directorySize,
      ...layout.entries.flatMap((e) => [e.entry.tableOffset, ...e.dataClusters]),
      needed,
      base.length,
    ];
    for (const m of marks) for (const d of [-9, -8, -1, 0, 1, 8, 2056, 4096]) points.add(m + d);
    for (let i = 0; i < 200; i++) points.add(Math.floor(Math.random() * base.length));
    let failures = 0;
    for (const t of [...points].filter((p) => p >= 0 && p <= base.length)) {
      const { doc, err, src } = await inspect(base.subarray(0, t));
      assert.deepEqual(src.violations, [], `truncated at ${t}`);
      if (t >= needed) {
        assert.equal(err, undefined, `truncated at ${t} (needs ${needed}): ${String(err)}`);
        assert.deepEqual(doc?.bitmaps, full.doc.bitmaps, `truncated at ${t}`);
      } else {
        failures++;
        assert.ok(err instanceof Qcow2Error, `truncated at ${t}: ${String(err)}`);
        assert.equal(err.code, t < 4 ? "NOT_QCOW2" : "QCOW2_CORRUPT", `truncated at ${t}: ${err.message}`);
        assert.match(
          err.message,
          /ends|too short|past the end of the file/,
          `truncated at ${t}: the message must say the file ends early`,
        );
      }
    }
    assert.ok(failures > 700, "most truncation points lie before the end of the bitmap data");
  });
});
