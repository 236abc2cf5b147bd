// The GEMs model on the compressor's lifecycle memories, end to end with real parts (generated data in the
// Parquet/DuckDB history store, tokenizer, QLA compressor, `gems compress` into lmdb, `gems train`):
//  - training with --lifecycle-source memory records the source and the compressor version in the checkpoint;
//  - the summary training computes for a user's full lifecycle equals the memory `gems compress` stored (≤ 1e-4);
//  - the served model reads the stored memory (lifecycle_source memory), and computes it from the events when the
//    user has none or it was made by another compressor version;
//  - `gems eval --max-users N` on the generated set evaluates the first N users that have truth targets;
//  - `--user-ids FROM..TO` splits one store's users: `gems train` trains on that range only, `gems eval` evaluates
//    the targets of that range only.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../src/cli/main.js';
import { initBackend } from '../../src/compute/backend.js';
import { loadConfig, type GemsConfig } from '../../src/config/config.js';
import { cutStreams, sliceHistory, type History } from '../../src/data/events.js';
import { openHistoryStore } from '../../src/data/parquetHistoryStore.js';
import { latestCompressorVersion } from '../../src/lifecycle/compressor.js';
import type { LifecycleMemory } from '../../src/lifecycle/memory.js';
import { MemorySummarizer } from '../../src/lifecycle/memorySummarizer.js';
import { openMemoryStore } from '../../src/lifecycle/openMemoryStore.js';
import { GemsRecommender } from '../../src/serving/gemsRecommender.js';
import type { RecommendInput } from '../../src/serving/recommender.js';
import { checkpointLifecycleSummarizer, parseLifecycleSource } from '../../src/train/lifecycleSource.js';
import { generatedPaths } from '../../src/data/generator/write.js';
import { readCheckpoint } from '../../src/train/checkpoint.js';
import { loadHistories } from '../../src/train/gemsData.js';
import { dataFingerprintOf } from '../../src/train/gemsTrainer.js';
import { setLogSink } from '../../src/util/log.js';

const T_RECENT = 8;
const T_MID = 32;
let root: string;
let config: GemsConfig;
let histories: History[];
let memories: (LifecycleMemory | null)[];
const logs: string[] = [];
let prevSink: (l: string) => void;

function relDiff(a: Float32Array, b: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i]! - b[i]!));
    den = Math.max(den, Math.abs(b[i]!));
  }
  return num / Math.max(den, 1e-12);
}

async function cli(...argv: string[]): Promise<string[]> {
  const out: string[] = [];
  const code = await runCli([...argv, '--data-dir', root, '--set', `streams.tRecent=${T_RECENT}`, '--set', `streams.tMid=${T_MID}`, '--set', 'lifecycle.slots=8', '--set', 'lifecycle.dim=16'], (l) => out.push(l));
  if (code !== 0) throw new Error(`gems ${argv.join(' ')} exited ${code}:\n${logs.filter((l) => l.includes('error')).join('\n')}`);
  return out;
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'gems-lifesrc-'));
  prevSink = setLogSink((l) => logs.push(l));
  await initBackend();
  await cli('generate', 'lifelong', '--users', '16', '--scale', '0.01', '--seed', '7');
  await cli('tokenize', '--set', 'tokenizer.iterations=3', '--set', 'tokenizer.codebookSizes=8,8,8');
  await cli('train-compressor', '--steps', '3', '--eval-users', '2');
  await cli('compress');
  await cli('train', '--model', 'gems', '--run', 'mem', '--preset', 'tiny', '--epochs', '1', '--epochs2', '1', '--epochs3', '1', '--targets-per-user', '2');
  config = loadConfig({ flags: { dataDir: root, 'streams.tRecent': String(T_RECENT), 'streams.tMid': String(T_MID), 'lifecycle.slots': '8', 'lifecycle.dim': '16' }, env: {} });
  const store = await openHistoryStore(config, { readOnly: true });
  histories = [];
  for await (const h of store.scanHistories()) histories.push(h);
  await store.close();
  const ms = await openMemoryStore(config);
  memories = await ms.getMany(histories.map((h) => h.userId));
  await ms.close();
}, 120_000);

afterAll(() => {
  setLogSink(prevSink);
  rmSync(root, { recursive: true, force: true });
});

describe('GEMs on lifecycle memories', () => {
  it('defaults to the memory source once a compressor exists and records it with the compressor version', () => {
    expect(parseLifecycleSource(undefined, config)).toBe('memory');
    expect(() => parseLifecycleSource('nope', config)).toThrow(/--lifecycle-source/);
    const meta = JSON.parse(readFileSync(join(root, 'checkpoints', 'mem', 'best', 'meta.json'), 'utf8'));
    expect(meta.train.lifecycleSource).toBe('memory');
    expect(meta.train.compressorVersion).toBe(latestCompressorVersion(config));
    // The memory source pins the model's streams to the boundary the memories are cut at, and M × d to theirs.
    expect(meta.modelConfig.tMid).toBe(T_MID);
    expect(meta.modelConfig.lifecycle).toMatchObject({ slots: 8, inDim: 16 });
  });

  it("computes, for a user's full lifecycle, the memory `gems compress` stored (≤ 1e-4 relative)", () => {
    const summarizer = checkpointLifecycleSummarizer(join(root, 'checkpoints', 'mem', 'best'))!;
    expect(summarizer).toBeInstanceOf(MemorySummarizer);
    // A small stride exercises the per-user snapshots (prefix = snapshot + the events after it).
    const strided = new MemorySummarizer(summarizer.compressor, { stride: 5 });
    let compared = 0;
    histories.forEach((h, i) => {
      const life = cutStreams(h, T_RECENT, T_MID).lifecycle;
      const m = memories[i];
      if (life.length === 0) {
        expect(m).toBeNull();
        return;
      }
      expect(m, `user ${h.userId} has a memory`).not.toBeNull();
      expect(m!.header.eventsCovered).toBe(life.length);
      for (const s of [summarizer, strided]) {
        // Ask for an earlier prefix first so the full one comes from a cached snapshot.
        if (life.length > 7) s.summarize(sliceHistory(life, 0, 7));
        const got = s.summarize(life);
        expect(got.valid.every((v) => v === 1)).toBe(true);
        expect(relDiff(got.vectors, m!.vectors), `user ${h.userId}`).toBeLessThanOrEqual(1e-4);
      }
      compared++;
    });
    expect(compared).toBeGreaterThan(5);
    expect(strided.eventsFolded).toBeGreaterThan(0);
    summarizer.dispose();
  });

  it('serves the stored memory (lifecycle_source memory) and computes it from the events when missing or stale', async () => {
    const gems = GemsRecommender.load(join(root, 'checkpoints', 'mem', 'best'));
    try {
      expect(gems.useMemories).toBe(true);
      const i = histories.findIndex((h, j) => memories[j] && cutStreams(h, T_RECENT, T_MID).lifecycle.length > 0);
      const h = histories[i]!;
      const m = memories[i]!;
      const input = (memory: LifecycleMemory | null): RecommendInput => ({ userId: h.userId, k: 5, streams: cutStreams(h, T_RECENT, T_MID), memory, options: { excludeSeen: false } });
      const stale: LifecycleMemory = { ...m, header: { ...m.header, compressorVersion: '0123456789abcdef' } };
      const [withMemory, without, withStale] = (await gems.recommendBatch([input(m), input(null), input(stale)])) as Exclude<Awaited<ReturnType<typeof gems.recommendBatch>>[number], Error>[];
      expect(withMemory!.lifecycleSource).toBe('memory');
      expect(without!.lifecycleSource).toBe('history');
      expect(withStale!.lifecycleSource).toBe('history');
      expect(gems.lifecycleCounts).toEqual({ memory: 1, computedMissing: 1, computedVersionMismatch: 1, computedShapeMismatch: 0 });
      // The stored memory is what the events give: the same answer either way.
      expect(Array.from(without!.items)).toEqual(Array.from(withMemory!.items));
      expect(logs.some((l) => l.includes('lifecycle memory not usable'))).toBe(true);
    } finally {
      gems.dispose();
    }
  });

  it('gems eval --max-users N evaluates the first N users with truth targets, not the first N of the store', async () => {
    const truthPath = generatedPaths(root).truth;
    const original = readFileSync(truthPath, 'utf8');
    try {
      // As in a held-out data dir whose store also holds the training users: the lowest ids have no targets.
      const lines = original.split('\n').filter((l) => l.trim());
      const userOf = (l: string) => (JSON.parse(l) as { user_id: number }).user_id;
      const ids = [...new Set(lines.map(userOf))].sort((a, b) => a - b);
      const kept = lines.filter((l) => userOf(l) >= ids[4]!);
      writeFileSync(truthPath, kept.join('\n') + '\n');
      const want = kept.filter((l) => ids.slice(4, 7).includes(userOf(l))).length;
      const out = await cli('eval', '--run', 'mem', '--max-users', '3', '--name', 'max3');
      const overall = out.map((l) => JSON.parse(l) as { model?: string; targets?: number }).find((r) => r.model?.endsWith('all targets'));
      expect(want).toBeGreaterThan(0);
      expect(overall?.targets).toBe(want);
    } finally {
      writeFileSync(truthPath, original);
    }
  }, 60_000);

  it('--user-ids FROM..TO: gems train trains on those users only and gems eval evaluates only their targets', async () => {
    // Users 1..16 in the store: train on 1..10, evaluate 11..16 (the held-out split of one store).
    await cli('train', '--model', 'gems', '--run', 'range', '--preset', 'tiny', '--epochs', '1', '--epochs2', '0', '--epochs3', '0', '--targets-per-user', '1', '--user-ids', '1..10');
    const trained = await loadHistories(config, { userRange: { from: 1, to: 10 } });
    expect(trained.map((h) => h.userId)).toEqual(histories.filter((h) => h.userId <= 10).map((h) => h.userId));
    const meta = readCheckpoint(join(root, 'checkpoints', 'range', 'best')).meta;
    expect(meta.dataFingerprint).toBe(dataFingerprintOf(trained));
    expect(meta.dataFingerprint).not.toBe(dataFingerprintOf(histories));

    const truth = readFileSync(generatedPaths(root).truth, 'utf8').split('\n').filter((l) => l.trim());
    const want = truth.filter((l) => (JSON.parse(l) as { user_id: number }).user_id >= 11).length;
    const out = await cli('eval', '--run', 'range', '--user-ids', '11..', '--name', 'held-out');
    const overall = out.map((l) => JSON.parse(l) as { model?: string; targets?: number }).find((r) => r.model?.endsWith('all targets'));
    expect(want).toBeGreaterThan(0);
    expect(want).toBeLessThan(truth.length);
    expect(overall?.targets).toBe(want);
    // A range without targets, or a malformed one, is a usage error naming the flag.
    await expect(cli('eval', '--run', 'range', '--user-ids', '900..999')).rejects.toThrow(/exited 2/);
    expect(logs.some((l) => l.includes('no truth targets for users 900..999'))).toBe(true);
    await expect(cli('eval', '--run', 'range', '--user-ids', '11-16')).rejects.toThrow(/exited 2/);
    expect(logs.some((l) => l.includes('--user-ids must be FROM..TO'))).toBe(true);
  }, 120_000);
});
