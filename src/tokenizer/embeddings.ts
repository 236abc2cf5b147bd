// Item embeddings for the Semantic-ID tokenizer: a collaborative part (items that co-occur in user histories end up
// close) concatenated with a content part (tags/genres and author), each L2-normalised, weighted, and the whole
// vector L2-normalised.
//
// Collaborative: counts of item pairs within a sliding window of each user's chronological sequence, turned into
// positive PMI (with context-distribution smoothing α = 0.75, as in word2vec/Levy–Goldberg) and factorised by a
// truncated eigendecomposition of that symmetric sparse matrix (randomized subspace iteration: Halko, Martinsson &
// Tropp 2011), embedding = U·sqrt(|λ|). It is deterministic for a seed, needs no gradient training, and runs in a
// few seconds on ML-1M. Pair counts are accumulated in sorted chunks, so memory follows the number of distinct
// pairs, not the catalogue size squared.
//
// Content: each tag and each author has a fixed pseudo-random Gaussian direction derived from (seed, id) — stable
// when the vocabulary grows — and an item's content vector is the IDF-weighted sum of its tags' directions plus its
// author's (author ids ≤ 0 mean none). A placeholder author shared by every item would get IDF 0 anyway.
//
// Items without collaborative signal (no history, or only in one-item histories) get their collaborative part
// imputed from the mean collaborative vectors of the warm items that share their tags/author: content-only, but
// placed in the collaborative space. Items with neither history nor content get a seeded random direction.
import { hash32, Rng } from '../util/random.js';
import { normalizeRows, orthonormalizeColumns, symmetricEigen } from './linalg.js';
import type { Logger } from '../util/log.js';

/** The item columns the tokenizer reads (a subset of the store's ItemColumns). */
export interface CatalogColumns {
  length: number;
  itemId: Int32Array;
  /** 0 or negative = no author (the store stores a missing author as 0). */
  authorId: Int32Array;
  tagOffsets: Int32Array;
  tagIds: Int32Array;
}

export interface EmbeddingParams {
  dim: number;
  /** Dimensions given to the content part (the rest are collaborative). */
  contentDim: number;
  /** Share of the squared norm given to the content part for items that have both (0..1). */
  contentWeight: number;
  /** Co-occurrence window: pairs at most this many positions apart in a user's sequence. */
  window: number;
  seed: number;
  powerIterations?: number;
  oversample?: number;
}

/** Where an item's embedding came from. */
export const EMBEDDING_SOURCE = { collabAndContent: 0, contentOnly: 1, collabOnly: 2, random: 3 } as const;

export interface ItemEmbeddings {
  n: number;
  dim: number;
  itemIds: Int32Array;
  /** n×dim row-major, rows L2-normalised. */
  vectors: Float32Array;
  /** EMBEDDING_SOURCE per item. */
  source: Uint8Array;
  stats: {
    collabDim: number;
    contentDim: number;
    window: number;
    pairsCounted: number;
    distinctPairs: number;
    ppmiNonZeros: number;
    itemsWithHistory: number;
    collabAndContent: number;
    contentOnly: number;
    collabOnly: number;
    random: number;
    unknownItemEvents: number;
    seconds: number;
  };
}

/** Maps external item ids to dense row indices 0..n-1. */
export class ItemIndex {
  private readonly map = new Map<number, number>();
  constructor(readonly itemIds: Int32Array) {
    for (let i = 0; i < itemIds.length; i++) {
      if (this.map.has(itemIds[i]!)) throw new Error(`item id ${itemIds[i]} appears twice in the catalogue`);
      this.map.set(itemIds[i]!, i);
    }
  }
  get size(): number {
    return this.itemIds.length;
  }
  /** Row of an item id, or -1 when it is not in the catalogue. */
  indexOf(itemId: number): number {
    return this.map.get(itemId) ?? -1;
  }
}

/**
 * Accumulates windowed co-occurrence counts of item pairs from user sequences, one sequence at a time (so a scan
 * of the store never holds all histories). Pairs are keyed `min*n + max` in a Float64Array buffer; a full buffer is
 * sorted, run-length encoded and merged into the accumulated sorted (key, count) arrays.
 */
export class CooccurrenceBuilder {
  private buf: Float64Array;
  private len = 0;
  private keys = new Float64Array(0);
  private counts = new Float32Array(0);
  pairsCounted = 0;
  unknownItemEvents = 0;
  readonly occurrences: Int32Array;

  constructor(
    readonly index: ItemIndex,
    readonly window: number,
    bufferPairs = 1 << 22,
  ) {
    if (!Number.isInteger(window) || window < 1) throw new Error(`co-occurrence window must be a positive integer, got ${window}`);
    this.buf = new Float64Array(bufferPairs);
    this.occurrences = new Int32Array(index.size);
  }

  /** Adds one user's chronological item ids (ids not in the catalogue are skipped and counted). */
  addSequence(itemIds: ArrayLike<number>): void {
    const seq = new Int32Array(itemIds.length);
    let m = 0;
    for (let i = 0; i < itemIds.length; i++) {
      const r = this.index.indexOf(itemIds[i]!);
      if (r < 0) this.unknownItemEvents++;
      else {
        seq[m++] = r;
        this.occurrences[r]!++;
      }
    }
    const n = this.index.size;
    const w = this.window;
    for (let i = 0; i < m; i++) {
      const a = seq[i]!;
      const end = Math.min(m, i + w + 1);
      for (let j = i + 1; j < end; j++) {
        const b = seq[j]!;
        if (a === b) continue;
        if (this.len === this.buf.length) this.flush();
        this.buf[this.len++] = a < b ? a * n + b : b * n + a;
      }
    }
  }

  private flush(): void {
    if (this.len === 0) return;
    const sorted = this.buf.subarray(0, this.len).sort();
    this.pairsCounted += this.len;
    // Run-length encode the sorted chunk.
    const uk = new Float64Array(this.len);
    const uc = new Float32Array(this.len);
    let u = 0;
    for (let i = 0; i < sorted.length; i++) {
      if (u > 0 && uk[u - 1] === sorted[i]) uc[u - 1]!++;
      else {
        uk[u] = sorted[i]!;
        uc[u++] = 1;
      }
    }
    // Merge with what is accumulated.
    const a = this.keys;
    const ac = this.counts;
    const mk = new Float64Array(a.length + u);
    const mc = new Float32Array(a.length + u);
    let i = 0;
    let j = 0;
    let o = 0;
    while (i < a.length || j < u) {
      if (j >= u || (i < a.length && a[i]! < uk[j]!)) {
        mk[o] = a[i]!;
        mc[o++] = ac[i++]!;
      } else if (i >= a.length || uk[j]! < a[i]!) {
        mk[o] = uk[j]!;
        mc[o++] = uc[j++]!;
      } else {
        mk[o] = a[i]!;
        mc[o++] = ac[i++]! + uc[j++]!;
      }
    }
    this.keys = mk.slice(0, o);
    this.counts = mc.slice(0, o);
    this.len = 0;
  }

  /** Sorted distinct pair keys (`min*n + max`) and their counts. */
  finish(): { keys: Float64Array; counts: Float32Array } {
    this.flush();
    this.buf = new Float64Array(0);
    return { keys: this.keys, counts: this.counts };
  }
}

/** Symmetric sparse matrix in CSR form (both triangles stored). */
export interface Csr {
  n: number;
  rowPtr: Int32Array;
  col: Int32Array;
  val: Float32Array;
}

/** Positive PMI of the co-occurrence counts, with context-distribution smoothing `alpha` (both sides). */
export function ppmi(n: number, keys: Float64Array, counts: Float32Array, alpha = 0.75): Csr {
  const rowSum = new Float64Array(n);
  let total = 0;
  for (let e = 0; e < keys.length; e++) {
    const i = Math.floor(keys[e]! / n);
    const j = keys[e]! - i * n;
    rowSum[i] += counts[e]!;
    rowSum[j] += counts[e]!;
    total += 2 * counts[e]!;
  }
  let smoothed = 0;
  for (let i = 0; i < n; i++) if (rowSum[i]! > 0) smoothed += rowSum[i]! ** alpha;
  const logP = new Float64Array(n);
  for (let i = 0; i < n; i++) logP[i] = rowSum[i]! > 0 ? alpha * Math.log(rowSum[i]!) - Math.log(smoothed) : 0;
  const pmi = new Float32Array(keys.length);
  const perRow = new Int32Array(n + 1);
  const logTotal = Math.log(total);
  for (let e = 0; e < keys.length; e++) {
    const i = Math.floor(keys[e]! / n);
    const j = keys[e]! - i * n;
    const v = Math.log(counts[e]!) - logTotal - logP[i]! - logP[j]!;
    if (v > 0) {
      pmi[e] = v;
      perRow[i + 1]!++;
      perRow[j + 1]!++;
    }
  }
  for (let i = 0; i < n; i++) perRow[i + 1] += perRow[i]!;
  const nnz = perRow[n]!;
  const col = new Int32Array(nnz);
  const val = new Float32Array(nnz);
  const fill = perRow.slice(0, n);
  for (let e = 0; e < keys.length; e++) {
    const v = pmi[e]!;
    if (v <= 0) continue;
    const i = Math.floor(keys[e]! / n);
    const j = keys[e]! - i * n;
    col[fill[i]!] = j;
    val[fill[i]!++] = v;
    col[fill[j]!] = i;
    val[fill[j]!++] = v;
  }
  return { n, rowPtr: perRow, col, val };
}

/** Y = A·X for a CSR matrix A (n×n) and a dense row-major X (n×m). */
function spmm(a: Csr, x: Float64Array, m: number): Float64Array {
  const y = new Float64Array(a.n * m);
  for (let i = 0; i < a.n; i++) {
    const yo = i * m;
    for (let e = a.rowPtr[i]!; e < a.rowPtr[i + 1]!; e++) {
      const v = a.val[e]!;
      const xo = a.col[e]! * m;
      for (let k = 0; k < m; k++) y[yo + k] += v * x[xo + k]!;
    }
  }
  return y;
}

/**
 * Rank-k embedding of a symmetric sparse matrix: U_k·sqrt(|λ_k|) of its k largest-magnitude eigenpairs, by
 * randomized subspace iteration with a seeded Gaussian start. Returns n×k row-major.
 */
export function spectralEmbedding(a: Csr, k: number, seed: number, powerIterations = 4, oversample = 12): Float64Array {
  const n = a.n;
  const m = Math.min(n, k + oversample);
  const rng = new Rng(seed);
  let y: Float64Array = new Float64Array(n * m);
  for (let i = 0; i < y.length; i++) y[i] = rng.normal();
  y = spmm(a, y, m);
  for (let q = 0; q < powerIterations; q++) {
    orthonormalizeColumns(y, n, m);
    y = spmm(a, y, m);
  }
  orthonormalizeColumns(y, n, m);
  const aq = spmm(a, y, m);
  const b = new Float64Array(m * m);
  for (let i = 0; i < n; i++) {
    for (let r = 0; r < m; r++) {
      const qir = y[i * m + r]!;
      if (qir === 0) continue;
      for (let c = 0; c < m; c++) b[r * m + c] += qir * aq[i * m + c]!;
    }
  }
  for (let r = 0; r < m; r++) for (let c = r + 1; c < m; c++) b[r * m + c] = b[c * m + r] = (b[r * m + c]! + b[c * m + r]!) / 2;
  const { values, vectors } = symmetricEigen(b, m);
  const kk = Math.min(k, m);
  const out = new Float64Array(n * k);
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < kk; c++) {
      let s = 0;
      for (let r = 0; r < m; r++) s += y[i * m + r]! * vectors[r * m + c]!;
      out[i * k + c] = s * Math.sqrt(Math.abs(values[c]!));
    }
  }
  return out;
}

/** A fixed pseudo-random unit direction for (namespace, id), independent of the rest of the vocabulary. */
function direction(seed: number, namespace: number, id: number, d: number): Float64Array {
  const rng = new Rng(hash32((seed ^ Math.imul(namespace, 0x9e3779b1)) >>> 0) ^ hash32(id >>> 0));
  const v = new Float64Array(d);
  let s = 0;
  for (let k = 0; k < d; k++) {
    v[k] = rng.normal();
    s += v[k]! ** 2;
  }
  const norm = Math.sqrt(s) || 1;
  for (let k = 0; k < d; k++) v[k] = v[k]! / norm;
  return v;
}

/** n×d content vectors (unnormalised; zero rows = no content) from tags and author, IDF-weighted. */
export function contentVectors(catalog: CatalogColumns, d: number, seed: number): Float64Array {
  const n = catalog.length;
  const out = new Float64Array(n * d);
  if (d === 0) return out;
  const tagDf = new Map<number, number>();
  const authorDf = new Map<number, number>();
  for (let i = 0; i < n; i++) {
    const seen = new Set<number>();
    for (let t = catalog.tagOffsets[i]!; t < catalog.tagOffsets[i + 1]!; t++) seen.add(catalog.tagIds[t]!);
    for (const t of seen) tagDf.set(t, (tagDf.get(t) ?? 0) + 1);
    const a = catalog.authorId[i]!;
    if (a > 0) authorDf.set(a, (authorDf.get(a) ?? 0) + 1);
  }
  const dirs = new Map<string, Float64Array>();
  const dirOf = (ns: number, id: number) => {
    const key = `${ns}:${id}`;
    let v = dirs.get(key);
    if (!v) dirs.set(key, (v = direction(seed, ns, id, d)));
    return v;
  };
  for (let i = 0; i < n; i++) {
    const o = i * d;
    const seen = new Set<number>();
    for (let t = catalog.tagOffsets[i]!; t < catalog.tagOffsets[i + 1]!; t++) seen.add(catalog.tagIds[t]!);
    for (const t of seen) {
      const w = Math.log(n / tagDf.get(t)!);
      if (w <= 0) continue;
      const v = dirOf(1, t);
      for (let k = 0; k < d; k++) out[o + k] += w * v[k]!;
    }
    const a = catalog.authorId[i]!;
    if (a > 0) {
      const w = Math.log(n / authorDf.get(a)!);
      if (w > 0) {
        const v = dirOf(2, a);
        for (let k = 0; k < d; k++) out[o + k] += w * v[k]!;
      }
    }
  }
  return out;
}

/** Computes the item embeddings from the catalogue and the finished co-occurrence counts. */
export function embedItems(catalog: CatalogColumns, cooc: CooccurrenceBuilder, params: EmbeddingParams, log?: Logger): ItemEmbeddings {
  const t0 = performance.now();
  const n = catalog.length;
  const d = params.dim;
  const dContent = Math.max(0, Math.min(d, params.contentDim));
  const dCollab = d - dContent;
  if (!(params.contentWeight >= 0 && params.contentWeight <= 1)) throw new Error(`contentWeight must be in [0, 1], got ${params.contentWeight}`);
  if (cooc.index.size !== n) throw new Error(`co-occurrence built for ${cooc.index.size} items, catalogue has ${n}`);

  const { keys, counts } = cooc.finish();
  const matrix = ppmi(n, keys, counts);
  log?.info('co-occurrence counted', { pairs: cooc.pairsCounted, distinct_pairs: keys.length, ppmi_nonzeros: matrix.val.length });
  const collab = dCollab > 0 && matrix.val.length > 0 ? spectralEmbedding(matrix, dCollab, params.seed, params.powerIterations, params.oversample) : new Float64Array(n * dCollab);
  const collabNorm = normalizeRows(collab, n, dCollab);
  const content = contentVectors(catalog, dContent, params.seed);
  const contentNorm = normalizeRows(content, n, dContent);

  // Impute the collaborative part of cold items from warm items sharing a tag or the author.
  const isWarm = (i: number) => collabNorm[i]! > 0;
  const tagSum = new Map<number, Float64Array>();
  const authorSum = new Map<number, Float64Array>();
  const add = (m: Map<number, Float64Array>, key: number, i: number) => {
    let v = m.get(key);
    if (!v) m.set(key, (v = new Float64Array(dCollab)));
    for (let k = 0; k < dCollab; k++) v[k] += collab[i * dCollab + k]!;
  };
  if (dCollab > 0) {
    for (let i = 0; i < n; i++) {
      if (!isWarm(i)) continue;
      for (let t = catalog.tagOffsets[i]!; t < catalog.tagOffsets[i + 1]!; t++) add(tagSum, catalog.tagIds[t]!, i);
      if (catalog.authorId[i]! > 0) add(authorSum, catalog.authorId[i]!, i);
    }
  }
  const imputed = new Uint8Array(n);
  const tmp = new Float64Array(dCollab);
  for (let i = 0; i < n && dCollab > 0; i++) {
    if (isWarm(i) || contentNorm[i] === 0) continue;
    tmp.fill(0);
    const parts = [...new Set(Array.from(catalog.tagIds.subarray(catalog.tagOffsets[i]!, catalog.tagOffsets[i + 1]!)))].map((t) => tagSum.get(t));
    if (catalog.authorId[i]! > 0) parts.push(authorSum.get(catalog.authorId[i]!));
    for (const p of parts) {
      if (!p) continue;
      let s = 0;
      for (let k = 0; k < dCollab; k++) s += p[k]! ** 2;
      const norm = Math.sqrt(s);
      if (norm > 0) for (let k = 0; k < dCollab; k++) tmp[k] += p[k]! / norm;
    }
    let s = 0;
    for (let k = 0; k < dCollab; k++) s += tmp[k]! ** 2;
    if (s === 0) continue;
    const norm = Math.sqrt(s);
    for (let k = 0; k < dCollab; k++) collab[i * dCollab + k] = tmp[k]! / norm;
    imputed[i] = 1;
  }

  const vectors = new Float32Array(n * d);
  const source = new Uint8Array(n);
  const wCollab = Math.sqrt(1 - params.contentWeight);
  const wContent = Math.sqrt(params.contentWeight);
  const counters = { collabAndContent: 0, contentOnly: 0, collabOnly: 0, random: 0 };
  for (let i = 0; i < n; i++) {
    const hasCollab = isWarm(i) || imputed[i] === 1;
    const hasContent = contentNorm[i]! > 0;
    const o = i * d;
    if (!hasCollab && !hasContent) {
      const v = direction(params.seed, 3, catalog.itemId[i]!, d);
      for (let k = 0; k < d; k++) vectors[o + k] = v[k]!;
      source[i] = EMBEDDING_SOURCE.random;
      counters.random++;
      continue;
    }
    const a = hasCollab && hasContent ? wCollab : hasCollab ? 1 : 0;
    const b = hasCollab && hasContent ? wContent : hasContent ? 1 : 0;
    for (let k = 0; k < dCollab; k++) vectors[o + k] = a * collab[i * dCollab + k]!;
    for (let k = 0; k < dContent; k++) vectors[o + dCollab + k] = b * content[i * dContent + k]!;
    if (imputed[i] === 1 || (!hasCollab && hasContent)) {
      source[i] = EMBEDDING_SOURCE.contentOnly;
      counters.contentOnly++;
    } else if (hasContent) {
      source[i] = EMBEDDING_SOURCE.collabAndContent;
      counters.collabAndContent++;
    } else {
      source[i] = EMBEDDING_SOURCE.collabOnly;
      counters.collabOnly++;
    }
  }
  normalizeRows(vectors, n, d);
  let itemsWithHistory = 0;
  for (let i = 0; i < n; i++) if (cooc.occurrences[i]! > 0) itemsWithHistory++;
  const stats = {
    collabDim: dCollab,
    contentDim: dContent,
    window: cooc.window,
    pairsCounted: cooc.pairsCounted,
    distinctPairs: keys.length,
    ppmiNonZeros: matrix.val.length,
    itemsWithHistory,
    ...counters,
    unknownItemEvents: cooc.unknownItemEvents,
    seconds: Number(((performance.now() - t0) / 1000).toFixed(3)),
  };
  if (counters.contentOnly + counters.random > 0) {
    log?.info('items without collaborative signal', {
      content_only: counters.contentOnly,
      random_direction: counters.random,
      note: 'content-only items take their collaborative part from warm items sharing tags/author; items with no content either get a seeded random direction',
    });
  }
  return { n, dim: d, itemIds: Int32Array.from(catalog.itemId), vectors, source, stats };
}

/** Convenience: embeddings from in-memory sequences of item ids. */
export function embedItemsFromSequences(catalog: CatalogColumns, sequences: Iterable<ArrayLike<number>>, params: EmbeddingParams, log?: Logger): ItemEmbeddings {
  const cooc = new CooccurrenceBuilder(new ItemIndex(catalog.itemId), params.window);
  for (const s of sequences) cooc.addSequence(s);
  return embedItems(catalog, cooc, params, log);
}
