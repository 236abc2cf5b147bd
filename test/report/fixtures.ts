// Small result files in the shapes the real commands write (gems eval via the real writeReport, train summaries,
// bench results, the attention-share file), with seeded odd-looking values so a number the report invents stands out.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ML1M_REFERENCE, writeReport, type ResultRow } from '../../src/eval/report.js';
import { attentionSharePath } from '../../src/report/sources.js';
import { Rng } from '../../src/util/random.js';

export interface Fixture {
  dataDir: string;
  benchDir: string;
  /** Every number written into the fixture files. */
  numbers: number[];
}

const streams = (recent: boolean, mid: boolean, lifecycle: boolean) => ({ recent, mid, lifecycle });

export function writeFixture(root: string, opts: { withLatency?: boolean; withAttention?: boolean; withLifelong?: boolean } = {}): Fixture {
  const rng = new Rng(7);
  const numbers: number[] = [];
  const val = () => {
    const v = Number((0.05 + 0.9 * rng.next()).toFixed(6));
    numbers.push(v);
    return v;
  };
  const dataDir = join(root, 'data');
  const benchDir = join(root, 'bench-results');
  const ck = (run: string) => join(dataDir, 'checkpoints', run, 'best');
  mkdirSync(benchDir, { recursive: true });
  for (const r of ML1M_REFERENCE) numbers.push(...Object.values(r.metrics));

  // leave-one-out: a SASRec and a GEMs checkpoint in one report, plus the published rows as `gems eval` appends them
  const looRows: ResultRow[] = [];
  for (const label of ['sasrec sasrec', 'gems gems-ml1m'])
    for (const part of ['filtered', 'unfiltered']) {
      const metrics: Record<string, number> = { users: 6040 };
      for (const k of ['HR@10', 'NDCG@10', 'HR@50', 'NDCG@50', 'HR@200', 'NDCG@200']) metrics[k] = val();
      looRows.push({ name: `${label} (${part})`, metrics });
    }
  numbers.push(6040);
  writeReport(join(dataDir, 'runs', 'sasrec'), 'eval-loo-test', {
    title: 'gems eval (loo, test)',
    command: 'gems eval --run sasrec --run gems-ml1m --protocol loo',
    protocol: 'leave-one-out',
    rows: [...looRows, ...ML1M_REFERENCE],
    details: {
      checkpoints: [ck('sasrec'), ck('gems-ml1m')],
      split: 'test',
      protocol: 'loo',
      [ck('sasrec')]: { seconds: 3.5, train: { seed: 42 } },
      [ck('gems-ml1m')]: { seconds: 9.25, modelConfig: { fusion: 'sum', streams: streams(true, true, true), seed: 42, tRecent: 64, tMid: 256, indexer: { topK: 32 } } },
    },
    createdAt: '2026-11-23T12:00:00.000Z',
  });

  if (opts.withLifelong !== false) {
    const variants = [
      { run: 'ablation-recent', fusion: 'sum', s: streams(true, false, false) },
      { run: 'gems', fusion: 'sum', s: streams(true, true, true) },
      { run: 'fusion-gated', fusion: 'gated', s: streams(true, true, true) },
    ];
    const rows: ResultRow[] = [];
    for (const v of variants)
      for (const part of ['all targets', 'dormant', 'current']) {
        const metrics: Record<string, number> = { targets: 100 + rng.int(900) };
        numbers.push(metrics['targets']!);
        for (const K of [10, 100, 500]) {
          metrics[`Recall@${K}`] = val();
          metrics[`NDCG@${K}`] = val();
          for (const l of [1, 2, 3]) metrics[`HRecall@L${l}@${K}`] = val();
        }
        rows.push({ name: `gems ${v.run} ${part}`, metrics });
      }
    const details: Record<string, unknown> = { checkpoints: variants.map((v) => ck(v.run)), split: 'test', protocol: 'lifelong' };
    for (const v of variants) details[ck(v.run)] = { seconds: 1.5, modelConfig: { fusion: v.fusion, streams: v.s, seed: 42, tRecent: 16, tMid: 64, indexer: { topK: 8 } } };
    writeReport(join(dataDir, 'runs', 'gems'), 'eval-lifelong-test', { title: 'gems eval (lifelong, test)', command: 'gems eval --run ablation-recent --run gems --run fusion-gated --protocol lifelong', protocol: 'lifelong', rows, details, createdAt: '2026-11-23T12:01:00.000Z' });
  }

  // training summaries
  const gemsTrain = join(dataDir, 'checkpoints', 'gems');
  mkdirSync(gemsTrain, { recursive: true });
  const history = [1, 1, 2, 3].map((stage, i) => ({ stage, epoch: i + 1, loss: val(), nll: val(), kl: val(), validNll: val(), validKl: val(), seconds: 10, samplesPerS: 50 }));
  numbers.push(1, 2, 3, 4, 10, 50);
  writeFileSync(join(gemsTrain, 'train-summary.json'), JSON.stringify({ protocol: 'lifelong', modelConfig: { fusion: 'sum', streams: streams(true, true, true) }, train: { seed: 42 }, state: { stage: 3, history } }));
  const sasTrain = join(dataDir, 'checkpoints', 'sasrec');
  mkdirSync(sasTrain, { recursive: true });
  writeFileSync(join(sasTrain, 'train-summary.json'), JSON.stringify({ bestEpoch: 2, epochsRun: 2, history: [1, 2].map((epoch) => ({ epoch, loss: val(), seconds: 20, validHr10: val(), validNdcg10: val() })) }));
  numbers.push(20, 42);

  // benchmarks
  const machine = { node: 'v20.0.0', cpus: 2, cpu_model: 'Fixture CPU', mem_gb: 8 };
  const kernels = { bench: 'kernels', path: 'wasm+native', matmul_gflops_native: val(), matmul: { '256': { plain: val(), native: val() } }, steps: { plain: 2, native: 4 }, wall_s: val(), machine, at: '2026-11-23T11:00:00.000Z', args: ['--steps-plain', '2'] };
  writeFileSync(join(benchDir, 'kernels.json'), JSON.stringify(kernels));
  if (opts.withLatency !== false) {
    const lat: Record<string, unknown> = { bench: 'serve-latency', k: 100, t_mid: 5000, machine, at: '2026-11-23T11:10:00.000Z', args: [] };
    numbers.push(100, 5000);
    for (const variant of ['gems_indexer', 'gems_brute_force', 'single_stream']) {
      const per: Record<string, unknown> = {};
      for (const len of ['1000', '10000', '100000']) per[len] = { p50_ms: val(), p99_ms: val(), recall_at_100: val() };
      lat[variant] = per;
    }
    numbers.push(1000, 10000, 100000);
    writeFileSync(join(benchDir, 'serve-latency.json'), JSON.stringify(lat));
  }
  if (opts.withAttention !== false) {
    mkdirSync(join(dataDir, 'runs', 'report'), { recursive: true });
    const users = 64;
    numbers.push(users);
    writeFileSync(
      attentionSharePath(dataDir),
      JSON.stringify({
        command: 'gems report --rerun --only attention',
        createdAt: '2026-11-23T12:02:00.000Z',
        backend: 'wasm',
        seed: 42,
        variants: [
          { checkpoint: ck('gems'), run: 'gems', fusion: 'sum', streams: streams(true, true, true), users, share: { recent: val(), mid: val(), lifecycle: val() } },
          { checkpoint: ck('fusion-concat'), run: 'fusion-concat', fusion: 'concat', streams: streams(true, true, true), users, share: null, reason: 'one cross-attention over the concatenated memory' },
        ],
      }),
    );
  }
  return { dataDir, benchDir, numbers };
}
