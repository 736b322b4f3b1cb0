/**
 * Escaping, truncation and text sizes. Every string that reaches the page comes from QEMU or a policy file and
 * may hold any character, so all of them pass through `esc`.
 */

const ENTITIES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

/** XML 1.0 forbids these even as character references: C0 controls but tab, line feed and carriage return, and U+FFFE/U+FFFF. */
function xmlForbidden(code: number): boolean {
  return (
    (code < 0x20 && code !== 0x09 && code !== 0x0a && code !== 0x0d) || code === 0xfffe || code === 0xffff
  );
}

/**
 * Escapes for HTML and SVG text and for quoted attribute values alike. Characters that would make the inline SVG
 * ill-formed (forbidden controls, lone surrogates) become U+FFFD: the picture shows that something was there.
 */
export function esc(s: string): string {
  let out = "";
  for (const ch of s) {
    const code = ch.codePointAt(0) ?? 0;
    const lone = ch.length === 1 && code >= 0xd800 && code <= 0xdfff;
    out += lone || xmlForbidden(code) ? "\uFFFD" : (ENTITIES[ch] ?? ch);
  }
  return out;
}

/** Code points, so that truncation never splits a surrogate pair. */
function chars(s: string): string[] {
  return Array.from(s);
}

export function charCount(s: string): number {
  return chars(s).length;
}

/** Keeps the start and the end of a long name (bitmap names often differ only in a trailing date or index). */
export function truncate(s: string, max: number): string {
  const c = chars(s);
  if (c.length <= max) return s;
  const tail = Math.max(4, Math.floor((max - 1) / 3));
  const head = max - 1 - tail;
  return `${c.slice(0, head).join("")}…${c.slice(c.length - tail).join("")}`;
}

/** Font stacks: the system's own fonts, nothing fetched. */
export const SANS =
  'system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", "Liberation Sans", Arial, sans-serif';
export const MONO =
  'ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", "Liberation Mono", monospace';

/**
 * Widths without a browser to measure in. Monospace fonts advance about 0.6 em per character on every platform;
 * proportional text is estimated generously (DejaVu Sans, the widest common fallback, averages about 0.58 em).
 */
export function monoWidth(s: string, size: number): number {
  return charCount(s) * size * 0.62;
}

/** Advance widths in em of DejaVu Sans, the widest common fallback, by character class. */
function sansEm(c: string): number {
  if (/[iljtfr.,:;'|!()[\] ]/.test(c)) return 0.36;
  if (/[mw]/.test(c)) return 0.92;
  if (/[MW]/.test(c)) return 0.95;
  if (/[A-Z]/.test(c)) return 0.74;
  if (/[0-9]/.test(c)) return 0.64;
  if (/[a-z]/.test(c)) return 0.61;
  return 0.8;
}

export function sansWidth(s: string, size: number): number {
  let em = 0;
  for (const c of s) em += sansEm(c);
  return em * size;
}

export function plural(n: number, word: string, many = `${word}s`): string {
  return `${n} ${n === 1 ? word : many}`;
}
