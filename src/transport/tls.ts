import type { QemuMonitor } from "../qemu/monitor.js";
import { QmpCommandError } from "../qmp/errors.js";
import { TransportError } from "./errors.js";

/**
 * QEMU's own TLS (DESIGN section 4, Two hosts): `tls-creds-x509` objects made from a directory laid out as
 * libvirt's /etc/pki/qemu (`ca-cert.pem`; `server-cert.pem` + `server-key.pem` on the destination;
 * `client-cert.pem` + `client-key.pem` on the source), peers verified on both sides.
 */

export type TlsEndpoint = "server" | "client";

export interface TlsCreds {
  id: string;
  dir: string;
  endpoint: TlsEndpoint;
}

/** The files QEMU reads from DIR for each endpoint (for messages and for checking a directory before a run). */
export const TLS_FILES: Record<TlsEndpoint, readonly string[]> = {
  server: ["ca-cert.pem", "server-cert.pem", "server-key.pem"],
  client: ["ca-cert.pem", "client-cert.pem", "client-key.pem"],
};

function refused(mon: QemuMonitor, what: string, err: unknown): unknown {
  if (err instanceof QmpCommandError)
    return new TransportError(
      "TLS_FAILED",
      `QEMU (${mon.qmp.label}) refused ${what}: ${err.desc}`,
      err.desc,
      { cause: err },
    );
  return err;
}

/** Creates the credentials object; QEMU reads and checks the files now, and a refusal is TLS_FAILED. */
export async function addTlsCreds(mon: QemuMonitor, creds: TlsCreds): Promise<void> {
  try {
    await mon.run("object-add", {
      "qom-type": "tls-creds-x509",
      id: creds.id,
      dir: creds.dir,
      endpoint: creds.endpoint,
      "verify-peer": true,
    });
  } catch (err) {
    throw refused(
      mon,
      `the TLS ${creds.endpoint} credentials in ${creds.dir} (${TLS_FILES[creds.endpoint].join(", ")})`,
      err,
    );
  }
}

export async function removeTlsCreds(mon: QemuMonitor, id: string): Promise<void> {
  await mon.run("object-del", { id });
}

/**
 * Makes the migration use the credentials: `tls-hostname` is the name the destination's certificate must carry
 * (set on the source only; QEMU ignores it on the incoming side).
 */
export async function setMigrationTls(mon: QemuMonitor, id: string, hostname?: string): Promise<void> {
  try {
    await mon.run("migrate-set-parameters", {
      "tls-creds": id,
      ...(hostname !== undefined ? { "tls-hostname": hostname } : {}),
    });
  } catch (err) {
    throw refused(mon, `tls-creds ${id}`, err);
  }
}

/** Puts the migration back to plaintext: QEMU resets both parameters with the empty string. */
export async function resetMigrationTls(mon: QemuMonitor): Promise<void> {
  await mon.run("migrate-set-parameters", { "tls-creds": "", "tls-hostname": "" });
}

/** The arguments `nbd-server-start` and the source's NBD `blockdev-add` take for TLS. */
export function nbdServerTls(id: string): { "tls-creds": string } {
  return { "tls-creds": id };
}

export function nbdClientTls(id: string, hostname: string): { "tls-creds": string; "tls-hostname": string } {
  return { "tls-creds": id, "tls-hostname": hostname };
}

/** A failed TLS handshake as QEMU words it (in query-migrate's error-desc or a command's error). */
export function isTlsFailure(desc: string): boolean {
  return /\b(tls|certificates?|handshake|x509|gnutls)\b/i.test(desc);
}
