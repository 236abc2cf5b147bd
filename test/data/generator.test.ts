// The lifelong generator: determinism, heavy-tailed lengths, dormant-interest targets that are visible only in
// the lifecycle stream, truth consistent with events, increasing timestamps, affinity signal; and the real
// history store + CLI round trip (DuckDB + Parquet in a temp data dir).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildCatalogue } from '../../src/data/generator/catalogue.js';
import {
  generateLifelong,
  generateUser,
  resolveLifelongOptions,
  sampleLength,
  type GeneratedUser,
  type LifelongOptions,
  type TruthRecord,
} from '../../src/data/generator/lifelong.js';
import { generatedPaths, plannedEvents, readTruth, writeLifelong, type GeneratedManifest } from '../../src/data/generator/write.js';
import { LABEL } from '../../src/data/events.js';
import { Rng } from '../../src/util/random.js';
import { loadConfig } from '../../src/config/config.js';
import { openHistoryStore } from '../../src/data/parquetHistoryStore.js';
import { runCli } from '../../src/cli/main.js';
import { setLogSink } from '../../src/util/log.js';

const small = resolveLifelongOptions(undefined, { users: 80, scale: 0.1, tRecent: 64, tMid: 256, seed: 11, dormantTargetShare: 0.5 });
const cat = buildCatalogue(small);
const users: GeneratedUser[] = [];
for (let u = 0; u < small.users; u++) users.push(generateUser(cat, small, small.firstUserId + u));

const tmpDirs: string[] = [];
afterAll(() => {
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

describe('determinism', () => {
  it('same seed gives identical catalogue and events; another seed does not', () => {
    const cat2 = buildCatalogue(small);
    expect(cat2.clusterItems).toEqual(cat.clusterItems);
    expect(cat2.itemTagIds).toEqual(cat.itemTagIds);
    const again = generateUser(cat2, small, 5);
    const first = users[4]!;
    expect(again.history).toEqual(first.history);
    expect(again.truth).toEqual(first.truth);
    const other = generateUser(buildCatalogue({ ...small, seed: 12 }), { ...small, seed: 12 }, 5);
    expect(other.history.itemId).not.toEqual(first.history.itemId);
  });

  it('a user does not depend on batch size or on which other users are generated', () => {
    const o: LifelongOptions = { ...small, users: 6 };
    const concat = (batchEvents: number) => {
      const parts = [...generateLifelong(o, batchEvents, cat)];
      return { batches: parts.length, items: parts.flatMap((p) => Array.from(p.events.itemId)), truth: parts.flatMap((p) => p.truth) };
    };
    const a = concat(1);
    const b = concat(1e9);
    expect(a.batches).toBe(6);
    expect(b.batches).toBe(1);
    expect(a.items).toEqual(b.items);
    expect(a.truth).toEqual(b.truth);
    // User 4 alone, and as part of a run that starts at user 3.
    const shifted = [...generateLifelong({ ...o, firstUserId: 3, users: 2 }, 1e9, cat)][0]!;
    const u4 = users[3]!.history;
    const rows = Array.from(shifted.events.userId).flatMap((u, i) => (u === 4 ? [shifted.events.itemId[i]!] : []));
    expect(rows).toEqual(Array.from(u4.itemId));
  });
});

describe('history lengths', () => {
  const lengths = (o: LifelongOptions, n: number) => {
    const out: number[] = [];
    for (let u = 1; u <= n; u++) out.push(sampleLength(new Rng(o.seed).fork(u), o));
    return out.sort((x, y) => x - y);
  };

  it('are log-normal: heavy right tail, mean ≈ 14,500 × scale, max 100,000 × scale', () => {
    const full = lengths(resolveLifelongOptions(undefined, { seed: 3 }), 4000);
    const mean = full.reduce((s, x) => s + x, 0) / full.length;
    const med = quantile(full, 0.5);
    expect(mean).toBeGreaterThan(14_500 * 0.9);
    expect(mean).toBeLessThan(14_500 * 1.1);
    expect(med).toBeLessThan(0.75 * mean); // right-skewed
    expect(quantile(full, 0.99) / med).toBeGreaterThan(5);
    expect(full[full.length - 1]).toBe(100_000); // the tail is clipped at the maximum
    expect(full[0]).toBeGreaterThanOrEqual(100);

    const scaled = lengths(resolveLifelongOptions(undefined, { seed: 3, scale: 0.02 }), 4000);
    const meanScaled = scaled.reduce((s, x) => s + x, 0) / scaled.length;
    expect(meanScaled / mean).toBeGreaterThan(0.02 * 0.9);
    expect(meanScaled / mean).toBeLessThan(0.02 * 1.1);
    expect(scaled[scaled.length - 1]).toBeLessThanOrEqual(2000);
  });

  it('each generated user has the length drawn for it; fixed-length presets are exact', () => {
    for (const g of users.slice(0, 10)) expect(g.history.length).toBe(sampleLength(new Rng(small.seed).fork(g.history.userId), small));
    const bench = resolveLifelongOptions('bench100k', {});
    expect(bench.users).toBe(100);
    expect(bench.fixedLength).toBe(100_000);
    const fixed = { ...small, fixedLength: 3000 };
    expect(generateUser(cat, fixed, 1).history.length).toBe(3000);
    expect(plannedEvents({ ...fixed, users: 7 })).toBe(21_000);
  });

  it('rejects bad options with the option name', () => {
    expect(() => resolveLifelongOptions(undefined, { scale: 0 })).toThrow(/scale/);
    expect(() => resolveLifelongOptions(undefined, { tRecent: 100, tMid: 50 })).toThrow(/tMid/);
    expect(() => resolveLifelongOptions(undefined, { clusters: 10 })).toThrow(/clusters/);
    expect(() => resolveLifelongOptions('nope', {})).toThrow(/unknown preset 'nope'/);
  });
});

/** Index of the last event before `pos` whose item is in `cluster`, or -1. */
function lastSeenCluster(g: GeneratedUser, cluster: number, pos: number): number {
  for (let t = pos - 1; t >= 0; t--) if (cat.itemCluster[g.history.itemId[t]!] === cluster) return t;
  return -1;
}

describe('targets and ground truth', () => {
  const truth: TruthRecord[] = users.flatMap((g) => g.truth);

  it('the truth matches the events: item, cluster, position, time, dormancy, unseen item', () => {
    expect(truth).toHaveLength(small.users);
    for (const g of users) {
      const h = g.history;
      const [t] = g.truth;
      expect(t!.user_id).toBe(h.userId);
      expect(t!.position).toBe(h.length - 1);
      expect(t!.history_length).toBe(h.length);
      expect(h.itemId[t!.position]).toBe(t!.item_id);
      expect(h.ts[t!.position]).toBe(t!.ts);
      expect(cat.itemCluster[t!.item_id]).toBe(t!.cluster);
      expect(g.interests[t!.interest]!.cluster).toBe(t!.cluster);
      expect(g.interests[t!.interest]!.kind).toBe(t!.interest_kind);
      const last = lastSeenCluster(g, t!.cluster, t!.position);
      expect(t!.last_seen_position).toBe(last >= 0 ? last : null);
      expect(t!.dormant_events).toBe(last >= 0 ? t!.position - last : null);
      expect(t!.dormant_ms).toBe(last >= 0 ? h.ts[t!.position]! - h.ts[last]! : null);
      expect(t!.dormant).toBe(last >= 0 && t!.position - last > small.tMid);
      const expectStream = last < 0 ? 'never' : t!.position - last <= small.tRecent ? 'recent' : t!.position - last <= small.tMid ? 'mid' : 'lifecycle';
      expect(t!.last_seen_stream).toBe(expectStream);
      // The target is an item the user has not seen before.
      expect(t!.seen_before).toBe(false);
      expect(Array.from(h.itemId.subarray(0, t!.position))).not.toContain(t!.item_id);
    }
  });

  it('a good share of targets come from interests seen only in events older than T_mid', () => {
    const dormant = truth.filter((t) => t.dormant);
    expect(dormant.length / truth.length).toBeGreaterThan(0.2);
    for (const t of dormant) {
      const g = users.find((u) => u.history.userId === t.user_id)!;
      const clusterOf = (i: number) => cat.itemCluster[g.history.itemId[i]!];
      let old = 0;
      for (let i = 0; i < t.position - small.tMid; i++) if (clusterOf(i) === t.cluster) old++;
      for (let i = t.position - small.tMid; i < t.position; i++) expect(clusterOf(i)).not.toBe(t.cluster);
      expect(old).toBeGreaterThan(0);
      expect(t.intent).toBe('return');
      expect(t.interest_kind).not.toBe('core');
    }
    // The non-dormant targets continue the current session (mostly seen in the recent stream).
    const cont = truth.filter((t) => t.intent === 'continue');
    expect(cont.filter((t) => t.last_seen_stream === 'recent').length / cont.length).toBeGreaterThan(0.8);
  });

  it('inside histories, dormant interests come back after gaps longer than T_mid', () => {
    let returns = 0;
    let interestEvents = 0;
    for (const g of users) {
      const last = new Map<number, number>();
      for (let t = 0; t < g.history.length; t++) {
        const i = g.interestOf[t]!;
        if (i < 0) continue;
        interestEvents++;
        const l = last.get(i);
        if (l !== undefined && t - l > small.tMid) returns++;
        last.set(i, t);
      }
    }
    expect(returns).toBeGreaterThan(50);
    expect(returns / interestEvents).toBeGreaterThan(0.0005);
  });

  it('several targets per user are the last events, in order', () => {
    const o = { ...small, targetsPerUser: 3 };
    const g = generateUser(cat, o, 9);
    expect(g.truth.map((t) => t.position)).toEqual([g.history.length - 3, g.history.length - 2, g.history.length - 1]);
    for (const t of g.truth) expect(g.history.itemId[t.position]).toBe(t.item_id);
  });
});

describe('event structure', () => {
  it('timestamps increase strictly per user, in sessions (seconds–minutes apart) spread over years', () => {
    let within = 0;
    let longGaps = 0;
    let gaps = 0;
    for (const g of users) {
      const ts = g.history.ts;
      for (let t = 1; t < ts.length; t++) {
        const d = ts[t]! - ts[t - 1]!;
        expect(d).toBeGreaterThan(0);
        gaps++;
        if (d < 10 * 60_000) within++;
        if (d > 3_600_000) longGaps++;
      }
      expect(g.history.seq).toEqual(Int32Array.from({ length: g.history.length }, (_, i) => i));
      if (g.history.length > 500) expect(ts[ts.length - 1]! - ts[0]!).toBeGreaterThan(365 * 86_400_000);
      expect(ts[ts.length - 1]!).toBeLessThanOrEqual(small.endTs);
    }
    expect(within / gaps).toBeGreaterThan(0.85);
    expect(longGaps / gaps).toBeGreaterThan(0.02);
  });

  it('play time, likes and skips carry the affinity signal', () => {
    const acc = { interest: { n: 0, compl: 0, like: 0, skip: 0 }, explore: { n: 0, compl: 0, like: 0, skip: 0 } };
    for (const g of users) {
      const h = g.history;
      for (let t = 0; t < h.length; t++) {
        const a = g.interestOf[t]! >= 0 ? acc.interest : acc.explore;
        a.n++;
        a.compl += Math.min(1, h.playMs[t]! / h.durationMs[t]!);
        if (h.labels[t]! & LABEL.like) a.like++;
        if (h.labels[t]! & LABEL.skip) a.skip++;
      }
    }
    const rate = (a: typeof acc.interest, k: 'compl' | 'like' | 'skip') => a[k] / a.n;
    expect(acc.explore.n / (acc.explore.n + acc.interest.n)).toBeCloseTo(small.exploreRate, 1);
    expect(rate(acc.interest, 'compl')).toBeGreaterThan(rate(acc.explore, 'compl') + 0.3);
    expect(rate(acc.interest, 'like')).toBeGreaterThan(10 * rate(acc.explore, 'like'));
    expect(rate(acc.explore, 'skip')).toBeGreaterThan(3 * rate(acc.interest, 'skip'));
    // Higher-affinity interests are completed more.
    let hiC = 0, hiN = 0, loC = 0, loN = 0;
    for (const g of users) {
      for (let t = 0; t < g.history.length; t++) {
        const i = g.interestOf[t]!;
        if (i < 0) continue;
        const c = Math.min(1, g.history.playMs[t]! / g.history.durationMs[t]!);
        if (g.interests[i]!.affinity > 0.8) {
          hiC += c;
          hiN++;
        } else if (g.interests[i]!.affinity < 0.5) {
          loC += c;
          loN++;
        }
      }
    }
    expect(hiC / hiN).toBeGreaterThan(loC / loN + 0.1);
  });

  it('items cluster with correlated authors and tags, and popularity is skewed within clusters', () => {
    // Authors: most of an author's items are in one (its home) cluster.
    const byAuthor = new Map<number, Map<number, number>>();
    for (let item = 1; item <= cat.numItems; item++) {
      const m = byAuthor.get(cat.itemAuthor[item]!) ?? new Map<number, number>();
      m.set(cat.itemCluster[item]!, (m.get(cat.itemCluster[item]!) ?? 0) + 1);
      byAuthor.set(cat.itemAuthor[item]!, m);
    }
    let inHome = 0;
    for (const m of byAuthor.values()) inHome += Math.max(...m.values());
    expect(inHome / cat.numItems).toBeGreaterThan(0.9);
    // Tags: two items of the same cluster share a tag far more often than items of different clusters.
    const rng = new Rng(1);
    const tagsOf = (i: number) => new Set(cat.itemTagIds.subarray(cat.itemTagOffsets[i]!, cat.itemTagOffsets[i + 1]!));
    let same = 0, diff = 0;
    for (let n = 0; n < 2000; n++) {
      const a = 1 + rng.int(cat.numItems);
      const c = cat.itemCluster[a]!;
      const b = cat.clusterItems[cat.clusterStart[c]! + rng.int(cat.clusterStart[c + 1]! - cat.clusterStart[c]!)]!;
      const x = 1 + rng.int(cat.numItems);
      const ta = tagsOf(a);
      if ([...tagsOf(b)].some((t) => ta.has(t))) same++;
      if (cat.itemCluster[x] !== c && [...tagsOf(x)].some((t) => ta.has(t))) diff++;
    }
    expect(same / 2000).toBeGreaterThan(0.9);
    expect(diff / 2000).toBeLessThan(0.2);
    // Zipf: the most popular item of a cluster is drawn far more often than the median one.
    const counts = new Map<number, number>();
    for (const g of users) for (const it of g.history.itemId) counts.set(it, (counts.get(it) ?? 0) + 1);
    let top = 0, mid = 0;
    for (let item = 1; item <= cat.numItems; item++) {
      if (cat.itemRank[item] === 0) top += counts.get(item) ?? 0;
      const size = cat.clusterStart[cat.itemCluster[item]! + 1]! - cat.clusterStart[cat.itemCluster[item]!]!;
      if (cat.itemRank[item] === Math.floor(size / 2)) mid += counts.get(item) ?? 0;
    }
    expect(top).toBeGreaterThan(10 * mid);
  });
});

describe('through the history store and the CLI', () => {
  const tiny = resolveLifelongOptions(undefined, { users: 12, scale: 0.01, items: 2000, clusters: 60, seed: 5, tRecent: 16, tMid: 64 });

  it('writes events, items, truth and manifest; a re-run adds nothing', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'gems-gen-'));
    tmpDirs.push(dataDir);
    const config = loadConfig({ flags: { dataDir }, env: {} });
    const paths = generatedPaths(dataDir);
    const store = await openHistoryStore(config);
    try {
      const r = await writeLifelong(store, tiny, { truthPath: paths.truth, usersPath: paths.users, manifestPath: paths.manifest, batchEvents: 500 });
      expect(r.users).toBe(12);
      expect(r.events).toBe(plannedEvents(tiny));
      expect(r.added).toBe(r.events);
      const stats = await store.stats();
      expect(stats.users).toBe(12);
      expect(stats.events).toBe(r.events);
      expect((await store.items()).length).toBe(2000);

      const tcat = buildCatalogue(tiny);
      const tagIdOf = await store.tagIds(tcat.tagNames);
      const truth = readTruth(paths.truth);
      expect(truth).toHaveLength(12);
      const bad = join(dataDir, 'bad-truth.jsonl');
      writeFileSync(bad, JSON.stringify(truth[0]) + '\n' + JSON.stringify({ ...truth[1], item_id: 'x' }) + '\n');
      expect(() => readTruth(bad)).toThrow(/bad-truth.jsonl:2: field item_id must be a number/);
      for (const u of [1, 7, 12]) {
        const g = generateUser(tcat, tiny, u);
        const h = await store.userHistory(u);
        expect(h.length).toBe(g.history.length);
        expect(Array.from(h.itemId)).toEqual(Array.from(g.history.itemId));
        expect(Array.from(h.ts)).toEqual(Array.from(g.history.ts));
        expect(Array.from(h.labels)).toEqual(Array.from(g.history.labels));
        expect(Array.from(h.playMs)).toEqual(Array.from(g.history.playMs));
        expect(Array.from(h.tagOffsets)).toEqual(Array.from(g.history.tagOffsets));
        expect(Array.from(h.tagIds)).toEqual(Array.from(g.history.tagIds, (t) => tagIdOf[t]!));
        expect(truth.find((t) => t.user_id === u)).toEqual(g.truth[0]);
      }
      // Items carry author, tags (as store tag ids) and the cluster title.
      const items = await store.items();
      const ids = tagIdOf;
      const k = Array.from(items.itemId).indexOf(17);
      expect(items.authorId[k]).toBe(tcat.itemAuthor[17]);
      expect(items.titles[k]).toBe(`cluster ${tcat.itemCluster[17]} item ${tcat.itemIndexInCluster[17]}`);
      const storeTags = Array.from(items.tagIds.subarray(items.tagOffsets[k]!, items.tagOffsets[k + 1]!));
      const want = Array.from(tcat.itemTagIds.subarray(tcat.itemTagOffsets[17]!, tcat.itemTagOffsets[18]!)).map((t) => ids[t]!);
      expect(storeTags.sort()).toEqual(want.sort());

      const again = await writeLifelong(store, tiny, { truthPath: paths.truth, usersPath: paths.users, manifestPath: paths.manifest });
      expect(again.added).toBe(0);
      expect(again.duplicates).toBe(r.events);
      expect((await store.stats()).events).toBe(r.events);
    } finally {
      await store.close();
    }
  });

  it('gems generate lifelong: runs, is idempotent, refuses to mix another data set into the same users', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'gems-gen-cli-'));
    tmpDirs.push(dataDir);
    const lines: string[] = [];
    const logs: string[] = [];
    const prevSink = setLogSink((l) => logs.push(l));
    try {
      const argv = ['generate', 'lifelong', '--users', '5', '--scale', '0.01', '--items', '1000', '--clusters', '50', '--seed', '9', '--data-dir', dataDir];
      expect(await runCli(argv, (l) => lines.push(l))).toBe(0);
      const first = JSON.parse(lines[0]!) as { users: number; events: number; added: number };
      expect(first.users).toBe(5);
      expect(first.added).toBe(first.events);
      expect(await runCli(argv, (l) => lines.push(l))).toBe(0);
      expect((JSON.parse(lines[1]!) as { added: number }).added).toBe(0);
      const otherSeed = argv.map((a) => (a === '9' ? '10' : a));
      expect(await runCli(otherSeed, (l) => lines.push(l))).toBe(2);
      expect(logs.join('\n')).toMatch(/already holds user 1/);
      expect(await runCli(['generate', 'lifelong', '--scale', '-1', '--data-dir', dataDir], (l) => lines.push(l))).toBe(2);
      expect(await runCli(['generate', 'other', '--data-dir', dataDir], (l) => lines.push(l))).toBe(2);
    } finally {
      setLogSink(prevSink);
    }
  });

  it('gems generate lifelong --first-user: another user range keeps the truth and interests of the users already there', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'gems-gen-add-'));
    tmpDirs.push(dataDir);
    const paths = generatedPaths(dataDir);
    const logs: string[] = [];
    const prevSink = setLogSink((l) => logs.push(l));
    const gen = (...extra: string[]) =>
      runCli(['generate', 'lifelong', '--users', '5', '--scale', '0.01', '--items', '1000', '--clusters', '50', '--seed', '9', '--data-dir', dataDir, ...extra], () => {});
    const lines = (p: string) => readFileSync(p, 'utf8').split('\n').filter((l) => l.trim());
    const userOf = (l: string) => (JSON.parse(l) as { user_id: number }).user_id;
    try {
      // Held-out users first (ids 6..8), then the training users 1..5 into the same data dir.
      expect(await gen('--first-user', '6', '--users', '3')).toBe(0);
      const heldOut = { truth: lines(paths.truth), users: lines(paths.users) };
      expect(await gen()).toBe(0);
      const truth = lines(paths.truth);
      expect(truth.map(userOf)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
      expect(truth.slice(5)).toEqual(heldOut.truth);
      expect(lines(paths.users).slice(5)).toEqual(heldOut.users);
      expect(readTruth(paths.truth)).toHaveLength(8);
      const manifest = JSON.parse(readFileSync(paths.manifest, 'utf8')) as GeneratedManifest;
      expect(manifest.options.firstUserId).toBe(1);
      expect(manifest.users).toBe(5);
      expect(manifest.files).toEqual({ users: 8, targets: 8, dormant_targets: readTruth(paths.truth).filter((t) => t.dormant).length });
      expect(manifest.earlier_runs?.map((r) => [r.options.firstUserId, r.users])).toEqual([[6, 3]]);

      // A malformed earlier truth file stops the next run before it writes anything, naming the file and line.
      const config = loadConfig({ flags: { dataDir }, env: {} });
      const eventsBefore = await (async () => {
        const store = await openHistoryStore(config, { readOnly: true });
        try {
          return (await store.stats()).events;
        } finally {
          await store.close();
        }
      })();
      writeFileSync(paths.truth, truth[0] + '\n{"user_id": "two"}\n');
      expect(await gen('--first-user', '20', '--users', '2')).not.toBe(0);
      expect(logs.join('\n')).toMatch(/truth\.jsonl:2: field user_id must be an integer/);
      const store = await openHistoryStore(config, { readOnly: true });
      try {
        expect((await store.stats()).events).toBe(eventsBefore);
      } finally {
        await store.close();
      }
      expect(lines(paths.users).map(userOf)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    } finally {
      setLogSink(prevSink);
    }
  });
});
