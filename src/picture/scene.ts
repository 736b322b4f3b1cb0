import type { BlockGraph, BlockNode, Drive } from "../graph/model.js";
import type { MigrateResult } from "../migrate/run.js";
import type { Verification, VerifiedBitmap } from "../migrate/verify.js";
import type { Plan, PlanBitmap, PlanError } from "../policy/types.js";
import { charCount, monoWidth, sansWidth, truncate } from "./text.js";
import { formatBytes } from "../util/format.js";

/**
 * What the picture shows, with every box's size, before anything is placed: the layout engine only positions
 * boxes and routes edges, and the SVG writer draws exactly these boxes.
 */

export type Side = "source" | "destination";

/** How a bitmap badge is coloured. */
export type Tone = "migrate" | "skip" | "error" | "existing" | "stored" | "incoming" | Verification;

export interface Row {
  /** The layout's port id. */
  port: string;
  /** bitmap: a named bitmap in memory; stored: only in the image; incoming: what the migration will create. */
  kind: "bitmap" | "stored" | "incoming";
  name: string;
  label: string;
  tone: Tone;
  tag: string;
  title: string;
  /** 1-based numbers of the errors listed under the picture. */
  errors: number[];
  verified: Verification | undefined;
}

interface CardBase {
  id: string;
  side: Side;
  width: number;
  height: number;
  label: string;
  title: string;
}

export interface NodeCard extends CardBase {
  kind: "node";
  node: BlockNode;
  meta: string;
  chips: Chip[];
  rows: Row[];
}

export interface DriveCard extends CardBase {
  kind: "drive";
  drive: Drive;
}

export type Card = NodeCard | DriveCard;

export interface Chip {
  text: string;
  kind: "generated" | "read-only" | "filter";
  title: string;
}

/** A child edge (`role` "file", "backing", ...) or a drive's edge to its root node (`role` "root"). */
export interface Edge {
  id: string;
  side: Side;
  from: string;
  to: string;
  role: string;
}

/** A bitmap's way across: an arrow for a migrating bitmap, a red line to what an error is about. */
export interface Link {
  id: string;
  kind: "migrate" | "error";
  from: { card: string; port: string };
  to: { card: string; port: string };
  tone: Tone;
  title: string;
  planIndex: number;
}

export interface Scene {
  cards: Card[];
  edges: Edge[];
  links: Link[];
  errors: PlanError[];
  /** Per plan bitmap, its verification when a result is given. */
  verification: Map<number, VerifiedBitmap>;
}

export const FONT = { name: 13, meta: 11, row: 12, tag: 10.5, chip: 9.5 } as const;
export const HEADER = 44;
export const ROW_H = 22;
export const ROW_GAP = 4;
export const PAD = 10;
export const DRIVE_H = 30;
const NAME_MAX = 34;
const ROW_NAME_MAX = 30;
const MIN_W = 180;

export function rowTop(i: number): number {
  return HEADER + i * (ROW_H + ROW_GAP);
}

function rowKey(node: string, bitmap: string): string {
  return JSON.stringify([node, bitmap]);
}

function sameError(a: PlanError, b: PlanError): boolean {
  return a.code === b.code && a.message === b.message && a.node === b.node && a.bitmap === b.bitmap;
}

function bitmapFacts(p: PlanBitmap): string {
  const s = p.source;
  return [
    `granularity ${formatBytes(s.granularity)}`,
    s.persistent ? "persistent" : "transient",
    s.recording ? "recording" : "disabled",
    `dirty ${formatBytes(s.dirtyBytes)}`,
  ].join(", ");
}

function targetText(p: PlanBitmap): string {
  const t = p.target;
  if (!t) return "";
  const where = t.drive !== null ? `drive ${t.drive} (node ${t.node})` : `node ${t.node}`;
  return `${where}, bitmap ${t.bitmap}${t.persistent ? ", persistent" : ", transient"}${t.enabled ? "" : ", disabled"}`;
}

const VERIFIED_TAG: Record<Verification, string> = {
  strict: "✓ strict",
  count: "✓ count",
  weak: "~ weak",
  failed: "✗ failed",
};

function chipsOf(n: BlockNode): Chip[] {
  const chips: Chip[] = [];
  if (n.generated)
    chips.push({
      text: "GEN",
      kind: "generated",
      title: "QEMU generated this node-name: it changes at every start, so no address can rely on it",
    });
  if (n.readOnly) chips.push({ text: "RO", kind: "read-only", title: "read-only node" });
  if (n.filter)
    chips.push({
      text: "FILTER",
      kind: "filter",
      title: `filter node: passes I/O to ${n.filtered ?? "its child"}`,
    });
  return chips;
}

export function chipWidth(c: Chip): number {
  return sansWidth(c.text, FONT.chip) + 10;
}

function nodeTitle(n: BlockNode, driveRootOf: string[], side: Side): string {
  const lines = [
    `${side} node ${n.name}${n.generated ? " (generated name)" : ""}`,
    `driver ${n.driver}${n.filter ? " (filter)" : ""}, ${formatBytes(n.size)} (${n.size} bytes)`,
  ];
  if (n.filename !== undefined) lines.push(`file ${n.filename}`);
  if (n.readOnly) lines.push("read-only");
  if (driveRootOf.length > 0) lines.push(`drive root of ${driveRootOf.join(", ")}`);
  lines.push(n.canStoreBitmaps ? "can store persistent bitmaps" : "cannot store persistent bitmaps");
  if (n.anonymousBitmaps > 0)
    lines.push(`${n.anonymousBitmaps} anonymous bitmap(s) (jobs' own, never migrated)`);
  return lines.join("\n");
}

function sizeNode(card: Omit<NodeCard, "width" | "height">): { width: number; height: number } {
  const chips = card.chips.reduce((w, c) => w + chipWidth(c) + 4, 0);
  const header = Math.max(monoWidth(card.label, FONT.name) + chips + 8, sansWidth(card.meta, FONT.meta));
  const rows = card.rows.map(
    (r) =>
      14 + monoWidth(r.label, FONT.row) + 14 + sansWidth(r.tag, FONT.tag) + (r.errors.length > 0 ? 22 : 0),
  );
  const width = Math.ceil(Math.max(MIN_W, header + 2 * PAD, ...rows.map((w) => w + 2 * PAD)));
  const height = card.rows.length === 0 ? HEADER - 4 : rowTop(card.rows.length) - ROW_GAP + PAD;
  return { width, height };
}

/** Cards in reading order: each drive followed by its nodes depth first, then the nodes no drive reaches. */
function order(graph: BlockGraph): { drives: Drive[]; nodes: BlockNode[] } {
  const byName = new Map(graph.nodes.map((n) => [n.name, n]));
  const seen = new Set<string>();
  const nodes: BlockNode[] = [];
  const visit = (name: string): void => {
    const n = byName.get(name);
    if (!n || seen.has(name)) return;
    seen.add(name);
    nodes.push(n);
    for (const c of n.children) visit(c.node);
  };
  for (const d of graph.drives) visit(d.root);
  // Roots first (nodes nobody points to), so that a blockdev tree stays in one piece.
  const pointed = new Set(graph.nodes.flatMap((n) => n.children.map((c) => c.node)));
  for (const n of graph.nodes) if (!pointed.has(n.name)) visit(n.name);
  for (const n of graph.nodes) visit(n.name);
  return { drives: graph.drives, nodes };
}

export interface SceneInput {
  plan: Plan;
  source: BlockGraph;
  destination: BlockGraph;
  result?: MigrateResult;
}

export function buildScene(input: SceneInput): Scene {
  const { plan } = input;
  const errors = plan.errors;
  const errorNumbers = (p: PlanBitmap): number[] =>
    p.errors
      .map((e) => errors.findIndex((x) => sameError(x, e)) + 1)
      .filter((n) => n > 0)
      .filter((n, i, a) => a.indexOf(n) === i);

  const verification = new Map<number, VerifiedBitmap>();
  const results = input.result?.bitmaps ?? [];
  plan.bitmaps.forEach((p, i) => {
    if (p.action !== "migrate") return;
    const v = results.find(
      (r) =>
        r.source.node === p.source.node &&
        r.source.bitmap === p.source.bitmap &&
        r.target.node === p.target?.node &&
        r.target.bitmap === p.target.bitmap,
    );
    if (v) verification.set(i, v);
  });

  const planBySource = new Map<string, number>();
  plan.bitmaps.forEach((p, i) => planBySource.set(rowKey(p.source.node, p.source.bitmap), i));

  const cards: Card[] = [];
  const edges: Edge[] = [];
  const links: Link[] = [];
  /** Per side, node-name → card id, and per card, bitmap key → port. */
  const cardOf = { source: new Map<string, NodeCard>(), destination: new Map<string, NodeCard>() };
  const srcPortOfPlan = new Map<number, { card: string; port: string }>();

  const addSide = (side: Side, graph: BlockGraph): void => {
    const pre = side === "source" ? "s" : "d";
    const { drives, nodes } = order(graph);
    const driveRoots = new Map<string, string[]>();
    for (const d of graph.drives)
      if (d.driveRoot !== undefined)
        driveRoots.set(d.driveRoot, [...(driveRoots.get(d.driveRoot) ?? []), d.name]);

    nodes.forEach((n, ni) => {
      const id = `${pre}n${ni}`;
      const roots = driveRoots.get(n.name) ?? [];
      const rows: Row[] = [];
      n.bitmaps.forEach((b, bi) => {
        const port = `${id}b${bi}`;
        const planIndex = side === "source" ? planBySource.get(rowKey(n.name, b.name)) : undefined;
        const p = planIndex === undefined ? undefined : plan.bitmaps[planIndex];
        if (side === "destination" || !p || planIndex === undefined) {
          rows.push({
            port,
            kind: "bitmap",
            name: b.name,
            label: truncate(b.name, ROW_NAME_MAX),
            tone: side === "destination" ? "existing" : "skip",
            tag: side === "destination" ? "existing" : "not planned",
            title:
              `bitmap ${b.name}\ngranularity ${formatBytes(b.granularity)}, ` +
              `${b.persistent ? "persistent" : "transient"}, dirty ${formatBytes(b.count)}` +
              (b.busy ? ", busy" : "") +
              (b.inconsistent ? ", inconsistent" : "") +
              (side === "destination" ? "\nalready on the destination" : "\nnot in the plan"),
            errors: [],
            verified: undefined,
          });
          return;
        }
        const nums = errorNumbers(p);
        const v = verification.get(planIndex);
        const action =
          p.action === "migrate"
            ? `migrate (${p.rule}) to ${targetText(p)}`
            : p.action === "skip"
              ? `skip (${p.rule})`
              : `error ${p.errors.map((e) => e.code).join(", ")}`;
        const lines = [`bitmap ${b.name}`, bitmapFacts(p), action];
        for (const e of p.errors) lines.push(`${e.code}: ${e.message}`);
        for (const w of p.warnings) lines.push(`warning ${w.code}: ${w.message}`);
        if (v) lines.push(`verified: ${v.verified}${v.reason !== undefined ? ` (${v.reason})` : ""}`);
        rows.push({
          port,
          kind: "bitmap",
          name: b.name,
          label: truncate(b.name, ROW_NAME_MAX),
          tone: p.action,
          tag: p.action === "error" ? (p.errors[0]?.code ?? p.rule) : p.rule,
          title: lines.join("\n"),
          errors: nums,
          verified: v?.verified,
        });
        srcPortOfPlan.set(planIndex, { card: id, port });
      });
      const loaded = new Set(n.bitmaps.map((b) => b.name));
      n.storedBitmaps
        .filter((s) => !loaded.has(s.name))
        .forEach((s, si) =>
          rows.push({
            port: `${id}s${si}`,
            kind: "stored",
            name: s.name,
            label: truncate(s.name, ROW_NAME_MAX),
            tone: "stored",
            tag: s.inUse ? "stored, in use" : "stored",
            title:
              `bitmap ${s.name}, stored in the image (not loaded)\ngranularity ${formatBytes(s.granularity)}` +
              (s.inUse ? ", flagged in use: its contents are stale" : "") +
              (s.auto ? ", auto" : ""),
            errors: [],
            verified: undefined,
          }),
        );
      const label = truncate(n.name, NAME_MAX);
      const meta = [
        n.driver,
        formatBytes(n.size),
        ...(n.readOnly ? ["read-only"] : []),
        ...(roots.length > 0 ? [`root of ${truncate(roots.join(", "), 24)}`] : []),
      ].join(" · ");
      const base = {
        kind: "node" as const,
        id,
        side,
        node: n,
        label,
        meta,
        chips: chipsOf(n),
        rows,
        title: nodeTitle(n, roots, side),
      };
      const card: NodeCard = { ...base, ...sizeNode(base) };
      cards.push(card);
      cardOf[side].set(n.name, card);
    });

    drives.forEach((d, di) => {
      const id = `${pre}d${di}`;
      const label = truncate(d.name, NAME_MAX);
      const width = Math.ceil(
        Math.max(110, monoWidth(label, FONT.name) + sansWidth("drive", FONT.meta) + 34),
      );
      cards.push({
        kind: "drive",
        id,
        side,
        drive: d,
        label,
        width,
        height: DRIVE_H,
        title:
          `drive ${d.name} (BlockBackend)\nroot node ${d.root}\n` +
          (d.driveRoot !== undefined
            ? `drive root ${d.driveRoot}: bitmaps there are addressed as drive:${d.name}`
            : "no drive root: a filter carrying bitmaps stops the walk"),
      });
      const root = cardOf[side].get(d.root);
      if (root) edges.push({ id: `${id}r`, side, from: id, to: root.id, role: "root" });
    });

    for (const n of nodes) {
      const from = cardOf[side].get(n.name);
      if (!from) continue;
      n.children.forEach((c, ci) => {
        const to = cardOf[side].get(c.node);
        if (to) edges.push({ id: `${from.id}c${ci}`, side, from: from.id, to: to.id, role: c.role });
      });
    }
  };

  addSide("source", input.source);
  addSide("destination", input.destination);

  // Where each bitmap arrives: one incoming badge per destination node and name, shared by the layers of a
  // chain-merge; an error's line ends on the bitmap it collides with when there is one.
  plan.bitmaps.forEach((p, i) => {
    const from = srcPortOfPlan.get(i);
    const t = p.target;
    if (!from || !t || p.action === "skip") return;
    const card = cardOf.destination.get(t.node);
    if (!card) return;
    const v = verification.get(i);
    let row =
      p.action === "error" ? card.rows.find((r) => r.kind !== "incoming" && r.name === t.bitmap) : undefined;
    row ??= card.rows.find((r) => r.kind === "incoming" && r.name === t.bitmap);
    const tone: Tone = p.action === "error" ? "error" : (v?.verified ?? "incoming");
    if (!row) {
      row = {
        port: `${card.id}i${card.rows.length}`,
        kind: "incoming",
        name: t.bitmap,
        label: truncate(t.bitmap, ROW_NAME_MAX),
        tone,
        tag: p.action === "error" ? "blocked" : v ? VERIFIED_TAG[v.verified] : "incoming",
        title: "",
        errors: [],
        verified: v?.verified,
      };
      card.rows.push(row);
    } else if (row.kind === "incoming" && tone === "failed") {
      row.tone = "failed";
      row.tag = VERIFIED_TAG.failed;
      row.verified = "failed";
    }
    if (p.action === "error") {
      row.tone = "error";
      row.errors = [...new Set([...row.errors, ...errorNumbers(p)])];
    }
    const arriving = [
      `${p.action === "migrate" ? "arrives" : "would arrive"} from source ${p.source.node}, bitmap ${p.source.bitmap} (${p.rule})`,
      ...(v ? [`verified: ${v.verified}${v.reason !== undefined ? ` (${v.reason})` : ""}`] : []),
      ...p.errors.map((e) => `${e.code}: ${e.message}`),
    ].join("\n");
    row.title = row.title === "" ? `bitmap ${t.bitmap}\n${arriving}` : `${row.title}\n${arriving}`;
    links.push({
      id: `l${i}`,
      kind: p.action === "migrate" ? "migrate" : "error",
      from,
      to: { card: card.id, port: row.port },
      tone: p.action === "migrate" ? (v?.verified ?? "migrate") : "error",
      title: `${p.source.node}/${p.source.bitmap} → ${t.node}/${t.bitmap}\n${arriving}`,
      planIndex: i,
    });
  });

  // Badges that arrows reach come first, in the order of the source badges they come from, so that arrows
  // between two cards do not cross; then size the cards again for their new badges.
  const firstLink = new Map<string, number>();
  for (const l of links) if (!firstLink.has(l.to.port)) firstLink.set(l.to.port, l.planIndex);
  for (const c of cards) {
    if (c.kind !== "node" || c.side !== "destination") continue;
    const rank = (r: Row): number => firstLink.get(r.port) ?? Infinity;
    c.rows = c.rows
      .map((r, i) => ({ r, i }))
      .sort((a, b) => rank(a.r) - rank(b.r) || a.i - b.i)
      .map((x) => x.r);
    Object.assign(c, sizeNode(c));
  }
  return { cards, edges, links, errors, verification };
}

export function isLongName(s: string): boolean {
  return charCount(s) > ROW_NAME_MAX;
}
