/**
 * Feature detection by QAPI schema, not by version number (libvirt's approach). Type names in
 * `query-qmp-schema` are opaque ("0", "123"), so a query walks the type table. Pure.
 *
 * Path language, one step per `/`:
 *   first step  a command or event name
 *   arg-type    the command's or event's argument type; ret-type its return type
 *   NAME        the member NAME of the current object type (array and alternate types are entered on the way)
 *   +CASE       the variant CASE of the current union
 *   ^VALUE      the current type is an enum with VALUE
 *   $FEATURE    the current entity (command, member or type) has FEATURE
 */

interface SchemaEntry {
  name: string;
  "meta-type": string;
  "arg-type"?: string;
  "ret-type"?: string;
  "element-type"?: string;
  members?: { name?: string; type?: string; features?: string[] }[];
  variants?: { case: string; type: string }[];
  values?: string[];
  features?: string[];
}

interface Cursor {
  kind: "type";
  entry: SchemaEntry | undefined;
  features: string[];
}

export class QapiSchema {
  private readonly byName = new Map<string, SchemaEntry>();

  constructor(entries: unknown) {
    if (!Array.isArray(entries)) throw new TypeError("query-qmp-schema did not return a list");
    for (const raw of entries) {
      if (typeof raw !== "object" || raw === null) continue;
      const e = raw as SchemaEntry;
      if (typeof e.name === "string") this.byName.set(e.name, e);
    }
  }

  hasCommand(name: string): boolean {
    return this.byName.get(name)?.["meta-type"] === "command";
  }

  hasEvent(name: string): boolean {
    return this.byName.get(name)?.["meta-type"] === "event";
  }

  /** True when every step of `path` resolves (see the module comment for the language). */
  has(path: string): boolean {
    const steps = path.split("/");
    const head = steps.shift();
    if (head === undefined) return false;
    const root = this.byName.get(head);
    if (!root || (root["meta-type"] !== "command" && root["meta-type"] !== "event")) return false;
    let cur: Cursor = { kind: "type", entry: root, features: root.features ?? [] };
    for (const step of steps) {
      const next = this.step(cur, step);
      if (next === undefined) return false;
      cur = next;
    }
    return true;
  }

  private resolve(typeName: string | undefined): SchemaEntry | undefined {
    let entry = typeName === undefined ? undefined : this.byName.get(typeName);
    // Arrays are transparent: `bitmaps/transform` means "a member of the array's elements".
    for (let depth = 0; entry?.["meta-type"] === "array" && depth < 8; depth++) {
      entry = this.byName.get(entry["element-type"] ?? "");
    }
    return entry;
  }

  private step(cur: Cursor, step: string): Cursor | undefined {
    const entry = cur.entry;
    if (entry === undefined) return undefined;
    if (step === "arg-type" || step === "ret-type") {
      const target = this.resolve(entry[step]);
      return target ? { kind: "type", entry: target, features: target.features ?? [] } : undefined;
    }
    if (step.startsWith("$")) {
      return cur.features.includes(step.slice(1)) ? cur : undefined;
    }
    if (step.startsWith("^")) {
      const value = step.slice(1);
      if (entry["meta-type"] !== "enum") return undefined;
      const values = entry.values ?? entry.members?.map((m) => m.name ?? "") ?? [];
      return values.includes(value) ? cur : undefined;
    }
    if (step.startsWith("+")) {
      const variant = entry.variants?.find((v) => v.case === step.slice(1));
      const target = this.resolve(variant?.type);
      return target ? { kind: "type", entry: target, features: target.features ?? [] } : undefined;
    }
    const candidates =
      entry["meta-type"] === "alternate" ? (entry.members ?? []).map((m) => this.resolve(m.type)) : [entry];
    for (const candidate of candidates) {
      const member = candidate?.members?.find((m) => m.name === step);
      if (member) {
        const target = this.resolve(member.type);
        return { kind: "type", entry: target, features: member.features ?? [] };
      }
    }
    return undefined;
  }
}
