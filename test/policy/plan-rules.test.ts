import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { codes, loadFixture, planFixture, row } from "../helpers/fixtures.js";
import { buildGraph } from "../../src/graph/build.js";
import type { Plan } from "../../src/policy/types.js";
import { validateMapping } from "../../src/mapping/validate.js";

describe("graph from real replies", () => {
  it("sees the drive root through a running mirror's mirror_top filter", () => {
    const f = loadFixture("drive-mirror");
    const g = buildGraph(f.source);
    const d = g.drives.find((x) => x.name === "drive0");
    assert.ok(d);
    const root = g.nodes.find((n) => n.name === d.root);
    const driveRoot = g.nodes.find((n) => n.name === d.driveRoot);
    assert.equal(root?.driver, "mirror_top");
    assert.equal(root.filtered, driveRoot?.name);
    assert.equal(driveRoot?.driver, "qcow2");
    assert.ok(driveRoot.generated);
    assert.deepEqual(driveRoot.bitmaps.map((b) => b.name).sort(), ["backup-1", "bm0"]);
    assert.equal(driveRoot.anonymousBitmaps, 1, "the mirror job's own bitmap is anonymous");
  });

  it("reads bitmaps stored in an inactive destination's image", () => {
    const g = buildGraph(loadFixture("destination-existing").destination);
    const disk = g.nodes.find((n) => n.name === "disk0");
    assert.equal(g.runState, "inmigrate");
    assert.deepEqual(disk?.storedBitmaps, [{ name: "stored", granularity: 65536, inUse: false, auto: true }]);
    assert.deepEqual(
      disk.bitmaps.map((b) => b.name),
      ["ram"],
    );
    assert.ok(disk.canStoreBitmaps);
  });

  it("marks persistent bitmaps of a read-only backing node read-only", () => {
    const g = buildGraph(loadFixture("backing-chain").source);
    const base = g.nodes.find((n) => n.name === "base0");
    assert.ok(base?.readOnly);
    assert.equal(base.bitmaps[0]?.readOnly, true);
    const top = g.nodes.find((n) => n.name === "disk0");
    assert.deepEqual(top?.children.find((c) => c.role === "backing")?.node, "base0");
  });
});

describe("decision rules", () => {
  it("drive-name: a -drive bitmap under a mirror goes to the destination drive's root", () => {
    const { plan } = planFixture("drive-mirror", { policy: { deny: ["onfile"] } });
    assert.ok(plan.ok, JSON.stringify(plan.errors));
    const b = row(plan, "bm0");
    assert.equal(b.action, "migrate");
    assert.equal(b.rule, "drive-name");
    assert.equal(b.source.drive, "drive0");
    assert.equal(b.target?.drive, "drive0");
    assert.ok(b.target.node.startsWith("#"));
    assert.equal(row(plan, "onfile").rule, "deny");
    // The mapping names the real nodes, generated names included, under clean aliases.
    assert.equal(plan.mapping.source[0]?.["node-name"], b.source.node);
    assert.equal(plan.mapping.destination[0]?.["node-name"], b.target.node);
    assert.equal(validateMapping(plan.mapping.source), undefined);
  });

  it("node-name: equal -blockdev node-names match", () => {
    const { plan } = planFixture("blockdev-same");
    assert.ok(plan.ok);
    for (const b of plan.bitmaps) {
      assert.equal(b.rule, "node-name");
      assert.equal(b.target?.node, b.source.node);
      assert.equal(b.target.persistent, b.source.persistent);
      assert.equal(b.target.enabled, b.source.recording);
    }
    assert.equal(row(plan, "backup-c").target?.enabled, false, "a disabled bitmap stays disabled");
  });

  it("node-name: a drive root found on the destination only by its explicit node-name", () => {
    const { plan } = planFixture("drive-node-name");
    const b = row(plan, "bm0");
    assert.equal(b.source.drive, "drive0");
    assert.equal(b.rule, "node-name");
    assert.equal(b.target?.node, "fmt0");
    assert.ok(plan.ok);
  });

  it("map: per-node entries send a node's bitmaps to a differently named node", () => {
    const { plan } = planFixture("blockdev-renamed", {
      policy: {
        map: [
          { source: "disk0", target: "vda" },
          { source: "disk1", target: "vdb" },
        ],
      },
    });
    assert.ok(plan.ok, JSON.stringify(plan.errors));
    assert.equal(row(plan, "backup-0").rule, "map");
    assert.equal(row(plan, "backup-0").target?.node, "vda");
    assert.equal(row(plan, "backup-1").target?.node, "vdb");
    const src = plan.mapping.source.find((m) => m["node-name"] === "disk0");
    const dst = plan.mapping.destination.find((m) => m["node-name"] === "vda");
    assert.equal(src?.alias, dst?.alias);
    assert.deepEqual(
      src?.bitmaps.map((b) => b.name),
      dst?.bitmaps.map((b) => b.name),
    );
  });

  it("map: a per-bitmap entry renames, changes persistence and enabled state, and beats a per-node entry", () => {
    const { plan } = planFixture("blockdev-renamed", {
      policy: {
        map: [
          { source: "disk0", target: "vda" },
          {
            source: { node: "disk0", bitmap: "old" },
            target: { node: "vda", bitmap: "new", persistent: true, enabled: false },
          },
          { source: "disk1", target: "vdb" },
        ],
      },
    });
    assert.ok(plan.ok, JSON.stringify(plan.errors));
    const b = row(plan, "old");
    assert.deepEqual(b.target, { node: "vda", drive: null, bitmap: "new", persistent: true, enabled: false });
    const srcNode = plan.mapping.source.find((m) => m["node-name"] === "disk0");
    const dstNode = plan.mapping.destination.find((m) => m["node-name"] === "vda");
    const s = srcNode?.bitmaps.find((x) => x.name === "old");
    const d = dstNode?.bitmaps.find((x) => x.alias === s?.alias);
    assert.equal(d?.name, "new");
    assert.deepEqual(d.transform, { persistent: true });
    assert.deepEqual(s?.transform, { persistent: true });
    // An unchanged bitmap carries no transform.
    assert.equal(srcNode?.bitmaps.find((x) => x.name === "backup-0")?.transform, undefined);
  });

  it("map-drop: target null drops even what allow would take", () => {
    const { plan } = planFixture("blockdev-same", {
      policy: {
        allow: ["*"],
        map: [
          { source: "disk1", target: null },
          { source: { node: "disk0", bitmap: "tmp-x" }, target: null },
        ],
      },
    });
    assert.equal(row(plan, "backup-c").rule, "map-drop");
    assert.equal(row(plan, "tmp-y").rule, "map-drop");
    assert.equal(row(plan, "tmp-x").rule, "map-drop");
    assert.equal(row(plan, "backup-a").action, "migrate");
    assert.ok(
      plan.mapping.source.every((m) => m["node-name"] !== "disk1"),
      "a dropped node is kept out of QEMU's view",
    );
  });

  it("deny and not-allowed, with globs and NODE/BITMAP patterns", () => {
    const { plan } = planFixture("blockdev-same", {
      policy: { allow: ["backup-*", "disk1/tmp-?"], deny: ["disk0/backup-b"] },
    });
    assert.equal(row(plan, "backup-a").action, "migrate");
    assert.equal(row(plan, "backup-b").rule, "deny");
    assert.equal(row(plan, "tmp-x").rule, "not-allowed");
    assert.equal(row(plan, "tmp-y").action, "migrate");
    assert.equal(row(plan, "backup-c").action, "migrate");
  });

  it("deny matches a drive name in NODE/BITMAP patterns", () => {
    const { plan } = planFixture("drive-mirror", { policy: { deny: ["drive0/bm*", "onfile"] } });
    assert.equal(row(plan, "bm0").rule, "deny");
    assert.equal(row(plan, "backup-1").action, "migrate");
  });

  it("allow and deny still filter a per-node map entry", () => {
    const { plan } = planFixture("blockdev-renamed", {
      policy: {
        deny: ["old"],
        allow: ["backup-0", "old"],
        map: [
          { source: "disk0", target: "vda" },
          { source: "disk1", target: "vdb" },
        ],
      },
    });
    assert.equal(row(plan, "old").rule, "deny");
    assert.equal(row(plan, "backup-1").rule, "not-allowed");
    assert.equal(row(plan, "backup-0").rule, "map");
  });

  it("read-only-node: a backing image's bitmap stays in the image and out of QEMU's view", () => {
    const { plan } = planFixture("backing-chain");
    assert.ok(plan.ok);
    assert.equal(row(plan, "base-bm").rule, "read-only-node");
    assert.equal(row(plan, "top-bm").rule, "node-name");
    assert.ok(plan.mapping.source.every((m) => m["node-name"] !== "base0"));
  });

  it("a throttle filter above a named node does not hide it", () => {
    const { plan } = planFixture("throttle");
    assert.ok(plan.ok);
    assert.equal(row(plan, "pbs").target?.node, "fmt0");
  });
});

describe("plan errors", () => {
  it("UNADDRESSABLE on a generated node-name, resolved by deny, then by map", () => {
    const bad = planFixture("drive-mirror").plan;
    assert.deepEqual(codes(bad), ["UNADDRESSABLE"]);
    const e = row(bad, "onfile");
    assert.equal(e.action, "error");
    assert.equal(e.rule, "UNADDRESSABLE");
    const message = e.errors[0]?.message ?? "";
    assert.equal(e.errors[0]?.bitmap, "onfile");
    assert.match(message, /deny: \[onfile\]/);
    assert.match(message, /map it explicitly/);
    assert.deepEqual(bad.errors[0], e.errors[0], "the same error in the row and at the top");

    assert.ok(planFixture("drive-mirror", { policy: { deny: ["onfile"] } }).plan.ok);

    const node = e.source.node;
    const f = loadFixture("drive-mirror");
    const dstFile = buildGraph(f.destination).nodes.find((n) => n.driver === "file")?.name;
    assert.ok(dstFile);
    // Protocol nodes are as large as their file, which differs between the sides here; equal sizes isolate the rule.
    const mapTo = (parentDriver?: string): Plan =>
      planFixture("drive-mirror", {
        policy: { map: [{ source: { node, bitmap: "onfile" }, target: dstFile }] },
        edit: (fx) => {
          const srcSize =
            fx.source.namedNodes.find((n) => n["node-name"] === node)?.image["virtual-size"] ?? 0;
          const d = fx.destination.namedNodes.find((n) => n["node-name"] === dstFile);
          if (d) d.image["virtual-size"] = srcSize;
          // Every source qcow2 node becomes raw, the protocol node's parent among them.
          if (parentDriver !== undefined)
            for (const n of fx.source.namedNodes) if (n.drv === "qcow2") n.drv = parentDriver;
        },
      }).plan;
    // The file under a writable qcow2 grows during the migration: mapped or not, the plan refuses it.
    const mapped = mapTo();
    assert.deepEqual(codes(mapped), ["SOURCE_NODE_GROWS"]);
    assert.equal(row(mapped, "onfile").target?.node, dstFile);
    assert.match(row(mapped, "onfile").errors[0]?.message ?? "", /deny: \[onfile\]/);
    assert.ok(mapped.warnings.some((w) => w.code === "GENERATED_NODE_NAME_IN_MAP"));
    // Under a raw format node the file keeps its size: the map is all it takes.
    const overRaw = mapTo("raw");
    assert.ok(overRaw.ok, JSON.stringify(overRaw.errors));
    assert.equal(row(overRaw, "onfile").rule, "map");
  });

  it("UNCOVERED: strict mode needs a map entry for every bitmap", () => {
    const { plan } = planFixture("blockdev-same", {
      policy: {
        defaults: false,
        map: [
          { source: "disk0", target: "disk0" },
          { source: { node: "disk1", bitmap: "tmp-y" }, target: null },
        ],
      },
    });
    assert.deepEqual(codes(plan), ["UNCOVERED"]);
    assert.equal(row(plan, "backup-c").rule, "UNCOVERED");
    assert.equal(row(plan, "tmp-y").rule, "map-drop");
    assert.equal(row(plan, "backup-a").rule, "map");
  });

  it("MAP_SOURCE_MISSING: a map entry names a node or bitmap that does not exist", () => {
    const { plan } = planFixture("blockdev-same", {
      policy: {
        map: [
          { source: "nosuch", target: "disk0" },
          { source: { node: "disk0", bitmap: "ghost" }, target: "disk0" },
        ],
      },
    });
    assert.deepEqual(codes(plan), ["MAP_SOURCE_MISSING", "MAP_SOURCE_MISSING"]);
    assert.deepEqual(
      plan.errors.map((e) => [e.node, e.bitmap]),
      [
        ["nosuch", null],
        ["disk0", "ghost"],
      ],
    );
  });

  it("TARGET_NODE_MISSING: no destination node for the default address or for a map target", () => {
    const a = planFixture("blockdev-renamed").plan;
    assert.deepEqual(codes(a), ["TARGET_NODE_MISSING", "TARGET_NODE_MISSING", "TARGET_NODE_MISSING"]);
    assert.match(a.errors[0]?.message ?? "", /it has: .*vd[ab]/);
    const b = planFixture("blockdev-renamed", {
      policy: { map: [{ source: "disk0", target: "vdz" }], deny: ["disk1/*"] },
    }).plan;
    assert.deepEqual(codes(b), ["TARGET_NODE_MISSING", "TARGET_NODE_MISSING"]);
    assert.deepEqual(b.errors[0]?.target, { node: "vdz", bitmap: b.errors[0]?.bitmap });
  });

  it("TARGET_TOO_SMALL and TARGET_SIZE_MISMATCH", () => {
    const { plan } = planFixture("sizes");
    assert.equal(row(plan, "bm", "small").rule, "TARGET_TOO_SMALL");
    assert.equal(row(plan, "bm", "big-bad").rule, "TARGET_SIZE_MISMATCH");
    assert.equal(row(plan, "bm", "big-ok").action, "migrate");
    assert.equal(row(plan, "bm", "same").action, "migrate");
    assert.deepEqual(row(plan, "bm", "small").errors[0]?.target, { node: "small", bitmap: "bm" });
  });

  it("MAPPING_INEXPRESSIBLE: one source node to two destination nodes, and two to one", () => {
    const fanOut = planFixture("blockdev-renamed", {
      policy: {
        map: [
          { source: { node: "disk0", bitmap: "old" }, target: "vdb" },
          { source: "disk0", target: "vda" },
        ],
        deny: ["disk1/*"],
      },
    }).plan;
    assert.deepEqual(codes(fanOut), ["MAPPING_INEXPRESSIBLE", "MAPPING_INEXPRESSIBLE"]);
    const fanIn = planFixture("blockdev-renamed", {
      policy: {
        map: [
          { source: "disk0", target: "vda" },
          { source: "disk1", target: "vda" },
        ],
      },
    }).plan;
    assert.deepEqual(new Set(codes(fanIn)), new Set(["MAPPING_INEXPRESSIBLE"]));
    assert.equal(fanIn.errors.length, 3, "every bitmap involved carries the error");
  });

  it("TARGET_READ_ONLY: a read-only destination node", () => {
    const { plan } = planFixture("backing-chain", {
      policy: { map: [{ source: "disk0", target: "base0" }] },
    });
    assert.deepEqual(codes(plan), ["TARGET_READ_ONLY"]);
  });

  it("TARGET_BITMAP_EXISTS: in the destination's memory, or stored in its image", () => {
    const { plan } = planFixture("destination-existing");
    assert.equal(row(plan, "ram").rule, "TARGET_BITMAP_EXISTS");
    assert.equal(row(plan, "stored").rule, "TARGET_BITMAP_EXISTS");
    assert.match(
      row(plan, "stored").errors[0]?.message ?? "",
      /qemu-img bitmap --remove .*dst\.qcow2 stored/,
    );
    assert.equal(row(plan, "fresh").action, "migrate");
    const renamed = planFixture("destination-existing", {
      policy: {
        map: [
          { source: { node: "disk0", bitmap: "ram" }, target: { node: "disk0", bitmap: "ram-2" } },
          { source: { node: "disk0", bitmap: "stored" }, target: { node: "disk0", bitmap: "stored-2" } },
        ],
      },
    }).plan;
    assert.ok(renamed.ok, JSON.stringify(renamed.errors));
  });

  it("an in-use stored copy of the same persistent bitmap (shared storage) is not a conflict", () => {
    const { plan } = planFixture("drive-mirror", { policy: { deny: ["onfile"] } });
    // The destination opens the same image, which shows the source's persistent bitmap flagged in-use.
    assert.equal(row(plan, "backup-1").action, "migrate");
  });

  it("TARGET_CONFLICT: two bitmaps onto one destination name", () => {
    const { plan } = planFixture("blockdev-same", {
      policy: {
        map: [{ source: { node: "disk0", bitmap: "tmp-x" }, target: { node: "disk0", bitmap: "backup-a" } }],
      },
    });
    assert.deepEqual(codes(plan), ["TARGET_CONFLICT", "TARGET_CONFLICT"]);
    assert.equal(row(plan, "tmp-x").rule, "TARGET_CONFLICT");
    assert.equal(row(plan, "backup-a").rule, "TARGET_CONFLICT");
  });

  it("BITMAP_BUSY and BITMAP_INCONSISTENT block their node's neighbours, even when skipped", () => {
    const all = planFixture("busy-inconsistent").plan;
    assert.deepEqual(codes(all), ["BITMAP_BUSY", "BITMAP_INCONSISTENT"]);
    assert.match(row(all, "exported").errors[0]?.message ?? "", /blocks 'neighbour'.*deny: \['disk0\/\*'\]/);

    const denied = planFixture("busy-inconsistent", { policy: { deny: ["exported", "stale"] } }).plan;
    assert.deepEqual(codes(denied), ["BITMAP_BUSY", "BITMAP_INCONSISTENT"]);
    assert.equal(row(denied, "exported").action, "error", "a denied blocker still carries its error");

    const nodesDenied = planFixture("busy-inconsistent", { policy: { deny: ["disk0/*", "disk1/*"] } }).plan;
    assert.ok(nodesDenied.ok, JSON.stringify(nodesDenied.errors));
    assert.equal(row(nodesDenied, "exported").rule, "deny");
  });

  it("BITMAP_READ_ONLY: a map entry sends a backing image's bitmap", () => {
    const { plan } = planFixture("backing-chain", {
      policy: { map: [{ source: { node: "base0", bitmap: "base-bm" }, target: "disk0" }] },
    });
    assert.ok(codes(plan).includes("BITMAP_READ_ONLY"));
    assert.equal(row(plan, "base-bm").rule, "BITMAP_READ_ONLY");
  });

  it("NAME_TOO_LONG: a target name over 1023 bytes; 512 characters are fine", () => {
    const long = "L".repeat(512);
    const ok = planFixture("long-name").plan;
    assert.ok(ok.ok);
    const alias = ok.mapping.source[0]?.bitmaps[0]?.alias ?? "";
    assert.ok(alias.length < 10, "the wire carries a short alias, not the 512-byte name");
    const bad = planFixture("long-name", {
      policy: {
        map: [
          { source: { node: "disk0", bitmap: long }, target: { node: "disk0", bitmap: "x".repeat(1100) } },
        ],
      },
    }).plan;
    assert.deepEqual(codes(bad), ["NAME_TOO_LONG"]);
  });

  it("PERSISTENCE_UNSUPPORTED, and persistent: false accepts the loss", () => {
    const bad = planFixture("raw-destination").plan;
    assert.deepEqual(codes(bad), ["PERSISTENCE_UNSUPPORTED"]);
    const ok = planFixture("raw-destination", {
      policy: {
        map: [{ source: { node: "disk0", bitmap: "keep" }, target: { node: "disk0", persistent: false } }],
      },
    }).plan;
    assert.ok(ok.ok, JSON.stringify(ok.errors));
    assert.deepEqual(ok.mapping.destination[0]?.bitmaps[0]?.transform, { persistent: false });
  });

  it("QEMU_UNSUPPORTED: a persistence change without mapping transforms on either side", () => {
    const { plan } = planFixture("raw-destination", {
      policy: {
        map: [{ source: { node: "disk0", bitmap: "keep" }, target: { node: "disk0", persistent: false } }],
      },
      edit: (f) => {
        f.source.features.mappingTransform = false;
        f.destination.features.mappingTransform = false;
      },
    });
    assert.deepEqual(codes(plan), ["QEMU_UNSUPPORTED"]);
    const old = planFixture("blockdev-same", {
      edit: (f) => {
        f.destination.features.bitmapMapping = false;
      },
    }).plan;
    assert.deepEqual(codes(old), ["QEMU_UNSUPPORTED"]);
    assert.equal(old.errors[0]?.node, null);
  });

  it("POSTCOPY_UNSAFE: --postcopy with bitmaps on more than one node; one node is fine", () => {
    const multi = planFixture("blockdev-same", { postcopy: true }).plan;
    assert.deepEqual(codes(multi), ["POSTCOPY_UNSAFE"]);
    assert.equal(multi.errors[0]?.bitmap, null);
    const single = planFixture("blockdev-same", { postcopy: true, policy: { deny: ["disk1/*"] } }).plan;
    assert.ok(single.ok);
  });

  it("DESTINATION_NOT_INCOMING: a destination that is not waiting for a migration", () => {
    const { plan } = planFixture("blockdev-same", {
      edit: (f) => {
        f.destination.runState = "running";
      },
    });
    assert.deepEqual(codes(plan), ["DESTINATION_NOT_INCOMING"]);
  });
});

describe("payload and warnings", () => {
  it("payloadBytes sums ceil(size / granularity / 8) over migrating bitmaps", () => {
    const { plan } = planFixture("blockdev-same", { policy: { deny: ["tmp-*"] } });
    const MiB64 = 64 * 1024 * 1024;
    assert.equal(plan.payloadBytes, MiB64 / 65536 / 8 + MiB64 / 4096 / 8 + MiB64 / 65536 / 8);
  });

  it("warns PRECOPY_MAY_NOT_CONVERGE when the payload exceeds what QEMU can send within downtime-limit", () => {
    const big = planFixture("blockdev-same", {
      edit: (f) => {
        for (const side of [f.source, f.destination])
          for (const n of side.namedNodes) n.image["virtual-size"] = 64 * 1024 ** 3;
      },
    }).plan;
    const w = big.warnings.find((x) => x.code === "PRECOPY_MAY_NOT_CONVERGE");
    assert.ok(w, JSON.stringify(big.warnings));
    assert.match(w.message, /--max-downtime \d+/);
    assert.ok(!planFixture("blockdev-same").plan.warnings.some((x) => x.code === "PRECOPY_MAY_NOT_CONVERGE"));
  });
});
