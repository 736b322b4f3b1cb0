import type { BlockGraph } from "../graph/model.js";
import type { MigrateResult } from "../migrate/run.js";
import type { Plan, PlanBitmap, PlanError } from "../policy/types.js";
import type { Scene, Tone } from "./scene.js";
import { LINK_COLOURS, TONES } from "./svg.js";
import { esc, plural, SANS, MONO, truncate } from "./text.js";
import { formatBytes } from "../util/format.js";

export interface PageInput {
  plan: Plan;
  source: BlockGraph;
  destination: BlockGraph;
  result: MigrateResult | undefined;
  title: string;
  scene: Scene;
  svg: string;
  layoutNote: string;
}

const CSS = `
*{box-sizing:border-box}
body{margin:0;background:#f6f8fa;color:#1f2328;font:14px/1.45 ${SANS}}
header,section,footer{padding:0 24px}
header{padding-top:18px}
h1{font-size:19px;margin:0 0 6px}
h2{font-size:14px;margin:22px 0 8px;text-transform:uppercase;letter-spacing:.05em;color:#424a53}
code,.mono{font-family:${MONO};font-size:12.5px}
.summary{display:flex;flex-wrap:wrap;gap:8px;align-items:center;margin:6px 0 10px}
.pill{display:inline-flex;align-items:center;gap:6px;padding:2px 10px;border-radius:999px;border:1px solid #d0d7de;background:#fff;font-size:13px}
.pill b{font-weight:650}
.pill.ok{border-color:#4ac26b;background:#dafbe1;color:#116329}
.pill.bad{border-color:#ff8182;background:#ffebe9;color:#82071e}
.pill.warn{border-color:#d4a72c;background:#fff8c5;color:#7d4e00}
.legend{display:flex;flex-wrap:wrap;gap:6px 18px;font-size:12.5px;color:#424a53;margin:4px 0 14px}
.legend span{display:inline-flex;align-items:center;gap:6px}
.legend svg{flex:none}
.canvas{padding:0 8px 8px;margin:0 16px}
.canvas svg{display:block}
.errors li,.warnings li{margin:0 0 10px;padding:8px 12px;border-radius:6px;background:#fff;border:1px solid #d0d7de}
.errors li{border-left:4px solid #cf222e}
.warnings li{border-left:4px solid #d4a72c}
.code{font-family:${MONO};font-weight:700;font-size:12.5px}
.errors .code{color:#82071e}
.warnings .code{color:#7d4e00}
.where{color:#57606a;font-size:12.5px}
.fix{margin-top:4px;padding:4px 8px;background:#f6f8fa;border-radius:4px}
.fix b{color:#1a7f37}
.msg{overflow-wrap:anywhere}
ol{padding:0;margin:0;list-style:none}
table{border-collapse:collapse;background:#fff;border:1px solid #d0d7de;border-radius:6px;font-size:13px;width:100%;max-width:1400px}
th,td{text-align:left;padding:5px 10px;border-bottom:1px solid #eaeef2;vertical-align:top}
th{background:#f6f8fa;font-weight:600;color:#424a53}
td.reason{color:#57606a;overflow-wrap:anywhere;max-width:520px}
.tone{display:inline-block;padding:0 7px;border-radius:4px;border:1px solid;font-size:12px;white-space:nowrap}
footer{color:#6e7781;font-size:12px;padding-top:18px;padding-bottom:24px}
`;

function tone(t: Tone, text: string): string {
  const c = TONES[t];
  return `<span class="tone" style="background:${c.fill};border-color:${c.stroke};color:${c.text}${c.dash ? ";border-style:dashed" : ""}">${esc(text)}</span>`;
}

function swatch(t: Tone): string {
  const c = TONES[t];
  return `<svg width="26" height="14" aria-hidden="true"><rect x="0.5" y="0.5" width="25" height="13" rx="3" fill="${c.fill}" stroke="${c.stroke}"${c.dash ? ` stroke-dasharray="${c.dash}"` : ""}/></svg>`;
}

function lineSwatch(colour: string, dash = "", arrow = true): string {
  return `<svg width="34" height="14" aria-hidden="true"><path d="M1,7 L${arrow ? 26 : 33},7" stroke="${colour}" stroke-width="1.6"${dash ? ` stroke-dasharray="${dash}"` : ""}/>${arrow ? `<path d="M26,2.5 L33,7 L26,11.5 z" fill="${colour}"/>` : ""}</svg>`;
}

function legend(hasResult: boolean): string {
  const items: [string, string][] = [
    [swatch("migrate"), "bitmap that migrates"],
    [swatch("skip"), "skipped (the tag says which rule)"],
    [swatch("error"), "error (numbered, explained below)"],
    [swatch("incoming"), "arrives on the destination"],
    [swatch("existing"), "already on the destination"],
    [swatch("stored"), "stored in the image only"],
    [lineSwatch(LINK_COLOURS.migrate), "migration of one bitmap"],
    [lineSwatch(LINK_COLOURS.error, "5 3"), "what an error is about"],
    [lineSwatch("#8c959f"), "file child"],
    [lineSwatch("#8c959f", "6 4"), "backing child"],
    [
      `<svg width="40" height="16" aria-hidden="true"><rect x="0.5" y="0.5" width="39" height="15" rx="7.5" fill="#24292f"/></svg>`,
      "drive (BlockBackend)",
    ],
    [
      `<svg width="26" height="14" aria-hidden="true"><rect x="0.5" y="0.5" width="25" height="13" rx="3" fill="#fbf8ff" stroke="#8250df" stroke-dasharray="5 3"/></svg>`,
      "filter node (mirror_top, throttle, …)",
    ],
    [`<span class="code" style="color:#7d4e00;font-style:italic">#block</span>`, "generated node-name (GEN)"],
    [`<span class="code" style="color:#424a53">RO</span>`, "read-only node"],
  ];
  if (hasResult) {
    items.push(
      [swatch("strict"), "verified: content hash matches (strict)"],
      [swatch("count"), "verified by granularity and dirty count"],
      [swatch("weak"), "weak check (destination already ran)"],
      [swatch("failed"), "verification failed"],
    );
  }
  return `<div class="legend" data-legend>${items.map(([s, t]) => `<span>${s}${esc(t)}</span>`).join("")}</div>`;
}

function where(e: PlanError): string {
  if (e.node === null) return "the plan as a whole";
  const t = e.target ? ` → destination ${e.target.node}/${e.target.bitmap}` : "";
  return `source ${e.node}/${e.bitmap ?? "*"}${t}`;
}

/** The message's "Fix: ..." tail on a line of its own: that is what the reader acts on. */
function message(m: string): string {
  const i = m.search(/\bFix:/);
  if (i < 0) return `<div class="msg">${esc(m)}</div>`;
  return (
    `<div class="msg">${esc(m.slice(0, i).trim())}</div>` +
    `<div class="fix msg"><b>Fix:</b> ${esc(m.slice(i + 4).trim())}</div>`
  );
}

function errorList(errors: PlanError[]): string {
  if (errors.length === 0) return "";
  const items = errors.map(
    (e, i) =>
      `<li${attrs({ "data-error": e.code, "data-error-number": i + 1, "data-error-node": e.node ?? undefined, "data-error-bitmap": e.bitmap ?? undefined })}>` +
      `<span class="code">${i + 1}. ${esc(e.code)}</span> <span class="where" title="${esc(where(e))}">${esc(truncate(where(e), 160))}</span>${message(e.message)}</li>`,
  );
  return `<section class="errors"><h2>${plural(errors.length, "error")}</h2><ol>${items.join("")}</ol></section>`;
}

function warningList(plan: Plan): string {
  if (plan.warnings.length === 0) return "";
  const items = plan.warnings.map(
    (w) =>
      `<li${attrs({ "data-warning": w.code })}><span class="code">${esc(w.code)}</span> ` +
      `<span class="where">${esc(w.node !== undefined ? `${w.node}/${w.bitmap ?? "*"}` : "")}</span>${message(w.message)}</li>`,
  );
  return `<section class="warnings"><h2>${plural(plan.warnings.length, "warning")}</h2><ol>${items.join("")}</ol></section>`;
}

function attrs(a: Record<string, string | number | undefined>): string {
  return Object.entries(a)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => ` ${k}="${esc(String(v))}"`)
    .join("");
}

function name(s: string, max = 48): string {
  return s.length > max
    ? `<span class="mono" title="${esc(s)}">${esc(truncate(s, max))}</span>`
    : `<span class="mono">${esc(s)}</span>`;
}

function bitmapTable(scene: Scene, plan: Plan, hasResult: boolean): string {
  const rows = plan.bitmaps.map((p: PlanBitmap, i) => {
    const v = scene.verification.get(i);
    const src = `${name(p.source.drive !== null ? `${p.source.drive} (${p.source.node})` : p.source.node, 40)} / ${name(p.source.bitmap)}`;
    const dst = p.target
      ? `${name(p.target.drive !== null ? `${p.target.drive} (${p.target.node})` : p.target.node, 40)} / ${name(p.target.bitmap)}`
      : "—";
    const why =
      p.action === "error"
        ? p.errors.map((e) => e.code).join(", ")
        : v
          ? (v.reason ?? "content hash matches")
          : "";
    return (
      `<tr${attrs({ "data-plan-bitmap": p.source.bitmap, "data-action": p.action, "data-verified": v?.verified })}>` +
      `<td>${src}</td><td>${tone(p.action, p.action)}</td><td class="mono">${esc(p.rule)}</td><td>${dst}</td>` +
      `<td>${esc(formatBytes(p.source.dirtyBytes))}</td>` +
      (hasResult ? `<td>${v ? tone(v.verified, v.verified) : "—"}</td>` : "") +
      `<td class="reason">${esc(why)}</td></tr>`
    );
  });
  return (
    `<section><h2>${plural(plan.bitmaps.length, "bitmap")}</h2><table data-bitmap-table><thead><tr>` +
    `<th>source drive/node / bitmap</th><th>action</th><th>rule</th><th>destination</th><th>dirty</th>` +
    (hasResult ? "<th>verified</th>" : "") +
    `<th>${hasResult ? "reason" : "note"}</th></tr></thead><tbody>${rows.join("")}</tbody></table></section>`
  );
}

function summary(plan: Plan, result: MigrateResult | undefined): string {
  const count = (a: string): number => plan.bitmaps.filter((b) => b.action === a).length;
  const pills = [
    `<span class="pill"${attrs({ "data-count": "migrate" })}><b>${count("migrate")}</b> migrate</span>`,
    `<span class="pill"${attrs({ "data-count": "skip" })}><b>${count("skip")}</b> skip</span>`,
    `<span class="pill${plan.errors.length > 0 ? " bad" : ""}"${attrs({ "data-count": "error" })}><b>${plan.errors.length}</b> ${plan.errors.length === 1 ? "error" : "errors"}</span>`,
    `<span class="pill"${attrs({ "data-payload": plan.payloadBytes })} title="${plan.payloadBytes} bytes of bitmap data in the migration stream"><b>${esc(formatBytes(plan.payloadBytes))}</b> payload</span>`,
  ];
  if (plan.warnings.length > 0)
    pills.push(
      `<span class="pill warn"><b>${plan.warnings.length}</b> ${plan.warnings.length === 1 ? "warning" : "warnings"}</span>`,
    );
  pills.push(
    plan.ok
      ? `<span class="pill ok" data-plan-ok="true">plan ok</span>`
      : `<span class="pill bad" data-plan-ok="false">plan has errors: nothing will be migrated</span>`,
  );
  if (result) {
    const ok = result.bitmaps.filter((b) => b.verified !== "failed").length;
    const failed = result.bitmaps.length - ok;
    pills.push(
      `<span class="pill ${result.ok ? "ok" : "bad"}"${attrs({ "data-result": result.ok ? "ok" : "failed", "data-phase": result.phase })}>${esc(outcomeLabel(result))}</span>`,
      `<span class="pill${failed === 0 && ok > 0 ? " ok" : ""}"${attrs({ "data-verified-ok": ok })}><b>${ok}</b> verified ok</span>`,
      `<span class="pill${failed > 0 ? " bad" : ""}"${attrs({ "data-verified-failed": failed })}><b>${failed}</b> failed</span>`,
    );
  }
  return `<div class="summary" data-summary>${pills.join("")}</div>`;
}

/** The run's outcome in words, once: the phase is the outcome, so it is not repeated beside it. */
function outcomeLabel(result: MigrateResult): string {
  if (result.ok) return "migration verified";
  if (result.phase === "planned") return "migration refused by the plan";
  return "migration failed";
}

function runSection(result: MigrateResult | undefined): string {
  if (!result) return "";
  const m = result.migration;
  const facts = [
    `status ${m.status}`,
    m.totalTimeMs !== null ? `total ${m.totalTimeMs} ms` : "",
    m.downtimeMs !== null ? `downtime ${m.downtimeMs} ms` : "",
    m.postcopy ? "postcopy" : "precopy",
    m.downtimeLimitRaisedMs !== undefined ? `downtime-limit raised to ${m.downtimeLimitRaisedMs} ms` : "",
    `source ${result.source.runState ?? "gone"}`,
    `destination ${result.destination.runState ?? "gone"}`,
  ].filter((s) => s !== "");
  const err = result.error
    ? `<ol class="errors"><li data-run-error="${esc(result.error.code)}"><span class="code">${esc(result.error.code)}</span>${message(result.error.message)}</li></ol>`
    : "";
  const repaired =
    result.source.repaired.length > 0 ? ` · source bitmaps repaired: ${result.source.repaired.length}` : "";
  return `<section class="run"><h2>migration</h2><p>${esc(facts.join(" · "))}${esc(repaired)}</p>${err}</section>`;
}

export function page(p: PageInput): string {
  const hasResult = p.result !== undefined;
  return [
    "<!doctype html>",
    '<html lang="en"><head><meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    `<title>${esc(p.title)}</title>`,
    `<style>${CSS}</style></head><body>`,
    `<header><h1>${esc(p.title)}</h1>${summary(p.plan, p.result)}${legend(hasResult)}</header>`,
    `<div class="canvas">${p.svg}</div>`,
    errorList(p.plan.errors),
    warningList(p.plan),
    runSection(p.result),
    bitmapTable(p.scene, p.plan, hasResult),
    `<footer>bitferry · ${esc(p.layoutNote)} · source ${p.source.nodes.length} nodes, ${p.source.drives.length} drives · destination ${p.destination.nodes.length} nodes, ${p.destination.drives.length} drives</footer>`,
    "</body></html>",
    "",
  ].join("\n");
}
