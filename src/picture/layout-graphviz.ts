import { instance, type Viz } from "@viz-js/viz";
import { bands } from "./bands.js";
import type { Box, Layout, Point, Route } from "./layout.js";
import { HEADER, ROW_GAP, ROW_H, type Card, type Scene, type Side } from "./scene.js";
import { FONT } from "./scene.js";
import { sansWidth } from "./text.js";

let viz: Promise<Viz> | undefined;

/** Graphviz's units are points; the picture uses them as pixels. Cells are fixed-size so sizes are ours. */
function cell(width: number, height: number, port?: string): string {
  const p = port === undefined ? "" : ` PORT="${port}"`;
  return `<TR><TD${p} FIXEDSIZE="TRUE" WIDTH="${width}" HEIGHT="${Math.max(1, height)}"></TD></TR>`;
}

function table(c: Card): string {
  const open = `<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="0">`;
  if (c.kind === "drive" || c.rows.length === 0) return `<${open}${cell(c.width, c.height)}</TABLE>>`;
  // Each row's cell is centred on the row so that its port sits where the badge is drawn.
  const head = HEADER - ROW_GAP / 2;
  const rows = c.rows.map((r) => cell(c.width, ROW_H + ROW_GAP, r.port)).join("");
  const rest = c.height - head - c.rows.length * (ROW_H + ROW_GAP);
  return `<${open}${cell(c.width, head)}${rows}${cell(c.width, rest)}</TABLE>>`;
}

const CLUSTER_MARGIN = 24;

function edgeLabel(text: string): string {
  const w = Math.ceil(sansWidth(text, FONT.tag) + 6);
  return `<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="0">${cell(w, 14)}</TABLE>>`;
}

interface GvObject {
  _gvid: number;
  name: string;
  pos?: string;
  width?: string;
  height?: string;
  bb?: string;
}

interface GvEdge {
  tail: number;
  head: number;
  id?: string;
  pos?: string;
  xlp?: string;
}

interface GvJson {
  bb: string;
  objects?: GvObject[];
  edges?: GvEdge[];
}

function nums(s: string): number[] {
  return s.split(",").map(Number);
}

export function toDot(scene: Scene): string {
  const out: string[] = [
    "digraph bitferry {",
    "graph [newrank=true, rankdir=TB, nodesep=0.3, ranksep=0.5, splines=true, forcelabels=true, outputorder=edgesfirst, margin=0, pad=0];",
    "node [shape=plain];",
    // No arrowheads: the spline then runs to the port itself, and the SVG draws its own markers.
    "edge [arrowhead=none];",
  ];
  const layout = bands(scene);
  const anchor = (side: Side, b: number): string => `a${side === "source" ? "s" : "d"}${b}`;
  for (const side of ["source", "destination"] as Side[]) {
    out.push(`subgraph cluster_${side} {`, `graph [margin=${CLUSTER_MARGIN}, label=""];`);
    layout.forEach((band, b) => {
      // An invisible anchor above each band: every tree of the band hangs below it, every tree of the band
      // before ends above it, and both sides' anchors share a rank, so bands line up across the picture.
      // The first band's anchors also start both sides on the same rank, which leaves room for their titles.
      out.push(`"${anchor(side, b)}" [shape=point, style=invis, width=0, height=0, label=""];`);
      for (const comp of band[side]) {
        for (const c of comp.cards) out.push(`"${c.id}" [label=${table(c)}];`);
        for (const r of comp.roots) out.push(`"${anchor(side, b)}" -> "${r}" [style=invis, weight=4];`);
        if (b + 1 < layout.length)
          for (const l of comp.leaves)
            out.push(`"${l}" -> "${anchor(side, b + 1)}" [style=invis, weight=0];`);
      }
    });
    for (const e of scene.edges)
      if (e.side === side)
        out.push(
          `"${e.from}" -> "${e.to}" [id="${e.id}"${e.role === "root" ? "" : `, xlabel=${edgeLabel(e.role)}`}];`,
        );
    out.push("}");
  }
  layout.forEach((_, b) => out.push(`{rank=same; "${anchor("source", b)}"; "${anchor("destination", b)}";}`));
  for (const l of scene.links) {
    // minlen=0 with a heavy weight: the target ranks level with the source where the graphs allow, never above.
    // An error's line only points at what it is about: it must not bend the layout.
    const how = l.kind === "migrate" ? "minlen=0, weight=8" : "constraint=false";
    out.push(
      `"${l.from.card}":"${l.from.port}":e -> "${l.to.card}":"${l.to.port}":w [id="${l.id}", ${how}];`,
    );
  }
  out.push("}");
  return out.join("\n");
}

function splinePoints(pos: string): { points: Point[] } {
  const points: Point[] = [];
  for (const tok of pos.trim().split(/\s+/)) {
    if (tok.startsWith("e,") || tok.startsWith("s,")) continue;
    const [x = 0, y = 0] = nums(tok);
    points.push({ x, y });
  }
  return { points };
}

export async function layoutGraphviz(scene: Scene): Promise<Layout> {
  viz ??= instance();
  const v = await viz;
  const json = v.renderJSON(toDot(scene), { yInvert: true }) as GvJson;
  // With yInvert the bounding box reads "x1,y2,x2,y1".
  const [bx1 = 0, by1 = 0, bx2 = 0, by2 = 0] = nums(json.bb);
  const width = Math.abs(bx2 - bx1);
  const height = Math.abs(by2 - by1);
  const boxes = new Map<string, Box>();
  const byGvid = new Map<number, string>();
  const sides = {} as Record<Side, Box>;
  for (const o of json.objects ?? []) {
    byGvid.set(o._gvid, o.name);
    if (o.bb !== undefined) {
      const [x1 = 0, y1 = 0, x2 = 0, y2 = 0] = nums(o.bb);
      const side = o.name === "cluster_source" ? "source" : "destination";
      sides[side] = { x: x1, y: Math.min(y1, y2), width: x2 - x1, height: Math.abs(y2 - y1) };
    } else if (o.pos !== undefined) {
      const [cx = 0, cy = 0] = nums(o.pos);
      const card = scene.cards.find((c) => c.id === o.name);
      const w = card?.width ?? Number(o.width) * 72;
      const h = card?.height ?? Number(o.height) * 72;
      boxes.set(o.name, { x: cx - w / 2, y: cy - h / 2, width: w, height: h });
    }
  }
  const routes = new Map<string, Route>();
  for (const e of json.edges ?? []) {
    if (e.id === undefined || e.pos === undefined) continue;
    const { points } = splinePoints(e.pos);
    const lp = e.xlp === undefined ? undefined : nums(e.xlp);
    routes.set(e.id, {
      kind: "bezier",
      points,
      ...(lp ? { label: { x: lp[0] ?? 0, y: lp[1] ?? 0 } } : {}),
    });
  }
  return { width, height, boxes, sides, routes };
}
