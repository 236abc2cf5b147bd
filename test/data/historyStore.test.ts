// The Parquet history store on a real DuckDB file and a local object folder in a temp data dir.
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, resolvedPaths } from '../../src/config/config.js';
import { openHistoryStore, type ParquetHistoryStore } from '../../src/data/parquetHistoryStore.js';
import { sliceHistory, type EventColumns, type History } from '../../src/data/events.js';
import { hash32 } from '../../src/util/random.js';
import { openObjectStore } from '../../src/data/openObjectStore.js';
import { S3RVER_CREDENTIALS, startS3rver, type S3rverHandle } from '../support/s3server.js';

/** Events of `users`, each with lengths[u] events at ts = base + k·1000 (or no ts), items derived from (u, k). */
function makeBatch(lengths: Map<number, number>, opts: { source?: string; noTs?: boolean; tsBase?: number; seqBase?: number } = {}): EventColumns {
  let n = 0;
  for (const l of lengths.values()) n += l;
  const b: EventColumns = {
    length: n,
    userId: new Int32Array(n),
    itemId: new Int32Array(n),
    ts: new Float64Array(n),
    seq: new Int32Array(n),
    authorId: new Int32Array(n),
    tagOffsets: new Int32Array(n + 1),
    tagIds: new Int32Array(0),
    playMs: new Float32Array(n),
    durationMs: new Float32Array(n),
    labels: new Uint8Array(n),
    source: opts.source ?? 'test',
  };
  const tags: number[] = [];
  let r = 0;
  for (const [u, len] of lengths) {
    for (let k = 0; k < len; k++, r++) {
      const kk = k + (opts.seqBase ?? 0);
      b.userId[r] = u;
      b.itemId[r] = (u * 131 + kk * 7) % 997;
      b.ts[r] = opts.noTs ? NaN : (opts.tsBase ?? 1_600_000_000_000) + kk * 1000;
      b.seq[r] = kk;
      b.authorId[r] = 1 + (kk % 5);
      for (let t = 0; t < kk % 3; t++) tags.push(1 + ((kk + t) % 4));
      b.tagOffsets[r + 1] = tags.length;
      b.playMs[r] = kk * 10;
      b.durationMs[r] = kk * 20;
      b.labels[r] = kk % 4;
    }
  }
  b.tagIds = Int32Array.from(tags);
  return b;
}

function expectChronological(h: History): void {
  for (let i = 1; i < h.length; i++) {
    const a = h.ts[i - 1]!;
    const b = h.ts[i]!;
    const ok = Number.isNaN(a) ? true : Number.isNaN(b) ? false : a < b || (a === b && h.seq[i - 1]! < h.seq[i]!);
    if (!ok) throw new Error(`user ${h.userId}: row ${i} out of order`);
  }
}

/** ts ascending with unknown (NaN) first, then seq: strictly after (tsB, seqB)? */
function chronoAfter(tsA: number, seqA: number, tsB: number, seqB: number): boolean {
  const na = Number.isNaN(tsA);
  const nb = Number.isNaN(tsB);
  if (na !== nb) return nb;
  if (!na && tsA !== tsB) return tsA > tsB;
  return seqA > seqB;
}

function expectSameHistory(got: History, want: History): void {
  expect(got.userId).toBe(want.userId);
  expect(got.length).toBe(want.length);
  for (const k of ['itemId', 'ts', 'seq', 'authorId', 'tagOffsets', 'tagIds', 'playMs', 'durationMs', 'labels'] as const) {
    expect(Array.from(got[k]), k).toEqual(Array.from(want[k]));
  }
}

describe('ParquetHistoryStore', () => {
  let dir: string;
  let store: ParquetHistoryStore;
  const lengths = new Map<number, number>();

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gems-hs-'));
    const config = loadConfig({ flags: { dataDir: dir, 'history.userBuckets': '8' }, env: {} });
    store = await openHistoryStore(config, { rowGroupSize: 512 });
    // Users with a range of lengths: shorter than T_recent, exactly T_mid, longer than T_mid.
    for (let u = 1; u <= 40; u++) lengths.set(u, (u * 37) % 300);
    lengths.set(100, 64); // exactly T_mid below
    lengths.set(101, 16); // exactly T_recent
    lengths.set(102, 5000);
    lengths.delete(0);
    for (const [u, l] of lengths) if (l === 0) lengths.delete(u);
    const res = await store.append(makeBatch(lengths));
    expect(res.added).toBe([...lengths.values()].reduce((s, x) => s + x, 0));
    expect(res.duplicates).toBe(0);
  });

  afterAll(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('bucket hash in DuckDB matches hash32 (partition layout)', async () => {
    const ids = [0, 1, 42, -5, 2147483647, -2147483648, 123456];
    const rows = await store.withDb((db) =>
      db.rows<{ h: bigint }>(`SELECT gems_hash32(x) AS h FROM (SELECT unnest($1::INTEGER[]) AS x, generate_subscripts($1::INTEGER[], 1) AS i) ORDER BY i`, [
        `[${ids.join(',')}]`,
      ]),
    );
    expect(rows.map((r) => Number(r.h))).toEqual(ids.map(hash32));
    const parts = await store.withDb((db) => db.rows<{ key: string; bucket: number; min_user: number; max_user: number }>(`SELECT * FROM partitions`));
    for (const p of parts) {
      expect(p.key).toMatch(/^events\/bucket=\d{3}\/dt=\d{4}-\d{2}-\d{2}\/part-.+\.parquet$/);
      for (const u of lengths.keys()) if (u >= p.min_user && u <= p.max_user && hash32(u) % 8 === p.bucket) expect(store.bucketOf(u)).toBe(p.bucket);
    }
  });

  it('reads one user chronologically with every column', async () => {
    const h = await store.userHistory(102);
    expect(h.length).toBe(5000);
    expectChronological(h);
    expect(h.itemId[7]).toBe((102 * 131 + 7 * 7) % 997);
    expect(h.authorId[7]).toBe(1 + (7 % 5));
    expect(h.playMs[7]).toBe(70);
    expect(h.durationMs[7]).toBe(140);
    expect(h.labels[7]).toBe(3);
    expect(Array.from(h.tagIds.subarray(h.tagOffsets[8]!, h.tagOffsets[9]!))).toEqual([1 + (8 % 4), 1 + (9 % 4)]);
    expect(h.tagOffsets.length).toBe(5001);
  });

  it('unknown users have empty histories and streams', async () => {
    const h = await store.userHistory(999_999);
    expect(h.length).toBe(0);
    const s = await store.userStreams(999_999, 16, 64);
    expect(s.recent.length + s.mid.length + s.lifecycle.length).toBe(0);
  });

  it('cuts streams at the budgets', async () => {
    const short = await store.userStreams(1, 16, 64); // 37 events: recent 16, mid 21, no lifecycle
    expect([short.lifecycle.length, short.mid.length, short.recent.length]).toEqual([0, 21, 16]);
    const exact = await store.userStreams(100, 16, 64);
    expect([exact.lifecycle.length, exact.mid.length, exact.recent.length]).toEqual([0, 48, 16]);
    const recentOnly = await store.userStreams(101, 16, 64);
    expect([recentOnly.lifecycle.length, recentOnly.mid.length, recentOnly.recent.length]).toEqual([0, 0, 16]);
    const long = await store.userStreams(102, 16, 64);
    expect([long.lifecycle.length, long.mid.length, long.recent.length]).toEqual([4936, 48, 16]);
    // Recent = the last events; lifecycle = the oldest.
    expect(long.recent.seq[15]).toBe(4999);
    expect(long.recent.seq[0]).toBe(4984);
    expect(long.mid.seq[0]).toBe(4936);
    expect(long.lifecycle.seq[0]).toBe(0);
  });

  it('as-of cut-off never returns later events', async () => {
    const cut = 1_600_000_000_000 + 999 * 1000;
    const h = await store.userHistory(102, { ts: cut });
    expect(h.length).toBe(1000);
    expect(Math.max(...h.ts)).toBeLessThanOrEqual(cut);
    const s = await store.userStreams(102, 16, 64, { ts: cut });
    expect(s.recent.seq[15]).toBe(999);
    const bySeq = await store.userHistory(102, { seq: 9 });
    expect(bySeq.length).toBe(10);
    const before = await store.userHistory(102, { ts: 0 });
    expect(before.length).toBe(0);
  });

  it('appending the same events again adds nothing', async () => {
    const again = await store.append(makeBatch(new Map([[102, 5000], [1, 37]])));
    expect(again.added).toBe(0);
    expect(again.duplicates).toBe(5037);
    expect((await store.userHistory(102)).length).toBe(5000);
  });

  it('merges a later batch of the same user in order and dedups within a batch', async () => {
    const extra = makeBatch(new Map([[5, 20]]), { seqBase: 1000 });
    const doubled: EventColumns = {
      ...extra,
      length: 40,
      userId: Int32Array.from([...extra.userId, ...extra.userId]),
      itemId: Int32Array.from([...extra.itemId, ...extra.itemId]),
      ts: Float64Array.from([...extra.ts, ...extra.ts]),
      seq: Int32Array.from([...extra.seq, ...extra.seq]),
      authorId: Int32Array.from([...extra.authorId, ...extra.authorId]),
      tagOffsets: Int32Array.from([...extra.tagOffsets, ...extra.tagOffsets.subarray(1).map((x) => x + extra.tagIds.length)]),
      tagIds: Int32Array.from([...extra.tagIds, ...extra.tagIds]),
      playMs: Float32Array.from([...extra.playMs, ...extra.playMs]),
      durationMs: Float32Array.from([...extra.durationMs, ...extra.durationMs]),
      labels: Uint8Array.from([...extra.labels, ...extra.labels]),
    };
    const res = await store.append(doubled);
    expect(res.added).toBe(20);
    expect(res.duplicates).toBe(20);
    const h = await store.userHistory(5);
    expect(h.length).toBe(lengths.get(5)! + 20);
    expectChronological(h);
    expect(h.seq[h.length - 1]).toBe(1019);
    lengths.set(5, lengths.get(5)! + 20);
  });

  it('scans all users in ascending order with bounded batches, and shards partition the users', async () => {
    const all: number[] = [];
    let events = 0;
    for await (const h of store.scanHistories()) {
      all.push(h.userId);
      events += h.length;
      expect(h.length).toBe(lengths.get(h.userId));
      expectChronological(h);
    }
    const ids = [...lengths.keys()].sort((a, b) => a - b);
    expect(all).toEqual(ids);
    expect(events).toBe([...lengths.values()].reduce((s, x) => s + x, 0));
    const seen = new Set<number>();
    for (let index = 0; index < 3; index++) {
      for await (const h of store.scanHistories({ shard: { index, count: 3 } })) {
        expect(seen.has(h.userId)).toBe(false);
        expect(hash32(h.userId) % 3).toBe(index);
        seen.add(h.userId);
      }
    }
    expect([...seen].sort((a, b) => a - b)).toEqual(ids);
    const after: number[] = [];
    for await (const h of store.scanHistories({ afterUserId: 30 })) after.push(h.userId);
    expect(after).toEqual(ids.filter((u) => u > 30));
    const some: number[] = [];
    for await (const h of store.scanHistories({ userIds: [102, 3, 999] })) some.push(h.userId);
    expect(some).toEqual([3, 102]);
  });

  it('scan memory is bounded by scanBatchEvents (small batches give the same result)', async () => {
    const config = loadConfig({ flags: { dataDir: dir, 'history.userBuckets': '8' }, env: {} });
    const small = new (store.constructor as typeof ParquetHistoryStore)(config, store.db, store.objects, { scanBatchEvents: 100 });
    let n = 0;
    let prev = -Infinity;
    for await (const h of small.scanHistories()) {
      expect(h.userId).toBeGreaterThan(prev);
      prev = h.userId;
      expect(h.length).toBe(lengths.get(h.userId));
      n++;
    }
    expect(n).toBe(lengths.size);
  });

  it('finds users changed since a watermark by event time and by ingestion time', async () => {
    const t0 = Date.now();
    await store.append(makeBatch(new Map([[7, 3]]), { tsBase: 1_900_000_000_000 }));
    expect(Array.from(await store.usersChangedSince(1_800_000_000_000))).toEqual([7]);
    expect(Array.from(await store.usersChangedSince(t0 - 1, 'ingested'))).toEqual([7]);
    expect((await store.usersChangedSince(0)).length).toBe(lengths.size);
    lengths.set(7, lengths.get(7)! + 3);
  });

  it('stores sources without timestamps (ts NaN, ordered by seq)', async () => {
    const b = makeBatch(new Map([[500, 30]]), { noTs: true, source: 'seq-only' });
    // Shuffle rows: the store orders them by seq.
    b.seq.reverse();
    await store.append(b);
    const h = await store.userHistory(500);
    expect(h.length).toBe(30);
    expect(Number.isNaN(h.ts[0]!)).toBe(true);
    expect(Array.from(h.seq)).toEqual(Array.from({ length: 30 }, (_, i) => i));
    expect((await store.userHistory(500, { seq: 4 })).length).toBe(5);
    // A time cut-off cannot place unknown-time events before it: none are returned.
    expect((await store.userHistory(500, { ts: Date.now() })).length).toBe(0);
    lengths.set(500, 30);
  });

  it('stats summarise users, items and history lengths', async () => {
    const s = await store.stats();
    const ls = [...lengths.values()];
    expect(s.users).toBe(lengths.size);
    expect(s.events).toBe(ls.reduce((a, x) => a + x, 0));
    expect(s.historyLength.min).toBe(Math.min(...ls));
    expect(s.historyLength.max).toBe(Math.max(...ls));
    expect(s.historyLength.mean).toBeCloseTo(s.events / s.users, 6);
    expect(Array.from(await store.userIds())).toEqual([...lengths.keys()].sort((a, b) => a - b));
  });

  it('items and tags round-trip', async () => {
    const [a, b] = await store.tagIds(['drama', 'comedy']);
    expect(await store.tagIds(['comedy', 'drama', 'new'])).toEqual([b, a, Math.max(a!, b!) + 1]);
    await store.upsertItems([
      { itemId: 3, authorId: 9, tags: [a!, b!], title: 'Three', attrs: { year: 1999 } },
      { itemId: 1, authorId: 8, tags: [], title: 'One' },
    ]);
    await store.upsertItems([{ itemId: 3, authorId: 9, tags: [b!], title: 'Three (2)' }]);
    const it = await store.items();
    expect(Array.from(it.itemId)).toEqual([1, 3]);
    expect(it.titles).toEqual(['One', 'Three (2)']);
    expect(Array.from(it.tagIds.subarray(it.tagOffsets[1]!, it.tagOffsets[2]!))).toEqual([b]);
  });

  it('ignores objects that are not in the manifest (crash between upload and commit) and removes them', async () => {
    const objectsDir = resolvedPaths(store.config).objects;
    const orphan = join(objectsDir, 'events', 'bucket=000', 'dt=2020-01-01');
    mkdirSync(orphan, { recursive: true });
    writeFileSync(join(orphan, 'part-crashed-000.parquet'), 'not a parquet file');
    for (const u of [...lengths.keys()].filter((x) => store.bucketOf(x) === 0).slice(0, 3)) {
      expect((await store.userHistory(u)).length).toBe(lengths.get(u));
    }
    const removed = await store.removeOrphans(0);
    expect(removed).toEqual(['events/bucket=000/dt=2020-01-01/part-crashed-000.parquet']);
  });

  it('compaction merges each bucket into one object and keeps every history', async () => {
    const before = new Map<number, History>();
    for await (const h of store.scanHistories()) before.set(h.userId, h);
    const res = await store.compact();
    expect(res.objectsAfter).toBeLessThan(res.objectsBefore);
    const parts = await store.withDb((db) => db.rows<{ bucket: number; n: bigint }>(`SELECT bucket, count(*) AS n FROM partitions GROUP BY bucket`));
    expect(parts.every((p) => Number(p.n) === 1)).toBe(true);
    let n = 0;
    for await (const h of store.scanHistories()) {
      const b = before.get(h.userId)!;
      expect(h.length).toBe(b.length);
      expect(Array.from(h.itemId)).toEqual(Array.from(b.itemId));
      expect(Array.from(h.seq)).toEqual(Array.from(b.seq));
      expect(Array.from(h.tagIds)).toEqual(Array.from(b.tagIds));
      n++;
    }
    expect(n).toBe(before.size);
    expect(await store.removeOrphans(0)).toEqual([]);
  });

  it('merges objects whose events interleave in time (a late batch of older events)', async () => {
    await store.append(makeBatch(new Map([[700, 50]]), { seqBase: 100 }));
    await store.append(makeBatch(new Map([[700, 50]]), { seqBase: 0 }));
    lengths.set(700, 100);
    const h = await store.userHistory(700);
    expect(Array.from(h.seq)).toEqual(Array.from({ length: 100 }, (_, i) => (i < 50 ? i : i + 50)));
    expectChronological(h);
    for await (const s of store.scanHistories({ userIds: [700] })) {
      expect(Array.from(s.seq)).toEqual(Array.from(h.seq));
      expect(Array.from(s.tagIds)).toEqual(Array.from(h.tagIds));
    }
  });

  it('takes any source name (quoted in SQL, part of the dedup key)', async () => {
    const b = makeBatch(new Map([[600, 4]]), { source: "o'brien; DROP TABLE users; --" });
    expect((await store.append(b)).added).toBe(4);
    expect((await store.append(b)).added).toBe(0);
    // The same events from another source are other events.
    expect((await store.append({ ...b, source: 'other' })).added).toBe(4);
    expect((await store.userHistory(600)).length).toBe(8);
    lengths.set(600, 8);
  });

  it('reads a tail or a range of one user, equal to the same cut of the full read', async () => {
    // 102: one object; 5: two objects in time order; 700: two objects interleaving in time; 500: no timestamps;
    // 600: the same (ts, seq) from two sources (ties keep the full read's order).
    for (const u of [102, 5, 700, 500, 600, 1, 999_999]) {
      const full = await store.userHistory(u);
      for (const n of [0, 1, 7, 16, 64, full.length - 1, full.length, full.length + 5]) {
        if (n < 0) continue;
        const tail = await store.userHistory(u, undefined, { lastN: n });
        expectSameHistory(tail, sliceHistory(full, Math.max(0, full.length - n), full.length));
      }
      for (const k of [0, full.length >> 1, full.length - 1]) {
        if (k < 0 || k >= full.length) continue;
        const pos = { ts: full.ts[k]!, seq: full.seq[k]! };
        const keep = Array.from({ length: full.length }, (_, i) => i).filter((i) => chronoAfter(full.ts[i]!, full.seq[i]!, pos.ts, pos.seq));
        const after = await store.userHistory(u, undefined, { after: pos });
        expectSameHistory(after, sliceHistory(full, keep[0] ?? full.length, full.length));
        expect(after.length).toBe(keep.length);
        const both = await store.userHistory(u, undefined, { after: pos, lastN: 3 });
        expectSameHistory(both, sliceHistory(full, Math.max(full.length - 3, keep[0] ?? full.length), full.length));
      }
    }
    const cut = 1_600_000_000_000 + 999 * 1000;
    expect(Array.from((await store.userHistory(102, { ts: cut }, { lastN: 10 })).seq)).toEqual(Array.from({ length: 10 }, (_, i) => 990 + i));
    expect(Array.from((await store.userHistory(500, { seq: 9 }, { lastN: 3 })).seq)).toEqual([7, 8, 9]);
    await expect(store.userHistory(1, undefined, { lastN: -1 })).rejects.toThrow(/range\.lastN must be a non-negative integer/);
    await expect(store.userHistory(1, undefined, { after: { ts: 1.5, seq: 0 } })).rejects.toThrow(/range\.after\.ts/);
  });

  it("streams with lifecycle 'count' read only the last tMid events and say how long the lifecycle is", async () => {
    for (const u of [102, 1, 100, 101, 500, 700, 999_999]) {
      const full = await store.userStreams(u, 16, 64);
      const counted = await store.userStreams(u, 16, 64, undefined, { lifecycle: 'count' });
      expect(full.lifecycleLength).toBe(full.lifecycle.length);
      expect(counted.lifecycle.length).toBe(0);
      expect(counted.lifecycleLength).toBe(full.lifecycle.length);
      expectSameHistory(counted.recent, full.recent);
      expectSameHistory(counted.mid, full.mid);
    }
    const cut = 1_600_000_000_000 + 999 * 1000;
    const asOf = await store.userStreams(102, 16, 64, { ts: cut }, { lifecycle: 'count' });
    expect(asOf.lifecycleLength).toBe(1000 - 64);
    expect(asOf.recent.seq[15]).toBe(999);
    await expect(store.userStreams(102, 64, 16)).rejects.toThrow(/0 < tRecent/);
  });

  it('counts events per user', async () => {
    expect(Array.from(await store.userEventCounts([102, 999_999, 1, 700]))).toEqual([lengths.get(102), 0, lengths.get(1), lengths.get(700)]);
    expect((await store.userEventCounts([])).length).toBe(0);
  });

  it('refuses inconsistent batches', async () => {
    const b = makeBatch(new Map([[1, 3]]));
    await expect(store.append({ ...b, itemId: new Int32Array(2) })).rejects.toThrow(/itemId has 2 rows/);
    await expect(store.append({ ...b, source: '' })).rejects.toThrow(/source is required/);
  });
});

describe('ParquetHistoryStore, empty', () => {
  it('items() answers an empty items table (DuckDB returns no columns for no rows) also when events exist', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gems-hs-noitems-'));
    const store = await openHistoryStore(loadConfig({ flags: { dataDir: dir }, env: {} }));
    try {
      await store.append(makeBatch(new Map([[1, 5]])));
      const it = await store.items();
      expect(it.length).toBe(0);
      expect(Array.from(it.tagOffsets)).toEqual([0]);
      expect(it.titles).toEqual([]);
      expect(Array.from(await store.userEventCounts([2]))).toEqual([0]);
      expect((await store.userHistory(1, { ts: 0 }, { lastN: 3 })).length).toBe(0);
      expect((await store.userStreams(2, 1, 2, undefined, { lifecycle: 'count' })).lifecycleLength).toBe(0);
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('answers every read on an empty store', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gems-hs-empty-'));
    const store = await openHistoryStore(loadConfig({ flags: { dataDir: dir }, env: {} }));
    try {
      expect((await store.userIds()).length).toBe(0);
      expect((await store.usersChangedSince(0)).length).toBe(0);
      expect((await store.usersChangedSince(0, 'ingested')).length).toBe(0);
      expect((await store.items()).length).toBe(0);
      expect((await store.userHistory(1)).length).toBe(0);
      const seen: number[] = [];
      for await (const h of store.scanHistories()) seen.push(h.userId);
      expect(seen).toEqual([]);
      expect(await store.stats()).toMatchObject({ users: 0, items: 0, events: 0, historyLength: { min: 0, mean: 0, max: 0 } });
      expect((await store.append(makeBatch(new Map()))).added).toBe(0);
      expect(await store.compact()).toEqual({ buckets: 0, objectsBefore: 0, objectsAfter: 0 });
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('ParquetHistoryStore on S3 (s3rver on loopback)', () => {
  let server: S3rverHandle;
  let root: string;
  beforeAll(async () => {
    server = await startS3rver({ bucket: 'gems-history' });
    root = mkdtempSync(join(tmpdir(), 'gems-hs-s3-'));
  });
  afterAll(async () => {
    await server.stop();
    rmSync(root, { recursive: true, force: true });
  });

  it('writes partitions to S3 and reads them back through the local cache, also from a fresh cache', async () => {
    const flags = {
      dataDir: join(root, 'a'),
      'history.userBuckets': '4',
      'objectStore.kind': 's3',
      'objectStore.endpoint': server.endpoint,
      'objectStore.bucket': server.bucket,
      'objectStore.prefix': 'hs',
    };
    const config = loadConfig({ flags, env: {} });
    const lengths = new Map([[1, 50], [2, 700], [3, 5]]);
    const store = await openHistoryStore(config, { objectStore: openObjectStore(config, { credentials: S3RVER_CREDENTIALS }) });
    try {
      const res = await store.append(makeBatch(lengths));
      expect(res.added).toBe(755);
      expect((await store.append(makeBatch(new Map([[2, 700]])))).added).toBe(0);
      expect((await store.userHistory(2)).length).toBe(700);
      const listed = await store.objects.list('events/');
      expect(listed.map((o) => o.key).sort()).toEqual([...res.objects].sort());
    } finally {
      await store.close();
      (store.objects as { close?: () => void }).close?.();
    }
    // Same database, empty cache dir: objects are fetched from S3 again.
    const config2 = loadConfig({ flags: { ...flags, 'objectStore.cacheDir': join(root, 'cache2') }, env: {} });
    const again = await openHistoryStore(config2, { objectStore: openObjectStore(config2, { credentials: S3RVER_CREDENTIALS }) });
    try {
      const seen: [number, number][] = [];
      for await (const h of again.scanHistories()) {
        expectChronological(h);
        seen.push([h.userId, h.length]);
      }
      expect(seen).toEqual([[1, 50], [2, 700], [3, 5]]);
    } finally {
      await again.close();
      (again.objects as { close?: () => void }).close?.();
    }
  });
});
