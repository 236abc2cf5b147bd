// The model-facing side of the recommender service: what a batch of users looks like to a model, what a model
// answers, and the `RecommenderModel` interface every serving model implements (the GEMs checkpoint adapter in
// gemsRecommender.ts, the popularity/cold-start model in coldStart.ts, and their hybrid). The service holds one
// model reference and swaps it between batches (hot reload), so a model is immutable once serving.
import { concatHistories, type History, type Streams } from '../data/events.js';

// Callers import the history helpers from here too.
export { concatHistories };
import type { LifecycleMemory } from '../lifecycle/memory.js';
import type { IndexerSelection } from '../model/gems.js';

export type StreamName = 'recent' | 'mid' | 'lifecycle';
export const STREAM_NAMES: readonly StreamName[] = ['recent', 'mid', 'lifecycle'];

export interface RecommendOptions {
  /** Leave out items present in the user's input events. */
  excludeSeen: boolean;
  /** Beam width (≥ k); undefined = the model's choice. */
  beam?: number;
  /** Mid-term keys the indexer selects (0 = full attention); undefined = the model's configured top-k. */
  indexerTopK?: number;
  /**
   * Indexer selection: 'shared' (default) one key set per user for every layer, chosen by the first layer at the
   * first beam level, the fastest; 'request' one set per user and layer chosen there; 'user' one set per user and
   * level; 'query' each beam its own top-k, as trained (src/model/beam.ts).
   */
  indexerSelection?: IndexerSelection;
}

/** One user's request as the model sees it: the events as of now cut into streams, and the stored memory. */
export interface RecommendInput {
  userId: number;
  k: number;
  /**
   * Recent / Mid-term / Lifecycle events, oldest first within each. `lifecycle` holds events only when they were
   * read (the store returns whole histories); a model may prefer `memory` for that stream.
   */
  streams: Streams;
  /** The user's compressed lifecycle memory, null when the memory store has none. */
  memory: LifecycleMemory | null;
  options: RecommendOptions;
}

/** Where the lifecycle stream's input came from: the stored memory, the raw events, or nowhere. */
export type LifecycleSource = 'memory' | 'history' | '';

export interface RecommendOutput {
  /** Distinct item ids, best first (≤ k). */
  items: Int32Array;
  scores: Float32Array;
  /** items.length × sidWidth Semantic-ID codes, row-major; empty when the model knows no Semantic IDs. */
  sids: Int32Array;
  sidWidth: number;
  /** Share of cross-attention output per stream (0 for streams unused, all 0 for attention-free models). */
  attention: Record<StreamName, number>;
  streamsUsed: StreamName[];
  coldStart: boolean;
  /** 'gems', 'popular_in_interests', 'popular_overall', … */
  strategy: string;
  lifecycleSource: LifecycleSource;
}

export interface RecommenderModel {
  /** Identifies the weights (checkpoint path + creation time, or the popularity table's snapshot). */
  readonly version: string;
  /** 'gems', 'popularity', 'gems+popularity', … (logged and used by benchmarks). */
  readonly kind: string;
  /** One result per input, in order. A per-user failure may be returned as an Error in its slot. */
  recommendBatch(inputs: RecommendInput[]): Promise<(RecommendOutput | Error)[]>;
  /** Releases tensors/buffers; called once no batch uses the model any more. */
  dispose?(): void;
}

export const NO_ATTENTION: Readonly<Record<StreamName, number>> = Object.freeze({ recent: 0, mid: 0, lifecycle: 0 });

/** Streams that hold input for this user (a memory counts for lifecycle). */
export function streamsWithInput(streams: Streams, memory: LifecycleMemory | null): StreamName[] {
  const out: StreamName[] = [];
  if (streams.recent.length > 0) out.push('recent');
  if (streams.mid.length > 0) out.push('mid');
  if (streams.lifecycle.length > 0 || memory) out.push('lifecycle');
  return out;
}

/** Number of events across the three streams. */
export function eventCount(streams: Streams): number {
  return streams.lifecycle.length + streams.mid.length + streams.recent.length;
}

/** The whole history behind a set of streams (lifecycle, mid, recent), oldest first. */
export function historyOfStreams(s: Streams): History {
  return concatHistories(s.userId, [s.lifecycle, s.mid, s.recent]);
}

/** Every item id in the streams (for exclude-seen). */
export function seenItems(s: Streams): Set<number> {
  const seen = new Set<number>();
  for (const h of [s.lifecycle, s.mid, s.recent]) for (const id of h.itemId) seen.add(id);
  return seen;
}
