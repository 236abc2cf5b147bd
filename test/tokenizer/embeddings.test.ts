import { describe, expect, it } from 'vitest';
import { CooccurrenceBuilder, EMBEDDING_SOURCE, embedItems, embedItemsFromSequences, ItemIndex, type EmbeddingParams } from '../../src/tokenizer/embeddings.js';
import { groupedCatalogue } from './fixtures.js';

const params: EmbeddingParams = { dim: 16, contentDim: 4, contentWeight: 0.25, window: 5, seed: 3 };

function cosine(v: Float32Array, d: number, a: number, b: number): number {
  let s = 0;
  for (let j = 0; j < d; j++) s += v[a * d + j]! * v[b * d + j]!;
  return s;
}

describe('item embeddings', () => {
  const { catalog, sequences, groupOf } = groupedCatalogue(6, 30, 120, 40, 11, 3);

  it('are unit vectors, deterministic for a seed, and put co-occurring items close', () => {
    const a = embedItemsFromSequences(catalog, sequences, params);
    const b = embedItemsFromSequences(catalog, sequences, params);
    expect(Array.from(b.vectors)).toEqual(Array.from(a.vectors));
    const d = a.dim;
    for (let i = 0; i < a.n; i++) expect(cosine(a.vectors, d, i, i)).toBeCloseTo(1, 5);
    // Mean cosine within a group (items browsed by the same users) beats the mean across groups by far.
    let within = 0;
    let wn = 0;
    let across = 0;
    let an = 0;
    for (let i = 0; i < a.n; i++) {
      for (let j = i + 1; j < a.n; j++) {
        const c = cosine(a.vectors, d, i, j);
        if (groupOf(i) === groupOf(j)) {
          within += c;
          wn++;
        } else {
          across += c;
          an++;
        }
      }
    }
    expect(within / wn).toBeGreaterThan(across / an + 0.4);
    const other = embedItemsFromSequences(catalog, sequences, { ...params, seed: 4 });
    expect(Array.from(other.vectors)).not.toEqual(Array.from(a.vectors));
  });

  it('items with no history get content-only embeddings next to their tag/author group', () => {
    const e = embedItemsFromSequences(catalog, sequences, params);
    expect(e.stats.contentOnly).toBe(6 * 3);
    expect(e.stats.itemsWithHistory).toBe(6 * 27);
    const cold = 29; // last item of group 0, never browsed
    expect(e.source[cold]).toBe(EMBEDDING_SOURCE.contentOnly);
    expect(e.source[0]).toBe(EMBEDDING_SOURCE.collabAndContent);
    // Nearest warm item of the cold item is in its own group.
    let best = -2;
    let arg = -1;
    for (let j = 0; j < e.n; j++) {
      if (e.source[j] !== EMBEDDING_SOURCE.collabAndContent) continue;
      const c = cosine(e.vectors, e.dim, cold, j);
      if (c > best) {
        best = c;
        arg = j;
      }
    }
    expect(groupOf(arg)).toBe(0);
  });

  it('items with neither history nor content get a seeded random direction; unknown item ids are counted', () => {
    const cat = { ...catalog, tagOffsets: new Int32Array(catalog.length + 1), tagIds: new Int32Array(0), authorId: new Int32Array(catalog.length).fill(-1) };
    const seqs = [...sequences, Int32Array.from([999_999, 100])];
    const e = embedItemsFromSequences(cat, seqs, params);
    expect(e.stats.random).toBe(18);
    expect(e.stats.unknownItemEvents).toBe(1);
    expect(e.source[29]).toBe(EMBEDDING_SOURCE.random);
    expect(e.source[0]).toBe(EMBEDDING_SOURCE.collabOnly);
    expect(cosine(e.vectors, e.dim, 29, 29)).toBeCloseTo(1, 5);
    expect(cosine(e.vectors, e.dim, 28, 29)).toBeLessThan(0.99);
  });

  it('a catalogue with no histories at all is content-only', () => {
    const e = embedItemsFromSequences(catalog, [], params);
    expect(e.stats.contentOnly).toBe(catalog.length);
    expect(e.stats.ppmiNonZeros).toBe(0);
    // Same tag and author → same content vector.
    expect(cosine(e.vectors, e.dim, 0, 1)).toBeCloseTo(1, 5);
  });

  it('co-occurrence counts do not depend on the merge buffer size', () => {
    const index = new ItemIndex(catalog.itemId);
    const small = new CooccurrenceBuilder(index, 5, 97);
    const big = new CooccurrenceBuilder(index, 5);
    for (const s of sequences) {
      small.addSequence(s);
      big.addSequence(s);
    }
    const a = small.finish();
    const b = big.finish();
    expect(Array.from(a.keys)).toEqual(Array.from(b.keys));
    expect(Array.from(a.counts)).toEqual(Array.from(b.counts));
    // Total count = pairs within the window, minus same-item pairs.
    expect(a.counts.reduce((x, y) => x + y, 0)).toBe(small.pairsCounted);
  });

  it('rejects a catalogue with a duplicate item id', () => {
    expect(() => new ItemIndex(Int32Array.from([1, 2, 1]))).toThrow(/item id 1 appears twice/);
    expect(() => embedItems(catalog, new CooccurrenceBuilder(new ItemIndex(Int32Array.from([1])), 3), params)).toThrow(/built for 1 items/);
  });
});
