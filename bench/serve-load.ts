// serve-load: GetRecommendations under 64 concurrent clients for a bounded time, user batching on vs off, in the
// same run: calls/s, p50/p99 ms, errors (must be 0), server RSS at start and end (growth), batching_speedup =
// rps(on) / rps(off).
//
// Setup: a data dir is prepared here (synthetic users with tag/author interests, written through the history
// store; with --model gems a small GEMs model is trained on it and checkpointed where `gems serve` looks), or taken
// from --data-dir as is. The SERVER runs in a child process (bench/_recommenderServer.ts, the history store
// opened read-only, the model chosen by buildModel exactly as `gems serve` does); the CLIENT runs here over one
// HTTP/2 channel with `--concurrency` callers, each with one call in flight. The figures name the model measured.
//   npm run bench -- serve-load [--seconds 60] [--concurrency 64] [--k 20] [--model gems|popularity]
//                               [--users 1000] [--items 2000] [--events 300] [--batch 16] [--wait-ms 5]
//                               [--train-minutes 1.5] [--data-dir DIR]
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createInterface, type Interface } from 'node:readline';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Bench } from './run.js';
import { argNumber, argString, percentile, round } from './_stats.js';
import { loadConfig, resolvedPaths } from '../src/config/config.js';
import type { EventColumns, History, Item } from '../src/data/events.js';
import { openHistoryStore } from '../src/data/parquetHistoryStore.js';
import { RecommenderClient } from '../src/serving/recommenderService.js';
import { logger } from '../src/util/log.js';
import { Rng } from '../src/util/random.js';

const here = dirname(fileURLToPath(import.meta.url));
const log = logger('bench.serve-load');


const TAGS = 50;
const AUTHORS = 200;

/** Synthetic users: each has 3 favourite tags (80% of events), items drawn with a popularity skew within a tag. */
function synthetic(users: number, items: number, events: number, seed: number): { batch: EventColumns; catalogue: Item[]; histories: History[] } {
  const rng = new Rng(seed);
  const byTag: number[][] = Array.from({ length: TAGS }, () => []);
  const catalogue: Item[] = [];
  for (let id = 1; id <= items; id++) {
    const tag = 1 + (id % TAGS);
    byTag[tag - 1]!.push(id);
    catalogue.push({ itemId: id, authorId: 1 + (id % AUTHORS), tags: [tag], title: `Item ${id}` });
  }
  const n = users * events;
  const b: EventColumns = {
    length: n,
    userId: new Int32Array(n),
    itemId: new Int32Array(n),
    ts: new Float64Array(n),
    seq: new Int32Array(n),
    authorId: new Int32Array(n),
    tagOffsets: new Int32Array(n + 1),
    tagIds: new Int32Array(n),
    playMs: new Float32Array(n),
    durationMs: new Float32Array(n),
    labels: new Uint8Array(n),
    source: 'bench-serve-load',
  };
  const histories: History[] = [];
  let r = 0;
  for (let u = 1; u <= users; u++) {
    const favs = [rng.int(TAGS), rng.int(TAGS), rng.int(TAGS)];
    const start = r;
    for (let e = 0; e < events; e++, r++) {
      const tag = rng.next() < 0.8 ? favs[rng.int(3)]! : rng.int(TAGS);
      const pool = byTag[tag]!;
      // Squaring a uniform draw favours the head of the pool: a popularity skew.
      const item = pool[Math.floor(rng.next() ** 2 * pool.length)]!;
      b.userId[r] = u;
      b.itemId[r] = item;
      b.ts[r] = 1_700_000_000_000 + u * 1000 + e * 60_000;
      b.seq[r] = e;
      b.authorId[r] = 1 + (item % AUTHORS);
      b.tagIds[r] = tag + 1;
      b.tagOffsets[r + 1] = r + 1;
      b.playMs[r] = 1000 + rng.int(60_000);
      b.durationMs[r] = 60_000;
      b.labels[r] = rng.next() < 0.1 ? 1 : 0;
    }
    histories.push({
      userId: u,
      length: events,
      itemId: b.itemId.slice(start, r),
      ts: b.ts.slice(start, r),
      seq: b.seq.slice(start, r),
      authorId: b.authorId.slice(start, r),
      tagOffsets: Int32Array.from({ length: events + 1 }, (_, i) => i),
      tagIds: b.tagIds.slice(start, r),
      playMs: b.playMs.slice(start, r),
      durationMs: b.durationMs.slice(start, r),
      labels: b.labels.slice(start, r),
    });
  }
  return { batch: b, catalogue, histories };
}

/** Trains a small GEMs model on the synthetic histories into <dataDir>/checkpoints/gems/best (where serving looks). */
async function trainSmallGems(dataDir: string, histories: History[], items: number, minutes: number, tRecent: number, tMid: number): Promise<string> {
  const { initBackend } = await import('../src/compute/backend.js');
  await initBackend();
  const { defaultGemsConfig } = await import('../src/model/gems.js');
  const { simpleSemanticIds } = await import('../src/model/sid.js');
  const { ChunkMeanSummarizer } = await import('../src/model/features.js');
  const { DEFAULT_GEMS_TRAIN, trainGems } = await import('../src/train/gemsTrainer.js');
  const itemIds = Array.from({ length: items }, (_, i) => i + 1);
  const sizes = [16, 16, Math.max(16, Math.ceil((4 * items) / 256))];
  const sid = simpleSemanticIds(itemIds, sizes, 5, 16);
  const mc = defaultGemsConfig(items, sizes, { tRecent, tMid, lifecycle: { slots: 8, inDim: 16, layers: 1 } });
  const res = await trainGems({
    histories: histories.slice(0, 300),
    sid,
    summarizer: new ChunkMeanSummarizer(sid, mc.lifecycle.slots),
    modelConfig: mc,
    train: { ...DEFAULT_GEMS_TRAIN, targetsPerUser: 4, maxMinutes: minutes, stages: [{ maxEpochs: 2, patience: 2 }, { maxEpochs: 1, patience: 1 }, { maxEpochs: 1, patience: 1 }] },
    runDir: join(resolvedPaths(loadConfig({ flags: { dataDir }, env: {} })).checkpoints, 'gems'),
  });
  res.model.dispose();
  return res.bestDir;
}

interface Server {
  child: ChildProcess;
  lines: Interface;
  address: string;
  model: string;
  version: string;
}

function nextLine(s: Pick<Server, 'lines' | 'child'>): Promise<string> {
  return new Promise((resolve, reject) => {
    const onExit = (code: number | null) => reject(new Error(`recommender child exited (${code})`));
    s.child.once('exit', onExit);
    s.lines.once('line', (l) => {
      s.child.off('exit', onExit);
      resolve(l);
    });
  });
}

async function startServer(dataDir: string, sets: Record<string, string>): Promise<Server> {
  const argv = ['--expose-gc', '--import', 'tsx', join(here, '_recommenderServer.ts'), dataDir];
  for (const [k, v] of Object.entries(sets)) argv.push('--set', `${k}=${v}`);
  const child = spawn(process.execPath, argv, { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! });
  const hello = JSON.parse(await nextLine({ child, lines })) as { address: string; model: string; version: string };
  return { child, lines, ...hello };
}

async function serverRss(s: Server): Promise<{ rss_mb: number; batches: { batches: number; requests: number } }> {
  s.child.stdin!.write('rss\n');
  return JSON.parse(await nextLine(s)) as { rss_mb: number; batches: { batches: number; requests: number } };
}

type Load = {
  rps: number;
  p50_ms: number;
  p99_ms: number;
  calls: number;
  errors: number;
  first_error: string | null;
};

async function drive(client: RecommenderClient, users: number, k: number, concurrency: number, seconds: number, seed: number): Promise<Load> {
  const rng = new Rng(seed);
  const lat: number[] = [];
  let errors = 0;
  let firstError: string | null = null;
  const end = performance.now() + seconds * 1000;
  const worker = async () => {
    while (performance.now() < end) {
      const userId = 1 + rng.int(users);
      const t = performance.now();
      try {
        const res = await client.recommend({ userId, k, deadlineMs: 30_000 });
        if (res.items.length === 0) throw new Error(`no items for user ${userId}`);
        lat.push(performance.now() - t);
      } catch (e) {
        errors++;
        firstError ??= (e as Error).message;
      }
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsed = (performance.now() - t0) / 1000;
  return { rps: round(lat.length / elapsed, 1), p50_ms: round(percentile(lat, 50), 2), p99_ms: round(percentile(lat, 99), 2), calls: lat.length, errors, first_error: firstError };
}

export const bench: Bench = {
  summary: 'GetRecommendations with 64 concurrent clients: calls/s, p50/p99 ms, errors, server RSS growth, user batching on vs off',
  async run(args) {
    const seconds = argNumber(args, 'seconds', 60);
    const concurrency = argNumber(args, 'concurrency', 64);
    const k = argNumber(args, 'k', 20);
    const batch = argNumber(args, 'batch', 16);
    const waitMs = argNumber(args, 'wait-ms', 5);
    const model = argString(args, 'model', 'gems');
    if (model !== 'gems' && model !== 'popularity') throw new Error(`--model must be gems or popularity, got '${model}'`);
    let users = argNumber(args, 'users', 1000);
    const given = argString(args, 'data-dir', '');
    const dataDir = given || mkdtempSync(join(tmpdir(), 'gems-bench-serve-'));
    const streams = { tRecent: 64, tMid: 256 };
    const sets: Record<string, string> = {
      'streams.tRecent': String(streams.tRecent),
      'streams.tMid': String(streams.tMid),
      'serving.maxWaitMs': String(waitMs),
      'serving.maxQueue': '1024',
      'serving.reloadPollMs': '0',
      'history.userBuckets': '16',
    };
    try {
      if (!given) {
        const items = argNumber(args, 'items', 2000);
        const events = argNumber(args, 'events', 300);
        log.info('preparing data', { users, items, events, dataDir });
        const data = synthetic(users, items, events, 11);
        const store = await openHistoryStore(loadConfig({ flags: { dataDir, 'history.userBuckets': '16' }, env: {} }));
        await store.append(data.batch);
        await store.upsertItems(data.catalogue);
        await store.close();
        if (model === 'gems') {
          const t0 = performance.now();
          const dir = await trainSmallGems(dataDir, data.histories, items, argNumber(args, 'train-minutes', 1.5), streams.tRecent, streams.tMid);
          log.info('trained a small GEMs model', { dir, seconds: round((performance.now() - t0) / 1000, 1) });
        }
      } else {
        const store = await openHistoryStore(loadConfig({ flags: { dataDir }, env: {} }), { readOnly: true });
        users = (await store.userIds()).length;
        await store.close();
      }

      const variants: Record<string, Load & { rss_start_mb: number; rss_end_mb: number; rss_growth_mb: number; mean_batch: number }> = {};
      let measured = { model: '', version: '' };
      for (const [name, maxBatch] of [
        ['on', batch],
        ['off', 1],
      ] as const) {
        const server = await startServer(dataDir, { ...sets, 'serving.maxBatchSize': String(maxBatch) });
        measured = { model: server.model, version: server.version };
        const client = new RecommenderClient(server.address);
        try {
          await drive(client, users, k, concurrency, Math.min(3, seconds), 1); // warm-up (JIT, caches, wasm)
          const start = await serverRss(server);
          const load = await drive(client, users, k, concurrency, seconds, 2);
          const endRss = await serverRss(server);
          const batches = endRss.batches.batches - start.batches.batches;
          const requests = endRss.batches.requests - start.batches.requests;
          variants[name] = {
            ...load,
            rss_start_mb: round(start.rss_mb, 1),
            rss_end_mb: round(endRss.rss_mb, 1),
            rss_growth_mb: round(endRss.rss_mb - start.rss_mb, 1),
            mean_batch: round(requests / Math.max(1, batches), 2),
          };
          console.log(`batching ${name} (maxBatchSize ${maxBatch}): ${JSON.stringify(variants[name])}`);
        } finally {
          client.close();
          server.child.stdin!.end();
          await new Promise((r) => server.child.once('exit', r));
        }
      }
      const on = variants['on']!;
      const off = variants['off']!;
      return {
        model: measured.model,
        model_version: measured.version,
        users,
        k,
        concurrency,
        seconds,
        max_batch_size: batch,
        max_wait_ms: waitMs,
        rps: on.rps,
        p99_ms: on.p99_ms,
        errors: on.errors + off.errors,
        rss_growth_mb: on.rss_growth_mb,
        batching_speedup: round(on.rps / off.rps, 2),
        batching_on: on,
        batching_off: off,
        loadavg_1m: round(loadavg()[0]!, 2),
      };
    } finally {
      if (!given) rmSync(dataDir, { recursive: true, force: true });
    }
  },
};
