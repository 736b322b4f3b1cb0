import { renderTable } from "./table.js";
import { formatBytes } from "../../util/format.js";
import type { Colors } from "../output.js";
import { addedDowntimeMs } from "../../policy/convergence.js";
import type { MonitorTransport, PlanTransport, StreamTransport } from "../../policy/transport.js";
import type { Plan, PlanBitmap } from "../../policy/types.js";

export function formatMs(ms: number): string {
  if (ms < 1) return `${Math.max(1, Math.round(ms * 1000))} µs`;
  if (ms < 10_000) return `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(1)} s`;
}

function where(node: string, drive: string | null): string {
  return drive ? `${drive} (${node})` : node;
}

function changes(b: PlanBitmap): string {
  const t = b.target;
  if (!t) return "";
  const out: string[] = [];
  if (t.bitmap !== b.source.bitmap) out.push(`rename → ${t.bitmap}`);
  if (t.persistent !== b.source.persistent) out.push(t.persistent ? "→ persistent" : "→ transient");
  if (t.enabled !== b.source.recording) out.push(t.enabled ? "→ enabled" : "→ disabled");
  return out.join(", ");
}

function truncateName(s: string, max = 48): string {
  return s.length <= max ? s : `${s.slice(0, max - 1)}…`;
}

const MONITOR_WORDS: Record<MonitorTransport, string> = { unix: "unix socket", tcp: "TCP", ssh: "SSH" };
const STREAM_WORDS: Record<StreamTransport, string> = {
  unix: "unix socket",
  "ssh-tunnel": "SSH tunnel",
  tls: "QEMU's TLS",
  plaintext: "plaintext TCP",
};

/** The route of `transport` in one line, in the words of DESIGN section 5's values. */
function routeLine(t: PlanTransport): string {
  const migration = t.migration === null ? "not known (no --uri)" : `over ${STREAM_WORDS[t.migration]}`;
  const nbd = t.nbd === null ? "" : `, disk copy (NBD) over ${STREAM_WORDS[t.nbd]}`;
  return (
    `Route: source monitor over ${MONITOR_WORDS[t.monitors.source]}, destination monitor over ` +
    `${MONITOR_WORDS[t.monitors.destination]}; migration stream ${migration}${nbd}.`
  );
}

/** The human form of a plan: the table, then every error with its fix, the warnings, the route, and the payload. */
export function renderPlanText(plan: Plan, c: Colors): string {
  const lines: string[] = [];
  if (plan.bitmaps.length === 0) {
    lines.push("The source has no named dirty bitmaps: nothing to carry.");
  } else {
    const rows = plan.bitmaps.map((b) => [
      where(b.source.node, b.source.drive),
      truncateName(b.source.bitmap),
      b.action === "migrate" ? c.green("migrate") : b.action === "skip" ? c.dim("skip") : c.red("error"),
      b.rule,
      b.target ? where(b.target.node, b.target.drive) : "",
      b.target ? truncateName(b.target.bitmap) : "",
      changes(b),
    ]);
    lines.push(
      renderTable(["source", "bitmap", "action", "rule", "target", "target bitmap", "changes"], rows),
    );
  }
  const migrating = plan.bitmaps.filter((b) => b.action === "migrate").length;
  const skipped = plan.bitmaps.filter((b) => b.action === "skip").length;
  lines.push("");
  lines.push(
    `${plan.bitmaps.length} bitmap(s): ${migrating} to migrate, ${skipped} skipped, ${plan.bitmaps.length - migrating - skipped} with errors.`,
  );
  if (plan.errors.length > 0) {
    lines.push("");
    lines.push(
      c.red(c.bold(`${plan.errors.length} error(s): nothing will be migrated until they are fixed.`)),
    );
    for (const e of plan.errors) {
      const subject = e.bitmap !== null ? ` ${e.node ?? ""}/${truncateName(e.bitmap)}` : "";
      lines.push(`  ${c.red(e.code)}${subject}: ${e.message}`);
    }
  }
  if (plan.warnings.length > 0) {
    lines.push("");
    for (const w of plan.warnings) lines.push(`  ${c.yellow(`warning ${w.code}`)}: ${w.message}`);
  }
  lines.push("");
  if (plan.transport) lines.push(routeLine(plan.transport));
  if (plan.payloadBytes > 0) {
    const bytes =
      plan.payloadBytes < 1024
        ? formatBytes(plan.payloadBytes)
        : `${formatBytes(plan.payloadBytes)} (${plan.payloadBytes} bytes)`;
    lines.push(
      `Bitmap payload: ${bytes}, sent during the switchover: adds about ` +
        `${formatMs(addedDowntimeMs(plan.payloadBytes, 1e9))} of downtime at 1 Gbit/s, ` +
        `${formatMs(addedDowntimeMs(plan.payloadBytes, 10e9))} at 10 Gbit/s.`,
    );
  }
  lines.push(plan.ok ? c.green("Plan OK.") : c.red("Plan has errors."));
  return `${lines.join("\n")}\n`;
}
