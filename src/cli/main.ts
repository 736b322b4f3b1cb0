#!/usr/bin/env node
import { Command, CommanderError } from "@commander-js/extra-typings";
import { ExitCode } from "./exit-codes.js";
import { exitCodeFor, processIO, reportError, summarizeError, writeJson, type CliIO } from "./output.js";
import { registerInspect } from "./commands/inspect.js";
import { registerPlan } from "./commands/plan.js";
import { registerMigrate } from "./commands/migrate.js";
import { registerDemo } from "./commands/demo.js";
import { isEntryPoint } from "../util/entry-point.js";

export interface CliContext {
  io: CliIO;
  /** Set by a command action; main returns it. */
  exitCode: number;
}

export function buildProgram(ctx: CliContext): Command {
  const program = new Command()
    .name("bitferry")
    .description(
      "Carry QEMU block dirty bitmaps across live migration, and prove that every one arrived.\n" +
        "Plan every bitmap's fate against both live QEMUs, migrate, verify each bitmap's content, repair on failure.",
    )
    .version("0.1.0")
    .showHelpAfterError("(run with --help for usage)")
    .configureOutput({
      writeOut: (s) => ctx.io.stdout.write(s),
      writeErr: (s) => ctx.io.stderr.write(s),
    })
    .exitOverride();
  registerPlan(program, ctx);
  registerMigrate(program, ctx);
  registerDemo(program, ctx);
  registerInspect(program, ctx);
  return program;
}

/** Runs the CLI and returns the exit status (never calls process.exit, so cleanup always runs). */
export async function main(argv: string[], io: CliIO = processIO): Promise<number> {
  const ctx: CliContext = { io, exitCode: ExitCode.OK };
  const program = buildProgram(ctx);
  try {
    await program.parseAsync(argv, { from: "user" });
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version exit 0; every other parse failure is a usage error.
      if (err.exitCode === 0) return ExitCode.OK;
      if (argv.includes("--json")) {
        writeJson(io, {
          version: 1,
          ok: false,
          error: { code: "USAGE", message: err.message.replace(/^error: /, "") },
        });
      }
      return ExitCode.USAGE;
    }
    // Commands report their own failures; this catches what escapes them (an option parser's own error, for
    // one), which still owes the caller its exit status and, with --json, its one document.
    if (argv.includes("--json")) writeJson(io, { version: 1, ok: false, error: summarizeError(err) });
    reportError(io, err);
    return exitCodeFor(err);
  }
  return ctx.exitCode;
}

if (isEntryPoint(import.meta.url)) {
  process.exitCode = await main(process.argv.slice(2));
}
