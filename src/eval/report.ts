// Evaluation results as JSON and a Markdown table, written under the run's output directory.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface ResultRow {
  /** Row label, e.g. "sasrec (filtered)" or "gems all streams". */
  name: string;
  metrics: Record<string, number>;
}

export interface EvalReport {
  title: string;
  command: string;
  protocol: string;
  rows: ResultRow[];
  /** Anything else worth keeping (checkpoint, data fingerprint, timings, reference rows). */
  details: Record<string, unknown>;
  createdAt: string;
}

export function markdownTable(rows: ResultRow[], columns?: string[]): string {
  const cols = columns ?? [...new Set(rows.flatMap((r) => Object.keys(r.metrics)))];
  const head = `| model | ${cols.join(' | ')} |\n|---|${cols.map(() => '---').join('|')}|\n`;
  const body = rows
    .map((r) => `| ${r.name} | ${cols.map((c) => (r.metrics[c] === undefined ? '' : Number.isInteger(r.metrics[c]) ? String(r.metrics[c]) : r.metrics[c]!.toFixed(4))).join(' | ')} |`)
    .join('\n');
  return head + body + '\n';
}

/** Writes <dir>/<name>.json and <dir>/<name>.md; returns their paths. */
export function writeReport(dir: string, name: string, report: EvalReport, columns?: string[]): { json: string; md: string } {
  mkdirSync(dir, { recursive: true });
  const json = join(dir, `${name}.json`);
  const md = join(dir, `${name}.md`);
  writeFileSync(json, JSON.stringify(report, null, 2) + '\n');
  const text = `# ${report.title}\n\n${report.protocol}\n\n${markdownTable(report.rows, columns)}\nCommand: \`${report.command}\`\n\nCreated ${report.createdAt}.\n`;
  writeFileSync(md, text);
  return { json, md };
}

/** Published ML-1M rows (generative-recommenders README; DESIGN §5) for side-by-side tables. */
export const ML1M_REFERENCE: ResultRow[] = [
  { name: 'SASRec (published)', metrics: { 'HR@10': 0.2853, 'NDCG@10': 0.1603, 'HR@50': 0.5474, 'NDCG@50': 0.2185, 'HR@200': 0.7528, 'NDCG@200': 0.2498 } },
  { name: 'HSTU (published)', metrics: { 'HR@10': 0.3097, 'NDCG@10': 0.172, 'HR@50': 0.5754, 'NDCG@50': 0.2307, 'HR@200': 0.7716, 'NDCG@200': 0.2606 } },
  { name: 'HSTU-large (published)', metrics: { 'HR@10': 0.3294, 'NDCG@10': 0.1893, 'HR@50': 0.5935, 'NDCG@50': 0.2481, 'HR@200': 0.7839, 'NDCG@200': 0.2771 } },
];
