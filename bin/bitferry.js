#!/usr/bin/env node
// The published entry point: runs the bundled CLI (built by `npm run build`, which `npm ci` runs as `prepare`).
import { setFlagsFromString } from "node:v8";

// A command runs each piece of bitferry once, in a process that lives for a second. V8's default is to optimise a
// function as soon as it has run a little, and for a plan of 20,000 bitmaps compiling it costs more than it saves
// (about half of the plan's CPU time, measured with callgrind): tier up later. Set here, for this process only;
// the library leaves V8 alone.
setFlagsFromString("--interrupt-budget=1000000");

const { main } = await import("../dist/bundle/cli.js");
process.exitCode = await main(process.argv.slice(2));
