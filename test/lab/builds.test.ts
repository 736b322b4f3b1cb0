import { describe, it, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { writeRange } from "../../src/lab/actions.js";
import type { QemuBuild } from "../../src/lab/build.js";
import {
  buildPairs,
  DEFAULT_QEMU10_PREFIX,
  discoverBuilds,
  labelVersion,
  parseBuildList,
  QEMU10_MISSING_HINT,
  type BuildPair,
} from "../../src/lab/builds.js";
import { Lab } from "../../src/lab/lab.js";
import type { QemuProcess } from "../../src/lab/process.js";
import { nullBlockdev } from "../../src/lab/topology.js";
import type { QemuMonitor } from "../../src/qemu/monitor.js";
import { QmpConnectionClosedError } from "../../src/qmp/errors.js";
import { withLab } from "../helpers/lab.js";

const MiB = 1024 * 1024;
const DISK = 64 * MiB;
const GRANULARITY = 64 * 1024;
/** Three ranges, one touching the last granule: a serialization bug at either end changes the hash. */
const WRITES: readonly [offset: number, length: number][] = [
  [4 * MiB, MiB],
  [10 * MiB, 64 * 1024],
  [DISK - 128 * 1024, 128 * 1024],
];
const DIRTY_BYTES = WRITES.reduce((sum, [, len]) => sum + len, 0);
const NO_SWITCHOVER_START = ["-global", "migration.send-switchover-start=off"];

const builds = discoverBuilds();

function versionOf(build: QemuBuild): [number, number] {
  const v = labelVersion(build.label);
  assert.ok(v, `build label '${build.label}' is not a version; is ${build.systemBinary} installed?`);
  return v;
}

function atLeast(build: QemuBuild, major: number, minor: number): boolean {
  const [a, b] = versionOf(build);
  return a > major || (a === major && b >= minor);
}

/** Reference R28: a 10.0+ source sends MIG_CMD_SWITCHOVER_START, which QEMU before 10.0 does not know. */
function isR28Pair(pair: BuildPair): boolean {
  return atLeast(pair.source, 10, 0) && !atLeast(pair.destination, 10, 0);
}

const has10 = builds.some((b) => labelVersion(b.label)?.[0] === 10);

interface BitmapState {
  count: number;
  granularity: number;
  sha256: string;
}

async function bitmapState(m: QemuMonitor, node = "n0", name = "bm0"): Promise<BitmapState> {
  const nodes = await m.namedBlockNodes();
  const bm = nodes.find((n) => n["node-name"] === node)?.["dirty-bitmaps"]?.find((b) => b.name === name);
  assert.ok(bm, `${m.label}: no bitmap ${node}/${name}`);
  return { count: bm.count, granularity: bm.granularity, sha256: await m.bitmapSha256(node, name) };
}

async function dirty(m: QemuMonitor): Promise<void> {
  for (const [offset, length] of WRITES) await writeRange(m, "n0", offset, length);
}

async function withBuildLab<T>(build: QemuBuild, fn: (lab: Lab) => Promise<T>): Promise<T> {
  const lab = Lab.create({ build });
  try {
    return await fn(lab);
  } finally {
    await lab.cleanup();
  }
}

/** The final MIGRATION status a process reports, or "exited" when its monitor closed before any. */
function outcome(vm: QemuProcess): Promise<string> {
  return vm.qmp
    .waitForEvent("MIGRATION", {
      filter: (e) => ["completed", "failed", "cancelled"].includes(String(e.data.status)),
      timeoutMs: 15_000,
    })
    .then(
      (e) => String(e.data.status),
      (err: unknown) => {
        if (err instanceof QmpConnectionClosedError) return "exited";
        throw err;
      },
    );
}

interface Migration {
  src: QemuProcess;
  dst: QemuProcess;
  before: BitmapState;
  srcOutcome: Promise<string>;
  dstOutcome: Promise<string>;
}

/**
 * A plain bitmap migration by hand, as bitferry's driver will do it: destination `-incoming defer`, `dirty-bitmaps`
 * and `events` on both sides, `migrate-incoming` then `migrate` over a unix socket. `prepare` runs on the
 * destination before `migrate-incoming`.
 */
async function startMigration(
  lab: Lab,
  pair: BuildPair,
  options: {
    sourceArgs?: string[];
    exitOnError?: boolean;
    prepare?: (dst: QemuMonitor) => Promise<void>;
  } = {},
): Promise<Migration> {
  const src = await lab.start({
    label: "src",
    build: pair.source,
    args: [...nullBlockdev("n0", DISK), ...(options.sourceArgs ?? [])],
  });
  const dst = await lab.start({
    label: "dst",
    build: pair.destination,
    args: nullBlockdev("n0", DISK),
    incoming: "defer",
  });
  for (const vm of [src, dst])
    await vm.monitor.setMigrationCapabilities({ "dirty-bitmaps": true, events: true });
  await src.monitor.addBitmap("n0", "bm0", { granularity: GRANULARITY });
  await dirty(src.monitor);
  const before = await bitmapState(src.monitor);
  assert.equal(before.count, DIRTY_BYTES);
  await options.prepare?.(dst.monitor);
  const uri = `unix:${lab.path("mig")}`;
  const srcOutcome = outcome(src);
  const dstOutcome = outcome(dst);
  await dst.monitor.migrateIncoming(uri, options.exitOnError);
  await src.monitor.migrate(uri);
  return { src, dst, before, srcOutcome, dstOutcome };
}

async function assertBitmapArrived(m: Migration): Promise<void> {
  assert.deepEqual([await m.srcOutcome, await m.dstOutcome], ["completed", "completed"]);
  assert.equal((await m.dst.monitor.migrationInfo()).status, "completed");
  assert.deepEqual(await bitmapState(m.dst.monitor), m.before);
}

function pairTitle(p: BuildPair): string {
  return `${p.source.label} -> ${p.destination.label}`;
}

describe("QEMU build discovery (pure)", () => {
  const system: QemuBuild = { label: "7.2", systemBinary: "qemu", imgBinary: "img", env: {}, extraArgs: [] };

  it("returns only the system build when the 10.0 prefix is absent", () => {
    const found = discoverBuilds({ env: {}, exists: () => false, system: () => system, version: () => "x" });
    assert.deepEqual(found, [system]);
  });

  it("adds the prefix build with its own module dir and data dirs, labelled by --version", () => {
    const seen: [string, Record<string, string>][] = [];
    const found = discoverBuilds({
      env: { BITFERRY_QEMU10_PREFIX: "/p" },
      exists: (f) => f === "/p/usr/bin/qemu-system-x86_64",
      system: () => system,
      version: (bin, env) => {
        seen.push([bin, env]);
        return "10.0";
      },
    });
    assert.deepEqual(found[1], {
      label: "10.0",
      systemBinary: "/p/usr/bin/qemu-system-x86_64",
      imgBinary: "/p/usr/bin/qemu-img",
      env: { QEMU_MODULE_DIR: "/p/usr/lib/x86_64-linux-gnu/qemu" },
      extraArgs: ["-L", "/p/usr/share/qemu", "-L", "/p/usr/share/seabios"],
    });
    // --version runs with the build's own environment, not the caller's.
    assert.deepEqual(seen, [
      ["/p/usr/bin/qemu-system-x86_64", { QEMU_MODULE_DIR: "/p/usr/lib/x86_64-linux-gnu/qemu" }],
    ]);
  });

  it("looks in /opt/bitferry-qemu-10.0 by default and refuses a prefix whose binary does not run", () => {
    const looked: string[] = [];
    assert.throws(
      () =>
        discoverBuilds({
          env: {},
          exists: (f) => {
            looked.push(f);
            return true;
          },
          system: () => system,
          version: () => undefined,
        }),
      /exists but '--version' fails; reinstall with \.ci\/install-qemu-10\.sh --force/,
    );
    assert.deepEqual(looked, [`${DEFAULT_QEMU10_PREFIX}/usr/bin/qemu-system-x86_64`]);
  });

  it("takes BITFERRY_QEMU_BUILDS instead of discovering, with defaults and unique labels", () => {
    const found = discoverBuilds({
      env: {
        BITFERRY_QEMU_BUILDS: JSON.stringify([
          { systemBinary: "/a/qemu", imgBinary: "/a/img" },
          {
            label: "7.2",
            systemBinary: "/b/qemu",
            imgBinary: "/b/img",
            env: { X: "1" },
            extraArgs: ["-L", "/d"],
          },
          { label: "7.2", systemBinary: "/c/qemu", imgBinary: "/c/img" },
        ]),
      },
      exists: () => assert.fail("no discovery with an explicit list"),
      system: () => assert.fail("no system build with an explicit list"),
      version: (bin) => (bin === "/a/qemu" ? "9.2" : undefined),
    });
    assert.deepEqual(
      found.map((b) => [b.label, b.systemBinary, b.env, b.extraArgs]),
      [
        ["9.2", "/a/qemu", {}, []],
        ["7.2", "/b/qemu", { X: "1" }, ["-L", "/d"]],
        ["7.2#2", "/c/qemu", {}, []],
      ],
    );
  });

  it("rejects a malformed BITFERRY_QEMU_BUILDS with the offending field", () => {
    assert.throws(() => parseBuildList("[{"), /BITFERRY_QEMU_BUILDS is not JSON/);
    assert.throws(() => parseBuildList("[]"), /BITFERRY_QEMU_BUILDS: \(root\)/);
    assert.throws(() => parseBuildList('[{"systemBinary":"q"}]'), /BITFERRY_QEMU_BUILDS: 0\.imgBinary/);
  });

  it("pairs every build with itself first, then every cross pair both ways", () => {
    const [a, b, c] = ["7.2", "10.0", "9.2"].map((label) => ({ ...system, label })) as [
      QemuBuild,
      QemuBuild,
      QemuBuild,
    ];
    assert.deepEqual(buildPairs([a, b]).map(pairTitle), [
      "7.2 -> 7.2",
      "10.0 -> 10.0",
      "7.2 -> 10.0",
      "10.0 -> 7.2",
    ]);
    const three = buildPairs([a, b, c]).map(pairTitle);
    assert.equal(three.length, 9);
    assert.equal(new Set(three).size, 9);
    assert.deepEqual(buildPairs([]), []);
  });
});

describe("QEMU builds on this machine", () => {
  it(
    has10 ? "QEMU 10.0 is installed: every cross-version pair runs" : QEMU10_MISSING_HINT,
    (t: TestContext) => {
      const titles = buildPairs(builds).map(pairTitle);
      assert.equal(titles.length, builds.length ** 2);
      if (has10) {
        const ten = builds.find((b) => labelVersion(b.label)?.[0] === 10)!;
        assert.ok(ten.systemBinary.startsWith("/"), ten.systemBinary);
        // The prefix's own folders must exist, or its QEMU silently falls back to the system's.
        for (const dir of [...Object.values(ten.env), ...ten.extraArgs.filter((a) => a !== "-L")])
          assert.ok(existsSync(dir), `${dir} missing`);
        t.diagnostic(`builds: ${builds.map((b) => `${b.label} (${b.systemBinary})`).join(", ")}`);
      } else {
        t.diagnostic(QEMU10_MISSING_HINT);
        console.log(
          `\n*** ${QEMU10_MISSING_HINT}; only same-version pairs of ${builds.map((b) => b.label).join(", ")} run ***\n`,
        );
        assert.ok(
          titles.every((x) => !x.includes("10.0")),
          titles.join(", "),
        );
      }
      assert.ok(titles.includes(`${builds[0]!.label} -> ${builds[0]!.label}`));
    },
  );

  for (const build of builds) {
    it(`${build.label}: query-version, qemu-img and a dirty bitmap's count and sha256`, async () => {
      const [major, minor] = versionOf(build);
      await withBuildLab(build, async (lab) => {
        const vm = await lab.start({ label: "a", args: nullBlockdev("n0", DISK) });
        const m = vm.monitor;
        const v = (await m.qmp.execute("query-version")) as { qemu: { major: number; minor: number } };
        assert.deepEqual([v.qemu.major, v.qemu.minor], [major, minor]);
        assert.match(
          await lab.qemuImg(["--version"]),
          new RegExp(`^qemu-img version ${major}\\.${minor}\\.`),
        );

        await m.addBitmap("n0", "bm0", { granularity: GRANULARITY });
        const empty = await bitmapState(m);
        assert.equal(empty.count, 0);
        await dirty(m);
        const state = await bitmapState(m);
        assert.equal(state.count, DIRTY_BYTES);
        assert.equal(state.granularity, GRANULARITY);
        assert.match(state.sha256, /^[0-9a-f]{64}$/);
        assert.notEqual(state.sha256, empty.sha256);
      });
    });

    it(`${build.label}: the probes R28 handling relies on (switchover-start property, exit-on-error)`, async () => {
      await withBuildLab(build, async (lab) => {
        const m = (await lab.start({ label: "a" })).monitor;
        // The migration object is not in the QOM tree, so this class-level listing is all a client can see;
        // its default-value ignores -global (checked in docs/qemu-versions.md).
        const props = (await m.qmp.execute("qom-list-properties", { typename: "migration" })) as {
          name: string;
          type: string;
          "default-value"?: unknown;
        }[];
        const prop = props.find((p) => p.name === "send-switchover-start");
        if (atLeast(build, 10, 0))
          assert.deepEqual(prop, {
            name: "send-switchover-start",
            type: "bool",
            description: "on/off",
            "default-value": true,
          });
        else assert.equal(prop, undefined);
        assert.equal((await m.features()).incomingExitOnError, atLeast(build, 9, 1));
      });
    });
  }

  for (const pair of buildPairs(builds)) {
    if (!isR28Pair(pair)) {
      it(`${pairTitle(pair)}: a plain bitmap migration arrives with the same count and sha256`, async () => {
        await withLab(async (lab) => {
          await assertBitmapArrived(await startMigration(lab, pair));
        });
      });
      continue;
    }

    it(`${pairTitle(pair)}: R28, the destination exits on switchover-start while the source usually says completed`, async (t: TestContext) => {
      await withLab(async (lab) => {
        const m = await startMigration(lab, pair);
        const [src, dst] = await Promise.all([m.srcOutcome, m.dstOutcome]);
        const exit = await m.dst.exited;
        t.diagnostic(
          `source ${src}; destination ${dst}, exit ${JSON.stringify(exit)}: ${m.dst.stderr.trim().replace(/\n/g, " | ")}`,
        );
        assert.equal(dst, "failed");
        assert.deepEqual(exit, { code: 1, signal: null });
        assert.match(m.dst.stderr, /MIG_CMD 0xb unknown \(len 0x0\)/);
        assert.match(m.dst.stderr, /load of migration failed: Invalid argument/);
        // The source has no return path: it usually "completes" into the dead socket (and then only the
        // destination tells), and sometimes fails on the closed socket first (1 run in about 20 here).
        assert.ok(src === "completed" || src === "failed", src);
        const info = await m.src.monitor.migrationInfo();
        const status = await m.src.monitor.status();
        t.diagnostic(`source query-migrate ${JSON.stringify(info)}; query-status ${JSON.stringify(status)}`);
        assert.equal(info.status, src);
        if (src === "completed") {
          assert.equal(info["error-desc"], undefined);
          assert.equal(status.status, "postmigrate");
        } else {
          assert.match(info["error-desc"] ?? "", /Unable to write to socket|Broken pipe|Connection reset/);
          assert.equal(status.status, "running");
        }
        // The way back (reference §9 step 10): either way the source still holds the bitmap, and cont resumes it.
        assert.deepEqual(await bitmapState(m.src.monitor), m.before);
        if (status.status === "postmigrate") await m.src.monitor.cont();
        assert.equal((await m.src.monitor.status()).status, "running");
      });
    });

    it(`${pairTitle(pair)}: -global migration.send-switchover-start=off on the source avoids R28`, async () => {
      await withLab(async (lab) => {
        await assertBitmapArrived(await startMigration(lab, pair, { sourceArgs: NO_SWITCHOVER_START }));
      });
    });
  }

  for (const build of builds.filter((b) => atLeast(b, 10, 0))) {
    it(`${build.label}: a destination with exit-on-error=false survives a fatal bitmap error and reports it`, async () => {
      await withLab(async (lab) => {
        const m = await startMigration(
          lab,
          { source: build, destination: build },
          {
            exitOnError: false,
            // Reference R11: a same-named bitmap on the destination is fatal to the incoming migration.
            prepare: (dst) => dst.addBitmap("n0", "bm0"),
          },
        );
        assert.deepEqual([await m.srcOutcome, await m.dstOutcome], ["failed", "failed"]);
        assert.ok(m.dst.alive, "destination exited despite exit-on-error=false");
        assert.deepEqual(await m.dst.monitor.migrationInfo(), {
          status: "failed",
          "error-desc": "load of migration failed: Invalid argument",
        });
        assert.equal((await m.dst.monitor.status()).status, "inmigrate");
        // Only stderr names the bitmap; error-desc is generic.
        assert.match(m.dst.stderr, /Bitmap with the same name \('bm0'\) already exists on destination/);
        const srcInfo = await m.src.monitor.migrationInfo();
        assert.equal(srcInfo.status, "failed");
        assert.match(
          srcInfo["error-desc"] ?? "",
          /Unable to write to socket: (Broken pipe|Connection reset by peer)/,
        );
        assert.equal((await m.src.monitor.status()).status, "running");
        assert.deepEqual(await bitmapState(m.src.monitor), m.before);
      });
    });
  }
});
