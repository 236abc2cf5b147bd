// `gems main` (= `npm start`): the whole product end to end on the embedded default, in stages:
//   data → ingest → Semantic IDs → train GEMs → train compressor → compress memories → eval → serve + ask → stop.
// Each stage runs through its own Command (the same code as `gems <stage>`), so this job proves the commands a user
// would type work together. Stages are resumable: <dataDir>/main/state.json records each finished stage with a key
// of its inputs; a rerun reuses a stage whose key is unchanged and whose output is still on disk (ingest and
// compress are themselves incremental and always run: they skip what is already done). `--fresh` starts over.
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, copyFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { resolvedPaths, type GemsConfig } from '../../config/config.js';
import { logger, type Logger } from '../../util/log.js';
import { flagBool, flagList, flagNumber, flagString, parseArgs, UsageError, type ParsedArgs } from '../args.js';
import type { Command } from '../command.js';

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
/** The copy of MovieLens latest-small shipped in the repository (see its NOTICE.md for the licence). */
export const SHIPPED_ML = join(REPO_ROOT, 'data', 'ml-latest-small');

export interface MainOptions {
  dataset: 'ml-latest-small' | 'generated';
  /** MovieLens folder (default: the shipped copy). */
  mlPath: string;
  /** Only the first N users (by id) of the MovieLens folder; 0 = all. */
  maxUsers: number;
  /** Generator flags for --dataset generated (users, scale, …), passed to `gems generate lifelong`. */
  generateArgs: string[];
  tRecent: number;
  tMid: number;
  /** GEMs training budget. */
  trainMinutes: number;
  preset: string;
  epochs: [number, number, number];
  batch: number;
  targetsPerUser: number;
  validUsers: number;
  compressorSteps: number;
  evalUsers: number;
  k: number;
  /** Beam width asked of the recommender (0 = max(100, 10·k)); widened when an answer comes back short. */
  beam: number;
  /** Users to ask for recommendations (empty: chosen from the data, long / median / short history). */
  ask: number[];
  askCount: number;
  fresh: boolean;
}

/** Defaults for the shipped ml-latest-small (610 users; history mean ~165, max 2,698 events). */
export const MAIN_DEFAULTS: MainOptions = {
  dataset: 'ml-latest-small',
  mlPath: SHIPPED_ML,
  maxUsers: 0,
  generateArgs: [],
  // 199 of the 610 users have more than 128 events (all three streams); 321 more than 32 (recent + mid).
  tRecent: 32,
  tMid: 128,
  // Budgets measured on the 2-core machine: an epoch of 610 users × 4 targets is ~45 s, so the three training
  // stages (2 + 1 + 1 epochs) fit ~3 minutes; beam-search evaluation costs ~1.5 s per user (filtered + unfiltered).
  trainMinutes: 2.5,
  preset: 'default',
  epochs: [2, 1, 1],
  batch: 32,
  targetsPerUser: 4,
  validUsers: 100,
  compressorSteps: 60,
  evalUsers: 50,
  k: 10,
  beam: 0,
  ask: [],
  askCount: 3,
  fresh: false,
};

const USAGE = `gems main [--fresh] [--dataset ml-latest-small|generated] [--ml-path DIR] [--max-users N]
          [--users N --scale F …generator flags] [--t-recent N] [--t-mid N] [--train-minutes M] [--preset P]
          [--epochs N] [--epochs2 N] [--epochs3 N] [--batch N] [--compressor-steps N] [--eval-users N]
          [-k K | --k K] [--beam N] [--ask U,U,…] [--ask-count N]
Runs the whole product on one data dir (default .data/): data → ingest → Semantic IDs (tokenize) → train the
lifecycle compressor → compress lifecycle memories → train a small GEMs model on them → evaluate → start the lifecycle memory
service and the recommender on free loopback ports → GetRecommendations over gRPC for a few users → print them with
titles and the evaluation figures → graceful shutdown. \`npm start\` runs it.
A second run reuses finished stages whose inputs are unchanged (state in <dataDir>/main/state.json); --fresh
deletes the data dir's products first.
  --dataset           ml-latest-small (default: the shipped copy, data/ml-latest-small) or generated (synthetic
                      lifelong histories; generator flags --users, --scale, --mean-length, … as in gems generate)
  --max-users N       only the first N MovieLens users (a small slice, for a quick run)
  --preset P          model preset of gems train (default, tiny, ml-1m, lifelong); with --dataset generated,
                      --preset is the generator's and --model-preset names the model's
  --t-recent/--t-mid  stream budgets (default ${MAIN_DEFAULTS.tRecent}/${MAIN_DEFAULTS.tMid}: ml-latest-small users above ${MAIN_DEFAULTS.tMid} events have all three streams)
  --train-minutes M   GEMs training time budget (default ${MAIN_DEFAULTS.trainMinutes}); --epochs/--epochs2/--epochs3 cap each stage (default ${MAIN_DEFAULTS.epochs.join('/')})
  --eval-users N      users in the evaluation (default ${MAIN_DEFAULTS.evalUsers}; 0 = all)
  -k K                recommendations per user (default ${MAIN_DEFAULTS.k}); --ask U,… picks the users`;

/** Generator flags `gems main` forwards to `gems generate lifelong`. */
const GENERATOR_FLAGS = ['users', 'scale', 'mean-length', 'length-sigma', 'max-length', 'min-length', 'fixed-length', 'items', 'clusters', 'targets', 'dormant-share', 'explore-rate', 'recall-rate', 'preset'];

export function mainOptionsFromArgs(args: ParsedArgs): MainOptions {
  const o = structuredClone(MAIN_DEFAULTS);
  const dataset = flagString(args, 'dataset', o.dataset);
  if (dataset !== 'ml-latest-small' && dataset !== 'generated') throw new UsageError(`--dataset must be ml-latest-small or generated, got '${dataset}'`);
  o.dataset = dataset;
  if (args.flags['ml-path'] !== undefined) o.mlPath = resolve(flagString(args, 'ml-path'));
  const int = (name: string, fallback: number, min: number): number => {
    const v = flagNumber(args, name, fallback);
    if (!Number.isInteger(v) || v < min) throw new UsageError(`--${name} must be an integer ≥ ${min}, got ${v}`);
    return v;
  };
  o.maxUsers = int('max-users', o.maxUsers, 0);
  for (const f of GENERATOR_FLAGS) {
    if (args.flags[f] === undefined) continue;
    if (dataset !== 'generated' && f !== 'preset') throw new UsageError(`--${f} is a generator flag: use it with --dataset generated`);
    if (f === 'preset' && dataset !== 'generated') continue; // --preset is the model preset for MovieLens
    o.generateArgs.push(`--${f}`, flagString(args, f));
  }
  o.tRecent = int('t-recent', o.tRecent, 1);
  o.tMid = int('t-mid', o.tMid, o.tRecent + 1);
  o.trainMinutes = flagNumber(args, 'train-minutes', o.trainMinutes);
  if (!(o.trainMinutes > 0)) throw new UsageError('--train-minutes must be > 0');
  o.preset = dataset === 'generated' ? flagString(args, 'model-preset', o.preset) : flagString(args, 'preset', flagString(args, 'model-preset', o.preset));
  o.epochs = [int('epochs', o.epochs[0], 1), int('epochs2', o.epochs[1], 0), int('epochs3', o.epochs[2], 0)];
  o.batch = int('batch', o.batch, 1);
  o.targetsPerUser = int('targets-per-user', o.targetsPerUser, 1);
  o.validUsers = int('valid-users', o.validUsers, 0);
  o.compressorSteps = int('compressor-steps', o.compressorSteps, 1);
  o.evalUsers = int('eval-users', o.evalUsers, 0);
  // `-k 5` (single dash) reaches us as two positionals; `--k 5` as a flag.
  const dashK = args.positional.indexOf('-k');
  if (dashK >= 0) {
    if (args.positional[dashK + 1] === undefined) throw new UsageError('-k needs a value');
    args.flags['k'] = args.positional[dashK + 1]!;
    args.positional.splice(dashK, 2);
  }
  if (args.positional.length > 0) throw new UsageError(`gems main: unexpected argument '${args.positional[0]}'`);
  o.k = int('k', o.k, 1);
  o.beam = int('beam', o.beam, 0);
  if (o.beam > 0 && o.beam < o.k) throw new UsageError(`--beam must be ≥ k (${o.k})`);
  o.ask = flagList(args, 'ask')
    .flatMap((s) => s.split(','))
    .filter((s) => s.trim() !== '')
    .map((s) => {
      const u = Number(s.trim());
      if (!Number.isInteger(u) || u <= 0) throw new UsageError(`--ask: '${s}' is not a user id`);
      return u;
    });
  o.askCount = int('ask-count', o.askCount, 1);
  o.fresh = flagBool(args, 'fresh');
  return o;
}

// --- stage bookkeeping -------------------------------------------------------------------------------------------

interface StageRecord {
  key: string;
  at: string;
  seconds: number;
  result: Record<string, unknown>;
}
interface MainState {
  version: 1;
  stages: Record<string, StageRecord>;
}

export interface StageRow {
  stage: string;
  status: 'ran' | 'reused' | 'skipped';
  seconds: number;
  detail: string;
}

const keyOf = (...parts: unknown[]): string => createHash('sha256').update(JSON.stringify(parts)).digest('hex').slice(0, 16);

class StateFile {
  private state: MainState;
  constructor(private readonly path: string) {
    this.state = { version: 1, stages: {} };
    if (existsSync(path)) {
      try {
        const s = JSON.parse(readFileSync(path, 'utf8')) as MainState;
        if (s.version === 1 && s.stages && typeof s.stages === 'object') this.state = s;
      } catch {
        // A torn or foreign file only costs a rerun of the stages.
      }
    }
  }
  get(stage: string, key: string): StageRecord | null {
    const r = this.state.stages[stage];
    return r && r.key === key ? r : null;
  }
  set(stage: string, rec: StageRecord): void {
    this.state.stages[stage] = rec;
    mkdirSync(dirname(this.path), { recursive: true });
    const tmp = `${this.path}.tmp-${process.pid}`;
    writeFileSync(tmp, JSON.stringify(this.state, null, 2) + '\n');
    renameSync(tmp, this.path); // atomic: a kill mid-write leaves the previous state
  }
  forget(stage: string): void {
    delete this.state.stages[stage];
  }
}

/** Runs `gems <name> argv…` in process with this job's config; returns what it printed. */
async function runStageCommand(name: string, argv: string[], config: GemsConfig, log: Logger): Promise<string[]> {
  const { loadCommand } = await import('../main.js');
  const cmd = await loadCommand(name);
  if (!cmd) throw new Error(`stage '${name}' is not available: src/cli/commands/${name}.ts is missing`);
  const lines: string[] = [];
  log.debug('running command', { command: `gems ${name} ${argv.join(' ')}` });
  const code = (await cmd.run({ config, args: parseArgs([name, ...argv]), log: logger(name), out: (l) => lines.push(l) })) ?? 0;
  if (code !== 0) throw new Error(`gems ${name} ${argv.join(' ')} exited with code ${code}: ${lines.slice(-3).join(' | ')}`);
  return lines;
}

/** The last line of a command's output that parses as a JSON object. */
function lastJson(lines: string[]): Record<string, any> {
  for (let i = lines.length - 1; i >= 0; i--) {
    const l = lines[i]!.trim();
    if (!l.startsWith('{')) continue;
    try {
      return JSON.parse(l) as Record<string, any>;
    } catch {
      // not JSON: keep looking
    }
  }
  return {};
}

// --- data --------------------------------------------------------------------------------------------------------

/**
 * The first `n` users (ascending id) of a MovieLens latest folder, written once to `outDir` (ratings.csv +
 * movies.csv). The bytes depend only on the source and n, so re-ingesting it is a no-op (the store dedups files).
 */
export async function sliceMovieLens(src: string, n: number, outDir: string): Promise<{ dir: string; reused: boolean }> {
  const ratings = join(src, 'ratings.csv');
  if (!existsSync(ratings)) throw new UsageError(`--max-users needs ${ratings} (a MovieLens latest folder)`);
  const out = join(outDir, 'ratings.csv');
  const stamp = join(outDir, 'source.json');
  const want = JSON.stringify({ src: ratings, size: statSync(ratings).size, mtimeMs: statSync(ratings).mtimeMs, n });
  if (existsSync(out) && existsSync(stamp) && readFileSync(stamp, 'utf8') === want) return { dir: outDir, reused: true };
  const byUser = new Map<number, string[]>();
  let header = '';
  const rl = createInterface({ input: createReadStream(ratings), crlfDelay: Infinity });
  let line = 0;
  for await (const text of rl) {
    line++;
    if (line === 1) {
      header = text;
      continue;
    }
    if (text.trim() === '') continue;
    const user = Number(text.slice(0, text.indexOf(',')));
    if (!Number.isInteger(user)) throw new Error(`${ratings}:${line}: field userId is not an integer`);
    let rows = byUser.get(user);
    if (!rows) byUser.set(user, (rows = []));
    rows.push(text);
  }
  const users = [...byUser.keys()].sort((a, b) => a - b).slice(0, n);
  mkdirSync(outDir, { recursive: true });
  writeFileSync(`${out}.tmp`, [header, ...users.flatMap((u) => byUser.get(u)!)].join('\n') + '\n');
  renameSync(`${out}.tmp`, out);
  if (existsSync(join(src, 'movies.csv'))) copyFileSync(join(src, 'movies.csv'), join(outDir, 'movies.csv'));
  writeFileSync(stamp, want);
  return { dir: outDir, reused: false };
}

/** Products of the data dir that --fresh removes (never anything else that may live there). */
function freshStart(config: GemsConfig, log: Logger): void {
  const p = resolvedPaths(config);
  const victims = [p.duckdb, `${p.duckdb}.wal`, p.objects, p.cache, p.checkpoints, p.memories, p.runs, join(config.dataDir, 'generated'), join(config.dataDir, 'main')];
  for (const v of victims) if (existsSync(v)) rmSync(v, { recursive: true, force: true });
  log.info('--fresh: removed earlier products of the data dir', { dataDir: config.dataDir });
}

// --- the job -----------------------------------------------------------------------------------------------------

export interface AskedUser {
  userId: number;
  events: number;
  response: import('../../serving/recommenderService.js').GetRecommendationsResponse;
  memory: { slots: number; dim: number; eventsCovered: number } | null;
  valid: boolean;
  problems: string[];
}

export interface MainResult {
  code: number;
  stages: StageRow[];
  asked: AskedUser[];
  evalRows: { model: string; metrics: Record<string, number> }[];
  seconds: number;
}

const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;

export async function runMain(baseConfig: GemsConfig, o: MainOptions, log: Logger, out: (line: string) => void): Promise<MainResult> {
  const t0 = performance.now();
  // This job's streams budgets go into the config every stage reads (tokenize, train, compress, serve).
  const config: GemsConfig = structuredClone(baseConfig);
  config.streams = { tRecent: o.tRecent, tMid: o.tMid };
  config.serving = { ...config.serving, metricsPort: 0, reloadPollMs: 0 };
  mkdirSync(config.dataDir, { recursive: true });
  if (o.fresh) freshStart(config, log);
  const state = new StateFile(join(config.dataDir, 'main', 'state.json'));
  const rows: StageRow[] = [];
  const STAGES = 9;
  let n = 0;
  const stage = async (name: string, fn: () => Promise<Omit<StageRow, 'stage' | 'seconds'>>): Promise<void> => {
    n++;
    log.info(`stage ${n}/${STAGES}: ${name}`);
    const s = performance.now();
    const r = await fn();
    const row = { stage: name, seconds: round((performance.now() - s) / 1000, 1), ...r };
    rows.push(row);
    log.info(`stage ${n}/${STAGES}: ${name} ${row.status}`, { seconds: row.seconds, detail: row.detail });
  };
  log.info('gems main', { dataDir: config.dataDir, dataset: o.dataset, streams: config.streams, trainMinutes: o.trainMinutes, fresh: o.fresh });

  // 1-2. data and ingest. Both always run: re-ingesting a file already in the store adds nothing.
  let dataKey = '';
  if (o.dataset === 'ml-latest-small') {
    let folder = o.mlPath;
    await stage('data', async () => {
      if (!existsSync(folder)) throw new UsageError(`MovieLens folder ${folder} does not exist`);
      if (o.maxUsers === 0) return { status: 'skipped', detail: `shipped files: ${folder}` };
      const slice = await sliceMovieLens(o.mlPath, o.maxUsers, join(config.dataDir, 'main', `ml-first-${o.maxUsers}-users`));
      folder = slice.dir;
      return { status: slice.reused ? 'reused' : 'ran', detail: `first ${o.maxUsers} users of ${o.mlPath} → ${folder}` };
    });
    await stage('ingest', async () => {
      const res = lastJson(await runStageCommand('ingest', ['movielens', '--path', folder], config, log));
      const files = (res['files'] as { alreadyIngested: boolean }[] | undefined) ?? [];
      const st = res['stats'] as { users: number; items: number; events: number };
      dataKey = keyOf(st.users, st.items, st.events);
      const reused = files.length > 0 && files.every((f) => f.alreadyIngested);
      return { status: reused ? 'reused' : 'ran', detail: `${st.users} users, ${st.events} events, ${st.items} items (+${res['added'] ?? 0} events)` };
    });
  } else {
    await stage('data', async () => {
      const res = lastJson(await runStageCommand('generate', ['lifelong', ...o.generateArgs], config, log));
      return { status: res['added'] === 0 ? 'reused' : 'ran', detail: `generated ${res['users']} users, ${res['events']} events (+${res['added']}), ${res['targets']} targets` };
    });
    await stage('ingest', async () => {
      const { openHistoryStore } = await import('../../data/parquetHistoryStore.js');
      const store = await openHistoryStore(config);
      try {
        const st = await store.stats();
        dataKey = keyOf(st.users, st.items, st.events);
        return { status: 'skipped', detail: `generator wrote through the store: ${st.users} users, ${st.events} events` };
      } finally {
        await store.close();
      }
    });
  }

  // 3. Semantic IDs.
  let tokenizerVersion = 0;
  await stage('tokenize', async () => {
    const key = keyOf(dataKey, config.tokenizer);
    const prev = state.get('tokenize', key);
    if (prev) {
      const list = await runStageCommand('tokenize', ['--list'], config, log);
      const current = list.find((l) => l.startsWith('*'));
      if (current && current.startsWith(`* v${String(prev.result['version'])} `)) {
        tokenizerVersion = prev.result['version'] as number;
        return { status: 'reused', detail: `tokenizer v${tokenizerVersion} (${String(prev.result['detail'])})` };
      }
    }
    const t = performance.now();
    const res = lastJson(await runStageCommand('tokenize', ['--json'], config, log));
    tokenizerVersion = res['version'] as number;
    const q = res['quality'] as { sizes?: number[]; perLevel?: { perplexity: number }[]; collisionRate?: number } | undefined;
    const detail =
      q?.sizes && q.perLevel ? `codebooks ${q.sizes.join('×')}, perplexity ${q.perLevel.map((l) => round(l.perplexity, 1)).join('/')}, collisions ${round((q.collisionRate ?? 0) * 100, 1)}%` : 'saved';
    state.set('tokenize', { key, at: new Date().toISOString(), seconds: (performance.now() - t) / 1000, result: { version: tokenizerVersion, detail } });
    return { status: 'ran', detail: `tokenizer v${tokenizerVersion}, ${detail}` };
  });

  // 4. The lifecycle compressor (QLA), trained on the lifecycle segments (first: the model trains on its memories).
  let compressorVersion = '';
  await stage('train-compressor', async () => {
    const { latestCompressorVersion } = await import('../../lifecycle/compressor.js');
    const flags = ['--steps', String(o.compressorSteps)];
    const key = keyOf(dataKey, config.streams, config.lifecycle, config.seed, flags);
    const prev = state.get('train-compressor', key);
    if (prev && latestCompressorVersion(config) === prev.result['version']) {
      compressorVersion = String(prev.result['version']);
      return { status: 'reused', detail: `compressor ${compressorVersion}` };
    }
    const t = performance.now();
    const lines = await runStageCommand('train-compressor', flags, config, log);
    const res = lastJson(lines);
    const e = res['eval'] as { compressor: { nll: number }; baseline: { nll: number } } | undefined;
    compressorVersion = String(res['version']);
    const detail = `compressor ${res['version']}${e ? `, held-out NLL ${round(e.compressor.nll, 3)} (mean-embedding baseline ${round(e.baseline.nll, 3)})` : ''}`;
    state.set('train-compressor', { key, at: new Date().toISOString(), seconds: (performance.now() - t) / 1000, result: { version: res['version'], detail } });
    return { status: 'ran', detail };
  });

  // 5. Compress: incremental by itself (unchanged users are skipped), so it always runs.
  await stage('compress', async () => {
    const s = lastJson(await runStageCommand('compress', [], config, log));
    const changed = (s['usersFull'] ?? 0) + (s['usersIncremental'] ?? 0);
    return {
      status: changed === 0 ? 'reused' : 'ran',
      detail: `${s['users']} users: ${s['usersFull']} full, ${s['usersIncremental']} incremental, ${s['usersUnchanged']} unchanged, ${s['failures']} failures`,
    };
  });

  // 6. GEMs training on the lifecycle memories of that compressor. Reused when its inputs (the compressor version
  // included) are unchanged and it finished; resumed when it was interrupted.
  const paths = resolvedPaths(config);
  const runDir = join(paths.checkpoints, 'gems');
  let checkpointStampValue = '';
  await stage('train', async () => {
    const flags = [
      '--model', 'gems', '--run', 'gems', '--preset', o.preset, '--max-minutes', String(o.trainMinutes),
      '--epochs', String(o.epochs[0]), '--epochs2', String(o.epochs[1]), '--epochs3', String(o.epochs[2]),
      '--batch', String(o.batch), '--targets-per-user', String(o.targetsPerUser), '--valid-users', String(o.validUsers),
      '--tokenizer-version', String(tokenizerVersion), '--lifecycle-source', 'memory', '--compressor-version', compressorVersion,
    ];
    const key = keyOf(dataKey, tokenizerVersion, config.streams, config.seed, flags);
    const summaryFile = join(runDir, 'train-summary.json');
    const prev = state.get('train', key);
    const best = join(runDir, 'best', 'meta.json');
    if (prev && prev.result['done'] === true && existsSync(summaryFile) && existsSync(best)) {
      checkpointStampValue = readFileSync(best, 'utf8');
      return { status: 'reused', detail: String(prev.result['detail']) };
    }
    const resume = prev !== null && prev.result['done'] === false && existsSync(join(runDir, 'last', 'meta.json'));
    if (!resume && existsSync(runDir)) rmSync(runDir, { recursive: true, force: true });
    // Recorded before training, so a run killed mid-way resumes from its `last` checkpoint next time.
    state.set('train', { key, at: new Date().toISOString(), seconds: 0, result: { done: false } });
    const t = performance.now();
    const res = lastJson(await runStageCommand('train', [...flags, ...(resume ? ['--resume'] : [])], config, log));
    const last = res['last'] as { validNll?: number; stage?: number } | undefined;
    const detail = `${res['epochs']} epochs, stage ${res['stage']}${last?.validNll !== undefined ? `, valid NLL ${round(last.validNll, 3)}` : ''}${resume ? ' (resumed)' : ''}`;
    state.set('train', { key, at: new Date().toISOString(), seconds: (performance.now() - t) / 1000, result: { done: true, detail } });
    checkpointStampValue = existsSync(best) ? readFileSync(best, 'utf8') : '';
    return { status: 'ran', detail };
  });

  // 7. Evaluation of the served checkpoint (cached by the checkpoint's identity).
  let evalRows: MainResult['evalRows'] = [];
  await stage('eval', async () => {
    const flags = ['--run', 'gems', '--split', 'test', '--name', 'main-eval', ...(o.evalUsers > 0 ? ['--max-users', String(o.evalUsers)] : [])];
    const key = keyOf(checkpointStampValue, flags, config.streams);
    const prev = state.get('eval', key);
    if (prev) {
      evalRows = prev.result['rows'] as MainResult['evalRows'];
      return { status: 'reused', detail: String(prev.result['detail']) };
    }
    const t = performance.now();
    const lines = await runStageCommand('eval', flags, config, log);
    const parsed = lines.map((l) => lastJson([l])).filter((r) => typeof r['model'] === 'string');
    // Only our rows: the published references are ML-1M figures, not comparable with this data set.
    evalRows = parsed.filter((r) => !/SASRec|HSTU/.test(String(r['model']))).map(({ model, ...metrics }) => ({ model: String(model), metrics: metrics as Record<string, number> }));
    const report = lastJson(lines)['markdown'];
    const detail = `${evalRows.length} rows${report ? `, report ${String(report)}` : ''}`;
    state.set('eval', { key, at: new Date().toISOString(), seconds: (performance.now() - t) / 1000, result: { rows: evalRows, detail } });
    return { status: 'ran', detail };
  });

  // 8. Serve and ask over gRPC; 9. stop.
  const asked: AskedUser[] = [];
  let stopServices: (() => Promise<string>) | null = null;
  try {
    await stage('serve + ask', async () => {
      const served = await startServices(config, log);
      stopServices = served.stop;
      const users = o.ask.length > 0 ? o.ask : await pickUsers(served.history, o.askCount);
      const { RecommenderClient } = await import('../../serving/recommenderService.js');
      const { LifecycleMemoryClient } = await import('../../serving/lifecycleService.js');
      const rec = new RecommenderClient(served.recommenderAddress, { deadlineMs: 60_000 });
      const mem = new LifecycleMemoryClient(served.memoryAddress, { deadlineMs: 10_000 });
      try {
        // Concurrent calls: the recommender batches them into one model execution. Seen items are excluded at the
        // last code level of the beam search, so a user who has seen much of the catalogue needs a wide beam to get
        // k new items: ask again, wider, when an answer comes back short.
        const maxBeam = 4 * config.serving.maxK;
        let beam = Math.min(maxBeam, o.beam > 0 ? o.beam : Math.max(100, 10 * o.k));
        const responses = await Promise.all(users.map((u) => rec.recommend({ userId: u, k: o.k, options: { beam: String(beam) } })));
        while (beam < maxBeam && responses.some((r) => r.items.length < o.k)) {
          beam = Math.min(maxBeam, beam * 4);
          const short = users.filter((_, i) => responses[i]!.items.length < o.k);
          log.warn('short answers: asking again with a wider beam', { users: short, beam });
          const again = await Promise.all(short.map((u) => rec.recommend({ userId: u, k: o.k, options: { beam: String(beam) } })));
          short.forEach((u, j) => (responses[users.indexOf(u)] = again[j]!));
        }
        const memories = await Promise.all(users.map((u) => mem.get(u)));
        const counts = await served.eventCounts(users);
        users.forEach((u, i) => {
          const r = responses[i]!;
          const problems = checkAnswer(r, o.k, served.catalogue);
          const m = memories[i];
          asked.push({ userId: u, events: counts[i]!, response: r, memory: m ? { slots: m.header.slots, dim: m.header.dim, eventsCovered: m.header.eventsCovered } : null, valid: problems.length === 0, problems });
        });
      } finally {
        rec.close();
        mem.close();
      }
      const bad = asked.filter((a) => !a.valid).length;
      return { status: 'ran', detail: `recommender ${served.recommenderAddress}, memories ${served.memoryAddress}; ${asked.length} users asked, ${bad} invalid answers` };
    });
  } finally {
    const stop = stopServices as (() => Promise<string>) | null;
    if (stop) {
      await stage('stop', async () => ({ status: 'ran', detail: await stop() }));
    }
  }

  printReport(out, o, config, asked, evalRows, rows, (performance.now() - t0) / 1000);
  const code = asked.length > 0 && asked.every((a) => a.valid) ? 0 : 1;
  if (code !== 0) log.error('some recommendations were invalid', { users: asked.filter((a) => !a.valid).map((a) => ({ user: a.userId, problems: a.problems })) });
  return { code, stages: rows, asked, evalRows, seconds: (performance.now() - t0) / 1000 };
}

/** k distinct items, all in the catalogue (MovieLens: the items file; generated: the catalogue written with it). */
export function checkAnswer(r: AskedUser['response'], k: number, catalogue: Set<number>): string[] {
  const problems: string[] = [];
  const ids = r.items.map((x) => Number(x.itemId));
  if (ids.length !== k) problems.push(`${ids.length} items, wanted ${k}`);
  if (new Set(ids).size !== ids.length) problems.push('duplicate items');
  const unknown = ids.filter((id) => !catalogue.has(id));
  if (unknown.length > 0) problems.push(`items not in the catalogue: ${unknown.slice(0, 5).join(',')}`);
  return problems;
}

interface Services {
  /** The recommender's history store (one handle per process: DuckDB must not be reopened read-only beside it). */
  history: import('../../data/historyStore.js').HistoryStore;
  recommenderAddress: string;
  memoryAddress: string;
  catalogue: Set<number>;
  eventCounts(users: number[]): Promise<number[]>;
  /** Graceful: refuse new calls, finish in-flight ones, drain the batcher, close the stores. Returns a summary. */
  stop(): Promise<string>;
}

/** The lifecycle memory service and the recommender in this process (colocated), on free loopback ports. */
async function startServices(config: GemsConfig, log: Logger): Promise<Services> {
  const { openHistoryStore } = await import('../../data/parquetHistoryStore.js');
  const { openMemoryStore } = await import('../../lifecycle/openMemoryStore.js');
  const { startLifecycleServer } = await import('../../serving/lifecycleService.js');
  const { startRecommenderServer } = await import('../../serving/recommenderService.js');
  const { ServiceMetrics } = await import('../../serving/metrics.js');
  const host = '127.0.0.1';
  const metrics = new ServiceMetrics();
  const closers: (() => Promise<void> | void)[] = [];
  const closeAll = async () => {
    for (const c of closers.reverse()) await c();
    closers.length = 0;
  };
  try {
    const memories = await openMemoryStore(config);
    closers.push(() => memories.close());
    const memoryHandle = await startLifecycleServer({ config, store: memories, host, port: 0, metrics, log: log.child('memory') });
    closers.push(async () => void (await memoryHandle.shutdown(5000)));
    const history = await openHistoryStore(config);
    closers.push(() => history.close());
    const cat = await history.items();
    const titles = new Map<number, string>();
    for (let i = 0; i < cat.length; i++) if (cat.titles[i]) titles.set(cat.itemId[i]!, cat.titles[i]!);
    const recommender = await startRecommenderServer({ config, history, memories, titles, metrics, host, port: 0, watchCheckpoint: false, log: log.child('recommender') });
    closers.push(async () => void (await recommender.stop(5000)));
    log.info('services up', { recommender: recommender.handle.address, memory: memoryHandle.address, model: recommender.service.modelVersion });
    return {
      history,
      recommenderAddress: recommender.handle.address,
      memoryAddress: memoryHandle.address,
      catalogue: new Set(cat.itemId),
      eventCounts: async (users) => Array.from(await history.userEventCounts(users)),
      stop: async () => {
        const stats = recommender.service.batchStats;
        await closeAll();
        return `graceful shutdown; batches ${JSON.stringify(stats)}`;
      },
    };
  } catch (e) {
    await closeAll();
    throw e;
  }
}

/** Users to ask: the longest history (all three streams), one near the median and the shortest, distinct. */
async function pickUsers(store: import('../../data/historyStore.js').HistoryStore, count: number): Promise<number[]> {
  const ids = await store.userIds();
  const counts = await store.userEventCounts(ids);
  const order = Array.from(ids.keys()).sort((a, b) => counts[b]! - counts[a]! || ids[a]! - ids[b]!);
  if (order.length === 0) throw new Error('the history store has no users');
  const picks: number[] = [];
  const want = Math.min(count, order.length);
  // Spread over the length ranking: first (longest), then evenly down to the last (shortest).
  for (let j = 0; j < want; j++) {
    const pos = want === 1 ? 0 : Math.round((j * (order.length - 1)) / (want - 1));
    const u = ids[order[pos]!]!;
    if (!picks.includes(u)) picks.push(u);
  }
  return picks;
}

// --- printing ----------------------------------------------------------------------------------------------------

function table(out: (l: string) => void, head: string[], body: string[][]): void {
  const w = head.map((h, i) => Math.max(h.length, ...body.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(w[i]!)).join('  ').trimEnd();
  out(line(head));
  out(w.map((x) => '-'.repeat(x)).join('  '));
  for (const r of body) out(line(r));
}

function printReport(out: (l: string) => void, o: MainOptions, config: GemsConfig, asked: AskedUser[], evalRows: MainResult['evalRows'], rows: StageRow[], seconds: number): void {
  out('');
  out(`== gems main: ${o.dataset}${o.maxUsers ? ` (first ${o.maxUsers} users)` : ''}, streams T_recent=${config.streams.tRecent} T_mid=${config.streams.tMid}, data dir ${config.dataDir}`);
  for (const a of asked) {
    const r = a.response;
    const att = r.attention ? `recent ${pct(r.attention.recent)} mid ${pct(r.attention.mid)} lifecycle ${pct(r.attention.lifecycle)}` : '';
    out('');
    out(`user ${a.userId}: ${a.events} events; streams used: ${r.streamsUsed.join(', ') || 'none'}; strategy ${r.strategy}${r.coldStart ? ' (cold start)' : ''}; attention ${att}`);
    const memory = !a.memory ? 'none' : a.memory.eventsCovered === 0 ? `${a.memory.slots}×${a.memory.dim}, empty (history not longer than T_mid)` : `${a.memory.slots}×${a.memory.dim}, covers ${a.memory.eventsCovered} events`;
    out(`  lifecycle memory (via gRPC GetLifecycleMemory): ${memory}${r.lifecycleSource ? `; the model read the lifecycle stream from ${r.lifecycleSource}` : ''}`);
    if (!a.valid) out(`  INVALID ANSWER: ${a.problems.join('; ')}`);
    table(
      (l) => out('  ' + l),
      ['#', 'item', 'score', 'semantic id', 'title'],
      r.items.map((x, i) => [String(i + 1), String(x.itemId), Number(x.score).toFixed(3), x.semanticId.length ? `[${x.semanticId.join(',')}]` : '', x.title || '(unknown)']),
    );
  }
  if (evalRows.length > 0) {
    out('');
    out('evaluation (test split; see <dataDir>/runs/gems/main-eval.md):');
    const cols = [...new Set(evalRows.flatMap((r) => Object.keys(r.metrics)))];
    table(out, ['model', ...cols], evalRows.map((r) => [r.model, ...cols.map((c) => fmt(r.metrics[c]))]));
  }
  out('');
  out(`summary (total ${round(seconds, 1)} s):`);
  table(out, ['stage', 'status', 'seconds', 'detail'], rows.map((r) => [r.stage, r.status, r.seconds.toFixed(1), r.detail]));
}

const pct = (x: number) => `${(Number(x) * 100).toFixed(1)}%`;
const fmt = (x: number | undefined) => (x === undefined ? '' : Number.isInteger(x) ? String(x) : x.toFixed(4));

export const command: Command = {
  summary: 'run everything end to end on the embedded default: data → ingest → Semantic IDs → train-compressor → compress → train → eval → serve → recommend',
  usage: USAGE,
  async run({ config, args, log, out }) {
    const o = mainOptionsFromArgs(args);
    return (await runMain(config, o, log, out)).code;
  },
};
