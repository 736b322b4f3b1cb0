import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { planTransport, type TransportRequest } from "../../src/policy/transport.js";
import { loadFixture } from "../helpers/fixtures.js";
import { planFromSnapshots } from "../../src/migrate/plan.js";
import { validatePolicy } from "../../src/policy/file.js";

const policy = validatePolicy({ map: [{ source: "disk0", target: "vda" }] }, "test-policy");

const local = { source: "/run/src.qmp", destination: "unix:/run/dst.qmp" };
const remote = { source: "/run/src.qmp", destination: "ssh://root@h2/run/dst.qmp" };

function t(req: TransportRequest) {
  return planTransport(req);
}

describe("plan transport (DESIGN section 5, transport)", () => {
  it("one host: unix everywhere, migration unknown without --uri", () => {
    assert.deepEqual(t(local).transport, {
      monitors: { source: "unix", destination: "unix" },
      migration: null,
      nbd: null,
    });
    assert.deepEqual(t({ ...local, uri: "unix:/run/m.sock", copyStorage: true }).transport, {
      monitors: { source: "unix", destination: "unix" },
      migration: "unix",
      nbd: "unix",
    });
  });

  it("ssh:// destination without --uri/--nbd: the SSH tunnel for both, no warning", () => {
    const d = t({ ...remote, copyStorage: true });
    assert.deepEqual(d.transport, {
      monitors: { source: "unix", destination: "ssh" },
      migration: "ssh-tunnel",
      nbd: "ssh-tunnel",
    });
    assert.deepEqual(d.warnings, []);
    assert.deepEqual(d.errors, []);
  });

  it("--uri tcp: --tls-creds: tls for the stream and a tcp NBD, nothing flagged", () => {
    const d = t({
      ...remote,
      uri: "tcp:h2:4445",
      nbd: "tcp:h2:10809",
      copyStorage: true,
      tlsCreds: "/etc/pki/qemu",
    });
    assert.equal(d.transport.migration, "tls");
    assert.equal(d.transport.nbd, "tls");
    assert.deepEqual([...d.errors, ...d.warnings], []);
  });

  it("plaintext stream and tcp: monitors: INSECURE_TRANSPORT naming what travels in clear", () => {
    const d = t({ source: "tcp:h1:4444", destination: "tcp:h2:4444", uri: "tcp:h2:4445" });
    assert.deepEqual(d.transport, {
      monitors: { source: "tcp", destination: "tcp" },
      migration: "plaintext",
      nbd: null,
    });
    assert.deepEqual(
      d.warnings.map((w) => w.code),
      ["INSECURE_TRANSPORT", "INSECURE_TRANSPORT", "INSECURE_TRANSPORT"],
    );
    assert.match(
      d.warnings[0]?.message ?? "",
      /source monitor tcp:h1:4444 .*reads guest memory, writes its disks/,
    );
    assert.match(d.warnings[1]?.message ?? "", /destination monitor tcp:h2:4444/);
    assert.match(
      d.warnings[2]?.message ?? "",
      /migration stream to tcp:h2:4445 travels in clear: guest memory/,
    );
    assert.deepEqual(d.errors, []);
  });

  it("--copy-storage --nbd tcp: without --tls-creds: error INSECURE_NBD; --insecure makes it the warning", () => {
    const req = { ...remote, uri: "tcp:h2:4445", nbd: "tcp:h2:10809", copyStorage: true };
    const refused = t(req);
    assert.equal(refused.transport.nbd, "plaintext");
    assert.deepEqual(
      refused.errors.map((e) => [e.code, e.node, e.bitmap]),
      [["INSECURE_NBD", null, null]],
    );
    assert.match(
      refused.errors[0]?.message ?? "",
      /--nbd tcp:h2:10809 .*writable .*--tls-creds .*--insecure/,
    );
    const accepted = t({ ...req, insecure: true });
    assert.deepEqual(accepted.errors, []);
    assert.deepEqual(
      accepted.warnings.map((w) => w.code),
      ["INSECURE_TRANSPORT", "INSECURE_TRANSPORT"],
    );
    assert.match(accepted.warnings[1]?.message ?? "", /writable .*accepted with --insecure/);
  });

  it("--nbd tcp: without --copy-storage is not a disk export: nothing to refuse", () => {
    assert.deepEqual(t({ ...local, nbd: "tcp:h:1" }).errors, []);
  });

  it("hooked into the plan: transport in the document, INSECURE_NBD makes the plan fail as a plan-wide error", () => {
    const f = loadFixture("copy-storage");
    const ok = planFromSnapshots(f.source, f.destination, {
      policy,
      copyStorage: true,
      transport: remote,
    }).plan;
    assert.equal(ok.ok, true, JSON.stringify(ok.errors));
    assert.deepEqual(ok.transport, {
      monitors: { source: "unix", destination: "ssh" },
      migration: "ssh-tunnel",
      nbd: "ssh-tunnel",
    });
    const bad = planFromSnapshots(f.source, f.destination, {
      policy,
      copyStorage: true,
      transport: { ...remote, uri: "tcp:h2:1", nbd: "tcp:h2:2" },
    }).plan;
    assert.equal(bad.ok, false);
    assert.deepEqual(
      bad.errors.map((e) => e.code),
      ["INSECURE_NBD"],
    );
    // Without a transport request (a library caller that did not say), the document is as before.
    assert.equal(
      "transport" in planFromSnapshots(f.source, f.destination, { policy, copyStorage: true }).plan,
      false,
    );
  });
});
