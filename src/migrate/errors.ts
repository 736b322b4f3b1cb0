import { BitferryError } from "../util/errors.js";

/** Run error codes of `migrate` (DESIGN section 5). Public: add, never rename. */
export type RunErrorCode =
  | "PLAN_ERRORS"
  | "MIGRATION_FAILED"
  | "DESTINATION_LOST"
  | "SOURCE_LOST"
  | "NOT_CONVERGING"
  | "COPY_FAILED"
  | "VERIFY_FAILED"
  | "TIMEOUT"
  | "INTERRUPTED"
  | "QEMU_ERROR"
  | "TLS_FAILED"
  | "TUNNEL_FAILED";

/** Why a migration run ended without success. `code` is the public `error.code` of the result. */
export class RunError extends BitferryError {
  constructor(
    readonly code: RunErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}
