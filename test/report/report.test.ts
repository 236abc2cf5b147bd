// The report generator on fixture result files (real vega → SVG → resvg PNG rendering, real files in a temp dir).
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { command } from '../../src/cli/commands/report.js';
import { parseArgs } from '../../src/cli/args.js';
import { DEFAULT_CONFIG } from '../../src/config/config.js';
import { fmt } from '../../src/report/format.js';
import { generateReport, latencyRows } from '../../src/report/generate.js';
import { collectInputs } from '../../src/report/sources.js';
import { logger } from '../../src/util/log.js';
import { writeFixture } from './fixtures.js';

const roots: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'gems-report-'));
  roots.push(d);
  return d;
}
afterAll(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const NUMBER = /^-?\d+(\.\d+)?(e[-+]?\d+)?$/;

/** Every cell of every table body from the first numbered section on (machine facts come from the OS). */
function tableCells(md: string): string[] {
  const body = md.slice(md.indexOf('## 1.'));
  const cells: string[] = [];
  const lines = body.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (!line.startsWith('|') || /^\|(-+\|)+$/.test(line)) continue;
    if (lines[i + 1] && /^\|(-+\|)+$/.test(lines[i + 1]!)) continue; // header row
    cells.push(...line.slice(1, -1).split(' | ').map((c) => c.trim()));
  }
  return cells;
}

describe('gems report', () => {
  it('writes index.md with every section, tables from the inputs, and readable SVG/PNG charts with their data', async () => {
    const root = tmp();
    const fx = writeFixture(root);
    const inputs = collectInputs({ dataDirs: [fx.dataDir], benchDir: fx.benchDir });
    expect(inputs.skipped).toEqual([]);
    const res = await generateReport(inputs, { outDir: join(root, 'report'), command: 'gems report (test)', seed: 42 });
    const md = readFileSync(res.index, 'utf8');
    for (const h of ['## 1. Overall quality', '### 1a.', '### 1b.', '## 2. Stream ablation', '## 3. Fusion variants', '## 4. Indexer efficiency', '## 5. Latency vs history length', '## 6. Share of attention', '## 7. Recall split by dormancy', '## 8. Training curves', '## 9. Benchmarks'])
      expect(md).toContain(h);
    // published rows are labelled as published references with their source
    expect(md).toMatch(/\| SASRec \(published\) \| published reference: generative-recommenders README[^|]*\| — \| 0\.2853 \| 0\.1603 \|/);
    // commands that produced the numbers are stated
    expect(md).toContain('`gems eval --run sasrec --run gems-ml1m --protocol loo`');
    expect(md).toContain('`npm run bench -- kernels --steps-plain 2`');
    expect(md).toContain('| gems_indexer | 1000 |');
    const names = res.charts.map((c) => c.name).sort();
    expect(names).toEqual(['attention-share', 'dormancy-recall', 'fusion-hrecall', 'indexer-latency', 'latency-vs-history', 'lifelong-quality', 'ml1m-quality', 'stream-ablation-hrecall', 'training-curves']);
    for (const c of res.charts) {
      const svg = readFileSync(c.svg, 'utf8');
      expect(svg.startsWith('<svg')).toBe(true);
      expect(svg).toContain('</svg>');
      const png = readFileSync(c.png);
      expect(png.subarray(0, 8).equals(PNG_SIGNATURE)).toBe(true);
      expect(statSync(c.png).size).toBeGreaterThan(8000);
      expect(readFileSync(c.csv, 'utf8').split('\n').length).toBeGreaterThan(2);
      const json = JSON.parse(readFileSync(c.json, 'utf8')) as { rows: unknown[]; vegaLite: unknown };
      expect(json.rows.length).toBeGreaterThan(0);
      expect(md).toContain(`charts/${c.name}.png`);
    }
    // text is rendered (a font was found): the SVG carries the title and the PNG is far larger than a blank one
    expect(readFileSync(res.charts.find((c) => c.name === 'ml1m-quality')!.svg, 'utf8')).toContain('ML-1M leave-one-out');
  }, 60_000);

  it('never prints a number that is not in the inputs', async () => {
    const root = tmp();
    const fx = writeFixture(root);
    const res = await generateReport(collectInputs({ dataDirs: [fx.dataDir], benchDir: fx.benchDir }), { outDir: join(root, 'report'), command: 'gems report', seed: 42 });
    const allowed = new Set(fx.numbers.map(fmt));
    const numeric = tableCells(readFileSync(res.index, 'utf8')).filter((c) => NUMBER.test(c));
    expect(numeric.length).toBeGreaterThan(150);
    const foreign = numeric.filter((c) => !allowed.has(c));
    expect(foreign).toEqual([]);
    // the check itself catches an invented number
    expect(allowed.has(fmt(0.123456789))).toBe(false);
  }, 60_000);

  it('marks missing results as not measured, with the command that produces them', async () => {
    const root = tmp();
    const fx = writeFixture(root, { withLatency: false, withAttention: false, withLifelong: false });
    const res = await generateReport(collectInputs({ dataDirs: [fx.dataDir], benchDir: fx.benchDir }), { outDir: join(root, 'report'), command: 'gems report', seed: 42 });
    const md = readFileSync(res.index, 'utf8');
    const section = (n: number) => md.slice(md.indexOf(`## ${n}.`), md.indexOf(`## ${n + 1}.`));
    expect(section(4)).toContain('**not measured yet** — run: `npm run bench -- serve-latency`');
    expect(section(5)).toContain('**not measured yet** — run: `npm run bench -- serve-latency`');
    expect(section(6)).toContain('**not measured yet** — run: `npm run report -- --rerun --only attention`');
    expect(section(2)).toContain('**not measured yet** — run: `npm run gems -- train --model gems --preset lifelong --streams recent,mid --run ablation-recent-mid` then `npm run gems -- eval --run ablation-recent-mid --protocol lifelong`');
    expect(section(3)).toContain('--fusion shared --run fusion-shared');
    expect(section(7)).toContain('not measured yet');
    expect(md).toContain('### serve-load\n\n**not measured yet** — run: `npm run bench -- serve-load`');
    expect(res.missing).toContain('4 indexer efficiency');
    expect(res.charts.map((c) => c.name)).not.toContain('latency-vs-history');
    expect(md).not.toContain('| gems_indexer');
  }, 60_000);

  it('lists malformed result files as skipped instead of guessing', () => {
    const root = tmp();
    const fx = writeFixture(root, { withLatency: false, withAttention: false });
    mkdirSync(join(fx.dataDir, 'runs', 'broken'), { recursive: true });
    writeFileSync(join(fx.dataDir, 'runs', 'broken', 'eval.json'), JSON.stringify({ title: 't', command: 'c', rows: [{ name: 'x', metrics: {} }], details: { protocol: 'loo', checkpoints: ['/a/b/best', '/c/d/best'] }, createdAt: 'x' }));
    writeFileSync(join(fx.dataDir, 'runs', 'broken', 'bad.json'), '{ not json');
    const inputs = collectInputs({ dataDirs: [fx.dataDir], benchDir: fx.benchDir });
    expect(inputs.skipped.map((s) => s.reason).join('\n')).toMatch(/1 result rows for 2 checkpoints/);
    expect(inputs.skipped.some((s) => s.file.endsWith('bad.json'))).toBe(true);
    expect(inputs.evals.length).toBe(5);
  });

  it('reads latency rows from nested or row-list benchmark shapes', () => {
    const nested = latencyRows({ gems: { len_10k: { p50_ms: 3, p99_ms: 4 } }, p99_ms: 1 });
    expect(nested).toEqual([{ variant: 'gems', length: 10000, figures: { p50_ms: 3, p99_ms: 4 } }]);
    const list = latencyRows({ rows: [{ variant: 'brute', history_length: 1000, p50_ms: 7, recall_at_100: 0.5 }] });
    expect(list).toEqual([{ variant: 'brute', length: 1000, figures: { p50_ms: 7, recall_at_100: 0.5 } }]);
  });

  it('`gems report` writes the report from cached results', async () => {
    const root = tmp();
    const fx = writeFixture(root);
    const lines: string[] = [];
    const out = join(root, 'out');
    const args = parseArgs(['report', '--out', out, '--bench-dir', fx.benchDir]);
    const code = await command.run({ config: { ...DEFAULT_CONFIG, dataDir: fx.dataDir }, args, log: logger('test'), out: (l) => lines.push(l) });
    expect(code).toBe(0);
    expect(existsSync(join(out, 'index.md'))).toBe(true);
    const res = JSON.parse(lines[lines.length - 1]!) as { report: string; charts: number; not_measured: string[] };
    expect(res.charts).toBe(9);
    expect(readFileSync(join(out, 'index.md'), 'utf8')).toMatch(/Backend of the report process: `\w+/);
  }, 60_000);
});

describe('gems report --rerun planning', () => {
  it('plans `gems eval` per checkpoint (lifelong where the ground truth exists) and benchmarks with their last arguments', async () => {
    const { planSteps, runStep } = await import('../../src/report/rerun.js');
    const root = tmp();
    const fx = writeFixture(root, { withLatency: false, withAttention: false });
    for (const [run, kind] of [['gems', 'gems'], ['sasrec', 'sasrec'], ['new-run', 'gems']] as const) {
      mkdirSync(join(fx.dataDir, 'checkpoints', run, 'best'), { recursive: true });
      writeFileSync(join(fx.dataDir, 'checkpoints', run, 'best', 'meta.json'), JSON.stringify({ kind, modelConfig: kind === 'gems' ? { fusion: 'sum', streams: { recent: true, mid: true, lifecycle: true } } : {} }));
    }
    mkdirSync(join(fx.dataDir, 'generated'), { recursive: true });
    writeFileSync(join(fx.dataDir, 'generated', 'truth.jsonl'), '');
    const inputs = collectInputs({ dataDirs: [fx.dataDir], benchDir: fx.benchDir });
    expect(inputs.checkpoints.map((c) => `${c.run}:${c.kind}:${c.lifelong}`)).toEqual(['gems:gems:true', 'new-run:gems:true', 'sasrec:sasrec:true']);
    const all = planSteps({ dataDirs: [fx.dataDir], benches: ['kernels', 'serve-latency', 'no-such-bench'], inputs, missingOnly: false });
    // SASRec is scored with the loo protocol only, so it is not rerun on the generated set; a benchmark with no
    // recorded result runs with its defaults; one that is not in bench/ is skipped.
    expect(all.map((s) => s.display)).toEqual([
      `GEMS_DATA_DIR=${fx.dataDir} npm run gems -- eval --run gems --protocol lifelong`,
      `GEMS_DATA_DIR=${fx.dataDir} npm run gems -- eval --run new-run --protocol lifelong`,
      'npm run bench -- kernels --steps-plain 2',
      'npm run bench -- serve-latency',
    ]);
    const missing = planSteps({ dataDirs: [fx.dataDir], benches: ['kernels'], inputs, missingOnly: true });
    expect(missing.map((s) => s.display)).toEqual([`GEMS_DATA_DIR=${fx.dataDir} npm run gems -- eval --run new-run --protocol lifelong`]);
    // steps run as real child processes; the exit code comes back
    expect(await runStep({ what: 'bench', display: 'exit 3', argv: [process.execPath, '-e', 'process.exit(3)'], env: {} })).toBe(3);
  });

  it('suggests evaluating an existing checkpoint rather than training a new one', async () => {
    const root = tmp();
    const fx = writeFixture(root, { withLatency: false, withAttention: false });
    mkdirSync(join(fx.dataDir, 'checkpoints', 'mine-recent-mid', 'best'), { recursive: true });
    writeFileSync(join(fx.dataDir, 'checkpoints', 'mine-recent-mid', 'best', 'meta.json'), JSON.stringify({ kind: 'gems', modelConfig: { fusion: 'sum', streams: { recent: true, mid: true, lifecycle: false } } }));
    mkdirSync(join(fx.dataDir, 'generated'), { recursive: true });
    writeFileSync(join(fx.dataDir, 'generated', 'truth.jsonl'), '');
    const res = await generateReport(collectInputs({ dataDirs: [fx.dataDir], benchDir: fx.benchDir }), { outDir: join(root, 'report'), command: 'gems report', seed: 42 });
    const md = readFileSync(res.index, 'utf8');
    expect(md).toContain(`- recent + mid-term: **not measured yet** — run: \`npm run gems -- eval --data-dir ${fx.dataDir} --run mine-recent-mid --protocol lifelong\``);
  }, 60_000);
});
