// The lifecycle summary the GEMs model trains and serves on when its lifecycle source is 'memory': the M × d memory
// the QLA compressor makes of the lifecycle events (everything older than T_mid) as of the request — exactly what the
// nightly job (jobs/nightly.ts) stores for the user at that time, so a model trained on these summaries can read
// the stored memories at serving time.
//
// Training asks for many prefixes of the same user's lifecycle (one per sample cut). The QLA state is additive over
// events, so the summarizer keeps per user the state at every `stride` events and folds only the < stride events
// after the nearest snapshot: a prefix costs O(stride) instead of O(prefix). A snapshot remembers the event it ends
// on, so a history that changed under it (serving: back-filled events) is recomputed instead of trusted.
//
// The compressor's weights travel inside the GEMs checkpoint (arrays `lifecycleCompressor-*`), so a served model
// computes missing memories with the very compressor it was trained with, whatever the checkpoints folder holds.
import type { History } from '../data/events.js';
import { sliceHistory } from '../data/events.js';
import type { LifecycleSummarizer, LifecycleSummary } from '../model/features.js';
import { Compressor, compressorVersion, type CompressorWeights } from './compressor.js';
import type { EncoderShape, EncoderWeights } from './eventEncoder.js';
import type { QlaWeights } from './qla.js';

export type LifecycleSourceKind = 'memory' | 'chunk-mean' | 'interests';
export const LIFECYCLE_SOURCES: LifecycleSourceKind[] = ['memory', 'chunk-mean', 'interests'];

export interface MemorySummarizerOptions {
  /**
   * Events between two cached states of a user (default 64: the fold after a snapshot stays small; measured 6.5 ms
   * per summary vs 8.4 ms at stride 256 on the generated set, most of it finalizeMemory).
   */
  stride?: number;
  /** Cache budget in bytes; over it, the cache is dropped and rebuilt on demand (default 256 MB). */
  cacheBytes?: number;
}

interface UserCache {
  /** states[i] = state after the first (i + 1) × stride events. */
  states: Float32Array[];
  /** Identity of the last event each state covers (item id and time), to notice a changed history. */
  marks: { item: number; ts: number }[];
}

export class MemorySummarizer implements LifecycleSummarizer {
  readonly slots: number;
  readonly dim: number;
  readonly version: string;
  readonly stride: number;
  private readonly cacheBytes: number;
  private readonly cache = new Map<number, UserCache>();
  private cachedStates = 0;
  /** Events folded in (a cost figure: without the cache this would be the sum of all prefix lengths). */
  eventsFolded = 0;

  constructor(
    readonly compressor: Compressor,
    opts: MemorySummarizerOptions = {},
  ) {
    this.slots = compressor.weights.qla.slots;
    this.dim = compressor.weights.qla.dim;
    this.version = compressor.version;
    this.stride = opts.stride ?? 64;
    if (!(Number.isInteger(this.stride) && this.stride > 0)) throw new Error(`MemorySummarizer: stride must be a positive integer, got ${this.stride}`);
    this.cacheBytes = opts.cacheBytes ?? 256 * 2 ** 20;
  }

  /**
   * The memory of `lifecycle` (the events older than T_mid as of the request, oldest first). An empty lifecycle has
   * no memory (the nightly job writes none): all slots invalid, i.e. no lifecycle stream — as serving without one.
   */
  summarize(lifecycle: History): LifecycleSummary {
    const n = lifecycle.length;
    if (n === 0) return { slots: this.slots, dim: this.dim, vectors: new Float32Array(this.slots * this.dim), valid: new Uint8Array(this.slots) };
    const k = Math.floor(n / this.stride);
    const base = this.snapshot(lifecycle, k);
    const r = this.compressor.compress(lifecycle, k * this.stride, base ?? undefined);
    this.eventsFolded += r.folded;
    return { slots: this.slots, dim: this.dim, vectors: r.vectors, valid: new Uint8Array(this.slots).fill(1) };
  }

  /** The state after the first k × stride events (null for k = 0), from the cache or folded in now. */
  private snapshot(h: History, k: number): Float32Array | null {
    if (k === 0) return null;
    let c = this.cache.get(h.userId);
    if (!c) this.cache.set(h.userId, (c = { states: [], marks: [] }));
    // Keep only the snapshots whose covered events are unchanged in this history.
    let ok = 0;
    while (ok < Math.min(k, c.states.length)) {
      const e = (ok + 1) * this.stride - 1;
      const m = c.marks[ok]!;
      if (m.item !== h.itemId[e] || !Object.is(m.ts, h.ts[e])) break;
      ok++;
    }
    if (ok < c.states.length && ok < k) {
      this.cachedStates -= c.states.length - ok;
      c.states.length = ok;
      c.marks.length = ok;
    }
    for (let i = c.states.length; i < k; i++) {
      const end = (i + 1) * this.stride;
      const r = this.compressor.compress(sliceHistory(h, 0, end), i * this.stride, i > 0 ? c.states[i - 1] : undefined);
      this.eventsFolded += r.folded;
      c.states.push(r.state);
      c.marks.push({ item: h.itemId[end - 1]!, ts: h.ts[end - 1]! });
      this.cachedStates++;
    }
    const out = c.states[k - 1]!;
    if (this.cachedStates * out.byteLength > this.cacheBytes) {
      this.cache.clear();
      this.cachedStates = 0;
    }
    return out;
  }

  clearCache(): void {
    this.cache.clear();
    this.cachedStates = 0;
  }

  dispose(): void {
    this.clearCache();
    this.compressor.dispose();
  }
}

// --- the compressor inside a GEMs checkpoint --------------------------------------------------------------------

const PREFIX = 'lifecycleCompressor-';
const ENCODER_ARRAYS = ['itemIds', 'itemEmb', 'authorEmb', 'tagEmb', 'w1', 'b1', 'wkv', 'bkv'] as const;
const QLA_ARRAYS = ['seeds', 'sinkKey', 'sinkValue', 'wo', 'bo', 'slotEmb', 'lnGamma', 'lnBeta'] as const;

/** What a memory-trained checkpoint records in meta.train about its lifecycle source. */
export interface LifecycleTrainMeta {
  lifecycleSource: LifecycleSourceKind;
  /** Compressor version (memory source only). */
  compressorVersion?: string;
  compressorShape?: { encoder: EncoderShape; qla: { slots: number; keyDim: number; valueDim: number; dim: number } };
  /** Events per compressor chunk (bounds memory only; does not change results beyond rounding). */
  compressorChunkSize?: number;
}

/** Checkpoint meta + arrays that carry a compressor (saved next to the GEMs weights). */
export function compressorCheckpointParts(c: Compressor): { meta: LifecycleTrainMeta; arrays: Record<string, Int32Array | Float32Array> } {
  const w = c.weights;
  const arrays: Record<string, Int32Array | Float32Array> = {};
  for (const n of ENCODER_ARRAYS) arrays[`${PREFIX}encoder-${n}`] = w.encoder[n];
  for (const n of QLA_ARRAYS) arrays[`${PREFIX}qla-${n}`] = w.qla[n];
  const q = w.qla;
  return {
    meta: {
      lifecycleSource: 'memory',
      compressorVersion: c.version,
      compressorShape: { encoder: w.encoder.shape, qla: { slots: q.slots, keyDim: q.keyDim, valueDim: q.valueDim, dim: q.dim } },
      compressorChunkSize: c.chunkSize,
    },
    arrays,
  };
}

/** The lifecycle source a checkpoint was trained with ('chunk-mean' for checkpoints older than this field). */
export function lifecycleSourceOf(train: Record<string, unknown>): LifecycleSourceKind {
  const s = train['lifecycleSource'];
  return s === 'memory' || s === 'interests' ? s : 'chunk-mean';
}

/**
 * Rebuilds the compressor a memory-trained checkpoint carries and checks its content hash against the recorded
 * version. `origin` names the checkpoint in errors. Call `await initBackend()` first (the tfjs fold path).
 */
export function compressorFromCheckpoint(train: Record<string, unknown>, arrays: Record<string, Int32Array | Float32Array>, origin: string): Compressor {
  const meta = train as unknown as LifecycleTrainMeta;
  if (!meta.compressorVersion || !meta.compressorShape) throw new Error(`${origin}: trained on lifecycle memories but meta.train has no compressorVersion/compressorShape`);
  const get = (name: string) => {
    const a = arrays[`${PREFIX}${name}`];
    if (!a) throw new Error(`${origin}: checkpoint array '${PREFIX}${name}' is missing (the lifecycle compressor it was trained with)`);
    return a;
  };
  const encoder = { shape: meta.compressorShape.encoder } as EncoderWeights;
  for (const n of ENCODER_ARRAYS) (encoder as unknown as Record<string, unknown>)[n] = get(`encoder-${n}`);
  const qla = { ...meta.compressorShape.qla } as QlaWeights;
  for (const n of QLA_ARRAYS) (qla as unknown as Record<string, unknown>)[n] = get(`qla-${n}`);
  const weights: CompressorWeights = { encoder, qla };
  const v = compressorVersion(weights);
  if (v !== meta.compressorVersion) throw new Error(`${origin}: the compressor stored in the checkpoint hashes to ${v}, meta.train.compressorVersion says ${meta.compressorVersion} (corrupt checkpoint)`);
  return new Compressor(weights, meta.compressorChunkSize ?? 4096);
}
