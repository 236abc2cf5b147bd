import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../src/compute/backend.js';
import { sliceHistory } from '../../src/data/events.js';
import { beamSearch } from '../../src/model/beam.js';
import { GemsModel } from '../../src/model/gems.js';
import { scoped } from '../../src/model/ops.js';
import { batchFromInputs, batchFromSamples } from '../../src/train/samples.js';
import { historyOf, ringHistories, tinyModel } from './fixture.js';

beforeAll(async () => {
  await initBackend();
});

const setup = tinyModel;

describe('GEMs model', () => {
  it('never sees the future: changing events at/after the target leaves the prediction unchanged', () => {
    const { model, ctx } = setup();
    const [h] = ringHistories(1, 40);
    const t = 25;
    // Same prefix, different events from the target on (other items, other times, other labels).
    const altered = historyOf(h!.userId, [...Array.from(h!.itemId.subarray(0, t)), ...Array.from({ length: 15 }, (_, i) => 10 + ((i * 7) % 24))]);
    altered.ts.set(h!.ts.subarray(0, t));
    altered.ts.fill(9e12, t);
    const run = (hist: typeof h) =>
      tf.tidy(() => {
        const { batch } = batchFromSamples(ctx, [hist!], [{ user: 0, t }]);
        const enc = model.encode(batch, false);
        return Array.from(model.nextLogProbs(enc, new Int32Array(0), 0, { training: false, indexerLoss: false, topK: 0 }).logp.dataSync());
      });
    expect(run(altered)).toEqual(run(h));
    // …and the input really is the prefix: a different prefix changes the prediction.
    expect(run(historyOf(h!.userId, Array.from(h!.itemId).reverse()))).not.toEqual(run(h));
    // Training samples slice the prefix: no row of the batch comes from position ≥ t.
    const { batch } = batchFromSamples(ctx, [h!], [{ user: 0, t }]);
    expect(batch.recent.valid.reduce((a, b) => a + b, 0)).toBe(4);
    expect(batch.mid.valid.reduce((a, b) => a + b, 0)).toBe(8);
    expect(sliceHistory(h!, 0, t).length).toBe(t);
  });

  it('indexer top-k with k ≥ number of mid-term keys equals full attention; smaller k differs', () => {
    const { model, ctx, cfg } = setup();
    const hs = ringHistories(3, 30);
    const { batch, targetCodes } = batchFromSamples(ctx, hs, hs.map((_, u) => ({ user: u, t: 20 + u })));
    const prefix = new Int32Array(3 * 2);
    for (let b = 0; b < 3; b++) prefix.set(targetCodes.subarray(b * 3, b * 3 + 2), b * 2);
    const hidden = (topK: number) =>
      tf.tidy(() => Array.from(model.decode(model.encode(batch, false), prefix, 3, { training: false, indexerLoss: false, topK }).hidden.dataSync()));
    const full = hidden(0);
    expect(hidden(cfg.tMid - cfg.tRecent)).toEqual(full);
    expect(hidden(1000)).toEqual(full);
    expect(hidden(1)).not.toEqual(full);
  });

  it('the indexer learns only from its KL and the KL moves only the indexer, with keys from features or encoded keys', () => {
    for (const indexerKeys of ['features', undefined] as const) {
      const { model, ctx } = setup({ indexerKeys });
      const hs = ringHistories(3, 30);
      const { batch, targetCodes } = batchFromSamples(ctx, hs, hs.map((_, u) => ({ user: u, t: 20 + u })));
      const vars = [...model.params.vars.entries()];
      // Largest |gradient| per parameter of one loss term (parameters the term does not reach: 0).
      const grads = (term: 'kl' | 'nll') =>
        scoped(() => {
          const { grads: g } = tf.variableGrads(() => model.loss(batch, targetCodes, { training: false, indexerLoss: true, topK: 0 })[term], vars.map(([, v]) => v));
          return new Map(vars.map(([name, v]) => [name, g[v.name] ? g[v.name]!.abs().max().dataSync()[0]! : 0]));
        });
      const moved = (m: Map<string, number>) => [...m].filter(([, x]) => x > 0).map(([n]) => n);
      const kl = moved(grads('kl'));
      expect(kl.length).toBeGreaterThan(0);
      expect(kl.filter((n) => !n.includes('.indexer.'))).toEqual([]);
      expect(kl).toContain('dec0.indexer.wk');
      if (indexerKeys === 'features') expect(kl).toContain('dec0.indexer.pos');
      expect(moved(grads('nll')).filter((n) => n.includes('.indexer.'))).toEqual([]);
    }
  });

  it('sum fusion has no trainable weights (gated fusion does), and is the plain sum of the stream outputs', () => {
    const sum = setup().model;
    const gated = setup({ fusion: 'gated' }).model;
    const names = (m: GemsModel) => [...m.params.vars.keys()];
    expect(names(sum).filter((n) => /gate|fusion/.test(n))).toEqual([]);
    const extra = names(gated).filter((n) => !sum.params.has(n));
    expect(extra.sort()).toEqual(['dec0.gate.b', 'dec0.gate.w']);
    tf.tidy(() => {
      const h = tf.randomNormal([2, 3, 32], 0, 1, 'float32', 1);
      const outs = [0, 1, 2].map((i) => tf.randomNormal([2, 3, 32], 0, 1, 'float32', 10 + i));
      const fused = sum.fuse('dec0', h, outs).dataSync();
      const manual = outs[0]!.add(outs[1]!).add(outs[2]!).dataSync();
      fused.forEach((v, i) => expect(v).toBeCloseTo(manual[i]!, 5));
      const permuted = sum.fuse('dec0', h, [outs[2]!, outs[0]!, outs[1]!]).dataSync();
      permuted.forEach((v, i) => expect(v).toBeCloseTo(fused[i]!, 5));
    });
  });

  it('beam search returns only valid items, no duplicates, scores sorted; exclusions respected', () => {
    const { model, ctx, sid } = setup();
    const hs = ringHistories(4, 30);
    const { batch } = batchFromSamples(ctx, hs, hs.map((_, u) => ({ user: u, t: 25 })));
    const valid = new Set(Array.from(sid.itemIds));
    const exclude = hs.map((h) => new Set(Array.from(h.itemId.subarray(0, 25))));
    const out = scoped(() => beamSearch(model, sid, model.encode(batch, false), { k: 10, beam: 12, topK: 3, wantMass: true }));
    const outEx = scoped(() => beamSearch(model, sid, model.encode(batch, false), { k: 5, beam: 24, topK: 3, exclude }));
    for (const u of out.users) {
      expect(u.items.length).toBe(10);
      expect(new Set(u.items).size).toBe(u.items.length);
      for (const it of u.items) expect(valid.has(it)).toBe(true);
      for (let i = 1; i < u.scores.length; i++) expect(u.scores[i]!).toBeLessThanOrEqual(u.scores[i - 1]!);
      // SIDs map back to the items.
      u.items.forEach((it, i) => expect(sid.trie.item(u.codes.subarray(i * 3, i * 3 + 3))).toBe(it));
    }
    outEx.users.forEach((u, b) => {
      for (const it of u.items) expect(exclude[b]!.has(it)).toBe(false);
    });
    expect(out.mass!.length).toBe(4 * 3);
    for (let b = 0; b < 4; b++) expect(out.mass![b * 3]! + out.mass![b * 3 + 1]! + out.mass![b * 3 + 2]!).toBeCloseTo(1, 5);
  });

  it('a precomputed lifecycle summary (memory-store interface) replaces the interim one; wrong shapes are refused', () => {
    const { model, ctx, cfg } = setup();
    const [h] = ringHistories(1, 30);
    const own = batchFromInputs(ctx, [h!]);
    const slots = cfg.lifecycle.slots;
    const dim = cfg.lifecycle.inDim;
    const given = { slots, dim, vectors: Float32Array.from({ length: slots * dim }, (_, i) => Math.sin(i)), valid: new Uint8Array(slots).fill(1) };
    const ext = batchFromInputs(ctx, [h!], [given]);
    expect(Array.from(ext.lifecycle)).toEqual(Array.from(given.vectors));
    expect(Array.from(ext.lifecycle)).not.toEqual(Array.from(own.lifecycle));
    const logp = (b: typeof own) => scoped(() => Array.from(model.nextLogProbs(model.encode(b, false), new Int32Array(0), 0, { training: false, indexerLoss: false, topK: 0 }).logp.dataSync()));
    expect(logp(ext)).not.toEqual(logp(own));
    expect(() => batchFromInputs(ctx, [h!], [{ ...given, dim: dim + 1 }])).toThrow(/model expects/);
  });

  it('every fusion variant and stream subset runs forward and backward', () => {
    const hs = ringHistories(2, 30);
    for (const over of [{ fusion: 'shared' as const }, { fusion: 'concat' as const }, { fusion: 'gated' as const }, { streams: { recent: true, mid: false, lifecycle: false } }, { streams: { recent: false, mid: true, lifecycle: true } }]) {
      const { model, ctx } = setup(over);
      const { batch, targetCodes } = batchFromSamples(ctx, hs, [{ user: 0, t: 20 }, { user: 1, t: 29 }]);
      const vars = model.params.trainable().map((x) => x.v);
      const { value, grads } = tf.variableGrads(() => model.loss(batch, targetCodes, { training: true, indexerLoss: model.hasIndexer, topK: model.hasIndexer ? 3 : 0 }).total, vars);
      expect(Number.isFinite(value.dataSync()[0]!)).toBe(true);
      expect(Object.keys(grads).length).toBeGreaterThan(10);
      tf.dispose([value, ...Object.values(grads)]);
      model.params.dispose();
    }
  });
});

describe('prefix code embeddings', () => {
  it('score code c after prefix p with h·(codebook[c] + node[p·c]); the root row stands for missing children', () => {
    const { model, sid, cfg } = setup();
    const trie = sid.trie;
    const d = cfg.d;
    // Two level-1 prefixes (one code each) and every level-2 code after them.
    const parents = Int32Array.from(trie.children(0).codes.slice(0, 2), (c) => trie.child(0, c));
    const h = tf.randomNormal([2, d], 0, 1, 'float32', 3);
    const got = scoped(() => Array.from(model.levelLogits(h, 1, parents).dataSync()));
    const hv = Array.from(h.dataSync());
    const code = Array.from(model.params.get('code1', [cfg.sizes[1]!, d]).dataSync());
    const node = Array.from(model.params.get('code.node', [trie.nodes, d]).dataSync());
    const dot = (a: number[], ai: number, b: number[], bi: number) => a.slice(ai * d, ai * d + d).reduce((s, x, j) => s + x * b[bi * d + j]!, 0);
    const S = cfg.sizes[1]!;
    for (let r = 0; r < 2; r++) {
      for (let c = 0; c < S; c++) {
        const child = trie.child(parents[r]!, c);
        expect(got[r * S + c]!).toBeCloseTo(dot(hv, r, code, c) + dot(hv, r, node, child < 0 ? 0 : child), 4);
      }
    }
    // The same code after different prefixes scores differently (the node part), level 0 has no node part.
    const shared = trie.children(parents[0]!).codes.find((c) => trie.child(parents[1]!, c) >= 0);
    if (shared !== undefined) expect(Math.abs(got[shared]! - got[S + shared]!)).toBeGreaterThan(1e-4);
    const l0 = scoped(() => Array.from(model.levelLogits(h, 0).dataSync()));
    expect(l0[1]!).toBeCloseTo(dot(hv, 0, Array.from(model.params.get('code0', [cfg.sizes[0]!, d]).dataSync()), 1), 4);
    h.dispose();
  });

  it('a model without them (older checkpoints) needs no trie and has no node table; with them, a non-prefix is refused', () => {
    const { model: plain } = setup({ prefixEmbeddings: false });
    expect(plain.trie).toBeNull();
    expect(plain.params.trainable().some((x) => x.name === 'code.node')).toBe(false);
    expect(() => new GemsModel({ ...plain.cfg, prefixEmbeddings: true })).toThrow(/needs the Semantic-ID trie/);
    const { model, ctx, sid } = setup();
    const batch = batchFromInputs(ctx, ringHistories(1, 20));
    // A two-code prefix no fixture item has (24 random items leave some of the 16 empty).
    const pairs = Array.from({ length: sid.sizes[0]! * sid.sizes[1]! }, (_, i) => Int32Array.from([Math.floor(i / sid.sizes[1]!), i % sid.sizes[1]!]));
    const bad = pairs.find((p) => sid.trie.nodeOf(p) < 0)!;
    expect(bad).toBeDefined();
    expect(() => scoped(() => model.nextLogProbs(model.encode(batch, false), bad, 2, { training: false, indexerLoss: false, topK: 0 }))).toThrow(/not a Semantic-ID prefix/);
  });
});

describe('GemsModel.topKBias', () => {
  it('keeps each row’s k highest-scoring valid keys, ties to the lower index (same as sorting)', () => {
    const B = 3;
    const Lq = 5;
    const Lk = 17;
    // Scores on a coarse grid so ties are common; user 2 has fewer valid keys than k.
    const scores = Float32Array.from({ length: B * Lq * Lk }, (_, i) => Math.round(Math.sin(i * 12.9898) * 3));
    const valid = Uint8Array.from({ length: B * Lk }, (_, i) => (Math.floor(i / Lk) === 2 ? (i % Lk < 4 ? 1 : 0) : i % 5 === 3 ? 0 : 1));
    for (const k of [1, 3, 6, 40]) {
      const got = scoped(() => Array.from(GemsModel.topKBias(scores, valid, B, Lq, Lk, k).dataSync()));
      const want = new Array<number>(B * Lq * Lk).fill(-1e9);
      for (let b = 0; b < B; b++) {
        for (let q = 0; q < Lq; q++) {
          const base = (b * Lq + q) * Lk;
          const idx = Array.from({ length: Lk }, (_, j) => j).filter((j) => valid[b * Lk + j]);
          idx.sort((x, y) => scores[base + y]! - scores[base + x]! || x - y);
          for (const j of idx.slice(0, k)) want[base + j] = 0;
        }
      }
      expect(got).toEqual(want);
    }
  });
});
