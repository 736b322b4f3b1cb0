import assert from "node:assert/strict";
import type { MigrateOptions, MigrateResult } from "../../src/migrate/run.js";
import type { BackupProof } from "../../src/lab/backup-proof.js";
import { continueOnDestination, proveGuestBackup, type GuestPair } from "../../src/lab/guest-scenarios.js";
import type { Lab } from "../../src/lab/lab.js";
import { runMigration } from "./migrate.js";

export interface GuestRun {
  result: MigrateResult;
  proofs: BackupProof[];
  sourceRound: number;
  destinationRound: number;
}

/**
 * Migrates a writing guest, then checks what a backup product relies on: every bitmap verified, the full backup
 * plus the destination's dirty blocks equal to the destination's disk, the bitmap holding exactly the blocks the
 * guest reported writing (plus at most the one write per disk the guest had not yet reported when the source
 * stopped), and the guest running on at the destination.
 */
export async function migrateWritingGuest(
  lab: Lab,
  pair: GuestPair,
  extra: Partial<MigrateOptions> = {},
): Promise<GuestRun> {
  const result = await runMigration(lab, pair, extra);
  assert.equal(result.ok, true, JSON.stringify(result.error));
  assert.equal(result.phase, "verified");
  for (const b of result.bitmaps) assert.equal(b.verified, "strict", `${b.target.bitmap}: ${b.reason ?? ""}`);
  const proofs = await proveGuestBackup(lab, pair);
  assert.equal(proofs.length, pair.disks.length);
  for (const p of proofs) {
    const what = `${p.node}/${p.bitmap}`;
    assert.ok(p.guestBlocks > 0, `${what}: the guest wrote nothing`);
    assert.equal(p.unmarkedBlocks, 0, `${what}: blocks the guest wrote are not in the bitmap`);
    assert.ok(
      p.dirtyBlocks - p.guestBlocks <= 1,
      `${what}: ${p.dirtyBlocks} dirty, ${p.guestBlocks} written`,
    );
    assert.notEqual(p.backupSha256, p.destinationSha256, `${what}: the disk did not change`);
    assert.equal(p.restoredSha256, p.destinationSha256, `${what}: full backup + dirty blocks != disk`);
    assert.equal(p.ok, true);
  }
  const { sourceRound, destinationRound } = await continueOnDestination(pair);
  assert.ok(destinationRound >= sourceRound, `destination round ${destinationRound} < source ${sourceRound}`);
  assert.equal((await pair.destination.monitor.status()).status, "running");
  return { result, proofs, sourceRound, destinationRound };
}
