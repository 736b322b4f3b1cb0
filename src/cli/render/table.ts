import Table from "cli-table3";

/**
 * Up to this many rows, cli-table3 draws the table itself. Beyond, its layout is quadratic (it checks each cell
 * against every earlier row, for spans bitferry never uses) and its cells cost tens of microseconds each: one table
 * of 20,000 rows took 23 s.
 */
const ROWS_PER_TABLE = 100;

/** How cli-table3 is asked to draw: plain borders and header, and whether a cell wraps at its column's width. */
export interface TableStyle {
  wordWrap: boolean;
}

function draw(style: TableStyle, head: string[] | undefined, rows: string[][], colWidths?: number[]): string {
  const table = new Table({
    style: { head: [], border: [] },
    wordWrap: style.wordWrap,
    ...(head ? { head } : {}),
    ...(colWidths ? { colWidths } : {}),
  });
  table.push(...rows);
  return table.toString();
}

// eslint-disable-next-line no-control-regex -- terminal colour codes are what is stripped
const SGR = /\u001b\[[0-9;]*m/g;
const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

/** A cell's width as cli-table3 counts it, where that is its length: printable ASCII, colour codes aside. */
function asciiWidth(cell: string): number | undefined {
  const bare = cell.includes("\u001b") ? cell.replace(SGR, "") : cell;
  return PRINTABLE_ASCII.test(bare) ? bare.length : undefined;
}

/**
 * The table cli-table3 draws for `head` and `rows` (boxed, a line between rows, one space of padding), the same
 * text, in time linear in the rows. Beyond ROWS_PER_TABLE rows, a row of printable ASCII (the usual plan row) is
 * drawn here; any other row (wide or combining characters, line breaks) is measured and drawn by cli-table3, alone,
 * at the table's column widths.
 */
export function renderTable(
  head: string[],
  rows: string[][],
  style: TableStyle = { wordWrap: true },
): string {
  const headWidths = head.map(asciiWidth);
  if (rows.length <= ROWS_PER_TABLE || headWidths.includes(undefined)) return draw(style, head, rows);
  const widths = headWidths.map((w) => (w ?? 0) + 2);
  const theirs: string[][] = [];
  const cells = rows.map((row) => {
    const measured = row.map(asciiWidth);
    if (measured.includes(undefined)) {
      theirs.push(row);
      return undefined;
    }
    measured.forEach((w, i) => (widths[i] = Math.max(widths[i] ?? 0, (w ?? 0) + 2)));
    return measured as number[];
  });
  // Their widths, read off the top border of cli-table3's tables of them.
  for (let i = 0; i < theirs.length; i += ROWS_PER_TABLE) {
    const top = draw(style, undefined, theirs.slice(i, i + ROWS_PER_TABLE)).split("\n", 1)[0] ?? "";
    top
      .slice(1, -1)
      .split("┬")
      .forEach((segment, c) => (widths[c] = Math.max(widths[c] ?? 0, segment.length)));
  }
  const rule = (left: string, mid: string, right: string): string =>
    `${left}${widths.map((w) => "─".repeat(w)).join(mid)}${right}`;
  const line = (row: string[], measured: number[]): string =>
    `│${row.map((cell, i) => ` ${cell}${" ".repeat((widths[i] ?? 0) - 2 - (measured[i] ?? 0))} `).join("│")}│`;
  const between = rule("├", "┼", "┤");
  const lines = [rule("┌", "┬", "┐"), line(head, headWidths as number[])];
  rows.forEach((row, r) => {
    lines.push(between);
    const measured = cells[r];
    if (measured) lines.push(line(row, measured));
    else lines.push(...draw(style, undefined, [row], widths).split("\n").slice(1, -1));
  });
  lines.push(rule("└", "┴", "┘"));
  return lines.join("\n");
}
