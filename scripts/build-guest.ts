// Builds (or finds in the cache) the lab's Linux guest; scripts/first-run.mjs runs it once tsx is installed.
import { ensureGuestImage } from "../src/lab/guest-image.js";

try {
  const image = await ensureGuestImage({
    log: (line) => {
      console.error(`first-run: ${line}`);
    },
  });
  console.error(`first-run: guest ${image.version} ready in ${image.kernel.replace(/\/vmlinuz$/, "")}`);
} catch (err) {
  console.error(err instanceof Error ? err.message : String(err));
  process.exitCode = 1;
}
