// Builds report/index.md and its charts from the collected inputs (sources.ts). Sections follow the paper's tables
// and figures (issue 6, items 1–8), then every benchmark's figures. A result that does not exist says so with the
// command that produces it. The only typed-in numbers are the published ML-1M rows (ML1M_REFERENCE), labelled.
import { mkdirSync, writeFileSync } from 'node:fs';
import { arch, cpus, platform, release, totalmem } from 'node:os';
import { join, relative } from 'node:path';
import { ML1M_REFERENCE } from '../eval/report.js';
import { writeChart, type ChartFiles, type Datum } from './charts.js';
import { code, fmt, mdTable, notMeasured, type Cell } from './format.js';
import type { BenchResult, EvaluatedModel, ReportInputs, StreamSet } from './sources.js';

export const PUBLISHED_SOURCE = 'published reference: generative-recommenders README (meta-recsys), ML-1M, as quoted in DESIGN §5';

export interface ReportOptions {
  outDir: string;
  /** The command line that produced the report (stated in it). */
  command: string;
  /** Config seed of the report process. */
  seed: number;
  /** Backend the report process would use (eval JSON does not record it). */
  backend?: string;
  createdAt?: string;
}

export interface ReportResult {
  index: string;
  charts: ChartFiles[];
  /** Section titles whose results were missing (each printed a "not measured yet" line). */
  missing: string[];
}

const LOO_COLS = ['users', 'HR@10', 'NDCG@10', 'HR@50', 'NDCG@50', 'HR@200', 'NDCG@200'];
const LIFELONG_COLS = ['targets', 'Recall@10', 'NDCG@10', 'Recall@100', 'NDCG@100', 'Recall@500', 'NDCG@500'];
const FUSIONS: { fusion: string; label: string; flag: string }[] = [
  { fusion: 'shared', label: '(a) one shared encoder over concatenated streams', flag: 'shared' },
  { fusion: 'concat', label: '(b) separate encoders, concatenated decoder memory', flag: 'concat' },
  { fusion: 'gated', label: '(c) gated weighting', flag: 'gated' },
  { fusion: 'sum', label: '(d) parameter-free sum (GEMs)', flag: 'sum' },
];
const ABLATION: { streams: StreamSet; label: string; flag: string; run: string }[] = [
  { streams: { recent: true, mid: false, lifecycle: false }, label: 'recent only (TIGER-like GR)', flag: 'recent', run: 'ablation-recent' },
  { streams: { recent: true, mid: true, lifecycle: false }, label: 'recent + mid-term', flag: 'recent,mid', run: 'ablation-recent-mid' },
  { streams: { recent: true, mid: false, lifecycle: true }, label: 'recent + lifecycle', flag: 'recent,lifecycle', run: 'ablation-recent-lifecycle' },
  { streams: { recent: true, mid: true, lifecycle: true }, label: 'all three (GEMs)', flag: 'recent,mid,lifecycle', run: 'gems' },
];
const ALL: StreamSet = { recent: true, mid: true, lifecycle: true };

const sameStreams = (a: StreamSet | undefined, b: StreamSet) => !!a && a.recent === b.recent && a.mid === b.mid && a.lifecycle === b.lifecycle;
const streamLabel = (s: StreamSet | undefined) => (s ? (['recent', 'mid', 'lifecycle'] as const).filter((k) => s[k]).join('+') : '?');

/** `--data-dir X ` for a suggested command, when the report knows the data dir of that kind. */
function dd(dir: string | undefined): string {
  return dir ? `--data-dir ${dir} ` : '';
}
function trainCmd(run: string, extra: string, dataDir?: string): string {
  return `npm run gems -- train ${dd(dataDir)}--model gems --preset lifelong ${extra}--run ${run}`.replace(/\s+/g, ' ');
}
function evalCmd(run: string, protocol: string, dataDir?: string): string {
  return `npm run gems -- eval ${dd(dataDir)}--run ${run} --protocol ${protocol}`;
}

/** Latest test-split result per run (data dir + run name: the checkpoint may have been moved) and protocol. */
function latest(evals: EvaluatedModel[]): EvaluatedModel[] {
  const by = new Map<string, EvaluatedModel>();
  for (const e of evals) {
    if (e.split !== 'test') continue;
    const key = `${e.protocol}|${e.dataDir}|${e.run}`;
    const prev = by.get(key);
    if (!prev || prev.createdAt < e.createdAt) by.set(key, e);
  }
  return [...by.values()].sort((a, b) => a.run.localeCompare(b.run));
}

/** Lifelong GEMs results with these streams and fusion, newest first. */
function matches(lifelong: EvaluatedModel[], streams: StreamSet, fusion: string): EvaluatedModel[] {
  return lifelong.filter((e) => e.kind === 'gems' && sameStreams(e.streams, streams) && e.fusion === fusion).sort((a, b) => b.createdAt.localeCompare(a.createdAt));
}

/** Newest lifelong GEMs result with these streams and fusion. */
function pick(lifelong: EvaluatedModel[], streams: StreamSet, fusion: string): EvaluatedModel | undefined {
  return matches(lifelong, streams, fusion)[0];
}

function hrecallKeys(rows: Record<string, number>[]): string[] {
  const keys = new Set<string>();
  for (const r of rows) for (const k of Object.keys(r)) if (/^HRecall@L\d+@\d+$/.test(k)) keys.add(k);
  const parse = (k: string) => k.match(/^HRecall@L(\d+)@(\d+)$/)!.slice(1).map(Number) as [number, number];
  return [...keys].sort((a, b) => parse(a)[1] - parse(b)[1] || parse(a)[0] - parse(b)[0]);
}

/** Machine facts of the report process. */
function machine(): Record<string, string | number> {
  return { cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length, node: process.version, os: `${platform()} ${release()} ${arch()}`, memory_gb: Math.round(totalmem() / 1024 ** 3) };
}

interface LatencyRow {
  variant: string;
  length: number | null;
  figures: Record<string, number>;
}

const LENGTH_FIELDS = ['history_length', 'history', 'length', 'events', 'n_events', 'len'];
const VARIANT_FIELDS = ['variant', 'model', 'name'];

function lengthOfSegment(seg: string): number | null {
  const m = seg.match(/^(?:len|length|history|n|h|events)?[_-]?(\d+(?:\.\d+)?)(k|m)?$/i);
  if (!m) return null;
  const mult = m[2]?.toLowerCase() === 'k' ? 1e3 : m[2]?.toLowerCase() === 'm' ? 1e6 : 1;
  return Number(m[1]) * mult;
}

/**
 * Rows of a latency benchmark: every object holding a numeric `p50_ms`, its variant and history length read from
 * its own fields (variant/model/name, history_length/length/events) or from its path in the JSON.
 */
export function latencyRows(data: Record<string, unknown>): LatencyRow[] {
  const out: LatencyRow[] = [];
  const walk = (v: unknown, path: string[]) => {
    if (Array.isArray(v)) return v.forEach((x, i) => walk(x, [...path, String(i)]));
    if (typeof v !== 'object' || v === null) return;
    const o = v as Record<string, unknown>;
    if (typeof o['p50_ms'] === 'number') {
      const figures: Record<string, number> = {};
      for (const [k, x] of Object.entries(o)) if (typeof x === 'number' && Number.isFinite(x)) figures[k] = x;
      let length: number | null = null;
      for (const f of LENGTH_FIELDS) if (typeof o[f] === 'number') {
        length = o[f] as number;
        delete figures[f];
        break;
      }
      const rest: string[] = [];
      for (const seg of path) {
        const l = lengthOfSegment(seg);
        if (length === null && l !== null) length = l;
        else if (!/^\d+$/.test(seg)) rest.push(seg);
      }
      const named = VARIANT_FIELDS.map((f) => o[f]).find((x) => typeof x === 'string') as string | undefined;
      out.push({ variant: named ?? (rest.join('/') || 'all'), length, figures });
      return;
    }
    for (const [k, x] of Object.entries(o)) if (k !== 'machine' && k !== 'args') walk(x, [...path, k]);
  };
  walk(data, []);
  return out;
}

/** Scalars of a benchmark JSON as key → value (nested keys dotted; numeric arrays listed). */
export function flattenFigures(data: Record<string, unknown>): [string, Cell][] {
  const out: [string, Cell][] = [];
  const walk = (v: unknown, key: string) => {
    if (typeof v === 'number') out.push([key, v]);
    else if (typeof v === 'string') out.push([key, v]);
    else if (typeof v === 'boolean') out.push([key, String(v)]);
    else if (v === null) out.push([key, null]);
    else if (Array.isArray(v)) {
      if (v.every((x) => typeof x === 'number')) out.push([key, v.map((x) => fmt(x as number)).join(', ')]);
      else v.forEach((x, i) => walk(x, `${key}[${i}]`));
    } else if (typeof v === 'object') for (const [k, x] of Object.entries(v)) walk(x, key ? `${key}.${k}` : k);
  };
  for (const [k, v] of Object.entries(data)) if (!['bench', 'machine', 'at', 'args'].includes(k)) walk(v, k);
  return out;
}

export async function generateReport(inputs: ReportInputs, opts: ReportOptions): Promise<ReportResult> {
  const out = opts.outDir;
  const chartDir = join(out, 'charts');
  mkdirSync(chartDir, { recursive: true });
  const md: string[] = [];
  const charts: ChartFiles[] = [];
  const missing: string[] = [];
  // Paths inside or next to the report folder are shown relative (they work as links); others absolute.
  const rel = (p: string) => {
    const r = relative(out, p);
    return r && !r.startsWith('../..') ? r : p;
  };
  const lifelongDir = inputs.dataDirs.find((d) => d.lifelong)?.dir;
  const looDir = inputs.dataDirs.find((d) => !d.lifelong)?.dir;
  /** The commands for a missing lifelong variant: evaluate an existing trained run with that config, else train one. */
  const lifelongCmds = (streams: StreamSet, fusion: string, run: string, trainExtra: string): string[] => {
    const trained = inputs.checkpoints.find((c) => c.kind === 'gems' && c.lifelong && c.fusion === fusion && sameStreams(c.streams, streams));
    if (trained) return [`npm run gems -- eval --data-dir ${trained.dataDir} --run ${trained.run} --protocol lifelong`];
    return [trainCmd(run, trainExtra, lifelongDir), evalCmd(run, 'lifelong', lifelongDir)];
  };
  const chart = async (name: string, title: string, spec: Record<string, unknown>, rows: Datum[]) => {
    const files = await writeChart(chartDir, name, { title, ...spec } as never, rows);
    charts.push(files);
    md.push(`![${title}](charts/${name}.png)\n\nChart: [SVG](charts/${name}.svg) · data [CSV](charts/${name}.csv) · [JSON](charts/${name}.json)\n`);
  };
  const sources = (es: { command: string; file: string }[]) => {
    const seen = new Set<string>();
    const lines: string[] = [];
    for (const e of es) {
      const k = `${e.command}|${e.file}`;
      if (seen.has(k)) continue;
      seen.add(k);
      lines.push(`- ${code(e.command)} → ${code(rel(e.file))}`);
    }
    if (lines.length) md.push(`Produced by:\n${lines.join('\n')}\n`);
  };

  const evals = latest(inputs.evals);
  const loo = evals.filter((e) => e.protocol === 'loo');
  const lifelong = evals.filter((e) => e.protocol === 'lifelong');
  const createdAt = opts.createdAt ?? new Date().toISOString();

  // ── header: machine, backend, seeds, inputs ──
  md.push(`# GEMs evaluation report\n\nGenerated ${createdAt} by ${code(opts.command)}. Every figure below is read from a result file written by the command named under its table; nothing is typed in except the published ML-1M rows, which are labelled as such.\n`);
  md.push('## Machine, backend, seeds\n');
  const m = machine();
  md.push(mdTable(['fact', 'value (report process)'], Object.entries(m).map(([k, v]) => [k, typeof v === 'number' ? v : v])));
  const backends: Cell[][] = [];
  for (const b of inputs.benches.values()) {
    const be = ['backend', 'tf_backend', 'path', 'engine'].map((k) => b.data[k]).find((x) => typeof x === 'string') as string | undefined;
    const mach = b.data['machine'] as Record<string, unknown> | undefined;
    backends.push([b.name, be ?? 'not recorded', mach ? `${String(mach['cpu_model'] ?? '')}, ${String(mach['cpus'] ?? '?')} cores, node ${String(mach['node'] ?? '?')}` : 'not recorded', String(b.data['at'] ?? '')]);
  }
  md.push(`Backend of the report process: ${opts.backend ? code(opts.backend) : 'not initialised'} (each evaluation's backend is listed below where its file records it). Config seed: ${code(String(opts.seed))}.\n`);
  if (backends.length) md.push('Benchmarks, as recorded in their result files:\n\n' + mdTable(['benchmark', 'backend', 'machine', 'measured at'], backends));
  const seeds: Cell[][] = [
    ...inputs.trainings.map((t): Cell[] => [`training ${t.run} (${t.kind})`, t.seed ?? 'not recorded', 'not recorded', rel(t.file)]),
    ...evals.map((e): Cell[] => [`evaluation of ${e.run} (${e.kind}, ${e.protocol})`, e.seed ?? 'not recorded', e.backend ?? 'not recorded', rel(e.file)]),
  ];
  if (seeds.length) md.push('Seeds and backends of the runs:\n\n' + mdTable(['what', 'seed', 'backend', 'file'], seeds));
  md.push(`Inputs searched: ${inputs.searched.map((s) => code(s)).join(', ')}.\n`);
  if (inputs.skipped.length) md.push('Skipped input files (not in the expected shape):\n\n' + mdTable(['file', 'reason'], inputs.skipped.map((s) => [s.file, s.reason])));

  // ── 1. overall quality ──
  md.push('## 1. Overall quality\n\n### 1a. ML-1M, leave-one-out (HSTU protocol)\n');
  md.push('Last item = test, second-to-last = validation; ranking over all items. "filtered" leaves the items of the input history out of the ranking (the protocol of the published rows); "unfiltered" keeps them. Compare the filtered rows with the published rows.\n');
  {
    const rows: Cell[][] = [];
    const data: Datum[] = [];
    for (const e of loo)
      for (const part of ['filtered', 'unfiltered']) {
        const r = e.rows[part]!;
        rows.push([`${e.run} (${e.kind === 'sasrec' ? 'SASRec-style ID model' : 'GEMs'}, ${part})`, 'measured here', ...LOO_COLS.map((c) => r[c])]);
        if (part === 'filtered') for (const c of LOO_COLS.slice(1)) if (r[c] !== undefined) data.push({ model: `${e.run} (${e.kind})`, source: 'measured here', metric: c, value: r[c]! });
      }
    for (const p of ML1M_REFERENCE) {
      rows.push([p.name, PUBLISHED_SOURCE, ...LOO_COLS.map((c) => p.metrics[c])]);
      for (const c of LOO_COLS.slice(1)) if (p.metrics[c] !== undefined) data.push({ model: p.name, source: 'published reference', metric: c, value: p.metrics[c]! });
    }
    md.push(mdTable(['model', 'source', ...LOO_COLS], rows));
    if (!loo.some((e) => e.kind === 'sasrec')) {
      missing.push('1a SASRec');
      md.push(`SASRec-style ID model: ${notMeasured([`npm run gems -- train ${dd(looDir)}--model sasrec --run sasrec`, evalCmd('sasrec', 'loo', looDir)], looDir ? undefined : 'in a data dir where ML-1M is ingested')}\n`);
    }
    if (!loo.some((e) => e.kind === 'gems')) {
      missing.push('1a GEMs');
      md.push(`GEMs on ML-1M: ${notMeasured([`npm run gems -- train ${dd(looDir)}--model gems --preset ml-1m --run gems-ml1m`, evalCmd('gems-ml1m', 'loo', looDir)], looDir ? undefined : 'in a data dir where ML-1M is ingested')}\n`);
    }
    await chart('ml1m-quality', 'ML-1M leave-one-out (filtered) vs published rows', {
      mark: 'bar',
      width: 110,
      encoding: {
        column: { field: 'metric', type: 'nominal', title: null, sort: LOO_COLS.slice(1) },
        x: { field: 'model', type: 'nominal', title: null, axis: { labelAngle: -40 } },
        y: { field: 'value', type: 'quantitative', title: 'value' },
        color: { field: 'source', type: 'nominal', scale: { domain: ['measured here', 'published reference'] } },
      },
    }, data);
    sources(loo);
  }

  md.push('### 1b. Generated lifelong set\n');
  md.push('Per held-out target, the input is the user\'s history before it; Recall@K and NDCG@K over the ranked list (one relevant item per target, so Recall@K = HR@K).\n');
  {
    const recentOnly = pick(lifelong, ABLATION[0]!.streams, 'sum');
    const gems = pick(lifelong, ALL, 'sum');
    const sasrec = lifelong.find((e) => e.kind === 'sasrec');
    const rows: Cell[][] = [];
    const data: Datum[] = [];
    const add = (label: string, e: EvaluatedModel | undefined) => {
      if (!e) return;
      const r = e.rows['overall']!;
      rows.push([label, e.run, ...LIFELONG_COLS.map((c) => r[c])]);
      for (const c of LIFELONG_COLS.slice(1)) if (r[c] !== undefined) data.push({ model: label, metric: c, value: r[c]! });
    };
    add('recent-only GR (TIGER-like)', recentOnly);
    add('SASRec-style ID model', sasrec);
    add('GEMs (all streams, sum)', gems);
    if (rows.length) md.push(mdTable(['model', 'run', ...LIFELONG_COLS], rows));
    if (!recentOnly) {
      missing.push('1b recent-only');
      md.push(`recent-only GR: ${notMeasured(lifelongCmds(ABLATION[0]!.streams, 'sum', 'ablation-recent', '--streams recent '))}\n`);
    }
    if (!sasrec) {
      missing.push('1b SASRec');
      md.push(`SASRec-style ID model on the generated set: **not measured yet** — no command produces it: ${code('gems eval')} evaluates the SASRec baseline with ${code('--protocol loo')} only.\n`);
    }
    if (!gems) {
      missing.push('1b GEMs');
      md.push(`GEMs: ${notMeasured(lifelongCmds(ALL, 'sum', 'gems', ''))}\n`);
    }
    if (data.length) {
      await chart('lifelong-quality', 'Generated lifelong set: overall quality', {
        mark: 'bar',
        width: 90,
        encoding: {
          column: { field: 'metric', type: 'nominal', title: null, sort: LIFELONG_COLS.slice(1) },
          x: { field: 'model', type: 'nominal', title: null, axis: { labelAngle: -40 } },
          y: { field: 'value', type: 'quantitative' },
          color: { field: 'model', type: 'nominal', legend: null },
        },
      }, data);
    }
    sources([recentOnly, sasrec, gems].filter((x): x is EvaluatedModel => !!x));
  }

  // ── 2 / 3. ablation and fusion tables ──
  const variantSection = async (title: string, intro: string, variants: { label: string; es: EvaluatedModel[]; cmds: string[] }[], chartName: string) => {
    md.push(`## ${title}\n\n${intro}\n`);
    // Every evaluated run of a variant is shown (newest first), each named by its run.
    const found = variants.flatMap((v) => v.es.map((e) => ({ label: v.es.length > 1 ? `${v.label} [${e.run}]` : v.label, e })));
    if (found.length) {
      md.push(mdTable(['variant', 'run', ...LIFELONG_COLS], found.map((v) => [v.label, v.e.run, ...LIFELONG_COLS.map((c) => v.e.rows['overall']![c])])));
      const hk = hrecallKeys(found.map((v) => v.e.rows['overall']!));
      if (hk.length) {
        md.push('Hierarchical recall (HRecall@Lℓ@K: share of targets whose first ℓ codes appear among the first ℓ codes of the K beams):\n');
        md.push(mdTable(['variant', ...hk], found.map((v) => [v.label, ...hk.map((k) => v.e.rows['overall']![k])])));
        const data: Datum[] = [];
        for (const v of found)
          for (const k of hk) {
            const [, l, K] = k.match(/^HRecall@L(\d+)@(\d+)$/)!;
            const val = v.e.rows['overall']![k];
            if (val !== undefined) data.push({ variant: v.label, level: Number(l), K: `K=${K}`, value: val });
          }
        await chart(chartName, `${title.replace(/^\d+\.\s*/, '')}: HRecall per code level`, {
          mark: { type: 'line', point: true },
          width: 160,
          height: 160,
          encoding: {
            column: { field: 'K', type: 'nominal', title: null },
            x: { field: 'level', type: 'ordinal', title: 'code level ℓ' },
            y: { field: 'value', type: 'quantitative', title: 'HRecall', scale: { domain: [0, 1] } },
            color: { field: 'variant', type: 'nominal', legend: { orient: 'bottom', columns: 2 } },
          },
        }, data);
      }
    }
    for (const v of variants)
      if (v.es.length === 0) {
        missing.push(`${title}: ${v.label}`);
        md.push(`- ${v.label}: ${notMeasured(v.cmds)}`);
      }
    if (variants.some((v) => v.es.length === 0)) md.push('');
    sources(found.map((v) => v.e));
  };

  await variantSection(
    '2. Stream ablation (paper Table 3)',
    'Same model and training, streams switched off one by one (parameter-free sum fusion).',
    ABLATION.map((a) => ({ label: a.label, es: matches(lifelong, a.streams, 'sum'), cmds: lifelongCmds(a.streams, 'sum', a.run, a.run === 'gems' ? '' : `--streams ${a.flag} `) })),
    'stream-ablation-hrecall',
  );
  await variantSection(
    '3. Fusion variants (paper Table 4)',
    'All three streams; only the way the per-stream cross-attention outputs are combined changes.',
    FUSIONS.map((f) => {
      const run = f.fusion === 'sum' ? 'gems' : `fusion-${f.flag}`;
      return { label: f.label, es: matches(lifelong, ALL, f.fusion), cmds: lifelongCmds(ALL, f.fusion, run, f.fusion === 'sum' ? '' : `--fusion ${f.flag} `) };
    }),
    'fusion-hrecall',
  );

  // ── 4 / 5. indexer efficiency and latency vs history length (serve-latency benchmark) ──
  const lat = inputs.benches.get('serve-latency');
  const latRows = lat ? latencyRows(lat.data) : [];
  md.push('## 4. Indexer efficiency (paper Table 5)\n\nGetRecommendations latency with the indexer\'s top-k mid-term attention vs brute-force mid-term attention, and recall where the benchmark records it.\n');
  if (!lat || latRows.length === 0) {
    missing.push('4 indexer efficiency');
    md.push(`${lat ? `${code(rel(lat.file))} holds no rows with ${code('p50_ms')}; ` : ''}${notMeasured(['npm run bench -- serve-latency'])}\n`);
  } else {
    const figCols = [...new Set(latRows.flatMap((r) => Object.keys(r.figures)))];
    const order = ['p50_ms', 'p99_ms'];
    figCols.sort((a, b) => (order.indexOf(a) + 1 || 99) - (order.indexOf(b) + 1 || 99) || a.localeCompare(b));
    md.push(mdTable(['variant', 'history length', ...figCols], latRows.map((r) => [r.variant, r.length, ...figCols.map((c) => r.figures[c])])));
    await chart('indexer-latency', 'GetRecommendations p50 latency per variant', {
      mark: 'bar',
      width: 120,
      encoding: {
        column: { field: 'history', type: 'nominal', title: 'history length' },
        x: { field: 'variant', type: 'nominal', title: null, axis: { labelAngle: -40 } },
        y: { field: 'p50_ms', type: 'quantitative', title: 'p50 ms' },
        color: { field: 'variant', type: 'nominal', legend: null },
      },
    }, latRows.map((r) => ({ variant: r.variant, history: r.length === null ? 'n/a' : String(r.length), p50_ms: r.figures['p50_ms'] ?? null, p99_ms: r.figures['p99_ms'] ?? null })));
    sources([lat]);
  }

  md.push('## 5. Latency vs history length (paper Figure 1 idea)\n');
  const withLen = latRows.filter((r) => r.length !== null);
  if (!lat || withLen.length === 0) {
    missing.push('5 latency vs history length');
    md.push(`${notMeasured(['npm run bench -- serve-latency'], 'GEMs with indexer, brute-force mid-term, single-stream model at several history lengths')}\n`);
  } else {
    const lengths = [...new Set(withLen.map((r) => r.length!))].sort((a, b) => a - b);
    const variants = [...new Set(withLen.map((r) => r.variant))];
    md.push('p50 ms per history length:\n');
    md.push(mdTable(['variant', ...lengths.map((l) => `${fmt(l)} events`)], variants.map((v) => [v, ...lengths.map((l) => withLen.find((r) => r.variant === v && r.length === l)?.figures['p50_ms'])])));
    await chart('latency-vs-history', 'p50 latency vs history length', {
      mark: { type: 'line', point: true },
      width: 420,
      height: 260,
      encoding: {
        x: { field: 'history_length', type: 'quantitative', scale: { type: 'log' }, title: 'history length (events, log scale)' },
        y: { field: 'p50_ms', type: 'quantitative', title: 'p50 ms' },
        color: { field: 'variant', type: 'nominal', legend: { orient: 'bottom' } },
      },
    }, withLen.map((r) => ({ variant: r.variant, history_length: r.length, p50_ms: r.figures['p50_ms'] ?? null })));
    sources([lat]);
  }

  // ── 6. attention share ──
  md.push('## 6. Share of attention per stream, per fusion variant (paper Figure 4 idea)\n\nShare of the decoder\'s cross-attention output norm each stream contributes at the first code level, averaged over users. Learned fusion tends to collapse onto the recent stream.\n');
  const att = inputs.attention;
  if (!att || att.variants.length === 0) {
    missing.push('6 attention share');
    md.push(`${notMeasured(['npm run report -- --rerun --only attention'], 'needs the lifelong checkpoints of section 3')}\n`);
  } else {
    const rows: Cell[][] = [];
    const data: Datum[] = [];
    for (const v of att.variants) {
      const f = FUSIONS.find((x) => x.fusion === v.fusion)?.label ?? v.fusion;
      rows.push([f, streamLabel(v.streams), v.run, v.users, v.share?.recent, v.share?.mid, v.share?.lifecycle, v.share ? '' : (v.reason ?? 'not measurable')]);
      if (v.share) for (const s of ['recent', 'mid', 'lifecycle'] as const) if (v.share[s] !== undefined) data.push({ variant: `${v.run} (${v.fusion})`, stream: s, share: v.share[s]! });
    }
    md.push(mdTable(['fusion', 'streams', 'run', 'users', 'recent', 'mid', 'lifecycle', 'note'], rows));
    if (data.length)
      await chart('attention-share', 'Attention share per stream', {
        mark: 'bar',
        width: 360,
        encoding: {
          y: { field: 'variant', type: 'nominal', title: null, axis: {} },
          x: { field: 'share', type: 'quantitative', stack: 'normalize', title: 'share of cross-attention output' },
          color: { field: 'stream', type: 'nominal', sort: ['recent', 'mid', 'lifecycle'] },
        },
      }, data);
    md.push(`Seed ${code(String(att.seed ?? 'not recorded'))}, backend ${code(att.backend ?? 'not recorded')}, measured ${att.createdAt}.\n`);
    sources([att]);
  }

  // ── 7. dormancy split ──
  md.push('## 7. Recall split by dormancy of the target\'s interest (generated set)\n\n"dormant": targets from an interest the user had not touched for a long time (generator ground truth); "current": the rest.\n');
  {
    const pairs = [
      { label: 'recent-only GR', streams: ABLATION[0]!.streams, e: pick(lifelong, ABLATION[0]!.streams, 'sum'), run: 'ablation-recent', extra: '--streams recent ' },
      { label: 'GEMs (all streams)', streams: ALL, e: pick(lifelong, ALL, 'sum'), run: 'gems', extra: '' },
    ];
    const rows: Cell[][] = [];
    const data: Datum[] = [];
    for (const p of pairs) {
      if (!p.e) continue;
      for (const part of ['dormant', 'current'] as const) {
        const r = p.e.rows[part]!;
        rows.push([p.label, part, ...LIFELONG_COLS.map((c) => r[c])]);
        for (const c of ['Recall@10', 'Recall@100', 'Recall@500']) if (r[c] !== undefined) data.push({ model: p.label, targets: part, metric: c, value: r[c]! });
      }
    }
    if (rows.length) {
      md.push(mdTable(['model', 'targets from', ...LIFELONG_COLS], rows));
      await chart('dormancy-recall', 'Recall by dormancy of the target interest', {
        mark: 'bar',
        width: 120,
        encoding: {
          column: { field: 'metric', type: 'nominal', title: null, sort: ['Recall@10', 'Recall@100', 'Recall@500'] },
          x: { field: 'targets', type: 'nominal', title: null, sort: ['dormant', 'current'] },
          xOffset: { field: 'model', type: 'nominal' },
          y: { field: 'value', type: 'quantitative', title: 'recall' },
          color: { field: 'model', type: 'nominal', legend: { orient: 'bottom' } },
        },
      }, data);
    }
    for (const p of pairs)
      if (!p.e) {
        missing.push(`7 ${p.label}`);
        md.push(`- ${p.label}: ${notMeasured(lifelongCmds(p.streams, 'sum', p.run, p.extra))}`);
      }
    if (pairs.some((p) => !p.e)) md.push('');
    sources(pairs.filter((p) => p.e).map((p) => p.e!));
  }

  // ── 8. training curves ──
  md.push('## 8. Training curves\n\nPer epoch: training loss and the validation metric each trainer records (GEMs: validation NLL / KL per stage; SASRec: validation HR@10 / NDCG@10).\n');
  if (inputs.trainings.length === 0) {
    missing.push('8 training curves');
    md.push(`${notMeasured([`npm run gems -- train ${dd(looDir)}--model sasrec --run sasrec`, trainCmd('gems', '', lifelongDir)])}\n`);
  } else {
    const data: Datum[] = [];
    const rows: Cell[][] = [];
    for (const t of inputs.trainings) {
      t.epochs.forEach((ep, i) => {
        for (const [k, v] of Object.entries(ep.values)) if (!['seconds', 'samplesPerS'].includes(k)) data.push({ run: `${t.run} (${t.kind})`, step: i + 1, stage: `stage ${ep.stage}`, metric: k, value: v });
      });
      const last = t.epochs[t.epochs.length - 1];
      if (last) rows.push([t.run, t.kind, t.kind === 'gems' ? `${t.fusion ?? '?'} / ${streamLabel(t.streams)}` : '', last.stage, last.epoch, last.values['loss'], last.values['validNll'] ?? last.values['validHr10'], last.values['validKl'] ?? last.values['validNdcg10']]);
    }
    md.push('Last recorded epoch per run (GEMs: valid NLL, valid KL; SASRec: valid HR@10, valid NDCG@10):\n');
    md.push(mdTable(['run', 'model', 'fusion / streams', 'stage', 'epoch in stage', 'train loss', 'valid NLL | HR@10', 'valid KL | NDCG@10'], rows));
    await chart('training-curves', 'Training curves (x = epoch, across stages)', {
      mark: { type: 'line', point: true },
      width: 220,
      height: 150,
      encoding: {
        facet: { field: 'metric', type: 'nominal', columns: 3, title: null },
        x: { field: 'step', type: 'quantitative', title: 'epoch (all stages)', axis: { format: 'd', tickMinStep: 1 } },
        y: { field: 'value', type: 'quantitative', title: null, scale: { zero: false } },
        color: { field: 'run', type: 'nominal', legend: { orient: 'bottom', columns: 3 } },
        shape: { field: 'stage', type: 'nominal' },
      },
      resolve: { scale: { y: 'independent' } },
    }, data);
    md.push(`Produced by:\n${inputs.trainings.map((t) => `- ${t.command ? code(t.command) : 'a `gems train` run (its train-summary.json does not record the command line)'} → ${code(rel(t.file))}`).join('\n')}\n`);
  }

  // ── benchmarks ──
  md.push('## 9. Benchmarks (every figure of each result file)\n');
  const expected = ['kernels', 'tokenize', 'history-scan', 'compress', 'memory-rpc', 'serve-latency', 'serve-load', 'train-throughput'];
  for (const name of [...new Set([...expected, ...inputs.benches.keys()])]) {
    const b: BenchResult | undefined = inputs.benches.get(name);
    md.push(`### ${name}\n`);
    if (!b) {
      missing.push(`bench ${name}`);
      md.push(`${notMeasured([`npm run bench -- ${name}`])}\n`);
      continue;
    }
    md.push(`Command: ${code(b.command)} · file ${code(rel(b.file))} · measured ${String(b.data['at'] ?? 'at an unrecorded time')}\n`);
    md.push(mdTable(['figure', 'value'], flattenFigures(b.data)));
  }

  md.push(`---\nNot measured yet: ${missing.length ? missing.join('; ') : 'nothing'}.\n`);
  const index = join(out, 'index.md');
  writeFileSync(index, md.join('\n'));
  return { index, charts, missing };
}
