// Small deterministic fixtures for the model tests: synthetic histories with learnable structure, a simple
// Semantic-ID assignment, and a tiny GEMs configuration that trains in seconds on the wasm backend.
import { tf } from '../../src/compute/backend.js';
import type { History } from '../../src/data/events.js';
import { ChunkMeanSummarizer } from '../../src/model/features.js';
import { defaultGemsConfig, GemsModel, type GemsModelConfig } from '../../src/model/gems.js';
import type { LoadedGems } from '../../src/model/recommend.js';
import type { CheckpointMeta } from '../../src/train/checkpoint.js';
import { makeSampleContext } from '../../src/train/samples.js';
import { simpleSemanticIds, type SemanticIds } from '../../src/model/sid.js';
import { Rng } from '../../src/util/random.js';

/** A history from item ids (timestamps one minute apart, labels/tags filled so every feature path runs). */
export function historyOf(userId: number, items: number[], t0 = 1_700_000_000_000): History {
  const n = items.length;
  const tagOffsets = new Int32Array(n + 1);
  const tagIds: number[] = [];
  for (let i = 0; i < n; i++) {
    tagIds.push(items[i]! % 5, 7);
    tagOffsets[i + 1] = tagIds.length;
  }
  return {
    userId,
    length: n,
    itemId: Int32Array.from(items),
    ts: Float64Array.from(items, (_, i) => t0 + i * 60_000),
    seq: Int32Array.from(items, (_, i) => i),
    authorId: Int32Array.from(items, (x) => 100 + (x % 3)),
    tagOffsets,
    tagIds: Int32Array.from(tagIds),
    playMs: Float32Array.from(items, (x) => 1000 * (x % 7)),
    durationMs: Float32Array.from(items, () => 30_000),
    labels: Uint8Array.from(items, (x) => x % 4),
  };
}

export const ITEM_IDS = Array.from({ length: 24 }, (_, i) => 10 + i);

/** Each user walks the item ring with a user-specific stride from a random start: next item = f(last item, user). */
export function ringHistories(users: number, length: number, seed = 3): History[] {
  const rng = new Rng(seed);
  return Array.from({ length: users }, (_, u) => {
    const stride = 1 + (u % 3);
    let pos = rng.int(ITEM_IDS.length);
    const items: number[] = [];
    for (let i = 0; i < length; i++) {
      items.push(ITEM_IDS[pos]!);
      pos = (pos + stride) % ITEM_IDS.length;
    }
    return historyOf(1000 + u, items);
  });
}

/** Valid Semantic-ID prefixes (rows × width codes): row i is the first `width` codes of item row pick(i) mod n. */
export function sidPrefixes(sid: SemanticIds, rows: number, width: number, pick: (i: number) => number = (i) => i * 7): Int32Array {
  const W = sid.sizes.length;
  const n = sid.itemIds.length;
  const out = new Int32Array(rows * width);
  for (let i = 0; i < rows; i++) {
    const r = ((pick(i) % n) + n) % n;
    out.set(sid.codes.subarray(r * W, r * W + width), i * width);
  }
  return out;
}

/** The trie node of each row's prefix (rows × width codes). */
export function parentNodes(sid: SemanticIds, codes: Int32Array, rows: number, width: number): Int32Array {
  return Int32Array.from({ length: rows }, (_, i) => sid.trie.nodeOf(codes.subarray(i * width, (i + 1) * width)));
}

export function fixtureSid(): SemanticIds {
  return simpleSemanticIds(ITEM_IDS, [4, 4, 4], 11, 8);
}

export function tinyConfig(over: Partial<GemsModelConfig> = {}): GemsModelConfig {
  const base = defaultGemsConfig(ITEM_IDS.length, [4, 4, 4]);
  return {
    ...base,
    d: 32,
    heads: 2,
    dropout: 0,
    features: { ...base.features, itemDim: 16, authorDim: 4, tagDim: 4, timeDim: 2, authorBuckets: 16, tagBuckets: 16, maxTags: 2 },
    tRecent: 4,
    tMid: 12,
    recentLayers: 1,
    decoderLayers: 1,
    indexer: { heads: 2, dim: 8, topK: 3, klWeight: 1 },
    lifecycle: { slots: 4, inDim: 8, layers: 1 },
    ...over,
  };
}

/** An untrained tiny GEMs model with the chunk-mean lifecycle summary, its sample context, and it as a LoadedGems. */
export function tinyModel(over: Partial<GemsModelConfig> = {}) {
  const sid = fixtureSid();
  const cfg = tinyConfig(over);
  const model = new GemsModel(cfg, sid.trie);
  // Prefix embeddings start at zero in training; give them values here so every test exercises their paths.
  const trie = model.trie;
  if (trie) tf.tidy(() => model.params.get('code.node', [trie.nodes, cfg.d]).assign(tf.randomNormal([trie.nodes, cfg.d], 0, 0.3, 'float32', 5)));
  const summarizer = new ChunkMeanSummarizer(sid, cfg.lifecycle.slots);
  const ctx = makeSampleContext(cfg, sid, summarizer);
  const loaded: LoadedGems = { dir: '(test)', meta: {} as CheckpointMeta, model, sid, summarizer, ctx };
  return { sid, cfg, model, summarizer, ctx, loaded };
}
