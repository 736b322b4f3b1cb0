import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";

const execFileP = promisify(execFile);

export const ROOT = path.resolve(import.meta.dirname, "../..");

export interface CompiledTree {
  /** Directory holding package.json, node_modules (a link) and build/. */
  dir: string;
  /** The CLI as bin/bitferry.js runs it: the esbuild bundle of scripts/bundle.mjs. */
  cli: string;
  /** The same CLI as tsc's one file per module (for profiles that name the files). */
  cliModules: string;
  /** The V8 flags bin/bitferry.js sets for its process, to give `cliModules` the same settings. */
  cliV8Flags: string[];
  /** The compiled planning child (bench/planning/child.ts). */
  planningChild: string;
  /** The compiled floor script (bench/floor/plan-floor.ts). */
  planFloor: string;
  /** The compiled floor script of a migration (bench/floor/migrate-floor.ts). */
  migrateFloor: string;
  /** How long tsc took, ms (not a benchmark: it says how stale the numbers can be). */
  compileMs: number;
  /** tsc's complaints about other files in the tree (it still emits), for the log. */
  diagnostics: string;
}

/**
 * Compiles src/ and the benchmark's own scripts with tsc into `dir`, as `npm run build` compiles src/ for users:
 * child processes must run the JavaScript users run, not tsx's on-the-fly transform (which wraps every function
 * in a naming helper and would make bitferry look slower than it is).
 */
export async function compileTree(dir: string): Promise<CompiledTree> {
  const out = path.join(dir, "build");
  const t0 = performance.now();
  let diagnostics = "";
  try {
    await execFileP(process.execPath, [
      path.join(ROOT, "node_modules/typescript/bin/tsc"),
      "-p",
      path.join(ROOT, "bench/tsconfig.build.json"),
      "--outDir",
      out,
    ]);
  } catch (err) {
    // tsc exits non-zero for type errors anywhere in the tree but still emits; only missing output matters.
    diagnostics = (err as { stdout?: string }).stdout ?? String(err);
  }
  await execFileP(process.execPath, [path.join(ROOT, "scripts/bundle.mjs"), path.join(dir, "bundle")]);
  // bin/bitferry.js itself, pointed at this tree's bundle: the same start-up, V8 settings included.
  const bin = await readFile(path.join(ROOT, "bin/bitferry.js"), "utf8");
  if (!bin.includes('"../dist/bundle/cli.js"'))
    throw new Error("bin/bitferry.js no longer imports ../dist/bundle/cli.js");
  await writeFile(path.join(dir, "bitferry.js"), bin.replace('"../dist/bundle/cli.js"', '"./bundle/cli.js"'));
  const cliV8Flags = [...bin.matchAll(/setFlagsFromString\("([^"]+)"\)/g)].flatMap((m) =>
    (m[1] ?? "").split(" "),
  );
  const compileMs = performance.now() - t0;
  // Without it Node would first try every file as CommonJS (module-type detection), a start-up cost users never pay.
  await writeFile(path.join(dir, "package.json"), JSON.stringify({ type: "module", private: true }));
  if (!existsSync(path.join(dir, "node_modules")))
    await symlink(path.join(ROOT, "node_modules"), path.join(dir, "node_modules"));
  const tree: CompiledTree = {
    dir,
    cli: path.join(dir, "bitferry.js"),
    cliModules: path.join(out, "src/cli/main.js"),
    cliV8Flags,
    planningChild: path.join(out, "bench/planning/child.js"),
    planFloor: path.join(out, "bench/floor/plan-floor.js"),
    migrateFloor: path.join(out, "bench/floor/migrate-floor.js"),
    compileMs,
    diagnostics,
  };
  for (const f of [tree.cli, tree.cliModules, tree.planningChild, tree.planFloor, tree.migrateFloor]) {
    if (!existsSync(f)) throw new Error(`tsc did not produce ${f}:\n${diagnostics}`);
  }
  return tree;
}
