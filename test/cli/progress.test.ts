import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { ProgressReporter, bar } from "../../src/cli/progress.js";

function sink(tty: boolean): { out: PassThrough & { isTTY?: boolean }; text: () => string } {
  const out = new PassThrough() as PassThrough & { isTTY?: boolean };
  out.isTTY = tty;
  let text = "";
  out.on("data", (c: Buffer) => (text += c.toString()));
  return { out, text: () => text };
}

describe("progress", () => {
  it("draws a bar for a known fraction", () => {
    assert.equal(bar(0, 100), `[${"-".repeat(24)}]   0%`);
    assert.equal(bar(50, 100), `[${"#".repeat(12)}${"-".repeat(12)}]  50%`);
    assert.equal(bar(200, 100), `[${"#".repeat(24)}] 100%`);
    assert.equal(bar(5, 0), `[${"-".repeat(24)}]   0%`);
  });

  it("on a terminal: one live line with a bar and the bitmap phase; messages stay", () => {
    const s = sink(true);
    const r = new ProgressReporter(s.out);
    r.update({
      phase: "copy",
      elapsedMs: 100,
      copiedBytes: 512,
      copyTotalBytes: 1024,
      message: "copying 1 disk(s)",
    });
    r.update({
      phase: "migrating",
      elapsedMs: 900,
      status: "active",
      transferredBytes: 30,
      remainingBytes: 70,
      bitmapBytes: 4096,
    });
    r.update({ phase: "done", elapsedMs: 1000 });
    const t = s.text();
    assert.match(t, /copy .*- copying 1 disk\(s\)\n/);
    const live = `\r\u001b[2K[0.9s] migrating (active) [${"#".repeat(7)}${"-".repeat(17)}]  30% sent 30 B remaining 70 B · bitmaps: 4 KiB wait for the switchover`;
    assert.ok(t.includes(live), t);
    assert.ok(t.endsWith("\n"), "the live line is ended when the run is done");
  });

  it("without a terminal: plain lines on changes and every interval, no control characters", () => {
    const s = sink(false);
    const r = new ProgressReporter(s.out, 60_000);
    r.update({ phase: "migrating", elapsedMs: 0, status: "setup" });
    r.update({ phase: "migrating", elapsedMs: 10, status: "setup" });
    r.update({ phase: "migrating", elapsedMs: 20, status: "active" });
    const lines = s.text().trimEnd().split("\n");
    assert.equal(lines.length, 2);
    assert.ok(!s.text().includes("\u001b") && !s.text().includes("\r"));
  });
});
