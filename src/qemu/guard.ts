/**
 * Reply validators, hand-written because zod cost more than the QMP round trips it checked (40 ms to load it at
 * every start, and more time than the plan itself on large graphs). They check what the zod schemas they replace
 * checked, and fail with zod's words for the same first problem (test/qemu/replies.test.ts compares the two on
 * captured and broken replies): a QEMU that changed its replies reads the same message as before.
 *
 * A guard returns a copy holding only the keys its shape names, in the shape's order (newer QEMUs add keys; the
 * rest of bitferry never sees them). It throws a GuardFailure on the first problem; the path is built only then.
 */

export class GuardFailure extends Error {
  constructor(
    readonly path: (string | number)[],
    readonly issue: string,
  ) {
    super(issue);
  }
}

export interface Guard<T> {
  readonly check: (value: unknown) => T;
  readonly optional: boolean;
}

export type Infer<G> = G extends Guard<infer T> ? T : never;

type OptionalKeys<S> = {
  [K in keyof S]: S[K] extends Guard<unknown> & { optional: true } ? K : never;
}[keyof S];
type Simplify<T> = { [K in keyof T]: T[K] } & {};
export type ShapeOf<S extends Record<string, Guard<unknown>>> = Simplify<
  { [K in Exclude<keyof S, OptionalKeys<S>>]: Infer<S[K]> } & {
    [K in OptionalKeys<S>]?: Infer<S[K]>;
  }
>;

/** The type name zod reports as "received" for a JSON value. */
function received(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "number") {
    if (Number.isNaN(v)) return "NaN";
    if (!Number.isFinite(v)) return v > 0 ? "Infinity" : "-Infinity";
  }
  return typeof v;
}

function expected(what: string, v: unknown): GuardFailure {
  return new GuardFailure([], `Invalid input: expected ${what}, received ${received(v)}`);
}

function required<T>(check: (value: unknown) => T): Guard<T> {
  return { check, optional: false };
}

export const string: Guard<string> = required((v) => {
  if (typeof v !== "string") throw expected("string", v);
  return v;
});

export const boolean: Guard<boolean> = required((v) => {
  if (typeof v !== "boolean") throw expected("boolean", v);
  return v;
});

export const number: Guard<number> = required((v) => {
  if (typeof v !== "number" || !Number.isFinite(v)) throw expected("number", v);
  return v;
});

/** An integer JavaScript holds exactly (QEMU's counts and sizes are 64-bit). */
export const safeInt: Guard<number> = required((v) => {
  if (typeof v !== "number" || !Number.isFinite(v)) throw expected("number", v);
  if (!Number.isInteger(v)) throw new GuardFailure([], "Invalid input: expected int, received number");
  if (v > Number.MAX_SAFE_INTEGER)
    throw new GuardFailure([], `Too big: expected int to be <=${Number.MAX_SAFE_INTEGER}`);
  if (v < Number.MIN_SAFE_INTEGER)
    throw new GuardFailure([], `Too small: expected int to be >=${Number.MIN_SAFE_INTEGER}`);
  return v;
});

export function pattern(re: RegExp): Guard<string> {
  return required((v) => {
    if (typeof v !== "string") throw expected("string", v);
    if (!re.test(v)) throw new GuardFailure([], `Invalid string: must match pattern ${String(re)}`);
    return v;
  });
}

export function optional<T>(g: Guard<T>): Guard<T | undefined> & { optional: true } {
  const inner = g.check;
  return { check: (v) => (v === undefined ? undefined : inner(v)), optional: true };
}

function within(e: unknown, step: string | number): never {
  if (e instanceof GuardFailure) e.path.unshift(step);
  throw e;
}

export function array<T>(g: Guard<T>): Guard<T[]> {
  const inner = g.check;
  return required((v) => {
    if (!Array.isArray(v)) throw expected("array", v);
    const out: T[] = new Array<T>(v.length);
    let i = 0;
    try {
      for (; i < v.length; i++) out[i] = inner(v[i]);
    } catch (e) {
      within(e, i);
    }
    return out;
  });
}

/**
 * An object guard is compiled into a function of its own (as zod compiles its objects): property reads and writes
 * by literal names, which the engine caches per shape, instead of a loop over the keys.
 */
export function object<S extends Record<string, Guard<unknown>>>(shape: S): Guard<ShapeOf<S>> {
  const entries: [string, Guard<unknown>][] = Object.entries(shape);
  const keys = entries.map(([k]) => k);
  const checks = entries.map(([, g]) => g.check);
  const optionals = entries.map(([, g]) => g.optional);
  const lit = (k: string): string => JSON.stringify(k);
  const body: string[] = [
    `if (typeof v !== "object" || v === null || Array.isArray(v)) throw notObject(v);`,
    `let at = 0${keys.map((_, i) => `, v${i}`).join("")};`,
    "try {",
  ];
  keys.forEach((k, i) => body.push(`at = ${i}; v${i} = c[${i}](v[${lit(k)}]);`));
  body.push("} catch (e) { within(e, keys[at]); }");
  // Required keys leading the shape go into the literal; from the first optional one on, keys are added in the
  // shape's order, an absent optional key staying absent (as zod leaves it).
  const firstOptional = optionals.indexOf(true);
  const leading = firstOptional === -1 ? keys.length : firstOptional;
  body.push(
    `const out = {${keys
      .slice(0, leading)
      .map((k, i) => `${lit(k)}: v${i}`)
      .join(", ")}};`,
  );
  keys.forEach((k, i) => {
    if (i < leading) return;
    body.push(
      optionals[i] === true ? `if (v${i} !== undefined) out[${lit(k)}] = v${i};` : `out[${lit(k)}] = v${i};`,
    );
  });
  body.push("return out;");
  // eslint-disable-next-line @typescript-eslint/no-implied-eval -- built only from the shape's own key names
  const make = new Function(
    "c",
    "keys",
    "within",
    "notObject",
    `return function (v) {\n${body.join("\n")}\n};`,
  ) as (
    c: ((x: unknown) => unknown)[],
    keys: string[],
    within: (e: unknown, step: string | number) => never,
    notObject: (v: unknown) => GuardFailure,
  ) => (v: unknown) => ShapeOf<S>;
  return required(make(checks, keys, within, (v) => expected("object", v)));
}
