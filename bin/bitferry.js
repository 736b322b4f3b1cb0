#!/usr/bin/env node
// The published entry point: runs the bundled CLI (built by `npm run build`, which `npm ci` runs as `prepare`).
import { main } from "../dist/bundle/cli.js";

process.exitCode = await main(process.argv.slice(2));
