import pc from "picocolors";
import { debug } from "../util/debug.js";
import { BitferryError, UsageError, describeError } from "../util/errors.js";
import { QmpConnectError } from "../qmp/errors.js";
import { ExitCode } from "./exit-codes.js";

/** Where the CLI writes; injectable so commands are tested without spawning. */
export interface CliIO {
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
}

export const processIO: CliIO = { stdout: process.stdout, stderr: process.stderr };

/**
 * The one JSON document a `--json` run prints on stdout: indented for reading, except a large one (a plan of
 * thousands of bitmaps) going to a pipe or file, where indentation would double its size and its printing time.
 */
export function writeJson(io: CliIO, doc: unknown): void {
  let text: string;
  if (io.stdout.isTTY) text = JSON.stringify(doc, null, 2);
  else {
    // Serialised once when large; a small document is serialised again, indented (a few milliseconds at most).
    text = JSON.stringify(doc);
    if (text.length < 1_000_000) text = JSON.stringify(doc, null, 2);
  }
  // Two writes: appending the newline would copy megabytes of text into a new string first.
  io.stdout.write(text);
  io.stdout.write("\n");
}

export type Colors = ReturnType<typeof pc.createColors>;

export function colors(io: CliIO): Colors {
  const enabled = Boolean(io.stdout.isTTY) && !process.env.NO_COLOR;
  return pc.createColors(enabled);
}

export interface ErrorSummary {
  code: string;
  message: string;
}

export function summarizeError(err: unknown): ErrorSummary {
  if (err instanceof BitferryError) return { code: err.code, message: err.message };
  return { code: "INTERNAL", message: describeError(err) };
}

/** The exit status for an error that ended a command. */
export function exitCodeFor(err: unknown): ExitCode {
  if (err instanceof UsageError) return ExitCode.USAGE;
  if (err instanceof QmpConnectError) return ExitCode.CONNECT;
  return ExitCode.FAILED;
}

/** One short line on stderr; the stack only with NODE_DEBUG=bitferry. */
export function reportError(io: CliIO, err: unknown): void {
  const { code, message } = summarizeError(err);
  io.stderr.write(`bitferry: ${message}${code === "INTERNAL" ? "" : ` [${code}]`}\n`);
  if (err instanceof Error && err.stack) debug("%s", err.stack);
}
