// Training/evaluation samples for the GEMs model. A sample is (user, target position t): its input is the user's
// history strictly before t, cut into Recent / Mid-term / Lifecycle *as of t* (cutStreams on the prefix), its
// reference time is the last input event's — so nothing at or after the target can reach the model.
import { cutStreams, LABEL, sliceHistory, type History } from '../data/events.js';
import { buildStreamBatch, ItemVocab, type LifecycleSummarizer, type LifecycleSummary } from '../model/features.js';
import type { GemsBatch, GemsModelConfig } from '../model/gems.js';
import { coarseCodeOf, type SemanticIds } from '../model/sid.js';
import { Rng } from '../util/random.js';

export interface Sample {
  /** Index into the histories array. */
  user: number;
  /** Position of the target event in that history (input = events [0, t)). */
  t: number;
}

export interface SampleContext {
  cfg: GemsModelConfig;
  sid: SemanticIds;
  vocab: ItemVocab;
  summarizer: LifecycleSummarizer;
}

export function makeSampleContext(cfg: GemsModelConfig, sid: SemanticIds, summarizer: LifecycleSummarizer): SampleContext {
  if (summarizer.slots !== cfg.lifecycle.slots || summarizer.dim !== cfg.lifecycle.inDim) {
    throw new Error(`lifecycle summary is ${summarizer.slots}×${summarizer.dim}, model expects ${cfg.lifecycle.slots}×${cfg.lifecycle.inDim}`);
  }
  return { cfg, sid, vocab: new ItemVocab(sid.itemIds), summarizer };
}

/** Model input for inputs that are already "as of" the request: each history is everything the model may see. */
export function batchFromInputs(ctx: SampleContext, inputs: History[], lifecycleSummaries?: (LifecycleSummary | null | undefined)[]): GemsBatch {
  const { cfg, summarizer } = ctx;
  const B = inputs.length;
  const streams = inputs.map((h) => cutStreams(h, cfg.tRecent, cfg.tMid));
  const ref = inputs.map((h) => (h.length ? h.ts[h.length - 1]! : NaN));
  const lifecycle = new Float32Array(B * cfg.lifecycle.slots * cfg.lifecycle.inDim);
  const lifecycleValid = new Uint8Array(B * cfg.lifecycle.slots);
  const lifecycleCodes = new Int32Array(B * cfg.lifecycle.slots).fill(-1);
  const lifecycleInMid = new Uint8Array(B * cfg.lifecycle.slots);
  streams.forEach((s, b) => {
    // A precomputed summary (e.g. the user's stored lifecycle memory) wins over summarising the events here.
    const given = lifecycleSummaries?.[b];
    if (given && (given.slots !== cfg.lifecycle.slots || given.dim !== cfg.lifecycle.inDim)) {
      throw new Error(`lifecycle summary of user ${s.userId} is ${given.slots}×${given.dim}, model expects ${cfg.lifecycle.slots}×${cfg.lifecycle.inDim}`);
    }
    placeSummary(ctx, given ?? summarizer.summarize(s.lifecycle), s.mid, b, { lifecycle, lifecycleValid, lifecycleCodes, lifecycleInMid });
  });
  const fc = cfg.features;
  return {
    B,
    recent: buildStreamBatch(streams.map((s) => s.recent), cfg.tRecent, ctx.vocab, fc, ref),
    mid: buildStreamBatch(streams.map((s) => s.mid), cfg.tMid - cfg.tRecent, ctx.vocab, fc, ref),
    lifecycle,
    lifecycleValid,
    lifecycleCodes,
    lifecycleInMid,
  };
}

/**
 * Writes user b's lifecycle summary into the batch arrays: its vectors and validity, the slots' codes when the
 * summary names them, and — for models that read it (cfg.lifecycleInMid) — which of those codes also occur among
 * the mid-term events `mid`: known online, so a lifecycle interest that is not dormant can be told from one that is.
 */
function placeSummary(
  ctx: SampleContext,
  sum: LifecycleSummary,
  mid: History,
  b: number,
  out: Pick<GemsBatch, 'lifecycle' | 'lifecycleValid'> & { lifecycleCodes: Int32Array; lifecycleInMid: Uint8Array },
): void {
  const offset = b * sum.valid.length;
  out.lifecycle.set(sum.vectors, b * sum.vectors.length);
  out.lifecycleValid.set(sum.valid, offset);
  if (!sum.codes) return;
  out.lifecycleCodes.set(sum.codes, offset);
  if (!ctx.cfg.lifecycleInMid) return;
  const present = new Set<number>();
  for (let j = 0; j < mid.length; j++) present.add(coarseCodeOf(ctx.sid, mid.itemId[j]!));
  sum.codes.forEach((c, s) => {
    if (c >= 0 && present.has(c)) out.lifecycleInMid[offset + s] = 1;
  });
}

/** Batch + target codes (B × W) for samples; the input of sample (u, t) is history u cut before t. */
export function batchFromSamples(ctx: SampleContext, histories: History[], samples: Sample[]): { batch: GemsBatch; targetCodes: Int32Array; targetItems: Int32Array } {
  const W = ctx.sid.sizes.length;
  const inputs = samples.map((s) => sliceHistory(histories[s.user]!, 0, s.t));
  const targetItems = Int32Array.from(samples.map((s) => histories[s.user]!.itemId[s.t]!));
  const targetCodes = new Int32Array(samples.length * W);
  targetItems.forEach((item, i) => {
    const r = ctx.sid.rowOf(item);
    if (r < 0) throw new Error(`target item ${item} has no Semantic ID (tokenizer version ${ctx.sid.version})`);
    targetCodes.set(ctx.sid.codes.subarray(r * W, r * W + W), i * W);
  });
  return { batch: batchFromInputs(ctx, inputs), targetCodes, targetItems };
}

/**
 * Where history u's training events end (exclusive): before the held-out events — the last `heldOut` (leave-one-out:
 * validation, test), or with explicit test targets from testStart[u] on, those and the validation event before them.
 */
export function trainingEnd(h: History, u: number, heldOut: number, testStart?: Int32Array): number {
  return testStart ? testStart[u]! - 1 : h.length - heldOut;
}

/**
 * Training targets of one epoch: per user, up to `perUser` positions drawn from [minInput, end) where `end`
 * excludes the held-out events (leave-one-out: the last two). Targets whose item has no Semantic ID are skipped.
 */
export function trainingSamples(histories: History[], sid: SemanticIds, opts: { perUser: number; heldOut: number; minInput: number; seed: number; testStart?: Int32Array }): Sample[] {
  const out: Sample[] = [];
  histories.forEach((h, u) => {
    const rng = new Rng(opts.seed).fork(u);
    const end = trainingEnd(h, u, opts.heldOut, opts.testStart);
    const lo = Math.max(1, opts.minInput);
    if (end <= lo) return;
    const span = end - lo;
    const picks = new Set<number>();
    const want = Math.min(opts.perUser, span);
    // Always include the newest training target (most like the held-out ones), then random earlier ones.
    picks.add(end - 1);
    while (picks.size < want) picks.add(lo + rng.int(span));
    for (const t of [...picks].sort((a, b) => a - b)) if (sid.rowOf(h.itemId[t]!) >= 0) out.push({ user: u, t });
  });
  return out;
}

/** The held-out target of each user for a split (leave-one-out): valid = second-to-last, test = last. */
export function heldOutSamples(histories: History[], split: 'valid' | 'test', sid?: SemanticIds, testStart?: Int32Array): Sample[] {
  const out: Sample[] = [];
  histories.forEach((h, u) => {
    const last = testStart ? testStart[u]! : h.length - 1;
    const t = split === 'test' ? last : last - 1;
    if (t >= 1 && (!sid || sid.rowOf(h.itemId[t]!) >= 0)) out.push({ user: u, t });
  });
  return out;
}

/**
 * Dense training windows of one epoch: a window is named by its last target t (Sample {user, t}); its input is the
 * events [max(0, t − T_recent), t) and its targets are the events after each of them, up to t. Per user the newest
 * window (ending at the newest training target) always comes, then up to `perUser − 1` older non-overlapping ones,
 * drawn at random (seeded) among all of them, so long histories are covered over epochs. The older windows are
 * shifted by a random offset in [0, T_recent) per user and seed (they may overlap the newest one): a target's
 * context is split between the recent and mid-term streams differently from epoch to epoch, and the full-window
 * split that serving uses falls on every target over epochs, not only on the same few. Windows whose last target
 * sits before `minInput` are skipped.
 */
export function trainingWindows(histories: History[], opts: { perUser: number; tRecent: number; heldOut: number; seed: number; minInput?: number; testStart?: Int32Array }): Sample[] {
  const lo = Math.max(1, opts.minInput ?? 1);
  const out: Sample[] = [];
  histories.forEach((h, u) => {
    const end = trainingEnd(h, u, opts.heldOut, opts.testStart);
    const newest = end - 1;
    if (newest < lo) return;
    const rng = new Rng(opts.seed).fork(u);
    const shift = rng.int(opts.tRecent);
    const older: number[] = [];
    // Only when the newest window leaves older targets (≥ minInput) uncovered; shift < T_recent keeps t < newest.
    if (newest - opts.tRecent >= lo) for (let t = newest - opts.tRecent + shift; t >= lo; t -= opts.tRecent) older.push(t);
    rng.shuffle(older);
    const picks = [newest, ...older.slice(0, Math.max(0, opts.perUser - 1))].sort((a, b) => a - b);
    for (const t of picks) out.push({ user: u, t });
  });
  return out;
}

/** How the targets of dense windows are chosen and weighted (denseBatchFromWindows). */
export interface DenseTargetOptions {
  /** Rows whose target sits before this position are masked (default 1). */
  minInput?: number;
  /** Loss weight of long-range targets (GemsTrainConfig.longRangeWeight; default 1 = off). */
  longRangeWeight?: number;
  /** Share of rows whose target is the row's next return instead of its next event (GemsTrainConfig.returnShare). */
  returnShare?: number;
  /** Per history, the first position that is not a training event; return targets are looked up before it. */
  trainEnd?: Int32Array;
  /**
   * A return target's coarse interest must hold at least this share of the lifecycle part's events (default 0.01):
   * a real interest of the user's past, not an exploration event that happens to be outside the recent streams.
   * With `interestTargets`, the same share of the events before a target makes its coarse interest established.
   */
  returnMinShare?: number;
  /**
   * Every target is an *engaged event in an established interest*: not skipped, and its coarse interest holds
   * ≥ `returnMinShare` of the user's events before it. A row predicts the next such event (with `newItems`, the next
   * such event whose item it has not seen); rows with none before trainEnd are masked. Skipped exploration clicks
   * are not positives (as a production ranker would train), so the model's mass goes to the user's interests.
   */
  interestTargets?: boolean;
  /**
   * Return targets only: the returning interest's first *new* item (the next events stay as they are). The served
   * list never holds seen items, and a return's first event is mostly a favourite the user has seen.
   */
  returnNewItems?: boolean;
  /**
   * `returnShare` q is the share of the loss, not the chance of a row that has a return ahead (the default). A row
   * has none when no dormant interest comes back before the training events end — ~78% of the rows on the generated
   * set, so q 0.4 made only ~19% of the rows return targets. Here the rows with a return ahead are drawn with
   * probability q·n/m (m of the window's n rows have one; all of them when m < q·n), and when the batch still has
   * fewer than q return rows their loss is weighted up so that they make q of it.
   */
  returnShareOfRows?: boolean;
  /**
   * Every target is an item new to the user: a row predicts the next event whose item it has not seen (its next
   * return: the returning interest's first new item); rows with none before trainEnd are masked.
   */
  newItems?: boolean;
  /** Seeds which rows get a return target (per window, so a batch does not depend on its neighbours). */
  seed?: number;
}

/**
 * Model input and targets for dense windows (GemsModel.denseLoss): the recent stream is the window, the mid-term
 * stream the T_mid − T_recent events before it, the lifecycle summary covers everything older — all strictly before
 * the window's first target. Target row r (left-padded like the stream) is the event after window row r; rows whose
 * target has no Semantic ID or sits before position `minInput` are masked.
 *
 * A target is *long-range* when its coarse interest (first Semantic-ID code) is absent from every event the row sees
 * through the recent and mid-term streams but present in the lifecycle part. With `returnShare` q > 0, each row (with
 * probability q, seeded) instead targets its *next return*: the first later training event (before trainEnd) that is
 * long-range for that row and whose coarse interest holds ≥ `returnMinShare` of the lifecycle events (exploration
 * noise outside the recent streams is not a return). The streams stay cut at the row, so nothing of the future
 * reaches the input; the objective becomes a mixture, (1 − q)·next event + q·next return of a dormant interest.
 */
export function denseBatchFromWindows(
  ctx: SampleContext,
  histories: History[],
  windows: Sample[],
  opts: DenseTargetOptions = {},
): { batch: GemsBatch; targetCodes: Int32Array; targetMask: Uint8Array; targets: number; targetWeight?: Float32Array; longRange: number; returns: number; returnRows: Uint8Array } {
  const { cfg, sid, summarizer } = ctx;
  const minInput = opts.minInput ?? 1;
  const longRangeWeight = opts.longRangeWeight ?? 1;
  const returnShare = opts.returnShare ?? 0;
  const returnMinShare = opts.returnMinShare ?? 0.01;
  const newItems = opts.newItems ?? false;
  const interestTargets = opts.interestTargets ?? false;
  const returnNewItems = opts.returnNewItems ?? false;
  const returnShareOfRows = opts.returnShareOfRows ?? false;
  if (newItems && !opts.trainEnd) throw new Error('new-item targets need trainEnd (where each history\'s training events end)');
  if (interestTargets && !opts.trainEnd) throw new Error('interest targets need trainEnd (where each history\'s training events end)');
  if (!(returnShare >= 0 && returnShare <= 1)) throw new Error(`returnShare must be in [0, 1], got ${returnShare}`);
  if (returnShare > 0 && !opts.trainEnd) throw new Error('return targets need trainEnd (where each history\'s training events end)');
  const W = sid.sizes.length;
  const T = cfg.tRecent;
  const midLen = cfg.tMid - cfg.tRecent;
  const B = windows.length;
  const recent: History[] = [];
  const mid: History[] = [];
  const ref: number[] = [];
  const lifecycle = new Float32Array(B * cfg.lifecycle.slots * cfg.lifecycle.inDim);
  const lifecycleValid = new Uint8Array(B * cfg.lifecycle.slots);
  const lifecycleCodes = new Int32Array(B * cfg.lifecycle.slots).fill(-1);
  const lifecycleInMid = new Uint8Array(B * cfg.lifecycle.slots);
  const targetCodes = new Int32Array(B * T * W);
  const targetMask = new Uint8Array(B * T);
  const returnRows = new Uint8Array(B * T);
  const weighted = longRangeWeight !== 1 || returnShareOfRows;
  const targetWeight = weighted ? new Float32Array(B * T).fill(1) : undefined;
  const coarse = (item: number) => coarseCodeOf(sid, item);
  const tracked = weighted || returnShare > 0;
  const visible = tracked ? new Int32Array(sid.sizes[0]!) : null;
  let targets = 0;
  let longRange = 0;
  let returns = 0;
  windows.forEach((w, b) => {
    const h = histories[w.user]!;
    const a = Math.max(0, w.t - T);
    const midStart = Math.max(0, a - midLen);
    recent.push(sliceHistory(h, a, w.t));
    mid.push(sliceHistory(h, midStart, a));
    ref.push(h.ts[w.t - 1]!);
    placeSummary(ctx, summarizer.summarize(sliceHistory(h, 0, midStart)), mid[b]!, b, { lifecycle, lifecycleValid, lifecycleCodes, lifecycleInMid });
    const n = w.t - a;
    // Per coarse code, its events in the lifecycle part (the codes present there, and how strongly).
    const lifecycleCount = new Map<number, number>();
    if (visible) {
      for (let j = 0; j < midStart; j++) lifecycleCount.set(coarse(h.itemId[j]!), (lifecycleCount.get(coarse(h.itemId[j]!)) ?? 0) + 1);
      visible.fill(0);
      for (let j = midStart; j < a; j++) if (coarse(h.itemId[j]!) >= 0) visible[coarse(h.itemId[j]!)]!++;
    }
    const isLongRange = (c: number) => c >= 0 && visible![c] === 0 && lifecycleCount.has(c);
    const rng = returnShare > 0 ? new Rng(opts.seed ?? 0).fork(w.user).fork(w.t) : null;
    const end = opts.trainEnd ? Math.min(h.length, opts.trainEnd[w.user]!) : w.t + 1;
    // Eligible targets when they are filtered: the positions in (a, end) that are new items (an item's first
    // occurrence in the history) and/or engaged events of an established interest. An eligible position is row i's
    // target exactly when it is the first one after a + i.
    const eligibleAt: number[] = [];
    const newAt: number[] = []; // new items only (return targets with returnNewItems)
    if (newItems || interestTargets || returnNewItems) {
      const seen = new Set<number>();
      const codeCount = new Map<number, number>();
      const count = (j: number) => {
        seen.add(h.itemId[j]!);
        codeCount.set(coarse(h.itemId[j]!), (codeCount.get(coarse(h.itemId[j]!)) ?? 0) + 1);
      };
      for (let j = 0; j <= a; j++) count(j);
      for (let j = a + 1; j < end; j++) {
        const isNew = !seen.has(h.itemId[j]!);
        const inInterest = (h.labels[j]! & LABEL.skip) === 0 && (codeCount.get(coarse(h.itemId[j]!)) ?? 0) >= Math.max(1, returnMinShare * j);
        if ((!newItems || isNew) && (!interestTargets || inInterest)) eligibleAt.push(j);
        if (isNew) newAt.push(j);
        count(j);
      }
    }
    const filtered = newItems || interestTargets;
    // Returning interests: a code long-range for row i does not occur in [midStart, a + i], so its next occurrence
    // is its first one from a (f; the row must come before it). Per candidate code, f and the position its return
    // targets (g: f; with filtered targets the code's first eligible position; with returnNewItems its first new
    // item); one forward scan serves every row.
    const returnsOf: { f: number; g: number }[] = [];
    if (rng) {
      const least = Math.max(1, returnMinShare * midStart);
      const pending = new Set([...lifecycleCount.keys()].filter((c) => isLongRange(c) && lifecycleCount.get(c)! >= least));
      const f = new Map<number, number>();
      for (let j = a; j < end && pending.size > 0; j++) if (pending.has(coarse(h.itemId[j]!)) && !f.has(coarse(h.itemId[j]!))) f.set(coarse(h.itemId[j]!), j);
      if (filtered || returnNewItems) {
        const g = new Map<number, number>();
        for (const j of returnNewItems ? newAt : eligibleAt) if (f.has(coarse(h.itemId[j]!)) && !g.has(coarse(h.itemId[j]!))) g.set(coarse(h.itemId[j]!), j);
        for (const [c, fc] of f) if (g.has(c)) returnsOf.push({ f: fc, g: g.get(c)! });
      } else for (const fc of f.values()) returnsOf.push({ f: fc, g: fc });
    }
    // Row i's next return (−1: none before trainEnd).
    const returnAtRow = new Int32Array(n).fill(-1);
    if (rng) {
      for (let i = 0; i < n; i++) for (const { f, g } of returnsOf) if (f > a + i && (returnAtRow[i]! < 0 || g < returnAtRow[i]!)) returnAtRow[i] = g;
    }
    // With returnShareOfRows the m rows that have a return ahead are drawn with probability q·n/m (all of them when
    // m < q·n; the batch's weights below make up the rest), else with probability q.
    const withReturn = returnAtRow.reduce((k, x) => k + (x >= 0 ? 1 : 0), 0);
    const pReturn = returnShareOfRows ? (withReturn > 0 ? Math.min(1, (returnShare * n) / withReturn) : 0) : returnShare;
    let nextEligible = 0;
    for (let i = 0; i < n; i++) {
      if (visible && coarse(h.itemId[a + i]!) >= 0) visible[coarse(h.itemId[a + i]!)]!++; // row i sees window events ≤ i
      while (nextEligible < eligibleAt.length && eligibleAt[nextEligible]! <= a + i) nextEligible++;
      const returnAt = returnAtRow[i]!;
      const toReturn = rng !== null && rng.next() < pReturn && returnAt >= 0;
      if (i < minInput - 1 - a) continue;
      const r = b * T + (T - n) + i;
      const at = toReturn ? returnAt : !filtered ? a + i + 1 : nextEligible < eligibleAt.length ? eligibleAt[nextEligible]! : -1;
      if (at < 0) continue; // no eligible target before the held-out events
      const row = sid.rowOf(h.itemId[at]!);
      if (row < 0) continue;
      targetMask[r] = 1;
      if (toReturn) {
        returnRows[r] = 1;
        returns++;
      }
      targetCodes.set(sid.codes.subarray(row * W, row * W + W), r * W);
      targets++;
      if (visible && isLongRange(sid.codes[row * W]!)) {
        if (targetWeight) targetWeight[r] = longRangeWeight;
        longRange++;
      }
    }
  });
  // Fewer rows with a return ahead than q: their loss is weighted up so that returns make q of the batch's loss.
  if (returnShareOfRows && returns > 0 && returns < returnShare * targets) {
    const up = (returnShare * (targets - returns)) / ((1 - returnShare) * returns);
    for (let r = 0; r < B * T; r++) if (returnRows[r]) targetWeight![r]! *= up;
  }
  const fc = cfg.features;
  const batch: GemsBatch = {
    B,
    recent: buildStreamBatch(recent, T, ctx.vocab, fc, ref),
    mid: buildStreamBatch(mid, midLen, ctx.vocab, fc, ref),
    lifecycle,
    lifecycleValid,
    lifecycleCodes,
    lifecycleInMid,
  };
  return { batch, targetCodes, targetMask, targets, targetWeight, longRange, returns, returnRows };
}
