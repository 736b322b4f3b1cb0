import { parseMonitorAddress } from "../qmp/address.js";
import type { TransportRequest } from "../policy/transport.js";
import { UsageError } from "../util/errors.js";

/** The flags of `plan` and `migrate` that say how the run reaches both sides and how its data travels. */
export interface TransportFlags {
  source: string;
  dest: string;
  uri?: string;
  nbd?: string;
  copyStorage?: true;
  tlsCreds?: string;
  tlsHostname?: string;
  insecure?: true;
}

/** Checks the combination (usage errors, before anything connects) and says what the plan should know. */
export function transportRequest(f: TransportFlags, command: "plan" | "migrate"): TransportRequest {
  parseMonitorAddress(f.source);
  const dest = parseMonitorAddress(f.dest);
  if (command === "migrate" && f.uri === undefined && dest.type !== "ssh")
    throw new UsageError(
      "required option '--uri <uri>' not specified (it may be left out only when --dest is ssh://: then the stream goes through SSH)",
    );
  if (f.nbd !== undefined && !f.copyStorage) throw new UsageError("--nbd is only used with --copy-storage");
  if (f.tlsHostname !== undefined && f.tlsCreds === undefined)
    throw new UsageError("--tls-hostname is only used with --tls-creds");
  if (f.tlsCreds !== undefined && f.uri === undefined)
    throw new UsageError(
      "--tls-creds needs --uri tcp:HOST:PORT (QEMU's TLS goes directly between the hosts; without --uri the stream takes the SSH tunnel)",
    );
  return {
    source: f.source,
    destination: f.dest,
    ...(f.uri !== undefined ? { uri: f.uri } : {}),
    ...(f.nbd !== undefined ? { nbd: f.nbd } : {}),
    copyStorage: f.copyStorage ?? false,
    ...(f.tlsCreds !== undefined ? { tlsCreds: f.tlsCreds } : {}),
    insecure: f.insecure ?? false,
  };
}
