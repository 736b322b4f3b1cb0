import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import * as S from "../../src/lab/scenarios.js";
import type { Plan } from "../../src/policy/types.js";
import type { MigrateResult } from "../../src/migrate/run.js";
import { pairArgs, runCli } from "../helpers/cli.js";
import { withLab } from "../helpers/lab.js";
import { bitmapStates } from "../helpers/bitmaps.js";

interface FailureDoc {
  ok: boolean;
  error: { code: string; message: string };
}

const none = ["--source", "/tmp/bf-none-src.qmp", "--dest", "/tmp/bf-none-dst.qmp"];

describe("transport flags of plan and migrate (section 5)", () => {
  for (const [title, args, pattern] of [
    [
      "migrate without --uri to a local destination",
      ["migrate", ...none],
      /required option '--uri <uri>'.*ssh:\/\//,
    ],
    [
      "--tls-hostname without --tls-creds",
      ["plan", ...none, "--uri", "tcp:h:1", "--tls-hostname", "h"],
      /--tls-hostname is only used with --tls-creds/,
    ],
    [
      "--tls-creds without --uri",
      ["plan", ...none, "--tls-creds", "/etc/pki/qemu"],
      /--tls-creds needs --uri/,
    ],
    [
      "plan --nbd without --copy-storage",
      ["plan", ...none, "--nbd", "tcp:h:1"],
      /--nbd is only used with --copy-storage/,
    ],
    [
      "a malformed ssh:// address",
      ["plan", "--source", "/tmp/x", "--dest", "ssh://h"],
      /expected ssh:\/\/\[USER@\]HOST/,
    ],
  ] as const) {
    it(`${title}: exit 2 before connecting, USAGE`, async () => {
      const r = await runCli([...args, "--json"]);
      assert.equal(r.code, 2, r.stderr);
      const doc = r.json() as FailureDoc;
      assert.equal(doc.error.code, "USAGE");
      assert.match(doc.error.message, pattern);
    });
  }

  it("plan --copy-storage --nbd tcp: is refused with INSECURE_NBD; --insecure plans it with the warnings", async () => {
    await withLab(async (lab) => {
      const pair = await S.copyStorage.setup(lab);
      const policy = lab.path("policy.json");
      writeFileSync(policy, JSON.stringify({ map: [{ source: "disk0", target: "vda" }] }));
      const base = [
        "plan",
        ...pairArgs(pair),
        "--policy",
        policy,
        "--copy-storage",
        "--uri",
        "tcp:127.0.0.1:4445",
        "--nbd",
        "tcp:127.0.0.1:10809",
      ];

      const refused = await runCli([...base, "--json"]);
      assert.equal(refused.code, 1, refused.stderr);
      const plan = refused.json() as Plan & FailureDoc;
      assert.equal(plan.ok, false);
      assert.deepEqual(
        plan.errors.map((e) => e.code),
        ["INSECURE_NBD"],
      );
      assert.deepEqual(plan.transport, {
        monitors: { source: "unix", destination: "unix" },
        migration: "plaintext",
        nbd: "plaintext",
      });
      assert.equal(plan.error.code, "PLAN_ERRORS");
      assert.deepEqual(
        plan.warnings.map((w) => w.code).filter((c) => c === "INSECURE_TRANSPORT"),
        ["INSECURE_TRANSPORT"],
      );

      const human = await runCli(base);
      assert.equal(human.code, 1);
      assert.match(human.stdout, /INSECURE_NBD/);
      // The human output names the route the JSON's `transport` gives.
      assert.match(
        human.stdout,
        /^Route: source monitor over unix socket, destination monitor over unix socket; migration stream over plaintext TCP, disk copy \(NBD\) over plaintext TCP\.$/m,
      );

      const accepted = await runCli([...base, "--insecure", "--json"]);
      assert.equal(accepted.code, 0, accepted.stderr);
      const ok = accepted.json() as Plan;
      assert.equal(ok.ok, true);
      assert.equal(ok.warnings.filter((w) => w.code === "INSECURE_TRANSPORT").length, 2);
    });
  });

  it("migrate refuses the same plan before changing anything, and says so in the result", async () => {
    await withLab(async (lab) => {
      const pair = await S.copyStorage.setup(lab);
      const policy = lab.path("policy.json");
      writeFileSync(policy, JSON.stringify({ map: [{ source: "disk0", target: "vda" }] }));
      const before = await bitmapStates(pair.source);
      const r = await runCli([
        "migrate",
        ...pairArgs(pair),
        "--policy",
        policy,
        "--copy-storage",
        "--uri",
        `unix:${lab.path("m.sock")}`,
        "--nbd",
        "tcp:127.0.0.1:10809",
        "--json",
      ]);
      assert.equal(r.code, 1, r.stderr);
      const doc = r.json() as MigrateResult;
      assert.equal(doc.phase, "planned");
      assert.equal(doc.error?.code, "PLAN_ERRORS");
      assert.deepEqual(
        doc.plan.errors.map((e) => e.code),
        ["INSECURE_NBD"],
      );
      assert.equal(doc.plan.transport?.migration, "unix");
      assert.deepEqual(await pair.destination.qmp.execute("query-block-exports"), []);
      assert.deepEqual(await bitmapStates(pair.source), before);
    });
  });

  it("plan without any transport flag on one host: transport unix, migration unknown", async () => {
    await withLab(async (lab) => {
      const pair = await S.blockdevSame.setup(lab);
      const r = await runCli(["plan", ...pairArgs(pair), "--json"]);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual((r.json() as Plan).transport, {
        monitors: { source: "unix", destination: "unix" },
        migration: null,
        nbd: null,
      });
      const human = await runCli(["plan", ...pairArgs(pair)]);
      assert.equal(human.code, 0, human.stderr);
      assert.match(
        human.stdout,
        /^Route: source monitor over unix socket, destination monitor over unix socket; migration stream not known \(no --uri\)\.$/m,
      );
    });
  });
});
