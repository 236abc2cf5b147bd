// The inputs of the report, read from what the other commands already wrote (never typed in):
//   <dataDir>/runs/**/<name>.json           `gems eval` results (EvalReport of src/eval/report.ts)
//   <dataDir>/checkpoints/<run>/train-summary.json   `gems train` histories (training curves, seeds)
//   <dataDir>/runs/report/attention-share.json      `gems report --rerun` attention-share measurement
//   bench/results/<name>.json               `npm run bench -- <name>` figures
// Files that do not have the expected shape are listed as skipped (with the reason), not guessed at.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { EvalReport, ResultRow } from '../eval/report.js';

export type StreamSet = { recent: boolean; mid: boolean; lifecycle: boolean };

/** One evaluated model inside an eval report, with the rows that belong to it. */
export interface EvaluatedModel {
  file: string;
  /** Data dir whose runs/ folder holds the file ('' when read outside collectInputs). */
  dataDir: string;
  command: string;
  createdAt: string;
  protocol: 'loo' | 'lifelong';
  split: string;
  checkpoint: string;
  /** Run name = the checkpoint's parent folder (checkpoints/<run>/best). */
  run: string;
  kind: 'gems' | 'sasrec';
  /** Backend the evaluation ran on, when the eval JSON records it (details.backend). */
  backend?: string;
  fusion?: string;
  streams?: StreamSet;
  tRecent?: number;
  tMid?: number;
  topK?: number;
  seed?: number;
  /** loo: filtered, unfiltered. lifelong: overall, dormant, current. */
  rows: Record<string, Record<string, number>>;
}

export interface TrainingRun {
  file: string;
  /** The data dir the run belongs to (<dataDir>/checkpoints/<run>/train-summary.json). */
  dataDir: string;
  run: string;
  /** Evaluation protocol the run was trained for (gems: loo or lifelong), when recorded. */
  protocol?: string;
  kind: 'gems' | 'sasrec';
  seed?: number;
  /** The command line that trained the run, when train-summary.json records it (`command`). */
  command?: string;
  /** One row per epoch: stage (gems), epoch, and the numeric fields recorded. */
  epochs: { stage: number; epoch: number; values: Record<string, number> }[];
  fusion?: string;
  streams?: StreamSet;
}

export interface BenchResult {
  name: string;
  file: string;
  data: Record<string, unknown>;
  command: string;
}

export interface AttentionShare {
  file: string;
  command: string;
  createdAt: string;
  backend?: string;
  seed?: number;
  variants: { checkpoint: string; run: string; fusion: string; streams: StreamSet; users: number; share: Partial<Record<'recent' | 'mid' | 'lifecycle', number>> | null; reason?: string }[];
}

/** A trained checkpoint (<dataDir>/checkpoints/<run>/best/meta.json), evaluated or not. */
export interface CheckpointInfo {
  dataDir: string;
  run: string;
  dir: string;
  kind: string;
  fusion?: string;
  streams?: StreamSet;
  /** The data dir holds the generated set's ground truth (so `gems eval` defaults to the lifelong protocol). */
  lifelong: boolean;
}

export interface ReportInputs {
  evals: EvaluatedModel[];
  checkpoints: CheckpointInfo[];
  trainings: TrainingRun[];
  benches: Map<string, BenchResult>;
  attention: AttentionShare | null;
  skipped: { file: string; reason: string }[];
  /** Where the inputs were looked for (stated in the report). */
  searched: string[];
  /** The data dirs read, and whether each holds the generated lifelong set (else: a leave-one-out data set). */
  dataDirs: { dir: string; lifelong: boolean }[];
}

function readJson(file: string): unknown {
  return JSON.parse(readFileSync(file, 'utf8'));
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function numbers(o: unknown): Record<string, number> {
  const out: Record<string, number> = {};
  if (isRecord(o)) for (const [k, v] of Object.entries(o)) if (typeof v === 'number' && Number.isFinite(v)) out[k] = v;
  return out;
}

function walkJson(dir: string, depth: number, out: string[]): void {
  if (depth < 0 || !existsSync(dir)) return;
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    const st = statSync(p);
    if (st.isDirectory()) walkJson(p, depth - 1, out);
    else if (name.endsWith('.json')) out.push(p);
  }
}

function streamsOf(mc: Record<string, unknown>): StreamSet | undefined {
  const s = mc['streams'];
  if (!isRecord(s)) return undefined;
  return { recent: s['recent'] === true, mid: s['mid'] === true, lifecycle: s['lifecycle'] === true };
}

/** Splits an eval report into its models: rows are written per checkpoint in order (2 for loo, 3 for lifelong). */
export function modelsOfEvalReport(file: string, rep: EvalReport): EvaluatedModel[] {
  const d = rep.details;
  const protocol = d['protocol'];
  if (protocol !== 'loo' && protocol !== 'lifelong') throw new Error(`details.protocol is ${JSON.stringify(protocol)}, expected loo or lifelong`);
  const dirs = d['checkpoints'];
  if (!Array.isArray(dirs) || !dirs.every((x) => typeof x === 'string')) throw new Error('details.checkpoints is not a list of paths');
  const own = rep.rows.filter((r: ResultRow) => !/\(published\)$/.test(r.name));
  const per = protocol === 'loo' ? 2 : 3;
  if (own.length !== dirs.length * per) throw new Error(`${own.length} result rows for ${dirs.length} checkpoints (expected ${per} each)`);
  const parts = protocol === 'loo' ? ['filtered', 'unfiltered'] : ['overall', 'dormant', 'current'];
  return (dirs as string[]).map((dir, i) => {
    const det = isRecord(d[dir]) ? d[dir] : {};
    const mc = isRecord(det['modelConfig']) ? det['modelConfig'] : null;
    const rows: Record<string, Record<string, number>> = {};
    parts.forEach((p, j) => (rows[p] = own[i * per + j]!.metrics));
    const run = basename(dirname(dir));
    const m: EvaluatedModel = { file, dataDir: '', command: rep.command, createdAt: rep.createdAt, protocol, split: String(d['split'] ?? 'test'), checkpoint: dir, run, kind: mc ? 'gems' : 'sasrec', rows };
    if (typeof d['backend'] === 'string') m.backend = d['backend'];
    if (mc) {
      m.fusion = String(mc['fusion'] ?? 'sum');
      m.streams = streamsOf(mc);
      if (typeof mc['tRecent'] === 'number') m.tRecent = mc['tRecent'];
      if (typeof mc['tMid'] === 'number') m.tMid = mc['tMid'];
      if (isRecord(mc['indexer']) && typeof mc['indexer']['topK'] === 'number') m.topK = mc['indexer']['topK'];
      if (typeof mc['seed'] === 'number') m.seed = mc['seed'];
    } else if (isRecord(det['train']) && typeof det['train']['seed'] === 'number') m.seed = det['train']['seed'];
    return m;
  });
}

function isEvalReport(v: unknown): v is EvalReport {
  return isRecord(v) && typeof v['title'] === 'string' && Array.isArray(v['rows']) && isRecord(v['details']) && typeof v['command'] === 'string';
}

/** Training history of `checkpoints/<run>/train-summary.json` (gems: state.history; sasrec: history). */
export function trainingOf(file: string, v: unknown): TrainingRun {
  if (!isRecord(v)) throw new Error('not an object');
  const run = basename(dirname(file));
  const dataDir = dirname(dirname(dirname(file)));
  const command = typeof v['command'] === 'string' ? v['command'] : undefined;
  if (isRecord(v['state']) && Array.isArray(v['state']['history'])) {
    const mc = isRecord(v['modelConfig']) ? v['modelConfig'] : {};
    const tr = isRecord(v['train']) ? v['train'] : {};
    const epochs = (v['state']['history'] as unknown[]).map((h) => {
      const vals = numbers(h);
      const { stage = 1, epoch = 0, ...rest } = vals;
      return { stage, epoch, values: rest };
    });
    return { file, dataDir, run, command, protocol: typeof v['protocol'] === 'string' ? v['protocol'] : undefined, kind: 'gems', seed: typeof tr['seed'] === 'number' ? tr['seed'] : undefined, epochs, fusion: typeof mc['fusion'] === 'string' ? mc['fusion'] : undefined, streams: streamsOf(mc) };
  }
  if (Array.isArray(v['history'])) {
    const epochs = (v['history'] as unknown[]).map((h) => {
      const { epoch = 0, ...rest } = numbers(h);
      return { stage: 1, epoch, values: rest };
    });
    return { file, dataDir, run, command, protocol: 'loo', kind: 'sasrec', epochs, seed: isRecord(v['train']) && typeof v['train']['seed'] === 'number' ? v['train']['seed'] : undefined };
  }
  throw new Error('neither state.history (gems) nor history (sasrec)');
}

function benchCommand(name: string, data: Record<string, unknown>): string {
  const args = Array.isArray(data['args']) ? (data['args'] as unknown[]).map(String) : [];
  return ['npm run bench --', name, ...args].join(' ');
}

export interface SourceDirs {
  /** Data directories (each has runs/ and checkpoints/). */
  dataDirs: string[];
  /** bench/results. */
  benchDir: string;
}

export function attentionSharePath(dataDir: string): string {
  return join(dataDir, 'runs', 'report', 'attention-share.json');
}

/** Checkpoints of a data dir with their kind, fusion and streams (from meta.json). */
export function checkpointsOf(dataDir: string, skip: (file: string, e: unknown) => void = () => {}): CheckpointInfo[] {
  const root = join(dataDir, 'checkpoints');
  if (!existsSync(root)) return [];
  const lifelong = existsSync(join(dataDir, 'generated', 'truth.jsonl'));
  const out: CheckpointInfo[] = [];
  for (const run of readdirSync(root).sort()) {
    const dir = join(root, run, 'best');
    const metaFile = join(dir, 'meta.json');
    if (!existsSync(metaFile)) continue;
    try {
      const meta = readJson(metaFile);
      if (!isRecord(meta)) throw new Error('meta.json is not an object');
      const mc = isRecord(meta['modelConfig']) ? meta['modelConfig'] : {};
      out.push({ dataDir, run, dir, kind: String(meta['kind'] ?? ''), fusion: typeof mc['fusion'] === 'string' ? mc['fusion'] : undefined, streams: streamsOf(mc), lifelong });
    } catch (e) {
      skip(metaFile, e);
    }
  }
  return out;
}

export function collectInputs(dirs: SourceDirs): ReportInputs {
  const inputs: ReportInputs = { evals: [], checkpoints: [], trainings: [], benches: new Map(), attention: null, skipped: [], searched: [], dataDirs: [] };
  const skip = (file: string, e: unknown) => inputs.skipped.push({ file, reason: e instanceof Error ? e.message : String(e) });
  for (const dataDir of dirs.dataDirs) {
    const runs = join(dataDir, 'runs');
    const cks = join(dataDir, 'checkpoints');
    inputs.dataDirs.push({ dir: dataDir, lifelong: existsSync(join(dataDir, 'generated', 'truth.jsonl')) });
    inputs.searched.push(runs, cks);
    const files: string[] = [];
    walkJson(runs, 3, files);
    for (const f of files) {
      let v: unknown;
      try {
        v = readJson(f);
      } catch (e) {
        skip(f, e);
        continue;
      }
      if (f === attentionSharePath(dataDir)) {
        if (isRecord(v) && Array.isArray(v['variants'])) inputs.attention = { ...(v as unknown as AttentionShare), file: f };
        else skip(f, 'attention-share.json without variants');
        continue;
      }
      if (!isEvalReport(v)) continue; // other JSON under runs/ (not ours to read)
      try {
        inputs.evals.push(...modelsOfEvalReport(f, v).map((m) => ({ ...m, dataDir })));
      } catch (e) {
        skip(f, e);
      }
    }
    inputs.checkpoints.push(...checkpointsOf(dataDir, skip));
    if (existsSync(cks)) {
      for (const run of readdirSync(cks).sort()) {
        const f = join(cks, run, 'train-summary.json');
        if (!existsSync(f)) continue;
        try {
          inputs.trainings.push(trainingOf(f, readJson(f)));
        } catch (e) {
          skip(f, e);
        }
      }
    }
  }
  inputs.searched.push(dirs.benchDir);
  if (existsSync(dirs.benchDir)) {
    for (const name of readdirSync(dirs.benchDir).sort()) {
      if (!name.endsWith('.json')) continue;
      const f = join(dirs.benchDir, name);
      try {
        const v = readJson(f);
        if (!isRecord(v)) throw new Error('not an object');
        const bench = typeof v['bench'] === 'string' ? v['bench'] : name.slice(0, -5);
        inputs.benches.set(bench, { name: bench, file: f, data: v, command: benchCommand(bench, v) });
      } catch (e) {
        skip(f, e);
      }
    }
  }
  return inputs;
}

