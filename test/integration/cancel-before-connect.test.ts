import { it } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { writeFileSync } from "node:fs";
import net from "node:net";
import { createInterface } from "node:readline";
import type { Lab } from "../../src/lab/lab.js";
import type { QemuProcess } from "../../src/lab/process.js";
import * as S from "../../src/lab/scenarios.js";
import { sleep } from "../../src/migrate/sides.js";
import type { QemuMonitor } from "../../src/qemu/monitor.js";
import { QmpCommandError } from "../../src/qmp/errors.js";
import { bitmapStates } from "../helpers/bitmaps.js";
import { withLab } from "../helpers/lab.js";
import { runMigration } from "../helpers/migrate.js";
import { buildPairCases, describeEachPair } from "../helpers/pairs.js";
import { checkStored, Findings } from "../fuzz/checks.js";

/**
 * Issue 15. QEMU 10.0 reports `cancelled` at once for a migration cancelled while its connection is still being
 * made, and when the connection then comes up it still starts the migration thread, whose setup marks every mapped
 * bitmap "do not store" again. A bitmap bitferry had already repaired by then was lost at the next clean shutdown,
 * with nothing reported (seen once in `npm test` on a loaded machine: QEMU's connect finished on a starved worker
 * thread right after bitferry's cancel). Here the connection is held back on purpose: the migration goes to a unix
 * socket whose accept queue is full, so QEMU's connect blocks until the test lets it through, which it does right
 * after bitferry repaired its first bitmap, and waits until QEMU's late migration thread has ended.
 */

/**
 * A unix-socket listener in a child process whose event loop stays blocked (so it accepts nothing) until `release`
 * exists; then it accepts everything, reads what comes and says when a connection that sent data closes.
 */
const GATE = `
const fs = require("node:fs");
const net = require("node:net");
const [sock, release] = process.argv.slice(1);
const srv = net.createServer((s) => {
  let got = 0;
  s.on("error", () => undefined);
  s.on("data", (c) => { if (got === 0) process.stdout.write("data\\n"); got += c.length; });
  s.on("close", () => { if (got > 0) process.stdout.write("closed\\n"); });
});
srv.listen({ path: sock, backlog: 1 }, () => {
  process.stdout.write("listening\\n");
  setTimeout(() => {
    const cell = new Int32Array(new SharedArrayBuffer(4));
    while (!fs.existsSync(release)) Atomics.wait(cell, 0, 0, 20);
  }, 50);
});
`;

class Gate {
  private readonly lines: string[] = [];
  private readonly fillers: net.Socket[] = [];
  private readonly child: ChildProcess;
  readonly sock: string;
  private readonly release: string;

  constructor(lab: Lab) {
    this.sock = lab.path("gate.sock");
    this.release = lab.path("gate-release");
    this.child = spawn(process.execPath, ["-e", GATE, this.sock, this.release], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    if (this.child.stdout)
      createInterface({ input: this.child.stdout }).on("line", (l) => {
        this.lines.push(l);
      });
  }

  /** Waits at most `ms` for a line of the child (false if it did not come). */
  async saw(line: string, ms: number): Promise<boolean> {
    const end = Date.now() + ms;
    while (!this.lines.includes(line) && Date.now() < end) await sleep(20);
    return this.lines.includes(line);
  }

  /** Once the child's loop is blocked, our own connections fill its accept queue: the next connect blocks. */
  async hold(): Promise<void> {
    if (!(await this.saw("listening", 10_000))) throw new Error("the gate did not listen");
    await sleep(200);
    for (let i = 0; i < 3; i++) {
      const s = net.connect({ path: this.sock });
      s.on("error", () => undefined);
      this.fillers.push(s);
    }
    await sleep(100);
  }

  open(): void {
    writeFileSync(this.release, "");
  }

  stop(): void {
    for (const s of this.fillers) s.destroy();
    this.child.kill("SIGKILL");
  }
}

/**
 * The source's monitor as bitferry sees it, except that the first bitmap put back by a repair (the merge back
 * into a re-added bitmap) lets QEMU's held connection through and waits until QEMU's late migration thread ended.
 */
function monitorReleasingAfterFirstRepair(
  mon: QemuMonitor,
  gate: Gate,
  names: Set<string>,
  seen: { late: boolean },
): QemuMonitor {
  let done = false;
  return new Proxy(mon, {
    get(target, prop, receiver) {
      const v: unknown = Reflect.get(target, prop, receiver);
      if (typeof v !== "function") return v;
      if (prop !== "mergeBitmaps") return (v as (...a: unknown[]) => unknown).bind(target);
      return async (node: string, into: string, from: unknown[]) => {
        await (v as QemuMonitor["mergeBitmaps"]).call(target, node, into, from as string[]);
        if (done || !names.has(into)) return;
        done = true;
        gate.open();
        seen.late = await gate.saw("closed", 20_000);
      };
    },
  });
}

async function untilNoneBusy(proc: QemuProcess): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (![...(await bitmapStates(proc)).values()].some((b) => b.busy)) return;
    await sleep(50);
  }
}

/** The window is the source's: one pair per source build. */
const PAIRS = new Set(
  buildPairCases.filter((p, i, all) => all.findIndex((q) => q.source === p.source) === i),
);

describeEachPair("a migration cancelled before its connection is up", (qp) => {
  if (!PAIRS.has(qp)) return;
  it(
    "every persistent bitmap is still stored, though QEMU runs the migration's setup after the cancel",
    {
      timeout: 120_000,
    },
    async (t) => {
      await withLab(async (lab) => {
        const pair = await S.stallingPersistent.setup(lab, { ...qp.options, paused: true });
        const before = await bitmapStates(pair.source);
        const images = new Map<string, string>();
        for (const n of await pair.source.monitor.namedBlockNodes()) {
          const file = n.image.filename ?? n.file;
          if (n.drv === "qcow2" && file !== undefined) images.set(file, n["node-name"]);
        }
        const persistent = new Set([...before.values()].filter((b) => b.persistent).map((b) => b.name));
        // The destination listens elsewhere: bitferry's migrate-incoming finds it started, as with -incoming.
        await pair.destination.monitor.migrateIncoming(`unix:${lab.path("in.sock")}`);
        const gate = new Gate(lab);
        const injected = "injected failure right after migrate";
        const seen = { late: false };
        try {
          await gate.hold();
          const result = await runMigration(
            lab,
            {
              ...pair,
              source: Object.assign(Object.create(pair.source) as QemuProcess, {
                monitor: monitorReleasingAfterFirstRepair(pair.source.monitor, gate, persistent, seen),
              }),
            },
            {
              uri: `unix:${gate.sock}`,
              onStep: (s) => {
                if (s.name === "migration") throw new Error(injected);
              },
            },
          );
          t.diagnostic(`QEMU connected and ended a migration thread after the cancel: ${String(seen.late)}`);
          const f = new Findings();
          f.equal(result.error, { code: "QEMU_ERROR", message: injected }, "the run's error");
          f.check(
            result.source.repaired.every((r) => r.ok),
            `repairs: ${JSON.stringify(result.source.repaired)}`,
          );
          await untilNoneBusy(pair.source);
          const after = await bitmapStates(pair.source);
          f.equal([...after.keys()].sort(), [...before.keys()].sort(), "source bitmaps");
          for (const [key, b] of before) {
            const a = after.get(key);
            if (a) f.equal(a, b, `source bitmap ${key}`);
          }
          await pair.source.stop();
          f.equal(pair.source.exitInfo?.code, 0, "the source quit cleanly");
          for (const [file, node] of images) await checkStored(f, file, node, before);
          assert.deepEqual(f.list, []);
        } finally {
          gate.stop();
        }
      });
    },
  );
});

/**
 * The source's monitor as bitferry sees it, except that QEMU refuses to remove `refused` (a repair stops midway)
 * and lists `unstored` as not persistent once it was put back (a repair QEMU undid): what the read-back must report.
 */
function monitorUndoingRepairs(mon: QemuMonitor, refused: string, unstored: string): QemuMonitor {
  let putBack = false;
  return new Proxy(mon, {
    get(target, prop, receiver) {
      const v: unknown = Reflect.get(target, prop, receiver);
      if (typeof v !== "function") return v;
      const fn = (v as (...a: unknown[]) => Promise<unknown>).bind(target);
      if (prop === "removeBitmap")
        return (node: string, name: string) =>
          name === refused
            ? Promise.reject(
                new QmpCommandError("block-dirty-bitmap-remove", { node, name }, "GenericError", "test"),
              )
            : fn(node, name);
      if (prop === "mergeBitmaps")
        return async (node: string, into: string, from: unknown[]) => {
          await fn(node, into, from);
          if (into === unstored) putBack = true;
        };
      if (prop === "namedBlockNodes")
        return async () => {
          const nodes = (await fn()) as Awaited<ReturnType<QemuMonitor["namedBlockNodes"]>>;
          if (!putBack) return nodes;
          return nodes.map((n) => ({
            ...n,
            "dirty-bitmaps": n["dirty-bitmaps"]?.map((b) =>
              b.name === unstored ? { ...b, persistent: false } : b,
            ),
          }));
        };
      return fn;
    },
  });
}

describeEachPair("a repair the source does not keep", (qp) => {
  if (!PAIRS.has(qp)) return;
  it(
    "is reported in the run's error, naming bitmap and node, never silent",
    { timeout: 120_000 },
    async () => {
      await withLab(async (lab) => {
        const pair = await S.stallingPersistent.setup(lab, { ...qp.options, paused: true });
        const injected = "injected failure right after migrate";
        const result = await runMigration(
          lab,
          {
            ...pair,
            source: Object.assign(Object.create(pair.source) as QemuProcess, {
              monitor: monitorUndoingRepairs(pair.source.monitor, "backup-0", "backup-1"),
            }),
          },
          {
            onStep: (s) => {
              if (s.name === "migration") throw new Error(injected);
            },
          },
        );
        assert.ok(result.error);
        assert.equal(result.error.code, "QEMU_ERROR");
        const message = result.error.message;
        assert.ok(message.startsWith(injected), message);
        assert.match(
          message,
          /could not restore persistence of 'backup-0' on 'disk0' at step "remove 'backup-0'"/i,
        );
        assert.match(
          message,
          /persistent bitmap 'backup-1' on node 'disk0' could not be made persistent again/i,
        );
        assert.doesNotMatch(message, /'backup-2'/);
        const by = new Map(result.source.repaired.map((r) => [r.name, r.ok]));
        assert.deepEqual(Object.fromEntries(by), { "backup-0": false, "backup-1": false, "backup-2": true });
      });
    },
  );
});
