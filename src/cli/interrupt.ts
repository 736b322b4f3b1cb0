import { ExitCode } from "./exit-codes.js";
import { writeJson, type CliIO } from "./output.js";

/**
 * For commands that change nothing (`plan`, `inspect`): SIGINT or SIGTERM ends them at once, but still with the
 * contract's exit status (130, 143) and, with `--json`, the one document a script expects on stdout.
 * Returns the function that removes the handlers.
 */
export function exitOnSignal(io: CliIO, json: boolean, doing: string): () => void {
  const onSignal = (sig: NodeJS.Signals): void => {
    const error = {
      code: "INTERRUPTED",
      message: `interrupted (${sig}) while ${doing}; nothing was changed`,
    };
    if (json) writeJson(io, { version: 1, ok: false, error });
    io.stderr.write(`\nbitferry: ${error.message} [${error.code}]\n`);
    // Writes to pipes and files are synchronous on Linux: the document is out before the process ends.
    process.exit(sig === "SIGINT" ? ExitCode.SIGINT : ExitCode.SIGTERM);
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  return () => {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  };
}
