#!/usr/bin/env node
// The published entry point: runs the bundled CLI (built by `npm run build`, which `npm ci` runs as `prepare`).
import { setFlagsFromString } from "node:v8";

// A command runs each piece of bitferry once, in a process that lives for a second. V8's default is to optimise a
// function as soon as it has run a little, and for a plan of 20,000 bitmaps compiling it costs more than it saves
// (about half of the plan's CPU time, measured with callgrind): tier up later. Set here, for this process only;
// the library leaves V8 alone.
setFlagsFromString("--interrupt-budget=1000000");
// Not set here, measured: heap flags (--max-semi-space-size, --min-semi-space-size) take effect only on node's
// command line, as the heap is sized before this line runs (--trace-gc shows the same scavenges either way), and
// --single-threaded-gc set at run time aborts V8 at its next GC (a failed check in cppgc). --always-sparkplug saved
// CPU inside the plan but not over the whole process (A/B, fresh processes).

const { main } = await import("../dist/bundle/cli.js");
process.exitCode = await main(process.argv.slice(2));
