// gems.v1.RecommenderService end to end: real gRPC servers on loopback ports, a real DuckDB history store in a temp
// data dir (filled through the store), a real lmdb memory store, the popularity model built from the store and a
// tiny GEMs checkpoint trained here. SlowModel (below) delays a real model's batches so that queueing, overload and
// drain become observable — the only stand-in in this file.
import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync, renameSync, rmSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/compute/backend.js';
import { loadConfig, type GemsConfig } from '../../src/config/config.js';
import { historiesToBatch, sliceHistory, type EventColumns, type History, type Item } from '../../src/data/events.js';
import { openHistoryStore, type ParquetHistoryStore } from '../../src/data/parquetHistoryStore.js';
import type { LifecycleMemory, MemoryStore } from '../../src/lifecycle/memory.js';
import { openMemoryStore } from '../../src/lifecycle/openMemoryStore.js';
import { ChunkMeanSummarizer } from '../../src/model/features.js';
import { GemsRecommender, HybridRecommender } from '../../src/serving/gemsRecommender.js';
import { PopularityModel, popularityFromStore } from '../../src/serving/coldStart.js';
import type { GrpcServerHandle } from '../../src/serving/grpc.js';
import { LifecycleMemoryClient, startLifecycleServer } from '../../src/serving/lifecycleService.js';
import { ServiceMetrics } from '../../src/serving/metrics.js';
import type { RecommendInput, RecommendOutput, RecommenderModel } from '../../src/serving/recommender.js';
import { RecommenderClient, startRecommenderServer, type GetRecommendationsResponse, type RecommenderServer } from '../../src/serving/recommenderService.js';
import { DEFAULT_GEMS_TRAIN, trainGems } from '../../src/train/gemsTrainer.js';
import { setLogSink } from '../../src/util/log.js';
import { Rng } from '../../src/util/random.js';
import { fixtureSid, ITEM_IDS, ringHistories, tinyConfig } from '../model/fixture.js';

const tmp = mkdtempSync(join(tmpdir(), 'gems-recsvc-'));
const quiet = setLogSink(() => undefined);
afterAll(() => {
  setLogSink(quiet);
  rmSync(tmp, { recursive: true, force: true });
});

/** Delays every batch of a real model (to make queues, overload and drain observable) and counts batches. */
class SlowModel implements RecommenderModel {
  batches = 0;
  disposed = 0;
  constructor(
    readonly inner: RecommenderModel,
    readonly delayMs: number,
    readonly version = `slow(${inner.version})`,
  ) {}
  get kind() {
    return `slow-${this.inner.kind}`;
  }
  async recommendBatch(inputs: RecommendInput[]): Promise<(RecommendOutput | Error)[]> {
    this.batches++;
    await new Promise((r) => setTimeout(r, this.delayMs));
    return this.inner.recommendBatch(inputs);
  }
  dispose() {
    this.disposed++;
    this.inner.dispose?.();
  }
}

const histories = ringHistories(12, 24); // users 1000..1011, items 10..33, tags (item % 5, 7), authors 100 + item % 3
const SHORT_USER = 2000; // two events: below coldStartMinEvents
const UNKNOWN_USER = 3000;

const columnsOf = (hs: History[]): EventColumns => historiesToBatch(hs, 'test');

function memoryOf(userId: number, slots: number, dim: number): LifecycleMemory {
  const rng = new Rng(userId);
  return {
    userId,
    header: { formatVersion: 1, compressorVersion: 'qla-test', slots, dim, dtype: 'float32', watermark: 1, eventsCovered: 12, createdAt: 1_700_000_000_000 },
    vectors: Float32Array.from({ length: slots * dim }, () => rng.normal(0, 0.1)),
  };
}

let config: GemsConfig;
let history: ParquetHistoryStore;
let memories: MemoryStore;
let runA: string;
let runB: string;
const started: RecommenderServer[] = [];
const clients: RecommenderClient[] = [];

function cfg(extra: Record<string, string> = {}): GemsConfig {
  return loadConfig({
    flags: {
      dataDir: join(tmp, 'data'),
      'history.userBuckets': '4',
      'streams.tRecent': '4',
      'streams.tMid': '12',
      'serving.maxK': '20',
      'serving.reloadPollMs': '0',
      'lifecycle.slots': '4',
      'lifecycle.dim': '8',
      ...extra,
    },
    env: {},
  });
}

async function serve(model: RecommenderModel, extra: Record<string, string> = {}, metrics = new ServiceMetrics(false)): Promise<{ server: RecommenderServer; client: RecommenderClient; metrics: ServiceMetrics }> {
  const c = cfg(extra);
  const titles = new Map(ITEM_IDS.map((id) => [id, `Item ${id}`]));
  const server = await startRecommenderServer({ config: c, history, memories, model, titles, metrics, host: '127.0.0.1', port: 0 });
  started.push(server);
  const client = new RecommenderClient(server.handle.address);
  clients.push(client);
  return { server, client, metrics };
}

const codeOf = (p: Promise<unknown>) =>
  p.then(
    () => grpc.status.OK,
    (e: grpc.ServiceError) => e.code,
  );

beforeAll(async () => {
  await initBackend();
  config = cfg();
  history = await openHistoryStore(config, { rowGroupSize: 64 });
  await history.append(columnsOf([...histories, { ...sliceHistory(histories[0]!, 0, 2), userId: SHORT_USER }]));
  const items: Item[] = ITEM_IDS.map((id) => ({ itemId: id, authorId: 100 + (id % 3), tags: [id % 5, 7], title: `Item ${id}` }));
  await history.upsertItems(items);
  memories = await openMemoryStore(config);
  await memories.putMany(histories.slice(0, 6).map((h) => memoryOf(h.userId, 4, 8)));

  // Two tiny checkpoints (different seeds) to serve and swap between. Quality is not the point here.
  const sid = fixtureSid();
  const train = async (seed: number) => {
    const mc = tinyConfig({ seed });
    const res = await trainGems({
      histories,
      sid,
      summarizer: new ChunkMeanSummarizer(sid, mc.lifecycle.slots),
      modelConfig: mc,
      train: { ...DEFAULT_GEMS_TRAIN, batchSize: 32, targetsPerUser: 4, minInput: 6, seed, stages: [{ maxEpochs: 2, patience: 2 }, { maxEpochs: 1, patience: 1 }, { maxEpochs: 1, patience: 1 }] },
      runDir: join(tmp, `run-${seed}`),
    });
    res.model.params.dispose();
    return res.bestDir;
  };
  runA = await train(1);
  runB = await train(2);
}, 120_000);

afterAll(async () => {
  clients.forEach((c) => c.close());
  await Promise.all(started.map((s) => s.stop(1000)));
  await memories?.close();
  await history?.close();
});

function expectValid(res: GetRecommendationsResponse, k: number, seen: Set<number> = new Set()): void {
  expect(res.items.length).toBe(k);
  const ids = res.items.map((i) => i.itemId);
  expect(new Set(ids).size).toBe(k);
  for (const it of res.items) {
    expect(ITEM_IDS).toContain(it.itemId);
    expect(seen.has(it.itemId)).toBe(false);
    expect(it.title).toBe(`Item ${it.itemId}`);
  }
  for (let i = 1; i < res.items.length; i++) expect(res.items[i]!.score).toBeLessThanOrEqual(res.items[i - 1]!.score);
}

describe('GetRecommendations with the popularity (cold-start) model', () => {
  it('returns k distinct valid unseen items; interests for known users, overall popularity for unknown ones', async () => {
    const { client } = await serve(new PopularityModel(await popularityFromStore(history)));
    const h = histories[4]!; // stride 2: has seen 12 of the 24 items
    const known = await client.recommend({ userId: h.userId, k: 5 });
    expectValid(known, 5, new Set(h.itemId));
    expect(known.coldStart).toBe(true);
    expect(known.strategy).toBe('popular_in_interests');
    expect(known.streamsUsed).toEqual(['recent', 'mid']);
    expect(known.attention).toEqual({ recent: 0, mid: 0, lifecycle: 0 });

    const unknown = await client.recommend({ userId: UNKNOWN_USER, k: 7 });
    expectValid(unknown, 7);
    expect(unknown.strategy).toBe('popular_overall');
    expect(unknown.streamsUsed).toEqual([]);
    expect(unknown.modelVersion).toMatch(/^popularity@/);

    // Caller-supplied events replace the stored ones and the interests follow them: tag 4 is on items ≡ 4 (mod 5);
    // author 999 has no items.
    const given = await client.recommend({ userId: UNKNOWN_USER, k: 3, recentEvents: [{ itemId: 14, tsMs: 1_700_000_000_000, tagIds: [4], authorId: 999 }], options: { exclude_seen: 'true' } });
    expect(given.strategy).toBe('popular_in_interests');
    expect(given.streamsUsed).toEqual(['recent']);
    expect(given.items.map((i) => i.itemId)).not.toContain(14);
    expect(given.items.every((i) => i.itemId % 5 === 4)).toBe(true);
  });

  it('malformed requests get INVALID_ARGUMENT naming the field, and the server keeps serving', async () => {
    const { client } = await serve(new PopularityModel(await popularityFromStore(history)));
    const bad: [Parameters<RecommenderClient['recommend']>[0], RegExp][] = [
      [{ userId: 1000, k: 0 }, /^k must be ≥ 1/],
      [{ userId: 1000, k: 21 }, /k is 21, above the limit serving.maxK = 20/],
      [{ userId: 0, k: 5 }, /^user_id/],
      [{ userId: -4, k: 5 }, /^user_id/],
      [{ userId: 1000, k: 5, options: { colour: 'red' } }, /options.colour: unknown option/],
      [{ userId: 1000, k: 5, options: { beam: 'wide' } }, /options.beam/],
      [{ userId: 1000, k: 5, options: { exclude_seen: 'maybe' } }, /options.exclude_seen/],
      [{ userId: 1000, k: 5, options: { indexer_selection: 'beam' } }, /options.indexer_selection: 'beam' is not user\|request\|shared\|query/],
      [{ userId: 1000, k: 5, recentEvents: [{ itemId: 10 }, { itemId: -3 }] }, /recent_events\[1\].item_id/],
      [{ userId: 1000, k: 5, recentEvents: [{ itemId: 10, tsMs: 2000 }, { itemId: 11, tsMs: 1000 }] }, /recent_events\[1\].ts_ms.*oldest first/],
      [{ userId: 1000, k: 5, recentEvents: Array.from({ length: 13 }, () => ({ itemId: 10 })) }, /recent_events has 13 events, the limit is streams.tMid = 12/],
    ];
    for (const [req, msg] of bad) {
      const err = await client.recommend(req).then(
        () => null,
        (e: grpc.ServiceError) => e,
      );
      expect(err?.code, JSON.stringify(req)).toBe(grpc.status.INVALID_ARGUMENT);
      expect(err?.details).toMatch(msg);
    }
    expectValid(await client.recommend({ userId: 1001, k: 4 }), 4);
  });
});

describe('GetRecommendations with a GEMs checkpoint', () => {
  it('hybrid: GEMs answers users with history (SIDs, attention mass), popularity answers the rest', async () => {
    const gems = GemsRecommender.load(runA);
    const model = new HybridRecommender(gems, new PopularityModel(await popularityFromStore(history), gems.sid), 3);
    const { client } = await serve(model);
    const h = histories[5]!;
    const res = await client.recommend({ userId: h.userId, k: 6 });
    expectValid(res, 6, new Set(h.itemId));
    expect(res.coldStart).toBe(false);
    expect(res.strategy).toBe('gems');
    expect(res.streamsUsed).toEqual(['recent', 'mid', 'lifecycle']);
    expect(res.lifecycleSource).toBe('history');
    const mass = res.attention.recent + res.attention.mid + res.attention.lifecycle;
    expect(mass).toBeCloseTo(1, 3);
    for (const it of res.items) {
      expect(it.semanticId).toHaveLength(3);
      const row = gems.sid.rowOf(it.itemId);
      expect(it.semanticId).toEqual(Array.from(gems.sid.codes.subarray(row * 3, row * 3 + 3)));
    }
    const short = await client.recommend({ userId: SHORT_USER, k: 4 });
    expect(short.coldStart).toBe(true);
    expect(short.items[0]!.semanticId).toHaveLength(3); // cold-start answers carry the checkpoint's Semantic IDs
    // The per-user indexer selection (opt-in) answers through the same path.
    expectValid(await client.recommend({ userId: h.userId, k: 6, options: { indexer_selection: 'user', indexer_top_k: '2' } }), 6, new Set(h.itemId));
  });

  it('batching: concurrent callers with different users each get their own answer, in batches > 1', async () => {
    const gems = GemsRecommender.load(runA);
    const { client, metrics } = await serve(gems, { 'serving.maxBatchSize': '8', 'serving.maxWaitMs': '30' });
    const alone = GemsRecommender.load(runA);
    const { client: single } = await serve(alone, { 'serving.maxBatchSize': '1' });
    const users = histories.map((h) => h.userId);
    const expected: GetRecommendationsResponse[] = [];
    for (const u of users) expected.push(await single.recommend({ userId: u, k: 5 }));
    const got = await Promise.all(users.map((u) => client.recommend({ userId: u, k: 5 })));
    got.forEach((r, i) => {
      expect(r.userId).toBe(users[i]);
      expect(r.items.map((x) => x.itemId)).toEqual(expected[i]!.items.map((x) => x.itemId));
      r.items.forEach((x, j) => expect(x.score).toBeCloseTo(expected[i]!.items[j]!.score, 3));
    });
    const text = await metrics.registry.metrics();
    const count = Number(/gems_batch_size_count (\d+)/.exec(text)![1]);
    const sum = Number(/gems_batch_size_sum (\d+)/.exec(text)![1]);
    expect(sum).toBe(users.length);
    expect(count).toBeLessThan(users.length); // at least one batch held more than one user
    expect(text).toMatch(/gems_grpc_requests_total\{method="GetRecommendations",status="OK"\} 12/);
  });

  it('reads lifecycle memories through the memory service (serving.memoryRemote) and counts hits and misses', async () => {
    const lc: GrpcServerHandle = await startLifecycleServer({ config, store: memories, host: '127.0.0.1', port: 0 });
    const remote = new LifecycleMemoryClient(lc.address);
    try {
      const metrics = new ServiceMetrics(false);
      const server = await startRecommenderServer({
        config: cfg({ 'serving.memoryRemote': lc.address }),
        history,
        memories: remote,
        model: new GemsRecommender((await import('../../src/model/recommend.js')).loadGems(runA), { useMemories: 'always' }),
        metrics,
        host: '127.0.0.1',
        port: 0,
      });
      started.push(server);
      const client = new RecommenderClient(server.handle.address);
      clients.push(client);
      const withMemory = await client.recommend({ userId: histories[0]!.userId, k: 3 });
      expect(withMemory.lifecycleSource).toBe('memory');
      expect(withMemory.streamsUsed).toContain('lifecycle');
      const without = await client.recommend({ userId: histories[9]!.userId, k: 3 });
      expect(without.lifecycleSource).toBe('history');
      const text = await metrics.registry.metrics();
      expect(text).toMatch(/gems_memory_store_hits_total 1/);
      expect(text).toMatch(/gems_memory_store_misses_total 1/);
    } finally {
      remote.close();
      await lc.shutdown(1000);
    }
  });
});

describe('overload, shutdown and hot-swap', () => {
  it('a full queue answers RESOURCE_EXHAUSTED at once, and the server keeps serving', async () => {
    const slow = new SlowModel(new PopularityModel(await popularityFromStore(history)), 150);
    const { client } = await serve(slow, { 'serving.maxBatchSize': '1', 'serving.maxQueue': '2', 'serving.maxWaitMs': '0' });
    const codes = await Promise.all(Array.from({ length: 12 }, (_, i) => codeOf(client.recommend({ userId: 1000 + (i % 12), k: 3 }))));
    const exhausted = codes.filter((c) => c === grpc.status.RESOURCE_EXHAUSTED).length;
    const ok = codes.filter((c) => c === grpc.status.OK).length;
    expect(exhausted).toBeGreaterThan(0);
    expect(ok).toBeGreaterThan(0);
    expect(ok + exhausted).toBe(12);
    expect(ok).toBeLessThanOrEqual(3); // admission limit = maxQueue + maxBatchSize
    expectValid(await client.recommend({ userId: 1001, k: 3 }), 3);
  });

  it('deadlines: a call whose deadline passes while queued gets DEADLINE_EXCEEDED', async () => {
    const slow = new SlowModel(new PopularityModel(await popularityFromStore(history)), 300);
    const { client } = await serve(slow, { 'serving.maxBatchSize': '1', 'serving.maxWaitMs': '0' });
    const first = client.recommend({ userId: 1000, k: 3 });
    const late = await codeOf(client.recommend({ userId: 1001, k: 3, deadlineMs: 100 }));
    expect(late).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(await codeOf(first)).toBe(grpc.status.OK);
  });

  it('shutdown drains in-flight calls, then refuses new ones', async () => {
    const slow = new SlowModel(new PopularityModel(await popularityFromStore(history)), 200);
    const { server, client } = await serve(slow, { 'serving.maxBatchSize': '2', 'serving.maxWaitMs': '0' });
    const inflight = histories.slice(0, 6).map((h) => client.recommend({ userId: h.userId, k: 4, options: { exclude_seen: 'false' } }));
    await new Promise((r) => setTimeout(r, 50));
    const down = await server.stop(10_000);
    expect(down.forced).toBe(false);
    const results = await Promise.all(inflight);
    results.forEach((r) => expectValid(r, 4));
    expect(slow.disposed).toBe(1);
    const after = await codeOf(client.recommend({ userId: 1000, k: 3, deadlineMs: 1000 }));
    expect(after).not.toBe(grpc.status.OK);
  });

  it('hot-swap under load drops nothing; replaced models are disposed after their last batch', async () => {
    const popularity = await popularityFromStore(history);
    const a = new SlowModel(GemsRecommender.load(runA), 5, 'A');
    const { server, client, metrics } = await serve(a, { 'serving.maxBatchSize': '8', 'serving.maxWaitMs': '5', 'serving.maxQueue': '256' });
    const versions = new Set<string>();
    let errors = 0;
    let calls = 0;
    let stop = false;
    const loops = Array.from({ length: 24 }, async (_, c) => {
      for (let i = 0; !stop; i++) {
        const userId = i % 3 === 0 ? UNKNOWN_USER + c : histories[(c + i) % histories.length]!.userId;
        try {
          const r = await client.recommend({ userId, k: 5, options: { exclude_seen: 'false' } });
          expect(r.items).toHaveLength(5);
          versions.add(r.modelVersion);
          calls++;
        } catch {
          errors++;
        }
      }
    });
    // Alternate between the two checkpoints and the popularity model while the clients run.
    const swapped: SlowModel[] = [a];
    const dirB = join(tmp, 'swap-b');
    cpSync(runB, dirB, { recursive: true });
    // Each version serves until calls have come back from it (not a fixed time: on a loaded machine a version may
    // otherwise be swapped out before its first batch).
    const servedBy = async (version: string) => {
      for (let waited = 0; !versions.has(version) && waited < 20_000; waited += 10) await new Promise((r) => setTimeout(r, 10));
      await new Promise((r) => setTimeout(r, 30));
    };
    await servedBy('A');
    for (let s = 0; s < 6; s++) {
      const inner = s % 3 === 0 ? GemsRecommender.load(dirB) : s % 3 === 1 ? new PopularityModel(popularity) : GemsRecommender.load(runA);
      const next = new SlowModel(inner, 5, `v${s}`);
      swapped.push(next);
      await server.service.reload(next);
      await servedBy(`v${s}`);
    }
    stop = true;
    await Promise.all(loops);
    expect(errors).toBe(0);
    expect(calls).toBeGreaterThan(50);
    expect([...versions].sort()).toEqual(['A', 'v0', 'v1', 'v2', 'v3', 'v4', 'v5']); // every version answered calls
    // Every replaced model was disposed exactly once; the serving one is not.
    swapped.slice(0, -1).forEach((m) => expect(m.disposed).toBe(1));
    expect(swapped.at(-1)!.disposed).toBe(0);
    const text = await metrics.registry.metrics();
    expect(text).toMatch(/gems_model_reloads_total\{outcome="ok"\} 6/);
    expect(text).not.toMatch(/status="(INTERNAL|UNAVAILABLE|CANCELLED)"/);
  });

  it('serves the configured checkpoint and hot-swaps when a new one is renamed into place (watcher)', async () => {
    const served = join(tmp, 'watched', 'best');
    cpSync(runA, served, { recursive: true });
    const c = cfg({ 'serving.checkpoint': served, 'serving.reloadPollMs': '50' });
    const server = await startRecommenderServer({ config: c, history, memories, host: '127.0.0.1', port: 0 });
    started.push(server);
    const client = new RecommenderClient(server.handle.address);
    clients.push(client);
    expect(server.service.modelKind).toBe('gems+popularity');
    const before = await client.recommend({ userId: histories[2]!.userId, k: 3 });
    expect(before.strategy).toBe('gems');
    // As saveCheckpoint does: write elsewhere, then rename into place.
    const staged = join(tmp, 'watched', 'best.tmp');
    cpSync(runB, staged, { recursive: true });
    rmSync(served, { recursive: true });
    renameSync(staged, served);
    const t0 = Date.now();
    while (server.service.modelVersion === before.modelVersion && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 25));
    const after = await client.recommend({ userId: histories[2]!.userId, k: 3 });
    expect(after.modelVersion).not.toBe(before.modelVersion);
    expect(after.strategy).toBe('gems');
  });

  it('/metrics over HTTP exposes request counts, latency, batch sizes, queue depth and memory hits/misses', async () => {
    const metrics = new ServiceMetrics();
    const { client } = await serve(new PopularityModel(await popularityFromStore(history)), {}, metrics);
    await client.recommend({ userId: 1001, k: 2 });
    await codeOf(client.recommend({ userId: 1000, k: 0 }));
    const http = await metrics.listen('127.0.0.1', 0);
    try {
      const text = await (await fetch(`http://127.0.0.1:${http.port}/metrics`)).text();
      expect(text).toMatch(/gems_grpc_requests_total\{method="GetRecommendations",status="OK"\} 1/);
      expect(text).toMatch(/gems_grpc_requests_total\{method="GetRecommendations",status="INVALID_ARGUMENT"\} 1/);
      expect(text).toMatch(/gems_grpc_request_duration_seconds_bucket\{le="[^"]+",method="GetRecommendations",status="OK"\}/);
      expect(text).toMatch(/gems_batch_size_count 1/);
      expect(text).toMatch(/gems_queue_depth 0/);
      expect(text).toMatch(/gems_memory_store_hits_total 1/);
      expect(text).toMatch(/gems_memory_store_misses_total 0/);
      expect(text).toMatch(/gems_recommendations_total\{strategy="popular_in_interests"\} 1/);
    } finally {
      http.server.close();
    }
  });
});

describe('gems serve (colocated)', () => {
  it('starts both services, answers GetRecommendations, hot-swaps on SIGHUP, and exits 0 after draining on SIGTERM', async () => {
    const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
    const dataDir = join(tmp, 'serve-cli');
    // The served DuckDB file must not be open read-write elsewhere: fill it here and close it first.
    const c = loadConfig({ flags: { dataDir, 'history.userBuckets': '4' }, env: {} });
    const hs = await openHistoryStore(c);
    await hs.append(columnsOf(histories.slice(0, 4)));
    await hs.upsertItems(ITEM_IDS.map((id) => ({ itemId: id, authorId: 100 + (id % 3), tags: [id % 5, 7], title: `Item ${id}` })));
    await hs.close();
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', join(root, 'src', 'cli', 'main.ts'), 'serve', '--memory-port', '0', '--recommender-port', '0', '--data-dir', dataDir, '--set', 'serving.metricsPort=0', '--set', 'history.userBuckets=4'],
      { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, GEMS_LOG_FORMAT: 'json' } },
    );
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += String(d)));
    const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
    try {
      const lines: Record<string, string>[] = [];
      const rl = createInterface({ input: child.stdout! });
      await new Promise<void>((res, rej) => {
        rl.on('line', (l) => {
          lines.push(JSON.parse(l) as Record<string, string>);
          if (lines.length === 2) res();
        });
        void exited.then((code) => rej(new Error(`serve exited early (${code}): ${stderr}`)));
      });
      expect(lines.map((l) => l['service'])).toEqual(['gems.v1.LifecycleMemoryService', 'gems.v1.RecommenderService']);
      expect(lines[1]!['model']).toBe('popularity');
      const client = new RecommenderClient(lines[1]!['address']!);
      try {
        const res = await client.recommend({ userId: histories[1]!.userId, k: 4 });
        expectValid(res, 4, new Set(histories[1]!.itemId));
        expect(res.strategy).toBe('popular_in_interests');
        child.kill('SIGHUP');
        await new Promise((r) => setTimeout(r, 1500));
        expect(stderr).toMatch(/model swapped/);
        expectValid(await client.recommend({ userId: UNKNOWN_USER, k: 4 }), 4);
      } finally {
        client.close();
      }
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(stderr).toMatch(/serve stopped/);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  }, 60_000);
});
