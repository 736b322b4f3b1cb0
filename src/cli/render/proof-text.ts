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
        (p.unmarkedBlocks > 0
          ? c.red(` and misses ${p.unmarkedBlocks} the guest wrote`)
          : p.dirtyBlocks > p.guestBlocks
            ? ` (none missed; ${p.dirtyBlocks - p.guestBlocks} more: written as the source stopped, before the guest could report it)`
            : " (none missed)"),
    );
    const rows: [string, string][] = [
      ["full backup, taken as the bitmaps were created", p.backupSha256],
      [`full backup + the ${p.dirtyBlocks} blocks marked dirty`, p.restoredSha256],
      ["the destination's disk", p.destinationSha256],
    ];
    const width = Math.max(...rows.map(([label]) => label.length));
    for (const [label, sha] of rows) lines.push(`  ${label.padEnd(width)}  sha256 ${sha}`);
  }
  return `${lines.join("\n")}\n`;
}
