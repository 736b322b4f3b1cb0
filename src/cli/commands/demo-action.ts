import { writeFileSync } from "node:fs";
import type { CliContext } from "../main.js";
import { ExitCode } from "../exit-codes.js";
import { colors, reportError } from "../output.js";
import { ProgressReporter } from "../progress.js";
import { renderMigrateText } from "../render/migrate-text.js";
import { renderPlanText } from "../render/plan-text.js";
import { writePicture } from "../picture.js";
import path from "node:path";
import { Lab } from "../../lab/lab.js";
import { demo } from "../../lab/scenarios.js";
import { planMigration } from "../../migrate/plan.js";
import { migrate } from "../../migrate/run.js";
import { parsePolicy } from "../../policy/file.js";

/** Where the demo leaves its picture: the current directory, so it outlives the demo's temporary files. */
const PICTURE_FILE = "bitferry-demo.html";

const POLICY = `# Resolve what the first plan refused:
map:
  - source: data0        # the data disk is called vdb on the destination
    target: vdb
deny:
  - forgotten            # a bitmap on a node QEMU named itself: skip it on purpose
`;

/** The `demo` command's work, loaded only when the command runs (keeps `bitferry --help` fast). */
export async function demoAction(ctx: CliContext): Promise<void> {
  const c = colors(ctx.io);
  const out = (s = ""): void => {
    ctx.io.stdout.write(`${s}\n`);
  };
  const lab = Lab.create({ prefix: "bf-demo-" });
  const onSignal = (): void => {
    void lab.cleanup().finally(() => process.exit(ExitCode.SIGINT));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    out(c.bold("bitferry demo: two local QEMUs, real bitmaps, a real migration"));
    out();
    out(
      "Source: -drive drive0 (system disk) with a drive-mirror running on it, and -blockdev data0 (data disk);",
    );
    out(
      "        five bitmaps, dirtied, one of them on the system disk's file node, whose name QEMU generated.",
    );
    out("Destination: waiting for the migration (-incoming defer, -S); its data disk is called vdb.");
    const { source, destination } = await demo.setup(lab, { paused: true });
    out(
      c.dim(
        `(QEMU ${source.qmp.version.major}.${source.qmp.version.minor}.${source.qmp.version.micro}, pids ${source.pid} and ${destination.pid}, in ${lab.dir})`,
      ),
    );
    out();
    out(c.bold("1. bitferry plan, without a policy:"));
    const first = await planMigration(source.monitor, destination.monitor);
    out(renderPlanText(first.plan, c));
    out(c.bold("2. A policy that resolves both problems:"));
    out(POLICY);
    const policyFile = lab.path("policy.yaml");
    writeFileSync(policyFile, POLICY);
    const policy = parsePolicy(POLICY, policyFile);
    const second = await planMigration(source.monitor, destination.monitor, { policy });
    out(renderPlanText(second.plan, c));
    if (!second.plan.ok) throw new Error("the demo policy did not resolve the plan (a bug in the demo)");
    out(c.bold("3. bitferry migrate --policy policy.yaml --resume:"));
    const reporter = new ProgressReporter(ctx.io.stderr);
    const result = await migrate({
      source: source.monitor,
      destination: destination.monitor,
      uri: `unix:${lab.path("migration.sock")}`,
      policy,
      resume: true,
      onProgress: reporter.update,
    });
    reporter.end();
    out(renderMigrateText(result, c));
    const picture = path.resolve(PICTURE_FILE);
    await writePicture(picture, {
      plan: result.plan,
      source: second.source.graph,
      destination: second.destination.graph,
      result,
    });
    out(`The picture of this plan and its verification (one self-contained HTML file): ${picture}`);
    ctx.exitCode = result.ok ? ExitCode.OK : ExitCode.FAILED;
  } catch (err) {
    reportError(ctx.io, err);
    ctx.exitCode = ExitCode.FAILED;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await lab.cleanup();
    out(c.dim("Both QEMUs stopped; temporary files removed."));
  }
}
