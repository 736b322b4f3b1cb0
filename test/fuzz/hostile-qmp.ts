import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import assert from "node:assert/strict";
import fc from "fast-check";
import { planMigration } from "../../src/migrate/plan.js";
import { QemuMonitor } from "../../src/qemu/monitor.js";
import { readSnapshot, type RawSnapshot } from "../../src/qemu/snapshot.js";
import { QmpClient } from "../../src/qmp/client.js";
import { QmpError } from "../../src/qmp/errors.js";
import type { QemuFeatures } from "../../src/qemu/monitor.js";
import { BitferryError } from "../../src/util/errors.js";
import { runCli } from "../helpers/cli.js";
import { FakeQmpServer, type FakeConnection } from "../helpers/fake-qmp.js";
import {
  hasStackTrace,
  property,
  within,
  type HostileOptions,
  type HostileReport,
} from "./hostile-common.js";

/**
 * Hostile QMP replies from an in-process fake QEMU that answers from replies captured from real QEMU
 * (test/fixtures/qmp), except that one chosen reply is broken: wrong types, missing or extra fields, semantically
 * odd values, truncated, enormous, out of order, for another id, an error, drowned in events, or the connection
 * closed. Planning (readSnapshot, planMigration) and the CLI must end with a plan or a clear, coded error: no crash,
 * no hang, bounded memory.
 */

const FIXTURES = path.join(import.meta.dirname, "..", "fixtures", "qmp");

interface Fixture {
  name: string;
  source: RawSnapshot;
  destination: RawSnapshot;
}

let fixtures: Fixture[] | undefined;
function loadFixtures(): Fixture[] {
  fixtures ??= readdirSync(FIXTURES)
    .filter((f) => f.endsWith(".json"))
    .sort()
    .map((f) => {
      const raw = JSON.parse(readFileSync(path.join(FIXTURES, f), "utf8")) as Fixture;
      return { name: f, source: raw.source, destination: raw.destination };
    });
  return fixtures;
}

/** The smallest QAPI schema whose answers match the features a fixture was captured with. */
function schemaFor(f: QemuFeatures): unknown[] {
  const cmd = (name: string, arg?: string): Record<string, unknown> => ({
    name,
    "meta-type": "command",
    ...(arg ? { "arg-type": arg } : {}),
    "ret-type": "ret0",
  });
  const entries: unknown[] = [
    { name: "ret0", "meta-type": "object", members: [] },
    cmd("migrate-set-parameters", "msp"),
    {
      name: "msp",
      "meta-type": "object",
      members: f.bitmapMapping ? [{ name: "block-bitmap-mapping", type: "[bbm]" }] : [],
    },
    { name: "[bbm]", "meta-type": "array", "element-type": "bbm" },
    { name: "bbm", "meta-type": "object", members: [{ name: "bitmaps", type: "[bma]" }] },
    { name: "[bma]", "meta-type": "array", "element-type": "bma" },
    {
      name: "bma",
      "meta-type": "object",
      members: f.mappingTransform ? [{ name: "transform", type: "tr" }] : [],
    },
    { name: "tr", "meta-type": "object", members: [{ name: "persistent", type: "bool" }] },
    cmd("migrate-incoming", "mi"),
    {
      name: "mi",
      "meta-type": "object",
      members: f.incomingExitOnError ? [{ name: "exit-on-error", type: "bool" }] : [],
    },
  ];
  if (f.bitmapSha256) entries.push(cmd("x-debug-block-dirty-bitmap-sha256"));
  if (f.blockGraph) entries.push(cmd("x-debug-query-block-graph"));
  return entries;
}

function replyFor(raw: RawSnapshot, command: string): { value: unknown } | { error: string } {
  const table: Record<string, unknown> = {
    "query-qmp-schema": schemaFor(raw.features),
    "query-version": raw.version,
    "query-status": raw.status,
    "query-named-block-nodes": raw.namedNodes,
    "query-block": raw.blockBackends,
    "x-debug-query-block-graph": raw.blockGraph,
    "query-migrate-parameters": raw.migrationParameters,
    "query-migrate-capabilities": raw.migrationCapabilities,
    "query-memory-size-summary": raw.memory,
    "qom-list-properties": raw.migrationProperties ?? null,
    "qom-get": raw.machineType ?? null,
  };
  const v = table[command];
  if (v === undefined || v === null) return { error: `The command ${command} has not been found` };
  return { value: v };
}

const COMMANDS = [
  "query-qmp-schema",
  "query-version",
  "query-status",
  "query-named-block-nodes",
  "query-block",
  "x-debug-query-block-graph",
  "query-migrate-parameters",
  "query-migrate-capabilities",
  "query-memory-size-summary",
  "qom-list-properties",
  "qom-get",
] as const;

type Kind =
  | "replace-root"
  | "graph-cycle"
  | "wrong-type"
  | "missing"
  | "odd-value"
  | "duplicate-node"
  | "extra-fields"
  | "truncate-close"
  | "truncate-hang"
  | "garbage"
  | "enormous"
  | "huge-line"
  | "wrong-id"
  | "swap"
  | "error"
  | "flood"
  | "close"
  | "twice"
  | "no-id";

const HANGS: readonly Kind[] = ["truncate-hang", "wrong-id"];

interface Mutation {
  side: "source" | "destination";
  command: (typeof COMMANDS)[number];
  kind: Kind;
  /** Steers which member of the reply a structural mutation touches. */
  path: number[];
  replacement: unknown;
  size: number;
}

const ODD = [
  0,
  -1,
  1,
  512,
  2 ** 53 - 1,
  2 ** 53 + 2,
  1.5,
  "",
  "#",
  "#block001",
  "n".repeat(40),
  "disk0",
  "drive0",
  "\u0000",
  "x".repeat(5000),
  null,
  true,
  [],
  {},
  [{}],
  [{ name: "b", count: 0, granularity: 0, recording: true, busy: false, persistent: true }],
];

/** The replies planning leans on most get broken most often. */
const COMMAND_WEIGHTS: Partial<Record<(typeof COMMANDS)[number], number>> = {
  "query-named-block-nodes": 5,
  "x-debug-query-block-graph": 3,
  "query-block": 3,
  "query-qmp-schema": 2,
  "query-migrate-parameters": 2,
  "query-migrate-capabilities": 2,
};

const mutation = (kinds: readonly Kind[]): fc.Arbitrary<Mutation> =>
  fc.record({
    side: fc.constantFrom("source" as const, "destination" as const),
    command: fc.oneof(
      ...COMMANDS.map((c) => ({ weight: COMMAND_WEIGHTS[c] ?? 1, arbitrary: fc.constant(c) })),
    ),
    kind: fc.oneof(
      ...kinds.map((k) => ({
        weight: ["wrong-type", "odd-value", "missing", "replace-root"].includes(k) ? 4 : 1,
        arbitrary: fc.constant(k),
      })),
    ),
    path: fc.array(fc.nat(), { minLength: 1, maxLength: 6 }),
    replacement: fc.oneof(fc.constantFrom(...ODD), fc.jsonValue({ maxDepth: 2 })),
    size: fc.integer({ min: 1, max: 20 }),
  });

/** Walks `path` into `v` (indexes pick among array items or object keys) and edits the member it reaches. */
function edit(
  v: unknown,
  steps: number[],
  fn: (holder: Record<string, unknown> | unknown[], key: string | number) => void,
): unknown {
  const root = structuredClone(v);
  let cur: unknown = root;
  for (let i = 0; i < steps.length; i++) {
    if (cur === null || typeof cur !== "object") return root;
    const keys: (string | number)[] = Array.isArray(cur) ? cur.map((_, j) => j) : Object.keys(cur);
    if (keys.length === 0) return root;
    const key = keys[(steps[i] ?? 0) % keys.length] ?? 0;
    const next = (cur as Record<string | number, unknown>)[key];
    if (i === steps.length - 1 || next === null || typeof next !== "object") {
      fn(cur as Record<string, unknown> | unknown[], key);
      return root;
    }
    cur = next;
  }
  return root;
}

function mutateValue(value: unknown, m: Mutation): unknown {
  switch (m.kind) {
    case "replace-root":
      return m.replacement;
    case "graph-cycle": {
      // Every edge also the other way round, plus one to a node id that does not exist.
      const g = value as { nodes?: unknown; edges?: { parent: number; child: number; name: string }[] };
      if (!Array.isArray(g.edges)) return value;
      return {
        ...g,
        edges: [
          ...g.edges,
          ...g.edges.map((e) => ({ ...e, parent: e.child, child: e.parent })),
          { parent: 1, child: 99999, name: "file" },
        ],
      };
    }
    case "wrong-type":
    case "odd-value":
      return edit(value, m.path, (h, k) => {
        (h as Record<string | number, unknown>)[k] = m.replacement;
      });
    case "missing":
      return edit(value, m.path, (h, k) => {
        if (Array.isArray(h)) h.splice(Number(k), 1);
        else Reflect.deleteProperty(h, k);
      });
    case "extra-fields":
      return edit(value, m.path, (h) => {
        if (!Array.isArray(h)) h[`x-unknown-${m.size}`] = m.replacement;
      });
    case "duplicate-node": {
      // The same node (or edge, or backend) listed twice, or every entry renamed alike.
      if (!Array.isArray(value)) return value;
      const list = value as unknown[];
      return [...list, ...list.slice(0, m.size)].map((x, i) =>
        i % 2 === 0 && m.size % 3 === 0 && x !== null && typeof x === "object"
          ? { ...x, "node-name": "dup" }
          : x,
      );
    }
    case "enormous": {
      // Thousands of entries (or one big string): bounded by the client's line limit, not by luck.
      if (!Array.isArray(value) || value.length === 0) return { huge: "y".repeat(m.size * 200_000) };
      const list = value as unknown[];
      return Array.from({ length: m.size * 2000 }, (_, i) => list[i % list.length]);
    }
    case "truncate-close":
    case "truncate-hang":
    case "garbage":
    case "huge-line":
    case "wrong-id":
    case "swap":
    case "error":
    case "flood":
    case "close":
    case "twice":
    case "no-id":
      // Broken on the wire, not in the value.
      return value;
  }
}

/** A fake QEMU that answers from `raw` and breaks the replies `m` says. */
async function fakeQemu(raw: RawSnapshot, m: Mutation | undefined): Promise<FakeQmpServer> {
  let held: { id: unknown; reply: Record<string, unknown>; conn: FakeConnection } | undefined;
  return FakeQmpServer.start({
    handle: (cmd, conn) => {
      const r = replyFor(raw, cmd.execute);
      const normal =
        "value" in r
          ? { return: r.value, id: cmd.id }
          : { error: { class: "CommandNotFound", desc: r.error }, id: cmd.id };
      if (held?.conn === conn) {
        // "swap": this reply goes out under the held command's id, and the held one under this id.
        conn.send({ ...normal, id: held.id });
        conn.send({ ...held.reply, id: cmd.id });
        held = undefined;
        return;
      }
      if (m?.command !== cmd.execute) {
        conn.send(normal);
        return;
      }
      const value = "value" in r ? mutateValue(r.value, m) : undefined;
      const line = JSON.stringify("value" in r ? { return: value, id: cmd.id } : normal);
      switch (m.kind) {
        case "truncate-close":
          conn.sendRaw(line.slice(0, Math.floor((line.length * m.size) / 21)));
          conn.destroy();
          return;
        case "truncate-hang":
          conn.sendRaw(line.slice(0, Math.floor((line.length * m.size) / 21)));
          return;
        case "garbage":
          conn.sendRaw(`${line.slice(0, 40)}}}garbage{{\r\n`);
          return;
        case "huge-line":
          conn.sendRaw(`{"return": "${"z".repeat(17 * 1024 * 1024)}", "id": ${JSON.stringify(cmd.id)}}\r\n`);
          return;
        case "wrong-id":
          conn.sendRaw(`${line.replace(JSON.stringify(cmd.id), JSON.stringify(`bf-${9999 + m.size}`))}\r\n`);
          return;
        case "swap": {
          const mine = { id: cmd.id, reply: "value" in r ? { return: value } : normal, conn };
          held = mine;
          // No second command to swap with: answer late, under its own id.
          setTimeout(() => {
            if (held === mine) {
              conn.send({ ...mine.reply, id: mine.id });
              held = undefined;
            }
          }, 300).unref();
          return;
        }
        case "error":
          conn.send({
            error: { class: "GenericError", desc: `injected failure of ${cmd.execute}` },
            id: cmd.id,
          });
          return;
        case "flood":
          for (let i = 0; i < m.size * 2000; i++)
            conn.send({
              timestamp: { seconds: 1, microseconds: i },
              event: "MIGRATION_PASS",
              data: { pass: i },
            });
          conn.sendRaw(`${line}\r\n`);
          return;
        case "close":
          conn.destroy();
          return;
        case "twice":
          conn.sendRaw(`${line}\r\n${line}\r\n`);
          return;
        case "no-id":
          conn.sendRaw(`${JSON.stringify({ return: value })}\r\n`);
          return;
        case "replace-root":
        case "graph-cycle":
        case "wrong-type":
        case "odd-value":
        case "missing":
        case "extra-fields":
        case "duplicate-node":
        case "enormous":
          conn.sendRaw(`${line}\r\n`);
          return;
      }
    },
  });
}

/** Codes of the errors a broken QEMU may cause; anything else (a TypeError, "INTERNAL") is a bitferry bug. */
const ALLOWED = new Set([
  // A reply that is odd but valid can make a plan with errors: a plan, not a crash.
  "PLAN_ERRORS",
  "QEMU_ERR_REPLY",
  "QMP_ERR_PROTOCOL",
  "QMP_ERR_CLOSED",
  "QMP_ERR_COMMAND",
  "QMP_ERR_TIMEOUT",
  "QMP_ERR_CONNECT",
]);

async function withServers<T>(
  f: Fixture,
  m: Mutation | undefined,
  fn: (src: FakeQmpServer, dst: FakeQmpServer) => Promise<T>,
): Promise<T> {
  const src = await fakeQemu(f.source, m?.side === "source" ? m : undefined);
  const dst = await fakeQemu(f.destination, m?.side === "destination" ? m : undefined);
  try {
    return await fn(src, dst);
  } finally {
    await Promise.all([src.close(), dst.close()]);
  }
}

async function planThrough(f: Fixture, m: Mutation | undefined): Promise<void> {
  await withServers(f, m, async (s, d) => {
    const clients: QmpClient[] = [];
    try {
      const opts = { commandTimeoutMs: 500, connectTimeoutMs: 1500 };
      clients.push(await QmpClient.connect(s.path, { ...opts, label: "source" }));
      clients.push(await QmpClient.connect(d.path, { ...opts, label: "destination" }));
      const [a, b] = clients;
      if (!a || !b) return;
      try {
        const snap = await readSnapshot(new QemuMonitor(m?.side === "destination" ? b : a));
        assert.equal(typeof snap.runState, "string");
        const { plan } = await planMigration(a, b);
        assert.equal(plan.version, 1);
        assert.equal(plan.ok, plan.errors.length === 0);
        JSON.stringify(plan);
      } catch (err) {
        if (!(err instanceof BitferryError) || !ALLOWED.has(err.code)) {
          throw new Error(
            `planning against a broken QEMU threw ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`,
          );
        }
      }
    } finally {
      for (const c of clients) c.close();
    }
  });
}

/** Random bytes around QMP frames: the client settles every command with a value or one of its own errors. */
const frames = fc.array(
  fc.oneof(
    fc.constant("reply"),
    fc.constant("wrong-id"),
    fc.constant("event"),
    fc.constant("garbage"),
    fc.constant("partial"),
    fc.constant("greeting"),
    fc.constant("cr"),
    fc.constant("empty"),
    fc.constant("long"),
    fc.constant("bad-utf8"),
    fc.constant("array"),
    fc.constant("error-shape"),
    fc.constant("close"),
  ),
  { minLength: 1, maxLength: 8 },
);

async function clientAgainst(script: string[], chunk: number): Promise<void> {
  const server = await FakeQmpServer.start({
    handle: (cmd, conn) => {
      const id = JSON.stringify(cmd.id);
      const parts: Buffer[] = [];
      for (const f of script) {
        switch (f) {
          case "reply":
            parts.push(Buffer.from(`{"return": {"ok": 1}, "id": ${id}}\r\n`));
            break;
          case "wrong-id":
            parts.push(Buffer.from(`{"return": {}, "id": "other"}\r\n`));
            break;
          case "event":
            parts.push(
              Buffer.from(
                `{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP", "data": {}}\r\n`,
              ),
            );
            break;
          case "garbage":
            parts.push(Buffer.from("}{ not json\r\n"));
            break;
          case "partial":
            parts.push(Buffer.from(`{"return": {}, "id": ${id}`));
            break;
          case "greeting":
            parts.push(
              Buffer.from(
                '{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}\r\n',
              ),
            );
            break;
          case "cr":
            parts.push(Buffer.from("\r\r\r\n"));
            break;
          case "empty":
            parts.push(Buffer.from("\r\n\n"));
            break;
          case "long":
            parts.push(Buffer.from(`{"return": "${"q".repeat(9000)}", "id": ${id}}\r\n`));
            break;
          case "bad-utf8":
            parts.push(Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d, 0x0d, 0x0a]));
            break;
          case "array":
            parts.push(Buffer.from("[1, 2]\r\n"));
            break;
          case "error-shape":
            parts.push(Buffer.from(`{"error": "text", "id": ${id}}\r\n`));
            break;
          default:
            break;
        }
      }
      const all = Buffer.concat(parts);
      for (let i = 0; i < all.length; i += chunk) conn.socket.write(all.subarray(i, i + chunk));
      if (script.includes("close")) conn.end();
    },
  });
  try {
    const c = await QmpClient.connect(server.path, { commandTimeoutMs: 300, maxLineBytes: 8192 });
    try {
      const outcomes = await Promise.allSettled([c.execute("a"), c.execute("b")]);
      for (const o of outcomes) {
        if (o.status === "rejected") {
          assert.ok(o.reason instanceof QmpError, `not a QmpError: ${String(o.reason)}`);
        } else {
          assert.deepEqual(o.value, { ok: 1 });
        }
      }
      await c.execute("c").catch((e: unknown) => {
        assert.ok(e instanceof QmpError, `not a QmpError: ${String(e)}`);
      });
    } finally {
      c.close();
    }
  } finally {
    await server.close();
  }
}

export async function fuzzQmp(o: HostileOptions): Promise<HostileReport[]> {
  const F = "QMP replies";
  const all = loadFixtures();
  const fixture = fc.integer({ min: 0, max: all.length - 1 }).map((i) => all[i]!);
  const kinds: Kind[] = [
    "replace-root",
    "graph-cycle",
    "wrong-type",
    "missing",
    "odd-value",
    "duplicate-node",
    "extra-fields",
    "truncate-close",
    "truncate-hang",
    "garbage",
    "enormous",
    "huge-line",
    "wrong-id",
    "swap",
    "error",
    "flood",
    "close",
    "twice",
    "no-id",
  ];
  const out: HostileReport[] = [];
  out.push(
    await property(
      F,
      "readSnapshot and planMigration against a QEMU with one broken reply: a plan or a coded error, in time",
      fc.tuple(fixture, mutation(kinds)),
      async ([f, m]) => {
        await within(10_000, `planning (${m.side} ${m.command} ${m.kind})`, () => planThrough(f, m));
      },
      o,
    ),
  );
  out.push(
    await property(
      F,
      "bitferry plan against a broken QEMU: exit 0, 1 or 3, one JSON document, a stable code, no stack trace",
      fc.tuple(fixture, mutation(kinds.filter((k) => !HANGS.includes(k))), fc.boolean()),
      async ([f, m, json]) => {
        await withServers(f, m, async (s, d) => {
          const args = ["plan", "--source", s.path, "--dest", d.path];
          const r = await within(15_000, `bitferry plan (${m.side} ${m.command} ${m.kind})`, () =>
            runCli(json ? [...args, "--json"] : args),
          );
          assert.ok([0, 1, 3].includes(r.code), `exit ${r.code}: ${r.stderr}`);
          assert.ok(!hasStackTrace(r.stderr), `stack trace: ${r.stderr}`);
          if (json) {
            const doc = r.json() as { ok: boolean; error?: { code: string } };
            if (!doc.ok && doc.error) assert.ok(ALLOWED.has(doc.error.code), `error code ${doc.error.code}`);
          } else if (r.code !== 0 && r.stdout === "") {
            assert.equal(r.stderr.trimEnd().split("\n").length, 1, `one line: ${r.stderr}`);
            assert.match(r.stderr, /\[(QEMU_ERR_REPLY|QMP_ERR_\w+)\]/);
          }
        });
      },
      { ...o, runs: Math.max(10, Math.floor(o.runs / 3)) },
    ),
  );
  out.push(
    await property(
      F,
      "the QMP client under random frames (wrong ids, garbage, partial lines, bad UTF-8, floods, closes)",
      fc.tuple(frames, fc.integer({ min: 1, max: 64 })),
      async ([script, chunk]) => {
        await within(5_000, `client (${script.join(",")})`, () => clientAgainst(script, chunk));
      },
      o,
    ),
  );
  return out;
}
