import { before, after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { Lab } from "../../src/lab/lab.js";
import { qcow2Blockdev } from "../../src/lab/topology.js";
import type { InspectDocument, InspectErrorDocument } from "../../src/qcow2/inspect.js";
import { layoutOf, setU8 } from "../qcow2/helpers/bytes.js";
import { qemuIoWrite, qemuView } from "../qcow2/helpers/qemu.js";
import { runCli, spawnCli, type CliRun } from "../helpers/cli.js";

const MiB = 1024 * 1024;

type Run = CliRun;

const cli = (...args: string[]): Promise<CliRun> => runCli(args);
const spawn = (...args: string[]): Promise<CliRun> => spawnCli(args);

/** Exactly one JSON document on stdout. */
function json(r: Run): unknown {
  return JSON.parse(r.stdout);
}

const DOC_KEYS = ["bitmaps", "image", "ok", "version", "warnings"];
const IMAGE_KEYS = ["clusterSize", "format", "path", "qcowVersion", "virtualSize"];
const BITMAP_KEYS = ["auto", "dirtyBytes", "granularity", "inUse", "name", "type"];

describe("bitferry inspect", () => {
  let lab: Lab;
  let image: string;
  let raw: string;
  let corrupt: string;
  const size = 20 * MiB + 512;

  before(async () => {
    lab = Lab.create();
    image = await lab.createImage("img.qcow2", size, {
      bitmaps: [
        { name: "daily", granularity: 65536 },
        { name: "fine", granularity: 512, disabled: true },
      ],
    });
    await qemuIoWrite(image, [
      [MiB, 4096],
      [size - 512, 512],
    ]);
    raw = await lab.createImage("disk.raw", MiB, { format: "raw" });
    const bytes = Buffer.from(await readFile(image));
    const l = await layoutOf(bytes);
    setU8(bytes, (l.entries[0]?.entry.offset ?? 0) + 17, 64); // granularity_bits 64
    corrupt = lab.path("corrupt.qcow2");
    await writeFile(corrupt, bytes);
  });

  after(async () => {
    await lab.cleanup();
  });

  it("prints the documented JSON document, with sha256 and extents only when asked", async () => {
    const plain = await cli("inspect", image, "--json");
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal(plain.stderr, "");
    const doc = json(plain) as InspectDocument;
    assert.deepEqual(Object.keys(doc).sort(), DOC_KEYS);
    assert.equal(doc.version, 1);
    assert.deepEqual(Object.keys(doc.image).sort(), IMAGE_KEYS);
    assert.deepEqual(doc.image, {
      path: image,
      format: "qcow2",
      qcowVersion: 3,
      virtualSize: size,
      clusterSize: 65536,
    });
    assert.deepEqual(
      doc.bitmaps.map((b) => [b.name, b.granularity, b.inUse, b.auto, b.dirtyBytes]),
      [
        ["daily", 65536, false, true, 2 * 65536],
        ["fine", 512, false, false, 0],
      ],
    );
    for (const b of doc.bitmaps) assert.deepEqual(Object.keys(b).sort(), BITMAP_KEYS);

    const full = json(await cli("inspect", "--extents", "--sha256", "--json", image)) as InspectDocument;
    const qemu = await qemuView(lab, image);
    for (const b of full.bitmaps) {
      assert.deepEqual(Object.keys(b).sort(), [...BITMAP_KEYS, "extents", "sha256"].sort());
      assert.equal(b.sha256, qemu.get(b.name)?.sha256, b.name);
    }
    assert.deepEqual(full.bitmaps[0]?.extents, [
      { start: MiB, length: 65536 },
      { start: 20 * MiB, length: 512 },
    ]);
  });

  it("selects one bitmap with --bitmap, and exits 2 naming the ones that exist for an unknown name", async () => {
    const one = json(await cli("inspect", image, "--bitmap", "fine", "--json")) as InspectDocument;
    assert.deepEqual(
      one.bitmaps.map((b) => b.name),
      ["fine"],
    );
    const missing = await cli("inspect", image, "--bitmap", "weekly", "--json");
    assert.equal(missing.code, 2);
    const err = json(missing) as InspectErrorDocument;
    assert.deepEqual(Object.keys(err).sort(), ["error", "ok", "version"]);
    assert.equal(err.ok, false);
    assert.equal(err.error.code, "BITMAP_NOT_FOUND");
    assert.match(err.error.message, /"weekly".*"daily", "fine"/);
    const human = await cli("inspect", image, "--bitmap", "weekly");
    assert.equal(human.code, 2);
    assert.equal(human.stdout, "");
    assert.match(human.stderr, /^bitferry: image has no bitmap named "weekly".*\[BITMAP_NOT_FOUND\]\n$/);
  });

  it("renders a readable table: the image line, one row per bitmap, sha256 and extents when asked", async () => {
    const r = await cli("inspect", image, "--sha256", "--extents");
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /^image .*img\.qcow2 {2}qcow2 v3 {2}virtual size 20 MiB \(20972032 bytes\) {2}cluster size 64 KiB/,
    );
    assert.match(r.stdout, /│ daily +│ 64 KiB +│ auto +│ 131072 \(128 KiB\) +│ [0-9a-f]{64} │ 2 +│/);
    assert.match(r.stdout, /│ fine +│ 512 B +│ - +│ 0 +│ [0-9a-f]{64} │ 0 +│/);
    assert.match(
      r.stdout,
      /dirty extents of daily[^\n]*\n +1048576 +1114112 +65536 \(64 KiB\)\n +20971520 +20972032 +512\n/,
    );
    assert.ok(!r.stdout.includes("\u001b["), "no colour codes when stdout is not a terminal");
    const plain = await cli("inspect", image);
    assert.doesNotMatch(plain.stdout, /sha256|extents/);
  });

  it("exits 2 for a missing file and 1 for a raw file or a corrupt image, with one JSON document or one line", async () => {
    const cases = [
      {
        file: lab.path("nope.qcow2"),
        code: 2,
        error: "IMAGE_NOT_FOUND",
        message: /nope\.qcow2 does not exist/,
      },
      { file: raw, code: 1, error: "NOT_QCOW2", message: /not a qcow2 image/ },
      { file: corrupt, code: 1, error: "QCOW2_CORRUPT", message: /granularity_bits 64/ },
    ];
    for (const c of cases) {
      const j = await cli("inspect", c.file, "--json");
      assert.equal(j.code, c.code, c.error);
      const doc = json(j) as InspectErrorDocument;
      assert.deepEqual(doc, { version: 1, ok: false, error: { code: c.error, message: doc.error.message } });
      assert.match(doc.error.message, c.message);
      const h = await cli("inspect", c.file);
      assert.equal(h.code, c.code);
      assert.equal(h.stdout, "");
      assert.equal(h.stderr.split("\n").length, 2, `one line: ${h.stderr}`);
      assert.match(h.stderr, new RegExp(`\\[${c.error}\\]\\n$`));
    }
  });

  it("exits 2 on bad usage", async () => {
    const r = await cli("inspect", "--json");
    assert.equal(r.code, 2);
    assert.equal((json(r) as InspectErrorDocument).error.code, "USAGE");
  });

  it("reads an image a running QEMU holds: exit 0, bitmaps in use, a warning on stderr", async () => {
    const held = await lab.createImage("held.qcow2", 4 * MiB, {
      bitmaps: [{ name: "b0", granularity: 65536 }],
    });
    const vm = await lab.start({ label: "held", args: qcow2Blockdev({ nodeName: "d0", file: held }) });
    try {
      const j = await cli("inspect", held, "--json");
      assert.equal(j.code, 0);
      const doc = json(j) as InspectDocument;
      assert.equal(doc.bitmaps[0]?.inUse, true);
      assert.equal(doc.warnings[0]?.code, "BITMAPS_IN_USE");
      const h = await cli("inspect", held);
      assert.equal(h.code, 0);
      assert.match(h.stdout, /│ b0 +│ 64 KiB +│ in-use,auto +│ stale \(in use\) +│/);
      assert.match(h.stderr, /warning: bitmap "b0" is flagged in use.*\[BITMAPS_IN_USE\]/);
    } finally {
      await vm.stop();
    }
  });

  it("sets the real process exit status", async () => {
    const [ok, bad, gone] = await Promise.all([
      spawn("inspect", image, "--json", "--sha256"),
      spawn("inspect", corrupt, "--json"),
      spawn("inspect", lab.path("gone.qcow2")),
    ]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal((json(ok) as InspectDocument).bitmaps.length, 2);
    assert.equal(bad.code, 1, bad.stderr);
    assert.equal((json(bad) as InspectErrorDocument).error.code, "QCOW2_CORRUPT");
    assert.equal(gone.code, 2);
    assert.match(gone.stderr, /^bitferry: image .*gone\.qcow2 does not exist \[IMAGE_NOT_FOUND\]\n$/);
  });
});
