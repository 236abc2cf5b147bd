// Incremental decoding (GemsModel.decodeStep: decoder self-attention cache reordered by beam parents) and the
// per-user indexer selection of beam search: equal to decoding whole prefixes; per-user top-k with k ≥ keys equal
// to full attention; one row per user equal to the per-query top-k (the masked training formulation); the lazy
// mid-term path (only the selected keys projected) equal to gathering from the projected keys; the lazily encoded
// mid-term stream (only the selected keys encoded) equal to the fully encoded one; selection 'request' choosing once;
// selection 'shared' choosing once for every layer.
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { initBackend, tf } from '../../src/compute/backend.js';
import { beamSearch } from '../../src/model/beam.js';
import { GemsModel, type DecoderCache, type EncodedStreams, type StepOptions } from '../../src/model/gems.js';
import { scoped } from '../../src/model/ops.js';
import { batchFromInputs } from '../../src/train/samples.js';
import { historyOf, ringHistories, tinyModel } from './fixture.js';

beforeAll(async () => {
  await initBackend();
});

function setup(over = {}) {
  const { sid, model, ctx } = tinyModel({ tMid: 24, decoderLayers: 2, ...over }); // 20 mid-term keys
  // Three users with full streams, one with 10 events (6 of 20 mid-term keys valid: fewer than some k, so padded
  // slots), one with only 2 events (no mid-term keys).
  const hs = [...ringHistories(3, 40), historyOf(8, [10, 12, 14, 16, 18, 20, 22, 24, 26, 28]), historyOf(9, [10, 11])];
  return { sid, model, batch: batchFromInputs(ctx, hs), U: hs.length };
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/**
 * Runs all levels step by step with R rows per user and pseudo-random parents/codes; returns per level the step's
 * log-probabilities and the rows' full prefixes (for the reference).
 */
function stepThrough(model: GemsModel, enc: ReturnType<GemsModel['encode']>, U: number, R: number, opts: Omit<StepOptions, 'rowsPerUser'>, lazyMid = false, inspect?: (prepared: EncodedStreams) => void) {
  return scoped(() => {
    const prepared = model.prepare(enc, { lazyMid, selection: opts.selection });
    let cache: DecoderCache | null = null;
    let prefixes: number[][] = Array.from({ length: U * R }, () => []);
    let nodes = new Int32Array(U * R); // trie node of each row's prefix (the root at level 0)
    const out: { logp: Float32Array; prefixes: Int32Array }[] = [];
    for (let level = 0; level < model.W; level++) {
      let parents: Int32Array | null = null;
      let codes: Int32Array | null = null;
      if (level > 0) {
        parents = Int32Array.from({ length: U * R }, (_, i) => Math.floor(i / R) * R + ((i * 5 + level) % R));
        // A valid continuation of the parent's prefix (prefix embeddings exist only for Semantic-ID prefixes).
        const next = Array.from(parents, (p, i) => {
          const { codes: cc, nodes: ch } = model.trie!.children(nodes[p]!);
          const j = (i * 3 + level) % cc.length;
          return { code: cc[j]!, node: ch.start + j };
        });
        codes = Int32Array.from(next, (x) => x.code);
        prefixes = Array.from(parents, (p, i) => [...prefixes[p]!, codes![i]!]);
        nodes = Int32Array.from(next, (x) => x.node);
      }
      const r = model.decodeStep(prepared, cache, parents, codes, level, { ...opts, rowsPerUser: R, prefixNodes: nodes });
      cache = r.cache;
      out.push({ logp: r.logp.dataSync() as Float32Array, prefixes: Int32Array.from(prefixes.flat()) });
    }
    inspect?.(prepared);
    model.release(prepared);
    return out;
  });
}

describe('GEMs incremental decoding', () => {
  it('decodeStep with the reordered cache equals decoding the whole prefixes (full attention and per-query top-k)', () => {
    for (const fusion of ['sum', 'concat'] as const) {
      const { model, batch, U } = setup({ fusion });
      const R = 3;
      for (const topK of fusion === 'sum' ? [0, 3] : [0]) {
        const steps = scoped(() => stepThrough(model, model.encode(batch, false), U, R, { topK, selection: 'query' }));
        steps.forEach(({ logp, prefixes }, level) => {
          const ref = scoped(() => {
            const prepared = model.prepare(model.encode(batch, false));
            return model.nextLogProbs(prepared, prefixes, level, { training: false, indexerLoss: false, topK, rowsPerUser: R }).logp.dataSync() as Float32Array;
          });
          expect(maxAbsDiff(logp, ref)).toBeLessThanOrEqual(1e-5);
        });
      }
    }
  });

  it('per-user top-k with k ≥ keys equals full attention; lazy (selected keys projected) equals projected-and-gathered', () => {
    const { model, batch, U } = setup();
    const R = 4;
    const enc = () => model.encode(batch, false);
    const full = stepThrough(model, enc(), U, R, { topK: 0 });
    const allKeys = stepThrough(model, enc(), U, R, { topK: 20, selection: 'user' }, true);
    full.forEach((f, l) => expect(maxAbsDiff(f.logp, allKeys[l]!.logp)).toBeLessThanOrEqual(1e-5));
    for (const k of [1, 3, 7]) {
      const lazy = stepThrough(model, enc(), U, R, { topK: k, selection: 'user' }, true);
      const eager = stepThrough(model, enc(), U, R, { topK: k, selection: 'user' }, false);
      lazy.forEach((x, l) => expect(maxAbsDiff(x.logp, eager[l]!.logp)).toBeLessThanOrEqual(1e-5));
    }
    // Selection really happens with k < keys.
    let projected: number[] = [];
    const top3 = stepThrough(model, enc(), U, R, { topK: 3, selection: 'user' }, true, (p) => (projected = [...p.midProjected!.values()].map((c) => c.n)));
    expect(maxAbsDiff(top3[1]!.logp, full[1]!.logp)).toBeGreaterThan(1e-4);
    // A key selected again at a later level is not projected again: per layer, at most each valid key once, fewer
    // than one projection per selection (W levels × U users × 3 keys).
    const validKeys = enc().mem.mid!.valid.reduce((a, v) => a + v, 0);
    expect(projected).toHaveLength(model.cfg.decoderLayers);
    for (const n of projected) {
      expect(n).toBeGreaterThan(0);
      expect(n).toBeLessThanOrEqual(validKeys);
      expect(n).toBeLessThan(model.W * U * 3);
    }
  });

  it('per-user selection with one row per user is the per-query top-k (= the masked formulation)', () => {
    const { model, batch, U } = setup();
    for (const k of [1, 3, 7]) {
      const user = stepThrough(model, model.encode(batch, false), U, 1, { topK: k, selection: 'user' }, true);
      const query = stepThrough(model, model.encode(batch, false), U, 1, { topK: k, selection: 'query' });
      user.forEach((x, l) => expect(maxAbsDiff(x.logp, query[l]!.logp)).toBeLessThanOrEqual(1e-5));
    }
  });

  it('a lazily encoded mid-term stream (only the selected keys encoded) gives exactly the fully encoded results', () => {
    const { model, batch, U } = setup();
    expect(model.indexerOnFeatures).toBe(true);
    const total = U * model.midLen;
    for (const selection of ['user', 'request', 'shared'] as const) {
      for (const k of [1, 3, 7, 20]) {
        let encoded = 0;
        const lazy = stepThrough(model, model.encode(batch, false, { lazyMid: true }), U, 4, { topK: k, selection }, true, (p) => (encoded = p.midEncoded!.n));
        const eager = stepThrough(model, model.encode(batch, false), U, 4, { topK: k, selection }, true);
        lazy.forEach((x, l) => expect(maxAbsDiff(x.logp, eager[l]!.logp)).toBeLessThanOrEqual(1e-5));
        // Encoded: only the selected keys (≤ k per user and layer, once per search with 'request'), never more than
        // the stream; none of the user without mid-term events, whose uniform attention takes the model's
        // padding-key mean.
        expect(encoded).toBeGreaterThan(0);
        expect(encoded).toBeLessThanOrEqual(total - model.midLen);
        if (selection === 'request') expect(encoded).toBeLessThanOrEqual((U - 1) * Math.min(k * model.cfg.decoderLayers, model.midLen));
        if (selection === 'shared') expect(encoded).toBeLessThanOrEqual((U - 1) * Math.min(k, model.midLen));
      }
    }
    // The padding-key mean is kept across searches but follows the weights: after an update (an optimizer assigns),
    // lazy still equals eager for the user without mid-term events.
    const pos = model.params.vars.get('mid.pos')!;
    pos.assign(tf.tidy(() => pos.add(tf.randomNormal(pos.shape, 0, 0.5, 'float32', 3))));
    for (const selection of ['user', 'request', 'shared'] as const) {
      const lazy = stepThrough(model, model.encode(batch, false, { lazyMid: true }), U, 4, { topK: 3, selection }, true);
      const eager = stepThrough(model, model.encode(batch, false), U, 4, { topK: 3, selection }, true);
      lazy.forEach((x, l) => expect(maxAbsDiff(x.logp, eager[l]!.logp)).toBeLessThanOrEqual(1e-5));
    }
    // Beam search's default selection ('shared', what serving and eval use) and 'request' encode lazily; 'user',
    // 'query' and full attention encode the whole stream.
    scoped(() => {
      expect(model.encodeForSearch(batch, 3).midLazy).toBeDefined();
      expect(model.encodeForSearch(batch, 3, 'request').midLazy).toBeDefined();
      expect(model.encodeForSearch(batch, 3, 'user').midLazy).toBeUndefined();
      expect(model.encodeForSearch(batch, 3, 'query').midLazy).toBeUndefined();
      expect(model.encodeForSearch(batch, 0).midLazy).toBeUndefined();
    });
    // A lazy stream needs the lazy preparation, and only an indexer on features can be encoded lazily.
    expect(() => model.prepare(model.encode(batch, false, { lazyMid: true }))).toThrow(/lazyMid/);
    const old = setup({ indexerKeys: undefined }).model;
    expect(old.indexerOnFeatures).toBe(false);
    expect(old.params.get('dec0.indexer.wk', [old.cfg.d, old.cfg.indexer.dim]).shape).toEqual([old.cfg.d, old.cfg.indexer.dim]);
    expect(() => old.encode(batch, false, { lazyMid: true })).toThrow(/indexerKeys/);
  });

  it("selection 'request' picks each layer's keys once, at the first step (= 'user' there), and keeps them", () => {
    const { model, batch, U } = setup();
    const spy = vi.spyOn(model as unknown as { selectUserKeys: () => unknown }, 'selectUserKeys');
    const request = stepThrough(model, model.encode(batch, false, { lazyMid: true }), U, 1, { topK: 3, selection: 'request' }, true);
    expect(spy).toHaveBeenCalledTimes(model.cfg.decoderLayers);
    spy.mockClear();
    const user = stepThrough(model, model.encode(batch, false, { lazyMid: true }), U, 1, { topK: 3, selection: 'user' }, true);
    expect(spy).toHaveBeenCalledTimes(model.cfg.decoderLayers * model.W);
    spy.mockRestore();
    expect(maxAbsDiff(request[0]!.logp, user[0]!.logp)).toBeLessThanOrEqual(1e-6);
    // k ≥ keys: every valid key either way, so full attention at every level.
    const full = stepThrough(model, model.encode(batch, false), U, 1, { topK: 0 });
    const all = stepThrough(model, model.encode(batch, false, { lazyMid: true }), U, 1, { topK: 20, selection: 'request' }, true);
    full.forEach((f, l) => expect(maxAbsDiff(f.logp, all[l]!.logp)).toBeLessThanOrEqual(1e-5));
  });

  it("selection 'shared' picks one key set at the first layer's first step and gives it to every layer", () => {
    const { model, batch, U } = setup();
    const spy = vi.spyOn(model as unknown as { selectUserKeys: () => unknown }, 'selectUserKeys');
    let prepared: EncodedStreams | undefined;
    const shared = stepThrough(model, model.encode(batch, false, { lazyMid: true }), U, 2, { topK: 3, selection: 'shared' }, true, (p) => (prepared = p));
    expect(spy).toHaveBeenCalledTimes(1);
    spy.mockRestore();
    // Only the first layer's indexer keys are computed; every layer attends to the same key indices.
    expect([...prepared!.indexKeys!.keys()]).toEqual([0]);
    const sels = [...prepared!.midSelection!.entries()].sort((a, b) => a[0] - b[0]).map(([, s]) => Array.from(s.flat));
    expect(sels).toHaveLength(model.cfg.decoderLayers);
    for (const s of sels) expect(s).toEqual(sels[0]);
    // The later layers' keys differ from their own choice ('request'), so the outputs differ from it...
    const request = stepThrough(model, model.encode(batch, false, { lazyMid: true }), U, 2, { topK: 3, selection: 'request' }, true);
    expect(maxAbsDiff(shared[1]!.logp, request[1]!.logp)).toBeGreaterThan(1e-4);
    // ...but with one decoder layer the two are the same selection, and with k ≥ keys both are full attention.
    const one = setup({ decoderLayers: 1 });
    const one1 = stepThrough(one.model, one.model.encode(one.batch, false, { lazyMid: true }), one.U, 2, { topK: 3, selection: 'shared' }, true);
    const one2 = stepThrough(one.model, one.model.encode(one.batch, false, { lazyMid: true }), one.U, 2, { topK: 3, selection: 'request' }, true);
    one1.forEach((x, l) => expect(maxAbsDiff(x.logp, one2[l]!.logp)).toBeLessThanOrEqual(1e-6));
    const full = stepThrough(model, model.encode(batch, false), U, 2, { topK: 0 });
    const all = stepThrough(model, model.encode(batch, false, { lazyMid: true }), U, 2, { topK: 20, selection: 'shared' }, true);
    full.forEach((f, l) => expect(maxAbsDiff(f.logp, all[l]!.logp)).toBeLessThanOrEqual(1e-5));
    // Streams prepared for per-layer selection are refused with 'shared', and the other way round.
    const step = (prepareFor: 'request' | 'shared', selection: 'request' | 'shared') =>
      scoped(() => model.decodeStep(model.prepare(model.encode(batch, false, { lazyMid: true }), { lazyMid: true, selection: prepareFor }), null, null, null, 0, { topK: 3, selection }));
    expect(() => step('request', 'shared')).toThrow(/prepared for selection per layer/);
    expect(() => step('shared', 'request')).toThrow(/prepared for selection 'shared'/);
  });

  it('beam search: top-k ≥ keys gives the full-attention items for both selections; no tensors leak', () => {
    const { model, sid, batch } = setup();
    const run = (topK: number, selection: 'user' | 'query') =>
      scoped(() => beamSearch(model, sid, model.encode(batch, false), { k: 5, beam: 8, topK, selection }).users.map((u) => Array.from(u.items)));
    run(0, 'user'); // warm-up (kernels may allocate once)
    const before = tf.memory().numTensors;
    const full = run(0, 'user');
    expect(run(20, 'user')).toEqual(full);
    expect(run(20, 'query')).toEqual(full);
    run(3, 'user');
    expect(tf.memory().numTensors).toBe(before);
    // The lazily encoded stream (what serving runs) finds the same items as the fully encoded one, and leaks nothing.
    const lazyRun = (selection: 'user' | 'request' | 'shared') =>
      scoped(() => beamSearch(model, sid, model.encodeForSearch(batch, 3, selection), { k: 5, beam: 8, topK: 3, selection }).users.map((u) => Array.from(u.items)));
    const eagerRun = (selection: 'user' | 'request' | 'shared') =>
      scoped(() => beamSearch(model, sid, model.encode(batch, false), { k: 5, beam: 8, topK: 3, selection }).users.map((u) => Array.from(u.items)));
    expect(lazyRun('user')).toEqual(eagerRun('user'));
    expect(lazyRun('request')).toEqual(eagerRun('request'));
    expect(lazyRun('shared')).toEqual(eagerRun('shared'));
    // The model keeps one tensor across searches: the padding-key mean of users without mid-term events.
    expect(tf.memory().numTensors).toBe(before + 1);
    lazyRun('request');
    lazyRun('shared');
    expect(tf.memory().numTensors).toBe(before + 1);
  });
});
