import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { gunzipSync, gzipSync } from "node:zlib";
import { newcArchive, type CpioEntry } from "../../src/lab/cpio.js";
import { GUEST_INIT, GUEST_MODULES } from "../../src/lab/guest-init.js";
import { parseGuestSerial, writtenBlocks } from "../../src/lab/guest.js";

interface Parsed {
  name: string;
  mode: number;
  rdev: [number, number];
  data: Buffer;
}

/** Reads a newc archive back the way the kernel's initramfs unpacker does (init/initramfs.c). */
function readNewc(buf: Buffer): Parsed[] {
  const out: Parsed[] = [];
  let off = 0;
  const align = (n: number): number => (n + 3) & ~3;
  for (;;) {
    assert.equal(buf.toString("ascii", off, off + 6), "070701", `magic at ${off}`);
    const field = (i: number): number =>
      parseInt(buf.toString("ascii", off + 6 + i * 8, off + 14 + i * 8), 16);
    const mode = field(1);
    const size = field(6);
    const rdev: [number, number] = [field(9), field(10)];
    const nameSize = field(11);
    const name = buf.toString("utf8", off + 110, off + 110 + nameSize - 1);
    assert.equal(buf[off + 110 + nameSize - 1], 0, "names end in NUL");
    const dataStart = align(off + 110 + nameSize);
    const data = buf.subarray(dataStart, dataStart + size);
    off = align(dataStart + size);
    if (name === "TRAILER!!!") break;
    out.push({ name, mode, rdev, data: Buffer.from(data) });
  }
  assert.equal(off, buf.length, "nothing after the trailer");
  return out;
}

describe("the guest's initramfs and serial log", () => {
  it("writes a newc archive the kernel can read: directories, files, a symlink, a device node", () => {
    const entries: CpioEntry[] = [
      { kind: "dir", path: "bin" },
      { kind: "char", path: "dev/console", major: 5, minor: 1 },
      { kind: "file", path: "bin/busybox", data: Buffer.from("x".repeat(5)), mode: 0o755 },
      { kind: "symlink", path: "bin/sh", target: "busybox" },
      { kind: "file", path: "/init", data: Buffer.from(GUEST_INIT), mode: 0o755 },
    ];
    const archive = newcArchive(entries);
    assert.equal(archive.length % 4, 0);
    const back = readNewc(gunzipSync(gzipSync(archive)));
    assert.deepEqual(
      back.map((e) => [e.name, (e.mode & 0o170000).toString(8), (e.mode & 0o7777).toString(8)]),
      [
        ["bin", "40000", "755"],
        ["dev/console", "20000", "600"],
        ["bin/busybox", "100000", "755"],
        ["bin/sh", "120000", "777"],
        ["init", "100000", "755"],
      ],
    );
    assert.deepEqual(back[1]?.rdev, [5, 1]);
    assert.equal(back[2]?.data.toString(), "xxxxx");
    assert.equal(back[3]?.data.toString(), "busybox");
    assert.equal(back[4]?.data.toString(), GUEST_INIT);
    assert.deepEqual(newcArchive(entries), archive, "the same inputs give the same bytes");
  });

  it("the init loads every virtio module in dependency order and writes with fsync before reporting", () => {
    assert.deepEqual(GUEST_MODULES.at(0), "virtio_ring");
    assert.deepEqual(GUEST_MODULES.at(-1), "virtio_blk");
    assert.match(GUEST_INIT, new RegExp(`for m in ${GUEST_MODULES.join(" ")}; do`));
    assert.match(GUEST_INIT, /conv=notrunc,fsync 2>\/dev\/null &&\n\s+echo "round/);
  });

  it("parses the serial log, ignoring a line still being written", () => {
    const s = parseGuestSerial(
      [
        "bitferry-guest: ready disks vda vdb ",
        "round 1 disk vda offset 65536",
        "round 1 disk vdb offset 0",
        "round 2 disk vda offset 65536",
        "round 2 disk vdb offset 131072",
        "round 3 disk vda off",
      ].join("\n"),
    );
    assert.equal(s.ready, true);
    assert.equal(s.round, 2);
    assert.equal(s.writes.length, 4);
    assert.deepEqual([...writtenBlocks([s], "vda")], [65536]);
    assert.deepEqual(
      [...writtenBlocks([s], "vdb")].sort((a, b) => a - b),
      [0, 131072],
    );
    assert.deepEqual(parseGuestSerial(""), { ready: false, round: 0, writes: [] });
  });
});
