import { parseDocument } from "yaml";
import { UsageError } from "../util/errors.js";
import type { MapEntry, MapSource, MapTarget, Policy } from "./types.js";

/** A policy file that cannot be used. The message names the file, the key path and what was expected. */
export class PolicyError extends UsageError {
  override readonly code = "POLICY_INVALID";
}

export const DEFAULT_POLICY: Policy = { defaults: true, allow: undefined, deny: [], map: [] };

/** Policy files are small; anything this large is a mistake or an attack. */
export const MAX_POLICY_BYTES = 1024 * 1024;

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
      throw new PolicyError(`${file}: not valid JSON: ${(err as Error).message}`);
    }
  } else {
    const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
    const first = doc.errors[0];
    if (first) throw new PolicyError(`${file}: not valid YAML: ${oneLine(first.message)}`);
    try {
      // Alias expansion is bounded: a "billion laughs" document fails here instead of eating memory.
      data = doc.toJS({ maxAliasCount: 1000 });
    } catch (err) {
      throw new PolicyError(`${file}: ${oneLine((err as Error).message)}`);
    }
  }
  return validatePolicy(data ?? {}, file);
}

function oneLine(s: string): string {
  return s.split("\n")[0]?.trim() ?? s;
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
          `${this.file}: ${path ? `${path}.` : ""}${key}: unknown key (allowed here: ${allowed.join(", ")})`,
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
