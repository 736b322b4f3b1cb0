import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { shellQuote, splitCommandLine, sshCommand } from "../../src/transport/ssh-command.js";
import { formatMonitorAddress, parseMonitorAddress, parseSocketAddress } from "../../src/qmp/address.js";
import { UsageError } from "../../src/util/errors.js";

describe("BITFERRY_SSH_COMMAND is split like a shell", () => {
  for (const [text, words] of [
    ["ssh", ["ssh"]],
    ["  ssh   -F cfg ", ["ssh", "-F", "cfg"]],
    [`ssh -F "/etc/my ssh/config" -i '/k ey'`, ["ssh", "-F", "/etc/my ssh/config", "-i", "/k ey"]],
    [`ssh -o "ProxyCommand=nc %h \\"%p\\""`, ["ssh", "-o", 'ProxyCommand=nc %h "%p"']],
    [`ssh a\\ b 'x'"y"z`, ["ssh", "a b", "xyz"]],
    [`ssh ''`, ["ssh", ""]],
  ] as const) {
    it(JSON.stringify(text), () => {
      assert.deepEqual(splitCommandLine(text), words);
      // The same as /bin/sh makes of it.
      const sh = execFileSync("sh", ["-c", `for w in ${text}; do printf '%s\\0' "$w"; done`], {
        encoding: "utf8",
      });
      assert.deepEqual(sh.split("\0").slice(0, -1), words);
    });
  }

  it("an unterminated quote is a usage error naming the variable", () => {
    assert.throws(
      () => splitCommandLine(`ssh -F 'x`),
      (e: unknown) => e instanceof UsageError && e.message.includes("BITFERRY_SSH_COMMAND"),
    );
  });

  it("unset or blank: plain ssh", () => {
    assert.deepEqual(sshCommand({}), ["ssh"]);
    assert.deepEqual(sshCommand({ BITFERRY_SSH_COMMAND: "  " }), ["ssh"]);
    assert.deepEqual(sshCommand({ BITFERRY_SSH_COMMAND: "/opt/ssh -v" }), ["/opt/ssh", "-v"]);
  });

  it("shellQuote round-trips through sh", () => {
    for (const w of ["plain", "/tmp/a b", "it's", "$(rm -rf /)", "", 'a"b\\c']) {
      assert.equal(execFileSync("sh", ["-c", `printf %s ${shellQuote(w)}`], { encoding: "utf8" }), w);
    }
  });
});

describe("ssh:// monitor addresses", () => {
  for (const [text, parsed] of [
    ["ssh://host/run/qmp.sock", { type: "ssh", host: "host", path: "/run/qmp.sock" }],
    [
      "ssh://root@10.0.0.2:2222/tmp/q.qmp",
      { type: "ssh", user: "root", host: "10.0.0.2", port: 2222, path: "/tmp/q.qmp" },
    ],
    ["ssh://[fe80::1]:22/q", { type: "ssh", host: "fe80::1", port: 22, path: "/q" }],
    ["ssh://a.b-c/x/y z", { type: "ssh", host: "a.b-c", path: "/x/y z" }],
  ] as const) {
    it(text, () => {
      assert.deepEqual(parseMonitorAddress(text), parsed);
      assert.equal(formatMonitorAddress(parseMonitorAddress(text)), text);
    });
  }

  for (const bad of [
    "ssh://host",
    "ssh://host/",
    "ssh:///x",
    "ssh://@h/x",
    "ssh://h:0/x",
    "ssh://h:99999/x",
    "ssh://-oProxyCommand=x/y",
    "ssh://h:/x",
  ]) {
    it(`refuses ${bad} as a usage error`, () => {
      assert.throws(
        () => parseMonitorAddress(bad),
        (e: unknown) => e instanceof UsageError && e.message.includes(bad),
      );
    });
  }

  it("is a monitor address only: --uri and --nbd refuse it", () => {
    assert.throws(() => parseSocketAddress("ssh://h/x"), UsageError);
  });
});
