import type { Scene, Side } from "./scene.js";

export interface Point {
  x: number;
  y: number;
}

export interface Box {
  x: number;
  y: number;
  width: number;
  height: number;
}

/**
 * An edge's path: `bezier` is a start point followed by groups of three (control, control, end), as Graphviz
 * gives splines; `polyline` is a list of corners.
 */
export interface Route {
  kind: "bezier" | "polyline";
  points: Point[];
  /** Where the engine put the edge's label, if it has one. */
  label?: Point;
}

export interface Layout {
  width: number;
  height: number;
  boxes: Map<string, Box>;
  sides: Record<Side, Box>;
  routes: Map<string, Route>;
}

export type LayoutEngine = (scene: Scene) => Promise<Layout>;
