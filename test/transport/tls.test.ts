import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Lab } from "../../src/lab/lab.js";
import type { QemuProcess } from "../../src/lab/process.js";
import { TransportError } from "../../src/transport/errors.js";
import { addTlsCreds, removeTlsCreds, resetMigrationTls, setMigrationTls } from "../../src/transport/tls.js";
import { makeCerts, type CertSet } from "../helpers/certs.js";

describe("QEMU TLS credential objects (real QEMU)", () => {
  let lab: Lab;
  let qemu: QemuProcess;
  let certs: CertSet;

  before(async () => {
    lab = Lab.create();
    certs = makeCerts(lab.path("pki"), { ips: ["127.0.0.1"], names: ["localhost"] });
    qemu = await lab.start({ label: "tls" });
  });
  after(async () => {
    await lab.cleanup();
  });

  async function objects(): Promise<string[]> {
    const list = (await qemu.qmp.execute("qom-list", { path: "/objects" })) as { name: string }[];
    return list.map((o) => o.name).filter((n) => n.startsWith("bf-"));
  }

  async function tlsParams(): Promise<[unknown, unknown]> {
    const p = (await qemu.qmp.execute("query-migrate-parameters")) as Record<string, unknown>;
    return [p["tls-creds"], p["tls-hostname"]];
  }

  it('server and client objects from a libvirt-style directory; parameters set and reset with ""', async () => {
    await addTlsCreds(qemu.monitor, { id: "bf-tls-s", dir: certs.serverDir, endpoint: "server" });
    await addTlsCreds(qemu.monitor, { id: "bf-tls-c", dir: certs.clientDir, endpoint: "client" });
    assert.deepEqual((await objects()).sort(), ["bf-tls-c", "bf-tls-s"]);
    await setMigrationTls(qemu.monitor, "bf-tls-c", "localhost");
    assert.deepEqual(await tlsParams(), ["bf-tls-c", "localhost"]);
    await resetMigrationTls(qemu.monitor);
    assert.deepEqual(await tlsParams(), ["", ""]);
    await removeTlsCreds(qemu.monitor, "bf-tls-s");
    await removeTlsCreds(qemu.monitor, "bf-tls-c");
    assert.deepEqual(await objects(), []);
  });

  it("a directory QEMU cannot use: TLS_FAILED with QEMU's reason naming the file", async () => {
    await assert.rejects(
      addTlsCreds(qemu.monitor, { id: "bf-tls-x", dir: lab.path("no-such-dir"), endpoint: "server" }),
      (e: unknown) => {
        assert.ok(e instanceof TransportError);
        assert.equal(e.code, "TLS_FAILED");
        assert.match(e.message, /refused the TLS server credentials in .*no-such-dir/);
        assert.match(e.reason, /ca-cert\.pem/);
        return true;
      },
    );
    assert.deepEqual(await objects(), [], "nothing made");
  });
});
