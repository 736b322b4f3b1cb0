import type { CliContext } from "../main.js";
import { closeMonitors, connectBoth, loadPolicy } from "../connect.js";
import { ExitCode } from "../exit-codes.js";
import { colors, exitCodeFor, reportError, summarizeError, writeJson } from "../output.js";
import { writePicture } from "../picture.js";
import { exitOnSignal } from "../interrupt.js";
import type { QemuMonitor } from "../../qemu/monitor.js";
import { prefetchSnapshot } from "../../qemu/snapshot.js";
import { transportRequest, type TransportFlags } from "../transport-flags.js";

export interface PlanFlags extends TransportFlags {
  policy?: string;
  postcopy?: true;
  json?: true;
  html?: string;
}

/** The `plan` command's work, loaded only when the command runs (keeps `bitferry --help` fast). */
export async function planAction(opts: PlanFlags, ctx: CliContext): Promise<void> {
  const monitors: QemuMonitor[] = [];
  const stopSignals = exitOnSignal(ctx.io, opts.json ?? false, "planning");
  try {
    const transport = transportRequest(opts, "plan");
    const policy = await loadPolicy(opts.policy);
    const { source, destination } = await connectBoth(opts.source, opts.dest, monitors);
    // What the plan reads, asked now: QEMU answers while the planner's modules load.
    prefetchSnapshot(source);
    prefetchSnapshot(destination);
    const { planErrorsMessage, planMigration } = await import("../../migrate/plan.js");
    const planned = await planMigration(source, destination, {
      policy,
      postcopy: opts.postcopy ?? false,
      copyStorage: opts.copyStorage ?? false,
      transport,
    });
    const plan = planned.plan;
    if (opts.html !== undefined) {
      await writePicture(opts.html, {
        plan,
        source: planned.source.graph,
        destination: planned.destination.graph,
      });
      ctx.io.stderr.write(`bitferry: wrote the picture of the plan to ${opts.html}\n`);
    }
    // A failure carries `error` in every --json document; for a plan, its errors are the details.
    if (opts.json)
      writeJson(
        ctx.io,
        plan.ok ? plan : { ...plan, error: { code: "PLAN_ERRORS", message: planErrorsMessage(plan) } },
      );
    else {
      const { renderPlanText } = await import("../render/plan-text.js");
      ctx.io.stdout.write(renderPlanText(plan, colors(ctx.io)));
    }
    if (opts.json && !plan.ok) ctx.io.stderr.write(`bitferry: ${planErrorsMessage(plan)} [PLAN_ERRORS]\n`);
    ctx.exitCode = plan.ok ? ExitCode.OK : ExitCode.FAILED;
  } catch (err) {
    if (opts.json) writeJson(ctx.io, { version: 1, ok: false, error: summarizeError(err) });
    reportError(ctx.io, err);
    ctx.exitCode = exitCodeFor(err);
  } finally {
    stopSignals();
    await closeMonitors(monitors);
  }
}
