// The recompression job against real parts: the Parquet/DuckDB history store, the lmdb memory store, real child
// processes killed with SIGKILL, real lock files.
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/compute/backend.js';
import { loadConfig, type GemsConfig } from '../../src/config/config.js';
import { cutStreams, type History } from '../../src/data/events.js';
import { openHistoryStore } from '../../src/data/parquetHistoryStore.js';
import { Compressor, initCompressorWeights, loadCompressorWeights, saveCompressor } from '../../src/lifecycle/compressor.js';
import { openMemoryStore } from '../../src/lifecycle/openMemoryStore.js';
import type { LifecycleMemory } from '../../src/lifecycle/memory.js';
import { MEMORY_FORMAT_VERSION } from '../../src/lifecycle/memoryFormat.js';
import type { Logger } from '../../src/util/log.js';
import { hash32, Rng } from '../../src/util/random.js';
import { JobLock, LockHeldError } from '../../jobs/jobLock.js';
import { compressOnce, jobDir, type RunSummary } from '../../jobs/nightly.js';
import { startScheduler } from '../../jobs/scheduler.js';
import { itemVocabulary, relDiff, syntheticHistory, toColumns } from './_fixtures.js';

const ITEMS = 400;
const dirs: string[] = [];

function collectingLog(into: Record<string, unknown>[]): Logger {
  const emit = (level: string) => (msg: string, fields?: Record<string, unknown>) => void into.push({ level, msg, ...fields });
  const l: Logger = { debug: emit('debug'), info: emit('info'), warn: emit('warn'), error: emit('error'), child: () => l };
  return l;
}

const usersIn = (lines: Record<string, unknown>[], msg: string): number[] =>
  lines.filter((l) => l['msg'] === msg).flatMap((l) => l['users'] as number[]);

/** A data dir with `count` users (ids 10, 17, 24, …) of 30 … maxLen events, and an untrained compressor. */
async function makeDataDir(count: number, maxLen: number, seed: number): Promise<{ dir: string; config: GemsConfig; histories: History[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'gems-nightly-'));
  dirs.push(dir);
  writeFileSync(join(dir, 'gems.config.json'), JSON.stringify({ streams: { tRecent: 16, tMid: 64 }, lifecycle: { chunkSize: 512, batchSize: 3 } }));
  const config = loadConfig({ flags: { dataDir: dir }, env: {} });
  const rng = new Rng(seed);
  const histories = Array.from({ length: count }, (_, i) => syntheticHistory(10 + 7 * i, i === 0 ? 30 : 64 + rng.int(maxLen - 64), ITEMS, seed * 1000 + i));
  const store = await openHistoryStore(config);
  await store.append(toColumns(histories));
  await store.close();
  saveCompressor(config, initCompressorWeights(config, itemVocabulary(ITEMS), seed));
  return { dir, config, histories };
}

async function readMemories(config: GemsConfig, ids: number[]): Promise<(LifecycleMemory | null)[]> {
  const m = await openMemoryStore(config);
  try {
    return await m.getMany(ids);
  } finally {
    await m.close();
  }
}

async function runRows(config: GemsConfig, sql: string): Promise<Record<string, unknown>[]> {
  const store = await openHistoryStore(config);
  try {
    return await store.db.rows(sql);
  } finally {
    await store.close();
  }
}

/** Appends `extra` events after each given user's history (later times), as tomorrow's ingest would. */
async function appendEvents(config: GemsConfig, histories: History[], extra: number, seed: number): Promise<History[]> {
  const more = histories.map((h, i) => {
    const add = syntheticHistory(h.userId, extra, ITEMS, seed + i, h.ts[h.length - 1]! + 1000);
    for (let j = 0; j < add.length; j++) add.seq[j] = h.length + j;
    return add;
  });
  const store = await openHistoryStore(config);
  await store.append(toColumns(more));
  await store.close();
  return more;
}

async function expectedMemory(config: GemsConfig, userId: number): Promise<Float32Array> {
  const store = await openHistoryStore(config);
  const h = await store.userHistory(userId);
  await store.close();
  const c = new Compressor(loadCompressorWeights(config).weights, 512);
  const out = c.compress(cutStreams(h, config.streams.tRecent, config.streams.tMid).lifecycle).vectors;
  c.dispose();
  return out;
}

const cli = (dir: string, extra: string[] = []) =>
  spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'compress', '--data-dir', dir, ...extra], {
    cwd: join(import.meta.dirname, '..', '..'),
    env: { ...process.env, GEMS_LOG_FORMAT: 'json' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
const collect = (child: ReturnType<typeof cli>, onLine?: (l: Record<string, unknown>) => void) =>
  new Promise<{ lines: Record<string, unknown>[]; code: number | null; signal: string | null }>((resolve) => {
    const lines: Record<string, unknown>[] = [];
    let buf = '';
    child.stderr!.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          const obj = JSON.parse(line) as Record<string, unknown>;
          lines.push(obj);
          onLine?.(obj);
        } catch {
          /* not a log line */
        }
      }
    });
    child.on('exit', (code, signal) => resolve({ lines, code, signal }));
  });

describe('nightly recompression job', () => {
  beforeAll(async () => {
    await initBackend();
  });
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('compresses everyone once, then folds in only new lifecycle events (equal to a full recompression)', async () => {
    const { config, histories } = await makeDataDir(12, 1500, 1);
    const ids = histories.map((h) => h.userId);
    const s1 = await compressOnce(config, { log: collectingLog([]) });
    // User 0 has 30 events (≤ tMid = 64): no lifecycle segment, so no memory; counted as skipped.
    expect(s1).toMatchObject({ status: 'completed', users: 11, usersFull: 11, usersSkipped: 1, failures: 0 });
    expect(s1.events).toBe(histories.reduce((a, h) => a + Math.max(0, h.length - 64), 0));
    const first = await readMemories(config, ids);
    expect(first.slice(1).every((m) => m !== null && m.state !== undefined)).toBe(true);
    expect(first[0]).toBeNull(); // no lifecycle yet: nothing written
    expect(relDiff(first[3]!.vectors, await expectedMemory(config, ids[3]!)).normRel).toBeLessThan(1e-6);

    const s2 = await compressOnce(config, { log: collectingLog([]) });
    // Nothing changed: nothing to do — and the user without a lifecycle is not picked again.
    expect(s2).toMatchObject({ users: 0, events: 0, usersSkipped: 0 });

    // New events for 4 users (including the one without lifecycle so far) push events across T_mid.
    const grown = [histories[0]!, histories[1]!, histories[5]!, histories[9]!];
    await appendEvents(config, grown, 50, 77);
    const s3 = await compressOnce(config, { log: collectingLog([]) });
    // User 0 now has a lifecycle (and no memory): compressed in full; the other 3 incrementally.
    expect(s3).toMatchObject({ status: 'completed', users: 4, usersIncremental: 3, usersFull: 1, usersSkipped: 0 });
    expect(s3.events).toBe(50 * 3 + 16); // user 0 had 30 events: 80 now, 16 of them past T_mid
    const after = await readMemories(config, ids);
    for (const h of grown) {
      const i = ids.indexOf(h.userId);
      const d = relDiff(after[i]!.vectors, await expectedMemory(config, h.userId));
      expect(d.normRel).toBeLessThanOrEqual(1e-4);
      expect(d.elemRel).toBeLessThanOrEqual(1e-4);
      expect(after[i]!.header.eventsCovered).toBe(h.length + 50 - 64);
    }
    expect(after[2]!.header.createdAt).toBe(first[2]!.header.createdAt); // untouched

    // --full recompresses everyone; a new compressor version does too, without --full.
    expect(await compressOnce(config, { full: true, log: collectingLog([]) })).toMatchObject({ users: 12, usersFull: 12 });
    const v2 = saveCompressor(config, initCompressorWeights(config, itemVocabulary(ITEMS), 999));
    const s5 = await compressOnce(config, { log: collectingLog([]) });
    expect(s5).toMatchObject({ users: 12, usersFull: 12, compressorVersion: v2 });
    const runs = await runRows(config, `SELECT status, users, users_incremental, users_skipped, events, events_per_s FROM compression_runs ORDER BY started_at`);
    expect(runs.map((r) => r['status'])).toEqual(['completed', 'completed', 'completed', 'completed', 'completed']);
    expect(runs.map((r) => r['users'])).toEqual([11, 0, 4, 12, 12]);
    // Users too short for a lifecycle segment are recorded as skipped, as the summaries say (s1: one).
    expect(runs.map((r) => r['users_skipped'])).toEqual([s1.usersSkipped, s2.usersSkipped, s3.usersSkipped, 0, 0]);
  });

  it('an incremental user is brought up to date from a tail read, exactly; a back-filled older event falls back to a full recompression', async () => {
    const { config, histories } = await makeDataDir(4, 600, 6);
    // d: a source without timestamps (ts NaN, ordered by seq; its watermark is a seq).
    const d = syntheticHistory(9000, 300, ITEMS, 64);
    d.ts.fill(NaN);
    const first = await openHistoryStore(config);
    await first.append(toColumns([d]));
    await first.close();
    histories.push(d);
    const ids = histories.map((h) => h.userId);
    await compressOnce(config, { log: collectingLog([]) });
    const [a, b, c] = [histories[1]!, histories[2]!, histories[3]!];
    // a: an event older than all its others arrives late (shifts the covered prefix); b: 100 new events, one of them
    // unusable once it crosses T_mid; c: 100 ordinary new events.
    const old = syntheticHistory(a.userId, 1, ITEMS, 61, a.ts[0]! - 60_000);
    old.seq[0] = -1;
    const moreB = syntheticHistory(b.userId, 100, ITEMS, 62, b.ts[b.length - 1]! + 1000);
    const moreC = syntheticHistory(c.userId, 100, ITEMS, 63, c.ts[c.length - 1]! + 1000);
    moreB.seq.forEach((_, j) => (moreB.seq[j] = b.length + j));
    moreC.seq.forEach((_, j) => (moreC.seq[j] = c.length + j));
    moreB.durationMs[10] = Infinity;
    const moreD = syntheticHistory(d.userId, 100, ITEMS, 65);
    moreD.ts.fill(NaN);
    moreD.seq.forEach((_, j) => (moreD.seq[j] = d.length + j));
    const store = await openHistoryStore(config);
    await store.append(toColumns([old, moreB, moreC, moreD]));
    await store.close();
    const s = await compressOnce(config, { log: collectingLog([]) });
    expect(s).toMatchObject({ users: 3, usersFull: 1, usersIncremental: 2, failures: 1 });
    const f = await runRows(config, `SELECT user_id, reason FROM compression_failures`);
    expect(f).toEqual([{ user_id: b.userId, reason: expect.stringMatching(new RegExp(`^event ${b.length + 10} of user ${b.userId} has a non-finite feature`)) as unknown }]);
    const mem = await readMemories(config, ids);
    for (const [h, extra] of [[a, 1], [c, 100], [d, 100]] as const) {
      const m = mem[ids.indexOf(h.userId)]!;
      expect(m.header.eventsCovered).toBe(h.length + extra - 64);
      expect(relDiff(m.vectors, await expectedMemory(config, h.userId)).normRel).toBeLessThanOrEqual(1e-4);
    }
  });

  it('writes no memory for a user without lifecycle events, removes an empty one left by an older build, and does not pick such users again', async () => {
    const { config, histories } = await makeDataDir(4, 300, 8);
    const empty = histories[0]!.userId; // 30 events ≤ tMid
    const s1 = await compressOnce(config, { log: collectingLog([]) });
    expect(s1).toMatchObject({ users: 3, usersSkipped: 1 });
    expect((await readMemories(config, [empty]))[0]).toBeNull();
    // An older build wrote an empty memory (eventsCovered 0) for such users: the next run removes it, once.
    const m = await openMemoryStore(config);
    const version = (await m.getHeader(histories[1]!.userId))!.compressorVersion;
    await m.putMany([{ userId: empty, header: { formatVersion: MEMORY_FORMAT_VERSION, compressorVersion: version, slots: config.lifecycle.slots, dim: config.lifecycle.dim, dtype: 'float32', watermark: 0, eventsCovered: 0, createdAt: 1 }, vectors: new Float32Array(config.lifecycle.slots * config.lifecycle.dim), state: undefined }]);
    await m.close();
    expect(await compressOnce(config, { log: collectingLog([]) })).toMatchObject({ users: 0, usersSkipped: 1 });
    expect((await readMemories(config, [empty]))[0]).toBeNull();
    expect(await compressOnce(config, { log: collectingLog([]) })).toMatchObject({ users: 0, usersSkipped: 0 });
    // --full considers every user again: still nothing written for it.
    expect(await compressOnce(config, { full: true, log: collectingLog([]) })).toMatchObject({ users: 3, usersSkipped: 1 });
    expect((await readMemories(config, [empty]))[0]).toBeNull();
  });

  it('records a user that fails to compress and goes on', async () => {
    const { config, histories } = await makeDataDir(6, 400, 2);
    const bad = syntheticHistory(5000, 100, ITEMS, 5);
    bad.durationMs[10] = Infinity; // an event in the lifecycle segment with an unusable feature
    const store = await openHistoryStore(config);
    await store.append(toColumns([bad]));
    await store.close();
    const s = await compressOnce(config, { log: collectingLog([]) });
    // histories[0] has no lifecycle segment (30 events): skipped, not written.
    expect(s).toMatchObject({ status: 'completed', users: histories.length - 1, usersSkipped: 1, failures: 1 });
    const f = await runRows(config, `SELECT user_id, reason FROM compression_failures`);
    expect(f).toHaveLength(1);
    expect(f[0]!['user_id']).toBe(5000);
    expect(String(f[0]!['reason'])).toMatch(/event 10 of user 5000 has a non-finite feature/);
    expect((await readMemories(config, [5000]))[0]).toBeNull();
  });

  it('never runs two jobs on one store, takes over a crashed holder’s lock, and splits shards without overlap', async () => {
    const { config, histories } = await makeDataDir(10, 300, 3);
    const held = JobLock.acquire(jobDir(config), 'compress-0of1.lock', { what: 'test holder' });
    await expect(compressOnce(config, { log: collectingLog([]) })).rejects.toBeInstanceOf(LockHeldError);
    held.release();

    // Holder crashed: a lock file naming a dead pid on this host (fresh heartbeat) is taken over.
    const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
    const lockFile = join(jobDir(config), 'compress-0of1.lock');
    writeFileSync(lockFile, JSON.stringify({ pid: dead, hostname: hostname(), token: 'x', startedAt: Date.now(), heartbeat: Date.now(), what: 'crashed' }));
    // A live shard of another shard count would overlap: refused while live.
    const other = JobLock.acquire(jobDir(config), 'compress-0of2.lock', { what: 'other count' });
    await expect(compressOnce(config, { shard: { index: 0, count: 3 }, log: collectingLog([]) })).rejects.toThrow(/compress-0of2\.lock is held/);
    other.release();

    const lines: Record<string, unknown>[] = [];
    const a = await compressOnce(config, { shard: { index: 0, count: 2 }, log: collectingLog(lines) });
    const aUsers = usersIn(lines, 'batch committed');
    lines.length = 0;
    const b = await compressOnce(config, { shard: { index: 1, count: 2 }, log: collectingLog(lines) });
    const bUsers = usersIn(lines, 'batch committed');
    expect(a.users + b.users).toBe(histories.length - 1); // histories[0]: no lifecycle, skipped by its shard
    expect(a.usersSkipped + b.usersSkipped).toBe(1);
    expect(new Set([...aUsers, ...bUsers]).size).toBe(histories.length - 1);
    expect(aUsers.every((u) => hash32(u) % 2 === 0)).toBe(true);
    expect(bUsers.every((u) => hash32(u) % 2 === 1)).toBe(true);
  });

  it('resumes after SIGKILL: every user written exactly once, memories identical to an uninterrupted run', async () => {
    const { dir, config, histories } = await makeDataDir(36, 4000, 4);
    const twin = mkdtempSync(join(tmpdir(), 'gems-nightly-twin-'));
    dirs.push(twin);
    cpSync(dir, twin, { recursive: true });
    const twinConfig = loadConfig({ flags: { dataDir: twin }, env: {} });
    const ids = histories.map((h) => h.userId);
    const written = ids.slice(1); // histories[0] has no lifecycle segment: never written

    const first = cli(dir);
    const killed = await collect(first, (l) => {
      if (l['msg'] === 'batch committed' && !first.killed) first.kill('SIGKILL');
    });
    expect(killed.signal).toBe('SIGKILL');
    const firstUsers = usersIn(killed.lines, 'batch committed');
    expect(firstUsers.length).toBeGreaterThan(0);
    expect(firstUsers.length).toBeLessThan(written.length);
    expect(killed.lines.some((l) => l['msg'] === 'compression run summary')).toBe(false);

    const second = await collect(cli(dir));
    expect(second.code).toBe(0);
    expect(second.lines.some((l) => l['msg'] === 'resuming interrupted run')).toBe(true);
    const secondUsers = [...usersIn(second.lines, 'batch recovered'), ...usersIn(second.lines, 'batch committed')];
    const all = [...firstUsers, ...secondUsers].sort((x, y) => x - y);
    expect(all).toEqual([...written].sort((x, y) => x - y)); // each user exactly once

    const runs = await runRows(config, `SELECT status, users, users_full, resumes, events FROM compression_runs`);
    expect(runs).toHaveLength(1);
    expect(runs[0]).toMatchObject({ status: 'completed', users: written.length, users_full: written.length, resumes: 1 });

    await compressOnce(twinConfig, { log: collectingLog([]) });
    const [got, want] = [await readMemories(config, ids), await readMemories(twinConfig, ids)];
    expect([got[0], want[0]]).toEqual([null, null]);
    for (let i = 1; i < ids.length; i++) {
      expect(got[i]!.header.eventsCovered).toBe(want[i]!.header.eventsCovered);
      expect(got[i]!.header.watermark).toBe(want[i]!.header.watermark);
      expect(Buffer.from(got[i]!.vectors.buffer).equals(Buffer.from(want[i]!.vectors.buffer))).toBe(true);
      expect(Buffer.from(got[i]!.state!.buffer).equals(Buffer.from(want[i]!.state!.buffer))).toBe(true);
    }
  });

  it('schedules runs with node-cron in the configured time zone, never overlapping', async () => {
    const base = loadConfig({ flags: { dataDir: mkdtempSync(join(tmpdir(), 'gems-sched-')) }, env: {} });
    dirs.push(base.dataDir);
    expect(() => startScheduler({ ...base, lifecycle: { ...base.lifecycle, cron: 'every night' } })).toThrow(/lifecycle\.cron/);
    expect(() => startScheduler({ ...base, lifecycle: { ...base.lifecycle, timezone: 'Mars/Olympus' } })).toThrow(/lifecycle\.timezone/);
    const nightly = startScheduler(base, { log: collectingLog([]), job: async () => ({}) as RunSummary });
    const next = nightly.nextRun()!;
    expect([next.getUTCHours(), next.getUTCMinutes()]).toEqual([2, 0]); // '0 2 * * *' UTC
    await nightly.stop();

    let running = 0;
    let maxRunning = 0;
    let runs = 0;
    const every = startScheduler(
      { ...base, lifecycle: { ...base.lifecycle, cron: '* * * * * *', timezone: 'Europe/Paris' } },
      {
        log: collectingLog([]),
        job: async () => {
          running++;
          runs++;
          maxRunning = Math.max(maxRunning, running);
          await new Promise((r) => setTimeout(r, 1500)); // longer than the 1 s period
          running--;
          return {} as RunSummary;
        },
      },
    );
    await new Promise((r) => setTimeout(r, 3200));
    await every.stop();
    expect(runs).toBeGreaterThanOrEqual(1);
    expect(runs).toBeLessThanOrEqual(2);
    expect(maxRunning).toBe(1);
  });

  it('stops at a batch boundary on SIGTERM (status interrupted) and the next run finishes the rest', async () => {
    const { dir, config, histories } = await makeDataDir(30, 4000, 5);
    const first = cli(dir);
    const stopped = await collect(first, (l) => {
      if (l['msg'] === 'batch committed' && !first.killed) first.kill('SIGTERM');
    });
    expect(stopped.code).toBe(3);
    expect(stopped.lines.some((l) => l['msg'] === 'compression run interrupted; the next run resumes it')).toBe(true);
    expect((await runRows(config, `SELECT status FROM compression_runs`))[0]!['status']).toBe('interrupted');
    const second = await collect(cli(dir));
    expect(second.code).toBe(0);
    const all = [...usersIn(stopped.lines, 'batch committed'), ...usersIn(second.lines, 'batch committed')].sort((a, b) => a - b);
    expect(all).toEqual(histories.slice(1).map((h) => h.userId).sort((a, b) => a - b)); // histories[0]: no lifecycle
    expect(await runRows(config, `SELECT status, users, resumes FROM compression_runs`)).toEqual([{ status: 'completed', users: 29, resumes: 1 }]);
  });
});
