import { BitferryError } from "../util/errors.js";

/** Base of every error the QMP layer raises. */
export abstract class QmpError extends BitferryError {}

/** The monitor could not be reached at all (socket missing, refused, wrong address). */
export class QmpConnectError extends QmpError {
  readonly code = "QMP_ERR_CONNECT";
  constructor(
    readonly address: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(`cannot connect to QMP monitor at ${address}: ${message}`, options);
  }
}

/** QEMU answered a command with `{"error": {"class", "desc"}}`. */
export class QmpCommandError extends QmpError {
  readonly code = "QMP_ERR_COMMAND";
  constructor(
    readonly command: string,
    readonly args: unknown,
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`QEMU refused ${command}: ${desc} (${errorClass})`);
  }
}

/** No reply (or no greeting) arrived in time. The command may still run inside QEMU. */
export class QmpTimeoutError extends QmpError {
  readonly code = "QMP_ERR_TIMEOUT";
  constructor(
    readonly command: string,
    readonly timeoutMs: number,
    detail = "",
  ) {
    super(`no reply to ${command} within ${timeoutMs} ms${detail ? `: ${detail}` : ""}`);
  }
}

/** The caller's AbortSignal fired before the reply arrived. */
export class QmpAbortedError extends QmpError {
  readonly code = "QMP_ERR_ABORTED";
  constructor(
    readonly command: string,
    options?: ErrorOptions,
  ) {
    super(`${command} was abandoned before QEMU replied`, options);
  }
}

/**
 * The connection ended. `expected` is true after `quit` or `close()`; otherwise QEMU went away under us, and
 * `pending` names the commands that were waiting for a reply.
 */
export class QmpConnectionClosedError extends QmpError {
  readonly code = "QMP_ERR_CLOSED";
  constructor(
    readonly expected: boolean,
    readonly pending: readonly string[],
    options?: ErrorOptions,
  ) {
    const what = expected
      ? "QMP connection closed"
      : "QMP connection closed unexpectedly (QEMU exited or the socket dropped)";
    super(pending.length > 0 ? `${what} while waiting for: ${pending.join(", ")}` : what, options);
  }
}

/** The peer does not speak QMP as we understand it: garbage, an oversized line, a bad greeting. */
export class QmpProtocolError extends QmpError {
  readonly code = "QMP_ERR_PROTOCOL";
  constructor(
    message: string,
    readonly raw?: string,
  ) {
    super(raw === undefined ? message : `${message}: ${truncate(raw, 200)}`);
  }
}

/** A method was called in a state that does not allow it (for example `execute` after `close`). */
export class QmpStateError extends QmpError {
  readonly code = "QMP_ERR_STATE";
}

function truncate(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, max)}… (${s.length} bytes)`;
}
