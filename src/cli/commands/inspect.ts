import type { Command } from "@commander-js/extra-typings";
import type { CliContext } from "../main.js";

export function registerInspect(program: Command, ctx: CliContext): void {
  program
    .command("inspect")
    .summary("Show the persistent dirty bitmaps stored in a qcow2 image, read offline.")
    .description(
      "Show the persistent dirty bitmaps stored in a qcow2 image, read offline. The file is opened read-only " +
        "and without a lock, so an image a running QEMU holds can be read: its bitmaps then show as in use, " +
        "their stored contents stale.\n\n" +
        "Dirty bytes equal QEMU's `count`; --sha256 equals x-debug-block-dirty-bitmap-sha256.\n\n" +
        "Exit status: 0 success (also with bitmaps in use); 1 corrupt or unsupported image, or not qcow2; " +
        "2 missing file, bad usage or unknown --bitmap name.",
    )
    .argument("<image>", "the qcow2 image file")
    .option("--bitmap <name>", "only this bitmap")
    .option("--extents", "list the dirty extents (guest byte ranges, merged, clipped to the virtual size)")
    .option("--sha256", "the SHA-256 QEMU's x-debug-block-dirty-bitmap-sha256 returns for each bitmap")
    .option("--json", "print one JSON document on stdout (also on failure)")
    .action(async (image, flags) => {
      const { runInspect } = await import("./inspect-action.js");
      ctx.exitCode = await runInspect(ctx.io, image, flags);
    });
}
