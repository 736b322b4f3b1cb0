import { formatMonitorAddress, parseMonitorAddress, parseSocketAddress } from "../qmp/address.js";
import type { PlanError, PlanWarning } from "./types.js";

/**
 * How a run reaches each monitor and how its data travels (DESIGN section 5, `transport`), and what of that is
 * exposed on the network. Pure: the addresses as the user gave them in, the document fields and the plan's
 * errors and warnings out.
 */

export type MonitorTransport = "unix" | "tcp" | "ssh";
export type StreamTransport = "unix" | "ssh-tunnel" | "tls" | "plaintext";

export interface PlanTransport {
  monitors: { source: MonitorTransport; destination: MonitorTransport };
  /** null when `plan` was not told the URI (and the destination is not `ssh://`, where the tunnel is the default). */
  migration: StreamTransport | null;
  /** null without `--copy-storage`. */
  nbd: StreamTransport | null;
}

export interface TransportRequest {
  /** The monitor addresses as given (`unix:`, a path, `tcp:`, `ssh://`). */
  source: string;
  destination: string;
  /** `--uri`; absent: the SSH tunnel when the destination is `ssh://`, else unknown. */
  uri?: string;
  /** `--nbd`; absent: the SSH tunnel when the destination is `ssh://`, else a private unix socket. */
  nbd?: string;
  copyStorage?: boolean;
  /** `--tls-creds DIR`. */
  tlsCreds?: string;
  /** `--insecure`: accept a plaintext NBD export (then a warning instead of INSECURE_NBD). */
  insecure?: boolean;
}

export interface TransportDecision {
  transport: PlanTransport;
  errors: PlanError[];
  warnings: PlanWarning[];
}

function kindOf(address: string): MonitorTransport {
  return parseMonitorAddress(address).type;
}

function channelOf(uri: string, tls: boolean): StreamTransport {
  const a = parseSocketAddress(uri);
  if (tls) return "tls";
  return a.type === "unix" ? "unix" : "plaintext";
}

export function planTransport(req: TransportRequest): TransportDecision {
  const tls = req.tlsCreds !== undefined;
  const sshDest = kindOf(req.destination) === "ssh";
  const monitors = { source: kindOf(req.source), destination: kindOf(req.destination) };
  const migration: StreamTransport | null =
    req.uri !== undefined ? channelOf(req.uri, tls) : sshDest ? "ssh-tunnel" : null;
  const nbd: StreamTransport | null = !req.copyStorage
    ? null
    : req.nbd !== undefined
      ? channelOf(req.nbd, tls)
      : sshDest
        ? "ssh-tunnel"
        : "unix";
  const errors: PlanError[] = [];
  const warnings: PlanWarning[] = [];
  for (const side of ["source", "destination"] as const) {
    if (monitors[side] !== "tcp") continue;
    const where = formatMonitorAddress(parseMonitorAddress(side === "source" ? req.source : req.destination));
    warnings.push({
      code: "INSECURE_TRANSPORT",
      message:
        `the ${side} monitor ${where} is plaintext TCP without authentication: anyone who reaches the port ` +
        `controls that QEMU (reads guest memory, writes its disks), and the commands and replies travel in ` +
        `clear; reach it as ssh://HOST/path/to/qmp.sock instead`,
    });
  }
  if (migration === "plaintext" && req.uri !== undefined)
    warnings.push({
      code: "INSECURE_TRANSPORT",
      message:
        `the migration stream to ${req.uri} travels in clear: guest memory, device state and the dirty bitmaps ` +
        `can be read and altered by anyone on the path; give --tls-creds DIR, or an ssh:// destination without ` +
        `--uri (the SSH tunnel)`,
    });
  if (nbd === "plaintext" && req.nbd !== undefined) {
    const exposed =
      `--copy-storage with --nbd ${req.nbd} and no --tls-creds exports the destination's disks writable over ` +
      `plaintext TCP: anyone who reaches the port can read and write them while they are copied`;
    if (req.insecure)
      warnings.push({ code: "INSECURE_TRANSPORT", message: `${exposed} (accepted with --insecure)` });
    else
      errors.push({
        code: "INSECURE_NBD",
        message:
          `${exposed}; give --tls-creds DIR, or an ssh:// destination without --nbd (the SSH tunnel), or ` +
          `--insecure to accept it`,
        node: null,
        bitmap: null,
      });
  }
  return { transport: { monitors, migration, nbd }, errors, warnings };
}
