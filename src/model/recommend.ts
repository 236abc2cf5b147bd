// Loading a GEMs checkpoint directory for inference, and the batched recommendation call the serving layer uses:
// recommend(loaded, inputs, k, options) → per user items, scores, Semantic IDs, plus per-stream attention mass.
import { scoped } from './ops.js';
import type { History } from '../data/events.js';
import { CodeTrie } from '../tokenizer/trie.js';
import { readCheckpoint, restoreInto, type CheckpointMeta } from '../train/checkpoint.js';
import { batchFromInputs, makeSampleContext, type SampleContext } from '../train/samples.js';
import { beamSearch } from './beam.js';
import { parameterFreeSummarizer, type LifecycleSummarizer, type LifecycleSummary } from './features.js';
import { GemsModel, type GemsModelConfig, type IndexerSelection, type StreamName } from './gems.js';
import type { SemanticIds } from './sid.js';

export interface LoadedGems {
  dir: string;
  meta: CheckpointMeta;
  model: GemsModel;
  sid: SemanticIds;
  summarizer: LifecycleSummarizer;
  ctx: SampleContext;
}

/** The Semantic IDs stored inside a checkpoint (so serving does not depend on the tokenizer tables). */
export function sidFromArrays(arrays: Record<string, Int32Array | Float32Array>, version: number, origin: string): SemanticIds {
  const itemIds = arrays['sidItemIds'] as Int32Array | undefined;
  const codes = arrays['sidCodes'] as Int32Array | undefined;
  const sizes = arrays['sidSizes'] as Int32Array | undefined;
  if (!itemIds || !codes || !sizes) throw new Error(`${origin}: checkpoint has no Semantic IDs (sidItemIds/sidCodes/sidSizes)`);
  const centroids: Float32Array[] = [];
  for (let i = 0; arrays[`sidCentroids${i}`]; i++) centroids.push(arrays[`sidCentroids${i}`] as Float32Array);
  const rows = new Map<number, number>();
  itemIds.forEach((id, i) => rows.set(id, i));
  const W = sizes.length;
  return { version, sizes: Array.from(sizes), itemIds, codes, centroids, trie: CodeTrie.build(codes, itemIds.length, W, itemIds), rowOf: (id) => rows.get(id) ?? -1 };
}

/** Loads a checkpoint written by trainGems; `summarizer` overrides the lifecycle summary (e.g. stored memories). */
export function loadGems(dir: string, summarizer?: LifecycleSummarizer): LoadedGems {
  const ck = readCheckpoint(dir);
  if (ck.meta.kind !== 'gems') throw new Error(`${dir}: checkpoint of a '${ck.meta.kind}' model, expected gems`);
  const cfg = ck.meta.modelConfig as unknown as GemsModelConfig;
  const sid = sidFromArrays(ck.arrays, Number(ck.meta.tokenizerVersion ?? 0), dir);
  const model = new GemsModel(cfg, sid.trie);
  restoreInto(ck, model.params);
  // The parameter-free summary the checkpoint was trained with (memory-trained ones get theirs from the caller).
  const summ = summarizer ?? parameterFreeSummarizer(ck.meta.train['lifecycleSource'], sid, cfg.lifecycle.slots);
  return { dir, meta: ck.meta, model, sid, summarizer: summ, ctx: makeSampleContext(cfg, sid, summ) };
}

export interface RecommendOptions {
  /** Beam width (≥ k). */
  beam?: number;
  /** Indexer top-k (default: the model's configured topK; 0 = full mid-term attention). */
  topK?: number;
  /** Leave out items the user already has in the given history. */
  excludeSeen?: boolean;
  /** Extra items to leave out, per user. */
  exclude?: (Set<number> | null)[];
  /** Per user, a precomputed lifecycle summary (M × dim, e.g. from the memory store); null = summarise the events. */
  lifecycle?: (LifecycleSummary | null)[];
  /** Indexer selection in beam search (BeamOptions.selection; default 'shared': one key set per user for every layer). */
  selection?: IndexerSelection;
  /** Share of every list for returning interests (BeamOptions.reserveReturns; return-intent checkpoints). */
  reserveReturns?: number;
  /** Condition every code level on the item being admissible (BeamOptions.renormalize; config serving.renormalize). */
  renormalize?: boolean;
  /** When given, filled with the wall time of the phases (ms): input cutting, stream encoding, beam search. */
  timing?: { inputMs: number; encodeMs: number; searchMs: number };
}

export interface Recommendation {
  userId: number;
  items: Int32Array;
  scores: Float32Array;
  /** count × W Semantic IDs. */
  sids: Int32Array;
  /** Share of the decoder's cross-attention output per stream (streams not in the model are absent). */
  attentionMass: Partial<Record<StreamName, number>>;
}

/**
 * Recommendations for a batch of users. Each input is everything the model may see for that user (the history up
 * to now, oldest first); it is cut into streams here. One encoder pass and one beam search for the whole batch.
 */
export function recommend(loaded: LoadedGems, inputs: History[], k: number, options: RecommendOptions = {}): Recommendation[] {
  const { model, sid, ctx } = loaded;
  const exclude = inputs.map((h, b) => {
    const given = options.exclude?.[b];
    if (!options.excludeSeen) return given?.size ? given : null; // read only: no copy of a long history's set
    const s = new Set<number>(given ?? []);
    for (const id of h.itemId) s.add(id);
    return s.size ? s : null;
  });
  const topK = options.topK ?? servingTopK(loaded);
  const t0 = performance.now();
  const batch = batchFromInputs(ctx, inputs, options.lifecycle);
  return scoped(() => {
    const t1 = performance.now();
    const enc = model.encodeForSearch(batch, topK, options.selection);
    const t2 = performance.now();
    const out = beamSearch(model, sid, enc, { k, beam: options.beam, exclude, topK, wantMass: true, selection: options.selection, reserveReturns: options.reserveReturns, renormalize: options.renormalize });
    if (options.timing) Object.assign(options.timing, { inputMs: t1 - t0, encodeMs: t2 - t1, searchMs: performance.now() - t2 });
    const names = model.enabledStreams;
    return out.users.map((u, b) => {
      const mass: Partial<Record<StreamName, number>> = {};
      if (out.mass && out.mass.length === inputs.length * names.length) names.forEach((s, i) => (mass[s] = out.mass![b * names.length + i]!));
      return { userId: inputs[b]!.userId, items: u.items, scores: u.scores, sids: u.codes, attentionMass: mass };
    });
  });
}

/** The list share a checkpoint serves for returning interests: the configured share with a return intent, else 0. */
export function servedReturnShare(loaded: Pick<LoadedGems, 'model'>, share: number): number {
  return loaded.model.cfg.returnIntent ? share : 0;
}

/**
 * The indexer top-k a checkpoint serves with: the configured k once its training reached stage 2 (from then on the
 * indexer imitates full attention), else 0 = full mid-term attention, because an untrained indexer picks keys at
 * random. A checkpoint without a training record (benchmarks, hand-built models) uses the configured k.
 */
export function servingTopK(loaded: Pick<LoadedGems, 'model' | 'meta'>): number {
  if (!loaded.model.hasIndexer) return 0;
  const history = (loaded.meta?.train as { history?: { stage: number }[] } | undefined)?.history;
  if (Array.isArray(history) && !history.some((e) => e.stage >= 2)) return 0;
  return loaded.model.cfg.indexer.topK;
}
