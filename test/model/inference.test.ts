// Inference paths of the GEMs model: exclusion-aware beam search, per-stream attention mass over the streams
// actually used, the gathered indexer top-k attention, beams folded into the per-user attention, and the
// transpose-flag matMul / fused ops used by training.
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../src/compute/backend.js';
import { matMul2d, scoped } from '../../src/model/ops.js';
import { recommend } from '../../src/model/recommend.js';
import { SasRec } from '../../src/model/sasrec.js';
import { softmaxCrossEntropy } from '../../src/compute/ops.js';
import { batchFromInputs } from '../../src/train/samples.js';
import { historyOf, ITEM_IDS, parentNodes, ringHistories, sidPrefixes, tinyModel } from './fixture.js';

beforeAll(async () => {
  await initBackend();
});

const setup = tinyModel;

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe('GEMs inference', () => {
  it('beam = k with many seen items still returns exactly k distinct unseen items', () => {
    const { loaded } = setup();
    // Users who have seen 14 of the 24 items: exactly 10 admissible items remain for each.
    const hs = Array.from({ length: 5 }, (_, u) => historyOf(u, Array.from({ length: 14 }, (_, i) => ITEM_IDS[(u * 5 + i * 7) % 24]!)));
    for (const h of hs) expect(new Set(h.itemId).size).toBe(14);
    const recs = recommend(loaded, hs, 10, { beam: 10, excludeSeen: true, topK: 3 });
    recs.forEach((r, b) => {
      const seen = new Set(hs[b]!.itemId);
      expect(r.items.length).toBe(10);
      expect(new Set(r.items).size).toBe(10);
      for (const it of r.items) expect(seen.has(it)).toBe(false);
      for (let i = 1; i < r.scores.length; i++) expect(r.scores[i]!).toBeLessThanOrEqual(r.scores[i - 1]!);
    });
    // Fewer admissible items than k: all of them, nothing else; none at all: an empty list.
    const [few] = recommend(loaded, [historyOf(1, ITEM_IDS.slice(0, 20))], 10, { excludeSeen: true, topK: 3 });
    expect([...few!.items].sort()).toEqual(ITEM_IDS.slice(20));
    const [none] = recommend(loaded, [historyOf(2, ITEM_IDS)], 5, { excludeSeen: true, topK: 3 });
    expect(none!.items.length).toBe(0);
    // Ids the catalogue does not know are ignored; an explicit exclusion set joins the seen items.
    const [mixed] = recommend(loaded, [historyOf(3, ITEM_IDS.slice(0, 18))], 10, { excludeSeen: true, topK: 3, exclude: [new Set([ITEM_IDS[18]!, -5, 987_654])] });
    expect([...mixed!.items].sort()).toEqual(ITEM_IDS.slice(19));
  });

  it('renormalize: scores are log-probabilities given an admissible item: they sum to 1 over those items, with or without exclusions', () => {
    const { loaded } = setup();
    // 14 seen of 24 items; beam 24 keeps every admissible prefix at every level, so the lists hold every admissible item.
    const hs = Array.from({ length: 3 }, (_, u) => historyOf(u, Array.from({ length: 14 }, (_, i) => ITEM_IDS[(u * 5 + i * 7) % 24]!)));
    const total = (scores: Float32Array) => scores.reduce((a, x) => a + Math.exp(x), 0);
    const cond = recommend(loaded, hs, 10, { beam: 24, excludeSeen: true, topK: 3, renormalize: true });
    const raw = recommend(loaded, hs, 10, { beam: 24, excludeSeen: true, topK: 3 });
    cond.forEach((r, b) => {
      expect(r.items.length).toBe(10);
      expect([...r.items].sort()).toEqual([...raw[b]!.items].sort());
      expect(total(r.scores)).toBeCloseTo(1, 4);
      // The raw scores leave out the seen items' mass, so they sum to less; each item only gains.
      expect(total(raw[b]!.scores)).toBeLessThan(0.9);
      const rawScore = new Map(Array.from(raw[b]!.items, (it, i) => [it, raw[b]!.scores[i]!] as const));
      r.items.forEach((it, i) => expect(r.scores[i]!).toBeGreaterThanOrEqual(rawScore.get(it)! - 1e-5));
    });
    // Nothing excluded: the catalogue's items alone (24 of the 4³ code paths exist) still get the whole mass.
    const all = recommend(loaded, ringHistories(2, 20), 24, { beam: 24, topK: 3, renormalize: true });
    for (const r of all) {
      expect(r.items.length).toBe(24);
      expect(total(r.scores)).toBeCloseTo(1, 4);
    }
  });

  it('attention mass is over the streams actually used: empty streams get 0, the rest sum to 1', () => {
    const { loaded, cfg } = setup();
    // 3 events < tRecent (4): only the recent stream has input.
    const recentOnly = historyOf(1, [10, 11, 12]);
    // 20 events: recent and mid-term (tMid 12) and lifecycle (the 8 oldest).
    const [full] = ringHistories(1, 20);
    const [a, b] = recommend(loaded, [recentOnly, full!], 5, { topK: 3 });
    expect(a!.attentionMass).toEqual({ recent: 1, mid: 0, lifecycle: 0 });
    const m = b!.attentionMass;
    expect(m.recent! + m.mid! + m.lifecycle!).toBeCloseTo(1, 5);
    for (const s of ['recent', 'mid', 'lifecycle'] as const) expect(m[s]!).toBeGreaterThan(0);
    // A user with 6 events has recent + mid but no lifecycle.
    const [c] = recommend(loaded, [historyOf(3, [10, 11, 12, 13, 14, 15])], 5, { topK: 3 });
    expect(c!.attentionMass.lifecycle).toBe(0);
    expect(c!.attentionMass.recent! + c!.attentionMass.mid!).toBeCloseTo(1, 5);
    void cfg;
  });

  it('indexer top-k by gathering k keys equals the masked formulation (≤ 1e-5), also for a user with no mid-term keys', () => {
    const { model, ctx, sid } = setup({ tMid: 24 }); // 20 mid-term keys
    const hs = [...ringHistories(3, 40), historyOf(9, [10, 11])];
    const batch = batchFromInputs(ctx, hs);
    for (const topK of [1, 3, 7]) {
      for (const len of [1, 2, 3]) {
        const codes = sidPrefixes(sid, hs.length, len - 1, (i) => i * 5 + len);
        const run = (mode: 'gather' | 'mask') =>
          scoped(() => model.decode(model.encode(batch, false), codes, len, { training: false, indexerLoss: false, topK, topKMode: mode }).hidden.dataSync() as Float32Array);
        const g = run('gather');
        const m = run('mask');
        expect(maxAbsDiff(g, m)).toBeLessThanOrEqual(1e-5);
      }
    }
    // Selection really happens: top-1 differs from full attention.
    const full = scoped(() => Array.from(model.decode(model.encode(batch, false), new Int32Array(0), 1, { training: false, indexerLoss: false, topK: 0 }).hidden.dataSync()));
    const top1 = scoped(() => Array.from(model.decode(model.encode(batch, false), new Int32Array(0), 1, { training: false, indexerLoss: false, topK: 1 }).hidden.dataSync()));
    expect(maxAbsDiff(full, top1)).toBeGreaterThan(1e-4);
  });

  it('beams folded into the per-user attention (K/V projected once) equal decoding tiled copies of the memories', () => {
    for (const fusion of ['sum', 'concat'] as const) {
      const { model, ctx, sid } = setup({ fusion });
      const hs = [...ringHistories(2, 30), historyOf(5, [10, 11, 12])];
      const batch = batchFromInputs(ctx, hs);
      const R = 3;
      const len = 3;
      const codes = sidPrefixes(sid, hs.length * R, len - 1);
      for (const topK of [0, 3]) {
        const opts = { training: false, indexerLoss: false, topK, wantMass: true };
        const folded = scoped(() => {
          const enc = model.encode(batch, false);
          const d = model.decode(model.prepare(enc), codes, len, { ...opts, rowsPerUser: R });
          return { h: d.hidden.dataSync() as Float32Array, mass: d.mass! };
        });
        const tiled = scoped(() => {
          const d = model.decode(model.tile(model.encode(batch, false), R), codes, len, opts);
          return { h: d.hidden.dataSync() as Float32Array, mass: d.mass! };
        });
        expect(maxAbsDiff(folded.h, tiled.h)).toBeLessThanOrEqual(1e-5);
        expect(maxAbsDiff(folded.mass, tiled.mass)).toBeLessThanOrEqual(1e-5);
      }
    }
  });

  it('scoring only the last position in the last decoder block gives the same next-code log-probabilities', () => {
    const { model, ctx, sid } = setup({ decoderLayers: 2 });
    const hs = ringHistories(3, 30);
    const batch = batchFromInputs(ctx, hs);
    for (const level of [1, 2]) {
      const codes = sidPrefixes(sid, hs.length, level, (i) => i * 3 + level);
      const opts = { training: false, indexerLoss: false, topK: 3 };
      const fast = scoped(() => model.nextLogProbs(model.encode(batch, false), codes, level, opts).logp.dataSync() as Float32Array);
      const slow = scoped(() => {
        const h = model.decode(model.encode(batch, false), codes, level + 1, opts).hidden;
        const last = h.slice([0, level, 0], [hs.length, 1, -1]).reshape([hs.length, -1]);
        const logits = model.levelLogits(last, level, parentNodes(sid, codes, hs.length, level));
        return logits.sub(logits.logSumExp(-1, true)).dataSync() as Float32Array;
      });
      expect(maxAbsDiff(fast, slow)).toBeLessThanOrEqual(1e-5);
    }
  });

  it('matMul2d with transpose flags gives the reference values and gradients', () => {
    tf.tidy(() => {
      const x = tf.variable(tf.randomNormal([6, 4], 0, 1, 'float32', 1));
      const w = tf.variable(tf.randomNormal([4, 5], 0, 1, 'float32', 2));
      const wt = tf.variable(tf.randomNormal([5, 4], 0, 1, 'float32', 3));
      const grads = (f: () => tf.Scalar) => {
        const { value, grads } = tf.variableGrads(f, [x, w, wt]);
        return [value.dataSync(), ...[x, w, wt].map((v) => (grads[v.name] ? grads[v.name]!.dataSync() : new Float32Array(0)))];
      };
      const pairs = [
        [grads(() => matMul2d(x, w).square().sum() as tf.Scalar), grads(() => tf.matMul(x, w).square().sum() as tf.Scalar)],
        [grads(() => matMul2d(x, wt, true).square().sum() as tf.Scalar), grads(() => tf.matMul(x, tf.transpose(wt)).square().sum() as tf.Scalar)],
      ];
      for (const [a, b] of pairs) a!.forEach((arr, i) => expect(maxAbsDiff(arr, b![i]!)).toBeLessThanOrEqual(1e-4));
    });
  });

  it('SASRec training logits without the padding column give the same loss and gradients as the masked logits', () => {
    const model = new SasRec({ kind: 'sasrec', numItems: 30, maxLen: 8, d: 8, heads: 1, layers: 1, dropout: 0, seed: 3 });
    const B = 3;
    const seqs = Int32Array.from({ length: B * 8 }, (_, i) => (i % 8 < 2 ? 0 : 1 + ((i * 5) % 30)));
    const targets = Int32Array.from({ length: B * 8 }, (_, i) => (i % 8 < 2 ? 0 : 1 + ((i * 7) % 30)));
    const vars = model.params.trainable().map((v) => v.v);
    const viaLoss = tf.variableGrads(() => model.loss(seqs, targets, B), vars);
    // Reference: the full masked logits over 0..numItems and the unshifted targets.
    const ref = tf.variableGrads(() => {
      const rows = [...targets.keys()].filter((i) => targets[i] !== 0);
      const h = tf.gather(model.encode(seqs, B, true).reshape([-1, 8]), rows);
      return softmaxCrossEntropy(model.logits(h) as tf.Tensor2D, tf.tensor1d(rows.map((i) => targets[i]!), 'int32')).mean() as tf.Scalar;
    }, vars);
    expect(Math.abs(viaLoss.value.dataSync()[0]! - ref.value.dataSync()[0]!)).toBeLessThanOrEqual(1e-5);
    for (const k of Object.keys(ref.grads)) expect(maxAbsDiff(viaLoss.grads[k]!.dataSync(), ref.grads[k]!.dataSync())).toBeLessThanOrEqual(1e-5);
  });
});
