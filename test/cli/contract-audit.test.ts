import { describe, it } from "node:test";
import assert from "node:assert/strict";
import * as S from "../../src/lab/scenarios.js";
import type { MigrateResult } from "../../src/migrate/run.js";
import type { Plan } from "../../src/policy/types.js";
import { pairArgs, runCli, spawnCli } from "../helpers/cli.js";
import { FakeQmpServer } from "../helpers/fake-qmp.js";
import { withLab } from "../helpers/lab.js";

/**
 * Regressions found by auditing the CLI from outside against DESIGN section 5: each case is a place where the
 * real behaviour once differed from the contract.
 */

interface FailureDoc {
  version: number;
  ok: boolean;
  error: { code: string; message: string };
}

describe("bitferry CLI contract (section 5)", () => {
  // --uri and --nbd passed the prefix check but failed in the address parser with an error commander did not
  // know, so a malformed value exited 1 with no JSON document instead of a usage error.
  for (const [flag, value, extra] of [
    ["--uri", "tcp:host", []],
    ["--uri", "unix:", []],
    ["--uri", "tcp:host:0", []],
    ["--nbd", "tcp:host", ["--copy-storage"]],
    ["--nbd", "unix:", ["--copy-storage"]],
  ] as const) {
    it(`migrate ${flag} ${value}: exit 2, one JSON document with --json, one line without`, async () => {
      const base = ["migrate", "--source", "/tmp/bf-none-src.qmp", "--dest", "/tmp/bf-none-dst.qmp"];
      const uri = flag === "--uri" ? [] : ["--uri", "unix:/tmp/bf-none-mig.sock"];
      const args = [...base, ...uri, flag, value, ...extra];

      const json = await runCli([...args, "--json"]);
      assert.equal(json.code, 2, json.stderr);
      const doc = json.json() as FailureDoc;
      assert.equal(doc.version, 1);
      assert.equal(doc.ok, false);
      assert.equal(doc.error.code, "USAGE");
      assert.ok(doc.error.message.includes(value), doc.error.message);

      const human = await runCli(args);
      assert.equal(human.code, 2);
      assert.equal(human.stdout, "");
      assert.ok(human.stderr.includes(`'${value}'`), human.stderr);
      assert.doesNotMatch(human.stderr, /\n\s+at /, "no stack trace");
    });
  }

  it("the same through a real process: exit status 2 and nothing but the document on stdout", async () => {
    const r = await spawnCli([
      "migrate",
      "--source",
      "/tmp/bf-none-src.qmp",
      "--dest",
      "/tmp/bf-none-dst.qmp",
      "--uri",
      "tcp:host",
      "--json",
    ]);
    assert.equal(r.code, 2, r.stderr);
    assert.equal((r.json() as FailureDoc).error.code, "USAGE");
  });

  // A plan with errors exits 1 and is a failure: like every failing --json document it carries `error`.
  it("plan --json with errors: ok false, the errors, and error.code PLAN_ERRORS", async () => {
    await withLab(async (lab) => {
      const pair = await S.sizes.setup(lab);
      const r = await runCli(["plan", ...pairArgs(pair), "--json"]);
      assert.equal(r.code, 1, r.stderr);
      const doc = r.json() as Plan & { error?: { code: string; message: string } };
      assert.equal(doc.ok, false);
      assert.ok(doc.errors.length > 0);
      assert.equal(doc.error?.code, "PLAN_ERRORS");
      for (const e of doc.errors) assert.ok(doc.error.message.includes(e.code), doc.error.message);
    });
  });

  // plan and inspect once died from the signal: no document on stdout, and the shell saw a signal death.
  for (const [sig, status, json] of [
    ["SIGINT", 130, true],
    ["SIGTERM", 143, false],
  ] as const) {
    it(`plan interrupted by ${sig} while QEMU is slow to answer: exit ${status}, INTERRUPTED`, async () => {
      let pid = -1;
      const server = await FakeQmpServer.start({
        handle: (cmd, conn) => {
          // Capabilities are negotiated; the queries of the plan are never answered.
          if (cmd.execute === "qmp_capabilities") conn.send({ return: {}, id: cmd.id });
          else if (pid > 0) {
            process.kill(pid, sig);
            pid = -1;
          }
        },
      });
      try {
        const r = await spawnCli(
          ["plan", "--source", server.path, "--dest", server.path, ...(json ? ["--json"] : [])],
          { onSpawn: (p) => (pid = p) },
        );
        assert.equal(r.code, status, r.stderr);
        if (json) {
          const doc = r.json() as FailureDoc;
          assert.equal(doc.ok, false);
          assert.equal(doc.error.code, "INTERRUPTED");
        } else {
          assert.equal(r.stdout, "");
          assert.match(
            r.stderr,
            /interrupted \(SIGTERM\) while planning; nothing was changed \[INTERRUPTED\]/,
          );
        }
      } finally {
        await server.close();
      }
    });
  }

  // After a cancel the result said `migration.status: "active"` (the last status seen before cancelling) while
  // QEMU reported the migration `cancelled`.
  it("a migration cancelled by --timeout reports QEMU's final status, not the last one seen", async () => {
    await withLab(async (lab) => {
      const pair = await S.stallingPersistent.setup(lab);
      const r = await runCli([
        "migrate",
        ...pairArgs(pair),
        "--uri",
        `unix:${lab.path("mig.sock")}`,
        // A downtime bound too small to ever converge keeps the migration active until the timeout.
        "--max-downtime",
        "301",
        "--timeout",
        "1",
        "--json",
      ]);
      assert.equal(r.code, 1, r.stderr);
      const doc = r.json() as MigrateResult;
      assert.equal(doc.phase, "failed");
      assert.ok(["TIMEOUT", "NOT_CONVERGING"].includes(doc.error?.code ?? ""), JSON.stringify(doc.error));
      const qemu = (await pair.source.monitor.migrationInfo()).status;
      assert.equal(qemu, "cancelled");
      assert.equal(doc.migration.status, qemu);
      assert.equal(doc.source.runState, "running");
    });
  });
});
