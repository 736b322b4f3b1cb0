import { Lexer, parseDocument } from "yaml";
import { UsageError } from "../util/errors.js";
import { DEFAULT_POLICY } from "./defaults.js";
import type { MapEntry, MapSource, MapTarget, Policy } from "./types.js";

/** A policy file that cannot be used. The message names the file, the key path and what was expected. */
export class PolicyError extends UsageError {
  override readonly code = "POLICY_INVALID";
}

export { DEFAULT_POLICY };

/** Policy files are small; anything this large is a mistake or an attack. */
export const MAX_POLICY_BYTES = 1024 * 1024;

/**
 * A policy nests a handful of levels and needs few aliases. Deeper documents make the YAML library recurse until
 * the stack overflows (after which V8 has been seen to abort the whole process on a later parse, in its regular
 * expression compiler), and thousands of aliases take it seconds to resolve: both are refused before parsing.
 */
export const MAX_POLICY_NESTING = 200;
export const MAX_POLICY_ALIASES = 256;

/**
 * Parses a policy file's text (JSON or YAML; JSON is YAML). Pure. `file` only labels messages.
 * Unknown keys and wrong types are errors, never ignored: a typo in a deny list must not migrate a bitmap.
 */
export function parsePolicy(text: string, file: string): Policy {
  if (Buffer.byteLength(text) > MAX_POLICY_BYTES) {
    throw new PolicyError(`${file}: policy file larger than ${MAX_POLICY_BYTES} bytes`);
  }
  let data: unknown;
  if (file.endsWith(".json")) {
    try {
      data = JSON.parse(text);
    } catch (err) {
      throw new PolicyError(`${file}: not valid JSON: ${printable((err as Error).message)}`);
    }
    checkStructure(text, file);
    // JSON.parse keeps the last of duplicate keys without a word: `"deny"` twice would drop a deny list.
    const dup = parseDocument(text, { uniqueKeys: true }).errors.find((e) => e.code === "DUPLICATE_KEY");
    if (dup) throw new PolicyError(`${file}: ${printable(oneLine(dup.message))}`);
  } else {
    checkStructure(text, file);
    // logLevel: its warnings (a collection used as a key, ...) would reach stderr around the one-line error.
    const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: true, logLevel: "error" });
    const first = doc.errors[0];
    if (first) throw new PolicyError(`${file}: not valid YAML: ${printable(oneLine(first.message))}`);
    try {
      // Alias expansion is bounded: a "billion laughs" document fails here instead of eating memory.
      data = doc.toJS({ maxAliasCount: 1000 });
    } catch (err) {
      throw new PolicyError(`${file}: ${printable(oneLine((err as Error).message))}`);
    }
  }
  return validatePolicy(data ?? {}, file);
}

/**
 * Measures nesting and counts aliases with the YAML library's own lexer (iterative and linear, so it cannot
 * overflow), stopping at the first token over a limit. Nesting is over-estimated on purpose: open flow
 * collections, plus the block indicators on the line, plus its indentation in columns.
 */
function checkStructure(text: string, file: string): void {
  let flow = 0;
  let indicators = 0;
  let indent = 0;
  let lineStart = true;
  let aliases = 0;
  for (const tok of new Lexer().lex(text)) {
    if (tok === "\n" || tok === "\r\n") {
      lineStart = true;
      indicators = 0;
      indent = 0;
      continue;
    }
    if (lineStart && /^[ \t]+$/.test(tok)) indent = tok.length;
    lineStart = false;
    if (tok === "[" || tok === "{") flow++;
    else if (tok === "]" || tok === "}") flow = Math.max(0, flow - 1);
    else if (tok === "-" || tok === "?" || tok === ":") indicators++;
    else if (tok.startsWith("*") && ++aliases > MAX_POLICY_ALIASES) {
      throw new PolicyError(
        `${file}: more than ${MAX_POLICY_ALIASES} YAML aliases; a policy file needs a few`,
      );
    }
    if (flow + indicators + indent > MAX_POLICY_NESTING) {
      throw new PolicyError(
        `${file}: nested deeper than ${MAX_POLICY_NESTING} levels (or indented as deep); a policy file needs a few`,
      );
    }
  }
}

/** Messages quote the file's text: control characters (newlines, terminal escapes) are shown escaped. */
function printable(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\u0000-\u001f\u007f-\u009f]/g, (ch) => JSON.stringify(ch).slice(1, -1));
}

/** The first line only; the YAML library's pretty errors end it with ":" before a code excerpt we do not print. */
function oneLine(s: string): string {
  return (s.split("\n")[0]?.trim() ?? s).replace(/:$/, "");
}

type Json = unknown;

class Checker {
  constructor(private readonly file: string) {}

  error(path: string, text: string): never {
    throw new PolicyError(`${this.file}: ${path}: ${text}`);
  }

  fail(path: string, expected: string, got: Json): never {
    throw new PolicyError(
      `${this.file}: ${path || "(top level)"}: expected ${expected}, got ${describe(got)}`,
    );
  }

  object(v: Json, path: string, allowed: readonly string[]): Record<string, Json> {
    if (typeof v !== "object" || v === null || Array.isArray(v)) this.fail(path, "a mapping (key: value)", v);
    const rec = v as Record<string, Json>;
    for (const key of Object.keys(rec)) {
      if (!allowed.includes(key)) {
        throw new PolicyError(
          `${this.file}: ${path ? `${path}.` : ""}${printable(key)}: unknown key (allowed here: ${allowed.join(", ")})`,
        );
      }
    }
    return rec;
  }

  bool(v: Json, path: string): boolean {
    if (typeof v !== "boolean") this.fail(path, "true or false", v);
    return v;
  }

  name(v: Json, path: string, what: string): string {
    if (typeof v !== "string" || v === "") this.fail(path, `${what} (a non-empty string)`, v);
    return v;
  }

  patterns(v: Json, path: string): string[] {
    if (!Array.isArray(v)) this.fail(path, 'a list of patterns such as ["backup-*", "drive0/tmp-*"]', v);
    return v.map((p, i) => this.name(p, `${path}[${i}]`, "a glob pattern"));
  }
}

function describe(v: Json): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  if (typeof v === "object") return "a mapping";
  if (typeof v === "string") return `the string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
  if (v === undefined) return "nothing";
  if (typeof v === "number" || typeof v === "boolean") return `${typeof v} ${String(v)}`;
  return typeof v;
}

export function validatePolicy(data: Json, file: string): Policy {
  const c: Checker = new Checker(file);
  const top = c.object(data, "", ["defaults", "allow", "deny", "map"]);
  const policy: Policy = { ...DEFAULT_POLICY, map: [] };
  if (top.defaults !== undefined) policy.defaults = c.bool(top.defaults, "defaults");
  if (top.allow !== undefined) policy.allow = c.patterns(top.allow, "allow");
  if (top.deny !== undefined) policy.deny = c.patterns(top.deny, "deny");
  if (top.map !== undefined) {
    if (!Array.isArray(top.map)) c.fail("map", "a list of {source, target} entries", top.map);
    policy.map = top.map.map((e, i) => mapEntry(c, e, i));
  }
  return policy;
}

function mapEntry(c: Checker, raw: Json, index: number): MapEntry {
  const path = `map[${index}]`;
  const e = c.object(raw, path, ["source", "target"]);
  if (!("source" in e)) c.fail(`${path}.source`, "a source node name or {node, bitmap}", undefined);
  if (!("target" in e)) {
    c.fail(
      `${path}.target`,
      "a destination node name, {node, bitmap?, persistent?, enabled?}, or null to drop",
      undefined,
    );
  }
  const source = mapSource(c, e.source, `${path}.source`);
  const target = mapTarget(c, e.target, `${path}.target`, source);
  return { index, source, target };
}

function mapSource(c: Checker, v: Json, path: string): MapSource {
  if (typeof v === "string") return { kind: "node", node: c.name(v, path, "a node or drive name") };
  const o = c.object(v, path, ["node", "bitmap"]);
  const node = c.name(o.node, `${path}.node`, "a node or drive name");
  if (o.bitmap === undefined) return { kind: "node", node };
  return { kind: "bitmap", node, bitmap: c.name(o.bitmap, `${path}.bitmap`, "a bitmap name") };
}

function mapTarget(c: Checker, v: Json, path: string, source: MapSource): MapTarget | null {
  if (v === null) return null;
  if (typeof v === "string") return { node: c.name(v, path, "a destination node or drive name") };
  const o = c.object(v, path, ["node", "bitmap", "persistent", "enabled"]);
  const t: MapTarget = { node: c.name(o.node, `${path}.node`, "a destination node or drive name") };
  if (o.bitmap !== undefined) {
    if (source.kind === "node") {
      c.error(
        `${path}.bitmap`,
        `a rename needs a per-bitmap source ({node, bitmap}); this entry covers every bitmap of node '${source.node}'`,
      );
    }
    t.bitmap = c.name(o.bitmap, `${path}.bitmap`, "a bitmap name");
  }
  if (o.persistent !== undefined) t.persistent = c.bool(o.persistent, `${path}.persistent`);
  if (o.enabled !== undefined) t.enabled = c.bool(o.enabled, `${path}.enabled`);
  return t;
}
