import { strict as assert } from "node:assert";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { QmpClient } from "../../src/qmp/client.js";
import { QemuMonitor, type QemuFeatures } from "../../src/qemu/monitor.js";
import { featureCacheDir } from "../../src/qemu/feature-cache.js";
import { readSnapshot } from "../../src/qemu/snapshot.js";
import { nullBlockdev } from "../../src/lab/topology.js";
import { FakeQmpServer } from "../helpers/fake-qmp.js";
import { withLab } from "../helpers/lab.js";

/** A client whose commands are recorded, by name, as they are sent. */
async function recording(socket: string): Promise<{ client: QmpClient; sent: string[] }> {
  const client = await QmpClient.connect(socket);
  const sent: string[] = [];
  const execute = client.execute.bind(client);
  client.execute = (command, args, options) => {
    sent.push(command);
    return execute(command, args, options);
  };
  return { client, sent };
}

const FEATURES: QemuFeatures = {
  bitmapMapping: true,
  mappingTransform: false,
  bitmapSha256: true,
  blockGraph: false,
  incomingExitOnError: false,
};

/** The smallest schema whose answers are FEATURES. */
const SCHEMA = [
  { name: "migrate-set-parameters", "meta-type": "command", "arg-type": "0", "ret-type": "1" },
  {
    name: "0",
    "meta-type": "object",
    members: [{ name: "block-bitmap-mapping", type: "[2]" }],
  },
  { name: "1", "meta-type": "object", members: [] },
  { name: "[2]", "meta-type": "array", "element-type": "2" },
  { name: "2", "meta-type": "object", members: [{ name: "node-name", type: "str" }] },
  { name: "x-debug-block-dirty-bitmap-sha256", "meta-type": "command", "arg-type": "1", "ret-type": "1" },
];

const COMMANDS = [
  { name: "query-version" },
  { name: "migrate-set-parameters" },
  { name: "qmp_capabilities" },
];

/** A fake monitor answering query-commands with `commands` (or refusing it) and the schema with SCHEMA. */
async function fake(commands: unknown): Promise<FakeQmpServer> {
  return FakeQmpServer.start({
    handle: (cmd, conn) => {
      if (cmd.execute === "query-commands") {
        if (commands === "refuse") conn.send({ error: { class: "CommandNotFound", desc: "no" }, id: cmd.id });
        else conn.send({ return: commands, id: cmd.id });
      } else if (cmd.execute === "query-qmp-schema") conn.send({ return: SCHEMA, id: cmd.id });
      else conn.send({ return: {}, id: cmd.id });
    },
  });
}

/** The features a fresh connection to `server` reports, and the commands it sent for them. */
async function probe(server: FakeQmpServer): Promise<{ features: QemuFeatures; sent: string[] }> {
  const { client, sent } = await recording(server.path);
  try {
    return { features: await new QemuMonitor(client).features(), sent };
  } finally {
    client.close();
  }
}

describe("the feature cache", () => {
  let dir: string;
  let saved: string | undefined;
  beforeEach(() => {
    saved = process.env.BITFERRY_FEATURE_CACHE;
    dir = path.join(mkdtempSync("/tmp/bf-fc-"), "features");
    process.env.BITFERRY_FEATURE_CACHE = dir;
  });
  afterEach(() => {
    if (saved === undefined) delete process.env.BITFERRY_FEATURE_CACHE;
    else process.env.BITFERRY_FEATURE_CACHE = saved;
    rmSync(path.dirname(dir), { recursive: true, force: true });
  });

  it("a real QEMU's schema is asked once: the next connection to that build gets the same features without it", async () => {
    await withLab(async (lab) => {
      const vm = await lab.start({ label: "fc", args: nullBlockdev("disk0", 1 << 20) });
      const first = await recording(vm.monitorSocket);
      const snap1 = await readSnapshot(new QemuMonitor(first.client));
      first.client.close();
      assert.ok(first.sent.includes("query-qmp-schema"), first.sent.join(" "));
      // query-commands goes first, the schema (asked on its answer) after every other query.
      assert.equal(first.sent[0], "query-commands");
      assert.equal(first.sent.at(-1), "query-qmp-schema");
      assert.equal(readdirSync(dir).length, 1);

      // Straight from the schema, the cache out of the way: the same answers.
      const direct = await QmpClient.connect(vm.monitorSocket);
      const fromSchema = await new QemuMonitor(direct).schemaFeatures();
      direct.close();
      assert.deepEqual(snap1.features, fromSchema);

      const second = await recording(vm.monitorSocket);
      const snap2 = await readSnapshot(new QemuMonitor(second.client));
      second.client.close();
      assert.ok(!second.sent.includes("query-qmp-schema"), second.sent.join(" "));
      assert.deepEqual(snap2.features, snap1.features);
      assert.deepEqual(snap2.version, snap1.version);
    });
  });

  it("remembers a build by its version and its exact command list", async () => {
    const a = await fake(COMMANDS);
    const b = await fake([...COMMANDS, { name: "block-dirty-bitmap-add" }]);
    try {
      assert.ok((await probe(a)).sent.includes("query-qmp-schema"));
      const again = await probe(a);
      assert.deepEqual(again.features, FEATURES);
      assert.ok(!again.sent.includes("query-qmp-schema"));
      // Same version and package, one command more: another build.
      assert.ok((await probe(b)).sent.includes("query-qmp-schema"));
      assert.equal(readdirSync(dir).length, 2);
      const entry = JSON.parse(readFileSync(path.join(dir, readdirSync(dir)[0] ?? ""), "utf8")) as {
        qemu: string;
        features: unknown;
      };
      assert.equal(entry.qemu, "7.2.22 (fake)");
      assert.deepEqual(entry.features, FEATURES);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("an unreadable, foreign or incomplete entry is a miss, and is replaced by the schema's answers", async () => {
    const s = await fake(COMMANDS);
    try {
      await probe(s);
      const [file] = readdirSync(dir);
      assert.ok(file !== undefined);
      const entry = path.join(dir, file);
      const good = JSON.parse(readFileSync(entry, "utf8")) as { key: string; features: QemuFeatures };
      const bad = [
        "{ not json",
        "null",
        JSON.stringify({ ...good, key: "another build" }),
        JSON.stringify({ ...good, features: { ...good.features, incomingExitOnError: undefined } }),
        JSON.stringify({ ...good, features: { ...good.features, bitmapMapping: "yes" } }),
      ];
      for (const text of bad) {
        writeFileSync(entry, text);
        const r = await probe(s);
        assert.ok(r.sent.includes("query-qmp-schema"), text);
        assert.deepEqual(r.features, FEATURES, text);
        assert.deepEqual(JSON.parse(readFileSync(entry, "utf8")), good, text);
      }
    } finally {
      await s.close();
    }
  });

  it("a QEMU that refuses query-commands, or answers it oddly, is asked its schema every time", async () => {
    for (const commands of ["refuse", {}, [{ name: 5 }], ["query-version"]]) {
      const s = await fake(commands);
      try {
        for (let i = 0; i < 2; i++) {
          const r = await probe(s);
          assert.ok(r.sent.includes("query-qmp-schema"), JSON.stringify(commands));
          assert.deepEqual(r.features, FEATURES);
        }
        assert.deepEqual(existsSync(dir) ? readdirSync(dir) : [], []);
      } finally {
        await s.close();
      }
    }
  });

  it("BITFERRY_FEATURE_CACHE=off: nothing remembered, the schema asked each time", async () => {
    process.env.BITFERRY_FEATURE_CACHE = "off";
    const s = await fake(COMMANDS);
    try {
      for (let i = 0; i < 2; i++) assert.ok((await probe(s)).sent.includes("query-qmp-schema"));
    } finally {
      await s.close();
    }
    assert.throws(() => readdirSync(dir), { code: "ENOENT" });
  });

  it("a cache that cannot be written costs only the schema query", async () => {
    writeFileSync(path.join(path.dirname(dir), "features"), "a file where the directory would be");
    const s = await fake(COMMANDS);
    try {
      for (let i = 0; i < 2; i++) {
        const r = await probe(s);
        assert.ok(r.sent.includes("query-qmp-schema"));
        assert.deepEqual(r.features, FEATURES);
      }
    } finally {
      await s.close();
    }
  });

  it("lives under bitferry's cache directory unless told otherwise", () => {
    assert.equal(featureCacheDir({ BITFERRY_CACHE_DIR: "/c" }), "/c/qemu-features");
    assert.equal(featureCacheDir({ BITFERRY_CACHE_DIR: "/c", BITFERRY_FEATURE_CACHE: "/f" }), "/f");
    assert.equal(featureCacheDir({ BITFERRY_FEATURE_CACHE: "off" }), undefined);
  });
});
