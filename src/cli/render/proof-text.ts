import type { BackupProof } from "../../lab/backup-proof.js";
import type { Colors } from "../output.js";

/** The backup proof as the demo prints it: per disk, the numbers and the three hashes. */
export function renderProofText(proofs: readonly BackupProof[], c: Colors): string {
  const lines: string[] = [];
  for (const p of proofs) {
    const verdict = p.ok
      ? c.green("full backup + dirty blocks = destination disk")
      : c.red("MISMATCH: the next incremental backup would be wrong");
    lines.push(`${c.bold(`${p.node}/${p.bitmap}`)}: ${verdict}`);
    lines.push(
      `  the guest wrote ${p.guestBlocks} distinct ${p.granularity / 1024} KiB blocks since the full backup; ` +
        `the destination's bitmap marks ${p.dirtyBlocks} dirty` +
        (p.unmarkedBlocks > 0 ? c.red(` and misses ${p.unmarkedBlocks} the guest wrote`) : " (none missed)"),
    );
    lines.push(`  full backup (at bitmap creation)    sha256 ${p.backupSha256}`);
    lines.push(
      `  full backup + the ${String(p.dirtyBlocks).padEnd(5)} dirty blocks sha256 ${p.restoredSha256}`,
    );
    lines.push(`  destination disk                    sha256 ${p.destinationSha256}`);
  }
  return `${lines.join("\n")}\n`;
}
