import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { QmpClient } from "../../src/qmp/client.js";
import { QmpCommandError, QmpConnectionClosedError } from "../../src/qmp/errors.js";
import { nullBlockdev } from "../../src/lab/topology.js";
import { writeRange } from "../../src/lab/actions.js";
import { withLab } from "../helpers/lab.js";

describe("QmpClient against real QEMU", () => {
  it("connects over a unix socket, negotiates and reports QEMU's version", async () => {
    await withLab(async (lab) => {
      const vm = await lab.start({ label: "a" });
      const c = await QmpClient.connect(`unix:${vm.monitorSocket}`, { label: "user" });
      assert.ok(c.version.major >= 7, `version ${JSON.stringify(c.version)}`);
      const v = (await c.execute("query-version")) as { qemu: { major: number } };
      assert.equal(v.qemu.major, c.version.major);
      await assert.rejects(
        c.execute("no-such-command"),
        (e: unknown) => e instanceof QmpCommandError && e.errorClass === "CommandNotFound",
      );
      c.close();
    });
  });

  it("adds a bitmap, dirties 1 MiB and reads count 1048576 and a stable sha256", async () => {
    await withLab(async (lab) => {
      const vm = await lab.start({ label: "a", args: nullBlockdev("n0", 64 * 1024 * 1024) });
      const m = vm.monitor;
      await m.addBitmap("n0", "bm0", { granularity: 65536 });
      const empty = await m.bitmapSha256("n0", "bm0");
      await writeRange(m, "n0", 4 * 1024 * 1024, 1024 * 1024);
      const nodes = await m.namedBlockNodes();
      const bm = nodes.find((n) => n["node-name"] === "n0")?.["dirty-bitmaps"]?.find((b) => b.name === "bm0");
      assert.equal(bm?.count, 1048576);
      const h1 = await m.bitmapSha256("n0", "bm0");
      const h2 = await m.bitmapSha256("n0", "bm0");
      assert.match(h1, /^[0-9a-f]{64}$/);
      assert.equal(h1, h2);
      assert.notEqual(h1, empty);
    });
  });

  it("routes 200 concurrent commands to their own replies", async () => {
    await withLab(async (lab) => {
      const vm = await lab.start({ label: "a", args: nullBlockdev("n0", 1 << 30) });
      const m = vm.monitor;
      await Promise.all(
        Array.from({ length: 100 }, (_, i) => m.addBitmap("n0", `b${i}`, { granularity: 512 << (i % 8) })),
      );
      const results = await Promise.all(
        Array.from({ length: 200 }, (_, i) =>
          i % 2 === 0 ? m.qmp.execute("query-status") : m.bitmapSha256("n0", `b${(i - 1) / 2}`),
        ),
      );
      results.forEach((r, i) => {
        if (i % 2 === 0) assert.equal((r as { status: string }).status, "running");
        else assert.match(r as string, /^[0-9a-f]{64}$/);
      });
      const nodes = await m.namedBlockNodes();
      const grans = nodes[0]?.["dirty-bitmaps"]?.map((b) => [b.name, b.granularity]) ?? [];
      assert.equal(grans.length, 100);
      for (const [name, g] of grans) assert.equal(g, 512 << (Number(String(name).slice(1)) % 8));
    });
  });

  it("delivers the events a command causes to a listener registered before it", async () => {
    await withLab(async (lab) => {
      const vm = await lab.start({ label: "a" });
      const c = await QmpClient.connect(vm.monitorSocket, { label: "user" });
      const stop = c.waitForEvent("STOP", { timeoutMs: 5000 });
      const resume = c.waitForEvent("RESUME", { timeoutMs: 5000 });
      await c.execute("stop");
      await c.execute("cont");
      assert.equal((await stop).event, "STOP");
      assert.equal((await resume).event, "RESUME");
      // SHUTDOWN arrives before quit's own reply.
      const shutdown = c.waitForEvent("SHUTDOWN", { timeoutMs: 5000 });
      await c.quit();
      assert.equal((await shutdown).event, "SHUTDOWN");
    });
  });

  it("fails a pending command with connection-closed within a second when QEMU is killed", async () => {
    await withLab(async (lab) => {
      const vm = await lab.start({ label: "a", args: nullBlockdev("n0", 1 << 20) });
      const c = await QmpClient.connect(vm.monitorSocket, { label: "user" });
      // Stop QEMU's main loop with SIGSTOP so the command stays pending, then kill it.
      process.kill(vm.pid, "SIGSTOP");
      const pending = c.execute("query-named-block-nodes", { flat: true }).catch((e: unknown) => e);
      await new Promise((r) => setTimeout(r, 100));
      const t0 = Date.now();
      vm.kill("SIGKILL");
      const err = await pending;
      const took = Date.now() - t0;
      assert.ok(err instanceof QmpConnectionClosedError, String(err));
      assert.equal(err.expected, false);
      assert.deepEqual(err.pending, ["query-named-block-nodes"]);
      assert.ok(took < 1000, `took ${took} ms`);
      await vm.exited;
    });
  });
});
