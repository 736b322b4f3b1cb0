import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { writeRange } from "../../src/lab/actions.js";
import { qcow2Blockdev } from "../../src/lab/topology.js";
import { BitmapNotFoundError } from "../../src/qcow2/errors.js";
import { inspectImage, type InspectBitmap } from "../../src/qcow2/inspect.js";
import { withLab } from "../helpers/lab.js";
import { getU64, layoutOf, setU64, setU8 } from "./helpers/bytes.js";
import { expectedExtents, nbdExtents, qemuIoWrite, qemuView, run } from "./helpers/qemu.js";

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

function byName(bitmaps: readonly InspectBitmap[]): Map<string, InspectBitmap> {
  return new Map(bitmaps.map((b) => [b.name, b]));
}

function emptyHash(virtualSize: number, g: number): string {
  const words = Math.max(1, Math.ceil(Math.ceil(virtualSize / g) / 64));
  return createHash("sha256")
    .update(Buffer.alloc(8 * words))
    .digest("hex");
}

describe("inspect on images written by real QEMU", () => {
  it("matches QEMU's count, sha256 and NBD extents for bitmaps a running VM dirtied and stored at a clean quit", async () => {
    await withLab(async (lab) => {
      // Not a multiple of 64 KiB: the last 64 KiB granule is partial (1536 bytes).
      const size = 10 * MiB + 1536;
      const file = await lab.createImage("vm.qcow2", size);
      const vm = await lab.start({ label: "w", args: qcow2Blockdev({ nodeName: "d0", file }) });
      const m = vm.monitor;
      const grans = { b512: 512, b64k: 64 * KiB, b1m: MiB, bdis: 64 * KiB } as const;
      for (const [name, granularity] of Object.entries(grans)) {
        await m.addBitmap("d0", name, { granularity, persistent: true });
      }
      const before: [number, number][] = [
        [0, 4096],
        [70000, 1000],
      ];
      const after: [number, number][] = [
        [3 * MiB, MiB],
        [5 * MiB - 512, 1024],
        [size - 1536, 1536],
      ];
      for (const [off, len] of before) await writeRange(m, "d0", off, len);
      // bdis stops recording here: it must show only the first writes, and auto=false.
      await m.disableBitmap("d0", "bdis");
      for (const [off, len] of after) await writeRange(m, "d0", off, len);

      const live = new Map<string, { count: number; sha256: string }>();
      const node = (await m.namedBlockNodes()).find((n) => n["node-name"] === "d0");
      for (const b of node?.["dirty-bitmaps"] ?? []) {
        const name = b.name ?? "";
        live.set(name, { count: b.count, sha256: await m.bitmapSha256("d0", name) });
      }
      assert.equal(live.size, 4);
      const status = await vm.stop();
      assert.equal(status.code, 0, "QEMU must quit cleanly so that it stores the bitmaps");

      const doc = await inspectImage(file, { extents: true, sha256: true });
      assert.equal(doc.image.virtualSize, size);
      assert.equal(doc.image.clusterSize, 64 * KiB);
      assert.equal(doc.image.qcowVersion, 3);
      assert.deepEqual(doc.warnings, []);
      const got = byName(doc.bitmaps);
      assert.deepEqual([...got.keys()].sort(), Object.keys(grans).sort());
      for (const [name, g] of Object.entries(grans)) {
        const b = got.get(name);
        const q = live.get(name);
        assert.ok(b && q, name);
        const written = name === "bdis" ? before : [...before, ...after];
        const want = expectedExtents(written, g, size);
        assert.equal(b.granularity, g, name);
        assert.equal(b.inUse, false, name);
        assert.equal(b.auto, name !== "bdis", name);
        assert.equal(b.dirtyBytes, q.count, `${name}: dirtyBytes vs QEMU count`);
        assert.equal(b.dirtyBytes, want.dirtyBytes, `${name}: dirtyBytes vs the written granules`);
        assert.equal(b.sha256, q.sha256, `${name}: sha256 vs QEMU`);
        assert.deepEqual(b.extents, want.extents, `${name}: extents vs the written ranges`);
        assert.deepEqual(b.extents, await nbdExtents(file, name), `${name}: extents vs nbdinfo`);
      }
      // The partial last granule: counted whole in dirtyBytes, clipped in the extents.
      const last64k = got.get("b64k")?.extents?.at(-1);
      assert.deepEqual(last64k, { start: 10 * MiB, length: 1536 });
      assert.equal(got.get("b1m")?.extents?.at(-1)?.length, 1536);
      assert.equal((got.get("b1m")?.dirtyBytes ?? 0) % MiB, 0);

      // What was stored is what a QEMU loading the image sees.
      const reloaded = await qemuView(lab, file);
      for (const b of doc.bitmaps) {
        assert.equal(reloaded.get(b.name)?.sha256, b.sha256, b.name);
        assert.equal(reloaded.get(b.name)?.recording, b.auto, b.name);
      }
    });
  });

  it("reads tiny-cluster and large sparse bitmaps made by qemu-img and qemu-io (zero table entries)", async () => {
    await withLab(async (lab) => {
      // 512-byte clusters: the 512 B bitmap needs 50 table entries, most of them zero.
      const small = await lab.createImage("small.qcow2", 100 * MiB, {
        clusterSize: 512,
        bitmaps: [
          { name: "g4k", granularity: 4096 },
          { name: "g512", granularity: 512 },
        ],
      });
      const smallRanges: [number, number][] = [
        [512, 512],
        [40 * MiB + 3, 9000],
        [100 * MiB - 4096, 4096],
      ];
      await qemuIoWrite(small, smallRanges);
      // 4 GiB at 512 B granularity: 1 MiB of bitmap in 16 data clusters of 64 KiB, most never allocated.
      const big = await lab.createImage("big.qcow2", 4 * GiB, {
        bitmaps: [{ name: "fine", granularity: 512 }],
      });
      const bigRanges: [number, number][] = [
        [0, 512],
        [2 * GiB + 700, 70000],
        [4 * GiB - 1024, 1024],
      ];
      await qemuIoWrite(big, bigRanges);

      for (const [file, ranges, size] of [
        [small, smallRanges, 100 * MiB],
        [big, bigRanges, 4 * GiB],
      ] as const) {
        const layout = await layoutOf(await readFile(file));
        const zeroEntries = layout.entries.flatMap((e) => e.table).filter((t) => t === 0n).length;
        assert.ok(zeroEntries > 0, `${file}: the test needs unallocated table entries`);
        const doc = await inspectImage(file, { extents: true, sha256: true });
        const qemu = await qemuView(lab, file);
        assert.equal(doc.bitmaps.length, qemu.size);
        for (const b of doc.bitmaps) {
          const q = qemu.get(b.name);
          assert.ok(q, b.name);
          assert.equal(b.granularity, q.granularity);
          assert.equal(b.dirtyBytes, q.count, `${b.name}: count`);
          assert.equal(b.sha256, q.sha256, `${b.name}: sha256`);
          assert.deepEqual(b.extents, expectedExtents(ranges, b.granularity, size).extents, b.name);
        }
        const first = doc.bitmaps[0];
        assert.ok(first);
        assert.deepEqual(first.extents, await nbdExtents(file, first.name));
      }
    });
  });

  it("shows the bitmaps of an image a running QEMU holds as in use, and after a crash as QEMU reloads them", async () => {
    await withLab(async (lab) => {
      const size = 16 * MiB;
      const file = await lab.createImage("busy.qcow2", size, {
        bitmaps: [{ name: "b0", granularity: 64 * KiB }],
      });
      await qemuIoWrite(file, [[MiB, 200 * KiB]]);
      const clean = await inspectImage(file, { sha256: true, extents: true });
      assert.equal(clean.bitmaps[0]?.inUse, false);
      assert.equal(clean.bitmaps[0].dirtyBytes, 256 * KiB);

      const vm = await lab.start({ label: "rw", args: qcow2Blockdev({ nodeName: "d0", file }) });
      const held = await inspectImage(file, { sha256: true, extents: true });
      const b = held.bitmaps[0];
      assert.ok(b);
      assert.equal(b.name, "b0");
      assert.equal(b.inUse, true);
      assert.equal(b.auto, true);
      assert.equal(b.dirtyBytes, 0);
      assert.deepEqual(b.extents, []);
      assert.equal(b.sha256, emptyHash(size, 64 * KiB));
      assert.deepEqual(
        held.warnings.map((w) => [w.code, w.bitmaps]),
        [["BITMAPS_IN_USE", ["b0"]]],
      );

      vm.kill("SIGKILL");
      await vm.exited;
      const crashed = await inspectImage(file, { sha256: true });
      assert.equal(crashed.bitmaps[0]?.inUse, true);
      // A QEMU opening the crashed image loads the bitmap empty and inconsistent, hashing as reported.
      const q = (await qemuView(lab, file)).get("b0");
      assert.ok(q);
      assert.equal(q.inconsistent, true);
      assert.equal(q.count, crashed.bitmaps[0].dirtyBytes);
      assert.equal(q.sha256, crashed.bitmaps[0].sha256);
    });
  });

  it("lists no bitmaps for images without them, version 2 included", async () => {
    await withLab(async (lab) => {
      const v3 = await inspectImage(await lab.createImage("plain.qcow2", 3 * MiB));
      assert.deepEqual(v3.bitmaps, []);
      assert.deepEqual(v3.warnings, []);
      const v2 = await inspectImage(await lab.createImage("v2.qcow2", 3 * MiB, { compat: "0.10" }));
      assert.equal(v2.image.qcowVersion, 2);
      assert.deepEqual(v2.bitmaps, []);
    });
  });

  it("matches QEMU on all-ones table entries and on garbage tail bits (count masks them, the hash does not)", async () => {
    await withLab(async (lab) => {
      const size = 10 * MiB + 1536; // 161 bits at 64 KiB: bits 161..191 are tail bits of the last word
      const file = await lab.createImage("src.qcow2", size, {
        bitmaps: [
          { name: "a", granularity: 64 * KiB },
          { name: "b", granularity: 64 * KiB },
        ],
      });
      await qemuIoWrite(file, [[2 * MiB, 100 * KiB]]);
      const bytes = await readFile(file);
      const layout = await layoutOf(bytes);
      const [a, b] = layout.entries;
      assert.ok(a && b?.dataClusters[0] !== undefined);

      const patched = Buffer.from(bytes);
      setU64(patched, a.entry.tableOffset, 1n); // "a": all ones, no data cluster
      const data = b.dataClusters[0];
      setU8(patched, data + 20, patched[data + 20]! | 0xfe); // bits 161..167: tail inside the last word
      setU8(patched, data + 23, 0x80); // bit 191: last tail bit QEMU keeps
      setU8(patched, data + 24, 0xff); // beyond the stream QEMU deserializes: must change nothing
      const out = lab.path("patched.qcow2");
      await writeFile(out, patched);
      assert.equal(getU64(patched, a.entry.tableOffset), 1n);

      const doc = byName((await inspectImage(out, { sha256: true, extents: true })).bitmaps);
      const qemu = await qemuView(lab, out);
      for (const name of ["a", "b"]) {
        assert.equal(doc.get(name)?.dirtyBytes, qemu.get(name)?.count, `${name}: count`);
        assert.equal(doc.get(name)?.sha256, qemu.get(name)?.sha256, `${name}: sha256`);
      }
      assert.equal(doc.get("a")?.dirtyBytes, 161 * 64 * KiB);
      assert.deepEqual(doc.get("a")?.extents, [{ start: 0, length: size }]);
      // Tail bits never become extents; "b" keeps only what was written.
      assert.deepEqual(
        doc.get("b")?.extents,
        expectedExtents([[2 * MiB, 100 * KiB]], 64 * KiB, size).extents,
      );
      const unpatched = byName((await inspectImage(file, { sha256: true })).bitmaps);
      assert.notEqual(doc.get("b")?.sha256, unpatched.get("b")?.sha256);
    });
  });

  it("reports an inconsistent bitmaps extension (autoclear bit 0 clear) as a warning with no bitmaps, as QEMU does", async () => {
    await withLab(async (lab) => {
      const file = await lab.createImage("ac.qcow2", 4 * MiB, {
        bitmaps: [{ name: "b0", granularity: 4096 }],
      });
      const bytes = Buffer.from(await readFile(file));
      setU64(bytes, 88, getU64(bytes, 88) & ~1n);
      await writeFile(file, bytes);
      const doc = await inspectImage(file);
      assert.deepEqual(doc.bitmaps, []);
      assert.deepEqual(
        doc.warnings.map((w) => w.code),
        ["BITMAPS_INCONSISTENT"],
      );
      assert.match(doc.warnings[0]?.message ?? "", /autoclear bit 0/);
      assert.equal((await qemuView(lab, file)).size, 0, "QEMU ignores the bitmaps too");
      await assert.rejects(
        inspectImage(file, { bitmap: "b0" }),
        (e: unknown) => e instanceof BitmapNotFoundError && e.message.includes("inconsistent"),
      );
    });
  });

  it("reads bitmaps of an image with an external data file", async () => {
    await withLab(async (lab) => {
      const file = lab.path("ext.qcow2");
      await run("qemu-img", [
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        `data_file=${lab.path("ext.raw")}`,
        file,
        "8M",
      ]);
      await run("qemu-img", ["bitmap", "--add", "-g", "65536", file, "b0"]);
      await qemuIoWrite(file, [[MiB, 3000]]);
      const doc = await inspectImage(file, { sha256: true, extents: true });
      const q = (await qemuView(lab, file)).get("b0");
      assert.equal(doc.bitmaps[0]?.sha256, q?.sha256);
      assert.deepEqual(doc.bitmaps[0]?.extents, [{ start: MiB, length: 64 * KiB }]);
    });
  });
});
