#!/usr/bin/env node
// Bundles the CLI for bin/bitferry.js (run by `npm run build`, which `npm ci` runs as `prepare`): one file to load
// at start instead of about a hundred modules, each command's work in a chunk of its own loaded when it runs.
// Not minified, so stack traces keep bitferry's function names; `node --enable-source-maps` maps them back to the
// TypeScript files. Usage: node scripts/bundle.mjs [OUTDIR] (default dist/bundle).
import { build } from "esbuild";
import path from "node:path";

const root = path.join(import.meta.dirname, "..");

// commander requires child_process when it loads, for the executable subcommands bitferry never defines: that is
// about 4 ms of every start (child_process brings net and its streams). It gets the module on first use instead.
const lazyChildProcess = {
  name: "lazy-child-process",
  setup(b) {
    b.onResolve({ filter: /^(node:)?child_process$/ }, (args) =>
      /[\\/]node_modules[\\/]commander[\\/]/.test(args.importer)
        ? { path: "child_process", namespace: "lazy-builtin" }
        : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: "lazy-builtin" }, () => ({
      contents:
        'let m; module.exports = new Proxy({}, { get: (_, key) => (m ??= require("node:child_process"))[key] });',
      loader: "js",
    }));
  },
};
const outdir = path.resolve(process.argv[2] ?? path.join(root, "dist/bundle"));

await build({
  entryPoints: { cli: path.join(root, "src/cli/main.ts") },
  outdir,
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node20",
  sourcemap: true,
  legalComments: "none",
  logLevel: "warning",
  plugins: [lazyChildProcess],
  // CommonJS dependencies (commander) call require(); an ES module has none of its own.
  banner: {
    js: 'import { createRequire as __bitferryRequire } from "node:module"; const require = __bitferryRequire(import.meta.url);',
  },
});
