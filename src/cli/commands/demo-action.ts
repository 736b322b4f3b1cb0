import { writeFileSync } from "node:fs";
import path from "node:path";
import type { CliContext } from "../main.js";
import { ExitCode } from "../exit-codes.js";
import { debug } from "../../util/debug.js";
import { colors, summarizeError, writeJson, type ErrorSummary } from "../output.js";
import { ProgressReporter } from "../progress.js";
import { renderMigrateText } from "../render/migrate-text.js";
import { renderPlanText } from "../render/plan-text.js";
import { renderProofText } from "../render/proof-text.js";
import { writePicture } from "../picture.js";
import type { BackupProof } from "../../lab/backup-proof.js";
import { ensureGuestImage } from "../../lab/guest-image.js";
import { continueOnDestination, guestDemo, guestLogs, proveGuestBackup } from "../../lab/guest-scenarios.js";
import { Lab } from "../../lab/lab.js";
import { planMigration } from "../../migrate/plan.js";
import { migrate, type MigrateResult } from "../../migrate/run.js";
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

/** `demo --json`: the numbers the text output shows, in one document (docs/json.md). */
export interface DemoDocument {
  version: 1;
  ok: boolean;
  guest: {
    kernel: string;
    /** Rounds the guest had written when the migration started, when the source stopped, and the destination's first. */
    roundsBeforeMigration: number;
    sourceLastRound: number;
    destinationFirstRound: number | null;
  } | null;
  /** Codes of the first plan's errors (the plan without a policy, which refuses). */
  firstPlanErrors: string[];
  result: MigrateResult | null;
  proof: BackupProof[];
  picture: string | null;
  error?: ErrorSummary;
}

export interface DemoFlags {
  json?: true;
}

/** The `demo` command's work, loaded only when the command runs (keeps `bitferry --help` fast). */
export async function demoAction(ctx: CliContext, flags: DemoFlags = {}): Promise<void> {
  const json = flags.json ?? false;
  const c = colors(ctx.io);
  // With --json the story is not told: stdout carries the one document, stderr the progress.
  const out = (s = ""): void => {
    if (!json) ctx.io.stdout.write(`${s}\n`);
  };
  const doc: DemoDocument = {
    version: 1,
    ok: false,
    guest: null,
    firstPlanErrors: [],
    result: null,
    proof: [],
    picture: null,
  };
  const lab = Lab.create({ prefix: "bf-demo-" });
  const onSignal = (): void => {
    void lab.cleanup().finally(() => process.exit(ExitCode.SIGINT));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    out(c.bold("bitferry demo: two local QEMUs, a Linux guest writing to its disks, a real migration"));
    out();
    const image = await ensureGuestImage({ log: (l) => ctx.io.stderr.write(`bitferry demo: ${l}\n`) });
    out(
      `Guest: Debian's ${image.version} kernel and busybox; its init writes 64 KiB of fresh random data to each disk`,
    );
    out("       in a loop and reports every write on its serial port (TCG, 128 MiB of RAM, virtio disks).");
    out(
      "Source: -drive drive0 (system disk) with a drive-mirror running on it, and -blockdev data0 (data disk);",
    );
    out("        five bitmaps, one of them on the system disk's file node, whose name QEMU generated.");
    out(
      "        The full backup of both disks is taken over NBD as the bitmaps are created, before the guest runs.",
    );
    out("Destination: waiting for the migration (-incoming defer, -S); its data disk is called vdb.");
    const pair = await guestDemo.setup(lab, { paused: true, image });
    const { source, destination } = pair;
    const roundsBefore = guestLogs(pair).source.round;
    out(
      c.dim(
        `(QEMU ${source.qmp.version.major}.${source.qmp.version.minor}.${source.qmp.version.micro}, pids ${source.pid} and ${destination.pid}, in ${lab.dir}; the guest is at round ${roundsBefore})`,
      ),
    );
    out();
    out(c.bold("1. bitferry plan, without a policy:"));
    const first = await planMigration(source.monitor, destination.monitor);
    doc.firstPlanErrors = first.plan.errors.map((e) => e.code);
    out(renderPlanText(first.plan, c));
    out(c.bold("2. A policy that resolves both problems:"));
    out(POLICY);
    const policyFile = lab.path("policy.yaml");
    writeFileSync(policyFile, POLICY);
    const policy = parsePolicy(POLICY, policyFile);
    const second = await planMigration(source.monitor, destination.monitor, { policy });
    out(renderPlanText(second.plan, c));
    if (!second.plan.ok) throw new Error("the demo policy did not resolve the plan (a bug in the demo)");
    out(c.bold("3. bitferry migrate --policy policy.yaml, while the guest writes:"));
    const reporter = new ProgressReporter(ctx.io.stderr);
    const result = await migrate({
      source: source.monitor,
      destination: destination.monitor,
      uri: `unix:${lab.path("migration.sock")}`,
      policy,
      onProgress: reporter.update,
    });
    reporter.end();
    doc.result = result;
    out(renderMigrateText(result, c));
    const picture = path.resolve(PICTURE_FILE);
    await writePicture(picture, {
      plan: result.plan,
      source: second.source.graph,
      destination: second.destination.graph,
      result,
    });
    doc.picture = picture;
    out(`The picture of this plan and its verification (one self-contained HTML file): ${picture}`);
    out();
    if (result.ok) {
      out(
        c.bold("4. The backup proof, from the destination (still paused), read over NBD as backup tools do:"),
      );
      doc.proof = await proveGuestBackup(lab, pair);
      out(renderProofText(doc.proof, c));
      out(c.bold("5. The destination resumes (cont):"));
      const { sourceRound, destinationRound } = await continueOnDestination(pair);
      doc.guest = {
        kernel: image.version,
        roundsBeforeMigration: roundsBefore,
        sourceLastRound: sourceRound,
        destinationFirstRound: destinationRound,
      };
      out(
        `The guest wrote up to round ${sourceRound} on the source and goes on from round ${destinationRound} on the destination.`,
      );
    }
    doc.ok = result.ok && doc.proof.length > 0 && doc.proof.every((p) => p.ok);
    if (result.error) doc.error = result.error;
    else if (!doc.ok) doc.error = { code: "PROOF_FAILED", message: "the backup proof failed (see proof)" };
    ctx.exitCode = doc.ok ? ExitCode.OK : ExitCode.FAILED;
  } catch (err) {
    doc.error = summarizeError(err);
    debug("%s", err instanceof Error ? err.stack : String(err));
    ctx.exitCode = ExitCode.FAILED;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await lab.cleanup();
    out(c.dim("Both QEMUs stopped; temporary files removed."));
  }
  if (doc.error) ctx.io.stderr.write(`bitferry: ${doc.error.message} [${doc.error.code}]\n`);
  if (json) writeJson(ctx.io, doc);
}
