import fc from "fast-check";

/** One family of hostile inputs: how many were tried, and what went wrong (with fast-check's replay seed). */
export interface HostileReport {
  family: string;
  property: string;
  runs: number;
  ms: number;
  failure: string | undefined;
}

export interface HostileOptions {
  seed: number;
  /** Inputs per property. */
  runs: number;
}

/** Runs one fast-check property and reports instead of throwing, so the runner can go on with the others. */
export async function property<T>(
  family: string,
  name: string,
  arb: fc.Arbitrary<T>,
  check: (value: T) => Promise<void> | void,
  o: HostileOptions & { runs: number },
): Promise<HostileReport> {
  const t0 = Date.now();
  let failure: string | undefined;
  try {
    await fc.assert(
      fc.asyncProperty(arb, async (v) => {
        await check(v);
      }),
      { seed: o.seed, numRuns: o.runs, endOnFailure: true },
    );
  } catch (err) {
    // fast-check's message has the counterexample and its replay path; the cause says what went wrong.
    const cause = err instanceof Error && err.cause instanceof Error ? `\n${err.cause.message}` : "";
    failure = `${err instanceof Error ? err.message : String(err)}${cause}`;
  }
  return { family, property: name, runs: o.runs, ms: Date.now() - t0, failure };
}

/** Fails when `fn` takes longer than `ms`, with what it was doing. */
export async function within<T>(ms: number, what: string, fn: () => Promise<T> | T): Promise<T> {
  const t0 = performance.now();
  const out = await fn();
  const took = performance.now() - t0;
  if (took > ms) throw new Error(`${what} took ${took.toFixed(0)} ms (bound ${ms} ms)`);
  return out;
}

/** No stack trace in what a CLI printed (frames look like "    at fn (file:line:col)"). */
export function hasStackTrace(text: string): boolean {
  return /^\s+at .+[:(]\d+/m.test(text);
}
