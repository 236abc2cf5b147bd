import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/compute/backend.js';
import { DEFAULT_CONFIG, type GemsConfig } from '../../src/config/config.js';
import { sliceHistory } from '../../src/data/events.js';
import { Compressor, initCompressorWeights } from '../../src/lifecycle/compressor.js';
import { phi, QlaState, finalizeMemory, stateLength } from '../../src/lifecycle/qla.js';
import { itemVocabulary, relDiff, syntheticHistory } from './_fixtures.js';

const config: GemsConfig = { ...structuredClone(DEFAULT_CONFIG), lifecycle: { ...DEFAULT_CONFIG.lifecycle, chunkSize: 1000 } };
const ITEMS = 500;

describe('QLA compressor', () => {
  beforeAll(async () => {
    await initBackend();
  });

  it('φ is x for x ≥ 1 and e^(x−1) below, continuous at 1 and positive', () => {
    expect(phi(3)).toBe(3);
    expect(phi(1)).toBe(1);
    expect(phi(0)).toBeCloseTo(Math.exp(-1), 12);
    expect(phi(-50)).toBeGreaterThan(0);
    expect(Math.abs(phi(1 - 1e-9) - phi(1))).toBeLessThan(1e-8);
  });

  it('the tfjs fast path matches the plain reference', () => {
    const w = initCompressorWeights(config, itemVocabulary(ITEMS), 7);
    const h = syntheticHistory(1, 2500, ITEMS, 11);
    const fast = new Compressor(w, 1000, 'tfjs');
    const ref = new Compressor(w, 1000, 'reference');
    const a = fast.compress(h);
    const b = ref.compress(h);
    expect(relDiff(a.state, b.state).normRel).toBeLessThan(1e-5);
    expect(relDiff(a.vectors, b.vectors).normRel).toBeLessThan(1e-4);
    expect(a.vectors.length).toBe(config.lifecycle.slots * config.lifecycle.dim);
    fast.dispose();
  });

  it('folding in only the new events gives the memory of a full recompression (≤ 1e-4 relative)', () => {
    const w = initCompressorWeights(config, itemVocabulary(ITEMS), 3);
    const h = syntheticHistory(2, 12_000, ITEMS, 5);
    const c = new Compressor(w, config.lifecycle.chunkSize, 'tfjs');
    const full = c.compress(h);
    // Yesterday's memory covered 11,880 events (1% fewer); today the boundary moved and 120 more crossed it.
    const yesterday = c.compress(sliceHistory(h, 0, 11_880));
    const today = c.compress(h, 11_880, yesterday.state);
    expect(today.folded).toBe(120);
    const d = relDiff(today.vectors, full.vectors);
    expect(d.normRel).toBeLessThanOrEqual(1e-4);
    expect(d.elemRel).toBeLessThanOrEqual(1e-4);
    expect(relDiff(today.state, full.state).normRel).toBeLessThanOrEqual(1e-6);
    // Several small increments accumulate no visible error either.
    let st = c.compress(sliceHistory(h, 0, 6000)).state;
    for (let end = 7000; end <= 12_000; end += 1000) st = c.compress(sliceHistory(h, 0, end), end - 1000, st).state;
    expect(relDiff(finalizeMemory(w.qla, st), full.vectors).elemRel).toBeLessThanOrEqual(1e-4);
    c.dispose();
  });

  it('does not depend on the chunk size, and handles empty and 100,000-event lifecycles', () => {
    const w = initCompressorWeights(config, itemVocabulary(ITEMS), 9);
    const h = syntheticHistory(3, 100_000, ITEMS, 13);
    const a = new Compressor(w, 4096, 'tfjs');
    const b = new Compressor(w, 777, 'tfjs');
    const big = a.compress(h);
    expect(big.folded).toBe(100_000);
    expect(relDiff(b.compress(h).vectors, big.vectors).normRel).toBeLessThan(1e-4);
    const empty = a.compress(sliceHistory(h, 0, 0));
    expect(empty.folded).toBe(0);
    expect(empty.vectors.every(Number.isFinite)).toBe(true);
    expect(empty.state.every((x) => x === 0)).toBe(true);
    // The state holds sums: z (the last keyDim values) of the full history ≈ total of its two halves.
    const s1 = a.compress(sliceHistory(h, 0, 50_000)).state;
    const s2 = a.compress(sliceHistory(h, 50_000, 100_000)).state;
    const sum = QlaState.from(s1, w.qla.keyDim, w.qla.valueDim);
    sum.addPartial(s2.subarray(0, w.qla.keyDim * w.qla.valueDim), s2.subarray(w.qla.keyDim * w.qla.valueDim));
    expect(relDiff(sum.toFloat32(), big.state).normRel).toBeLessThan(1e-5);
    expect(big.state.length).toBe(stateLength(w.qla.keyDim, w.qla.valueDim));
    a.dispose();
    b.dispose();
  });

  it('rejects a history with a non-finite feature, naming the event', () => {
    const w = initCompressorWeights(config, itemVocabulary(ITEMS), 1);
    const h = syntheticHistory(4, 100, ITEMS, 2);
    h.durationMs[42] = Infinity;
    const c = new Compressor(w, 64, 'reference');
    expect(() => c.compress(h)).toThrow(/event 42 of user 4 has a non-finite feature/);
  });
});
