import { renderTable } from "./table.js";
import type { MigrateResult } from "../../migrate/run.js";
import type { Colors } from "../output.js";
import { formatMs, renderPlanText } from "./plan-text.js";

function short(sha: string | null): string {
  return sha === null ? "" : sha.slice(0, 12);
}

/** The human form of a migration result: the plan when it refused, else the verification table and the outcome. */
export function renderMigrateText(r: MigrateResult, c: Colors): string {
  if (r.phase === "planned") return renderPlanText(r.plan, c);
  const lines: string[] = [];
  if (r.bitmaps.length > 0) {
    const rows = r.bitmaps.map((b) => [
      b.source.drive ?? b.source.node,
      b.source.bitmap.length > 40 ? `${b.source.bitmap.slice(0, 39)}…` : b.source.bitmap,
      b.target.drive ?? b.target.node,
      b.target.bitmap.length > 40 ? `${b.target.bitmap.slice(0, 39)}…` : b.target.bitmap,
      b.verified === "failed"
        ? c.red(b.verified)
        : b.verified === "strict"
          ? c.green(b.verified)
          : c.yellow(b.verified),
      short(b.targetSha256 ?? b.sourceSha256),
      b.reason ?? "",
    ]);
    lines.push(
      renderTable(["source", "bitmap", "→ target", "target bitmap", "verified", "sha256", "note"], rows),
    );
  }
  const m = r.migration;
  const timing = [
    m.totalTimeMs !== null ? `total ${formatMs(m.totalTimeMs)}` : undefined,
    m.downtimeMs !== null ? `downtime ${formatMs(m.downtimeMs)}` : undefined,
    m.postcopy ? "postcopy" : undefined,
    m.downtimeLimitRaisedMs !== undefined
      ? `downtime-limit raised to ${m.downtimeLimitRaisedMs} ms for the switchover (restored)`
      : undefined,
  ].filter(Boolean);
  lines.push(`Migration: ${m.status}${timing.length ? ` (${timing.join(", ")})` : ""}.`);
  lines.push(`Source: ${r.source.runState ?? "gone"}. Destination: ${r.destination.runState ?? "gone"}.`);
  for (const rep of r.source.repaired) {
    lines.push(
      rep.ok
        ? `Repaired persistence of ${rep.node}/${rep.name} on the source (content unchanged).`
        : c.red(`Could not repair ${rep.node}/${rep.name}: ${rep.message ?? ""}`),
    );
  }
  if (r.ok) {
    const strict = r.bitmaps.filter((b) => b.verified === "strict").length;
    lines.push(
      c.green(`All ${r.bitmaps.length} bitmap(s) arrived and verified (${strict} by content hash).`),
    );
  } else if (r.error) {
    lines.push(c.red(`Failed: ${r.error.message} [${r.error.code}]`));
  }
  return `${lines.join("\n")}\n`;
}
