// The GEMs checkpoint behind the RecommenderModel interface (src/model/recommend.ts does the work: one encoder pass
// and one constrained beam search per batch), and the hybrid the service runs in production: GEMs for users with
// enough input, the popularity model (coldStart.ts) for the rest.
//
// Lifecycle stream: a checkpoint trained on stored QLA memories (meta.train.lifecycleSource = 'memory') reads the
// user's memory from the memory store; a user without one — or whose memory another compressor version made than
// the one the model was trained with — gets it computed from the lifecycle events read with the request, by the
// compressor the checkpoint carries (logged, counted in `lifecycleCounts`). Other checkpoints summarise the events
// the way they were trained (chunk mean) — feeding memories to a model that never saw them would be noise.
// `useMemories` overrides the choice.
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { History } from '../data/events.js';
import type { LifecycleSummarizer, LifecycleSummary } from '../model/features.js';
import { loadGems, recommend, servedReturnShare, type LoadedGems } from '../model/recommend.js';
import { makeSampleContext } from '../train/samples.js';
import { checkpointLifecycleSummarizer } from '../train/lifecycleSource.js';
import { logger } from '../util/log.js';
import { PopularityModel } from './coldStart.js';
import {
  NO_ATTENTION,
  concatHistories,
  eventCount,
  streamsWithInput,
  type LifecycleSource,
  type RecommendInput,
  type RecommendOutput,
  type RecommenderModel,
  type StreamName,
} from './recommender.js';

/** Summaries from the memories of the batch being run, else the checkpoint's own summariser over the events. */
class ServingSummarizer implements LifecycleSummarizer {
  readonly slots: number;
  readonly dim: number;
  /** Memory vectors of the users of the current batch (set before, cleared after each batch). */
  current = new Map<number, Float32Array>();

  constructor(private readonly fallback: LifecycleSummarizer) {
    this.slots = fallback.slots;
    this.dim = fallback.dim;
  }

  summarize(lifecycle: History): LifecycleSummary {
    const v = this.current.get(lifecycle.userId);
    if (v) return { slots: this.slots, dim: this.dim, vectors: v, valid: new Uint8Array(this.slots).fill(1) };
    return this.fallback.summarize(lifecycle);
  }
}

export interface GemsRecommenderOptions {
  /** 'auto' (default): memories only for checkpoints trained on them (meta.train.lifecycleSource = 'memory'). */
  useMemories?: 'auto' | 'always' | 'never';
  /** Share of every list for returning interests, when the checkpoint has a return intent (config serving.reserveReturns). */
  reserveReturns?: number;
  /** Condition every code level on the item being admissible (config serving.renormalize). */
  renormalize?: boolean;
}

/** How the lifecycle stream of served users was obtained (a metric; also exported by the service's /metrics). */
export interface LifecycleCounts {
  /** Stored memory used. */
  memory: number;
  /** Memory-reading model, no stored memory: computed from the events. */
  computedMissing: number;
  /** Stored memory from another compressor version than the model's: computed from the events. */
  computedVersionMismatch: number;
  /** Stored memory of another shape (slots × dim) than the model's: computed from the events. */
  computedShapeMismatch: number;
}

const log = logger('serving.gems');

export class GemsRecommender implements RecommenderModel {
  readonly kind = 'gems';
  readonly version: string;
  readonly useMemories: boolean;
  /** Compressor version the model was trained with (memory-trained checkpoints), else null. */
  readonly compressorVersion: string | null;
  readonly lifecycleCounts: LifecycleCounts = { memory: 0, computedMissing: 0, computedVersionMismatch: 0, computedShapeMismatch: 0 };
  /** Called for every served user of a memory-reading model with how its lifecycle stream was obtained. */
  onLifecycle: ((outcome: keyof LifecycleCounts) => void) | null = null;
  private readonly summarizer: ServingSummarizer;
  private disposed = false;
  private lastFallbackLog = 0;
  /** The list share the return-intent search fills (0 for checkpoints without the intent). */
  readonly reserveReturns: number;
  /** Beam scores conditioned on an admissible (unseen) item (config serving.renormalize). */
  readonly renormalize: boolean;

  constructor(
    readonly loaded: LoadedGems,
    opts: GemsRecommenderOptions = {},
  ) {
    this.version = `gems:${loaded.dir}@${loaded.meta.createdAt}`;
    const mode = opts.useMemories ?? 'auto';
    this.useMemories = mode === 'always' || (mode === 'auto' && loaded.meta.train['lifecycleSource'] === 'memory');
    const cv = loaded.meta.train['compressorVersion'];
    this.compressorVersion = typeof cv === 'string' ? cv : null;
    this.summarizer = new ServingSummarizer(loaded.summarizer);
    this.reserveReturns = servedReturnShare(loaded, opts.reserveReturns ?? 0);
    this.renormalize = opts.renormalize ?? false;
    loaded.ctx = makeSampleContext(loaded.model.cfg, loaded.sid, this.summarizer);
  }

  /** Loads a checkpoint directory written by `gems train --model gems` (…/checkpoints/<run>/best). */
  static load(dir: string, opts: GemsRecommenderOptions = {}): GemsRecommender {
    // Memory-trained checkpoints carry their compressor: users without a usable memory get one computed by it.
    return new GemsRecommender(loadGems(dir, checkpointLifecycleSummarizer(dir)), opts);
  }

  get sid() {
    return this.loaded.sid;
  }

  /**
   * The memory of an input when this model reads memories, its shape fits the model and (for models that record
   * one) the compressor version matches; otherwise null — the lifecycle is then computed from the events.
   */
  private usableMemory(input: RecommendInput): Float32Array | null {
    if (!this.useMemories) return null;
    const m = input.memory;
    let outcome: keyof LifecycleCounts = 'memory';
    if (!m) outcome = 'computedMissing';
    else if (m.header.slots !== this.summarizer.slots || m.header.dim !== this.summarizer.dim) outcome = 'computedShapeMismatch';
    else if (this.compressorVersion !== null && m.header.compressorVersion !== this.compressorVersion) outcome = 'computedVersionMismatch';
    this.lifecycleCounts[outcome]++;
    this.onLifecycle?.(outcome);
    if (outcome === 'memory') return m!.vectors;
    // Logged at most once a second per model: a new compressor rolled out before recompression hits every user.
    const now = Date.now();
    if (now - this.lastFallbackLog >= 1000) {
      this.lastFallbackLog = now;
      log.warn('lifecycle memory not usable; computing it from the events', {
        user: input.userId,
        reason: outcome,
        memoryCompressor: m?.header.compressorVersion ?? null,
        modelCompressor: this.compressorVersion,
        memoryShape: m ? `${m.header.slots}x${m.header.dim}` : null,
        modelShape: `${this.summarizer.slots}x${this.summarizer.dim}`,
        counts: { ...this.lifecycleCounts },
      });
    }
    return null;
  }

  recommendBatch(inputs: RecommendInput[]): Promise<RecommendOutput[]> {
    if (this.disposed) return Promise.reject(new Error(`model ${this.version} was disposed`));
    const cfg = this.loaded.model.cfg;
    const out = new Array<RecommendOutput>(inputs.length);
    // recommend() takes one k / beam / top-k per call: group users that share them (usually all of them).
    const groups = new Map<string, number[]>();
    inputs.forEach((x, i) => {
      const key = `${x.options.beam ?? ''}|${x.options.indexerTopK ?? ''}|${x.options.indexerSelection ?? ''}`;
      let g = groups.get(key);
      if (!g) groups.set(key, (g = []));
      g.push(i);
    });
    for (const members of groups.values()) {
      const first = inputs[members[0]!]!;
      const k = Math.max(...members.map((i) => inputs[i]!.k));
      const sources: LifecycleSource[] = [];
      const histories = members.map((i) => {
        const x = inputs[i]!;
        const memory = this.usableMemory(x);
        if (memory) {
          this.summarizer.current.set(x.userId, memory);
          sources.push('memory');
          // The memory stands for everything older than T_mid: give the model only the newer events.
          const h = concatHistories(x.userId, [x.streams.mid, x.streams.recent]);
          return h.length > cfg.tMid ? sliceTail(h, cfg.tMid) : h;
        }
        sources.push(x.streams.lifecycle.length > 0 ? 'history' : '');
        return concatHistories(x.userId, [x.streams.lifecycle, x.streams.mid, x.streams.recent]);
      });
      const exclude = members.map((i) => {
        const x = inputs[i]!;
        if (!x.options.excludeSeen) return null;
        const s = new Set<number>();
        for (const h of [x.streams.lifecycle, x.streams.mid, x.streams.recent]) for (const id of h.itemId) s.add(id);
        return s;
      });
      let recs;
      try {
        recs = recommend(this.loaded, histories, k, { beam: first.options.beam, topK: first.options.indexerTopK, selection: first.options.indexerSelection, exclude, reserveReturns: this.reserveReturns, renormalize: this.renormalize });
      } finally {
        this.summarizer.current.clear();
      }
      const W = this.loaded.model.W;
      members.forEach((i, j) => {
        const x = inputs[i]!;
        const r = recs[j]!;
        const n = Math.min(x.k, r.items.length);
        const attention = { ...NO_ATTENTION };
        for (const s of Object.keys(r.attentionMass) as StreamName[]) attention[s] = r.attentionMass[s] ?? 0;
        const used = streamsWithInput(x.streams, sources[j] === 'memory' ? x.memory : null).filter((s) => this.loaded.model.enabledStreams.includes(s));
        out[i] = {
          items: r.items.slice(0, n),
          scores: r.scores.slice(0, n),
          sids: r.sids.slice(0, n * W),
          sidWidth: W,
          attention,
          streamsUsed: used,
          coldStart: false,
          strategy: 'gems',
          lifecycleSource: used.includes('lifecycle') ? sources[j]! : '',
        };
      });
    }
    return Promise.resolve(out);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.loaded.model.dispose();
    (this.loaded.summarizer as { dispose?: () => void }).dispose?.();
  }
}

function sliceTail(h: History, n: number): History {
  return concatHistories(h.userId, [
    {
      ...h,
      length: n,
      itemId: h.itemId.subarray(h.length - n),
      ts: h.ts.subarray(h.length - n),
      seq: h.seq.subarray(h.length - n),
      authorId: h.authorId.subarray(h.length - n),
      tagOffsets: rebase(h.tagOffsets.subarray(h.length - n)),
      tagIds: h.tagIds.subarray(h.tagOffsets[h.length - n]!),
      playMs: h.playMs.subarray(h.length - n),
      durationMs: h.durationMs.subarray(h.length - n),
      labels: h.labels.subarray(h.length - n),
    },
  ]);
}

function rebase(offsets: Int32Array): Int32Array {
  const base = offsets[0] ?? 0;
  return Int32Array.from(offsets, (o) => o - base);
}

/**
 * GEMs for users with at least `minEvents` input events (or a usable memory), popular items for the rest, in one
 * batch call. Its version names both parts, so swapping either is visible in responses.
 */
export class HybridRecommender implements RecommenderModel {
  readonly kind: string;
  readonly version: string;

  constructor(
    readonly main: GemsRecommender,
    readonly fallback: PopularityModel,
    readonly minEvents: number,
  ) {
    this.kind = `${main.kind}+${fallback.kind}`;
    this.version = `${main.version}+${fallback.version}`;
  }

  async recommendBatch(inputs: RecommendInput[]): Promise<RecommendOutput[]> {
    const warm: number[] = [];
    const cold: number[] = [];
    inputs.forEach((x, i) => ((eventCount(x.streams) >= this.minEvents || (this.main.useMemories && x.memory) ? warm : cold).push(i)));
    const out = new Array<RecommendOutput>(inputs.length);
    if (warm.length > 0) {
      const r = await this.main.recommendBatch(warm.map((i) => inputs[i]!));
      warm.forEach((i, j) => (out[i] = r[j]!));
    }
    cold.forEach((i) => (out[i] = this.fallback.recommendOne(inputs[i]!)));
    return out;
  }

  dispose(): void {
    this.main.dispose();
  }
}

/** `<checkpoints>/gems/best` when present (what `gems train --model gems` writes), else null. */
export function defaultCheckpointDir(checkpointsRoot: string): string | null {
  const dir = join(checkpointsRoot, 'gems', 'best');
  return existsSync(join(dir, 'meta.json')) ? dir : null;
}

/** A checkpoint's identity on disk: meta.json's mtime (checkpoints are written to a temp dir and renamed). */
export function checkpointStamp(dir: string): string | null {
  try {
    const st = statSync(join(dir, 'meta.json'));
    return `${st.mtimeMs}:${st.size}:${st.ino}`;
  } catch {
    return null;
  }
}
