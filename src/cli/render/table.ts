import Table from "cli-table3";

/**
 * Rows per cli-table3 table. Its layout checks each cell against every earlier row (for spans bitferry never uses),
 * so one table of 20,000 rows took 23 s; tables of this many rows keep it linear.
 */
const ROWS_PER_TABLE = 100;

const OPTIONS = { style: { head: [], border: [] }, wordWrap: true };

function draw(head: string[] | undefined, rows: string[][], colWidths?: number[]): string {
  const table = new Table({ ...OPTIONS, ...(head ? { head } : {}), ...(colWidths ? { colWidths } : {}) });
  table.push(...rows);
  return table.toString();
}

/**
 * The table cli-table3 draws for `head` and `rows` (boxed, a line between rows), the same text, in time linear in
 * the rows: drawn as tables of ROWS_PER_TABLE rows, all with the widest column widths any of them needs (read off
 * each one's top border), joined where one's bottom border meets the next one's top.
 */
export function renderTable(head: string[], rows: string[][]): string {
  if (rows.length <= ROWS_PER_TABLE) return draw(head, rows);
  const parts: string[][][] = [];
  for (let i = 0; i < rows.length; i += ROWS_PER_TABLE) parts.push(rows.slice(i, i + ROWS_PER_TABLE));
  const widths = head.map(() => 0);
  parts.forEach((part, k) => {
    const top = draw(k === 0 ? head : undefined, part).split("\n", 1)[0] ?? "";
    top
      .slice(1, -1)
      .split("┬")
      .forEach((segment, i) => (widths[i] = Math.max(widths[i] ?? 0, segment.length)));
  });
  const between = `├${widths.map((w) => "─".repeat(w)).join("┼")}┤`;
  const lines: string[] = [];
  parts.forEach((part, k) => {
    const drawn = draw(k === 0 ? head : undefined, part, widths).split("\n");
    if (k > 0) drawn[0] = between;
    if (k < parts.length - 1) drawn.pop();
    lines.push(...drawn);
  });
  return lines.join("\n");
}
