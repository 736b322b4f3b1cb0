import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";

/**
 * QEMU x509 credential directories made per test run with openssl (reference two-hosts.md): a CA, a server
 * certificate with the destination's address and name in subjectAltName, a client certificate, laid out as
 * libvirt's /etc/pki/qemu. `otherCa` makes a second, unrelated CA (and a client signed by it) for the tests that
 * a peer of another CA is refused.
 */

export interface CertSet {
  /** ca-cert.pem + server-cert.pem + server-key.pem: the destination's directory. */
  serverDir: string;
  /** ca-cert.pem + client-cert.pem + client-key.pem: the source's directory. */
  clientDir: string;
  /** Both roles in one directory (one host playing both sides). */
  bothDir: string;
  caDir: string;
}

function openssl(args: string[], cwd: string): void {
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
}

function makeCa(dir: string, name: string): void {
  mkdirSync(dir, { recursive: true });
  openssl(["genrsa", "-out", "ca-key.pem", "2048"], dir);
  openssl(
    [
      "req",
      "-x509",
      "-new",
      "-key",
      "ca-key.pem",
      "-days",
      "2",
      "-subj",
      `/CN=${name}`,
      "-out",
      "ca-cert.pem",
    ],
    dir,
  );
}

function signed(caDir: string, out: string, role: "server" | "client", cn: string, san: string[]): void {
  const ext = path.join(out, `${role}.ext`);
  writeFileSync(
    ext,
    [
      "basicConstraints=CA:FALSE",
      "keyUsage=digitalSignature,keyEncipherment",
      `extendedKeyUsage=${role === "server" ? "serverAuth" : "clientAuth"}`,
      ...(san.length > 0 ? [`subjectAltName=${san.join(",")}`] : []),
      "",
    ].join("\n"),
  );
  openssl(["genrsa", "-out", `${role}-key.pem`, "2048"], out);
  openssl(["req", "-new", "-key", `${role}-key.pem`, "-subj", `/CN=${cn}`, "-out", `${role}.csr`], out);
  openssl(
    [
      "x509",
      "-req",
      "-in",
      `${role}.csr`,
      "-CA",
      path.join(caDir, "ca-cert.pem"),
      "-CAkey",
      path.join(caDir, "ca-key.pem"),
      "-CAcreateserial",
      "-days",
      "2",
      "-extfile",
      ext,
      "-out",
      `${role}-cert.pem`,
    ],
    out,
  );
}

/** Credentials under `dir` for a server reachable as `ips` and `names`. */
export function makeCerts(dir: string, server: { ips: string[]; names: string[] }): CertSet {
  const caDir = path.join(dir, "ca");
  makeCa(caDir, "bitferry test CA");
  const serverDir = path.join(dir, "server");
  const clientDir = path.join(dir, "client");
  const bothDir = path.join(dir, "both");
  for (const d of [serverDir, clientDir, bothDir]) mkdirSync(d, { recursive: true });
  signed(caDir, serverDir, "server", server.names[0] ?? "server", [
    ...server.ips.map((i) => `IP:${i}`),
    ...server.names.map((n) => `DNS:${n}`),
  ]);
  signed(caDir, clientDir, "client", "bitferry-source", []);
  for (const d of [serverDir, clientDir])
    copyFileSync(path.join(caDir, "ca-cert.pem"), path.join(d, "ca-cert.pem"));
  for (const f of ["ca-cert.pem"]) copyFileSync(path.join(caDir, f), path.join(bothDir, f));
  for (const f of ["server-cert.pem", "server-key.pem"])
    copyFileSync(path.join(serverDir, f), path.join(bothDir, f));
  for (const f of ["client-cert.pem", "client-key.pem"])
    copyFileSync(path.join(clientDir, f), path.join(bothDir, f));
  return { serverDir, clientDir, bothDir, caDir };
}

/** A client directory whose CA and certificate have nothing to do with `makeCerts`'s. */
export function makeOtherCaClient(dir: string): string {
  const caDir = path.join(dir, "other-ca");
  makeCa(caDir, "another CA");
  const clientDir = path.join(dir, "other-client");
  mkdirSync(clientDir, { recursive: true });
  signed(caDir, clientDir, "client", "intruder", []);
  copyFileSync(path.join(caDir, "ca-cert.pem"), path.join(clientDir, "ca-cert.pem"));
  return clientDir;
}
