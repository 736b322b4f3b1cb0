import { exportBitmap, startDriveMirror, writeRange } from "./actions.js";
import type { QemuBuild } from "./build.js";
import type { Lab } from "./lab.js";
import type { QemuProcess } from "./process.js";
import { drive, nullBlockdev, qcow2Blockdev } from "./topology.js";

/**
 * Source/destination topologies that exercise every planning rule on real QEMU. Tests, the fixture capture script,
 * the demo and the benchmarks share them. Sizes stay small: without guest RAM QEMU's bandwidth estimate is tiny,
 * and a large bitmap payload would keep a precopy migration from converging (reference R25).
 */

export const MiB = 1024 * 1024;
const DISK = 64 * MiB;

export interface ScenarioPair {
  source: QemuProcess;
  destination: QemuProcess;
}

export interface ScenarioOptions {
  sourceBuild?: QemuBuild;
  destinationBuild?: QemuBuild;
  /** Start the destination with -S (it stays paused after the migration until `cont`). */
  paused?: boolean;
  /** Extra source arguments (for example `-global migration.send-switchover-start=off`). */
  sourceArgs?: string[];
}

export interface Scenario {
  name: string;
  description: string;
  setup(lab: Lab, options?: ScenarioOptions): Promise<ScenarioPair>;
}

async function pair(
  lab: Lab,
  srcArgs: string[],
  dstArgs: string[],
  o: ScenarioOptions = {},
): Promise<ScenarioPair> {
  const source = await lab.start({
    label: "src",
    args: [...srcArgs, ...(o.sourceArgs ?? [])],
    ...(o.sourceBuild ? { build: o.sourceBuild } : {}),
  });
  const destination = await lab.start({
    label: "dst",
    args: dstArgs,
    incoming: "defer",
    ...(o.paused ? { paused: true } : {}),
    ...(o.destinationBuild ? { build: o.destinationBuild } : {}),
  });
  return { source, destination };
}

/** The node-name QEMU generated for the protocol (file) node of an image. */
export async function protocolNodeOf(proc: QemuProcess, file: string): Promise<string> {
  const nodes = await proc.monitor.namedBlockNodes();
  const n = nodes.find((x) => x.drv === "file" && (x.file === file || x.image.filename === file));
  if (!n) throw new Error(`no file node for ${file}`);
  return n["node-name"];
}

/** `-drive` under a running drive-mirror (QEMU's mirror_top filter on top): the case that started it all. */
export const driveMirror: Scenario = {
  name: "drive-mirror",
  description:
    "-drive on both sides, a drive-mirror running on the source, a bitmap on a generated protocol node",
  async setup(lab, o) {
    const img = await lab.createImage("disk0.qcow2", DISK);
    const p = await pair(lab, drive({ id: "drive0", file: img }), drive({ id: "drive0", file: img }), o);
    const m = p.source.monitor;
    await m.addBitmap("drive0", "bm0", { granularity: 65536 });
    await m.addBitmap("drive0", "backup-1", { granularity: 65536, persistent: true });
    await writeRange(m, "drive0", 1 * MiB, 2 * MiB);
    await m.addBitmap(await protocolNodeOf(p.source, img), "onfile", { granularity: 65536 });
    await startDriveMirror(m, "drive0", lab.path("mirror-target.qcow2"));
    await writeRange(m, "drive0", 8 * MiB, 64 * 1024);
    return p;
  },
};

/** `-blockdev` with the same node-names on both sides. */
export const blockdevSame: Scenario = {
  name: "blockdev-same",
  description: "-blockdev qcow2 and null-co nodes with equal node-names on both sides, several bitmaps each",
  async setup(lab, o) {
    const a = await lab.createImage("a.qcow2", DISK);
    const args = [...qcow2Blockdev({ nodeName: "disk0", file: a }), ...nullBlockdev("disk1", DISK)];
    const p = await pair(lab, args, args, o);
    const m = p.source.monitor;
    for (const [node, name, persistent, g] of [
      ["disk0", "backup-a", true, 65536],
      ["disk0", "backup-b", false, 4096],
      ["disk0", "tmp-x", false, 65536],
      ["disk1", "backup-c", false, 65536],
      ["disk1", "tmp-y", false, 512],
    ] as const) {
      await m.addBitmap(node, name, { granularity: g, persistent });
    }
    await m.disableBitmap("disk1", "backup-c");
    await writeRange(m, "disk0", 0, 3 * MiB);
    await writeRange(m, "disk1", 10 * MiB, MiB);
    return p;
  },
};

/** `-blockdev` whose node-names differ on the destination: needs a map. */
export const blockdevRenamed: Scenario = {
  name: "blockdev-renamed",
  description: "-blockdev disk0/disk1 on the source, vda/vdb on the destination",
  async setup(lab, o) {
    const a = await lab.createImage("a.qcow2", DISK);
    const b = await lab.createImage("b.qcow2", DISK);
    const p = await pair(
      lab,
      [...qcow2Blockdev({ nodeName: "disk0", file: a }), ...nullBlockdev("disk1", DISK)],
      [...qcow2Blockdev({ nodeName: "vda", file: b }), ...nullBlockdev("vdb", DISK)],
      o,
    );
    const m = p.source.monitor;
    await m.addBitmap("disk0", "backup-0", { granularity: 65536, persistent: true });
    await m.addBitmap("disk0", "old", { granularity: 65536 });
    await m.addBitmap("disk1", "backup-1", { granularity: 65536 });
    await writeRange(m, "disk0", 0, 5 * MiB);
    await writeRange(m, "disk1", 32 * MiB, 3 * MiB);
    return p;
  },
};

/** A backing chain whose read-only backing image stores a persistent bitmap. */
export const backingChain: Scenario = {
  name: "backing-chain",
  description: "a qcow2 overlay over a read-only backing image that stores a persistent bitmap",
  async setup(lab, o) {
    const base = await lab.createImage("base.qcow2", DISK, { bitmaps: [{ name: "base-bm" }] });
    const top = await lab.createImage("top.qcow2", DISK, { backing: base });
    const args = qcow2Blockdev({ nodeName: "disk0", file: top, backing: { nodeName: "base0", file: base } });
    const p = await pair(lab, args, args, o);
    await p.source.monitor.addBitmap("disk0", "top-bm", { granularity: 65536, persistent: true });
    await writeRange(p.source.monitor, "disk0", 0, MiB);
    return p;
  },
};

/** A busy bitmap (exported over NBD) and an inconsistent one, each beside a healthy neighbour. */
export const busyAndInconsistent: Scenario = {
  name: "busy-inconsistent",
  description:
    "disk0: a bitmap exported over NBD (busy) beside a healthy one; disk1: an inconsistent bitmap beside a healthy one",
  async setup(lab, o) {
    const img = await lab.createImage("crashed.qcow2", DISK, { bitmaps: [{ name: "stale" }] });
    // A QEMU killed while it holds the image leaves the bitmap flagged in-use: the next open sees it inconsistent.
    const crash = await lab.start({ label: "crash", args: qcow2Blockdev({ nodeName: "c", file: img }) });
    crash.kill("SIGKILL");
    await crash.exited;
    const args = [...nullBlockdev("disk0", DISK), ...qcow2Blockdev({ nodeName: "disk1", file: img })];
    const dstImg = await lab.createImage("dst1.qcow2", DISK);
    const p = await pair(
      lab,
      args,
      [...nullBlockdev("disk0", DISK), ...qcow2Blockdev({ nodeName: "disk1", file: dstImg })],
      o,
    );
    const m = p.source.monitor;
    await m.addBitmap("disk0", "exported", { granularity: 65536 });
    await m.addBitmap("disk0", "neighbour", { granularity: 65536 });
    await m.addBitmap("disk1", "healthy", { granularity: 65536 });
    await m.disableBitmap("disk0", "exported");
    await exportBitmap(m, lab.path("nbd.sock"), "disk0", "exported");
    return p;
  },
};

/** Destination nodes smaller and larger than the source's. */
export const sizes: Scenario = {
  name: "sizes",
  description:
    "equal, smaller and larger destination nodes, with sizes that are and are not multiples of 64 granules",
  async setup(lab, o) {
    const src = [
      ...nullBlockdev("same", DISK),
      ...nullBlockdev("small", DISK),
      ...nullBlockdev("big-ok", DISK),
      ...nullBlockdev("big-bad", DISK + 65536),
    ];
    const dst = [
      ...nullBlockdev("same", DISK),
      ...nullBlockdev("small", DISK - 65536),
      ...nullBlockdev("big-ok", DISK + 65536),
      ...nullBlockdev("big-bad", DISK + 2 * 65536),
    ];
    const p = await pair(lab, src, dst, o);
    for (const n of ["same", "small", "big-ok", "big-bad"])
      await p.source.monitor.addBitmap(n, "bm", { granularity: 65536 });
    return p;
  },
};

/** Destination that already has bitmaps of the migrating names, in memory and stored in its image. */
export const destinationExisting: Scenario = {
  name: "destination-existing",
  description: "the destination image stores bitmap 'stored'; the destination has an in-memory bitmap 'ram'",
  async setup(lab, o) {
    const srcImg = await lab.createImage("src.qcow2", DISK);
    const dstImg = await lab.createImage("dst.qcow2", DISK, { bitmaps: [{ name: "stored" }] });
    const p = await pair(
      lab,
      qcow2Blockdev({ nodeName: "disk0", file: srcImg }),
      qcow2Blockdev({ nodeName: "disk0", file: dstImg }),
      o,
    );
    for (const name of ["stored", "ram", "fresh"])
      await p.source.monitor.addBitmap("disk0", name, { granularity: 65536 });
    await p.destination.monitor.addBitmap("disk0", "ram", { granularity: 65536 });
    return p;
  },
};

/** A bitmap name of 512 characters: over QEMU's 255-byte wire limit, under its 1023-byte name limit. */
export const longName: Scenario = {
  name: "long-name",
  description: "a bitmap with a 512-character name",
  async setup(lab, o) {
    const p = await pair(lab, nullBlockdev("disk0", DISK), nullBlockdev("disk0", DISK), o);
    await p.source.monitor.addBitmap("disk0", "L".repeat(512), { granularity: 65536 });
    await writeRange(p.source.monitor, "disk0", 0, MiB);
    return p;
  },
};

/** A `-drive` with an explicit node-name, and a destination that has only that node-name. */
export const driveWithNodeName: Scenario = {
  name: "drive-node-name",
  description:
    "-drive id=drive0,node-name=fmt0 on the source; -blockdev node-name=fmt0 (no drive) on the destination",
  async setup(lab, o) {
    const img = await lab.createImage("a.qcow2", DISK);
    const p = await pair(
      lab,
      drive({ id: "drive0", file: img, nodeName: "fmt0" }),
      qcow2Blockdev({ nodeName: "fmt0", file: img }),
      o,
    );
    await p.source.monitor.addBitmap("drive0", "bm0", { granularity: 65536 });
    await writeRange(p.source.monitor, "drive0", 0, MiB);
    return p;
  },
};

/** A destination whose format cannot store bitmaps. */
export const rawDestination: Scenario = {
  name: "raw-destination",
  description: "a persistent bitmap on qcow2 whose destination node is a raw image",
  async setup(lab, o) {
    const img = await lab.createImage("a.qcow2", DISK);
    const raw = await lab.createImage("b.raw", DISK, { format: "raw" });
    const p = await pair(
      lab,
      qcow2Blockdev({ nodeName: "disk0", file: img }),
      [
        "-blockdev",
        JSON.stringify({ driver: "raw", "node-name": "disk0", file: { driver: "file", filename: raw } }),
      ],
      o,
    );
    await p.source.monitor.addBitmap("disk0", "keep", { granularity: 65536, persistent: true });
    return p;
  },
};

/** A throttle filter on top of a disk, as Proxmox VE 9 puts on every disk. */
export const throttled: Scenario = {
  name: "throttle",
  description: "a named throttle filter node over a qcow2 node with bitmaps",
  async setup(lab, o) {
    const img = await lab.createImage("a.qcow2", DISK);
    const args = (file: string): string[] => [
      "-object",
      "throttle-group,id=tg0,x-bps-total=1000000000",
      ...qcow2Blockdev({ nodeName: "fmt0", file }),
      "-blockdev",
      JSON.stringify({
        driver: "throttle",
        "node-name": "drive-scsi0",
        "throttle-group": "tg0",
        file: "fmt0",
      }),
    ];
    const p = await pair(lab, args(img), args(img), o);
    await p.source.monitor.addBitmap("fmt0", "pbs", { granularity: 65536, persistent: true });
    await writeRange(p.source.monitor, "drive-scsi0", 0, MiB);
    return p;
  },
};

/**
 * Bitmaps too large for QEMU's precopy threshold: four 64 GiB null-co nodes with three 64 KiB-granularity
 * bitmaps each (1.5 MiB of bitmap data) and no guest RAM stay `active` forever on QEMU 7.2 (reference R25).
 */
export const largeBitmaps: Scenario = {
  name: "large-bitmaps",
  description:
    "four 64 GiB null-co nodes with three dirtied bitmaps each: a payload precopy cannot converge on",
  async setup(lab, o) {
    const nodes = ["disk0", "disk1", "disk2", "disk3"];
    const args = nodes.flatMap((n) => nullBlockdev(n, 64 * 1024 * MiB));
    const p = await pair(lab, args, args, o);
    for (const n of nodes) {
      for (let j = 0; j < 3; j++) await p.source.monitor.addBitmap(n, `bm${j}`, { granularity: 65536 });
      await writeRange(p.source.monitor, n, 0, 4 * MiB);
      await writeRange(p.source.monitor, n, 60 * 1024 * MiB, MiB);
    }
    return p;
  },
};

/** One 64 GiB node with three bitmaps: too large for precopy, fine for postcopy (bitmaps on one node). */
export const largeSingleNode: Scenario = {
  name: "large-single-node",
  description: "one 64 GiB null-co node with three dirtied bitmaps (384 KiB of bitmap data)",
  async setup(lab, o) {
    const args = nullBlockdev("disk0", 64 * 1024 * MiB);
    const p = await pair(lab, args, args, o);
    for (let j = 0; j < 3; j++) await p.source.monitor.addBitmap("disk0", `bm${j}`, { granularity: 65536 });
    await writeRange(p.source.monitor, "disk0", 0, 4 * MiB);
    await writeRange(p.source.monitor, "disk0", 63 * 1024 * MiB, MiB);
    return p;
  },
};

/**
 * A large sparse qcow2 disk with persistent bitmaps, whose bitmap payload keeps precopy `active` (it does not
 * converge without a larger downtime-limit): the window in which failures are injected. Beside it, a null-co node
 * with a transient bitmap.
 */
export const stallingPersistent: Scenario = {
  name: "stalling-persistent",
  description:
    "a 64 GiB sparse qcow2 with three persistent bitmaps (384 KiB of bitmap data) and a null-co node",
  async setup(lab, o) {
    const img = await lab.createImage("big.qcow2", 64 * 1024 * MiB);
    const dstArgs = [...qcow2Blockdev({ nodeName: "disk0", file: img }), ...nullBlockdev("disk1", DISK)];
    const p = await pair(lab, dstArgs, dstArgs, o);
    const m = p.source.monitor;
    for (let j = 0; j < 3; j++)
      await m.addBitmap("disk0", `backup-${j}`, { granularity: 65536, persistent: true });
    await m.addBitmap("disk1", "transient", { granularity: 65536 });
    await m.disableBitmap("disk0", "backup-2");
    await writeRange(m, "disk0", 0, 2 * MiB);
    await writeRange(m, "disk0", 40 * 1024 * MiB, MiB);
    await writeRange(m, "disk1", MiB, MiB);
    return p;
  },
};

/**
 * The demo's VM: a `-drive` disk under a running drive-mirror, a `-blockdev` disk whose node-name differs on the
 * destination, a bitmap on a node with a generated name, and several dirtied bitmaps. Shared storage.
 */
export const demo: Scenario = {
  name: "demo",
  description:
    "a -drive disk under a drive-mirror, a renamed -blockdev disk, a bitmap on a generated node-name",
  async setup(lab, o) {
    const sys = await lab.createImage("system.qcow2", 256 * MiB);
    const data = await lab.createImage("data.qcow2", 512 * MiB);
    const p = await pair(
      lab,
      [...drive({ id: "drive0", file: sys }), ...qcow2Blockdev({ nodeName: "data0", file: data })],
      [...drive({ id: "drive0", file: sys }), ...qcow2Blockdev({ nodeName: "vdb", file: data })],
      o,
    );
    const m = p.source.monitor;
    await m.addBitmap("drive0", "backup-daily", { granularity: 65536, persistent: true });
    await m.addBitmap("drive0", "backup-hourly", { granularity: 65536 });
    await m.addBitmap("data0", "backup-daily", { granularity: 65536, persistent: true });
    await m.addBitmap("data0", "cbt-0001", { granularity: 4096 });
    await m.addBitmap(await protocolNodeOf(p.source, sys), "forgotten", { granularity: 65536 });
    await writeRange(m, "drive0", 16 * MiB, 8 * MiB);
    await writeRange(m, "data0", 100 * MiB, 3 * MiB);
    await writeRange(m, "data0", 400 * MiB, 64 * 1024);
    await startDriveMirror(m, "drive0", lab.path("mirror.qcow2"));
    await writeRange(m, "drive0", 200 * MiB, MiB);
    return p;
  },
};

/**
 * No shared storage: each side has its own images. The source's disk0 overlays a backing image that stores
 * bitmaps of its own ('daily' on both layers, 'archive' only in the backing image); the destination has empty
 * images of the same size under other node-names. A second disk is a -drive on both sides.
 */
export const copyStorage: Scenario = {
  name: "copy-storage",
  description:
    "separate images: a backing chain with bitmaps on both layers, and a -drive disk; empty destination disks",
  async setup(lab, o) {
    const base = await lab.createImage("base.qcow2", DISK, {
      bitmaps: [{ name: "daily" }, { name: "archive" }],
    });
    // Writes into the backing image while its bitmaps record them (as when it was the active layer).
    await lab.qemuIo(base, "write -P 0x11 0 1M");
    await lab.qemuIo(base, "write -P 0x12 40M 512k");
    const top = await lab.createImage("top.qcow2", DISK, { backing: base });
    const sys = await lab.createImage("sys.qcow2", DISK);
    const dstA = await lab.createImage("dst-a.qcow2", DISK);
    const dstSys = await lab.createImage("dst-sys.qcow2", DISK);
    const p = await pair(
      lab,
      [
        ...qcow2Blockdev({ nodeName: "disk0", file: top, backing: { nodeName: "base0", file: base } }),
        ...drive({ id: "drive1", file: sys }),
      ],
      [...qcow2Blockdev({ nodeName: "vda", file: dstA }), ...drive({ id: "drive1", file: dstSys })],
      o,
    );
    const m = p.source.monitor;
    await m.addBitmap("disk0", "daily", { granularity: 65536, persistent: true });
    await m.addBitmap("disk0", "hourly", { granularity: 65536 });
    await m.addBitmap("drive1", "backup", { granularity: 65536, persistent: true });
    await writeRange(m, "disk0", 2 * MiB, MiB, 0x21);
    await writeRange(m, "disk0", 20 * MiB, 3 * MiB, 0x22);
    await writeRange(m, "drive1", 0, 5 * MiB, 0x31);
    return p;
  },
};

/**
 * A real machine instead of `-machine none`: 128 MiB of guest RAM and SeaBIOS running, the disks attached to
 * guest devices. The RAM travels with the bitmaps and gives QEMU a real bandwidth estimate. Both sides use the same
 * versioned machine type, so a newer destination accepts an older source; `share-rw` lets the lab dirty a disk
 * that a device holds.
 */
export const guestWithRam: Scenario = {
  name: "guest-with-ram",
  description: "pc-i440fx-7.2 with 128 MiB RAM, a qcow2 disk and a null-co disk on virtio-blk devices",
  async setup(lab, o) {
    const a = await lab.createImage("a.qcow2", DISK);
    const b = await lab.createImage("b.qcow2", DISK);
    const machine = ["-machine", "pc-i440fx-7.2", "-m", "128"];
    const devices = [
      "-device",
      "virtio-blk-pci,drive=disk0,share-rw=on,id=vd0",
      "-device",
      "virtio-blk-pci,drive=disk1,share-rw=on,id=vd1",
    ];
    const p = await pair(
      lab,
      [
        ...machine,
        ...qcow2Blockdev({ nodeName: "disk0", file: a }),
        ...nullBlockdev("disk1", DISK),
        ...devices,
      ],
      [
        ...machine,
        ...qcow2Blockdev({ nodeName: "disk0", file: b }),
        ...nullBlockdev("disk1", DISK),
        ...devices,
      ],
      o,
    );
    const m = p.source.monitor;
    await m.addBitmap("disk0", "backup-0", { granularity: 65536, persistent: true });
    await m.addBitmap("disk0", "cbt", { granularity: 4096 });
    await m.addBitmap("disk1", "backup-1", { granularity: 65536 });
    await writeRange(m, "disk0", 0, 2 * MiB);
    await writeRange(m, "disk0", 33 * MiB, 512 * 1024);
    await writeRange(m, "disk1", 8 * MiB, MiB);
    return p;
  },
};

/** The scenarios whose QMP replies scripts/capture-fixtures.ts records for the planner's unit tests. */
export const scenarios: readonly Scenario[] = [
  driveMirror,
  blockdevSame,
  blockdevRenamed,
  backingChain,
  busyAndInconsistent,
  sizes,
  destinationExisting,
  longName,
  driveWithNodeName,
  rawDestination,
  throttled,
  copyStorage,
];
