import { startDriveMirror } from "./actions.js";
import { fullBackup, proveBackup, type BackupProof } from "./backup-proof.js";
import { GUEST_BLOCK } from "./guest-init.js";
import { ensureGuestImage, type GuestImage } from "./guest-image.js";
import { guestArgs, readGuestSerial, waitForGuest, writtenBlocks, type GuestSerial } from "./guest.js";
import type { Lab } from "./lab.js";
import { protocolNodeOf, type ScenarioOptions, type ScenarioPair } from "./scenarios.js";
import { drive, qcow2Blockdev } from "./topology.js";

/**
 * Topologies with the real Linux guest writing to its disks. Each setup starts the source paused, creates the
 * bitmaps, takes the full backup they are relative to (over NBD, before the guest has run a single instruction),
 * then lets the guest run until it is writing. After a migration, `proveGuestBackup` computes the backup proof on
 * the destination and `continueOnDestination` shows the guest running on there.
 */

const MiB = 1024 * 1024;
const DISK = 64 * MiB;

/** A disk the proof covers: the guest's name for it, where its bitmap lands on the destination, its full backup. */
export interface GuestDisk {
  guestDisk: string;
  /** Node (or drive) on the source and on the destination that carries `bitmap`. */
  sourceNode: string;
  destinationNode: string;
  bitmap: string;
  backupFile: string;
}

export interface GuestPair extends ScenarioPair {
  image: GuestImage;
  sourceSerial: string;
  destinationSerial: string;
  disks: GuestDisk[];
}

export interface GuestScenario {
  name: string;
  description: string;
  setup(lab: Lab, options?: GuestScenarioOptions): Promise<GuestPair>;
}

export interface GuestScenarioOptions extends ScenarioOptions {
  image?: GuestImage;
  /** Rounds the guest must have written before setup returns (default 3). */
  rounds?: number;
  log?: (line: string) => void;
}

interface DiskSpec {
  /** Source and destination arguments for the disk. */
  src: string[];
  dst: string[];
  /** Name the device attaches to on each side. */
  srcName: string;
  dstName: string;
  /** Bitmaps to add on the source (name, granularity, persistent); the first is the one the proof uses. */
  bitmaps: [string, number, boolean][];
}

async function prefilled(lab: Lab, name: string, pattern: number): Promise<string> {
  const file = await lab.createImage(name, DISK);
  // Data before the full backup, so the backup is not just zeros and a lost block would show.
  await lab.qemuIo(file, `write -P ${pattern} 0 4M`);
  await lab.qemuIo(file, `write -P ${pattern + 1} 40M 1M`);
  return file;
}

async function start(
  lab: Lab,
  disks: DiskSpec[],
  o: GuestScenarioOptions,
  before?: (p: GuestPair) => Promise<void>,
): Promise<GuestPair> {
  const image = o.image ?? (await ensureGuestImage(o.log ? { log: o.log } : {}));
  const sourceSerial = lab.path("src-serial.log");
  const destinationSerial = lab.path("dst-serial.log");
  const source = await lab.start({
    label: "src",
    paused: true,
    args: [
      ...disks.flatMap((d) => d.src),
      ...guestArgs(image, { serial: sourceSerial, disks: disks.map((d) => d.srcName) }),
      ...(o.sourceArgs ?? []),
    ],
    ...(o.sourceBuild ? { build: o.sourceBuild } : {}),
  });
  const destination = await lab.start({
    label: "dst",
    incoming: "defer",
    ...(o.paused ? { paused: true } : {}),
    args: [
      ...disks.flatMap((d) => d.dst),
      ...guestArgs(image, { serial: destinationSerial, disks: disks.map((d) => d.dstName) }),
    ],
    ...(o.destinationBuild ? { build: o.destinationBuild } : {}),
  });
  const m = source.monitor;
  for (const d of disks)
    for (const [name, granularity, persistent] of d.bitmaps)
      await m.addBitmap(d.srcName, name, { granularity, persistent });
  const guestDisks = disks.map((d, i): GuestDisk => ({
    guestDisk: `vd${String.fromCharCode(0x61 + i)}`,
    sourceNode: d.srcName,
    destinationNode: d.dstName,
    bitmap: d.bitmaps[0]?.[0] ?? "",
    backupFile: lab.path(`backup-${i}.raw`),
  }));
  const pair: GuestPair = { source, destination, image, sourceSerial, destinationSerial, disks: guestDisks };
  await fullBackup(
    lab,
    source,
    guestDisks.map((d) => ({ node: d.sourceNode, file: d.backupFile })),
  );
  if (before) await before(pair);
  await m.cont();
  const rounds = o.rounds ?? 3;
  await waitForGuest(sourceSerial, (s) => s.ready && s.round >= rounds, {
    proc: source,
    what: `round ${rounds}`,
    timeoutMs: 120_000,
  });
  return pair;
}

const blockdevDisk = (name: string, src: string, dst: string, bitmaps: DiskSpec["bitmaps"]): DiskSpec => ({
  src: qcow2Blockdev({ nodeName: name, file: src }),
  dst: qcow2Blockdev({ nodeName: name, file: dst }),
  srcName: name,
  dstName: name,
  bitmaps,
});

/** Shared storage, two -blockdev disks with a persistent and a transient bitmap each. */
export const guestShared: GuestScenario = {
  name: "guest-shared",
  description: "the writing guest on two shared -blockdev qcow2 disks, two bitmaps each",
  async setup(lab, o = {}) {
    const a = await prefilled(lab, "a.qcow2", 0x11);
    const b = await prefilled(lab, "b.qcow2", 0x21);
    return start(
      lab,
      [
        blockdevDisk("disk0", a, a, [
          ["backup-0", GUEST_BLOCK, true],
          ["cbt-0", 4096, false],
        ]),
        blockdevDisk("disk1", b, b, [["backup-1", GUEST_BLOCK, false]]),
      ],
      o,
    );
  },
};

/** Shared storage, one disk: bitmaps on a single node, as `--postcopy` requires (POSTCOPY_UNSAFE otherwise). */
export const guestSingle: GuestScenario = {
  name: "guest-single",
  description: "the writing guest on one shared -blockdev qcow2 disk with two bitmaps",
  async setup(lab, o = {}) {
    const a = await prefilled(lab, "a.qcow2", 0x11);
    return start(
      lab,
      [
        blockdevDisk("disk0", a, a, [
          ["backup-0", GUEST_BLOCK, true],
          ["cbt-0", 4096, false],
        ]),
      ],
      o,
    );
  },
};

/** Separate storage: empty destination images of the same size, for `--copy-storage`. */
export const guestCopyStorage: GuestScenario = {
  name: "guest-copy-storage",
  description: "the writing guest on two -blockdev qcow2 disks; the destination has its own empty images",
  async setup(lab, o = {}) {
    const a = await prefilled(lab, "a.qcow2", 0x11);
    const b = await prefilled(lab, "b.qcow2", 0x21);
    const da = await lab.createImage("dst-a.qcow2", DISK);
    const db = await lab.createImage("dst-b.qcow2", DISK);
    return start(
      lab,
      [
        blockdevDisk("disk0", a, da, [["backup-0", GUEST_BLOCK, true]]),
        blockdevDisk("disk1", b, db, [["backup-1", GUEST_BLOCK, false]]),
      ],
      o,
    );
  },
};

/** A -drive disk under a running drive-mirror (mirror_top on top), shared storage. */
export const guestDriveMirror: GuestScenario = {
  name: "guest-drive-mirror",
  description: "the writing guest on a -drive disk while a drive-mirror of it runs on the source",
  async setup(lab, o = {}) {
    const a = await prefilled(lab, "sys.qcow2", 0x31);
    const d = drive({ id: "drive0", file: a });
    return start(
      lab,
      [{ src: d, dst: d, srcName: "drive0", dstName: "drive0", bitmaps: [["backup-0", GUEST_BLOCK, true]] }],
      o,
      (p) => startDriveMirror(p.source.monitor, "drive0", lab.path("mirror.qcow2")),
    );
  },
};

/**
 * The demo's machine: a -drive system disk under a running drive-mirror, a -blockdev data disk called vdb on the
 * destination (needs a map), a bitmap on the system disk's file node, whose name QEMU generated (needs a deny),
 * and five bitmaps in all. Shared storage.
 */
export const guestDemo: GuestScenario = {
  name: "guest-demo",
  description:
    "the writing guest on a -drive disk under a drive-mirror and a renamed -blockdev disk, a bitmap on a generated node-name",
  async setup(lab, o = {}) {
    const sys = await prefilled(lab, "system.qcow2", 0x41);
    const data = await prefilled(lab, "data.qcow2", 0x51);
    const d = drive({ id: "drive0", file: sys });
    return start(
      lab,
      [
        {
          src: d,
          dst: d,
          srcName: "drive0",
          dstName: "drive0",
          bitmaps: [
            ["backup-daily", GUEST_BLOCK, true],
            ["backup-hourly", GUEST_BLOCK, false],
          ],
        },
        {
          src: qcow2Blockdev({ nodeName: "data0", file: data }),
          dst: qcow2Blockdev({ nodeName: "vdb", file: data }),
          srcName: "data0",
          dstName: "vdb",
          bitmaps: [
            ["backup-daily", GUEST_BLOCK, true],
            ["cbt-0001", 4096, false],
          ],
        },
      ],
      o,
      async (p) => {
        await p.source.monitor.addBitmap(await protocolNodeOf(p.source, sys), "forgotten", {
          granularity: GUEST_BLOCK,
        });
        await startDriveMirror(p.source.monitor, "drive0", lab.path("mirror.qcow2"));
      },
    );
  },
};

/** The guest's serial logs on both sides, read now. */
export function guestLogs(pair: GuestPair): { source: GuestSerial; destination: GuestSerial } {
  return { source: readGuestSerial(pair.sourceSerial), destination: readGuestSerial(pair.destinationSerial) };
}

/**
 * The backup proof for every disk, computed on the destination, which must be paused (after the migration,
 * before `cont`): the blocks the guest wrote are then exactly those in the source's serial log.
 */
export async function proveGuestBackup(lab: Lab, pair: GuestPair): Promise<BackupProof[]> {
  const logs = guestLogs(pair);
  return proveBackup(
    lab,
    pair.destination,
    pair.disks.map((d) => ({
      node: d.destinationNode,
      bitmap: d.bitmap,
      granularity: GUEST_BLOCK,
      backupFile: d.backupFile,
      guestBlocks: writtenBlocks([logs.source, logs.destination], d.guestDisk),
    })),
  );
}

/**
 * Resumes the destination and waits until the guest reports a round past the last one the source saw: the
 * guest runs on where it left off. Returns the source's last round and the destination's first.
 */
export async function continueOnDestination(
  pair: GuestPair,
  timeoutMs = 60_000,
): Promise<{ sourceRound: number; destinationRound: number }> {
  const sourceRound = readGuestSerial(pair.sourceSerial).round;
  const status = await pair.destination.monitor.status();
  if (status.status !== "running") await pair.destination.monitor.cont();
  const s = await waitForGuest(pair.destinationSerial, (x) => x.round > sourceRound, {
    proc: pair.destination,
    what: `a round after ${sourceRound} on the destination`,
    timeoutMs,
  });
  return { sourceRound, destinationRound: s.writes[0]?.round ?? s.round };
}
