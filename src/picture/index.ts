import type { BlockGraph } from "../graph/model.js";
import type { MigrateResult } from "../migrate/run.js";
import type { Plan } from "../policy/types.js";
import { page } from "./html.js";
import { layoutGraphviz } from "./layout-graphviz.js";
import { buildScene } from "./scene.js";
import { drawSvg } from "./svg.js";

export interface PictureInput {
  plan: Plan;
  source: BlockGraph;
  destination: BlockGraph;
  /** After `migrate`: shows each bitmap's verification. */
  result?: MigrateResult;
  title?: string;
}

/**
 * The picture of a plan (and of a migration's verification): one self-contained HTML document, no script and
 * no URL, that opens from disk with the network off. Pure: no file or network I/O.
 */
export async function renderPlanHtml(input: PictureInput): Promise<string> {
  const scene = buildScene(input);
  const layout = await layoutGraphviz(scene);
  // The run states the graphs were read in, and after a migration the states it left both sides in.
  const state = (read: string, now: string | null | undefined): string =>
    now === undefined || now === read ? read : `${read} → ${now ?? "gone"}`;
  const svg = drawSvg(scene, layout, {
    source: state(input.source.runState, input.result?.source.runState),
    destination: state(input.destination.runState, input.result?.destination.runState),
  });
  return page({
    plan: input.plan,
    source: input.source,
    destination: input.destination,
    result: input.result,
    title: input.title ?? (input.result ? "bitferry migration" : "bitferry plan"),
    scene,
    svg,
    layoutNote: "laid out by Graphviz",
  });
}
