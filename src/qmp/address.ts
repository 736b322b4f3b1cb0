import { UsageError } from "../util/errors.js";

/** Monitor and migration addresses as users write them: `unix:/path`, a bare path, or `tcp:HOST:PORT`. */

export type SocketAddress = { type: "unix"; path: string } | { type: "tcp"; host: string; port: number };

export class AddressSyntaxError extends UsageError {}

export function parseSocketAddress(text: string): SocketAddress {
  if (text.startsWith("unix:")) {
    const path = text.slice(5);
    if (path === "") throw new AddressSyntaxError(`'${text}': expected unix:/path/to/socket`);
    return { type: "unix", path };
  }
  if (text.startsWith("tcp:")) {
    const rest = text.slice(4);
    const colon = rest.lastIndexOf(":");
    const host = colon > 0 ? rest.slice(0, colon).replace(/^\[(.*)\]$/, "$1") : "";
    const port = Number(rest.slice(colon + 1));
    if (colon <= 0 || host === "" || !Number.isInteger(port) || port < 1 || port > 65535) {
      throw new AddressSyntaxError(`'${text}': expected tcp:HOST:PORT with a port from 1 to 65535`);
    }
    return { type: "tcp", host, port };
  }
  if (text === "" || /^[a-z]+:/.test(text)) {
    throw new AddressSyntaxError(`'${text}': expected unix:/path, tcp:HOST:PORT or a socket path`);
  }
  return { type: "unix", path: text };
}

export function formatSocketAddress(a: SocketAddress): string {
  return a.type === "unix"
    ? `unix:${a.path}`
    : `tcp:${a.host.includes(":") ? `[${a.host}]` : a.host}:${a.port}`;
}

/**
 * `ssh://[USER@]HOST[:PORT]/PATH`: the unix socket PATH on HOST, reached through the system's OpenSSH client
 * (DESIGN section 4, Two hosts). HOST is passed to ssh as written, so the user's `Host` entries apply to it.
 */
export interface SshAddress {
  type: "ssh";
  user?: string;
  host: string;
  port?: number;
  path: string;
}

export type MonitorAddress = SocketAddress | SshAddress;

export function parseSshAddress(text: string): SshAddress {
  const bad = (why: string): AddressSyntaxError =>
    new AddressSyntaxError(`'${text}': expected ssh://[USER@]HOST[:PORT]/path/to/socket (${why})`);
  const rest = text.slice("ssh://".length);
  const slash = rest.indexOf("/");
  if (slash < 0 || slash === rest.length - 1) throw bad("no socket path");
  const authority = rest.slice(0, slash);
  const path = rest.slice(slash);
  const at = authority.lastIndexOf("@");
  const user = at >= 0 ? authority.slice(0, at) : undefined;
  const hostPort = at >= 0 ? authority.slice(at + 1) : authority;
  const m = /^(\[[^\]]+\]|[^:[\]]+)(?::(\d*))?$/.exec(hostPort);
  if (!m?.[1]) throw bad("no host");
  if (user === "" || (user !== undefined && /[\s/:]/.test(user))) throw bad("bad user name");
  const host = m[1].replace(/^\[(.*)\]$/, "$1");
  // ssh would read a host starting with "-" as an option.
  if (host === "" || host.startsWith("-") || /\s/.test(host)) throw bad("bad host");
  let port: number | undefined;
  if (m[2] !== undefined) {
    port = Number(m[2]);
    if (m[2] === "" || !Number.isInteger(port) || port < 1 || port > 65535) throw bad("port from 1 to 65535");
  }
  return {
    type: "ssh",
    ...(user !== undefined ? { user } : {}),
    host,
    ...(port !== undefined ? { port } : {}),
    path,
  };
}

/** A monitor address: everything parseSocketAddress takes, plus `ssh://`. */
export function parseMonitorAddress(text: string): MonitorAddress {
  return text.startsWith("ssh://") ? parseSshAddress(text) : parseSocketAddress(text);
}

export function formatMonitorAddress(a: MonitorAddress): string {
  if (a.type !== "ssh") return formatSocketAddress(a);
  const host = a.host.includes(":") ? `[${a.host}]` : a.host;
  return `ssh://${a.user !== undefined ? `${a.user}@` : ""}${host}${a.port !== undefined ? `:${a.port}` : ""}${a.path}`;
}
