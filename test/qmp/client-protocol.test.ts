import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { QmpClient } from "../../src/qmp/client.js";
import {
  QmpAbortedError,
  QmpCommandError,
  QmpConnectError,
  QmpConnectionClosedError,
  QmpProtocolError,
  QmpTimeoutError,
} from "../../src/qmp/errors.js";
import { FakeQmpServer, type FakeConnection } from "../helpers/fake-qmp.js";

const servers: FakeQmpServer[] = [];
async function serve(options: Parameters<typeof FakeQmpServer.start>[0] = {}): Promise<FakeQmpServer> {
  const s = await FakeQmpServer.start(options);
  servers.push(s);
  return s;
}
after(async () => {
  await Promise.all(servers.map((s) => s.close()));
});

describe("QmpClient against a fake server", () => {
  it("negotiates and exposes the version", async () => {
    const s = await serve();
    const c = await QmpClient.connect(`unix:${s.path}`);
    assert.deepEqual(c.version, { major: 7, minor: 2, micro: 22, package: "fake" });
    assert.deepEqual(await c.execute("query-status"), {});
    c.close();
  });

  it("accepts a bare socket path", async () => {
    const s = await serve();
    const c = await QmpClient.connect(s.path);
    c.close();
  });

  it("maps a command error to QmpCommandError with class, desc, command and arguments", async () => {
    const s = await serve({
      handle: (cmd, conn) => {
        conn.send({ error: { class: "GenericError", desc: "Dirty bitmap 'x' not found" }, id: cmd.id });
      },
    });
    const c = await QmpClient.connect(s.path);
    const err = await c
      .execute("block-dirty-bitmap-remove", { node: "n", name: "x" })
      .catch((e: unknown) => e);
    assert.ok(err instanceof QmpCommandError);
    assert.equal(err.code, "QMP_ERR_COMMAND");
    assert.equal(err.errorClass, "GenericError");
    assert.equal(err.desc, "Dirty bitmap 'x' not found");
    assert.equal(err.command, "block-dirty-bitmap-remove");
    assert.deepEqual(err.args, { node: "n", name: "x" });
    c.close();
  });

  it("routes out-of-order replies by id", async () => {
    const held: { id: unknown; n: number }[] = [];
    let conn: FakeConnection | undefined;
    const s = await serve({
      handle: (cmd, cn) => {
        conn = cn;
        held.push({ id: cmd.id, n: Number(cmd.arguments?.n) });
        if (held.length === 3) for (const h of held.reverse()) conn.send({ return: { n: h.n }, id: h.id });
      },
    });
    const c = await QmpClient.connect(s.path);
    const r = await Promise.all([1, 2, 3].map((n) => c.execute("echo", { n })));
    assert.deepEqual(r, [{ n: 1 }, { n: 2 }, { n: 3 }]);
    c.close();
  });

  it("gives garbage a protocol error and poisons the connection", async () => {
    const s = await serve({
      handle: (_cmd, conn) => {
        conn.sendRaw("this is not json\r\n");
      },
    });
    const c = await QmpClient.connect(s.path);
    const err = await c.execute("query-status").catch((e: unknown) => e);
    assert.ok(err instanceof QmpProtocolError, String(err));
    assert.equal(err.code, "QMP_ERR_PROTOCOL");
    assert.match(err.message, /not JSON.*this is not json/);
    const later = await c.execute("query-status").catch((e: unknown) => e);
    assert.equal(later, err);
  });

  it("gives an oversized line a protocol error", async () => {
    const s = await serve({
      handle: (cmd, conn) => {
        conn.sendRaw(`{"return": "${"x".repeat(5000)}", "id": "${String(cmd.id)}"}\r\n`);
      },
    });
    const c = await QmpClient.connect(s.path, { maxLineBytes: 4096 });
    await assert.rejects(
      c.execute("query-status"),
      (e: unknown) => e instanceof QmpProtocolError && e.message.includes("longer than 4096"),
    );
  });

  it("caps lines at 16 MiB by default", async () => {
    const s = await serve({
      handle: (_cmd, conn) => {
        const chunk = "x".repeat(1024 * 1024);
        conn.sendRaw('{"return": "');
        for (let i = 0; i < 17; i++) conn.sendRaw(chunk);
      },
    });
    const c = await QmpClient.connect(s.path);
    await assert.rejects(c.execute("query-status"), /longer than 16777216 bytes/);
  });

  it("times out a command that gets no reply, and drops its late reply", async () => {
    let pendingId: unknown;
    let conn: FakeConnection | undefined;
    const s = await serve({
      handle: (cmd, cn) => {
        conn = cn;
        if (cmd.execute === "slow") pendingId = cmd.id;
        else cn.send({ return: { ok: cmd.execute }, id: cmd.id });
      },
    });
    const c = await QmpClient.connect(s.path);
    const err = await c.execute("slow", undefined, { timeoutMs: 100 }).catch((e: unknown) => e);
    assert.ok(err instanceof QmpTimeoutError);
    assert.equal(err.code, "QMP_ERR_TIMEOUT");
    assert.equal(c.pendingCount, 0);
    // The late reply arrives now; it must not be taken for the reply of the next command.
    conn?.send({ return: { ok: "slow" }, id: pendingId });
    assert.deepEqual(await c.execute("fast"), { ok: "fast" });
    c.close();
  });

  it("abandons a command when its AbortSignal fires", async () => {
    const s = await serve({ handle: () => undefined });
    const c = await QmpClient.connect(s.path);
    const ac = new AbortController();
    const p = c.execute("hang", undefined, { signal: ac.signal });
    ac.abort(new Error("user pressed Ctrl-C"));
    const err = await p.catch((e: unknown) => e);
    assert.ok(err instanceof QmpAbortedError);
    assert.equal(c.pendingCount, 0);
    await assert.rejects(c.execute("x", undefined, { signal: ac.signal }), QmpAbortedError);
    c.close();
  });

  it("reports an unexpected disconnect with the commands that were pending", async () => {
    const s = await serve({
      handle: (cmd, conn) => {
        if (cmd.execute === "die") conn.destroy();
      },
    });
    const c = await QmpClient.connect(s.path);
    const hang = c.execute("query-migrate").catch((e: unknown) => e);
    const die = c.execute("die").catch((e: unknown) => e);
    const [e1, e2] = await Promise.all([hang, die]);
    assert.ok(e1 instanceof QmpConnectionClosedError);
    assert.equal(e1.expected, false);
    assert.deepEqual(e1.pending, ["query-migrate", "die"]);
    assert.equal(e2, e1);
    assert.ok(c.isClosed);
    assert.ok((await c.closed) instanceof QmpConnectionClosedError);
  });

  it("treats the close after quit as expected", async () => {
    const s = await serve({
      handle: (cmd, conn) => {
        if (cmd.execute === "quit") {
          conn.send({
            timestamp: { seconds: 1, microseconds: 0 },
            event: "SHUTDOWN",
            data: { guest: false },
          });
          conn.send({ return: {}, id: cmd.id });
          conn.end();
        }
      },
    });
    const c = await QmpClient.connect(s.path);
    await c.quit();
    const reason = await c.closed;
    assert.ok(reason instanceof QmpConnectionClosedError);
    assert.equal(reason.expected, true);
  });

  it("times out when the server never greets (another client holds the monitor)", async () => {
    const s = await serve({ greeting: false });
    const err = await QmpClient.connect(s.path, { connectTimeoutMs: 200 }).catch((e: unknown) => e);
    assert.ok(err instanceof QmpTimeoutError);
    assert.match(err.message, /no QMP greeting/);
  });

  it("rejects a greeting that is not QMP", async () => {
    const s = await serve({ greeting: '{"hello": "world"}\r\n' });
    await assert.rejects(QmpClient.connect(s.path, { connectTimeoutMs: 1000 }), QmpProtocolError);
  });

  it("fails to connect to a missing socket with QmpConnectError naming the address", async () => {
    const err = await QmpClient.connect("unix:/tmp/bf-does-not-exist/qmp.sock").catch((e: unknown) => e);
    assert.ok(err instanceof QmpConnectError);
    assert.equal(err.code, "QMP_ERR_CONNECT");
    assert.match(err.message, /unix:\/tmp\/bf-does-not-exist\/qmp\.sock/);
  });

  it("fails to connect to a closed TCP port", async () => {
    await assert.rejects(
      QmpClient.connect("tcp:127.0.0.1:1"),
      (e: unknown) => e instanceof QmpConnectError && e.message.includes("refused"),
    );
  });

  it("delivers an event that arrives before the reply of the command that caused it", async () => {
    const s = await serve({
      handle: (cmd, conn) => {
        conn.send({ timestamp: { seconds: 1, microseconds: 0 }, event: "STOP" });
        conn.send({ return: {}, id: cmd.id });
      },
    });
    const c = await QmpClient.connect(s.path);
    const stop = c.waitForEvent("STOP", { timeoutMs: 2000 });
    await c.execute("stop");
    assert.equal((await stop).event, "STOP");
    c.close();
  });

  it("waitForEvent honours filter, timeout, abort and connection loss", async () => {
    const s = await serve({
      handle: (cmd, conn) => {
        for (const status of ["setup", "active", "completed"]) {
          conn.send({ timestamp: { seconds: 1, microseconds: 0 }, event: "MIGRATION", data: { status } });
        }
        conn.send({ return: {}, id: cmd.id });
        if (cmd.execute === "bye") conn.destroy();
      },
    });
    const c = await QmpClient.connect(s.path);
    const done = c.waitForEvent("MIGRATION", { filter: (e) => e.data.status === "completed" });
    await c.execute("migrate");
    assert.equal((await done).data.status, "completed");
    await assert.rejects(c.waitForEvent("NEVER", { timeoutMs: 50 }), QmpTimeoutError);
    const ac = new AbortController();
    const aborted = c.waitForEvent("NEVER", { signal: ac.signal });
    ac.abort();
    await assert.rejects(aborted, QmpAbortedError);
    const lost = c.waitForEvent("NEVER");
    await c.execute("bye").catch(() => undefined);
    await assert.rejects(lost, QmpConnectionClosedError);
  });

  it("keeps replies flowing through a flood of 100,000 events, with bounded memory", async () => {
    const FLOOD = 100_000;
    const s = await serve({
      handle: (cmd, conn) => {
        if (cmd.execute === "flood") {
          // Interleave: replies to later commands are queued behind parts of the flood.
          const line =
            '{"timestamp": {"seconds": 1732560000, "microseconds": 1}, "event": "MIGRATION_PASS", "data": {"pass": 1}}\r\n';
          const block = line.repeat(1000);
          let sent = 0;
          const pump = (): void => {
            while (sent < FLOOD) {
              sent += 1000;
              if (!conn.socket.write(block)) {
                conn.socket.once("drain", pump);
                return;
              }
            }
          };
          conn.send({ return: {}, id: cmd.id });
          pump();
          return;
        }
        conn.send({ return: { n: cmd.arguments?.n }, id: cmd.id });
      },
    });
    const c = await QmpClient.connect(s.path);
    let seen = 0;
    const off = c.on("MIGRATION_PASS", () => {
      seen++;
    });
    global.gc?.();
    const heapBefore = process.memoryUsage().heapUsed;
    await c.execute("flood");
    const replies = await Promise.all(Array.from({ length: 200 }, (_, n) => c.execute("echo", { n })));
    assert.deepEqual(
      replies.map((r) => (r as { n: number }).n),
      Array.from({ length: 200 }, (_, n) => n),
    );
    // Replies come back after the flood queued before them; the flood is consumed, not buffered.
    const until = Date.now() + 30_000;
    while (seen < FLOOD && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    assert.equal(seen, FLOOD);
    const grown = process.memoryUsage().heapUsed - heapBefore;
    assert.ok(grown < 64 * 1024 * 1024, `heap grew by ${grown} bytes during the flood`);
    off();
    c.close();
  });

  it("drops events nobody listens to without parsing them", async () => {
    const s = await serve({
      handle: (cmd, conn) => {
        conn.sendRaw(
          '{"timestamp": {"seconds": 1, "microseconds": 1}, "event": "MIGRATION_PASS", "data": {"pass": 1}}\r\n'.repeat(
            50_000,
          ),
        );
        conn.send({ return: { done: true }, id: cmd.id });
      },
    });
    const c = await QmpClient.connect(s.path);
    let other = 0;
    c.on("STOP", () => other++);
    assert.deepEqual(await c.execute("x"), { done: true });
    assert.equal(other, 0);
    c.close();
  });
});
