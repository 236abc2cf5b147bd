// GetRecommendations model latency (issue 5 `serve-latency`): p50/p99 ms of recommend() called IN PROCESS (no gRPC,
// no history/memory store reads) for one user at history lengths 1k, 10k, 100k of the generated lifelong set, k = 100
// (beam 100), for these variants in the same run (they take turns request by request):
//   gems_indexer       GEMs (recent + mid-term + lifecycle), mid-term cross-attention over the indexer's top-k keys:
//                      one key set per user and decoder step shared by its beams (beam search's default selection
//                      'user'); only the selected keys' keys/values are projected
//   gems_indexer_request the same, but each layer's key set is chosen once per request at the first beam step
//                      and kept (selection 'request'): the mid-term stream is encoded lazily — only the behavior
//                      features of all its events (what the indexer scores), the MLPs only for the selected keys
//   gems_indexer_shared as gems_indexer_request, but the first decoder layer's key set serves every layer (selection
//                      'shared'): one indexer scoring and at most top-k keys encoded per request
//   gems_indexer_query the same with each beam's own top-k (the training formulation), gathered per user as the
//                      union of its beams' keys with the others masked (informational)
//   gems_bruteforce    the same model and weights, full attention over all T_mid − T_recent mid-term keys
//   single_stream      one stream = the last T_mid events (behavior encoder + positions, no self-attention layers),
//                      decoder cross-attention with full attention over all of them
// All variants use the same inference path: streams encoded once, cross-attention keys/values projected once per
// request (for the indexer: only its own keys, plus the selected keys per step), incremental decoding with a decoder
// self-attention cache across the beam levels.
// Each request does what the recommender does per user: cut the streams (the lifecycle memory stands for the
// events older than T_mid, so the model gets the last T_mid events + the memory), build the exclude-seen set over the
// whole history, encode, beam search. The lifecycle memory is computed beforehand (the service reads it from the
// memory store). Weights are untrained (latency only); Semantic IDs are a random assignment of the catalogue
// (64·64·64 + disambiguation 16). Recall of the indexer vs brute force needs a trained T_mid = 5000 model: not measured
// here — the run reports the overlap of the variants' top-100 lists instead (untrained indexer: a plumbing check).
//
// Two model sizes, both in the same JSON (`configs`):
//   small       d 64, 2 heads, T_recent (arg, default 1000), 2 recent + 2 decoder layers — the size we train here
//   paper_like  d 256, 4 heads, T_recent 256, 2 recent + 4 decoder layers (the paper: d 1024, 8 heads, 4 decoder
//               layers, T_recent 1000) — a larger share of the request is the decoder's mid-term cross-attention
// Both: T_mid (arg, default 5000), indexer 2 heads × 16 dims, lifecycle 32 slots, 1 layer; per variant also the p50 of
// the encode and beam-search phases.
// Args: [requests=20] [users=2] [topK=256] [tRecent=1000] [tMid=5000] [lengths=1000,10000,100000] [configs=small,paper_like].
import type { Bench } from './run.js';
import { percentile, round } from './_stats.js';
import { initCompute, tf } from '../src/compute/backend.js';
import { sliceHistory, type History } from '../src/data/events.js';
import { buildCatalogue } from '../src/data/generator/catalogue.js';
import { generateUser, resolveLifelongOptions } from '../src/data/generator/lifelong.js';
import { ChunkMeanSummarizer, type LifecycleSummary } from '../src/model/features.js';
import { defaultGemsConfig, GemsModel, type GemsModelConfig, type IndexerSelection } from '../src/model/gems.js';
import { recommend, type LoadedGems } from '../src/model/recommend.js';
import { simpleSemanticIds } from '../src/model/sid.js';
import type { CheckpointMeta } from '../src/train/checkpoint.js';
import { makeSampleContext } from '../src/train/samples.js';
import { logger } from '../src/util/log.js';

const log = logger('bench.serve-latency');

type VariantName = 'gems_indexer' | 'gems_indexer_request' | 'gems_indexer_shared' | 'gems_indexer_query' | 'gems_bruteforce' | 'single_stream' | 'gems_no_mid';
interface Variant {
  name: VariantName;
  loaded: LoadedGems;
  topK: number;
  selection: IndexerSelection;
}

interface ModelSize {
  name: 'small' | 'paper_like';
  d: number;
  heads: number;
  tRecent: number;
  recentLayers: number;
  decoderLayers: number;
}

function load(cfg: GemsModelConfig, sid: ReturnType<typeof simpleSemanticIds>, summarizer: ChunkMeanSummarizer): LoadedGems {
  const model = new GemsModel(cfg, sid.trie);
  return { dir: '(bench: untrained)', meta: {} as CheckpointMeta, model, sid, summarizer, ctx: makeSampleContext(cfg, sid, summarizer) };
}

export const bench: Bench = {
  summary: 'recommend() latency p50/p99 at history lengths 1k/10k/100k, k=100: GEMs+indexer vs brute-force mid-term vs single stream, two model sizes',
  async run(args) {
    const requests = Number(args[0] ?? 20);
    const usersPerLength = Number(args[1] ?? 2);
    const topK = Number(args[2] ?? 256);
    const tRecentSmall = Number(args[3] ?? 1000);
    const tMid = Number(args[4] ?? 5000);
    const lengths = (args[5] ?? '1000,10000,100000').split(',').map(Number);
    const sizesWanted = (args[6] ?? 'small,paper_like').split(',');
    const k = 100;
    const info = await initCompute();
    const sizes: ModelSize[] = [
      { name: 'small' as const, d: 64, heads: 2, tRecent: tRecentSmall, recentLayers: 2, decoderLayers: 2 },
      { name: 'paper_like' as const, d: 256, heads: 4, tRecent: 256, recentLayers: 2, decoderLayers: 4 },
    ].filter((s) => sizesWanted.includes(s.name));

    // Generated lifelong users with exactly the benchmark lengths (generator `fixedLength`).
    const genOpts = resolveLifelongOptions(undefined, { users: usersPerLength, tRecent: tRecentSmall, tMid });
    const cat = buildCatalogue(genOpts);
    const users = new Map<number, History[]>();
    for (const L of lengths) {
      const o = { ...genOpts, fixedLength: L };
      users.set(L, Array.from({ length: usersPerLength }, (_, u) => generateUser(cat, o, 1 + u).history));
    }
    const itemIds = Array.from({ length: cat.numItems }, (_, i) => i + 1);
    const sid = simpleSemanticIds(itemIds, [64, 64, 64, 16], 5, 32);
    const summarizer = new ChunkMeanSummarizer(sid, 32);
    const life = { slots: 32, inDim: summarizer.dim, layers: 1 };

    const configs: Record<string, unknown>[] = [];
    for (const size of sizes) {
      const { tRecent } = size;
      const base = { d: size.d, heads: size.heads, recentLayers: size.recentLayers, decoderLayers: size.decoderLayers, lifecycle: life };
      const gemsCfg = defaultGemsConfig(cat.numItems, sid.sizes, { ...base, tRecent, tMid, indexer: { heads: 2, dim: 16, topK, klWeight: 1 } });
      const gems = load(gemsCfg, sid, summarizer);
      const singleCfg = defaultGemsConfig(cat.numItems, sid.sizes, { ...base, recentLayers: 0, tRecent: tMid, tMid: tMid + 1, streams: { recent: true, mid: false, lifecycle: false } });
      const single = load(singleCfg, sid, summarizer);
      // The same model without the mid-term stream: what every request costs besides mid-term attention, so
      // bruteforce / no_mid is the most any mid-term attention method could speed a request up here.
      const noMid = load({ ...gemsCfg, streams: { recent: true, mid: false, lifecycle: true } }, sid, summarizer);
      const variants: Variant[] = [
        { name: 'gems_indexer', loaded: gems, topK, selection: 'user' },
        { name: 'gems_indexer_request', loaded: gems, topK, selection: 'request' },
        { name: 'gems_indexer_shared', loaded: gems, topK, selection: 'shared' },
        { name: 'gems_indexer_query', loaded: gems, topK, selection: 'query' },
        { name: 'gems_bruteforce', loaded: gems, topK: 0, selection: 'query' },
        { name: 'single_stream', loaded: single, topK: 0, selection: 'query' },
        { name: 'gems_no_mid', loaded: noMid, topK: 0, selection: 'query' },
      ];

      const rows: Record<string, number | string>[] = [];
      const overlap: Record<string, Record<string, number>> = { gems_indexer: {}, gems_indexer_request: {}, gems_indexer_shared: {}, gems_indexer_query: {} };
      for (const L of lengths) {
        const hs = users.get(L)!;
        // The lifecycle memory of each user (read from the memory store by the service; not timed).
        const memories: (LifecycleSummary | null)[] = hs.map((h) => (h.length > tMid ? summarizer.summarize(sliceHistory(h, 0, h.length - tMid)) : null));
        const tops = new Map<string, Int32Array[]>();
        const request = (v: Variant, u: number, timing?: { inputMs: number; encodeMs: number; searchMs: number }) => {
          const h = hs[u]!;
          const seen = new Set<number>(h.itemId);
          const input = h.length > tMid ? sliceHistory(h, h.length - tMid, h.length) : h;
          const memory = v.name === 'single_stream' ? null : memories[u]!;
          return recommend(v.loaded, [input], k, { beam: k, topK: v.topK, selection: v.selection, exclude: [seen], lifecycle: [memory], timing })[0]!;
        };
        // Warm-up (kernels, caches), then the variants take turns request by request so machine noise hits all alike.
        for (const v of variants) for (let u = 0; u < hs.length; u++) request(v, u);
        const ms = new Map<string, number[]>(variants.map((v) => [v.name, []]));
        const enc = new Map<string, number[]>(variants.map((v) => [v.name, []]));
        const search = new Map<string, number[]>(variants.map((v) => [v.name, []]));
        for (let i = 0; i < requests; i++) {
          const u = i % hs.length;
          for (const v of variants) {
            const timing = { inputMs: 0, encodeMs: 0, searchMs: 0 };
            const t0 = performance.now();
            const r = request(v, u, timing);
            ms.get(v.name)!.push(performance.now() - t0);
            enc.get(v.name)!.push(timing.encodeMs);
            search.get(v.name)!.push(timing.searchMs);
            if (i < hs.length) tops.set(v.name, [...(tops.get(v.name) ?? []), r.items]);
            if (r.items.length !== k) throw new Error(`${v.name} at ${L}: ${r.items.length} items, expected ${k}`);
          }
        }
        for (const v of variants) {
          const t = ms.get(v.name)!;
          const row = {
            variant: v.name,
            history_length: L,
            p50_ms: round(percentile(t, 50), 1),
            p99_ms: round(percentile(t, 99), 1),
            encode_p50_ms: round(percentile(enc.get(v.name)!, 50), 1),
            search_p50_ms: round(percentile(search.get(v.name)!, 50), 1),
            requests,
          };
          rows.push(row);
          log.info('measured', { config: size.name, ...row });
          console.log(`${size.name.padEnd(10)} ${v.name.padEnd(20)} N=${String(L).padStart(6)}  p50 ${row.p50_ms} ms  p99 ${row.p99_ms} ms  (encode ${row.encode_p50_ms}, beam search ${row.search_p50_ms})`);
        }
        const b = tops.get('gems_bruteforce')!;
        for (const name of ['gems_indexer', 'gems_indexer_request', 'gems_indexer_shared', 'gems_indexer_query']) {
          let same = 0;
          const a = tops.get(name)!;
          a.forEach((x, u) => {
            const s = new Set(b[u]);
            for (const it of x) if (s.has(it)) same++;
          });
          overlap[name]![String(L)] = round(same / (k * a.length), 3);
        }
      }
      const p50 = (v: string, L: number, col = 'p50_ms') => Number(rows.find((r) => r.variant === v && r.history_length === L)![col]);
      const ratio = (num: string, den: string, col?: string) => Object.fromEntries(lengths.map((L) => [String(L), round(p50(num, L, col) / p50(den, L, col), 2)]));
      configs.push({
        config: size.name,
        model: { d: size.d, heads: size.heads, recent_layers: size.recentLayers, decoder_layers: size.decoderLayers, t_recent: tRecent, t_mid: tMid, mid_keys: tMid - tRecent, indexer: { heads: 2, dim: 16, top_k: topK }, lifecycle_slots: life.slots, ff_mult: gemsCfg.ffMult, weights: 'untrained' },
        variants: rows,
        indexer_speedup_p50: ratio('gems_bruteforce', 'gems_indexer'),
        indexer_request_speedup_p50: ratio('gems_bruteforce', 'gems_indexer_request'),
        indexer_shared_speedup_p50: ratio('gems_bruteforce', 'gems_indexer_shared'),
        indexer_query_speedup_p50: ratio('gems_bruteforce', 'gems_indexer_query'),
        // Ceiling: brute force against no mid-term attention at all (same encoder, decoder, beams).
        mid_attention_free_ceiling_p50: ratio('gems_bruteforce', 'gems_no_mid'),
        indexer_speedup_beam_search_p50: ratio('gems_bruteforce', 'gems_indexer', 'search_p50_ms'),
        top100_overlap_vs_bruteforce_untrained: overlap,
      });
      gems.model.dispose();
      single.model.dispose();
      noMid.model.dispose();
    }
    return {
      measured: 'recommend() in process (model latency of GetRecommendations without gRPC or store reads); one user per request',
      backend: info.path,
      k,
      beam: k,
      sid_sizes: sid.sizes,
      items: cat.numItems,
      single_stream: 'last T_mid events, behavior encoder + positions, no self-attention layers, full decoder cross-attention',
      configs,
      recall_vs_bruteforce: 'not measured (no trained T_mid=5000 model); top100_overlap_vs_bruteforce_untrained is a plumbing check only',
      tensors_left: tf.memory().numTensors,
    } as never;
  },
};
