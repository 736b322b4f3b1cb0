import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { codes, planFixture, row } from "../helpers/fixtures.js";

const MAP = { map: [{ source: "disk0", target: "vda" }] };

describe("--copy-storage planning", () => {
  it("pairs every disk with a destination node, by drive name or a per-node map entry", () => {
    const { plan } = planFixture("copy-storage", { copyStorage: true, policy: MAP });
    assert.ok(plan.ok, JSON.stringify(plan.errors));
    const disks = plan.disks ?? [];
    assert.deepEqual(
      disks.map((d) => [d.source.drive ?? d.source.node, d.target.drive ?? d.target.node]).sort(),
      [
        ["disk0", "vda"],
        ["drive1", "drive1"],
      ],
    );
    for (const d of disks) assert.equal(d.source.size, d.target.size);
    assert.equal(disks.find((d) => d.source.node === "disk0")?.source.mirrorFrom, "disk0");
  });

  it("merges a backing layer's bitmap into its namesake on the top node, once, persistent on the destination", () => {
    const { plan } = planFixture("copy-storage", { copyStorage: true, policy: MAP });
    const top = row(plan, "daily", "disk0");
    const layer = row(plan, "daily", "base0");
    assert.equal(top.action, "migrate");
    assert.equal(layer.action, "migrate");
    assert.equal(layer.rule, "chain-merge");
    assert.deepEqual(layer.target, top.target, "the same target, which is not a conflict");
    assert.equal(top.target?.persistent, true);
    const merges = plan.merges ?? [];
    const daily = merges.find((m) => m.target?.bitmap === "daily");
    assert.ok(daily);
    assert.equal(daily.node, "disk0");
    assert.deepEqual(daily.bitmaps, [
      { node: "disk0", bitmap: "daily" },
      { node: "base0", bitmap: "daily" },
    ]);
    // The stream carries the temporary, made persistent by the mapping's transform.
    const src = plan.mapping.source.find((m) => m["node-name"] === "disk0");
    const sent = src?.bitmaps.find((b) => b.name === daily.temporary);
    assert.deepEqual(sent?.transform, { persistent: true });
    assert.equal(
      src?.bitmaps.some((b) => b.name === "daily"),
      false,
      "the top's own bitmap is not sent separately",
    );
  });

  it("a name only in backing layers is decided as if on the top node, its per-node map entry included", () => {
    const { plan } = planFixture("copy-storage", { copyStorage: true, policy: MAP });
    const archive = row(plan, "archive", "base0");
    assert.equal(archive.action, "migrate");
    assert.equal(archive.rule, "map");
    assert.equal(archive.target?.node, "vda");
    assert.equal(archive.target.persistent, true);
    assert.ok((plan.merges ?? []).some((m) => m.target?.bitmap === "archive"));
  });

  it("skipping a backing-only name warns that the destination will not have it; skipping the top skips the layer", () => {
    const { plan } = planFixture("copy-storage", {
      copyStorage: true,
      policy: { ...MAP, deny: ["archive", "disk0/daily"] },
    });
    assert.ok(plan.ok, JSON.stringify(plan.errors));
    assert.equal(row(plan, "archive", "base0").rule, "deny");
    assert.ok(plan.warnings.some((w) => w.code === "CHAIN_BITMAP_DROPPED" && w.bitmap === "archive"));
    assert.equal(row(plan, "daily", "base0").action, "skip");
    assert.equal(row(plan, "daily", "base0").rule, "deny");
    assert.deepEqual(plan.merges, []);
  });

  it("without --copy-storage the backing image keeps its bitmaps (read-only-node)", () => {
    const { plan } = planFixture("copy-storage", { policy: MAP });
    assert.equal(row(plan, "daily", "base0").rule, "read-only-node");
    assert.equal(row(plan, "archive", "base0").rule, "read-only-node");
    assert.equal(plan.disks, undefined);
  });

  it("payload counts a merged chain once", () => {
    const { plan } = planFixture("copy-storage", { copyStorage: true, policy: MAP });
    const perBitmap = (64 * 1024 * 1024) / 65536 / 8;
    // daily (merged), hourly, archive (merged), backup
    assert.equal(plan.payloadBytes, 4 * perBitmap);
  });

  it("TARGET_NODE_MISSING for a disk without a counterpart, and equal sizes for the mirror", () => {
    const missing = planFixture("copy-storage", { copyStorage: true });
    assert.ok(
      missing.plan.errors.some(
        (e) => e.code === "TARGET_NODE_MISSING" && e.node === "disk0" && e.bitmap === null,
      ),
    );
    const sized = planFixture("copy-storage", {
      copyStorage: true,
      policy: MAP,
      edit: (f) => {
        const vda = f.destination.namedNodes.find((n) => n["node-name"] === "vda");
        if (vda) vda.image["virtual-size"] += 65536;
      },
    });
    assert.ok(codes(sized.plan).includes("TARGET_SIZE_MISMATCH"));
    assert.match(
      sized.plan.errors.find((e) => e.node === "disk0")?.message ?? "",
      /mirror needs both of the same size/,
    );
  });

  it("a bitmap must land on the copy of its own disk", () => {
    const { plan } = planFixture("copy-storage", {
      copyStorage: true,
      policy: {
        map: [
          { source: "disk0", target: "vda" },
          { source: { node: "disk0", bitmap: "hourly" }, target: "drive1" },
        ],
      },
    });
    assert.equal(row(plan, "hourly", "disk0").rule, "MAPPING_INEXPRESSIBLE");
  });
});
