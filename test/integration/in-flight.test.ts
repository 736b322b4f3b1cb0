import { it } from "node:test";
import assert from "node:assert/strict";
import type { QemuProcess } from "../../src/lab/process.js";
import * as S from "../../src/lab/scenarios.js";
import type { MigrateOptions, MigrateResult } from "../../src/migrate/run.js";
import { validatePolicy } from "../../src/policy/file.js";
import { QmpTimeoutError } from "../../src/qmp/errors.js";
import { Findings } from "../fuzz/checks.js";
import { withLab } from "../helpers/lab.js";
import { runMigration } from "../helpers/migrate.js";
import { buildPairCases, describeEachPair, type BuildPairCase } from "../helpers/pairs.js";
import { compare, sideState } from "../helpers/side-state.js";

/**
 * A change whose reply never reaches bitferry: QEMU made it, but Ctrl-C (or --timeout) fired, or the reply timed
 * out, while the command was in flight. Each command of a run that changes something is caught in turn, sent to
 * QEMU for real, and its reply kept from the run; both QEMUs must still end as they were (a merged temporary
 * bitmap was once left behind this way: the fuzz's seed 20251126, scenario 16).
 */

interface Target {
  side: "source" | "destination";
  command: string;
  args?: (args: Record<string, unknown> | undefined) => boolean;
}

const COPY_STORAGE: Partial<MigrateOptions> = {
  copyStorage: true,
  policy: validatePolicy({ map: [{ source: "disk0", target: "vda" }] }, "test"),
};

const TARGETS: Target[] = [
  { side: "destination", command: "migrate-set-capabilities" },
  { side: "source", command: "migrate-set-capabilities" },
  { side: "destination", command: "nbd-server-start" },
  { side: "destination", command: "block-export-add" },
  { side: "source", command: "blockdev-add" },
  { side: "source", command: "blockdev-mirror" },
  { side: "source", command: "transaction" },
];

type Loss = "interrupted" | "reply timed out";

/** Lets `proc`'s first `target` command through to QEMU and keeps its reply from the run. */
function catchCommand(proc: QemuProcess, target: Target, loss: Loss, ac: AbortController): () => boolean {
  const qmp = proc.monitor.qmp;
  const real = qmp.execute.bind(qmp);
  let caught = false;
  qmp.execute = (command, args, options) => {
    const reply = real(command, args, options);
    if (caught || command !== target.command || (target.args && !target.args(args))) return reply;
    caught = true;
    if (loss === "interrupted") {
      ac.abort("test");
      return reply;
    }
    reply.catch(() => undefined);
    return Promise.reject(new QmpTimeoutError(command, 1));
  };
  return () => caught;
}

async function runCaught(
  qp: BuildPairCase,
  target: Target,
  loss: Loss,
  options: Partial<MigrateOptions>,
): Promise<string[]> {
  return withLab(async (lab) => {
    const pair = await S.copyStorage.setup(lab, { ...qp.options, paused: true });
    const src0 = await sideState(lab, pair.source);
    const dst0 = await sideState(lab, pair.destination);
    const ac = new AbortController();
    const caught = catchCommand(pair[target.side], target, loss, ac);
    const f = new Findings();
    const result: MigrateResult = await runMigration(lab, pair, { ...options, signal: ac.signal });
    f.check(caught(), `the run sent no ${target.command} to the ${target.side}`);
    f.equal(result.ok, false, "ok");
    f.check(
      result.source.repaired.every((r) => r.ok),
      `repairs: ${JSON.stringify(result.source.repaired)}`,
    );
    // Nothing but the failure itself: a sentence after it would say that an undo failed.
    f.check(!/could not undo/i.test(result.error?.message ?? ""), `error: ${result.error?.message ?? ""}`);
    compare(f, "destination", await sideState(lab, pair.destination), dst0);
    compare(f, "source", await sideState(lab, pair.source), src0);
    return f.list;
  });
}

describeEachPair("bitferry migrate: a change whose reply is lost is undone", (qp) => {
  // The default pair, and the first with a QEMU 10.0 destination (its answers differ; see step-boundaries).
  if (qp !== buildPairCases[0] && qp !== buildPairCases.find((p) => !p.destination.label.startsWith("7.")))
    return;
  for (const loss of ["interrupted", "reply timed out"] as const) {
    it(
      `${loss} while each command is in flight (--copy-storage, a chain merged)`,
      { timeout: 600_000 },
      async () => {
        const failures: string[] = [];
        for (const t of TARGETS) {
          for (const m of await runCaught(qp, t, loss, COPY_STORAGE))
            failures.push(`${t.side} ${t.command}: ${m}`);
        }
        assert.deepEqual(failures, []);
      },
    );
  }
});
