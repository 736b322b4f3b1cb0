/**
 * Every error bitferry raises on purpose carries a stable `code`: scripts and the CLI branch on it, never on the
 * message text, which may improve over time.
 */
export abstract class BitferryError extends Error {
  abstract readonly code: string;

  override get name(): string {
    return this.constructor.name;
  }
}

export function isBitferryError(value: unknown): value is BitferryError {
  return value instanceof BitferryError;
}

/** Turns anything thrown into a message fit for one line of output. */
export function describeError(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

/** Bad command-line usage, a missing file, or an unparsable input the user gave: exit status 2. */
export class UsageError extends BitferryError {
  readonly code: string = "USAGE";
}
