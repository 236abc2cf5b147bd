// Evaluation of the generative model. The model returns ranked item lists by beam search (beam width = the largest
// K), so a target's rank is its position in the list (absent = not retrieved).
// - Leave-one-out (ML-1M protocol): "filtered" runs the beam with the user's input items excluded, so it still
//   yields K items outside the history (the HSTU protocol); "unfiltered" runs it without exclusion.
// - Lifelong (generated set): Recall@K / NDCG@K for K ∈ {10, 100, 500} and HRecall@Level ℓ@K, overall and split
//   by the generator's ground truth (targets from dormant interests vs current ones); the user's seen items are
//   filtered from the beam unless asked otherwise (the generator's targets are unseen items).
import { sliceHistory, type History } from '../data/events.js';
import { scoped } from '../model/ops.js';
import { beamSearch } from '../model/beam.js';
import type { IndexerSelection } from '../model/gems.js';
import { servingTopK, type LoadedGems } from '../model/recommend.js';
import { batchFromInputs } from '../train/samples.js';
import { logger, progress } from '../util/log.js';
import { hierarchicalHit, rankInList, RankAccumulator } from './metrics.js';

const log = logger('eval.gems');

export interface ListRun {
  items: Int32Array[];
  codes: Int32Array[];
}

/** Ranked lists (k items) for inputs, in batches; `exclude` per input (or null). */
/** How to run the mid-term attention in evaluation: indexer top-k (default: servingTopK) and its selection. */
export interface EvalAttention {
  topK?: number;
  selection?: IndexerSelection;
  /** Share of every list reserved for returning interests (BeamOptions.reserveReturns; return-intent models). */
  reserveReturns?: number;
  /** Condition every level on the item being admissible (BeamOptions.renormalize). */
  renormalize?: boolean;
}

export function rankLists(loaded: LoadedGems, inputs: History[], k: number, opts: { batchSize?: number; exclude?: (Set<number> | null)[]; task?: string } & EvalAttention): ListRun {
  const { model, sid, ctx } = loaded;
  const bs = opts.batchSize ?? 8;
  const topK = opts.topK ?? servingTopK(loaded);
  const items: Int32Array[] = [];
  const codes: Int32Array[] = [];
  const prog = progress(log, opts.task ?? 'beam search', inputs.length, 'users');
  for (let i = 0; i < inputs.length; i += bs) {
    const part = inputs.slice(i, i + bs);
    const batch = batchFromInputs(ctx, part);
    const out = scoped(() => beamSearch(model, sid, model.encodeForSearch(batch, topK, opts.selection), { k, exclude: opts.exclude?.slice(i, i + bs), topK, selection: opts.selection, reserveReturns: opts.reserveReturns, renormalize: opts.renormalize }));
    for (const u of out.users) {
      items.push(u.items);
      codes.push(u.codes);
    }
    prog.tick(part.length);
  }
  prog.done();
  return { items, codes };
}

export interface GemsLooResult {
  split: 'valid' | 'test';
  filtered: Record<string, number>;
  unfiltered: Record<string, number>;
  seconds: number;
}

/** Leave-one-out on full histories (last = test, second-to-last = valid), as the ID baseline's protocol. */
export function evaluateGemsLeaveOneOut(loaded: LoadedGems, histories: History[], split: 'valid' | 'test', ks = [10, 50, 200], opts: { batchSize?: number } & EvalAttention = {}): GemsLooResult {
  const t0 = performance.now();
  const users = histories.filter((h) => h.length >= 3);
  const cut = split === 'test' ? 1 : 2;
  const inputs = users.map((h) => sliceHistory(h, 0, h.length - cut));
  const targets = users.map((h) => h.itemId[h.length - cut]!);
  const maxK = Math.max(...ks);
  const exclude = inputs.map((h, i) => {
    const s = new Set<number>(h.itemId);
    s.delete(targets[i]!); // the target itself is never filtered (as the protocol)
    return s;
  });
  const filteredRun = rankLists(loaded, inputs, maxK, { ...opts, exclude, task: `${split} beam (filtered)` });
  const plainRun = rankLists(loaded, inputs, maxK, { ...opts, task: `${split} beam (unfiltered)` });
  const f = new RankAccumulator(ks);
  const u = new RankAccumulator(ks);
  targets.forEach((t, i) => {
    f.add(rankInList(filteredRun.items[i]!, t));
    u.add(rankInList(plainRun.items[i]!, t));
  });
  return { split, filtered: f.result(), unfiltered: u.result(), seconds: (performance.now() - t0) / 1000 };
}

/** A held-out target of the generated lifelong set (the fields of the generator's TruthRecord we use). */
export interface LifelongTarget {
  userId: number;
  position: number;
  itemId: number;
  dormant: boolean;
}

export interface LifelongResult {
  overall: Record<string, number>;
  dormant: Record<string, number>;
  current: Record<string, number>;
  seconds: number;
}

/**
 * Recall@K / NDCG@K and HRecall@ℓ@K for targets (each input = the user's events before the target position).
 * With one relevant item per target, Recall@K equals HR@K. `filterSeen` (default true) runs the beam with the
 * input's items excluded, as serving does and as the generator intends (its targets are items the user has not
 * seen); the target itself is never excluded (a generator target may repeat an item when its interest has none left).
 */
export function evaluateLifelong(loaded: LoadedGems, histories: Map<number, History>, targets: LifelongTarget[], ks = [10, 100, 500], opts: { batchSize?: number; filterSeen?: boolean } & EvalAttention = {}): LifelongResult {
  const t0 = performance.now();
  const W = loaded.model.W;
  const usable = targets.filter((t) => histories.has(t.userId) && t.position >= 1 && loaded.sid.rowOf(t.itemId) >= 0);
  if (usable.length < targets.length) log.warn('targets skipped (unknown user, empty input or item without SID)', { skipped: targets.length - usable.length });
  const inputs = usable.map((t) => sliceHistory(histories.get(t.userId)!, 0, t.position));
  const maxK = Math.max(...ks);
  const exclude =
    opts.filterSeen === false
      ? undefined
      : inputs.map((h, i) => {
          const seen = new Set<number>(h.itemId);
          seen.delete(usable[i]!.itemId);
          return seen;
        });
  const run = rankLists(loaded, inputs, maxK, { ...opts, exclude, task: exclude ? 'lifelong beam (seen items filtered)' : 'lifelong beam' });
  const groups = { overall: new Agg(ks, W), dormant: new Agg(ks, W), current: new Agg(ks, W) };
  usable.forEach((t, i) => {
    const r = loaded.sid.rowOf(t.itemId);
    const tc = loaded.sid.codes.subarray(r * W, r * W + W);
    const rank = rankInList(run.items[i]!, t.itemId);
    for (const g of [groups.overall, t.dormant ? groups.dormant : groups.current]) g.add(rank, run.codes[i]!, tc);
  });
  return { overall: groups.overall.result(), dormant: groups.dormant.result(), current: groups.current.result(), seconds: (performance.now() - t0) / 1000 };
}

class Agg {
  private acc: RankAccumulator;
  private h: number[][];
  private n = 0;
  constructor(
    readonly ks: number[],
    readonly W: number,
  ) {
    this.acc = new RankAccumulator(ks);
    this.h = ks.map(() => new Array(W).fill(0));
  }
  add(rank: number, beamCodes: Int32Array, target: Int32Array): void {
    this.n++;
    this.acc.add(rank);
    this.ks.forEach((k, i) => {
      for (let l = 1; l <= this.W; l++) this.h[i]![l - 1]! += hierarchicalHit(beamCodes, this.W, k, target, l);
    });
  }
  result(): Record<string, number> {
    const base = this.acc.result();
    const out: Record<string, number> = { targets: this.n };
    this.ks.forEach((k, i) => {
      out[`Recall@${k}`] = base[`HR@${k}`]!;
      out[`NDCG@${k}`] = base[`NDCG@${k}`]!;
      for (let l = 1; l <= this.W; l++) out[`HRecall@L${l}@${k}`] = this.n ? this.h[i]![l - 1]! / this.n : 0;
    });
    return out;
  }
}
