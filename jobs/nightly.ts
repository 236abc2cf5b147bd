// The lifecycle recompression job (DESIGN §3; run nightly by jobs/scheduler.ts, once by `gems compress`).
//
// For each user of its shard whose lifecycle segment changed since the memory's watermark (or whose memory was made
// by another compressor version, or who has none), it folds the lifecycle events into the user's QLA state and
// writes the memories in batches. A user with a usable memory costs in proportion to its new events: only the tail
// of its history from the memory's last covered event on is read (the events that crossed the T_mid boundary since
// the last run, plus the last T_mid), and only the crossed events are folded in. Users that need their whole
// lifecycle (no memory, another compressor version, --full, or a back-filled older event) come from the store's
// streaming scan (or one full read when the tail shows a back-fill).
//
// Crash safety: a checkpoint file records the last user finished and, before each batch write, the batch being
// written ("pending", with a unique stamp put into every memory's createdAt). Memory-store batch writes are atomic,
// so after a SIGKILL the next run reads one header to learn whether the pending batch landed: each user is written
// exactly once per run. A lock file (jobLock.ts) keeps two jobs off the same store and shard.
import { existsSync, mkdirSync, readFileSync, renameSync, unlinkSync, writeFileSync, openSync, fsyncSync, closeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { resolvedPaths, type GemsConfig } from '../src/config/config.js';
import { Database } from '../src/data/db.js';
import { cutStreams, sliceHistory, type History } from '../src/data/events.js';
import type { HistoryStore } from '../src/data/historyStore.js';
import type { Compressor } from '../src/lifecycle/compressor.js';
import { CorruptMemoryError, type LifecycleMemory, type MemoryStore } from '../src/lifecycle/memory.js';
import { MEMORY_FORMAT_VERSION } from '../src/lifecycle/memoryFormat.js';
import { logger, progress, type Logger } from '../src/util/log.js';
import { hash32 } from '../src/util/random.js';
import { JobLock } from './jobLock.js';

export interface Shard {
  index: number;
  count: number;
}

/** Parses `i/n` (0 ≤ i < n). */
export function parseShard(spec: string): Shard {
  const m = /^(\d+)\/(\d+)$/.exec(spec.trim());
  if (!m) throw new Error(`--shard '${spec}': expected i/n, e.g. 0/4`);
  const index = Number(m[1]);
  const count = Number(m[2]);
  if (!(count >= 1 && index < count)) throw new Error(`--shard '${spec}': need 0 ≤ i < n`);
  return { index, count };
}

/** The shard a user belongs to; must match the history store's scan filter (hash32(user_id) % n). */
export const shardOf = (userId: number, count: number): number => hash32(userId) % count;

/** Where the job keeps its checkpoints and locks. */
export const jobDir = (config: GemsConfig): string => join(resolvedPaths(config).runs, 'compress');

// ---------------------------------------------------------------------------------------------------------------
// compression_runs / compression_failures

export interface RunSummary extends Counts {
  runId: string;
  status: 'completed' | 'interrupted';
  shard: Shard;
  compressorVersion: string;
  full: boolean;
  seconds: number;
  eventsPerSecond: number;
  resumes: number;
}

/** Writes run rows. Uses the given Database, or opens the DuckDB file briefly per write (shards in other processes). */
export class RunRecorder {
  constructor(private readonly target: Database | string) {}

  private async with<T>(fn: (db: Database) => Promise<T>): Promise<T> {
    if (typeof this.target !== 'string') return fn(this.target);
    for (let attempt = 0; ; attempt++) {
      let db: Database;
      try {
        db = await Database.open(this.target);
      } catch (e) {
        // Another process holds the file for a moment (a sibling shard recording its run): retry.
        if (attempt < 50 && /lock/i.test((e as Error).message)) {
          await new Promise((r) => setTimeout(r, 100 + 50 * attempt));
          continue;
        }
        throw e;
      }
      try {
        return await fn(db);
      } finally {
        db.close();
      }
    }
  }

  async start(runId: string, startedAt: number, shard: Shard, version: string, full: boolean): Promise<void> {
    await this.with((db) =>
      db.run(
        `INSERT INTO compression_runs (run_id, started_at, status, shard_index, shard_count, compressor_version, full_recompression, host, pid)
         VALUES ($1, make_timestamp($2::BIGINT * 1000), 'running', $3, $4, $5, $6, $7, $8)`,
        [runId, startedAt, shard.index, shard.count, version, full, hostname(), process.pid],
      ),
    );
  }

  async resumed(runId: string): Promise<void> {
    await this.with((db) => db.run(`UPDATE compression_runs SET resumes = resumes + 1, status = 'running', pid = $2, host = $3 WHERE run_id = $1`, [runId, process.pid, hostname()]));
  }

  async failure(runId: string, userId: number, reason: string): Promise<void> {
    await this.with((db) =>
      db.run(`INSERT OR REPLACE INTO compression_failures VALUES ($1, $2, $3, now()::TIMESTAMP)`, [runId, userId, reason.slice(0, 2000)]),
    );
  }

  async finish(s: RunSummary): Promise<void> {
    await this.with((db) =>
      db.run(
        `UPDATE compression_runs SET finished_at = now()::TIMESTAMP, status = $2, users = $3, users_full = $4, users_incremental = $5,
           users_unchanged = $6, failures = $7, events = $8, seconds = $9, events_per_s = $10, users_skipped = $11 WHERE run_id = $1`,
        [s.runId, s.status, s.users, s.usersFull, s.usersIncremental, s.usersUnchanged, s.failures, s.events, s.seconds, s.eventsPerSecond, s.usersSkipped],
      ),
    );
  }

  async abandon(runId: string): Promise<void> {
    await this.with((db) => db.run(`UPDATE compression_runs SET status = 'abandoned', finished_at = now()::TIMESTAMP WHERE run_id = $1`, [runId]));
  }

  /** Start time (epoch ms) of the last completed run covering this shard (same shard, or an unsharded run). */
  async lastCompletedStart(shard: Shard, version: string): Promise<number | null> {
    const row = await this.with((db) =>
      db.one<{ ms: bigint | number | null }>(
        `SELECT max(epoch_ms(started_at)) AS ms FROM compression_runs
         WHERE status = 'completed' AND compressor_version = $1 AND (shard_count = 1 OR (shard_count = $2 AND shard_index = $3))`,
        [version, shard.count, shard.index],
      ),
    );
    return row?.ms === null || row?.ms === undefined ? null : Number(row.ms);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Checkpoint file

/**
 * Users and events of a run. `usersSkipped`: users whose lifecycle segment is empty (≤ streams.tMid events), for
 * whom no memory is written (compression_runs.users_skipped, migration 0004).
 */
interface Counts {
  users: number;
  usersFull: number;
  usersIncremental: number;
  usersUnchanged: number;
  usersSkipped: number;
  failures: number;
  events: number;
}

interface Checkpoint {
  runId: string;
  startedAt: number;
  compressorVersion: string;
  full: boolean;
  shard: Shard;
  /** Users changed since this time (epoch ms) are candidates; null = every user of the shard. */
  changedSince: number | null;
  lastUserId: number;
  counts: Counts;
  /** Seconds spent computing in earlier (killed) attempts, for events/s. */
  secondsBefore: number;
  resumes: number;
  /** The batch being written: if its memories carry `stamp`, it landed. */
  pending: { stamp: number; userIds: number[]; lastUserId: number; counts: Counts } | null;
}

const zeroCounts = (): Counts => ({ users: 0, usersFull: 0, usersIncremental: 0, usersUnchanged: 0, usersSkipped: 0, failures: 0, events: 0 });
const addCounts = (a: Counts, b: Counts): Counts => ({
  users: a.users + b.users,
  usersFull: a.usersFull + b.usersFull,
  usersIncremental: a.usersIncremental + b.usersIncremental,
  usersUnchanged: a.usersUnchanged + b.usersUnchanged,
  // `?? 0`: a checkpoint written before this counter existed.
  usersSkipped: (a.usersSkipped ?? 0) + (b.usersSkipped ?? 0),
  failures: a.failures + b.failures,
  events: a.events + b.events,
});

function writeDurable(path: string, data: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, data);
  const fd = openSync(tmp, 'r+');
  fsyncSync(fd);
  closeSync(fd);
  renameSync(tmp, path);
}

// ---------------------------------------------------------------------------------------------------------------
// The job

export interface CompressJobOptions {
  config: GemsConfig;
  history: HistoryStore;
  memories: MemoryStore;
  compressor: Compressor;
  /** compression_runs target: an open Database (same process) or the DuckDB path (opened briefly per write). */
  runs: Database | string;
  shard?: Shard;
  /** Recompress every user of the shard from scratch. */
  full?: boolean;
  log?: Logger;
  /** Stops after the current batch (SIGTERM): the checkpoint stays and the next run resumes. */
  signal?: AbortSignal;
  /** Lock staleness (ms); tests shorten it. */
  lockStaleMs?: number;
}

export type UserPlan = { kind: 'full' } | { kind: 'incremental'; from: number; state: Float32Array } | { kind: 'unchanged' };

/** Watermark of a lifecycle prefix: the time (or seq when the source has no timestamps) of its last event. */
export function watermarkOf(lifecycle: History, covered: number): number {
  if (covered <= 0) return 0;
  const ts = lifecycle.ts[covered - 1]!;
  return Number.isFinite(ts) ? ts : lifecycle.seq[covered - 1]!;
}

/** Decides how to bring a user's memory up to date with its current lifecycle segment. */
export function planUser(memory: LifecycleMemory | null, lifecycle: History, compressor: Compressor, full: boolean): UserPlan {
  if (full || !memory) return { kind: 'full' };
  const h = memory.header;
  if (h.compressorVersion !== compressor.version) return { kind: 'full' };
  if (!memory.state || memory.state.length !== compressor.stateLength) return { kind: 'full' };
  const covered = h.eventsCovered;
  // The stored state covers a prefix of the lifecycle only if the history did not shrink and the prefix still ends
  // on the same event (a back-filled older event would shift it): otherwise start over.
  if (!Number.isInteger(covered) || covered > lifecycle.length) return { kind: 'full' };
  if (watermarkOf(lifecycle, covered) !== h.watermark) return { kind: 'full' };
  if (covered === lifecycle.length) return { kind: 'unchanged' };
  return { kind: 'incremental', from: covered, state: memory.state };
}

/**
 * Lifecycle events to fold into a state: rows [from, lifecycle.length) of `lifecycle`, whose row 0 is event `base` of
 * the user's whole lifecycle segment; no `state` = compress from scratch.
 */
interface TailWork {
  lifecycle: History;
  from: number;
  base: number;
  state?: Float32Array;
}

/**
 * Plans a user with a memory of this compressor version from a tail read: the lifecycle segment is the first
 * (events − tMid) events, the memory covers its first `covered`, so only the last (events − covered + 1) events are
 * needed — the one before the new ones checks that the covered prefix still ends where the memory says (a
 * back-filled older event shifts it: then 'full'). `events` comes from the store's per-user counter.
 */
async function readTail(history: HistoryStore, userId: number, events: number, tMid: number, memory: LifecycleMemory | null, compressor: Compressor): Promise<TailWork | 'full' | 'unchanged'> {
  if (!memory || memory.header.compressorVersion !== compressor.version) return 'full';
  if (!memory.state || memory.state.length !== compressor.stateLength) return 'full';
  const covered = memory.header.eventsCovered;
  const lifecycleLength = Math.max(0, events - tMid);
  if (!Number.isInteger(covered) || covered < 0 || covered > lifecycleLength) return 'full';
  if (covered === 0 && lifecycleLength === 0) return 'unchanged'; // no lifecycle yet: nothing to read
  const base = covered > 0 ? covered - 1 : 0;
  const need = events - base;
  const w = memory.header.watermark;
  let tail: History | null = null;
  let at = 0;
  if (covered > 0 && Number.isSafeInteger(w - 1)) {
    // One read of the events from the watermark's time on (ts ≥ w: Parquet statistics skip the older row groups).
    // It is a suffix of the history, so event `base` is its row (length − need) when it holds that many.
    const since = await history.userHistory(userId, undefined, { after: { ts: w - 1, seq: 2147483647 } });
    at = since.length - need;
    if (at >= 0 && watermarkOf(sliceHistory(since, at, at + 1), 1) === w) tail = since;
  }
  if (!tail) {
    // No timestamps (the watermark is a seq), or the prefix moved: read the last `need` events by count.
    tail = await history.userHistory(userId, undefined, { lastN: need });
    at = 0;
    if (tail.length !== need) return 'full'; // the history changed under us: take the safe path
  }
  const life = sliceHistory(tail, at, at + lifecycleLength - base);
  if (covered > 0 && watermarkOf(life, 1) !== w) return 'full';
  if (covered === lifecycleLength) return 'unchanged';
  return { lifecycle: life, from: covered - base, base, state: memory.state };
}

export async function runCompressionJob(opts: CompressJobOptions): Promise<RunSummary> {
  const { config, history, memories, compressor } = opts;
  const shard = opts.shard ?? { index: 0, count: 1 };
  const log = opts.log ?? logger('compress');
  const recorder = new RunRecorder(opts.runs);
  const dir = jobDir(config);
  mkdirSync(dir, { recursive: true });
  const shardName = `${shard.index}of${shard.count}`;
  const lock = JobLock.acquire(dir, `compress-${shardName}.lock`, {
    what: `gems compress --shard ${shard.index}/${shard.count}`,
    staleMs: opts.lockStaleMs,
    // Runs with another shard count overlap this one's users.
    conflictsWith: (f) => /^compress-\d+of\d+\.lock$/.test(f) && !f.endsWith(`of${shard.count}.lock`),
  });
  try {
    const ckptPath = join(dir, `checkpoint-${shardName}.json`);
    let ckpt: Checkpoint | null = existsSync(ckptPath) ? (JSON.parse(readFileSync(ckptPath, 'utf8')) as Checkpoint) : null;
    if (ckpt && ckpt.compressorVersion !== compressor.version) {
      log.warn('abandoning an interrupted run made with another compressor version', { run_id: ckpt.runId, its_version: ckpt.compressorVersion, version: compressor.version });
      await recorder.abandon(ckpt.runId);
      ckpt = null;
    }
    if (ckpt) {
      ckpt.resumes++;
      log.info('resuming interrupted run', { run_id: ckpt.runId, after_user: ckpt.lastUserId, users_done: ckpt.counts.users });
      if (ckpt.pending) {
        const p = ckpt.pending;
        const probe = p.userIds.length > 0 ? await memories.getHeader(p.userIds[0]!).catch(() => null) : null;
        if (probe && probe.createdAt === p.stamp && probe.compressorVersion === ckpt.compressorVersion) {
          ckpt.counts = addCounts(ckpt.counts, p.counts);
          ckpt.lastUserId = p.lastUserId;
          log.info('batch recovered', { run_id: ckpt.runId, users: p.userIds });
        }
        ckpt.pending = null;
      }
      writeDurable(ckptPath, JSON.stringify(ckpt));
      await recorder.resumed(ckpt.runId);
    } else {
      const full = opts.full === true;
      const startedAt = Date.now();
      const changedSince = full ? null : await recorder.lastCompletedStart(shard, compressor.version);
      ckpt = {
        runId: `${new Date(startedAt).toISOString().replace(/[-:.]/g, '').slice(0, 15)}-${shardName}-${randomBytes(3).toString('hex')}`,
        startedAt,
        compressorVersion: compressor.version,
        full,
        shard,
        changedSince,
        lastUserId: -1,
        counts: zeroCounts(),
        secondsBefore: 0,
        resumes: 0,
        pending: null,
      };
      await recorder.start(ckpt.runId, startedAt, shard, compressor.version, full);
      writeDurable(ckptPath, JSON.stringify(ckpt));
      log.info('compression run started', { run_id: ckpt.runId, shard: `${shard.index}/${shard.count}`, full, compressor: compressor.version, changed_since: changedSince });
    }
    const run = ckpt;

    // Candidates: with a previous completed run, the users ingested since it started plus users whose memory is
    // missing or from another compressor version and who have a lifecycle segment (more than tMid events: a user
    // without one has no memory by design and must not be picked every night); otherwise every user of the shard.
    const all = await history.userIds();
    const mine = all.filter((u) => shardOf(u, shard.count) === shard.index);
    let candidates: Int32Array = mine;
    if (!run.full && run.changedSince !== null) {
      const changed = new Set(await history.usersChangedSince(run.changedSince, 'ingested'));
      const out: number[] = [];
      const rest: number[] = [];
      for (const u of mine) (changed.has(u) ? out : rest).push(u);
      for (let i = 0; i < rest.length; i += 1024) {
        const ids = rest.slice(i, i + 1024);
        // A header that fails validation counts as missing: the user is recompressed.
        const headers = await memories.getHeaders(ids).catch(() => Promise.all(ids.map((u) => memories.getHeader(u).catch(() => null))));
        // An empty memory (eventsCovered 0, written by older builds) is picked once, to be removed.
        ids.forEach((u, j) => headers[j]?.eventsCovered === 0 && headers[j]!.compressorVersion === compressor.version && out.push(u));
        const stale = ids.filter((_, j) => !headers[j] || headers[j]!.compressorVersion !== compressor.version);
        if (stale.length === 0) continue;
        const n = await history.userEventCounts(Int32Array.from(stale));
        stale.forEach((u, j) => {
          if (n[j]! > config.streams.tMid) out.push(u);
        });
      }
      candidates = Int32Array.from(out.sort((a, b) => a - b));
    }
    const remaining = candidates.filter((u) => u > run.lastUserId);
    const bar = progress(log, 'compress', candidates.length, 'users');
    bar.set(candidates.length - remaining.length);

    const t0 = performance.now();
    const secondsBase = run.secondsBefore;
    const batchSize = Math.max(1, config.lifecycle.batchSize);
    let batch: LifecycleMemory[] = [];
    let delta = zeroCounts();
    let lastSeen = run.lastUserId;
    let lastStamp = 0;
    const { tRecent, tMid } = config.streams;

    const flush = async () => {
      if (batch.length === 0 && lastSeen === run.lastUserId) return;
      const stamp = Math.max(Date.now(), lastStamp + 1);
      lastStamp = stamp;
      for (const m of batch) m.header.createdAt = stamp;
      const userIds = batch.map((m) => m.userId);
      run.pending = { stamp, userIds, lastUserId: lastSeen, counts: delta };
      run.secondsBefore = secondsBase + (performance.now() - t0) / 1000;
      writeDurable(ckptPath, JSON.stringify(run));
      if (batch.length > 0) await memories.putMany(batch);
      run.counts = addCounts(run.counts, delta);
      run.lastUserId = lastSeen;
      run.pending = null;
      writeDurable(ckptPath, JSON.stringify(run));
      if (userIds.length > 0) log.info('batch committed', { run_id: run.runId, users: userIds });
      batch = [];
      delta = zeroCounts();
    };

    // Users without a usable memory (none, another compressor version, --full) need their whole lifecycle: they come
    // from one streaming scan. The others only need the events that crossed T_mid since their memory's watermark:
    // a tail read of the last (events − covered + 1) events, whose first row re-checks the watermark.
    // Event counts of every remaining user: a user with at most tMid events has no lifecycle segment and is skipped
    // without reading its history (the others' counts size their tail reads).
    const counts = new Map<number, number>();
    for (let i = 0; i < remaining.length; i += 4096) {
      const ids = remaining.subarray(i, i + 4096);
      const n = await history.userEventCounts(ids);
      ids.forEach((u, j) => counts.set(u, n[j]!));
    }
    const hasLifecycle = (u: number) => (counts.get(u) ?? 0) > tMid;
    const needFull = new Set<number>();
    if (run.full) {
      for (const u of remaining) if (hasLifecycle(u)) needFull.add(u);
    } else {
      const withLifecycle = remaining.filter(hasLifecycle);
      for (let i = 0; i < withLifecycle.length; i += 1024) {
        const ids = Array.from(withLifecycle.subarray(i, i + 1024));
        const headers = await memories.getHeaders(ids).catch(() => Promise.all(ids.map((u) => memories.getHeader(u).catch(() => null))));
        ids.forEach((u, j) => {
          const h = headers[j];
          if (!h || h.compressorVersion !== compressor.version) needFull.add(u);
        });
      }
    }
    const scan = needFull.size > 0 ? history.scanHistories({ shard, userIds: Int32Array.from(needFull), afterUserId: run.lastUserId })[Symbol.asyncIterator]() : null;
    const nextScanned = async (u: number): Promise<History> => {
      const r = await scan!.next();
      if (r.done || r.value.userId !== u) {
        throw new Error(`history scan returned ${r.done ? 'nothing' : `user ${r.value.userId}`} where user ${u} was expected`);
      }
      return r.value;
    };
    const fullLifecycle = async (u: number): Promise<History> => cutStreams(await history.userHistory(u), tRecent, tMid).lifecycle;
    /**
     * No lifecycle segment: nothing is written (a missing memory means "no lifecycle stream" to the recommender); a
     * memory left from before (an older build wrote empty ones, or the history shrank) is removed. Idempotent.
     */
    const skipEmpty = async (u: number, memory: LifecycleMemory | null | 'unknown') => {
      if (memory === 'unknown' ? (await memories.getHeader(u).catch(() => 'corrupt')) !== null : memory !== null) await memories.delete(u);
      delta.usersSkipped++;
    };

    try {
      for (const u of remaining) {
        if (opts.signal?.aborted) break;
        if (u <= run.lastUserId || shardOf(u, shard.count) !== shard.index) {
          throw new Error(`user ${u} is outside shard ${shard.index}/${shard.count} or before the checkpoint (${run.lastUserId})`);
        }
        // A scanned history is consumed even if compressing it fails, so the scan stays in step with `remaining`.
        const scanned = needFull.has(u) ? await nextScanned(u) : null;
        try {
          if (!hasLifecycle(u)) {
            await skipEmpty(u, 'unknown');
            lastSeen = u;
            bar.tick(1, { events: run.counts.events + delta.events });
            if (batch.length >= batchSize) await flush();
            continue;
          }
          let memory: LifecycleMemory | null = null;
          try {
            memory = run.full ? null : await memories.get(u);
          } catch (e) {
            if (!(e instanceof CorruptMemoryError)) throw e;
            log.warn('stored memory is corrupt; recompressing from scratch', { user: u, error: e.message });
          }
          let work: TailWork | null = null;
          if (scanned) {
            const lifecycle = cutStreams(scanned, tRecent, tMid).lifecycle;
            const plan = planUser(memory, lifecycle, compressor, run.full);
            work = plan.kind === 'unchanged' ? null : plan.kind === 'full' ? { lifecycle, from: 0, base: 0 } : { lifecycle, from: plan.from, base: 0, state: plan.state };
          } else {
            const tail = await readTail(history, u, counts.get(u) ?? 0, tMid, memory, compressor);
            if (tail === 'unchanged') work = null;
            else if (tail === 'full') work = { lifecycle: await fullLifecycle(u), from: 0, base: 0 };
            else work = tail;
          }
          if (work !== null && work.base + work.lifecycle.length === 0) {
            // The count said there were lifecycle events but the history read has none (it changed under us).
            await skipEmpty(u, memory);
          } else if (work === null) {
            delta.usersUnchanged++;
          } else {
            const { lifecycle, from, base, state } = work;
            let res;
            try {
              res = compressor.compress(lifecycle, from, state);
            } catch (e) {
              // Name the event by its index in the whole lifecycle, not in the tail that was read.
              const m = /^event (\d+) (of user .*)$/s.exec((e as Error).message);
              throw m ? new Error(`event ${Number(m[1]) + base} ${m[2]}`) : e;
            }
            const covered = base + lifecycle.length;
            batch.push({
              userId: u,
              header: {
                formatVersion: MEMORY_FORMAT_VERSION,
                compressorVersion: compressor.version,
                slots: compressor.weights.qla.slots,
                dim: compressor.weights.qla.dim,
                dtype: config.lifecycle.dtype,
                watermark: watermarkOf(lifecycle, lifecycle.length),
                eventsCovered: covered,
                createdAt: 0,
              },
              vectors: res.vectors,
              state: res.state,
            });
            delta.users++;
            if (state === undefined) delta.usersFull++;
            else delta.usersIncremental++;
            delta.events += res.folded;
          }
        } catch (e) {
          const reason = (e as Error).message || String(e);
          delta.failures++;
          log.warn('user failed to compress', { run_id: run.runId, user: u, reason });
          await recorder.failure(run.runId, u, reason);
        }
        lastSeen = u;
        bar.tick(1, { events: run.counts.events + delta.events });
        if (batch.length >= batchSize) await flush();
      }
    } finally {
      // Stop the scan's prefetch when the loop ends early (abort or error).
      await scan?.return?.();
    }
    await flush();

    const seconds = secondsBase + (performance.now() - t0) / 1000;
    const interrupted = opts.signal?.aborted === true;
    const summary: RunSummary = {
      runId: run.runId,
      status: interrupted ? 'interrupted' : 'completed',
      shard,
      compressorVersion: compressor.version,
      full: run.full,
      ...run.counts,
      seconds: Number(seconds.toFixed(3)),
      eventsPerSecond: Number((run.counts.events / Math.max(seconds, 1e-9)).toFixed(1)),
      resumes: run.resumes,
    };
    bar.done({ events: run.counts.events });
    await recorder.finish(summary);
    if (interrupted) {
      run.secondsBefore = seconds;
      writeDurable(ckptPath, JSON.stringify(run));
      log.warn('compression run interrupted; the next run resumes it', { ...summary, shard: `${shard.index}/${shard.count}` });
    } else {
      unlinkSync(ckptPath);
      log.info('compression run summary', { ...summary, shard: `${shard.index}/${shard.count}` });
    }
    return summary;
  } finally {
    lock.release();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Entry point used by `gems compress` and the scheduler: opens the stores, runs, closes (so the DuckDB file is held
// only while a run is in progress).

export interface CompressOnceOptions {
  shard?: Shard;
  full?: boolean;
  /** Compressor version (default: the latest trained). */
  version?: string;
  signal?: AbortSignal;
  log?: Logger;
  lockStaleMs?: number;
}

export async function compressOnce(config: GemsConfig, o: CompressOnceOptions = {}): Promise<RunSummary> {
  const { initBackend } = await import('../src/compute/backend.js');
  const { loadCompressor } = await import('../src/lifecycle/compressor.js');
  const { openHistoryStore } = await import('../src/data/parquetHistoryStore.js');
  const { openMemoryStore } = await import('../src/lifecycle/openMemoryStore.js');
  await initBackend();
  const compressor = loadCompressor(config, o.version);
  const history = await openHistoryStore(config);
  let memories: MemoryStore | null = null;
  try {
    memories = await openMemoryStore(config);
    return await runCompressionJob({
      config,
      history,
      memories,
      compressor,
      runs: history.db,
      shard: o.shard,
      full: o.full,
      signal: o.signal,
      log: o.log,
      lockStaleMs: o.lockStaleMs,
    });
  } finally {
    compressor.dispose();
    await memories?.close();
    await history.close();
  }
}
