// Behaviour encoder of the lifecycle compressor (DESIGN §2): each event's item, author, tags, time, play/duration
// and feedback labels become one feature row x_i (embeddings concatenated with dense features), and a small MLP maps
// it to a key k_i and a value v_i for quasi-linear attention (src/lifecycle/qla.ts).
//
// Every feature depends on the event alone (absolute hour/day, not "age relative to now", no position index), so an
// event's key/value never changes after it is written: that is what makes incremental memory updates exact.
import { hash32 } from '../util/random.js';
import type { History } from '../data/events.js';

/** Dense per-event features: hour sin/cos, weekday sin/cos, has-ts, log play, log duration, play ratio, 5 labels, log tag count. */
export const DENSE_FEATURES = 14;
/** Tags per event that enter the tag mean (the rest are ignored, in training and inference alike). */
export const MAX_TAGS = 8;

export interface EncoderShape {
  /** Number of known items (vocabulary rows = itemVocab + 1: row 0 is the out-of-vocabulary item). */
  itemVocab: number;
  authorBuckets: number;
  tagBuckets: number;
  itemDim: number;
  authorDim: number;
  tagDim: number;
  hidden: number;
  keyDim: number;
  valueDim: number;
}

export function defaultEncoderShape(itemVocab: number, dim: number): EncoderShape {
  return { itemVocab, authorBuckets: 4096, tagBuckets: 1024, itemDim: 32, authorDim: 16, tagDim: 16, hidden: dim, keyDim: dim, valueDim: dim };
}

export function inputDim(s: EncoderShape): number {
  return s.itemDim + s.authorDim + s.tagDim + DENSE_FEATURES;
}

export interface EncoderWeights {
  shape: EncoderShape;
  /** Sorted item ids of the vocabulary; item itemIds[j] uses embedding row j + 1. */
  itemIds: Int32Array;
  itemEmb: Float32Array; // (itemVocab + 1) × itemDim
  authorEmb: Float32Array; // authorBuckets × authorDim
  tagEmb: Float32Array; // tagBuckets × tagDim
  w1: Float32Array; // inputDim × hidden
  b1: Float32Array; // hidden
  /** Keys and values side by side: hidden × (keyDim + valueDim). */
  wkv: Float32Array;
  bkv: Float32Array; // keyDim + valueDim
}

export const authorBucket = (authorId: number, buckets: number): number => hash32(authorId ^ 0x5bd1e995) % buckets;
export const tagBucket = (tagId: number, buckets: number): number => hash32(tagId ^ 0x27d4eb2f) % buckets;

/** Maps item ids to embedding rows (0 = unknown item). */
export class ItemVocab {
  private readonly rows = new Map<number, number>();
  constructor(readonly itemIds: Int32Array) {
    for (let j = 0; j < itemIds.length; j++) {
      if (j > 0 && itemIds[j]! <= itemIds[j - 1]!) throw new Error(`item vocabulary must be sorted and unique (index ${j}: ${itemIds[j]})`);
      this.rows.set(itemIds[j]!, j + 1);
    }
  }
  row(itemId: number): number {
    return this.rows.get(itemId) ?? 0;
  }
  get size(): number {
    return this.itemIds.length;
  }
}

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;
const TWO_PI = 2 * Math.PI;

/**
 * Writes the feature rows of events [start, end) of `h` into `out` (row-major, (end-start) × inputDim).
 * Also returns the item rows (for the training path's embedding gradients) when `itemRows` is given.
 */
export function featurize(
  w: EncoderWeights,
  vocab: ItemVocab,
  h: History,
  start: number,
  end: number,
  out: Float32Array,
  itemRows?: Int32Array,
): void {
  const s = w.shape;
  const width = inputDim(s);
  const aOff = s.itemDim;
  const tOff = aOff + s.authorDim;
  const dOff = tOff + s.tagDim;
  const { itemEmb, authorEmb, tagEmb } = w;
  for (let i = start; i < end; i++) {
    const base = (i - start) * width;
    const row = vocab.row(h.itemId[i]!);
    if (itemRows) itemRows[i - start] = row;
    // Plain loops: `out.set(table.subarray(...))` allocates a view per call and was the featurizer's main cost.
    const ib = row * s.itemDim;
    for (let c = 0; c < s.itemDim; c++) out[base + c] = itemEmb[ib + c]!;
    const ab = authorBucket(h.authorId[i]!, s.authorBuckets) * s.authorDim;
    for (let c = 0; c < s.authorDim; c++) out[base + aOff + c] = authorEmb[ab + c]!;
    // Tags: mean of their embeddings (zero when the item has none).
    const t0 = h.tagOffsets[i]!;
    const t1 = Math.min(h.tagOffsets[i + 1]!, t0 + MAX_TAGS);
    for (let c = 0; c < s.tagDim; c++) out[base + tOff + c] = 0;
    if (t1 > t0) {
      const inv = 1 / (t1 - t0);
      for (let t = t0; t < t1; t++) {
        const tb = tagBucket(h.tagIds[t]!, s.tagBuckets) * s.tagDim;
        for (let c = 0; c < s.tagDim; c++) out[base + tOff + c]! += tagEmb[tb + c]! * inv;
      }
    }
    denseFeatures(h, i, t1 - t0, out, base + dOff);
  }
}

/** The DENSE_FEATURES dense features of event i, written at out[at..]. */
export function denseFeatures(h: History, i: number, tagCount: number, out: Float32Array, at: number): void {
  const ts = h.ts[i]!;
  if (Number.isFinite(ts)) {
    const hour = ((((ts % DAY_MS) + DAY_MS) % DAY_MS) / DAY_MS) * TWO_PI;
    // 1970-01-01 was a Thursday; the phase only needs to be consistent.
    const day = ((((Math.floor(ts / DAY_MS) % 7) + 7) % 7) / 7) * TWO_PI;
    out[at] = Math.sin(hour);
    out[at + 1] = Math.cos(hour);
    out[at + 2] = Math.sin(day);
    out[at + 3] = Math.cos(day);
    out[at + 4] = 1;
  } else {
    out.fill(0, at, at + 5);
  }
  const play = Math.max(0, h.playMs[i]! || 0);
  const dur = Math.max(0, h.durationMs[i]! || 0);
  out[at + 5] = Math.log1p(play / 1000) / 5;
  out[at + 6] = Math.log1p(dur / 1000) / 5;
  out[at + 7] = dur > 0 ? Math.min(2, play / dur) : 0;
  const labels = h.labels[i]!;
  for (let b = 0; b < 5; b++) out[at + 8 + b] = (labels >> b) & 1;
  out[at + 13] = Math.log1p(tagCount) / 3;
}

/** Deterministic small random initialisation (scaled normal), from a seeded generator function. */
export function initEncoder(shape: EncoderShape, itemIds: Int32Array, normal: () => number): EncoderWeights {
  if (itemIds.length !== shape.itemVocab) throw new Error(`initEncoder: ${itemIds.length} item ids for itemVocab ${shape.itemVocab}`);
  const fill = (n: number, std: number) => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = normal() * std;
    return a;
  };
  const din = inputDim(shape);
  const kv = shape.keyDim + shape.valueDim;
  return {
    shape,
    itemIds,
    itemEmb: fill((shape.itemVocab + 1) * shape.itemDim, 0.1),
    authorEmb: fill(shape.authorBuckets * shape.authorDim, 0.1),
    tagEmb: fill(shape.tagBuckets * shape.tagDim, 0.1),
    w1: fill(din * shape.hidden, Math.sqrt(2 / din)),
    b1: new Float32Array(shape.hidden),
    wkv: fill(shape.hidden * kv, Math.sqrt(1 / shape.hidden)),
    bkv: new Float32Array(kv),
  };
}

/**
 * Reference encoder in plain TypeScript (the tfjs path in qla.ts must match it): x (n × inputDim) → K (n × keyDim),
 * V (n × valueDim) with h = relu(x·W1 + b1), [K | V] = h·Wkv + bkv.
 */
export function encodeReference(w: EncoderWeights, x: Float32Array, n: number): { k: Float32Array; v: Float32Array } {
  const s = w.shape;
  const din = inputDim(s);
  const kvw = s.keyDim + s.valueDim;
  const k = new Float32Array(n * s.keyDim);
  const v = new Float32Array(n * s.valueDim);
  const hbuf = new Float64Array(s.hidden);
  const obuf = new Float64Array(kvw);
  for (let r = 0; r < n; r++) {
    for (let j = 0; j < s.hidden; j++) hbuf[j] = w.b1[j]!;
    for (let i = 0; i < din; i++) {
      const xi = x[r * din + i]!;
      if (xi === 0) continue;
      const wrow = i * s.hidden;
      for (let j = 0; j < s.hidden; j++) hbuf[j]! += xi * w.w1[wrow + j]!;
    }
    for (let j = 0; j < kvw; j++) obuf[j] = w.bkv[j]!;
    for (let i = 0; i < s.hidden; i++) {
      const hi = Math.max(0, hbuf[i]!);
      if (hi === 0) continue;
      const wrow = i * kvw;
      for (let j = 0; j < kvw; j++) obuf[j]! += hi * w.wkv[wrow + j]!;
    }
    for (let j = 0; j < s.keyDim; j++) k[r * s.keyDim + j] = obuf[j]!;
    for (let j = 0; j < s.valueDim; j++) v[r * s.valueDim + j] = obuf[s.keyDim + j]!;
  }
  return { k, v };
}
