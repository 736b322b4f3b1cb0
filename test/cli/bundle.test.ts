/**
 * The published entry point: bin/bitferry.js running the esbuild bundle of scripts/bundle.mjs (what `npm ci`
 * builds), against real QEMU. It must print exactly what the CLI built from the sources prints, and migrate.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import * as S from "../../src/lab/scenarios.js";
import { runCli } from "../helpers/cli.js";
import { withLab } from "../helpers/lab.js";

const execFileP = promisify(execFile);
const root = path.join(import.meta.dirname, "..", "..");

/** Bundles the sources into `dir` and writes bin/bitferry.js beside the bundle; returns the entry point. */
async function bundleInto(dir: string): Promise<string> {
  await execFileP(process.execPath, [path.join(root, "scripts/bundle.mjs"), path.join(dir, "bundle")]);
  await writeFile(path.join(dir, "package.json"), JSON.stringify({ type: "module" }));
  const bin = await readFile(path.join(root, "bin/bitferry.js"), "utf8");
  assert.ok(bin.includes('"../dist/bundle/cli.js"'), "bin/bitferry.js imports ../dist/bundle/cli.js");
  const entry = path.join(dir, "bitferry.js");
  await writeFile(entry, bin.replace('"../dist/bundle/cli.js"', '"./bundle/cli.js"'));
  return entry;
}

async function run(entry: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileP(process.execPath, [entry, ...args]);
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

describe("bin/bitferry.js with the bundled CLI", () => {
  it("plans exactly as the sources do, and migrates with every bitmap verified", async () => {
    await withLab(async (lab) => {
      const entry = await bundleInto(lab.path("pkg"));
      const pair = await S.blockdevSame.setup(lab, { paused: true });
      const where = ["--source", pair.source.monitorSocket, "--dest", pair.destination.monitorSocket];

      const bundled = await run(entry, ["plan", ...where, "--json"]);
      const sources = await runCli(["plan", ...where, "--json"]);
      assert.equal(bundled.code, 0, bundled.stderr);
      assert.equal(bundled.stdout, sources.stdout);

      const failed = await run(entry, [
        "plan",
        "--source",
        lab.path("none.qmp"),
        "--dest",
        lab.path("none.qmp"),
      ]);
      assert.equal(failed.code, 3);
      assert.match(failed.stderr, /\[QMP_ERR_CONNECT\]/);

      const migrated = await run(entry, [
        "migrate",
        ...where,
        "--uri",
        `unix:${lab.path("m.sock")}`,
        "--json",
      ]);
      assert.equal(migrated.code, 0, migrated.stderr);
      const result = JSON.parse(migrated.stdout) as { ok: boolean; bitmaps: { verified: string }[] };
      assert.equal(result.ok, true);
      assert.equal(result.bitmaps.length, 5);
      assert.ok(result.bitmaps.every((b) => b.verified === "strict"));
    });
  });
});
