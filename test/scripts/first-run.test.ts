import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync, type SpawnSyncOptions } from "node:child_process";
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";

/**
 * scripts/first-run.mjs, the check `npm run demo` and `npm test` start with. Nothing here installs anything: the
 * cases that would are run with --dry-run, without root (it must stop first), or on a copy of the script.
 */

const root = path.join(import.meta.dirname, "..", "..");
const script = path.join(root, "scripts", "first-run.mjs");
let tmp: string;
let fakeBin: string;

function firstRun(args: string[], options: SpawnSyncOptions & { file?: string } = {}) {
  const r = spawnSync(process.execPath, [options.file ?? script, ...args], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
    ...options,
  });
  return { status: r.status, stdout: String(r.stdout), stderr: String(r.stderr) };
}

before(() => {
  tmp = mkdtempSync("/tmp/bf-fr-");
  chmodSync(tmp, 0o755);
  fakeBin = path.join(tmp, "bin");
  mkdirSync(fakeBin);
  // dpkg as on a machine without chromium and openssh-server.
  writeFileSync(
    path.join(fakeBin, "dpkg-query"),
    '#!/bin/sh\n/usr/bin/dpkg-query "$@" | grep -v -e "^chromium " -e "^openssh-server "\n',
  );
  chmodSync(path.join(fakeBin, "dpkg-query"), 0o755);
});

after(() => {
  rmSync(tmp, { recursive: true, force: true });
});

const withFakeDpkg = (): NodeJS.ProcessEnv => ({
  ...process.env,
  PATH: `${fakeBin}:${process.env.PATH ?? ""}`,
});

describe("first run", () => {
  it("with everything present it installs nothing and prints nothing", () => {
    const r = firstRun(["test"]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, "");
    assert.equal(r.stderr, "");
  });

  it("finds what is missing: Debian packages, QEMU 10.0, the guest", () => {
    const r = firstRun(["test", "--dry-run"], {
      env: {
        ...withFakeDpkg(),
        BITFERRY_CACHE_DIR: path.join(tmp, "empty-cache"),
        BITFERRY_QEMU10_PREFIX: path.join(tmp, "no-qemu10"),
      },
    });
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stderr.trim().split("\n");
    assert.match(lines[0] ?? "", /^first-run: would install chromium: /);
    assert.match(lines[1] ?? "", /^first-run: would install openssh-server: /);
    assert.ok(lines.some((l) => l.includes("would install QEMU 10.0")));
    assert.ok(
      lines.some((l) => l.includes(`would build the guest kernel and initramfs into ${tmp}/empty-cache`)),
    );
    assert.ok(!lines.some((l) => l.includes("npm")), "node_modules is up to date here");
  });

  it("the demo needs less than the tests", () => {
    const r = firstRun(["demo", "--dry-run"], { env: withFakeDpkg() });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, "");
  });

  it("npm dependencies: missing, or at another version than package-lock.json, means npm ci", () => {
    const copy = path.join(tmp, "clone");
    mkdirSync(path.join(copy, "scripts"), { recursive: true });
    copyFileSync(script, path.join(copy, "scripts", "first-run.mjs"));
    const lock = {
      packages: {
        "": { name: "x" },
        "node_modules/left-pad": { version: "1.3.0" },
        "node_modules/@esbuild/other-os": { version: "0.1.0", optional: true },
      },
    };
    writeFileSync(path.join(copy, "package-lock.json"), JSON.stringify(lock));
    const file = path.join(copy, "scripts", "first-run.mjs");
    const missing = firstRun(["demo", "--dry-run"], { file });
    assert.match(missing.stderr, /would install the npm dependencies \(npm ci: node_modules is missing\)/);
    mkdirSync(path.join(copy, "node_modules"));
    const installed = { packages: { "node_modules/left-pad": { version: "1.2.0" } } };
    writeFileSync(path.join(copy, "node_modules", ".package-lock.json"), JSON.stringify(installed));
    const stale = firstRun(["demo", "--dry-run"], { file });
    assert.match(stale.stderr, /npm ci: left-pad is 1\.2\.0, not 1\.3\.0/);
    installed.packages["node_modules/left-pad"].version = "1.3.0";
    writeFileSync(path.join(copy, "node_modules", ".package-lock.json"), JSON.stringify(installed));
    const fresh = firstRun(["demo", "--dry-run"], { file });
    assert.doesNotMatch(fresh.stderr, /npm/, "an optional package for another platform may be absent");
  });

  it("without root it stops at once with the exact command, and installs nothing", () => {
    const r = firstRun(["test"], {
      env: { ...withFakeDpkg(), HOME: tmp, BITFERRY_CACHE_DIR: path.join(tmp, "nobody-cache") },
      uid: 65534,
      gid: 65534,
    });
    assert.equal(r.status, 1);
    assert.equal(r.stdout, "");
    assert.match(r.stderr, /missing chromium, openssh-server, and installing needs root\. Run:/);
    assert.match(r.stderr, /\n {2}sudo apt-get update && sudo apt-get install -y chromium openssh-server\n/);
    assert.doesNotMatch(r.stderr, /installing (chromium|openssh|the npm)/);
  });

  it("without dpkg (not Debian or Ubuntu) it says what to install by hand", () => {
    const r = firstRun(["demo"], { env: { ...process.env, PATH: path.join(tmp, "nothing") } });
    assert.equal(r.status, 1);
    assert.match(
      r.stderr,
      /missing qemu-system-x86_64, qemu-img, nbdinfo, nbdcopy; this script installs them on Debian or Ubuntu only/,
    );
  });
});
