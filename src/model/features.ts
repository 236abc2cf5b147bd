// Turning histories into model inputs. Every event becomes a row of small integer features (item index, hashed
// author and tags, bucketised time gap / hour / play time / duration) plus its 5 label bits; a stream of a batch of
// users is left-padded to a fixed length. The lifecycle stream arrives as a fixed M × dm summary per user.
import type { History } from '../data/events.js';
import type { SemanticIds } from './sid.js';
import { centroidItemVectors, coarseCodeOf } from './sid.js';
import { hash32 } from '../util/random.js';

export interface FeatureConfig {
  authorBuckets: number;
  tagBuckets: number;
  /** Tags pooled per event (more are dropped). */
  maxTags: number;
  /**
   * What an event's time-gap bucket measures: 'ref' (default, older checkpoints) = time from the event to the
   * stream's reference time (the newest input event); 'prev' = time since the previous event of the same stream
   * slice (unknown for its first event). 'prev' does not depend on which target a stream serves, so one encoded
   * window can serve every target in it (dense training, src/train/samples.ts).
   */
  gapFrom?: 'ref' | 'prev';
}

export const GAP_BUCKETS = 34; // 0 pad, 1 unknown, 2..33 = 2 + floor(log2(1 + minutes))
export const HOUR_BUCKETS = 26; // 0 pad, 1 unknown, 2..25
export const LOG_BUCKETS = 18; // 0 pad, 1 unknown, 2..17 = 2 + floor(log2(1 + seconds))
export const LABEL_BITS = 5;

/** One stream of B users, left-padded to T rows each (row b*T + j; valid rows at the end). */
export interface StreamBatch {
  B: number;
  T: number;
  item: Int32Array;
  author: Int32Array;
  /** B*T*maxTags tag buckets (0 = none). */
  tags: Int32Array;
  gap: Int32Array;
  hour: Int32Array;
  play: Int32Array;
  dur: Int32Array;
  labels: Float32Array;
  valid: Uint8Array;
}

export class ItemVocab {
  private readonly index = new Map<number, number>();
  constructor(readonly itemIds: Int32Array) {
    itemIds.forEach((id, i) => this.index.set(id, i + 1));
  }
  get size(): number {
    return this.itemIds.length;
  }
  /** 1-based index, 0 for items outside the vocabulary. */
  indexOf(itemId: number): number {
    return this.index.get(itemId) ?? 0;
  }
}

function logBucket(x: number): number {
  if (!Number.isFinite(x) || x < 0) return 1;
  return 2 + Math.min(LOG_BUCKETS - 3, Math.floor(Math.log2(1 + x)));
}

/** B × T slots of padding: every feature 0 and nothing valid (what a short history leaves before its events). */
export function emptyStreamBatch(B: number, T: number, fc: FeatureConfig): StreamBatch {
  const n = B * T;
  return {
    B,
    T,
    item: new Int32Array(n),
    author: new Int32Array(n),
    tags: new Int32Array(n * fc.maxTags),
    gap: new Int32Array(n),
    hour: new Int32Array(n),
    play: new Int32Array(n),
    dur: new Int32Array(n),
    labels: new Float32Array(n * LABEL_BITS),
    valid: new Uint8Array(n),
  };
}

/** Builds one stream batch from per-user histories (each already cut to this stream), referencing time `refTs`. */
export function buildStreamBatch(hs: History[], T: number, vocab: ItemVocab, fc: FeatureConfig, refTs: number[]): StreamBatch {
  const sb = emptyStreamBatch(hs.length, T, fc);
  const prevGap = fc.gapFrom === 'prev';
  hs.forEach((h, b) => {
    const len = Math.min(T, h.length);
    const start = h.length - len;
    for (let j = 0; j < len; j++) {
      const e = start + j;
      const r = b * T + (T - len) + j;
      sb.valid[r] = 1;
      sb.item[r] = vocab.indexOf(h.itemId[e]!);
      sb.author[r] = h.authorId[e]! > 0 ? 1 + (hash32(h.authorId[e]!) % (fc.authorBuckets - 1)) : 0;
      const t0 = h.tagOffsets[e]!;
      const t1 = Math.min(h.tagOffsets[e + 1]!, t0 + fc.maxTags);
      for (let t = t0; t < t1; t++) sb.tags[r * fc.maxTags + (t - t0)] = 1 + (hash32(h.tagIds[t]! ^ 0x5bd1e995) % (fc.tagBuckets - 1));
      const ts = h.ts[e]!;
      const ref = prevGap ? (e > 0 ? h.ts[e - 1]! : NaN) : refTs[b]!;
      const dt = prevGap ? ts - ref : ref - ts;
      sb.gap[r] = Number.isFinite(ts) && Number.isFinite(ref) ? 2 + Math.min(GAP_BUCKETS - 3, Math.floor(Math.log2(1 + Math.max(0, dt) / 60000))) : 1;
      sb.hour[r] = Number.isFinite(ts) ? 2 + (Math.floor(ts / 3_600_000) % 24) : 1;
      sb.play[r] = logBucket(h.playMs[e]! / 1000);
      sb.dur[r] = logBucket(h.durationMs[e]! / 1000);
      const lab = h.labels[e]!;
      for (let k = 0; k < LABEL_BITS; k++) sb.labels[r * LABEL_BITS + k] = (lab >> k) & 1;
    }
  });
  return sb;
}

/**
 * A fixed-size summary of the lifecycle stream: M × dim vectors + which slots hold data. This is the interface of
 * the lifecycle memory (src/lifecycle/memory.ts, `LifecycleMemory.vectors`); any producer with it plugs in.
 */
export interface LifecycleSummary {
  slots: number;
  dim: number;
  vectors: Float32Array;
  valid: Uint8Array;
  /** Per slot, the coarse interest (first Semantic-ID code) it summarises, −1 for none (InterestSummarizer only). */
  codes?: Int32Array;
}

export interface LifecycleSummarizer {
  readonly slots: number;
  readonly dim: number;
  /** Summary of `lifecycle` (the events older than T_mid as of the request), computed without later events. */
  summarize(lifecycle: History): LifecycleSummary;
}

/**
 * Interim lifecycle summary until the QLA compressor's memories are wired in: the lifecycle events are split into
 * M chronological chunks and each slot is the mean quantised item vector (tokenizer centroids) of its chunk.
 * Parameter-free and computable offline, like the compressor; swapping it out is swapping this object.
 */
export class ChunkMeanSummarizer implements LifecycleSummarizer {
  readonly dim: number;
  private readonly vectors: Float32Array;
  private readonly rowOf: (id: number) => number;

  constructor(
    sid: SemanticIds,
    readonly slots: number,
  ) {
    const v = centroidItemVectors(sid);
    this.dim = v.dim;
    this.vectors = v.vectors;
    this.rowOf = (id) => sid.rowOf(id);
  }

  summarize(h: History): LifecycleSummary {
    const { slots: M, dim } = this;
    const out = new Float32Array(M * dim);
    const valid = new Uint8Array(M);
    const n = h.length;
    if (n === 0) return { slots: M, dim, vectors: out, valid };
    const used = Math.min(M, n);
    // Chunks fill the last `used` slots so the newest chunk is always slot M-1.
    for (let s = 0; s < used; s++) {
      const a = Math.floor((s * n) / used);
      const b = Math.floor(((s + 1) * n) / used);
      const slot = M - used + s;
      let cnt = 0;
      for (let e = a; e < b; e++) {
        const r = this.rowOf(h.itemId[e]!);
        if (r < 0) continue;
        cnt++;
        for (let j = 0; j < dim; j++) out[slot * dim + j]! += this.vectors[r * dim + j]!;
      }
      if (cnt > 0) {
        for (let j = 0; j < dim; j++) out[slot * dim + j]! /= cnt;
        valid[slot] = 1;
      }
    }
    return { slots: M, dim, vectors: out, valid };
  }
}

/**
 * Lifecycle summary by coarse interest: the lifecycle events are grouped by their item's first Semantic-ID code (a
 * coarse interest: items of one interest cluster share it), the M most frequent groups become the slots (most
 * frequent first), and each slot is the group's mean quantised item vector plus three numbers: log(1 + events) / 10,
 * the group's share of the lifecycle events, and how long ago (as a share of the lifecycle) it was last seen. So the
 * model sees which interests a user had, how strongly and how long they have been dormant — what a chronological
 * chunk mean blurs, since every chunk mixes the interests of its sessions. Parameter-free, O(events) per summary.
 */
export class InterestSummarizer implements LifecycleSummarizer {
  readonly dim: number;
  private readonly vecDim: number;
  private readonly vectors: Float32Array;
  private readonly firstCode: (id: number) => number;
  private readonly rowOf: (id: number) => number;
  private readonly codes: number;

  constructor(
    sid: SemanticIds,
    readonly slots: number,
  ) {
    const v = centroidItemVectors(sid);
    this.vecDim = v.dim;
    this.dim = v.dim + 3;
    this.vectors = v.vectors;
    this.codes = sid.sizes[0]!;
    this.firstCode = (id) => coarseCodeOf(sid, id);
    this.rowOf = (id) => sid.rowOf(id);
  }

  summarize(h: History): LifecycleSummary {
    const { slots: M, dim, vecDim, codes } = this;
    const out = new Float32Array(M * dim);
    const valid = new Uint8Array(M);
    const slotCodes = new Int32Array(M).fill(-1);
    const count = new Int32Array(codes);
    const last = new Int32Array(codes).fill(-1);
    const n = h.length;
    let known = 0;
    for (let e = 0; e < n; e++) {
      const c = this.firstCode(h.itemId[e]!);
      if (c < 0) continue;
      count[c]!++;
      last[c] = e;
      known++;
    }
    if (known === 0) return { slots: M, dim, vectors: out, valid, codes: slotCodes };
    // The M most frequent interests; ties → lower code (deterministic).
    const order = Array.from({ length: codes }, (_, c) => c).filter((c) => count[c]! > 0);
    order.sort((a, b) => count[b]! - count[a]! || a - b);
    const chosen = order.slice(0, M);
    const slotOf = new Int32Array(codes).fill(-1);
    chosen.forEach((c, s) => (slotOf[c] = s));
    for (let e = 0; e < n; e++) {
      const c = this.firstCode(h.itemId[e]!);
      const s = c < 0 ? -1 : slotOf[c]!;
      if (s < 0) continue;
      const r = this.rowOf(h.itemId[e]!);
      for (let j = 0; j < vecDim; j++) out[s * dim + j]! += this.vectors[r * vecDim + j]!;
    }
    chosen.forEach((c, s) => {
      const k = count[c]!;
      for (let j = 0; j < vecDim; j++) out[s * dim + j]! /= k;
      out[s * dim + vecDim] = Math.log1p(k) / 10;
      out[s * dim + vecDim + 1] = k / known;
      out[s * dim + vecDim + 2] = (n - 1 - last[c]!) / n;
      valid[s] = 1;
      slotCodes[s] = c;
    });
    return { slots: M, dim, vectors: out, valid, codes: slotCodes };
  }
}

/**
 * The parameter-free lifecycle summary named by a checkpoint's lifecycle source: one slot per coarse interest for
 * 'interests', the chronological chunk mean otherwise (what checkpoints without a source were trained on). The one
 * place training and loading choose it, so the two cannot differ.
 */
export function parameterFreeSummarizer(source: unknown, sid: SemanticIds, slots: number): LifecycleSummarizer {
  return source === 'interests' ? new InterestSummarizer(sid, slots) : new ChunkMeanSummarizer(sid, slots);
}
