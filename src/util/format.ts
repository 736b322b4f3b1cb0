const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/** Sizes for people: 65536 → "64 KiB", 1245184 → "1.19 MiB", 100 → "100 B". */
export function formatBytes(n: number): string {
  let v = n;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  const text = u === 0 || Number.isInteger(v) ? String(v) : v.toFixed(2).replace(/\.?0+$/, "");
  return `${text} ${UNITS[u] ?? "B"}`;
}
