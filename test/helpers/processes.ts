/** The pids of `pids` that are still alive. */
export function alive(pids: number[]): number[] {
  return pids.filter((p) => {
    try {
      process.kill(p, 0);
      return true;
    } catch {
      return false;
    }
  });
}

/** Polls `cond` until it holds or `ms` have passed; returns its last value (no timing assertion: a bound only). */
export async function until(cond: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return cond();
}
