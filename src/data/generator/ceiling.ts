// The generator's own ranking of its held-out targets: what Recall@K a ranker reaches when it knows the state the
// generator drew each target from. It tells what the generated-set targets ask of a model (issue 8: full GEMs
// ≥ 15% relative Recall@100 over recent-only), since no model can beat the distribution the targets come from.
//
// A target is drawn (lifelong.ts, "Held-out targets") as: with probability dormantTargetShare, a *return* — an
// interest not seen in the last tMid events, ∝ weight·log1p(count) — else a *continue* — a focus interest of the
// last session (or a fallback); then an unseen item of the interest's cluster by popularity. Two views rank items by
// that probability:
// - `full`: everything a model with the whole history could know (interests with their counts and recency);
// - `blind`: the continue part exactly, but returns only as a model without the lifecycle part could guess them:
//   a cluster absent from the last tMid events, by global cluster popularity (interests are drawn by it).
// The continue part knows the session's focus either `exact`ly (the generator's draw, which no model sees) or as
// `observed`: interests by their events in the last session (an event's interest is its cluster when that cluster
// is one of the user's interests, which a long history shows). Both views see the user's seen items, as evaluation
// filters them for every model. Users are regenerated from the options that wrote them (deterministic), so the
// store is not read.
import { RankAccumulator } from '../../eval/metrics.js';
import type { Catalogue } from './catalogue.js';
import { generateUser, type GeneratedUser, type LifelongOptions, type TruthRecord } from './lifelong.js';

export type CeilingView = 'full' | 'blind';
export const CEILING_VIEWS: CeilingView[] = ['full', 'blind'];
/** What the ranking knows of the current session's focus: the generator's own draw, or what the events show. */
export type FocusView = 'exact' | 'observed';
export const FOCUS_VIEWS: FocusView[] = ['exact', 'observed'];

/** The generator's shortest gap between sessions (lifelong.ts timestamps): a longer gap starts a session. */
const SESSION_GAP_MS = 10 * 60_000;

/** Tries of the generator's popularity draw of an unseen item before it takes the first unseen one (lifelong.ts). */
const UNSEEN_DRAW_TRIES = 64;

/** The probability step of a cumulative distribution at k (its range starts at lo). */
const cdfStep = (cdf: Float64Array, lo: number, k: number): number => cdf[k]! - (k > lo ? cdf[k - 1]! : 0);

/** Probability of each item of cluster c being the generator's target item, given the user's seen items. */
function itemDraw(cat: Catalogue, c: number, seen: Uint8Array): Map<number, number> {
  const out = new Map<number, number>();
  const lo = cat.clusterStart[c]!;
  const hi = cat.clusterStart[c + 1]!;
  let unseenMass = 0;
  let firstUnseen = -1;
  for (let k = lo; k < hi; k++) {
    if (seen[cat.clusterItems[k]!]) continue;
    unseenMass += cdfStep(cat.clusterCdf, lo, k);
    if (firstUnseen < 0) firstUnseen = cat.clusterItems[k]!;
  }
  if (firstUnseen < 0) {
    // Every item seen: the generator repeats one by popularity.
    for (let k = lo; k < hi; k++) out.set(cat.clusterItems[k]!, cdfStep(cat.clusterCdf, lo, k));
    return out;
  }
  const miss = Math.pow(1 - Math.min(1, unseenMass), UNSEEN_DRAW_TRIES);
  for (let k = lo; k < hi; k++) {
    const item = cat.clusterItems[k]!;
    if (seen[item]) continue;
    out.set(item, ((1 - miss) * cdfStep(cat.clusterCdf, lo, k)) / unseenMass + (item === firstUnseen ? miss : 0));
  }
  return out;
}

function addScaled(into: Map<number, number>, from: Map<number, number>, w: number): void {
  if (w <= 0) return;
  for (const [item, p] of from) into.set(item, (into.get(item) ?? 0) + w * p);
}

/** P(target item) for the target at `target.position` of a generated user, as the view knows it. */
export function targetDistribution(cat: Catalogue, o: LifelongOptions, g: GeneratedUser, target: TruthRecord, view: CeilingView, focusView: FocusView = 'exact'): Map<number, number> {
  const p = target.position;
  const h = g.history;
  const K = g.interests.length;
  const seen = new Uint8Array(cat.numItems + 1);
  const count = new Float64Array(K);
  const lastSeen = new Int32Array(K).fill(-1);
  for (let t = 0; t < p; t++) {
    seen[h.itemId[t]!] = 1;
    const i = g.interestOf[t]!;
    if (i >= 0) {
      count[i]++;
      lastSeen[i] = t;
    }
  }
  const draws = new Map<number, Map<number, number>>();
  const draw = (c: number) => {
    let d = draws.get(c);
    if (!d) draws.set(c, (d = itemDraw(cat, c, seen)));
    return d;
  };
  const open = g.interests.map((it) => {
    for (let k = cat.clusterStart[it.cluster]!; k < cat.clusterStart[it.cluster + 1]!; k++) if (!seen[cat.clusterItems[k]!]) return true;
    return false;
  });

  // Continue: a focus interest (uniform over the focus slots), else the other focus, else the open interest seen last.
  const cont = new Map<number, number>();
  if (focusView === 'exact') {
    const focus = g.lastFocus;
    for (const f of focus) {
      const other = focus[0] === f ? focus[focus.length - 1]! : focus[0]!;
      let chosen = open[f] ? f : open[other] ? other : -1;
      if (chosen < 0) for (let i = 0; i < K; i++) if (open[i] && (chosen < 0 || lastSeen[i]! > lastSeen[chosen]!)) chosen = i;
      if (chosen < 0) chosen = f;
      addScaled(cont, draw(g.interests[chosen]!.cluster), 1 / focus.length);
    }
  } else {
    // The focus as the events show it: open interests by their events in the last session (events since the last
    // gap of ≥ 10 minutes, the generator's shortest session gap), else in the last tRecent events.
    const sessionStart = (() => {
      let s = p - 1;
      while (s > 0 && h.ts[s]! - h.ts[s - 1]! < SESSION_GAP_MS) s--;
      return s;
    })();
    const weights = (from: number) => {
      const w = new Float64Array(K);
      for (let t = Math.max(0, from); t < p; t++) if (g.interestOf[t]! >= 0 && open[g.interestOf[t]!]) w[g.interestOf[t]!]++;
      return w;
    };
    let w = weights(sessionStart);
    if (w.every((x) => x === 0)) w = weights(p - o.tRecent);
    const total = w.reduce((a, b) => a + b, 0);
    if (total > 0) w.forEach((x, i) => addScaled(cont, draw(g.interests[i]!.cluster), x / total));
    else {
      // No open interest in sight: the generator's own fallback, the open interest seen last (else the one seen last).
      let chosen = -1;
      for (const needOpen of [true, false]) {
        for (let i = 0; i < K; i++) if ((open[i] || !needOpen) && lastSeen[i]! >= 0 && (chosen < 0 || lastSeen[i]! > lastSeen[chosen]!)) chosen = i;
        if (chosen >= 0) break;
      }
      addScaled(cont, draw(g.interests[Math.max(0, chosen)]!.cluster), 1);
    }
  }

  const q = o.dormantTargetShare;
  const ret = new Map<number, number>();
  if (view === 'full') {
    let total = 0;
    const w = g.interests.map((it, i) => (open[i] && count[i]! > 0 && p - lastSeen[i]! > o.tMid ? it.weight * Math.log1p(count[i]!) : 0));
    for (const x of w) total += x;
    if (total === 0) return cont; // no dormant interest: every target continues
    w.forEach((x, i) => addScaled(ret, draw(g.interests[i]!.cluster), x / total));
  } else {
    const inMid = new Uint8Array(cat.numClusters);
    for (let t = Math.max(0, p - o.tMid); t < p; t++) inMid[cat.itemCluster[h.itemId[t]!]!] = 1;
    const pop = (c: number) => cdfStep(cat.clusterPopularityCdf, 0, c);
    let total = 0;
    for (let c = 0; c < cat.numClusters; c++) if (!inMid[c]) total += pop(c);
    for (let c = 0; c < cat.numClusters; c++) if (!inMid[c] && total > 0) addScaled(ret, draw(c), pop(c) / total);
  }
  const out = new Map<number, number>();
  addScaled(out, cont, 1 - q);
  addScaled(out, ret, q);
  return out;
}

/** 0-based rank of `item` when items are ordered by probability (ties by id); Infinity when it has none. */
export function rankOf(dist: Map<number, number>, item: number): number {
  const p = dist.get(item);
  if (p === undefined || p <= 0) return Infinity;
  let rank = 0;
  for (const [i, q] of dist) if (q > p || (q === p && i < item)) rank++;
  return rank;
}

export interface CeilingResult {
  overall: Record<string, number>;
  dormant: Record<string, number>;
  current: Record<string, number>;
}

/** One ranking to evaluate: what it knows of returns and of the session's focus (default exact). */
export interface CeilingRanking {
  view: CeilingView;
  focus?: FocusView;
}

/**
 * Recall@K / NDCG@K of each ranking over truth targets, split by the generator's dormant flag; results in the order of
 * `rankings`, each user regenerated once for all of them. `optionsOf(user)` gives the options of the generator run
 * that wrote the user (a data dir may hold several runs); a user it does not know throws.
 */
export function evaluateCeiling(
  catOf: (o: LifelongOptions) => Catalogue,
  optionsOf: (userId: number) => LifelongOptions,
  truth: TruthRecord[],
  rankings: CeilingRanking[],
  opts: { ks?: number[]; onUser?: () => void } = {},
): CeilingResult[] {
  const ks = opts.ks ?? [10, 100, 500];
  const accs = rankings.map(() => ({ overall: new RankAccumulator(ks), dormant: new RankAccumulator(ks), current: new RankAccumulator(ks) }));
  const byUser = new Map<number, TruthRecord[]>();
  for (const t of truth) {
    const list = byUser.get(t.user_id);
    if (list) list.push(t);
    else byUser.set(t.user_id, [t]);
  }
  for (const [userId, targets] of byUser) {
    const o = optionsOf(userId);
    const cat = catOf(o);
    const g = generateUser(cat, o, userId);
    for (const t of targets) {
      // The ranking is only the truth's if regenerating gives the same user (same options and generator code).
      const again = g.truth.find((r) => r.position === t.position);
      if (!again || again.item_id !== t.item_id) {
        throw new Error(`user ${userId}: regenerating gives target ${again ? `item ${again.item_id}` : 'none'} at position ${t.position}, the truth file has item ${t.item_id} (data from other options or another generator version)`);
      }
      rankings.forEach((r, i) => {
        const rank = rankOf(targetDistribution(cat, o, g, t, r.view, r.focus), t.item_id);
        const acc = accs[i]!;
        acc.overall.add(rank);
        (t.dormant ? acc.dormant : acc.current).add(rank);
      });
    }
    opts.onUser?.();
  }
  const result = (a: RankAccumulator): Record<string, number> => {
    const r = a.result();
    const out: Record<string, number> = { targets: a.count };
    for (const k of ks) {
      out[`Recall@${k}`] = r[`HR@${k}`]!;
      out[`NDCG@${k}`] = r[`NDCG@${k}`]!;
    }
    return out;
  };
  return accs.map((a) => ({ overall: result(a.overall), dormant: result(a.dormant), current: result(a.current) }));
}
