import { readFile } from "node:fs/promises";

/** The parts of a V8 .cpuprofile (what `node --cpu-prof` writes) this summary reads. */
interface CpuProfile {
  nodes: {
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number };
    children?: number[];
  }[];
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileEntry {
  what: string;
  ms: number;
}

export interface ProfileSummary {
  /** Sampled time, ms (idle included). */
  totalMs: number;
  /** Self time by where it was spent: module loading, GC, each package, each bitferry file. */
  buckets: ProfileEntry[];
  /** bitferry functions by self time ("src/policy/decide.ts decideOne:82"). */
  selfTop: ProfileEntry[];
  /** bitferry functions by inclusive time (self plus everything they called). */
  inclusiveTop: ProfileEntry[];
  /** Inclusive time of the functions asked for by name (all bitferry functions of that name together). */
  named: ProfileEntry[];
}

function srcPath(url: string): string | undefined {
  const m = /\/build\/(src\/.*)\.js$/.exec(url);
  return m ? `${m[1]!}.ts` : undefined;
}

function bucketOf(fn: string, url: string): string {
  if (url === "") {
    if (fn === "(garbage collector)") return "garbage collection";
    if (fn === "(idle)") return "idle (waiting for I/O)";
    if (fn === "(program)") return "V8/Node native (program)";
    return `native: ${fn}`;
  }
  if (url.startsWith("node:internal/modules") || url.startsWith("node:internal/deps/cjs-module-lexer"))
    return "Node module loader (resolve, read, compile)";
  if (url.startsWith("node:")) return `Node core: ${url.replace(/^node:(internal\/)?/, "")}`;
  const pkg = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (pkg) return `package ${pkg[1]!}`;
  const src = srcPath(url);
  if (src) return src;
  if (url.includes("/build/bench/")) return "benchmark script";
  return "other";
}

/** Self and inclusive time by bucket and function, from one profile. */
export async function summarizeProfile(
  file: string,
  top = 12,
  names: string[] = [],
): Promise<ProfileSummary> {
  const p = JSON.parse(await readFile(file, "utf8")) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const buckets = new Map<string, number>();
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  const named = new Map<string, number>(names.map((n) => [n, 0]));
  const label = (id: number): string | undefined => {
    const n = byId.get(id);
    if (!n) return undefined;
    const src = srcPath(n.callFrame.url);
    if (!src) return undefined;
    return `${src} ${n.callFrame.functionName || "(top level)"}:${n.callFrame.lineNumber + 1}`;
  };
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const us = p.timeDeltas[i] ?? 0;
    total += us;
    const id = p.samples[i]!;
    const n = byId.get(id);
    if (!n) continue;
    const b = bucketOf(n.callFrame.functionName, n.callFrame.url);
    buckets.set(b, (buckets.get(b) ?? 0) + us);
    const l = label(id);
    if (l) self.set(l, (self.get(l) ?? 0) + us);
    const seen = new Set<string>();
    const seenNames = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const k = label(cur);
      if (k && !seen.has(k)) {
        seen.add(k);
        inclusive.set(k, (inclusive.get(k) ?? 0) + us);
      }
      const fn = byId.get(cur)?.callFrame.functionName ?? "";
      if (k && named.has(fn) && !seenNames.has(fn)) {
        seenNames.add(fn);
        named.set(fn, (named.get(fn) ?? 0) + us);
      }
    }
  }
  const sorted = (m: Map<string, number>, n: number): ProfileEntry[] =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([what, us]) => ({ what, ms: us / 1000 }));
  return {
    totalMs: total / 1000,
    buckets: sorted(buckets, top),
    selfTop: sorted(self, top),
    inclusiveTop: sorted(inclusive, top),
    named: names.map((what) => ({ what, ms: (named.get(what) ?? 0) / 1000 })),
  };
}

/** Self time of every bitferry function (and of GC), µs, from one profile: to compare two sizes function by function. */
export async function selfTimes(file: string): Promise<Map<string, number>> {
  const p = JSON.parse(await readFile(file, "utf8")) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const out = new Map<string, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const n = byId.get(p.samples[i]!);
    if (!n) continue;
    const src = srcPath(n.callFrame.url);
    const key =
      n.callFrame.functionName === "(garbage collector)"
        ? "garbage collection"
        : src
          ? `${src} ${n.callFrame.functionName || "(top level)"}`
          : undefined;
    if (key) out.set(key, (out.get(key) ?? 0) + (p.timeDeltas[i] ?? 0));
  }
  return out;
}
