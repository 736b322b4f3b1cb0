import type { CliContext } from "../main.js";
import { closeMonitors, commandTimeoutFor, connectBoth, loadPolicy } from "../connect.js";
import { ExitCode } from "../exit-codes.js";
import { colors, exitCodeFor, reportError, summarizeError, writeJson } from "../output.js";
import { ProgressReporter } from "../progress.js";
import type { PlanResult } from "../../migrate/plan.js";
import type { QemuMonitor } from "../../qemu/monitor.js";
import { prefetchSnapshot } from "../../qemu/snapshot.js";
import { transportRequest, type TransportFlags } from "../transport-flags.js";

export interface MigrateFlags extends TransportFlags {
  policy?: string;
  postcopy?: true;
  resume?: true;
  maxDowntime?: number;
  timeout?: number;
  json?: true;
  html?: string;
}

/** The `migrate` command's work, loaded only when the command runs (keeps `bitferry --help` fast). */
export async function migrateAction(opts: MigrateFlags, ctx: CliContext): Promise<void> {
  const monitors: QemuMonitor[] = [];
  const controller = new AbortController();
  let signalled: NodeJS.Signals | undefined;
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals): void => {
    signals++;
    signalled ??= sig;
    if (signals === 1) {
      ctx.io.stderr.write(
        `\nbitferry: ${sig}: cancelling the migration and repairing the source (press again to exit at once)\n`,
      );
      controller.abort(sig);
    } else {
      process.exit(sig === "SIGINT" ? ExitCode.SIGINT : ExitCode.SIGTERM);
    }
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const reporter = new ProgressReporter(ctx.io.stderr);
  try {
    const transport = transportRequest(opts, "migrate");
    const policy = await loadPolicy(opts.policy);
    const { source, destination } = await connectBoth(
      opts.source,
      opts.dest,
      monitors,
      commandTimeoutFor(opts.maxDowntime),
    );
    // What the plan reads, asked now: QEMU answers (its schema takes it tens of milliseconds) while the run's
    // modules load, and the plan takes these answers.
    prefetchSnapshot(source);
    prefetchSnapshot(destination);
    const { migrate } = await import("../../migrate/run.js");
    let planned: PlanResult | undefined;
    const result = await migrate({
      source,
      destination,
      ...(opts.uri !== undefined ? { uri: opts.uri } : {}),
      ...(opts.tlsCreds !== undefined ? { tlsCreds: opts.tlsCreds } : {}),
      ...(opts.tlsHostname !== undefined ? { tlsHostname: opts.tlsHostname } : {}),
      policy,
      postcopy: opts.postcopy ?? false,
      resume: opts.resume ?? false,
      ...(opts.maxDowntime !== undefined ? { maxDowntimeMs: opts.maxDowntime } : {}),
      copyStorage: opts.copyStorage ?? false,
      transport,
      ...(opts.nbd !== undefined ? { nbd: opts.nbd } : {}),
      ...(opts.timeout !== undefined ? { timeoutMs: opts.timeout * 1000 } : {}),
      signal: controller.signal,
      onProgress: reporter.update,
      onPlanned: (p) => {
        planned = p;
      },
    });
    reporter.end();
    if (opts.html !== undefined && planned) {
      // The migration's outcome matters more than its picture: a picture that cannot be written is reported only.
      try {
        const { writePicture } = await import("../picture.js");
        await writePicture(opts.html, {
          plan: result.plan,
          source: planned.source.graph,
          destination: planned.destination.graph,
          result,
        });
        ctx.io.stderr.write(`bitferry: wrote the picture of the plan and its verification to ${opts.html}\n`);
      } catch (err) {
        reportError(ctx.io, err);
      }
    }
    if (opts.json) writeJson(ctx.io, result);
    else {
      const { renderMigrateText } = await import("../render/migrate-text.js");
      ctx.io.stdout.write(renderMigrateText(result, colors(ctx.io)));
    }
    if (opts.json && result.error)
      ctx.io.stderr.write(`bitferry: ${result.error.message} [${result.error.code}]\n`);
    if (result.ok) ctx.exitCode = ExitCode.OK;
    else if (result.error?.code === "INTERRUPTED" && signalled)
      ctx.exitCode = signalled === "SIGINT" ? ExitCode.SIGINT : ExitCode.SIGTERM;
    else ctx.exitCode = ExitCode.FAILED;
  } catch (err) {
    reporter.end();
    if (opts.json) writeJson(ctx.io, { version: 1, ok: false, phase: "failed", error: summarizeError(err) });
    reportError(ctx.io, err);
    ctx.exitCode = exitCodeFor(err);
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await closeMonitors(monitors);
  }
}
