import { strict as assert } from "node:assert";
import { describe, it } from "node:test";
import Table from "cli-table3";
import pc from "picocolors";
import { renderTable } from "../../src/cli/render/table.js";

/** What cli-table3 draws as one table: the text renderTable must give. */
function oneTable(head: string[], rows: string[][], wordWrap = true): string {
  const t = new Table({ head, style: { head: [], border: [] }, wordWrap });
  t.push(...rows);
  return t.toString();
}

const colors = pc.createColors(true);
const HEAD = ["source", "bitmap", "action", "note"];

function rows(n: number, wideAt: number): string[][] {
  return Array.from({ length: n }, (_, i) => [
    `drive${i}`,
    i === wideAt ? "a-much-longer-bitmap-name-than-the-others" : `bm${i % 7}`,
    i % 3 === 0 ? colors.green("migrate") : colors.red("error"),
    // Wide characters count twice, combining ones not at all, as in cli-table3's own widths; a line break makes
    // a row of two lines; a tab and a foreign colour code are what they are to cli-table3.
    i % 50 === 0
      ? "中文 note with spaces"
      : i % 37 === 0
        ? "two\nlines"
        : i % 41 === 0
          ? "tab\there"
          : i % 43 === 0
            ? "e\u0301 combined"
            : i % 47 === 0
              ? "\u001b[1;31mbold red\u001b[0m"
              : "",
  ]);
}

describe("renderTable", () => {
  it("draws what cli-table3 draws as one table, at every size around its part boundaries", () => {
    for (const n of [0, 1, 99, 100, 101, 199, 200, 201, 350]) {
      for (const wideAt of [0, n - 1, Math.floor(n / 2)]) {
        const r = rows(n, wideAt);
        assert.equal(renderTable(HEAD, r), oneTable(HEAD, r), `${n} rows, widest at ${wideAt}`);
      }
    }
  });

  it("without word wrap (inspect's table), with a coloured header", () => {
    const head = HEAD.map((h) => colors.bold(h));
    for (const n of [50, 101, 260]) {
      const r = rows(n, n - 3);
      assert.equal(renderTable(head, r, { wordWrap: false }), oneTable(head, r, false), `${n} rows`);
    }
  });

  it("ASCII rows only, and a header that is not ASCII", () => {
    const r = Array.from({ length: 230 }, (_, i) => [`n${i}`, "x".repeat(i % 13), colors.dim("skip"), ""]);
    assert.equal(renderTable(HEAD, r), oneTable(HEAD, r));
    const head = ["sourcé", "b", "c", "d"];
    assert.equal(renderTable(head, r), oneTable(head, r));
  });

  it("a column whose widest cell is the header stays as wide as the header", () => {
    const r = Array.from({ length: 250 }, (_, i) => [String(i), "x", "y", "z"]);
    const head = ["a-very-long-header", "b", "c", "d"];
    assert.equal(renderTable(head, r), oneTable(head, r));
  });

  it("20,000 rows (a 2,000-disk plan) are drawn, every line as wide as the borders", () => {
    const r = Array.from({ length: 20_000 }, (_, i) => [`drive${i}`, `bm${i % 10}`, "migrate", ""]);
    const lines = renderTable(HEAD, r).split("\n");
    // top border, header, its rule, then each row and the rule after it, the last one the bottom border.
    assert.equal(lines.length, 3 + 2 * 20_000);
    assert.ok(lines.every((l) => l.length === (lines[0] ?? "").length));
  });
});
