// What the decoder, beam search and training need from the Semantic-ID tokenizer (src/tokenizer/, `loadTokenizer`):
// the codes of every item (n × W, W = L residual levels + the disambiguation level), per-level sizes, the prefix
// trie, and the centroids (used for the interim lifecycle summary). `Tokenizer` from src/tokenizer/store.ts
// satisfies this structurally; `simpleSemanticIds` builds a small deterministic assignment for tests and fixtures.
import { CodeTrie } from '../tokenizer/trie.js';
import { Rng } from '../util/random.js';

export interface SemanticIds {
  version: number;
  /** Codebook size per generated level (W entries, the last one the disambiguation level). */
  sizes: number[];
  /** Item ids, ascending; row i of `codes` is itemIds[i]. */
  itemIds: Int32Array;
  /** n × W row-major codes. */
  codes: Int32Array;
  /** Per residual level, sizes[ℓ] × dim centroids (may be empty for assignments without embeddings). */
  centroids: Float32Array[];
  trie: CodeTrie;
  rowOf(itemId: number): number;
}

/**
 * A deterministic assignment for tests: item i (in ascending id order) gets a random code per level, collisions on
 * the first W-1 levels are split by the last (disambiguation) level. Centroids are random unit-ish vectors of `dim`.
 */
export function simpleSemanticIds(itemIds: ArrayLike<number>, sizes: number[], seed = 1, dim = 8): SemanticIds {
  const ids = Int32Array.from(itemIds).sort();
  const n = ids.length;
  const W = sizes.length;
  if (W < 2) throw new Error('simpleSemanticIds: need ≥ 2 levels (the last disambiguates)');
  const rng = new Rng(seed);
  const codes = new Int32Array(n * W);
  const groups = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const pre: number[] = [];
    for (let l = 0; l < W - 1; l++) pre.push(rng.int(sizes[l]!));
    const key = pre.join(',');
    const k = groups.get(key) ?? 0;
    if (k >= sizes[W - 1]!) throw new Error(`simpleSemanticIds: more than ${sizes[W - 1]} items share prefix ${key}; enlarge the disambiguation level`);
    groups.set(key, k + 1);
    codes.set([...pre, k], i * W);
  }
  const centroids = sizes.slice(0, W - 1).map((k) => Float32Array.from({ length: k * dim }, () => rng.normal(0, 1 / Math.sqrt(dim))));
  const rows = new Map<number, number>();
  ids.forEach((id, i) => rows.set(id, i));
  return { version: 0, sizes, itemIds: ids, codes, centroids, trie: CodeTrie.build(codes, n, W, ids), rowOf: (id) => rows.get(id) ?? -1 };
}

/** An item's first Semantic-ID code — its coarse interest — or −1 for an item without a Semantic ID. */
export function coarseCodeOf(sid: SemanticIds, itemId: number): number {
  const r = sid.rowOf(itemId);
  return r < 0 ? -1 : sid.codes[r * sid.sizes.length]!;
}

/** Item vectors from the tokenizer's residual centroids (Σ_ℓ centroid_ℓ[code_ℓ]): the quantised item embedding. */
export function centroidItemVectors(sid: SemanticIds): { dim: number; vectors: Float32Array } {
  const W = sid.sizes.length;
  const levels = sid.centroids.length;
  if (levels === 0) throw new Error('tokenizer has no centroids');
  const dim = sid.centroids[0]!.length / sid.sizes[0]!;
  const n = sid.itemIds.length;
  const out = new Float32Array(n * dim);
  for (let i = 0; i < n; i++) {
    for (let l = 0; l < Math.min(levels, W - 1); l++) {
      const c = sid.codes[i * W + l]!;
      const cen = sid.centroids[l]!;
      for (let j = 0; j < dim; j++) out[i * dim + j]! += cen[c * dim + j]!;
    }
  }
  return { dim, vectors: out };
}
