import { it } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import type { Lab } from "../../src/lab/lab.js";
import type { QemuProcess } from "../../src/lab/process.js";
import * as S from "../../src/lab/scenarios.js";
import type { Plan } from "../../src/policy/types.js";
import { captureRawSnapshot } from "../../src/qemu/snapshot.js";
import { runCli, spawnCli } from "../helpers/cli.js";
import { withLab } from "../helpers/lab.js";
import { describeEachPair } from "../helpers/pairs.js";

let policyCounter = 0;
function policyFile(lab: Lab, policy: unknown): string {
  const file = lab.path(`policy-${policyCounter++}.json`);
  writeFileSync(file, JSON.stringify(policy));
  return file;
}

async function plan(
  lab: Lab,
  pair: S.ScenarioPair,
  policy?: unknown,
  extra: string[] = [],
): Promise<{ code: number; plan: Plan }> {
  const args = [
    "plan",
    "--source",
    pair.source.monitorSocket,
    "--dest",
    pair.destination.monitorSocket,
    "--json",
    ...extra,
  ];
  if (policy !== undefined) args.push("--policy", policyFile(lab, policy));
  const r = await runCli(args);
  return { code: r.code, plan: r.json() as Plan };
}

function row(p: Plan, bitmap: string): Plan["bitmaps"][number] {
  const r = p.bitmaps.find((b) => b.source.bitmap === bitmap);
  assert.ok(r, `no row for ${bitmap}`);
  return r;
}

/**
 * What a plan must never change on either side: capabilities, parameters (the sticky bitmap mapping), run state,
 * nodes and their named bitmaps. (A running mirror legitimately changes sizes and its own anonymous bitmap.)
 */
async function untouched(procs: QemuProcess[]): Promise<() => Promise<void>> {
  const state = async (): Promise<unknown[]> =>
    Promise.all(
      procs.map(async (p) => {
        const raw = await captureRawSnapshot(p.monitor);
        const nodes = await p.monitor.namedBlockNodes();
        return {
          status: raw.status,
          params: raw.migrationParameters,
          caps: raw.migrationCapabilities,
          nodes: nodes.map((n) => [
            n["node-name"],
            n.drv,
            n.ro,
            (n["dirty-bitmaps"] ?? []).filter((b) => b.name !== undefined),
          ]),
        };
      }),
    );
  const before = await state();
  return async () => {
    assert.deepEqual(await state(), before, "plan changed something in QEMU");
  };
}

describeEachPair("bitferry plan against live QEMU pairs", (qp) => {
  it("-drive under a running mirror; a generated node-name: error, then deny, then map", async () => {
    await withLab(async (lab) => {
      const pair = await S.driveMirror.setup(lab, qp.options);
      const check = await untouched([pair.source, pair.destination]);
      const bad = await plan(lab, pair);
      assert.equal(bad.code, 1);
      assert.equal(row(bad.plan, "bm0").rule, "drive-name");
      assert.equal(row(bad.plan, "onfile").rule, "UNADDRESSABLE");
      assert.deepEqual(
        bad.plan.errors.map((e) => e.code),
        ["UNADDRESSABLE"],
      );

      const denied = await plan(lab, pair, { deny: ["onfile"] });
      assert.equal(denied.code, 0);
      assert.ok(denied.plan.ok);

      const protocol = row(bad.plan, "onfile").source.node;
      const mapped = await plan(lab, pair, {
        map: [{ source: { node: protocol, bitmap: "onfile" }, target: "drive0" }],
      });
      assert.equal(
        row(mapped.plan, "onfile").rule,
        mapped.plan.ok ? "map" : row(mapped.plan, "onfile").errors[0]?.code,
      );
      assert.ok(mapped.plan.warnings.some((w) => w.code === "GENERATED_NODE_NAME_IN_MAP"));
      await check();
    });
  });

  it("-blockdev with equal node-names; strict mode; allow, deny and drop", async () => {
    await withLab(async (lab) => {
      const pair = await S.blockdevSame.setup(lab, qp.options);
      const check = await untouched([pair.source, pair.destination]);
      const all = await plan(lab, pair);
      assert.equal(all.code, 0);
      assert.equal(all.plan.bitmaps.filter((b) => b.action === "migrate").length, 5);

      const strict = await plan(lab, pair, { defaults: false, map: [{ source: "disk0", target: "disk0" }] });
      assert.equal(strict.code, 1);
      assert.deepEqual(new Set(strict.plan.errors.map((e) => e.code)), new Set(["UNCOVERED"]));
      assert.equal(strict.plan.errors.length, 2);

      const filtered = await plan(lab, pair, {
        allow: ["backup-*", "tmp-y"],
        deny: ["backup-b"],
        map: [{ source: { node: "disk1", bitmap: "tmp-y" }, target: null }],
      });
      assert.equal(filtered.code, 0);
      assert.deepEqual(filtered.plan.bitmaps.map((b) => [b.source.bitmap, b.rule]).sort(), [
        ["backup-a", "node-name"],
        ["backup-b", "deny"],
        ["backup-c", "node-name"],
        ["tmp-x", "not-allowed"],
        ["tmp-y", "map-drop"],
      ]);
      await check();
    });
  });

  it("different node-names with a map; rename with persistence and enabled changes", async () => {
    await withLab(async (lab) => {
      const pair = await S.blockdevRenamed.setup(lab, qp.options);
      const none = await plan(lab, pair);
      assert.equal(none.code, 1);
      assert.ok(none.plan.errors.every((e) => e.code === "TARGET_NODE_MISSING"));
      const mapped = await plan(lab, pair, {
        map: [
          {
            source: { node: "disk0", bitmap: "old" },
            target: { node: "vda", bitmap: "renamed", persistent: true, enabled: false },
          },
          { source: "disk0", target: "vda" },
          { source: "disk1", target: "vdb" },
        ],
      });
      assert.equal(mapped.code, 0, JSON.stringify(mapped.plan.errors));
      assert.deepEqual(row(mapped.plan, "old").target, {
        node: "vda",
        drive: null,
        bitmap: "renamed",
        persistent: true,
        enabled: false,
      });
    });
  });

  it("destination smaller and larger", async () => {
    await withLab(async (lab) => {
      const pair = await S.sizes.setup(lab, qp.options);
      const p = await plan(lab, pair);
      assert.equal(p.code, 1);
      const rule = (node: string): string => p.plan.bitmaps.find((b) => b.source.node === node)?.rule ?? "";
      assert.equal(rule("small"), "TARGET_TOO_SMALL");
      assert.equal(rule("big-bad"), "TARGET_SIZE_MISMATCH");
      assert.equal(rule("big-ok"), "node-name");
      assert.equal(rule("same"), "node-name");
    });
  });

  it("a same-name bitmap stored in the destination image, and one in its memory", async () => {
    await withLab(async (lab) => {
      const pair = await S.destinationExisting.setup(lab, qp.options);
      const p = await plan(lab, pair);
      assert.equal(row(p.plan, "stored").rule, "TARGET_BITMAP_EXISTS");
      assert.equal(row(p.plan, "ram").rule, "TARGET_BITMAP_EXISTS");
      assert.equal(row(p.plan, "fresh").rule, "node-name");
    });
  });

  it("a busy bitmap (exported over NBD), denied or not, blocks its neighbour; an inconsistent one too", async () => {
    await withLab(async (lab) => {
      const pair = await S.busyAndInconsistent.setup(lab, qp.options);
      const p = await plan(lab, pair, { deny: ["exported"] });
      assert.equal(p.code, 1);
      assert.equal(row(p.plan, "exported").rule, "BITMAP_BUSY");
      assert.equal(row(p.plan, "stale").rule, "BITMAP_INCONSISTENT");
      assert.equal(row(p.plan, "neighbour").action, "migrate");
      const ok = await plan(lab, pair, { deny: ["disk0/*", "disk1/*"] });
      assert.equal(ok.code, 0);
    });
  });

  it("a read-only backing image with a persistent bitmap is skipped", async () => {
    await withLab(async (lab) => {
      const pair = await S.backingChain.setup(lab, qp.options);
      const p = await plan(lab, pair);
      assert.equal(p.code, 0);
      assert.equal(row(p.plan, "base-bm").rule, "read-only-node");
    });
  });

  it("a bitmap name of 512 characters plans with a short alias", async () => {
    await withLab(async (lab) => {
      const pair = await S.longName.setup(lab, qp.options);
      const p = await plan(lab, pair);
      assert.equal(p.code, 0);
      assert.equal(p.plan.bitmaps[0]?.source.bitmap.length, 512);
      assert.equal(p.plan.mapping.source[0]?.bitmaps[0]?.alias, "b0");
    });
  });

  it("a drive with an explicit node-name whose destination has only the node-name", async () => {
    await withLab(async (lab) => {
      const pair = await S.driveWithNodeName.setup(lab, qp.options);
      const p = await plan(lab, pair);
      assert.equal(p.code, 0);
      assert.equal(row(p.plan, "bm0").rule, "node-name");
    });
  });

  it("human output shows the table, errors with fixes and the payload", async () => {
    await withLab(async (lab) => {
      const pair = await S.driveMirror.setup(lab, qp.options);
      const r = await runCli([
        "plan",
        "--source",
        pair.source.monitorSocket,
        "--dest",
        pair.destination.monitorSocket,
      ]);
      assert.equal(r.code, 1);
      assert.match(r.stdout, /bm0 .*migrate .*drive-name/);
      assert.match(r.stdout, /UNADDRESSABLE .*onfile: .*deny: \[onfile\]/);
      assert.match(r.stdout, /Bitmap payload: .* at 1 Gbit\/s, .* at 10 Gbit\/s/);
      assert.equal(r.stderr, "");
    });
  });

  it("exit 2 for a bad policy file, 3 for an unreachable monitor (real process)", async () => {
    await withLab(async (lab) => {
      const pair = await S.longName.setup(lab, qp.options);
      const bad = policyFile(lab, { deny: "tmp-*" });
      const r2 = await spawnCli([
        "plan",
        "--source",
        pair.source.monitorSocket,
        "--dest",
        pair.destination.monitorSocket,
        "--policy",
        bad,
      ]);
      assert.equal(r2.code, 2);
      assert.match(r2.stderr, /policy-\d+\.json: deny: expected a list of patterns/);
      const missing = await spawnCli([
        "plan",
        "--source",
        pair.source.monitorSocket,
        "--dest",
        pair.destination.monitorSocket,
        "--policy",
        lab.path("nope.yaml"),
      ]);
      assert.equal(missing.code, 2);
      assert.match(missing.stderr, /nope\.yaml: cannot read policy file: no such file/);
      const r3 = await spawnCli([
        "plan",
        "--source",
        lab.path("gone.sock"),
        "--dest",
        pair.destination.monitorSocket,
        "--json",
      ]);
      assert.equal(r3.code, 3);
      const doc = r3.json() as { ok: boolean; error: { code: string; message: string } };
      assert.equal(doc.ok, false);
      assert.equal(doc.error.code, "QMP_ERR_CONNECT");
      assert.match(doc.error.message, /gone\.sock/);
      const usage = await spawnCli(["plan", "--source", pair.source.monitorSocket]);
      assert.equal(usage.code, 2);
      assert.match(usage.stderr, /--dest/);
    });
  });
});
