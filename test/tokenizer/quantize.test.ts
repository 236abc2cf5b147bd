import { describe, expect, it } from 'vitest';
import { defaultCodebookSizes, disambiguate, residualQuantize, type QuantizeParams } from '../../src/tokenizer/quantize.js';
import { kmeans, jsAssigner, tfAssigner } from '../../src/tokenizer/kmeans.js';
import { clusteredVectors } from './fixtures.js';

const params = (over: Partial<QuantizeParams> = {}): QuantizeParams => ({ sizes: [8, 8, 8], iterations: 20, seed: 7, balanced: false, engine: 'js', ...over });
const ids = (n: number) => Int32Array.from({ length: n }, (_, i) => 10 * i + 3);

function uniqueRows(codes: Int32Array, n: number, w: number): number {
  const s = new Set<string>();
  for (let i = 0; i < n; i++) s.add(Array.from(codes.subarray(i * w, i * w + w)).join(','));
  return s.size;
}

describe('residual k-means', () => {
  const n = 800;
  const d = 16;
  const x = clusteredVectors(n, d, 12, 1);

  it('gives every item a unique ID after the disambiguation code, within the codebook sizes', async () => {
    const r = await residualQuantize(x, n, d, ids(n), params());
    expect(r.sizes.slice(0, 3)).toEqual([8, 8, 8]);
    expect(uniqueRows(r.codes, n, 4)).toBe(n);
    for (let i = 0; i < n; i++) {
      for (let l = 0; l < 4; l++) {
        expect(r.codes[i * 4 + l]).toBeGreaterThanOrEqual(0);
        expect(r.codes[i * 4 + l]).toBeLessThan(r.sizes[l]!);
      }
    }
    // The disambiguation level's size is the longest collision group, and collisions are counted before it.
    expect(r.sizes[3]).toBe(r.quality.longestCollisionGroup);
    expect(r.quality.collisionRate).toBeGreaterThanOrEqual(0);
    expect(r.quality.distinctCodeShare).toBeCloseTo(uniqueRows(new Int32Array(Array.from({ length: n * 3 }, (_, k) => r.codes[Math.floor(k / 3) * 4 + (k % 3)]!)), n, 3) / n, 10);
  });

  it('same seed → identical codes and centroids; another seed → different codes', async () => {
    const a = await residualQuantize(x, n, d, ids(n), params());
    const b = await residualQuantize(x, n, d, ids(n), params());
    expect(Array.from(b.codes)).toEqual(Array.from(a.codes));
    expect(Array.from(b.centroids[2]!)).toEqual(Array.from(a.centroids[2]!));
    const c = await residualQuantize(x, n, d, ids(n), params({ seed: 8 }));
    expect(Array.from(c.codes)).not.toEqual(Array.from(a.codes));
  });

  it('reconstruction error falls with each level and the report has usage per level', async () => {
    const r = await residualQuantize(x, n, d, ids(n), params());
    const mse = r.quality.perLevel.map((l) => l.reconMse);
    expect(mse[0]).toBeLessThan(1); // unit vectors: error before quantisation is 1
    expect(mse[1]).toBeLessThan(mse[0]!);
    expect(mse[2]).toBeLessThan(mse[1]!);
    // Reconstructing from codes + saved centroids gives the reported error.
    let err = 0;
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < d; j++) {
        let v = x[i * d + j]!;
        for (let l = 0; l < 3; l++) v -= r.centroids[l]![r.codes[i * 4 + l]! * d + j]!;
        err += v * v;
      }
    }
    expect(err / n).toBeCloseTo(mse[2]!, 4);
    for (const l of r.quality.perLevel) {
      expect(l.perplexity).toBeGreaterThan(1);
      expect(l.perplexity).toBeLessThanOrEqual(l.size + 1e-9);
      expect(l.usedShare).toBeGreaterThan(0);
    }
  });

  it('balanced assignment caps every code at ceil(n/K) items per level', async () => {
    const r = await residualQuantize(x, n, d, ids(n), params({ balanced: true }));
    for (let l = 0; l < 3; l++) {
      const counts = new Map<number, number>();
      for (let i = 0; i < n; i++) counts.set(r.codes[i * 4 + l]!, (counts.get(r.codes[i * 4 + l]!) ?? 0) + 1);
      expect(Math.max(...counts.values())).toBeLessThanOrEqual(Math.ceil(n / 8));
      expect(r.quality.perLevel[l]!.perplexity).toBeGreaterThan(7.9);
    }
    expect(uniqueRows(r.codes, n, 4)).toBe(n);
  });

  it('duplicate embeddings share every level code and are told apart by the disambiguation code', async () => {
    const m = 200;
    const y = clusteredVectors(m, d, 5, 2);
    // Items 0..4 are copies of item 0.
    for (let i = 1; i < 5; i++) y.copyWithin(i * d, 0, d);
    const r = await residualQuantize(y, m, d, ids(m), params());
    const prefix = (i: number) => Array.from(r.codes.subarray(i * 4, i * 4 + 3)).join(',');
    for (let i = 1; i < 5; i++) expect(prefix(i)).toBe(prefix(0));
    const dis = [0, 1, 2, 3, 4].map((i) => r.codes[i * 4 + 3]!).sort();
    expect(new Set(dis).size).toBe(5);
    expect(r.sizes[3]).toBeGreaterThanOrEqual(5);
    expect(uniqueRows(r.codes, m, 4)).toBe(m);
    // Balanced assignment may split the copies across codes (capacity), the IDs stay unique either way.
    const b = await residualQuantize(y, m, d, ids(m), params({ balanced: true, uniqueLastLevel: true }));
    expect(uniqueRows(b.codes, m, 4)).toBe(m);
  });

  it('unique last level: colliding items move to their nearest free last-level code', async () => {
    const plain = await residualQuantize(x, n, d, ids(n), params({ sizes: [8, 8, 32] }));
    const spread = await residualQuantize(x, n, d, ids(n), params({ sizes: [8, 8, 32], uniqueLastLevel: true }));
    // Levels 1..L-1 are untouched; only the last level changes.
    for (let i = 0; i < n; i++) for (let l = 0; l < 2; l++) expect(spread.codes[i * 4 + l]).toBe(plain.codes[i * 4 + l]);
    expect(spread.quality.collisionRateNearest).toBeCloseTo(plain.quality.collisionRate, 10);
    expect(spread.quality.collisionRate).toBeLessThan(plain.quality.collisionRate);
    expect(spread.quality.lastLevelMoved).toBeGreaterThan(0);
    expect(spread.quality.longestCollisionGroup).toBeLessThanOrEqual(plain.quality.longestCollisionGroup);
    expect(uniqueRows(spread.codes, n, 4)).toBe(n);
    // The reported last-level error matches the moved codes.
    let err = 0;
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < d; j++) {
        let v = x[i * d + j]!;
        for (let l = 0; l < 3; l++) v -= spread.centroids[l]![spread.codes[i * 4 + l]! * d + j]!;
        err += v * v;
      }
    }
    expect(err / n).toBeCloseTo(spread.quality.perLevel[2]!.reconMse, 4);
    // Moves never make the last level worse than not having it.
    expect(spread.quality.perLevel[2]!.reconMse).toBeLessThan(spread.quality.perLevel[1]!.reconMse);
    // Duplicates: no other code reduces their (shared) residual more, so whatever the step does, the full IDs stay unique.
    const y = clusteredVectors(200, d, 5, 2);
    for (let i = 1; i < 5; i++) y.copyWithin(i * d, 0, d);
    const r = await residualQuantize(y, 200, d, ids(200), params({ sizes: [8, 8, 32], uniqueLastLevel: true }));
    expect(uniqueRows(r.codes, 200, 4)).toBe(200);
  });

  it('a catalogue smaller than a codebook shrinks that codebook to the item count and says so', async () => {
    const m = 5;
    const y = clusteredVectors(m, d, 5, 3);
    const r = await residualQuantize(y, m, d, ids(m), params({ sizes: [16, 4, 4] }));
    expect(r.sizes.slice(0, 3)).toEqual([5, 4, 4]);
    expect(r.quality.requestedSizes).toEqual([16, 4, 4]);
    expect(r.quality.notes.join(' ')).toMatch(/level 1: codebook shrunk from 16 to 5/);
    expect(uniqueRows(r.codes, m, 4)).toBe(m);
    // Five distinct points and five level-1 codes: each item gets its own code, no collisions.
    expect(r.quality.collisionRate).toBe(0);
  });

  it('identical catalogue entries only: codes stay valid, empty codes are reported', async () => {
    const m = 6;
    const y = new Float32Array(m * d).fill(0.25);
    const r = await residualQuantize(y, m, d, ids(m), params({ sizes: [4, 4] }));
    expect(uniqueRows(r.codes, m, 3)).toBe(m);
    expect(r.quality.longestCollisionGroup).toBe(6);
    expect(r.quality.notes.join(' ')).toMatch(/codes stayed empty/);
  });

  it('rejects bad input with a clear error', async () => {
    await expect(residualQuantize(x, n, d, ids(n), params({ sizes: [1, 8] }))).rejects.toThrow(/level 1 must be an integer ≥ 2/);
    await expect(residualQuantize(x, n + 1, d, ids(n + 1), params())).rejects.toThrow(/expected 801×16/);
    await expect(residualQuantize(new Float32Array(0), 0, d, ids(0), params())).rejects.toThrow(/empty catalogue/);
  });
});

describe('k-means engines', () => {
  it('TensorFlow.js and plain JS assignments agree (up to float ties)', async () => {
    const n = 3000;
    const d = 24;
    const k = 40;
    const x = clusteredVectors(n, d, 30, 4);
    const c = x.slice(0, k * d);
    const a1 = new Int32Array(n);
    const d1 = new Float32Array(n);
    const a2 = new Int32Array(n);
    const d2 = new Float32Array(n);
    await jsAssigner.assign(x, n, d, c, k, a1, d1);
    const tf = await tfAssigner(1000);
    await tf.assign(x, n, d, c, k, a2, d2);
    let same = 0;
    for (let i = 0; i < n; i++) {
      if (a1[i] === a2[i]) same++;
      expect(d2[i]).toBeCloseTo(d1[i]!, 4);
    }
    expect(same / n).toBeGreaterThan(0.995);
    const r = await kmeans(x, n, d, { k, iterations: 5, seed: 1, engine: tf });
    expect(r.centroids.length).toBe(k * d);
    expect(r.empty).toBe(0);
  });
});

describe('defaultCodebookSizes', () => {
  it('picks the smallest power of two with K^L ≥ 64n, between 4 and 256', () => {
    expect(defaultCodebookSizes(3706)).toEqual([64, 64, 64]);
    expect(defaultCodebookSizes(20_000)).toEqual([128, 128, 128]);
    expect(defaultCodebookSizes(100_000)).toEqual([256, 256, 256]);
    expect(defaultCodebookSizes(5_000_000)).toEqual([256, 256, 256]);
    expect(defaultCodebookSizes(1)).toEqual([4, 4, 4]);
    expect(defaultCodebookSizes(1000, 2)).toEqual([256, 256]);
  });
});

describe('disambiguate', () => {
  it('numbers colliding items 0,1,2… in item-id order', () => {
    // 4 items, 2 levels (+1 disambiguation column); items 0, 2, 3 collide.
    const codes = Int32Array.from([1, 2, 0, 0, 1, 0, 1, 2, 0, 1, 2, 0]);
    const itemIds = Int32Array.from([30, 5, 10, 20]);
    const r = disambiguate(codes, 4, 2, itemIds);
    expect(r).toEqual({ maxGroup: 3, colliding: 3, distinct: 2 });
    expect([codes[2], codes[5], codes[8], codes[11]]).toEqual([2, 0, 0, 1]);
  });
});
