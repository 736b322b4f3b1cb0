import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { rm } from "node:fs/promises";
import { promisify } from "node:util";
import type { Lab } from "./lab.js";
import type { QemuProcess } from "./process.js";

const execFileP = promisify(execFile);

/**
 * The proof an incremental-backup product needs after a migration: the last full backup, plus the blocks the
 * destination's bitmap marks dirty, read as backup tools read them (an NBD export carrying the bitmap, its
 * `qemu:dirty-bitmap:NAME` metadata context listed with `nbdinfo --map`, the data copied with `nbdcopy`), equals the
 * destination's disk. A block the guest wrote that the bitmap lost makes the two hashes differ.
 */

export interface Extent {
  offset: number;
  length: number;
}

/** One disk's proof. Hashes are sha256 of the whole virtual disk, hex. */
export interface BackupProof {
  node: string;
  bitmap: string;
  granularity: number;
  diskBytes: number;
  /** Distinct blocks the guest reported writing since the full backup (from its serial log). */
  guestBlocks: number;
  /** Blocks (granules) the destination's bitmap marks dirty. */
  dirtyBlocks: number;
  /** Blocks the guest wrote that the bitmap does not mark: must be 0. */
  unmarkedBlocks: number;
  backupSha256: string;
  /** The full backup with the dirty blocks laid over it: what a restore of the next incremental would give. */
  restoredSha256: string;
  destinationSha256: string;
  ok: boolean;
}

export interface ProofDisk {
  node: string;
  bitmap: string;
  granularity: number;
  /** The raw full backup taken when the bitmap was created (see fullBackup). */
  backupFile: string;
  /** Offsets of the blocks the guest wrote since then. */
  guestBlocks: ReadonlySet<number>;
}

async function tool(cmd: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileP(cmd, args, { maxBuffer: 64 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === "ENOENT")
      throw new Error(`${cmd} not found: install libnbd-bin (apt-get install libnbd-bin)`, { cause: err });
    throw new Error(`${cmd} ${args.join(" ")} failed: ${e.stderr?.trim() ?? e.message}`, { cause: err });
  }
}

function sha256(b: Uint8Array): string {
  return createHash("sha256").update(b).digest("hex");
}

/**
 * Runs `fn` with an NBD server on `proc` exporting each node read-only (with its bitmap, if given), then removes
 * the exports and the server, also when `fn` throws.
 */
async function withExports<T>(
  lab: Lab,
  proc: QemuProcess,
  exports: { node: string; bitmap?: string }[],
  fn: (urls: string[]) => Promise<T>,
): Promise<T> {
  const mon = proc.monitor;
  const sock = lab.path(`${proc.label}-nbd.sock`);
  await mon.run("nbd-server-start", { addr: { type: "unix", data: { path: sock } } });
  const ids: string[] = [];
  try {
    const backends = await mon.blockBackends();
    for (const [i, e] of exports.entries()) {
      const id = `bf-proof-${i}`;
      // An export names a node; a -drive's name resolves to its root node.
      const node = backends.find((b) => b.device === e.node)?.inserted?.["node-name"] ?? e.node;
      await mon.run("block-export-add", {
        type: "nbd",
        id,
        name: id,
        "node-name": node,
        writable: false,
        ...(e.bitmap ? { bitmaps: [e.bitmap] } : {}),
      });
      ids.push(id);
    }
    return await fn(ids.map((id) => `nbd+unix:///${id}?socket=${sock}`));
  } finally {
    for (const id of ids) await mon.run("block-export-del", { id }).catch(() => undefined);
    await mon.run("nbd-server-stop").catch(() => undefined);
    await rm(sock, { force: true });
  }
}

/** Copies each node's content, as the guest sees it, into a raw file (the full backup). */
export async function fullBackup(
  lab: Lab,
  proc: QemuProcess,
  disks: { node: string; file: string }[],
): Promise<void> {
  await withExports(lab, proc, disks, async (urls) => {
    for (const [i, d] of disks.entries()) await tool("nbdcopy", [urls[i] ?? "", d.file]);
  });
}

/** The dirty extents of an export's `qemu:dirty-bitmap:NAME` context, from `nbdinfo --json --map`. */
export async function dirtyExtents(url: string, bitmap: string): Promise<Extent[]> {
  const raw = JSON.parse(
    await tool("nbdinfo", ["--json", `--map=qemu:dirty-bitmap:${bitmap}`, url]),
  ) as unknown;
  const list = (Array.isArray(raw) ? raw : ((raw as { extents?: unknown[] }).extents ?? [])) as {
    offset: number;
    length: number;
    type: number;
  }[];
  // Bit 0 of a dirty-bitmap context's flags is NBD_STATE_DIRTY.
  return list.filter((e) => (e.type & 1) === 1).map((e) => ({ offset: e.offset, length: e.length }));
}

/**
 * Computes the proof on `proc` (the destination, paused after a verified migration) for each disk. A disabled copy
 * of each bitmap is exported, because QEMU refuses a read-only export of an enabled bitmap; it is removed after.
 */
export async function proveBackup(
  lab: Lab,
  proc: QemuProcess,
  disks: readonly ProofDisk[],
): Promise<BackupProof[]> {
  const mon = proc.monitor;
  const copies = disks.map((d, i) => ({ node: d.node, bitmap: `bf-proof-copy-${i}` }));
  const added: typeof copies = [];
  try {
    for (const [i, d] of disks.entries()) {
      const c = copies[i];
      if (!c) continue;
      await mon.addBitmap(d.node, c.bitmap, { granularity: d.granularity, disabled: true });
      added.push(c);
      await mon.mergeBitmaps(d.node, c.bitmap, [d.bitmap]);
    }
    return await withExports(lab, proc, copies, async (urls) => {
      const proofs: BackupProof[] = [];
      for (const [i, d] of disks.entries()) {
        const url = urls[i] ?? "";
        const extents = await dirtyExtents(url, copies[i]?.bitmap ?? "");
        const dstFile = lab.path(`proof-${i}.raw`);
        await tool("nbdcopy", [url, dstFile]);
        const destination = readFileSync(dstFile);
        const restored = Buffer.from(readFileSync(d.backupFile));
        if (restored.length !== destination.length)
          throw new Error(
            `full backup of ${d.node} has ${restored.length} bytes, the destination disk ${destination.length}`,
          );
        for (const e of extents) destination.copy(restored, e.offset, e.offset, e.offset + e.length);
        await rm(dstFile, { force: true });
        const covered = (off: number): boolean =>
          extents.some((e) => off >= e.offset && off < e.offset + e.length);
        const unmarked = [...d.guestBlocks].filter((o) => !covered(o)).length;
        const restoredSha256 = sha256(restored);
        const destinationSha256 = sha256(destination);
        proofs.push({
          node: d.node,
          bitmap: d.bitmap,
          granularity: d.granularity,
          diskBytes: destination.length,
          guestBlocks: d.guestBlocks.size,
          dirtyBlocks: extents.reduce((n, e) => n + Math.ceil(e.length / d.granularity), 0),
          unmarkedBlocks: unmarked,
          backupSha256: sha256(readFileSync(d.backupFile)),
          restoredSha256,
          destinationSha256,
          ok: unmarked === 0 && restoredSha256 === destinationSha256,
        });
      }
      return proofs;
    });
  } finally {
    // Best effort: a copy left behind is the lab's own, on a VM the lab stops anyway.
    for (const c of added) await mon.removeBitmap(c.node, c.bitmap).catch(() => undefined);
  }
}
