import { BitferryError } from "../util/errors.js";

/** Run error codes the transport raises (DESIGN section 5). Public: add, never rename. */
export type TransportErrorCode = "TLS_FAILED" | "TUNNEL_FAILED";

/**
 * An SSH connection, a forward or a TLS credential failed. `reason` is what ssh or QEMU said, without our
 * framing, so a caller that reports the failure under another code (QMP_ERR_CONNECT for a monitor) keeps it.
 */
export class TransportError extends BitferryError {
  constructor(
    readonly code: TransportErrorCode,
    message: string,
    readonly reason: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}
