import type { Card, Scene, Side } from "./scene.js";

/**
 * Large graphs are many small trees (one per drive). Left to itself a layered layout puts every tree's root on
 * the first rank, which makes a picture tens of thousands of pixels wide. Bands wrap them: each band holds as many
 * source trees as fit a width budget, and on the destination side the trees their bitmaps go to, so that arrows
 * stay short and roughly horizontal; bands are stacked top to bottom on both sides alike.
 */

export interface Component {
  side: Side;
  cards: Card[];
  roots: string[];
  leaves: string[];
  width: number;
  /** Order of appearance, for stable output. */
  index: number;
}

export interface Band {
  source: Component[];
  destination: Component[];
}

const GAP = 24;
/** Per side; wide enough for a drive tree with a backing chain and a mirror target side by side. */
export const BAND_WIDTH = 1000;

function components(scene: Scene, side: Side): Component[] {
  const cards = scene.cards.filter((c) => c.side === side);
  const parent = new Map(cards.map((c) => [c.id, c.id]));
  const find = (x: string): string => {
    let r = x;
    while (parent.get(r) !== r) r = parent.get(r) ?? r;
    parent.set(x, r);
    return r;
  };
  const edges = scene.edges.filter((e) => e.side === side);
  for (const e of edges) parent.set(find(e.from), find(e.to));
  const groups = new Map<string, Card[]>();
  for (const c of cards) {
    const r = find(c.id);
    groups.set(r, [...(groups.get(r) ?? []), c]);
  }
  const hasIn = new Set(edges.map((e) => e.to));
  const hasOut = new Set(edges.map((e) => e.from));
  return [...groups.values()].map((g, index) => {
    const ids = new Set(g.map((c) => c.id));
    // Width of the widest level, levels counted from the roots.
    const depth = new Map<string, number>();
    const roots = g.filter((c) => !hasIn.has(c.id)).map((c) => c.id);
    const queue = roots.map((id) => ({ id, d: 0 }));
    for (let item = queue.shift(); item; item = queue.shift()) {
      if ((depth.get(item.id) ?? -1) >= item.d) continue;
      depth.set(item.id, item.d);
      const d = item.d + 1;
      for (const e of edges)
        if (e.from === item.id && ids.has(e.to) && d <= g.length) queue.push({ id: e.to, d });
    }
    const levels = new Map<number, number>();
    for (const c of g) {
      const d = depth.get(c.id) ?? 0;
      levels.set(d, (levels.get(d) ?? -GAP) + c.width + GAP);
    }
    return {
      side,
      cards: g,
      roots: roots.length > 0 ? roots : g.slice(0, 1).map((c) => c.id),
      leaves: g.filter((c) => !hasOut.has(c.id)).map((c) => c.id),
      width: Math.max(...levels.values()),
      index,
    };
  });
}

export function bands(scene: Scene, budget = BAND_WIDTH): Band[] {
  const src = components(scene, "source");
  const dst = components(scene, "destination");
  const out: Band[] = [];
  const width = (cs: Component[]): number => cs.reduce((w, c) => w + c.width + GAP, 0);
  // At most one tree with outgoing arrows per band, and it goes last (nearest the destination): an arrow from a
  // tree further left would have to cross the trees beside it. Trees without arrows share its band where room is.
  const sends = (c: Component): boolean => {
    const ids = new Set(c.cards.map((x) => x.id));
    return scene.links.some((l) => ids.has(l.from.card));
  };
  let open: Band | undefined;
  let openSends = false;
  for (const c of src) {
    const s = sends(c);
    if (!open || (s && openSends) || width(open.source) + c.width > budget) {
      open = { source: [], destination: [] };
      openSends = false;
      out.push(open);
    }
    open.source.push(c);
    openSends ||= s;
  }
  for (const b of out) b.source.sort((x, y) => Number(sends(x)) - Number(sends(y)) || x.index - y.index);
  const bandOfCard = new Map<string, { band: number; order: number }>();
  out.forEach((b, band) => {
    for (const c of b.source) for (const card of c.cards) bandOfCard.set(card.id, { band, order: c.index });
  });
  // A destination tree goes to the band of the first source tree that sends it a bitmap, in that tree's order.
  const firstSource = (c: Component): { band: number; order: number } | undefined => {
    const ids = new Set(c.cards.map((x) => x.id));
    let best: { band: number; order: number } | undefined;
    for (const l of scene.links) {
      const at = ids.has(l.to.card) ? bandOfCard.get(l.from.card) : undefined;
      if (at && (!best || at.order < best.order)) best = at;
    }
    return best;
  };
  const placed = dst.map((c) => ({ c, at: firstSource(c) }));
  placed.sort((a, b) => (a.at?.order ?? Infinity) - (b.at?.order ?? Infinity) || a.c.index - b.c.index);
  for (const { c, at } of placed) if (at) out[at.band]?.destination.push(c);
  // The others fill the room left, from the top, then bands of their own.
  for (const { c, at } of placed) {
    if (at) continue;
    const room = out.find((b) => width(b.destination) + c.width <= budget);
    if (room) room.destination.push(c);
    else out.push({ source: [], destination: [c] });
  }
  return out;
}
