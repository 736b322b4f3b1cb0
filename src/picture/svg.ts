import type { Box, Layout, Point, Route } from "./layout.js";
import {
  chipWidth,
  FONT,
  HEADER,
  PAD,
  ROW_H,
  rowTop,
  type Card,
  type DriveCard,
  type Edge,
  type Link,
  type NodeCard,
  type Row,
  type Scene,
  type Side,
  type Tone,
} from "./scene.js";
import { esc, MONO, SANS, sansWidth } from "./text.js";

/** Fill, stroke and text colour of a badge; also used by the legend. */
export const TONES: Record<Tone, { fill: string; stroke: string; text: string; dash?: string }> = {
  migrate: { fill: "#ddf4ff", stroke: "#54aeff", text: "#0a3069" },
  skip: { fill: "#f6f8fa", stroke: "#d0d7de", text: "#6e7781" },
  error: { fill: "#ffebe9", stroke: "#ff8182", text: "#82071e" },
  existing: { fill: "#ffffff", stroke: "#afb8c1", text: "#24292f" },
  stored: { fill: "#ffffff", stroke: "#afb8c1", text: "#57606a", dash: "2 2" },
  incoming: { fill: "#ddf4ff", stroke: "#54aeff", text: "#0a3069", dash: "4 2" },
  strict: { fill: "#dafbe1", stroke: "#4ac26b", text: "#116329" },
  count: { fill: "#dafbe1", stroke: "#4ac26b", text: "#116329", dash: "4 2" },
  weak: { fill: "#fff8c5", stroke: "#d4a72c", text: "#7d4e00" },
  failed: { fill: "#ffebe9", stroke: "#ff8182", text: "#82071e" },
};

/** Arrow colours: a migrating bitmap in blue, then in its verification's colour once a result is known. */
export const LINK_COLOURS: Record<Tone, string> = {
  migrate: "#0969da",
  incoming: "#0969da",
  strict: "#1a7f37",
  count: "#1a7f37",
  weak: "#9a6700",
  failed: "#cf222e",
  error: "#cf222e",
  skip: "#8c959f",
  existing: "#8c959f",
  stored: "#8c959f",
};

const CHIP_COLOURS: Record<string, { fill: string; text: string }> = {
  generated: { fill: "#fff8c5", text: "#7d4e00" },
  "read-only": { fill: "#eaeef2", text: "#424a53" },
  filter: { fill: "#fbefff", text: "#6639ba" },
};

const MARGIN = 16;
const SIDE_INSET = 8;

function n(v: number): string {
  return String(Math.round(v * 10) / 10);
}

function pathOf(r: Route, shift: Point): string {
  const pts = r.points.map((p) => ({ x: p.x + shift.x, y: p.y + shift.y }));
  const [first, ...rest] = pts;
  if (!first) return "";
  if (r.kind === "bezier") {
    const segs: string[] = [];
    for (let i = 0; i + 2 < rest.length; i += 3) {
      const [a, b, c] = [rest[i], rest[i + 1], rest[i + 2]];
      if (a && b && c) segs.push(`C${n(a.x)},${n(a.y)} ${n(b.x)},${n(b.y)} ${n(c.x)},${n(c.y)}`);
    }
    return `M${n(first.x)},${n(first.y)} ${segs.join(" ")}`;
  }
  return `M${n(first.x)},${n(first.y)} ${rest.map((p) => `L${n(p.x)},${n(p.y)}`).join(" ")}`;
}

function title(text: string): string {
  return `<title>${esc(text)}</title>`;
}

function attrs(a: Record<string, string | number | boolean | undefined>): string {
  return Object.entries(a)
    .filter(([, v]) => v !== undefined && v !== false)
    .map(([k, v]) => (v === true ? ` ${k}` : ` ${k}="${esc(String(v))}"`))
    .join("");
}

function drawRow(card: NodeCard, r: Row, i: number, b: Box): string {
  const t = TONES[r.tone];
  const x = b.x + PAD;
  const y = b.y + rowTop(i);
  const w = b.width - 2 * PAD;
  const parts = [
    `<g class="bitmap"${attrs({
      "data-bitmap": r.name,
      "data-side": card.side,
      "data-on": card.node.name,
      "data-kind": r.kind,
      "data-tone": r.tone,
      "data-tag": r.tag,
      "data-verified": r.verified,
      "data-truncated": r.label !== r.name,
    })}>`,
    title(r.title),
    `<rect x="${n(x)}" y="${n(y)}" width="${n(w)}" height="${ROW_H}" rx="4" fill="${t.fill}" stroke="${t.stroke}"${t.dash ? ` stroke-dasharray="${t.dash}"` : ""}/>`,
    `<text x="${n(x + 7)}" y="${n(y + 15.5)}" class="mono" font-size="${FONT.row}" fill="${t.text}">${esc(r.label)}</text>`,
    `<text x="${n(x + w - 7)}" y="${n(y + 15)}" font-size="${FONT.tag}" fill="${t.text}" text-anchor="end" class="tag">${esc(r.tag)}</text>`,
  ];
  if (r.errors.length > 0) {
    const label = r.errors.join(",");
    const ew = sansWidth(label, 9.5) + 8;
    const ex = x + w - 12 - sansWidth(r.tag, FONT.tag) - ew;
    parts.push(
      `<g${attrs({ "data-error-ref": label })}><rect x="${n(ex)}" y="${n(y + 4.5)}" width="${n(ew)}" height="13" rx="6.5" fill="#cf222e"/>`,
      `<text x="${n(ex + ew / 2)}" y="${n(y + 14.3)}" font-size="9.5" fill="#ffffff" text-anchor="middle" font-weight="600">${esc(label)}</text></g>`,
    );
  }
  parts.push("</g>");
  return parts.join("");
}

function drawNode(c: NodeCard, b: Box): string {
  const node = c.node;
  const stroke = node.filter ? "#8250df" : "#8c959f";
  const fill = node.filter ? "#fbf8ff" : node.readOnly ? "#f6f8fa" : "#ffffff";
  const out = [
    `<g class="node"${attrs({
      "data-node": node.name,
      "data-side": c.side,
      "data-driver": node.driver,
      "data-generated": node.generated,
      "data-read-only": node.readOnly,
      "data-filter": node.filter,
      "data-truncated": c.label !== node.name,
    })}>`,
    title(c.title),
    `<rect x="${n(b.x)}" y="${n(b.y)}" width="${n(b.width)}" height="${n(b.height)}" rx="6" fill="${fill}" stroke="${stroke}"${node.filter ? ' stroke-dasharray="5 3"' : ""}/>`,
    `<text x="${n(b.x + PAD)}" y="${n(b.y + 18)}" class="mono${node.generated ? " generated" : ""}" font-size="${FONT.name}" font-weight="600">${esc(c.label)}</text>`,
    `<text x="${n(b.x + PAD)}" y="${n(b.y + 34)}" font-size="${FONT.meta}" fill="#57606a">${esc(c.meta)}</text>`,
  ];
  let cx = b.x + b.width - PAD;
  for (const chip of [...c.chips].reverse()) {
    const w = chipWidth(chip);
    cx -= w;
    const col = CHIP_COLOURS[chip.kind] ?? { fill: "#eaeef2", text: "#424a53" };
    out.push(
      `<g${attrs({ "data-chip": chip.kind })}>${title(chip.title)}<rect x="${n(cx)}" y="${n(b.y + 6)}" width="${n(w)}" height="15" rx="3" fill="${col.fill}"/>`,
      `<text x="${n(cx + w / 2)}" y="${n(b.y + 16.5)}" font-size="${FONT.chip}" font-weight="600" fill="${col.text}" text-anchor="middle">${esc(chip.text)}</text></g>`,
    );
    cx -= 4;
  }
  if (c.rows.length > 0)
    out.push(
      `<line x1="${n(b.x)}" y1="${n(b.y + HEADER - 5)}" x2="${n(b.x + b.width)}" y2="${n(b.y + HEADER - 5)}" stroke="#eaeef2"/>`,
    );
  c.rows.forEach((r, i) => out.push(drawRow(c, r, i, b)));
  out.push("</g>");
  return out.join("");
}

function drawDrive(c: DriveCard, b: Box): string {
  return [
    `<g class="drive"${attrs({ "data-drive": c.drive.name, "data-side": c.side, "data-truncated": c.label !== c.drive.name })}>`,
    title(c.title),
    `<rect x="${n(b.x)}" y="${n(b.y)}" width="${n(b.width)}" height="${n(b.height)}" rx="${n(b.height / 2)}" fill="#24292f"/>`,
    `<text x="${n(b.x + 14)}" y="${n(b.y + 19)}" font-size="${FONT.meta}" fill="#afb8c1">drive</text>`,
    `<text x="${n(b.x + 18 + sansWidth("drive", FONT.meta))}" y="${n(b.y + 19.5)}" class="mono" font-size="${FONT.name}" font-weight="600" fill="#ffffff">${esc(c.label)}</text>`,
    "</g>",
  ].join("");
}

function drawEdge(e: Edge, r: Route | undefined, shift: Point): string {
  if (!r) return "";
  const dash = e.role === "backing" ? ' stroke-dasharray="6 4"' : e.role === "root" ? "" : "";
  const label =
    r.label && e.role !== "root"
      ? `<text x="${n(r.label.x + shift.x)}" y="${n(r.label.y + shift.y + 3.5)}" font-size="${FONT.tag}" text-anchor="middle" class="edge-label">${esc(e.role)}</text>`
      : "";
  return (
    `<g class="edge"${attrs({ "data-edge": e.role, "data-side": e.side })}>${title(e.role === "root" ? "drive → root node" : `child (${e.role})`)}` +
    `<path d="${pathOf(r, shift)}" fill="none" stroke="#8c959f" stroke-width="1.2"${dash} marker-end="url(#child)"/>${label}</g>`
  );
}

function drawLink(l: Link, r: Route | undefined, shift: Point, scene: Scene): string {
  if (!r) return "";
  const colour = LINK_COLOURS[l.tone];
  const fromCard = scene.cards.find((c) => c.id === l.from.card);
  const toCard = scene.cards.find((c) => c.id === l.to.card);
  const row = (c: Card | undefined, port: string): Row | undefined =>
    c?.kind === "node" ? c.rows.find((x) => x.port === port) : undefined;
  const from = row(fromCard, l.from.port);
  const to = row(toCard, l.to.port);
  const a = attrs({
    [l.kind === "migrate" ? "data-arrow" : "data-error-link"]: true,
    "data-tone": l.tone,
    "data-from-node": fromCard?.kind === "node" ? fromCard.node.name : undefined,
    "data-from-bitmap": from?.name,
    "data-to-node": toCard?.kind === "node" ? toCard.node.name : undefined,
    "data-to-bitmap": to?.name,
  });
  const d = pathOf(r, shift);
  const style =
    l.kind === "migrate"
      ? `stroke="${colour}" stroke-width="1.7" marker-end="url(#arrow-${l.tone})"`
      : `stroke="${colour}" stroke-width="1.3" stroke-dasharray="5 3" marker-end="url(#arrow-error)"`;
  // A wide transparent twin under the line makes the tooltip easy to hit.
  return `<g class="link"${a}>${title(l.title)}<path d="${d}" fill="none" stroke="transparent" stroke-width="9"/><path d="${d}" fill="none" ${style}/></g>`;
}

function markers(): string {
  const tones = Object.keys(LINK_COLOURS) as Tone[];
  const arrow = (id: string, colour: string): string =>
    `<marker id="${id}" viewBox="0 0 10 10" refX="9.5" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="${colour}"/></marker>`;
  return `<defs>${arrow("child", "#8c959f")}${tones.map((t) => arrow(`arrow-${t}`, LINK_COLOURS[t])).join("")}</defs>`;
}

export interface SideTitles {
  source: string;
  destination: string;
}

/** The picture itself: both graphs, their titles, and every arrow between them. */
export function drawSvg(scene: Scene, layout: Layout, titles: SideTitles): string {
  const shift = { x: MARGIN, y: MARGIN };
  const width = Math.ceil(layout.width + 2 * MARGIN);
  const height = Math.ceil(layout.height + 2 * MARGIN);
  const out: string[] = [
    `<svg class="graph" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="${esc(SANS)}" role="img" aria-label="source and destination block graphs">`,
    `<style>.mono{font-family:${esc(MONO)}}.generated{font-style:italic;fill:#57606a}.edge-label{fill:#57606a;paint-order:stroke;stroke:#ffffff;stroke-width:4px;stroke-linejoin:round}.link:hover path:last-child{stroke-width:3}</style>`,
    markers(),
  ];
  const top = Math.min(layout.sides.source.y, layout.sides.destination.y);
  const bottom = Math.max(
    layout.sides.source.y + layout.sides.source.height,
    layout.sides.destination.y + layout.sides.destination.height,
  );
  for (const side of ["source", "destination"] as Side[]) {
    const s = layout.sides[side];
    // Inset, so that the two sides, which the layout packs edge to edge, stand apart; both as tall as the taller.
    const x = s.x + shift.x + SIDE_INSET;
    const y = top + shift.y + SIDE_INSET;
    const head = side.toUpperCase();
    out.push(
      `<g class="side"${attrs({ "data-graph": side })}>`,
      `<rect x="${n(x)}" y="${n(y)}" width="${n(s.width - 2 * SIDE_INSET)}" height="${n(bottom - top - 2 * SIDE_INSET)}" rx="10" fill="#ffffff" stroke="#d0d7de"/>`,
      `<text x="${n(x + 14)}" y="${n(y + 24)}" font-size="13" font-weight="700" fill="#24292f" letter-spacing="0.06em">${head}</text>`,
      `<text x="${n(x + 14 + sansWidth(head, 13) * 1.2 + 10)}" y="${n(y + 24)}" font-size="12" fill="#57606a">${esc(titles[side])}</text>`,
      "</g>",
    );
  }
  for (const e of scene.edges) out.push(drawEdge(e, layout.routes.get(e.id), shift));
  for (const c of scene.cards) {
    const b = layout.boxes.get(c.id);
    if (!b) continue;
    const sb = { ...b, x: b.x + shift.x, y: b.y + shift.y };
    out.push(c.kind === "node" ? drawNode(c, sb) : drawDrive(c, sb));
  }
  // Links last: an arrow is never hidden under a card it passes.
  for (const l of scene.links) out.push(drawLink(l, layout.routes.get(l.id), shift, scene));
  out.push("</svg>");
  return out.join("\n");
}
