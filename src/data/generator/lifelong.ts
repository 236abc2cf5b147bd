// Synthetic lifelong histories where old history matters (issue 2, README "Lifelong-history generator").
//
// A pure, seeded core: `generateUser` builds one user's whole history (events as columns) plus ground truth for
// its held-out targets, from `new Rng(seed).fork(userId)`, so a user's events do not depend on batch order or on
// how many other users are generated. `generateLifelong` walks users in id order and packs them into
// EventColumns batches of bounded size. Writing to the HistoryStore lives in ./write.ts.
//
// Structure of one user:
// - length: log-normal clipped to [minLength, maxLength] × scale, with μ set so the clipped mean is
//   meanLength × scale; or fixed;
// - 3–24 lifetime interests (clusters drawn by global cluster popularity), each with a weight, an affinity and
//   a favourite author, and a kind: `core` (always on), `periodic` (on for a window every period, e.g. a
//   season), `episodic` (on during 1–3 bursts at random points, e.g. triggered by an outside event);
// - sessions of ~20 events: each session focuses on 1–2 of the interests active at that point; events come
//   from a focus interest, another active interest, or exploration (a cluster outside the lifetime set);
// - inactive interests appear only through rare triggered recalls (a session briefly touches 1–3 items of one,
//   `recallRate`), so when a periodic/episodic interest returns, the evidence of it is mostly in events from its
//   previous activity, often older than T_mid;
// - affinity shows in play time (completion), replays, likes, follows (of the favourite author), shares;
//   exploration events are mostly skipped;
// - timestamps: in a session each event starts after the previous one's play time plus seconds–minutes; sessions
//   are hours–days apart, spread over a 1.5–5-year span ending near `endTs`;
// - the last `targetsPerUser` events are held-out targets, chosen deliberately: with probability
//   `dormantTargetShare` from an interest not seen in the last T_mid events (visible only in the lifecycle
//   stream), otherwise from the current session's focus; the target item is one the user has not seen.
import { Rng } from '../../util/random.js';
import type { EventColumns, History } from '../events.js';
import { historiesToBatch, LABEL } from '../events.js';
import { buildCatalogue, searchCdf, type Catalogue, type CatalogueOptions } from './catalogue.js';

export interface LifelongOptions extends CatalogueOptions {
  users: number;
  /** User ids are firstUserId .. firstUserId + users - 1. */
  firstUserId: number;
  /** Multiplies history lengths (mean, min, max) for small runs. */
  scale: number;
  meanLength: number;
  /** σ of log(length): larger = heavier tail. */
  lengthSigma: number;
  maxLength: number;
  minLength: number;
  /** When > 0 every user has exactly this many events (benchmarks); scale is ignored. */
  fixedLength: number;
  /** Held-out targets at the end of each history. */
  targetsPerUser: number;
  /** Probability that a target comes from an interest dormant for more than tMid events. */
  dormantTargetShare: number;
  /** Share of events from clusters outside the user's interests. */
  exploreRate: number;
  /** Probability that a session briefly recalls (1–3 events) an interest that is not active ("triggered" return). */
  recallRate: number;
  /** Stream budgets the dormancy of targets is measured against (config.streams). */
  tRecent: number;
  tMid: number;
  /** Histories end shortly before this time (epoch ms); fixed so output is reproducible. */
  endTs: number;
}

export const DEFAULT_LIFELONG: LifelongOptions = {
  seed: 42,
  users: 1000,
  firstUserId: 1,
  scale: 1,
  meanLength: 14_500,
  lengthSigma: 1.0,
  maxLength: 100_000,
  minLength: 100,
  fixedLength: 0,
  items: 20_000,
  clusters: 200,
  itemZipf: 1.0,
  clusterZipf: 0.7,
  targetsPerUser: 1,
  dormantTargetShare: 0.4,
  exploreRate: 0.08,
  recallRate: 0.05,
  tRecent: 256,
  tMid: 1024,
  endTs: Date.UTC(2026, 0, 1),
};

/** Named option sets. `bench100k` is the history-scan benchmark set (100 users × exactly 100,000 events). */
export const LIFELONG_PRESETS: Record<string, Partial<LifelongOptions>> = {
  bench100k: { users: 100, fixedLength: 100_000 },
  small: { users: 200, scale: 0.05 },
  full: { users: 1000 },
};

export function validateLifelongOptions(o: LifelongOptions): void {
  const bad = (key: string, why: string): never => {
    throw new Error(`generator: invalid ${key}: ${why}`);
  };
  const posInt = (key: keyof LifelongOptions, min: number) => {
    const v = o[key] as number;
    if (!Number.isInteger(v) || v < min) bad(key, `must be an integer ≥ ${min} (got ${v})`);
  };
  posInt('users', 1);
  posInt('firstUserId', 0);
  posInt('items', 10);
  posInt('clusters', 2);
  posInt('targetsPerUser', 1);
  posInt('tRecent', 1);
  posInt('tMid', o.tRecent + 1);
  posInt('fixedLength', 0);
  if (o.fixedLength > 0 && o.fixedLength < o.targetsPerUser + 2) bad('fixedLength', `must be ≥ targetsPerUser + 2`);
  if (!(o.scale > 0)) bad('scale', `must be > 0 (got ${o.scale})`);
  if (!(o.meanLength >= 1)) bad('meanLength', `must be ≥ 1 (got ${o.meanLength})`);
  if (!(o.minLength >= 1 && o.maxLength >= o.minLength)) bad('minLength/maxLength', `need 1 ≤ minLength ≤ maxLength`);
  if (!(o.lengthSigma >= 0)) bad('lengthSigma', `must be ≥ 0`);
  if (!(o.dormantTargetShare >= 0 && o.dormantTargetShare <= 1)) bad('dormantTargetShare', 'must be in [0, 1]');
  if (!(o.exploreRate >= 0 && o.exploreRate < 1)) bad('exploreRate', 'must be in [0, 1)');
  if (!(o.recallRate >= 0 && o.recallRate <= 1)) bad('recallRate', 'must be in [0, 1]');
  // Exploration draws from clusters outside the (≤ 24) lifetime interests.
  if (o.clusters < 2 * MAX_INTERESTS) bad('clusters', `must be ≥ ${2 * MAX_INTERESTS} (exploration needs clusters outside a user's interests)`);
  if (o.users + o.firstUserId > 2 ** 31 - 1) bad('users', 'user ids overflow int32');
}

export type InterestKind = 'core' | 'periodic' | 'episodic';

export interface Interest {
  cluster: number;
  kind: InterestKind;
  weight: number;
  /** 0..1: how much the user likes it (drives completion, likes, follows). */
  affinity: number;
  /** Author-run index (Catalogue.runStart) of the favourite author in this cluster. */
  favouriteRun: number;
  favouriteAuthor: number;
  /** periodic: active when (t + phase) mod period < window (t = event index). */
  period: number;
  phase: number;
  window: number;
  /** episodic: active during [start, end) pairs. */
  episodes: number[];
}

/** Where an interest was last seen before a target, relative to the stream budgets. */
export type LastSeenStream = 'recent' | 'mid' | 'lifecycle' | 'never';

/** One line of the ground-truth file (snake_case: it is read by other tools). */
export interface TruthRecord {
  user_id: number;
  /** 0-based index of the target event in the user's history. */
  position: number;
  ts: number;
  item_id: number;
  /** The user saw this item before (only when every interest's cluster is exhausted; normally false). */
  seen_before: boolean;
  /** Global interest id = the item's cluster. */
  cluster: number;
  /** Index of the interest in the user's lifetime interest list. */
  interest: number;
  interest_kind: InterestKind;
  /** What the generator meant: bring back a dormant interest, or continue the current session. */
  intent: 'return' | 'continue';
  /** The interest does not appear in the last tMid events before the target (only in the lifecycle stream). */
  dormant: boolean;
  /** Events / ms since the interest was last seen (null if never seen before). */
  dormant_events: number | null;
  dormant_ms: number | null;
  last_seen_position: number | null;
  last_seen_stream: LastSeenStream;
  history_length: number;
  t_recent: number;
  t_mid: number;
}

export interface GeneratedUser {
  /** The whole history, targets included (they are its last `truth.length` events). */
  history: History;
  /** Per event: index of the interest that produced it, -1 for exploration. */
  interestOf: Int16Array;
  interests: Interest[];
  /** Focus interests of the last session, the one the held-out targets continue (1 or 2 entries, may repeat). */
  lastFocus: number[];
  truth: TruthRecord[];
}

const MAX_INTERESTS = 24;
const DAY = 86_400_000;

export function resolveLifelongOptions(preset: string | undefined, overrides: Partial<LifelongOptions>): LifelongOptions {
  let base: Partial<LifelongOptions> = {};
  if (preset !== undefined) {
    const p = LIFELONG_PRESETS[preset];
    if (!p) throw new Error(`generator: unknown preset '${preset}' (known: ${Object.keys(LIFELONG_PRESETS).join(', ')})`);
    base = p;
  }
  const defined = Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined));
  const o = { ...DEFAULT_LIFELONG, ...base, ...defined } as LifelongOptions;
  validateLifelongOptions(o);
  return o;
}

/** Standard normal CDF (Abramowitz–Stegun 7.1.26 erf, |error| < 1.5e-7). */
function normalCdf(z: number): number {
  const x = Math.abs(z) / Math.SQRT2;
  const t = 1 / (1 + 0.3275911 * x);
  const erf = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-x * x);
  return z >= 0 ? 0.5 * (1 + erf) : 0.5 * (1 - erf);
}

/** Mean of a log-normal(mu, sigma) clipped to [lo, hi]. */
function clippedLogNormalMean(mu: number, sigma: number, lo: number, hi: number): number {
  if (sigma === 0) return Math.min(hi, Math.max(lo, Math.exp(mu)));
  const a = (Math.log(lo) - mu) / sigma;
  const b = (Math.log(hi) - mu) / sigma;
  const body = Math.exp(mu + (sigma * sigma) / 2) * (normalCdf(b - sigma) - normalCdf(a - sigma));
  return lo * normalCdf(a) + body + hi * (1 - normalCdf(b));
}

const muCache = new Map<string, number>();

/** μ of log(length) such that the clipped distribution's mean is meanLength × scale (clipping moves the mean). */
function lengthMu(mean: number, sigma: number, lo: number, hi: number): number {
  const key = `${mean}|${sigma}|${lo}|${hi}`;
  let mu = muCache.get(key);
  if (mu !== undefined) return mu;
  const target = Math.min(hi, Math.max(lo, mean));
  let a = Math.log(lo) - 10 * sigma - 1;
  let b = Math.log(hi) + 10 * sigma + 1;
  for (let i = 0; i < 100; i++) {
    const m = (a + b) / 2;
    if (clippedLogNormalMean(m, sigma, lo, hi) < target) a = m;
    else b = m;
  }
  mu = (a + b) / 2;
  muCache.set(key, mu);
  return mu;
}

/** Number of events (targets included) of a user; uses the user's own stream. */
export function sampleLength(rng: Rng, o: LifelongOptions): number {
  if (o.fixedLength > 0) return o.fixedLength;
  const lo = Math.max(o.targetsPerUser + 2, Math.round(o.minLength * o.scale));
  const hi = Math.max(lo, Math.round(o.maxLength * o.scale));
  const mu = lengthMu(o.meanLength * o.scale, o.lengthSigma, lo, hi);
  return Math.min(hi, Math.max(lo, Math.round(Math.exp(rng.normal(mu, o.lengthSigma)))));
}

function pickCluster(rng: Rng, cat: Catalogue): number {
  return searchCdf(cat.clusterPopularityCdf, 0, cat.numClusters, rng.next());
}

function makeInterests(rng: Rng, cat: Catalogue, h: number): Interest[] {
  const k = Math.min(MAX_INTERESTS, Math.max(3, Math.round(3 + 1.5 * Math.log2(h / 500 + 1) + rng.normal(0, 1))));
  const taken = new Set<number>();
  const out: Interest[] = [];
  while (out.length < k) {
    const c = pickCluster(rng, cat);
    if (taken.has(c)) continue;
    taken.add(c);
    const i = out.length;
    const kind: InterestKind = i === 0 || (i === 1 && rng.next() < 0.4) ? 'core' : rng.next() < 0.4 ? 'periodic' : 'episodic';
    const runs = cat.clusterRunStart[c + 1]! - cat.clusterRunStart[c]!;
    const favouriteRun = cat.clusterRunStart[c]! + rng.int(runs);
    const it: Interest = {
      cluster: c,
      kind,
      weight: Math.exp(rng.normal(0, 0.7)) * (kind === 'core' ? 1.5 : 1),
      affinity: kind === 'core' ? 0.65 + 0.35 * rng.next() : 0.35 + 0.6 * rng.next(),
      favouriteRun,
      favouriteAuthor: cat.itemAuthor[cat.clusterItems[cat.runStart[favouriteRun]!]!]!,
      period: 0,
      phase: 0,
      window: 0,
      episodes: [],
    };
    if (kind === 'periodic') {
      const cycles = 2 + rng.int(6);
      it.period = Math.max(20, Math.floor(h / cycles));
      it.window = Math.max(5, Math.floor(it.period * (0.08 + 0.17 * rng.next())));
      it.phase = rng.int(it.period);
    } else if (kind === 'episodic') {
      const n = 1 + rng.int(3);
      for (let e = 0; e < n; e++) {
        const len = Math.max(10, Math.round(h * (0.02 + 0.1 * rng.next())));
        const start = rng.int(Math.max(1, h - len));
        it.episodes.push(start, start + len);
      }
    }
    out.push(it);
  }
  return out;
}

function isActive(it: Interest, t: number): boolean {
  if (it.kind === 'core') return true;
  if (it.kind === 'periodic') return (t + it.phase) % it.period < it.window;
  for (let e = 0; e < it.episodes.length; e += 2) if (t >= it.episodes[e]! && t < it.episodes[e + 1]!) return true;
  return false;
}

/** Generates one user's history and targets. Pure in (catalogue, options, userId). */
export function generateUser(cat: Catalogue, o: LifelongOptions, userId: number): GeneratedUser {
  const rng = new Rng(o.seed).fork(userId);
  const n = sampleLength(rng, o);
  const nTargets = Math.min(o.targetsPerUser, n - 2);
  const h = n - nTargets;
  const interests = makeInterests(rng, cat, h);
  const K = interests.length;
  const lifetime = new Uint8Array(cat.numClusters);
  for (const it of interests) lifetime[it.cluster] = 1;

  const itemId = new Int32Array(n);
  const authorId = new Int32Array(n);
  const playMs = new Float32Array(n);
  const durationMs = new Float32Array(n);
  const labels = new Uint8Array(n);
  const interestOf = new Int16Array(n);
  const sessionStart = new Uint8Array(n);
  const tagOffsets = new Int32Array(n + 1);
  const tagBuf = new Int32Array(n * 4);
  let tagPos = 0;
  const lastSeen = new Int32Array(K).fill(-1);
  const count = new Int32Array(K);
  const seen = new Uint8Array(cat.numItems + 1);

  const zipfItem = (c: number): number => cat.clusterItems[searchCdf(cat.clusterCdf, cat.clusterStart[c]!, cat.clusterStart[c + 1]!, rng.next())]!;

  const emit = (t: number, item: number, interest: number): void => {
    itemId[t] = item;
    authorId[t] = cat.itemAuthor[item]!;
    const dur = cat.itemDurationMs[item]!;
    durationMs[t] = dur;
    interestOf[t] = interest;
    seen[item] = 1;
    const t0 = cat.itemTagOffsets[item]!;
    const t1 = cat.itemTagOffsets[item + 1]!;
    for (let j = t0; j < t1; j++) tagBuf[tagPos++] = cat.itemTagIds[j]!;
    tagOffsets[t + 1] = tagPos;
    let lab = 0;
    let r: number;
    if (interest < 0) {
      // Exploration noise: mostly skipped, rarely liked.
      r = Math.min(1, Math.abs(rng.normal(0.12, 0.15)));
      if (rng.next() < 0.005) lab |= LABEL.like;
      if (rng.next() < 0.001) lab |= LABEL.share;
    } else {
      const it = interests[interest]!;
      const a = it.affinity;
      lastSeen[interest] = t;
      count[interest]++;
      r = Math.min(1, Math.max(0.02, rng.normal(0.25 + 0.65 * a, 0.2)));
      const full = r;
      if (rng.next() < 0.12 * a) r += 0.5 + rng.next(); // replays of things the user loves
      if (rng.next() < 0.02 + 0.35 * a * full * full) lab |= LABEL.like;
      if (rng.next() < (cat.itemAuthor[item] === it.favouriteAuthor ? 0.04 * a : 0.002)) lab |= LABEL.follow;
      if (rng.next() < 0.03 * a * full) lab |= LABEL.share;
      if (rng.next() < 0.015 * a) lab |= LABEL.comment;
    }
    if (r < 0.2) lab |= LABEL.skip;
    playMs[t] = Math.round(r * dur);
    labels[t] = lab;
  };

  const interestItem = (i: number): number => {
    const it = interests[i]!;
    if (rng.next() < 0.25) {
      const s = cat.runStart[it.favouriteRun]!;
      return cat.clusterItems[s + rng.int(cat.runEnd[it.favouriteRun]! - s)]!;
    }
    return zipfItem(it.cluster);
  };

  const exploreCluster = (): number => {
    for (let tries = 0; tries < 32; tries++) {
      const c = pickCluster(rng, cat);
      if (!lifetime[c]) return c;
    }
    let c = rng.int(cat.numClusters);
    while (lifetime[c]) c = (c + 1) % cat.numClusters;
    return c;
  };

  // Sessions over the history part.
  const active: number[] = [];
  const activeW = new Float64Array(K);
  const focus = [0, 0];
  let nFocus = 1;
  for (let t = 0; t < h; ) {
    const len = Math.min(h - t, Math.max(1, Math.round(Math.exp(rng.normal(Math.log(16), 0.8)))));
    sessionStart[t] = 1;
    active.length = 0;
    let wSum = 0;
    for (let i = 0; i < K; i++) {
      if (!isActive(interests[i]!, t)) continue;
      const it = interests[i]!;
      // Interests in their active phase dominate the steady core ones.
      activeW[active.length] = it.weight * (it.kind === 'core' ? 1 : 4);
      wSum += activeW[active.length]!;
      active.push(i);
    }
    const aw = activeW.subarray(0, active.length);
    nFocus = active.length > 1 && rng.next() < 0.4 ? 2 : 1;
    focus[0] = active[rng.weighted(aw, wSum)]!;
    focus[1] = nFocus === 2 ? active[rng.weighted(aw, wSum)]! : focus[0]!;
    // A triggered recall: a few events of an interest that is not in its active phase.
    let recall = -1;
    let recallLeft = 0;
    if (active.length < K && rng.next() < o.recallRate) {
      let total = 0;
      for (let i = 0; i < K; i++) if (!active.includes(i)) total += interests[i]!.weight;
      let r = rng.next() * total;
      for (let i = 0; i < K && recall < 0; i++) if (!active.includes(i) && (r -= interests[i]!.weight) < 0) recall = i;
      if (recall < 0) for (let i = K - 1; recall < 0; i--) if (!active.includes(i)) recall = i;
      recallLeft = 1 + rng.int(3);
    }
    for (let e = 0; e < len; e++, t++) {
      const u = rng.next();
      if (recallLeft > 0 && rng.next() * (len - e) < recallLeft) {
        recallLeft--;
        emit(t, interestItem(recall), recall);
      } else if (u < o.exploreRate) emit(t, zipfItem(exploreCluster()), -1);
      else {
        const i = u < o.exploreRate + 0.2 ? active[rng.weighted(aw, wSum)]! : focus[rng.int(nFocus)]!;
        emit(t, interestItem(i), i);
      }
    }
  }

  // Held-out targets, appended to the last session. A target is an item the user has not seen (evaluation
  // filters seen items), so only interests whose cluster still has unseen items qualify.
  const hasUnseen = (c: number): boolean => {
    for (let k = cat.clusterStart[c]!; k < cat.clusterStart[c + 1]!; k++) if (!seen[cat.clusterItems[k]!]) return true;
    return false;
  };
  const open = new Uint8Array(K);
  const pendingTruth: Omit<TruthRecord, 'ts' | 'dormant_ms'>[] = [];
  const targetLastSeenPos: number[] = [];
  for (let p = h; p < n; p++) {
    for (let i = 0; i < K; i++) open[i] = hasUnseen(interests[i]!.cluster) ? 1 : 0;
    const dormantAt = (i: number) => open[i] === 1 && count[i]! > 0 && p - lastSeen[i]! > o.tMid;
    let chosen = -1;
    let intent: TruthRecord['intent'] = 'continue';
    if (rng.next() < o.dormantTargetShare) {
      let total = 0;
      for (let i = 0; i < K; i++) if (dormantAt(i)) total += interests[i]!.weight * Math.log1p(count[i]!);
      if (total > 0) {
        let r = rng.next() * total;
        for (let i = 0; i < K && chosen < 0; i++) if (dormantAt(i) && (r -= interests[i]!.weight * Math.log1p(count[i]!)) < 0) chosen = i;
        for (let i = K - 1; i >= 0 && chosen < 0; i--) if (dormantAt(i)) chosen = i;
        intent = 'return';
      }
    }
    if (chosen < 0) {
      // Continue the current session: a focus interest, else the most recently seen interest with unseen items.
      const f = focus[rng.int(nFocus)]!;
      const g = focus[0]! === f ? focus[nFocus - 1]! : focus[0]!;
      if (open[f]) chosen = f;
      else if (open[g]) chosen = g;
      else for (let i = 0; i < K; i++) if (open[i] && (chosen < 0 || lastSeen[i]! > lastSeen[chosen]!)) chosen = i;
      if (chosen < 0) chosen = f; // every interest exhausted: the target repeats an item (truth says so)
    }
    const it = interests[chosen]!;
    let item = -1;
    for (let tries = 0; tries < 64 && item < 0; tries++) {
      const cand = zipfItem(it.cluster);
      if (!seen[cand]) item = cand;
    }
    for (let k = cat.clusterStart[it.cluster]!; k < cat.clusterStart[it.cluster + 1]! && item < 0; k++) {
      if (!seen[cat.clusterItems[k]!]) item = cat.clusterItems[k]!;
    }
    const seenBefore = item < 0;
    if (seenBefore) item = zipfItem(it.cluster);
    const last = lastSeen[chosen]!;
    const since = last >= 0 ? p - last : null;
    pendingTruth.push({
      user_id: userId,
      position: p,
      item_id: item,
      seen_before: seenBefore,
      cluster: it.cluster,
      interest: chosen,
      interest_kind: it.kind,
      intent,
      dormant: since !== null && since > o.tMid,
      dormant_events: since,
      last_seen_position: last >= 0 ? last : null,
      last_seen_stream: since === null ? 'never' : since <= o.tRecent ? 'recent' : since <= o.tMid ? 'mid' : 'lifecycle',
      history_length: n,
      t_recent: o.tRecent,
      t_mid: o.tMid,
    });
    targetLastSeenPos.push(last);
    emit(p, item, chosen);
  }

  // Timestamps: within a session, the next event starts after the previous play plus seconds–minutes; session
  // gaps are heavy-tailed and scaled so the history spans 1.5–5 years.
  const spanMs = (1.5 + 3.5 * rng.next()) * 365 * DAY;
  const endTs = o.endTs - rng.int(30 * DAY);
  const step = new Float64Array(n);
  let inSession = 0;
  let rawGaps = 0;
  for (let t = 1; t < n; t++) {
    if (sessionStart[t]) rawGaps += step[t] = Math.exp(rng.normal(0, 1.3));
    else inSession += step[t] = playMs[t - 1]! + Math.max(1000, Math.exp(rng.normal(Math.log(8000), 1.0)));
  }
  const factor = rawGaps > 0 ? Math.max(0, spanMs - inSession) / rawGaps : 0;
  const ts = new Float64Array(n);
  let clock = endTs - spanMs;
  ts[0] = Math.round(clock);
  for (let t = 1; t < n; t++) {
    clock += sessionStart[t] ? Math.max(10 * 60_000, step[t]! * factor) : step[t]!;
    ts[t] = Math.round(clock);
  }

  const seq = new Int32Array(n);
  for (let t = 0; t < n; t++) seq[t] = t;
  const truth: TruthRecord[] = pendingTruth.map((r, j) => {
    const last = targetLastSeenPos[j]!;
    return { ...r, ts: ts[r.position]!, dormant_ms: last >= 0 ? ts[r.position]! - ts[last]! : null };
  });

  return {
    history: {
      userId,
      length: n,
      itemId,
      ts,
      seq,
      authorId,
      tagOffsets,
      tagIds: tagBuf.slice(0, tagPos),
      playMs,
      durationMs,
      labels,
    },
    interestOf,
    interests,
    lastFocus: focus.slice(0, nFocus),
    truth,
  };
}

export interface UserSummary {
  user_id: number;
  length: number;
  interests: { cluster: number; kind: InterestKind; weight: number; affinity: number; events: number }[];
}

export interface GeneratedBatch {
  events: EventColumns;
  truth: TruthRecord[];
  users: UserSummary[];
}

export const GENERATOR_SOURCE = 'generator';

export function summariseUser(g: GeneratedUser): UserSummary {
  const events = new Int32Array(g.interests.length);
  for (let t = 0; t < g.interestOf.length; t++) if (g.interestOf[t]! >= 0) events[g.interestOf[t]!]++;
  return {
    user_id: g.history.userId,
    length: g.history.length,
    interests: g.interests.map((it, i) => ({
      cluster: it.cluster,
      kind: it.kind,
      weight: Number(it.weight.toFixed(4)),
      affinity: Number(it.affinity.toFixed(4)),
      events: events[i]!,
    })),
  };
}

/**
 * All users in id order, packed into batches of at least `batchEvents` events (a batch ends at a user boundary,
 * so it holds at most batchEvents + one user's history). Tag ids in the batches are catalogue tag indexes.
 */
export function* generateLifelong(o: LifelongOptions, batchEvents = 1_000_000, cat: Catalogue = buildCatalogue(o)): Generator<GeneratedBatch> {
  validateLifelongOptions(o);
  let histories: History[] = [];
  let truth: TruthRecord[] = [];
  let users: UserSummary[] = [];
  let pending = 0;
  for (let u = 0; u < o.users; u++) {
    const g = generateUser(cat, o, o.firstUserId + u);
    histories.push(g.history);
    truth.push(...g.truth);
    users.push(summariseUser(g));
    pending += g.history.length;
    if (pending >= batchEvents || u === o.users - 1) {
      yield { events: historiesToBatch(histories, GENERATOR_SOURCE), truth, users };
      histories = [];
      truth = [];
      users = [];
      pending = 0;
    }
  }
}
