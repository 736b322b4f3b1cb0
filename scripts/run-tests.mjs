#!/usr/bin/env node
// Runs the test suite with node's own runner (Node 20 has no glob for --test), then checks that no QEMU process
// the tests started is still alive. Usage: npm test [-- file-or-folder ...]
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

const roots = process.argv.slice(2).filter((a) => !a.startsWith("--"));
const passThrough = process.argv.slice(2).filter((a) => a.startsWith("--"));

function collect(p, out) {
  const st = statSync(p);
  if (st.isDirectory()) {
    for (const e of readdirSync(p).sort()) {
      if (e === "fixtures" || e === "fuzz-corpus" || e === "helpers") continue;
      collect(path.join(p, e), out);
    }
  } else if (p.endsWith(".test.ts")) out.push(p);
  return out;
}

const files = (roots.length > 0 ? roots : ["test"]).flatMap((r) => collect(r, []));
if (files.length === 0) {
  console.error("no test files found");
  process.exit(2);
}

const stateDir = mkdtempSync(path.join(tmpdir(), "bf-test-"));
const pidsFile = path.join(stateDir, "pids");
const result = spawnSync(
  process.execPath,
  ["--import", "tsx", "--test", "--test-reporter=spec", "--test-concurrency=2", ...passThrough, ...files],
  {
    stdio: "inherit",
    // The feature cache starts empty for every run: a test sees what its QEMU says, not what an earlier run kept.
    env: {
      ...process.env,
      BITFERRY_LAB_PIDS_FILE: pidsFile,
      BITFERRY_FEATURE_CACHE: path.join(stateDir, "qemu-features"),
    },
  },
);

let leaked = [];
if (existsSync(pidsFile)) {
  const pids = readFileSync(pidsFile, "utf8").split("\n").filter(Boolean).map(Number);
  for (const pid of pids) {
    let alive = false;
    try {
      // The pid may have been reused since: only a lab QEMU (named bitferry-lab-*) counts.
      alive = readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("bitferry-lab-");
    } catch {
      alive = false;
    }
    if (alive) {
      leaked.push(pid);
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        /* already gone */
      }
    }
  }
  console.log(
    `\nQEMU processes started by the tests: ${pids.length}; still running at the end: ${leaked.length}`,
  );
}
rmSync(stateDir, { recursive: true, force: true });
if (leaked.length > 0) {
  console.error(
    `FAIL: the tests left QEMU processes running (pids ${leaked.join(", ")}); they have been killed`,
  );
  process.exit(1);
}
process.exit(result.status ?? 1);
