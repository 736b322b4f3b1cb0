#!/usr/bin/env node
// Sets up what `npm run demo` (first-run.mjs demo) or `npm test` (first-run.mjs test) needs and is missing, then
// returns so the command runs. Plain Node, no dependencies: it runs before `npm ci`. When everything is present it
// costs one dpkg-query and two small JSON reads. It prints one line for each thing it installs; without root, when
// something needs root, it installs nothing and prints the exact command to run instead (exit status 1).
//
// DESIGN.md section 6, "First run". BITFERRY_SKIP_FIRST_RUN=1 skips every check; --dry-run only lists what is
// missing.
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const mode = process.argv[2];
if (mode !== "demo" && mode !== "test") {
  console.error("usage: node scripts/first-run.mjs demo|test");
  process.exit(2);
}
if (process.env.BITFERRY_SKIP_FIRST_RUN === "1") process.exit(0);

const isRoot = process.getuid?.() === 0;
// stderr: stdout stays for the command that runs next (`npm run demo -- --json` prints one document there).
const log = (line) => console.error(`first-run: ${line}`);

// Debian packages, each with what it is for (the line printed when it is installed).
const DEMO_PACKAGES = {
  "qemu-system-x86": "QEMU (the two VMs)",
  "qemu-utils": "qemu-img (the lab's disk images)",
  "libnbd-bin": "nbdinfo and nbdcopy (the backup proof reads the bitmaps over NBD)",
};
const TEST_PACKAGES = {
  ...DEMO_PACKAGES,
  chromium: "Chromium (the picture tests render the HTML)",
  "openssh-server": "sshd (the two-host tests)",
  "openssh-client": "ssh (the two-host tests)",
  iproute2: "ip (network namespaces for the two-host tests)",
  openssl: "openssl (TLS credentials for the tests)",
};

function run(cmd, args, options = {}) {
  return spawnSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], ...options });
}

/** Packages of `wanted` that dpkg does not list as installed; undefined when this is not a dpkg system. */
function missingDebianPackages(wanted) {
  const r = run("dpkg-query", ["-W", "-f=${Package} ${db:Status-Abbrev}\\n", ...wanted]);
  if (r.error) return undefined;
  const installed = new Set(
    r.stdout
      .split("\n")
      .map((l) => l.trim().split(/\s+/))
      .filter(([, status]) => status === "ii")
      .map(([name]) => name.split(":")[0]),
  );
  return wanted.filter((p) => !installed.has(p));
}

/** npm dependencies missing or at another version than package-lock.json says (what `npm ci` would change). */
function npmStale() {
  const lockFile = path.join(ROOT, "package-lock.json");
  const installedFile = path.join(ROOT, "node_modules", ".package-lock.json");
  if (!existsSync(installedFile)) return "node_modules is missing";
  const lock = JSON.parse(readFileSync(lockFile, "utf8")).packages ?? {};
  const have = JSON.parse(readFileSync(installedFile, "utf8")).packages ?? {};
  for (const [key, entry] of Object.entries(lock)) {
    if (key === "" || !key.startsWith("node_modules/")) continue;
    const got = have[key];
    // Optional packages for other platforms (esbuild's, for one) are rightly absent.
    if (!got) {
      if (entry.optional) continue;
      return `${key.slice("node_modules/".length)} is not installed`;
    }
    if (got.version !== entry.version)
      return `${key.slice("node_modules/".length)} is ${got.version}, not ${entry.version}`;
  }
  return undefined;
}

function qemu10Prefix() {
  return process.env.BITFERRY_QEMU10_PREFIX ?? "/opt/bitferry-qemu-10.0";
}

/** The 10.0 build beside 7.2 is needed (and installable) on Debian 12 only; newer releases ship QEMU >= 10. */
function qemu10Needed() {
  if (process.env.BITFERRY_QEMU_BUILDS) return false;
  let osRelease = "";
  try {
    osRelease = readFileSync("/etc/os-release", "utf8");
  } catch {
    return false;
  }
  if (!/^VERSION_CODENAME=bookworm$/m.test(osRelease)) return false;
  const prefix = qemu10Prefix();
  return !(
    existsSync(path.join(prefix, ".bitferry-qemu-10")) &&
    existsSync(path.join(prefix, "usr/bin/qemu-system-x86_64"))
  );
}

/** Same rule as src/util/cache-dir.ts. */
function cacheDir() {
  if (process.env.BITFERRY_CACHE_DIR) return process.env.BITFERRY_CACHE_DIR;
  if (isRoot) return "/var/cache/bitferry";
  return path.join(process.env.XDG_CACHE_HOME ?? path.join(homedir(), ".cache"), "bitferry");
}

function guestMissing() {
  try {
    const c = JSON.parse(readFileSync(path.join(cacheDir(), "guest", "current.json"), "utf8"));
    return !(existsSync(c.kernel) && existsSync(c.initrd));
  } catch {
    return true;
  }
}

function fail(lines) {
  // Indented lines are commands to copy: printed bare.
  for (const l of lines) console.error(l.startsWith("  ") ? l : `first-run: ${l}`);
  process.exit(1);
}

function check(r, what) {
  if (r.error || r.status !== 0) {
    const detail = r.error
      ? r.error.message
      : (r.stderr || r.stdout || "").trim().split("\n").slice(-3).join(" | ");
    fail([`${what} failed: ${detail}`]);
  }
}

const packages = mode === "test" ? TEST_PACKAGES : DEMO_PACKAGES;
const missingPkgs = missingDebianPackages(Object.keys(packages));
const stale = npmStale();
const needQemu10 = mode === "test" && qemu10Needed();

// --dry-run: say what would be installed, install nothing.
if (process.argv.includes("--dry-run")) {
  for (const p of missingPkgs ?? []) log(`would install ${p}: ${packages[p]}`);
  if (needQemu10) log(`would install QEMU 10.0 beside the system QEMU into ${qemu10Prefix()}`);
  if (stale !== undefined) log(`would install the npm dependencies (npm ci: ${stale})`);
  if (guestMissing())
    log(`would build the guest kernel and initramfs into ${path.join(cacheDir(), "guest")}`);
  process.exit(0);
}

// Nothing that needs root is done until it is known that everything can be.
if (missingPkgs === undefined) {
  // Not Debian or Ubuntu: the packages cannot be checked by name; the binaries can.
  const absent = ["qemu-system-x86_64", "qemu-img", "nbdinfo", "nbdcopy"].filter(
    (b) => run(b, ["--version"]).error,
  );
  if (absent.length > 0)
    fail([
      `missing ${absent.join(", ")}; this script installs them on Debian or Ubuntu only.`,
      "Install QEMU (system emulator for x86_64, qemu-img) and libnbd's tools with your package manager, then run again.",
    ]);
} else if (!isRoot && (missingPkgs.length > 0 || needQemu10)) {
  const cmds = [];
  if (missingPkgs.length > 0)
    cmds.push(`sudo apt-get update && sudo apt-get install -y ${missingPkgs.join(" ")}`);
  if (needQemu10)
    cmds.push(
      `sudo ${path.relative(process.cwd(), path.join(ROOT, ".ci", "install-qemu-10.sh")) || ".ci/install-qemu-10.sh"}`,
    );
  fail([
    `missing ${[...missingPkgs, ...(needQemu10 ? ["QEMU 10.0 beside the system QEMU"] : [])].join(", ")}, and installing needs root. Run:`,
    ...cmds.map((c) => `  ${c}`),
  ]);
}

const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
if (missingPkgs && missingPkgs.length > 0) {
  for (const p of missingPkgs) log(`installing ${p}: ${packages[p]}`);
  check(run("apt-get", ["update", "-qq"], { env }), "apt-get update");
  check(
    run("apt-get", ["install", "-y", "-qq", ...missingPkgs], { env }),
    `apt-get install ${missingPkgs.join(" ")}`,
  );
}

if (needQemu10) {
  log(`installing QEMU 10.0 beside the system QEMU into ${qemu10Prefix()} (.ci/install-qemu-10.sh)`);
  check(run(path.join(ROOT, ".ci", "install-qemu-10.sh"), [], { env }), ".ci/install-qemu-10.sh");
}

if (stale !== undefined) {
  log(`installing the npm dependencies (npm ci: ${stale})`);
  check(
    run(process.platform === "win32" ? "npm.cmd" : "npm", ["ci", "--no-audit", "--no-fund"], { cwd: ROOT }),
    "npm ci",
  );
}

if (guestMissing()) {
  // The guest is built from Debian's packages with apt-get download: a machine that never ran apt-get update
  // knows none.
  if (isRoot && run("apt-cache", ["show", "linux-image-cloud-amd64"]).status !== 0)
    check(run("apt-get", ["update", "-qq"], { env }), "apt-get update");
  // The builder lives in src/lab (TypeScript), so it runs once the npm dependencies (tsx) are there.
  const r = spawnSync(process.execPath, ["--import", "tsx", path.join(ROOT, "scripts", "build-guest.ts")], {
    cwd: ROOT,
    encoding: "utf8",
    stdio: ["ignore", "inherit", "inherit"],
  });
  check(r, "building the guest kernel and initramfs (see above)");
}
