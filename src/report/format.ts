// Number and table formatting of the report. Every number printed goes through `fmt`, so a test can check that each
// number in a table is the formatting of a number in the inputs (the report computes no figures of its own).

/** Integers as they are; other numbers to 4 significant digits (0.28534 → 0.2853, 113.277 → 113.3). */
export function fmt(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toPrecision(4)));
}

export type Cell = string | number | null | undefined;

function cell(c: Cell): string {
  if (c === null || c === undefined) return '—';
  if (typeof c === 'number') return fmt(c);
  return c.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

/** A Markdown table; numbers are formatted with `fmt`, missing cells print as "—". */
export function mdTable(header: string[], rows: Cell[][]): string {
  const head = `| ${header.map(cell).join(' | ')} |\n|${header.map(() => '---').join('|')}|\n`;
  return head + rows.map((r) => `| ${r.map(cell).join(' | ')} |`).join('\n') + '\n';
}

export function code(s: string): string {
  return '`' + s.replace(/`/g, "'") + '`';
}

/** The line a missing result gets: what to run to produce it. */
export function notMeasured(commands: string[], why?: string): string {
  const run = commands.map(code).join(' then ');
  return `**not measured yet** — run: ${run}${why ? ` (${why})` : ''}`;
}
