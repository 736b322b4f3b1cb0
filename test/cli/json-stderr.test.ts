import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { runCli } from "../helpers/cli.js";

/**
 * DESIGN section 5: with --json the one document goes to stdout, and the error's one-line message to stderr as
 * well, so a person watching a scripted run sees why it failed. `plan` and `inspect` once printed nothing there.
 */

interface FailureDoc {
  ok: boolean;
  error: { code: string; message: string };
}

let dir: string;

before(() => {
  dir = mkdtempSync("/tmp/bf-js-");
});

after(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** The run failed with `status`, its document says why, and stderr carries exactly that, on one line. */
function assertReported(r: { code: number; stdout: string; stderr: string }, status: number): FailureDoc {
  assert.equal(r.code, status, r.stderr);
  const doc = JSON.parse(r.stdout) as FailureDoc;
  assert.equal(doc.ok, false);
  assert.equal(r.stderr, `bitferry: ${doc.error.message} [${doc.error.code}]\n`);
  assert.ok(!doc.error.message.includes("\n"), "one line");
  return doc;
}

describe("--json failures also say why on stderr", () => {
  it("plan: a bad policy file (exit 2)", async () => {
    const policy = path.join(dir, "bad.yaml");
    writeFileSync(policy, "map: 12\n");
    const r = await runCli([
      "plan",
      "--source",
      path.join(dir, "s.qmp"),
      "--dest",
      path.join(dir, "d.qmp"),
      "--policy",
      policy,
      "--json",
    ]);
    const doc = assertReported(r, 2);
    assert.match(doc.error.message, /bad\.yaml/);
  });

  it("plan: a policy file that does not exist (exit 2)", async () => {
    const r = await runCli([
      "plan",
      "--source",
      "a",
      "--dest",
      "b",
      "--policy",
      path.join(dir, "none.yaml"),
      "--json",
    ]);
    assertReported(r, 2);
  });

  it("plan: an unreachable monitor (exit 3)", async () => {
    const r = await runCli([
      "plan",
      "--source",
      path.join(dir, "s.qmp"),
      "--dest",
      path.join(dir, "d.qmp"),
      "--json",
    ]);
    const doc = assertReported(r, 3);
    assert.match(doc.error.message, /s\.qmp/);
  });

  it("inspect: a file that is not qcow2, and a corrupt qcow2 image", async () => {
    const raw = path.join(dir, "disk.raw");
    writeFileSync(raw, Buffer.alloc(65536, 0x61));
    assertReported(await runCli(["inspect", raw, "--json"]), 1);
    const corrupt = path.join(dir, "corrupt.qcow2");
    const header = Buffer.alloc(512);
    header.write("QFI\xfb", 0, "latin1");
    header.writeUInt32BE(3, 4); // version 3
    header.writeUInt32BE(40, 20); // cluster_bits far out of range
    writeFileSync(corrupt, header);
    assertReported(await runCli(["inspect", corrupt, "--json"]), 1);
  });

  it("inspect: a missing file (exit 2)", async () => {
    assertReported(await runCli(["inspect", path.join(dir, "missing.qcow2"), "--json"]), 2);
  });
});
