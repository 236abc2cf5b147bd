// Dense training (GemsModel.denseLoss): one encoded window of T_recent events serves a target at every position.
// The tests pin down what makes it a valid replacement for one-target-per-sample training: no row sees its target or
// anything after it, the full window's last row is exactly the per-target sample, and the windows of an epoch never
// reach the held-out events.
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../src/compute/backend.js';
import { LABEL } from '../../src/data/events.js';
import { GemsModel, type GemsModelConfig } from '../../src/model/gems.js';
import type { SemanticIds } from '../../src/model/sid.js';
import { batchFromSamples, denseBatchFromWindows, trainingWindows } from '../../src/train/samples.js';
import { historyOf, ringHistories, tinyConfig, tinyModel } from './fixture.js';

beforeAll(async () => {
  await initBackend();
});

const setup = (over: Partial<GemsModelConfig> = {}) => tinyModel({ tRecent: 6, tMid: 14, ...over });

const stage3 = (model: GemsModel) => ({ training: false, indexerLoss: true, topK: model.cfg.indexer.topK });

/** NLL of the dense loss with only target row `row` of window 0 counted. */
function rowNll(model: GemsModel, d: ReturnType<typeof denseBatchFromWindows>, row: number, opts = stage3(model)): number {
  const mask = new Uint8Array(d.targetMask.length);
  mask[row] = 1;
  return tf.tidy(() => model.denseLoss(d.batch, d.targetCodes, mask, opts).nll.dataSync()[0]!);
}

/** The coarse codes (first Semantic-ID level) of a tokenizer and the k-th item (cyclically) under each. */
function itemsByCoarseCode(sid: SemanticIds): { codes: number[]; pick: (code: number, k: number) => number } {
  const W = sid.sizes.length;
  const byCode = new Map<number, number[]>();
  sid.itemIds.forEach((item, row) => byCode.set(sid.codes[row * W]!, [...(byCode.get(sid.codes[row * W]!) ?? []), item]));
  return { codes: [...byCode.keys()], pick: (code, k) => byCode.get(code)![k % byCode.get(code)!.length]! };
}

describe('dense GEMs training', () => {
  it('no row sees its target or later events: changing them leaves the row’s loss unchanged', () => {
    for (const fusion of ['sum', 'gated', 'concat'] as const) {
      const { model, ctx } = setup({ fusion });
      const [h] = ringHistories(1, 40);
      const t = 30; // window = events [24, 30), targets 25..30
      const base = denseBatchFromWindows(ctx, [h!], [{ user: 0, t }]);
      const T = model.cfg.tRecent;
      for (const i of [1, 3]) {
        // Row i of the window predicts event 24 + i + 1; keep everything up to it, change the rest of the window.
        const keep = 24 + i + 2;
        const items = [...Array.from(h!.itemId.subarray(0, keep)), ...Array.from({ length: 40 - keep }, (_, k) => 10 + ((k * 5 + 3) % 24))];
        const altered = historyOf(h!.userId, items);
        altered.ts.fill(9e12, keep);
        const alt = denseBatchFromWindows(ctx, [altered], [{ user: 0, t }]);
        expect(rowNll(model, alt, i)).toBe(rowNll(model, base, i));
        // …while a later row, whose input did change, moves (the check is not vacuous).
        expect(rowNll(model, alt, T - 1)).not.toBe(rowNll(model, base, T - 1));
      }
    }
  });

  it('long-range targets (coarse interest only in the lifecycle part) get the weight; the loss is Σ w·NLL / Σ w', () => {
    const { model, ctx, sid } = setup();
    const { codes: [a, b, c], pick } = itemsByCoarseCode(sid);
    // t = 30, T_recent 6, T_mid 14: window = events [24, 30), targets 25..30 (row i → event 25 + i), mid-term
    // events [16, 24), lifecycle [0, 16). Code b only in the lifecycle part, code c nowhere before its target.
    const items = Array.from({ length: 40 }, (_, k) => (k < 16 ? pick(k % 2 ? b! : a!, k) : pick(a!, k)));
    items[27] = pick(b!, 1); // row 2: b absent from [16, 27), present before 16 → long-range
    items[28] = pick(c!, 0); // row 3: c never seen → not long-range (nothing for the lifecycle stream to recall)
    items[29] = pick(b!, 2); // row 4: b now visible at 27 → not long-range
    const h = historyOf(7, items);
    const plain = denseBatchFromWindows(ctx, [h], [{ user: 0, t: 30 }]);
    expect(plain.targetWeight).toBeUndefined();
    expect(plain.longRange).toBe(0);
    const d = denseBatchFromWindows(ctx, [h], [{ user: 0, t: 30 }], { longRangeWeight: 5 });
    expect(Array.from(d.targetWeight!)).toEqual([1, 1, 5, 1, 1, 1]);
    expect(d.longRange).toBe(1);
    const opts = { training: false, indexerLoss: false, topK: 0 };
    const rows = [0, 1, 2, 3, 4, 5].map((r) => rowNll(model, d, r, opts));
    const weighted = tf.tidy(() => {
      const r = model.denseLoss(d.batch, d.targetCodes, d.targetMask, opts, d.targetWeight);
      return { total: r.total.dataSync()[0]!, nll: r.nll.dataSync()[0]! };
    });
    const w = [1, 1, 5, 1, 1, 1];
    expect(weighted.total).toBeCloseTo(rows.reduce((acc, x, i) => acc + w[i]! * x, 0) / 10, 4);
    expect(weighted.nll).toBeCloseTo(rows.reduce((acc, x) => acc + x, 0) / 6, 4); // reported NLL: the plain mean
  });

  it('return targets: a row drawn for one targets its next return (first later long-range event before trainEnd); inputs unchanged', () => {
    const { ctx, sid } = setup();
    const W = sid.sizes.length;
    const { codes: [a, b, c], pick } = itemsByCoarseCode(sid);
    // Window [24, 30) (rows 0..5 predict 25..30), mid-term [16, 24), lifecycle [0, 16): code b only in the lifecycle
    // part, until event 33; code c never before event 27.
    const items = Array.from({ length: 40 }, (_, k) => (k < 16 ? pick(k % 2 ? b! : a!, k) : pick(a!, k)));
    items[27] = pick(c!, 0); // never seen before: not a return (nothing for the lifecycle stream to recall)
    items[33] = pick(b!, 3); // the next return of every row (b not visible from 16 on)
    items[35] = pick(b!, 5);
    const h = historyOf(7, items);
    const w = [{ user: 0, t: 30 }];
    const codeOf = (d: { targetCodes: Int32Array }, row: number) => Array.from(d.targetCodes.subarray(row * W, row * W + W));
    const codesOfItem = (item: number) => Array.from(sid.codes.subarray(sid.rowOf(item) * W, sid.rowOf(item) * W + W));
    const plain = denseBatchFromWindows(ctx, [h], w);
    const all = denseBatchFromWindows(ctx, [h], w, { returnShare: 1, trainEnd: Int32Array.of(40), seed: 1 });
    expect(all.returns).toBe(6);
    expect(Array.from(all.returnRows).filter((x) => x).length).toBe(6); // the rows a return-intent model flags
    expect(Array.from(plain.returnRows).every((x) => x === 0)).toBe(true);
    for (let r = 0; r < 6; r++) expect(codeOf(all, r)).toEqual(codesOfItem(items[33]!));
    expect(all.longRange).toBe(6);
    expect(plain.longRange).toBe(0); // counted by the same rule: no next event here is long-range
    // The streams are cut at the window as before: the return target changes only what is predicted.
    expect(all.batch).toEqual(plain.batch);
    // A code seen inside the window is no longer dormant for the rows after it.
    const items2 = [...items];
    items2[26] = pick(b!, 6);
    const h2 = historyOf(7, items2);
    const plain2 = denseBatchFromWindows(ctx, [h2], w);
    const all2 = denseBatchFromWindows(ctx, [h2], w, { returnShare: 1, trainEnd: Int32Array.of(40), seed: 1 });
    expect(all2.returns).toBe(2);
    for (const r of [0, 1]) expect(codeOf(all2, r)).toEqual(codesOfItem(items2[26]!));
    for (const r of [2, 3, 4, 5]) expect(codeOf(all2, r)).toEqual(codeOf(plain2, r));
    // A return's coarse interest must be a real interest of the lifecycle part: b holds 8 of its 16 events.
    expect(denseBatchFromWindows(ctx, [h], w, { returnShare: 1, trainEnd: Int32Array.of(40), seed: 1, returnMinShare: 0.5 }).returns).toBe(6);
    const rare = denseBatchFromWindows(ctx, [h], w, { returnShare: 1, trainEnd: Int32Array.of(40), seed: 1, returnMinShare: 0.6 });
    expect(rare.returns).toBe(0);
    expect(rare.targetCodes).toEqual(plain.targetCodes);
    // trainEnd bounds the look-ahead (the held-out events are never targets): none before 33 → next events.
    const bounded = denseBatchFromWindows(ctx, [h], w, { returnShare: 1, trainEnd: Int32Array.of(33), seed: 1 });
    expect(bounded.returns).toBe(0);
    expect(bounded.targetCodes).toEqual(plain.targetCodes);
    // Share q: a seeded subset of rows; the same seed draws the same rows.
    const half = denseBatchFromWindows(ctx, [h], w, { returnShare: 0.5, trainEnd: Int32Array.of(40), seed: 3 });
    const again = denseBatchFromWindows(ctx, [h], w, { returnShare: 0.5, trainEnd: Int32Array.of(40), seed: 3 });
    expect(again.targetCodes).toEqual(half.targetCodes);
    const drawn = [0, 1, 2, 3, 4, 5].filter((r) => codeOf(half, r).join() !== codeOf(plain, r).join());
    expect(drawn.length).toBe(half.returns);
    const T = ctx.cfg.tRecent;
    expect([0, 1, 2, 3, 4, 5].filter((r) => half.returnRows[T - 6 + r])).toEqual(drawn);
    const counts = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map((seed) => denseBatchFromWindows(ctx, [h], w, { returnShare: 0.5, trainEnd: Int32Array.of(40), seed }).returns);
    expect(new Set(counts).size).toBeGreaterThan(1);
    expect(counts.reduce((x, y) => x + y, 0)).toBeGreaterThan(10); // ≈ 30 of 60 rows
    expect(counts.reduce((x, y) => x + y, 0)).toBeLessThan(50);
    // returnNewItems: the return targets the returning interest's first new item (33 repeats an item of the
    // lifecycle part, 35 is new); the next-event rows are untouched.
    const items3 = [...items];
    items3[33] = items3[1]!; // b's item seen at position 1
    items3[35] = [...Array(24).keys()].map((k) => pick(b!, k)).find((x) => !items3.slice(0, 35).includes(x))!;
    expect(items3[35]).toBeDefined();
    const h3 = historyOf(7, items3);
    const fresh = denseBatchFromWindows(ctx, [h3], w, { returnShare: 1, returnNewItems: true, trainEnd: Int32Array.of(40), seed: 1 });
    for (let r = 0; r < 6; r++) expect(codeOf(fresh, r)).toEqual(codesOfItem(items3[35]!));
    const firstEvent = denseBatchFromWindows(ctx, [h3], w, { returnShare: 1, trainEnd: Int32Array.of(40), seed: 1 });
    for (let r = 0; r < 6; r++) expect(codeOf(firstEvent, r)).toEqual(codesOfItem(items3[33]!));
    const someRows = denseBatchFromWindows(ctx, [h3], w, { returnShare: 0.5, returnNewItems: true, trainEnd: Int32Array.of(40), seed: 3 });
    const plain3 = denseBatchFromWindows(ctx, [h3], w);
    for (let r = 0; r < 6; r++) expect(codeOf(someRows, r)).toEqual(someRows.returnRows[r] ? codesOfItem(items3[35]!) : codeOf(plain3, r));
    // Misuse is refused.
    expect(() => denseBatchFromWindows(ctx, [h], w, { returnShare: 0.5 })).toThrow(/trainEnd/);
    expect(() => denseBatchFromWindows(ctx, [h], w, { returnShare: 1.5, trainEnd: Int32Array.of(40) })).toThrow(/returnShare/);
  });

  it('return share of rows: q is the share of the loss — every row with a return ahead is drawn when they are few, and weighted up to q', () => {
    const { ctx, sid } = setup();
    const { codes: [a, b], pick } = itemsByCoarseCode(sid);
    // As above: b dormant since the lifecycle part, seen at 26 (inside the window [24, 30)), back at 33. Only rows 0
    // and 1 (before 26) have a return ahead.
    const items = Array.from({ length: 40 }, (_, k) => (k < 16 ? pick(k % 2 ? b! : a!, k) : pick(a!, k)));
    items[26] = pick(b!, 6);
    items[33] = pick(b!, 3);
    const h = historyOf(7, items);
    const w = [{ user: 0, t: 30 }];
    const T = ctx.cfg.tRecent;
    const rowsOf = (d: { returnRows: Uint8Array }) => [0, 1, 2, 3, 4, 5].filter((r) => d.returnRows[T - 6 + r]);
    const weightsOf = (d: { targetWeight?: Float32Array }) => [0, 1, 2, 3, 4, 5].map((r) => d.targetWeight?.[T - 6 + r] ?? 1);
    for (let seed = 0; seed < 10; seed++) {
      const ofRows = denseBatchFromWindows(ctx, [h], w, { returnShare: 0.5, returnShareOfRows: true, trainEnd: Int32Array.of(40), seed });
      // 2 of 6 rows have a return, fewer than q·6 = 3: both are drawn, and their weight 2 makes them half the loss.
      expect(rowsOf(ofRows)).toEqual([0, 1]);
      expect(weightsOf(ofRows)).toEqual([2, 2, 1, 1, 1, 1]);
      // The default draws each of them with probability q and leaves the loss unweighted.
      const plain = denseBatchFromWindows(ctx, [h], w, { returnShare: 0.5, trainEnd: Int32Array.of(40), seed });
      expect(rowsOf(plain).every((r) => r < 2)).toBe(true);
      expect(plain.targetWeight).toBeUndefined();
    }
    // When every row has a return ahead (b not seen in the window), q of them are drawn; the weights top up a draw
    // that fell short of q, so the return rows always hold q of the loss.
    const items2 = [...items];
    items2[26] = pick(a!, 26);
    const h2 = historyOf(7, items2);
    for (let seed = 0; seed < 10; seed++) {
      const d = denseBatchFromWindows(ctx, [h2], w, { returnShare: 0.5, returnShareOfRows: true, trainEnd: Int32Array.of(40), seed });
      const plain = denseBatchFromWindows(ctx, [h2], w, { returnShare: 0.5, trainEnd: Int32Array.of(40), seed });
      expect(rowsOf(d)).toEqual(rowsOf(plain)); // p = q·n/m = q: the same seeded draw
      const wts = weightsOf(d);
      const ret = rowsOf(d);
      if (ret.length > 0 && ret.length < 6) expect(ret.reduce((x, r) => x + wts[r]!, 0) / wts.reduce((x, y) => x + y, 0)).toBeCloseTo(ret.length >= 3 ? ret.length / 6 : 0.5, 5);
    }
  });

  it('new-item targets: a row predicts the next event whose item it has not seen; none before trainEnd → masked', () => {
    const { ctx, sid } = setup();
    const W = sid.sizes.length;
    const [x, y, new1, new2, new3] = Array.from(sid.itemIds.subarray(0, 5));
    // Window [24, 30): rows 0..5 see events ≤ 24..29.
    const items = Array.from({ length: 40 }, (_, k) => (k % 2 ? x! : y!));
    [items[25], items[26], items[27], items[28], items[29], items[30], items[31]] = [x!, new1!, x!, new1!, new2!, y!, new3!];
    const h = historyOf(7, items);
    const codesOfItem = (item: number) => Array.from(sid.codes.subarray(sid.rowOf(item) * W, sid.rowOf(item) * W + W));
    const rowCodes = (d: { targetCodes: Int32Array }, r: number) => Array.from(d.targetCodes.subarray(r * W, r * W + W));
    const d = denseBatchFromWindows(ctx, [h], [{ user: 0, t: 30 }], { newItems: true, trainEnd: Int32Array.of(40) });
    // new1 at 26 is new to rows 0–1; at 28 it is a repeat, so rows 2–4 wait for new2 at 29; row 5 skips y for new3.
    const want = [new1, new1, new2, new2, new2, new3];
    want.forEach((item, r) => expect(rowCodes(d, r)).toEqual(codesOfItem(item!)));
    expect(d.targets).toBe(6);
    expect(d.batch).toEqual(denseBatchFromWindows(ctx, [h], [{ user: 0, t: 30 }]).batch);
    const bounded = denseBatchFromWindows(ctx, [h], [{ user: 0, t: 30 }], { newItems: true, trainEnd: Int32Array.of(31) });
    expect(Array.from(bounded.targetMask)).toEqual([1, 1, 1, 1, 1, 0]);
    expect(() => denseBatchFromWindows(ctx, [h], [{ user: 0, t: 30 }], { newItems: true })).toThrow(/trainEnd/);
  });

  it('interest targets: a row predicts the next engaged event of an established interest (skips and first touches of a code are not targets)', () => {
    const { ctx, sid } = setup();
    const W = sid.sizes.length;
    const { codes: [a, b, c], pick } = itemsByCoarseCode(sid);
    // Codes a and b share the first 24 events; c first appears at 25 (exploration) and again at 28 (1 of 28 events).
    const items = Array.from({ length: 40 }, (_, k) => pick(k % 2 ? b! : a!, k));
    [items[25], items[26], items[27], items[28], items[29]] = [pick(c!, 0), pick(a!, 2), pick(a!, 1), pick(c!, 1), pick(b!, 2)];
    const h = historyOf(7, items);
    h.labels.fill(0);
    h.labels[26] = LABEL.skip; // an event of an interest, but skipped: not a positive
    const w = [{ user: 0, t: 30 }];
    const rowCodes = (d: { targetCodes: Int32Array }, r: number) => Array.from(d.targetCodes.subarray(r * W, r * W + W));
    const codesOfItem = (item: number) => Array.from(sid.codes.subarray(sid.rowOf(item) * W, sid.rowOf(item) * W + W));
    const plain = denseBatchFromWindows(ctx, [h], w);
    // Rows 0..5 see events ≤ 24..29. With a 10% share, c at 28 (1 of 28 events before it) is not established.
    const d = denseBatchFromWindows(ctx, [h], w, { interestTargets: true, returnMinShare: 0.1, trainEnd: Int32Array.of(40) });
    [27, 27, 27, 29, 29, 30].forEach((at, r) => expect(rowCodes(d, r)).toEqual(codesOfItem(items[at]!)));
    expect(d.batch).toEqual(plain.batch);
    // With the default 1%, one earlier event of c makes it established: rows 3 (sees ≤ 27) targets 28.
    const loose = denseBatchFromWindows(ctx, [h], w, { interestTargets: true, trainEnd: Int32Array.of(40) });
    expect(rowCodes(loose, 3)).toEqual(codesOfItem(items[28]!));
    expect(rowCodes(loose, 0)).toEqual(codesOfItem(items[27]!));
    // trainEnd bounds the look-ahead: nothing eligible before 30 for row 5 → masked.
    const bounded = denseBatchFromWindows(ctx, [h], w, { interestTargets: true, returnMinShare: 0.1, trainEnd: Int32Array.of(30) });
    expect(Array.from(bounded.targetMask)).toEqual([1, 1, 1, 1, 1, 0]);
    // With newItems as well, a target is both: the first later event that is new, engaged and established (a scan).
    const both = denseBatchFromWindows(ctx, [h], w, { interestTargets: true, newItems: true, returnMinShare: 0.1, trainEnd: Int32Array.of(40) });
    let checked = 0;
    for (let r = 0; r < 6; r++) {
      const sees = 24 + r;
      let want = -1;
      for (let j = sees + 1; j < 40 && want < 0; j++) {
        const before = items.slice(0, j);
        const share = before.filter((x) => sid.codes[sid.rowOf(x) * W] === sid.codes[sid.rowOf(items[j]!) * W]).length / j;
        if (!before.includes(items[j]!) && h.labels[j] === 0 && share >= 0.1) want = j;
      }
      if (want < 0) expect(both.targetMask[r]).toBe(0);
      else expect(rowCodes(both, r)).toEqual(codesOfItem(items[want]!));
      if (want >= 0) checked++;
    }
    expect(checked).toBeGreaterThan(0);
    expect(() => denseBatchFromWindows(ctx, [h], w, { interestTargets: true })).toThrow(/trainEnd/);
  });

  it('the last row of a full window equals the per-target sample of the same target', () => {
    const { model, ctx, cfg } = setup();
    const hs = ringHistories(3, 40);
    for (const [u, t] of [[0, 30], [1, 33], [2, 20]] as const) {
      const d = denseBatchFromWindows(ctx, hs, [{ user: u, t }]);
      const mask = new Uint8Array(d.targetMask.length);
      mask[cfg.tRecent - 1] = 1;
      const per = batchFromSamples(ctx, hs, [{ user: u, t }]);
      for (const opts of [{ training: false, indexerLoss: false, topK: 0 }, stage3(model)]) {
        const dense = tf.tidy(() => model.denseLoss(d.batch, d.targetCodes, mask, opts));
        const single = tf.tidy(() => model.loss(per.batch, per.targetCodes, opts));
        expect(dense.nll.dataSync()[0]).toBeCloseTo(single.nll.dataSync()[0]!, 5);
        // The KL averages over every query of the window in the dense case: only the NLL is per row.
      }
    }
  });

  it('windows end at the newest training target, older ones never overlap each other, are shifted per seed, and skip the held-out events', () => {
    const hs = ringHistories(4, 50);
    const ws = trainingWindows(hs, { perUser: 3, tRecent: 6, heldOut: 2, seed: 5 });
    for (let u = 0; u < hs.length; u++) {
      const mine = ws.filter((w) => w.user === u).map((w) => w.t);
      expect(mine.length).toBe(3);
      expect(Math.max(...mine)).toBe(50 - 3); // last training target: events 48, 49 are held out
      const older = [...mine].sort((a, b) => a - b).slice(0, -1);
      for (let k = 1; k < older.length; k++) expect(older[k]! - older[k - 1]!).toBeGreaterThanOrEqual(6);
    }
    // Over seeds the older windows' ends take every offset from the newest one (mod T_recent), so every target is
    // sometimes the full-window row.
    const offsets = new Set<number>();
    for (let seed = 0; seed < 40; seed++) {
      for (const w of trainingWindows(hs, { perUser: 3, tRecent: 6, heldOut: 2, seed })) if (w.user === 0 && w.t < 47) offsets.add((47 - w.t) % 6);
    }
    expect(offsets.size).toBe(6);
    // Same seed, same windows; another seed draws other older windows.
    expect(trainingWindows(hs, { perUser: 3, tRecent: 6, heldOut: 2, seed: 5 })).toEqual(ws);
    expect(trainingWindows(hs, { perUser: 3, tRecent: 6, heldOut: 2, seed: 6 })).not.toEqual(ws);
    // Short histories: one partial window whose padded rows carry no target.
    const { ctx, cfg } = setup();
    const short = [historyOf(7, [10, 11, 12, 13, 14])];
    const [w] = trainingWindows(short, { perUser: 3, tRecent: cfg.tRecent, heldOut: 2, seed: 1 });
    expect(w).toEqual({ user: 0, t: 2 });
    const d = denseBatchFromWindows(ctx, short, [w!]);
    expect(Array.from(d.targetMask)).toEqual([0, 0, 0, 0, 1, 1]);
    expect(d.targets).toBe(2);
  });

  it('is refused for models whose encoding of a window depends on the target', () => {
    const { ctx } = setup();
    const hs = ringHistories(1, 30);
    for (const over of [{ recentCausal: false }, { fusion: 'shared' as const }]) {
      const { model } = setup(over);
      expect(GemsModel.denseTrainable(model.cfg)).toBe(false);
      const d = denseBatchFromWindows(ctx, hs, [{ user: 0, t: 20 }]);
      expect(() => model.denseLoss(d.batch, d.targetCodes, d.targetMask, { training: true, indexerLoss: false, topK: 0 })).toThrow(/dense loss needs/);
    }
    const base = tinyConfig();
    expect(GemsModel.denseTrainable({ ...base, features: { ...base.features, gapFrom: 'ref' } })).toBe(false);
  });
});
