import { mkdtemp, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import assert from "node:assert/strict";
import fc from "fast-check";
import { stringify } from "yaml";
import { MAX_POLICY_BYTES, parsePolicy, PolicyError } from "../../src/policy/file.js";
import type { Policy } from "../../src/policy/types.js";
import { runCli } from "../helpers/cli.js";
import { toJson } from "./checks.js";
import {
  hasStackTrace,
  property,
  within,
  type HostileOptions,
  type HostileReport,
} from "./hostile-common.js";

/**
 * Hostile policy files: structure-aware documents (valid ones compared with what they say, invalid ones), YAML
 * token soup, alias bombs, deep nesting, huge files, and the CLI reading them. The only outcomes allowed: a
 * policy, or a PolicyError (POLICY_INVALID, exit status 2) naming the file; never a crash, a hang or a memory blowup.
 */

const PARSE_BOUND_MS = 3000;

/** Parses and checks the outcome: a well-formed Policy or a PolicyError that names the file. */
function parseChecked(text: string, file: string): Policy | PolicyError {
  let p: Policy;
  try {
    p = parsePolicy(text, file);
  } catch (err) {
    if (!(err instanceof PolicyError)) throw new Error(`not a PolicyError: ${String(err)}`, { cause: err });
    assert.equal(err.code, "POLICY_INVALID");
    assert.ok(
      err.message.startsWith(`${file}: `),
      `the message names the file: ${err.message.slice(0, 100)}`,
    );
    return err;
  }
  assert.equal(typeof p.defaults, "boolean");
  assert.equal(Object.getPrototypeOf(p), Object.prototype);
  for (const list of [p.allow ?? [], p.deny]) {
    assert.ok(Array.isArray(list));
    for (const s of list) assert.ok(typeof s === "string" && s !== "");
  }
  p.map.forEach((e, i) => {
    assert.equal(e.index, i);
    assert.ok(typeof e.source.node === "string" && e.source.node !== "");
    if (e.source.kind === "bitmap") assert.ok(typeof e.source.bitmap === "string" && e.source.bitmap !== "");
    if (e.target !== null) {
      assert.ok(typeof e.target.node === "string" && e.target.node !== "");
      for (const k of ["persistent", "enabled"] as const) {
        const v = e.target[k];
        assert.ok(v === undefined || typeof v === "boolean");
      }
    }
  });
  return p;
}

const name = fc.oneof(
  fc.constantFrom("drive0", "disk0", "#block123", "backup-*", "a/b", "ünï", "x".repeat(300)),
  fc.string({ minLength: 1, maxLength: 12 }),
);
const anything = fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.constant(undefined));
const maybe = <T>(a: fc.Arbitrary<T>): fc.Arbitrary<unknown> =>
  fc.oneof({ weight: 5, arbitrary: a }, { weight: 1, arbitrary: anything });

/** A policy document that is valid by construction, and what parsing it must give. */
const validDoc = fc
  .record(
    {
      defaults: fc.boolean(),
      allow: fc.array(name, { maxLength: 4 }),
      deny: fc.array(name, { maxLength: 4 }),
      map: fc.array(
        fc.oneof(
          fc.record({ source: name, target: fc.oneof(name, fc.constant(null)) }),
          fc.record({
            source: fc.record({ node: name, bitmap: name }),
            target: fc.oneof(
              fc.constant(null),
              name,
              fc.record(
                { node: name, bitmap: name, persistent: fc.boolean(), enabled: fc.boolean() },
                { requiredKeys: ["node"] },
              ),
            ),
          }),
        ),
        { maxLength: 5 },
      ),
    },
    { requiredKeys: [] },
  )
  .map((doc) => doc as Record<string, unknown>);

/** Anything shaped roughly like a policy: right keys with wrong values, unknown keys, wrong nesting. */
const sloppyDoc = fc.oneof(
  fc.record(
    {
      defaults: maybe(fc.boolean()),
      allow: maybe(fc.array(maybe(name))),
      deny: maybe(fc.array(maybe(name))),
      map: maybe(
        fc.array(
          maybe(
            fc.record(
              {
                source: maybe(fc.oneof(name, fc.record({ node: maybe(name), bitmap: maybe(name) }))),
                target: maybe(
                  fc.oneof(
                    name,
                    fc.constant(null),
                    fc.record({
                      node: maybe(name),
                      bitmap: maybe(name),
                      persistent: maybe(fc.boolean()),
                      enabled: maybe(fc.boolean()),
                    }),
                  ),
                ),
                extra: anything,
              },
              { requiredKeys: [] },
            ),
          ),
        ),
      ),
      denny: anything,
    },
    { requiredKeys: [] },
  ),
  fc.jsonValue({ maxDepth: 4 }),
);

function expectedPolicy(doc: Record<string, unknown>): unknown {
  const map = (doc.map as { source: unknown; target: unknown }[] | undefined) ?? [];
  return {
    defaults: doc.defaults ?? true,
    allow: doc.allow,
    deny: doc.deny ?? [],
    map: map.map((e, index) => {
      const source =
        typeof e.source === "string"
          ? { kind: "node", node: e.source }
          : { kind: "bitmap", ...(e.source as { node: string; bitmap: string }) };
      let target: unknown = e.target;
      if (typeof e.target === "string") target = { node: e.target };
      else if (e.target !== null && typeof e.target === "object") {
        const t = e.target as Record<string, unknown>;
        target = Object.fromEntries(
          ["node", "bitmap", "persistent", "enabled"].filter((k) => t[k] !== undefined).map((k) => [k, t[k]]),
        );
      }
      return { index, source, target };
    }),
  };
}

/** YAML's syntax, to be thrown together at random. */
const TOKENS = [
  "defaults",
  "allow",
  "deny",
  "map",
  "source",
  "target",
  "node",
  "bitmap",
  ": ",
  ":",
  "- ",
  "? ",
  "\n",
  "\r\n",
  "  ",
  "\t",
  "[",
  "]",
  "{",
  "}",
  ", ",
  "&a ",
  "*a",
  "&b ",
  "*b",
  "<<: ",
  "!!str ",
  "!!binary ",
  "!tag ",
  "!!map ",
  "%YAML 1.1\n",
  "%TAG ! tag:x,2000:\n",
  "---\n",
  "...\n",
  "|\n",
  ">-\n",
  "# c\n",
  '"',
  "'",
  "\\",
  "null",
  "~",
  "true",
  "yes",
  "0x1f",
  "1e309",
  "-.inf",
  ".nan",
  "\u0000",
  "\ufeff",
  "\ud800",
  "ünï",
  "drive0",
  "x",
];
const soup = fc.array(fc.constantFrom(...TOKENS), { maxLength: 60 }).map((t) => t.join(""));

/** Billion laughs and its relatives: each anchor refers to the previous one `breadth` times. */
const bomb = fc
  .record({
    depth: fc.integer({ min: 1, max: 40 }),
    breadth: fc.integer({ min: 1, max: 40 }),
    style: fc.constantFrom("seq", "map", "merge", "self"),
  })
  .map(({ depth, breadth, style }) => {
    const lines: string[] = [];
    if (style === "self") return `a: &a [*a]\ndeny: *a\n`;
    lines.push(style === "seq" ? "a0: &a0 [x]" : "a0: &a0 {x: 1}");
    for (let i = 1; i < depth; i++) {
      const refs = Array.from({ length: breadth }, () => `*a${i - 1}`);
      if (style === "seq") lines.push(`a${i}: &a${i} [${refs.join(", ")}]`);
      else if (style === "map") lines.push(`a${i}: &a${i} {${refs.map((r, j) => `k${j}: ${r}`).join(", ")}}`);
      else lines.push(`a${i}: &a${i} {<<: [${refs.join(", ")}], y${i}: 1}`);
    }
    lines.push(`deny: *a${depth - 1}`);
    return lines.join("\n");
  });

/** Deep nesting of every kind the grammar has, up to the size limit. */
const deep = fc
  .record({
    n: fc.integer({ min: 50, max: 200_000 }),
    style: fc.constantFrom("[", "{a: ", "- ", "indent", "- a:\n", "mixed", "json-array", "json-object"),
  })
  .map(({ n, style }) => {
    switch (style) {
      case "indent":
        return {
          file: "p.yaml",
          text: Array.from({ length: Math.min(n, 1400) }, (_, i) => `${" ".repeat(i)}k${i}:`).join("\n"),
        };
      case "- a:\n":
        return {
          file: "p.yaml",
          text: Array.from({ length: Math.min(n, 1400) }, (_, i) => `${" ".repeat(2 * i)}- a:`).join("\n"),
        };
      case "mixed":
        return { file: "p.yaml", text: "deny: " + "[{a: - ".repeat(Math.min(n, 100_000)) };
      case "json-array":
        return { file: "p.json", text: "[".repeat(n) + "]".repeat(n) };
      case "json-object":
        return {
          file: "p.json",
          text: '{"a":'.repeat(Math.min(n, 150_000)) + "1" + "}".repeat(Math.min(n, 150_000)),
        };
      case "[":
      case "{a: ":
      case "- ":
        return {
          file: "p.yaml",
          text: style.repeat(Math.min(n, Math.floor(MAX_POLICY_BYTES / style.length))),
        };
    }
  });

/** Around the size limit: a long but valid deny list, padded to just under or just over. */
const huge = fc
  .record({ over: fc.boolean(), json: fc.boolean(), slack: fc.integer({ min: 0, max: 4096 }) })
  .map(({ over, json, slack }) => {
    const target = over ? MAX_POLICY_BYTES + 1 + slack : MAX_POLICY_BYTES - 64 - slack;
    const entry = json ? '"tmp-0000000000",' : "  - tmp-0000000000\n";
    const head = json ? '{"deny": [' : "deny:\n";
    const tail = json ? '"x"]}' : "  - x\n";
    const count = Math.max(0, Math.floor((target - head.length - tail.length) / entry.length));
    let text = head + entry.repeat(count) + tail;
    if (!json) text += "#".repeat(Math.max(0, target - Buffer.byteLength(text) - 1)) + "\n";
    return { over: Buffer.byteLength(text) > MAX_POLICY_BYTES, file: json ? "p.json" : "p.yaml", text };
  });

export async function fuzzPolicies(o: HostileOptions): Promise<HostileReport[]> {
  const F = "policy file";
  const out: HostileReport[] = [];
  out.push(
    await property(
      F,
      "valid documents (JSON, YAML block and flow) parse to exactly what they say",
      fc.tuple(validDoc, fc.constantFrom("json", "yaml", "flow")),
      ([doc, style]) => {
        const text =
          style === "json"
            ? JSON.stringify(doc)
            : stringify(doc, style === "flow" ? { collectionStyle: "flow" } : {});
        const p = parseChecked(text, style === "json" ? "p.json" : "p.yaml");
        if (p instanceof PolicyError) throw new Error(`a valid policy was refused: ${p.message}\n${text}`);
        assert.deepEqual(JSON.parse(JSON.stringify(p)), JSON.parse(JSON.stringify(expectedPolicy(doc))));
      },
      o,
    ),
  );
  out.push(
    await property(
      F,
      "documents with wrong types, unknown keys and wrong nesting: a policy or POLICY_INVALID",
      fc.tuple(sloppyDoc, fc.boolean()),
      async ([doc, json]) => {
        const text = json ? (toJson(doc) ?? "") : stringify(doc);
        await within(PARSE_BOUND_MS, "parse", () => parseChecked(text, json ? "p.json" : "p.yaml"));
      },
      o,
    ),
  );
  out.push(
    await property(
      F,
      "YAML token soup",
      soup,
      async (text) => {
        await within(PARSE_BOUND_MS, "parse", () => parseChecked(text, "p.yaml"));
      },
      o,
    ),
  );
  out.push(
    await property(
      F,
      "alias bombs: refused fast, memory bounded",
      bomb,
      async (text) => {
        const heap = process.memoryUsage().heapUsed;
        await within(PARSE_BOUND_MS, "parse", () => parseChecked(text, "p.yaml"));
        const grew = process.memoryUsage().heapUsed - heap;
        assert.ok(grew < 256 * 1024 * 1024, `heap grew by ${grew} bytes`);
      },
      { ...o, runs: Math.max(10, Math.floor(o.runs / 3)) },
    ),
  );
  out.push(
    await property(
      F,
      "deep nesting (YAML and JSON): POLICY_INVALID, no stack overflow, and the next parse still works",
      deep,
      async ({ file, text }) => {
        const r = await within(PARSE_BOUND_MS, "parse", () => parseChecked(text, file));
        assert.ok(r instanceof PolicyError, "a deeply nested document is refused");
        // A stack overflow inside the YAML library once left V8 unable to compile regular expressions.
        assert.ok(!(parseChecked("deny: [tmp-*]\n", "p.yaml") instanceof PolicyError));
      },
      { ...o, runs: Math.max(10, Math.floor(o.runs / 3)) },
    ),
  );
  out.push(
    await property(
      F,
      "huge files around the size limit",
      huge,
      async ({ over, file, text }) => {
        const r = await within(10_000, "parse of a 1 MiB file", () => parseChecked(text, file));
        if (over) assert.ok(r instanceof PolicyError && r.message.includes("larger than"), "over the limit");
        else
          assert.ok(
            !(r instanceof PolicyError),
            `under the limit: ${r instanceof PolicyError ? r.message : ""}`,
          );
      },
      { ...o, runs: Math.max(4, Math.floor(o.runs / 30)) },
    ),
  );
  out.push(await cliProperty(o));
  return out;
}

/** The CLI reading hostile policy files: exit 2 with one line (or one JSON document), or 3 for a valid one. */
async function cliProperty(o: HostileOptions): Promise<HostileReport> {
  const dir = await mkdtemp("/tmp/bf-pol-");
  let n = 0;
  try {
    return await property(
      "policy file",
      "bitferry plan --policy FILE: exit 2 (POLICY_INVALID, one line naming the file) or 3 when valid",
      fc.tuple(
        fc.oneof(
          sloppyDoc.map((d) => toJson(d) ?? ""),
          soup,
          bomb,
          deep.map((d) => d.text),
        ),
        fc.boolean(),
        fc.boolean(),
      ),
      async ([text, json, yamlName]) => {
        const file = path.join(dir, `p${n++}.${yamlName ? "yaml" : "json"}`);
        await writeFile(file, text);
        const args = [
          "plan",
          "--source",
          "unix:/nonexistent/src.qmp",
          "--dest",
          "unix:/nonexistent/dst.qmp",
          "--policy",
          file,
        ];
        const r = await within(PARSE_BOUND_MS * 2, "bitferry plan", () =>
          runCli(json ? [...args, "--json"] : args),
        );
        assert.ok(r.code === 2 || r.code === 3, `exit ${r.code}: ${r.stderr}`);
        assert.ok(!hasStackTrace(r.stderr), "no stack trace");
        if (json) {
          const doc = r.json() as { ok: boolean; error: { code: string; message: string } };
          assert.equal(doc.ok, false);
          assert.equal(doc.error.code, r.code === 2 ? "POLICY_INVALID" : "QMP_ERR_CONNECT");
          if (r.code === 2) assert.ok(doc.error.message.startsWith(file));
        } else {
          assert.equal(r.stdout, "");
          assert.equal(r.stderr.trimEnd().split("\n").length, 1, `one line: ${r.stderr}`);
          if (r.code === 2) assert.match(r.stderr, /\[POLICY_INVALID\]/);
        }
      },
      { ...o, runs: Math.max(10, Math.floor(o.runs / 5)) },
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
