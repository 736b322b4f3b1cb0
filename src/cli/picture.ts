import { writeFile } from "node:fs/promises";
import type { BlockGraph } from "../graph/model.js";
import type { MigrateResult } from "../migrate/run.js";
import type { Plan } from "../policy/types.js";
import { UsageError } from "../util/errors.js";

/** `--html FILE` could not be written (a missing folder, no permission). */
export class PictureWriteError extends UsageError {
  override readonly code = "HTML_WRITE_FAILED";
}

/** Writes the self-contained picture of a plan (and of a migration's verification) to `file`. */
export async function writePicture(
  file: string,
  input: { plan: Plan; source: BlockGraph; destination: BlockGraph; result?: MigrateResult },
): Promise<void> {
  const { renderPlanHtml } = await import("../picture/index.js");
  const html = await renderPlanHtml(input);
  try {
    await writeFile(file, html);
  } catch (err) {
    throw new PictureWriteError(
      `cannot write the picture to ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
    );
  }
}
