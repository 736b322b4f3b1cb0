import { strict as assert } from "node:assert";
import { describe, it } from "node:test";
import { discoverBuilds } from "../../src/lab/builds.js";
import { Lab } from "../../src/lab/lab.js";
import { nullBlockdev } from "../../src/lab/topology.js";
import { validateMapping } from "../../src/mapping/validate.js";
import { QmpCommandError } from "../../src/qmp/errors.js";
import type { BitmapAliasMapping } from "../../src/qemu/replies.js";

const node = (name: string, alias: string, bitmaps: [string, string][]): BitmapAliasMapping[number] => ({
  "node-name": name,
  alias,
  bitmaps: bitmaps.map(([n, a]) => ({ name: n, alias: a })),
});
const many = (k: number, alias = (i: number): string => `b${i}`): [string, string][] =>
  Array.from({ length: k }, (_, i) => [`bm${i}`, alias(i)]);

/** Mappings QEMU refuses, each for one reason, with the few- and many-bitmap paths of the duplicate scans. */
const REFUSED: [string, BitmapAliasMapping][] = [
  ["node alias not well-formed", [node("disk0", "0n", [["bm0", "b0"]])]],
  ["node alias too long", [node("disk0", "n".repeat(256), [["bm0", "b0"]])]],
  ["node name too long", [node("d".repeat(32), "n0", [["bm0", "b0"]])]],
  ["node mapped twice", [node("disk0", "n0", [["bm0", "b0"]]), node("disk0", "n1", [["bm1", "b1"]])]],
  ["bitmap alias too long", [node("disk0", "n0", [["bm0", "b".repeat(256)]])]],
  ["bitmap name too long", [node("disk0", "n0", [["m".repeat(1024), "b0"]])]],
  [
    "bitmap mapped twice",
    [
      node("disk0", "n0", [
        ["bm0", "b0"],
        ["bm1", "b1"],
        ["bm0", "b2"],
      ]),
    ],
  ],
  ["bitmap mapped twice (many)", [node("disk0", "n0", [...many(20), ["bm7", "b99"]])]],
  ["node alias used twice", [node("disk0", "n0", [["bm0", "b0"]]), node("disk1", "n0", [["bm0", "b0"]])]],
  [
    "bitmap alias used twice",
    [
      node("disk0", "n0", [
        ["bm0", "b0"],
        ["bm1", "b0"],
      ]),
    ],
  ],
  [
    "bitmap alias used twice (many)",
    [
      node(
        "disk0",
        "n0",
        many(20, (i) => (i === 17 ? "b3" : `b${i}`)),
      ),
    ],
  ],
  [
    "two problems: the first in QEMU's order",
    [
      node("disk0", "n0", [
        ["bm0", "b0"],
        ["bm0", "b".repeat(300)],
      ]),
    ],
  ],
];

const ACCEPTED: [string, BitmapAliasMapping][] = [
  ["one node", [node("disk0", "n0", [["bm0", "b0"]])]],
  ["many bitmaps, two nodes", [node("disk0", "n0", many(20)), node("disk1", "n1", many(3))]],
];

describe("validateMapping against QEMU's own check of block-bitmap-mapping", () => {
  for (const build of discoverBuilds()) {
    it(`${build.label}: refuses what QEMU refuses, with QEMU's words, and accepts what it accepts`, async () => {
      const lab = Lab.create({ build });
      try {
        const vm = await lab.start({
          label: "map",
          args: [...nullBlockdev("disk0", 1 << 20), ...nullBlockdev("disk1", 1 << 20)],
        });
        for (const [what, mapping] of REFUSED) {
          const ours = validateMapping(mapping);
          assert.ok(ours !== undefined, `${what}: accepted`);
          await assert.rejects(
            vm.monitor.setMigrationParameters({ "block-bitmap-mapping": mapping }),
            (e: unknown) =>
              e instanceof QmpCommandError &&
              e.desc === `Invalid mapping given for block-bitmap-mapping: ${ours}`,
            what,
          );
        }
        for (const [what, mapping] of ACCEPTED) {
          assert.equal(validateMapping(mapping), undefined, what);
          await vm.monitor.setMigrationParameters({ "block-bitmap-mapping": mapping });
        }
      } finally {
        await lab.cleanup();
      }
    });
  }

  it("refuses an empty bitmap alias, which QEMU accepts and then fails the migration on, unless not strict", () => {
    const m = [node("disk0", "n0", [["bm0", ""]])];
    assert.match(validateMapping(m) ?? "", /is empty/);
    assert.equal(validateMapping(m, false), undefined);
  });
});
