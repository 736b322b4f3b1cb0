import { homedir } from "node:os";
import path from "node:path";

/** BITFERRY_CACHE_DIR, else /var/cache/bitferry for root, else $XDG_CACHE_HOME/bitferry or ~/.cache/bitferry. */
export function cacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.BITFERRY_CACHE_DIR) return env.BITFERRY_CACHE_DIR;
  if (process.getuid?.() === 0) return "/var/cache/bitferry";
  return path.join(env.XDG_CACHE_HOME ?? path.join(homedir(), ".cache"), "bitferry");
}
