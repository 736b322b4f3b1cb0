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
