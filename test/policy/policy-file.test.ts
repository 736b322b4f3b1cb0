import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { parsePolicy, PolicyError, MAX_POLICY_BYTES } from "../../src/policy/file.js";
import { compilePattern, matchesPattern } from "../../src/policy/glob.js";

function rejects(text: string, file: string, pattern: RegExp): void {
  assert.throws(
    () => parsePolicy(text, file),
    (e: unknown) => e instanceof PolicyError && pattern.test(e.message),
  );
}

describe("policy file", () => {
  it("parses the YAML of the design, every form of source and target", () => {
    const p = parsePolicy(
      `defaults: true
allow: ["backup-*"]
deny:  ["tmp-*"]
map:
  - source: drive0
    target: disk-b
  - source: { node: fmt0, bitmap: old }
    target: { node: disk-b, bitmap: new, persistent: true, enabled: false }
  - source: { node: scratch, bitmap: tmp }
    target: null
`,
      "policy.yaml",
    );
    assert.equal(p.defaults, true);
    assert.deepEqual(p.allow, ["backup-*"]);
    assert.deepEqual(p.deny, ["tmp-*"]);
    assert.deepEqual(p.map, [
      { index: 0, source: { kind: "node", node: "drive0" }, target: { node: "disk-b" } },
      {
        index: 1,
        source: { kind: "bitmap", node: "fmt0", bitmap: "old" },
        target: { node: "disk-b", bitmap: "new", persistent: true, enabled: false },
      },
      { index: 2, source: { kind: "bitmap", node: "scratch", bitmap: "tmp" }, target: null },
    ]);
  });

  it("parses JSON, and an empty file means every default", () => {
    assert.deepEqual(parsePolicy('{"defaults": false}', "p.json").defaults, false);
    const empty = parsePolicy("", "p.yaml");
    assert.equal(empty.defaults, true);
    assert.equal(empty.allow, undefined);
    assert.deepEqual(empty.map, []);
  });

  it("names the file, the key path and what was expected", () => {
    rejects(
      "defaults: yes-please\n",
      "p.yaml",
      /^p\.yaml: defaults: expected true or false, got the string "yes-please"$/,
    );
    rejects("deny: tmp-*\n", "p.yaml", /^p\.yaml: deny: expected a list of patterns/);
    rejects("allow: [1]\n", "p.yaml", /^p\.yaml: allow\[0\]: expected a glob pattern/);
    rejects(
      "map:\n  - source: a\n    target: { node: b, persistent: 1 }\n",
      "p.yaml",
      /map\[0\]\.target\.persistent: expected true or false, got number 1/,
    );
    rejects(
      "map:\n  - source: a\n",
      "p.yaml",
      /map\[0\]\.target: expected a destination node name.*or null to drop, got nothing/,
    );
    rejects("map:\n  - target: a\n", "p.yaml", /map\[0\]\.source: expected/);
    rejects(
      "map:\n  - source: { node: '' }\n    target: b\n",
      "p.yaml",
      /map\[0\]\.source\.node: expected a node or drive name \(a non-empty string\)/,
    );
  });

  it("rejects unknown keys instead of ignoring them", () => {
    rejects(
      "denny: [x]\n",
      "p.yaml",
      /^p\.yaml: denny: unknown key \(allowed here: defaults, allow, deny, map\)$/,
    );
    rejects(
      "map:\n  - source: { node: a, bitmapp: b }\n    target: c\n",
      "p.yaml",
      /map\[0\]\.source\.bitmapp: unknown key/,
    );
  });

  it("refuses a rename on a per-node entry", () => {
    rejects(
      "map:\n  - source: drive0\n    target: { node: b, bitmap: x }\n",
      "p.yaml",
      /map\[0\]\.target\.bitmap: a rename needs a per-bitmap source/,
    );
  });

  it("reports YAML and JSON syntax errors with the file name", () => {
    rejects("map: [\n", "p.yaml", /^p\.yaml: not valid YAML/);
    rejects("{", "p.json", /^p\.json: not valid JSON/);
    rejects("a: 1\na: 2\n", "p.yaml", /not valid YAML: Map keys must be unique at line 2, column 1$/);
  });

  it("bounds YAML alias expansion (billion laughs) and file size", () => {
    const lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"];
    for (let i = 1; i < 12; i++)
      lines.push(
        `a${i}: &a${i} [${Array(10)
          .fill(`*a${i - 1}`)
          .join(", ")}]`,
      );
    lines.push("deny: *a11");
    rejects(lines.join("\n"), "bomb.yaml", /alias|Excessive|unknown key/i);
    rejects(`deny: ["${"x".repeat(MAX_POLICY_BYTES)}"]`, "big.yaml", /larger than/);
  });
});

describe("patterns", () => {
  it("matches globs on the bitmap name", () => {
    const p = compilePattern("backup-*");
    assert.ok(matchesPattern(p, ["disk0"], "backup-1"));
    assert.ok(matchesPattern(p, ["disk0"], "backup-"));
    assert.ok(!matchesPattern(p, ["disk0"], "xbackup-1"));
    assert.ok(matchesPattern(compilePattern("b?"), ["n"], "b1"));
    assert.ok(!matchesPattern(compilePattern("b?"), ["n"], "b12"));
    assert.ok(matchesPattern(compilePattern("a.b+c(d)"), ["n"], "a.b+c(d)"), "regex characters are literal");
    assert.ok(!matchesPattern(compilePattern("a.b"), ["n"], "axb"));
  });

  it("matches NODE/BITMAP against the node-name or a drive name", () => {
    const p = compilePattern("drive*/tmp-*");
    assert.ok(matchesPattern(p, ["#block123", "drive0"], "tmp-1"));
    assert.ok(!matchesPattern(p, ["#block123"], "tmp-1"));
    assert.ok(!matchesPattern(p, ["drive0"], "backup"));
    // The first slash separates: a bitmap name may contain more.
    assert.ok(matchesPattern(compilePattern("n/a/b"), ["n"], "a/b"));
  });
});
