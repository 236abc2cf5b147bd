// The GEMs model (DESIGN §2): behavior encoder → three streams (recent self-attention, mid-term through the
// lightweight-indexer cross-attention, lifecycle memory through a light self-attention block) → a Semantic-ID
// decoder whose blocks are causal self-attention → one cross-attention per stream (own parameters) → fusion →
// FFN. Output logits of level ℓ = hidden · codebook-ℓ embeddings (tied with the decoder's input embeddings).
//
// Fusion (config `fusion`): 'sum' (d, the default) adds the per-stream cross-attention outputs with no learned
// weights; 'gated' (c) weights them by a learned softmax gate; 'concat' (b) concatenates the separately encoded
// streams into one decoder memory with one cross-attention; 'shared' (a) runs one shared encoder over the
// concatenated stream tokens. The indexer exists only where the mid-term stream has its own cross-attention
// (sum, gated).
//
// Indexer: score(q, k) = Σ_h w_h(q) · ReLU(q_h · k), with its own projections of the *detached* decoder state and
// mid-term keys, trained only by KL(full attention ‖ indexer) where the full attention probabilities are detached
// as well — so the indexer gets gradients only from that loss and the loss does not move the rest of the model.
// With selection on, each query attends only to its top-k mid-term keys by indexer score (k ≥ keys = full).
// The indexer's keys come from the mid-term events' behavior features (cfg.indexerKeys 'features', the default),
// not from the encoded keys: serving then runs the behavior and mid-term MLPs only on the keys it selected
// (encode lazyMid), which is most of what the indexer saves over full attention (bench serve-latency).
import { tf } from '../compute/backend.js';
import { softmaxCrossEntropy } from '../compute/ops.js';
import { emptyStreamBatch, GAP_BUCKETS, HOUR_BUCKETS, LABEL_BITS, LOG_BUCKETS, type FeatureConfig, type StreamBatch } from './features.js';
import { attention, causalBias, dense, dropout, gatherRows, gelu, layerNorm, logSoftmaxLast, matMul2d, stopGradient, type AttentionParams } from './ops.js';
import { ParamStore } from './params.js';
import { CodeTrie } from '../tokenizer/trie.js';

type T = tf.Tensor;

export type FusionKind = 'sum' | 'gated' | 'concat' | 'shared';
export type StreamName = 'recent' | 'mid' | 'lifecycle';
/** How beam search picks the mid-term keys each indexed cross-attention attends (StepOptions.selection). */
export const INDEXER_SELECTIONS = ['user', 'request', 'shared', 'query'] as const;
export type IndexerSelection = (typeof INDEXER_SELECTIONS)[number];
export const isIndexerSelection = (s: string): s is IndexerSelection => (INDEXER_SELECTIONS as readonly string[]).includes(s);
/** What beam search (and so serving and eval) uses when no selection is given: the fastest, see src/model/beam.ts. */
export const DEFAULT_INDEXER_SELECTION: IndexerSelection = 'shared';
/** Selections that choose their key sets once per search (at the first step) and keep them. */
const selectsOnce = (s: IndexerSelection): boolean => s === 'request' || s === 'shared';
export const STREAMS: StreamName[] = ['recent', 'mid', 'lifecycle'];

export interface GemsModelConfig {
  kind: 'gems';
  /** Items in the vocabulary (indices 1..numItems; 0 = padding/unknown). */
  numItems: number;
  /** Codebook size per generated level (tokenizer sizes, incl. the disambiguation level). */
  sizes: number[];
  d: number;
  heads: number;
  ffMult: number;
  dropout: number;
  seed: number;
  features: FeatureConfig & { itemDim: number; authorDim: number; tagDim: number; timeDim: number };
  tRecent: number;
  tMid: number;
  recentLayers: number;
  /**
   * Causal self-attention in the recent encoder (each event sees only older ones). Needed for dense training (one
   * encoded window serves a target at every position); absent in older checkpoints = bidirectional.
   */
  recentCausal?: boolean;
  /**
   * The decoder's BOS token carries the recent encoder's output at the newest input event (the user's state, as
   * SASRec predicts from it), so the decoder starts from the user and not only from what cross-attention finds.
   * Needs a causal recent encoder; absent in older checkpoints = plain BOS.
   */
  bosFromRecent?: boolean;
  /**
   * Code embeddings specialised by prefix: the embedding of code c at level ℓ ≥ 1 (decoder input and output logit
   * alike, they are tied) is codebook-ℓ[c] + node[prefix·c], one extra vector per Semantic-ID trie node. A residual
   * code means different items under different prefixes; with one shared vector per code the decoder must recover
   * (user × prefix) interactions itself, and on ML-1M that is where its loss fell behind SASRec's (levels 2–3). Needs
   * the Semantic-ID trie (GemsModel's second argument); absent in older checkpoints = codebook embeddings only.
   */
  prefixEmbeddings?: boolean;
  /**
   * Return intent: the decoder's BOS may carry one more learned vector (`dec.return`) that asks for a *return of a
   * dormant interest* instead of the next event. Trained on return targets (gems train --return-intent: the rows drawn
   * by --return-share carry it, the others are plain next-event rows), served as a reserved share of the list
   * (beam.ts reserveReturns). Without it the two objectives share one distribution and the next event's beams
   * crowd out the returns. Absent in older checkpoints = no intent.
   */
  returnIntent?: boolean;
  /**
   * Events also enter by their Semantic ID: the behavior features gain the embeddings of the item's first
   * `codeInputs` codes (level 0: codebook-0[c0]; level 1: codebook-1[c1] + node[c0·c1] with prefix embeddings), the
   * decoder's own code embeddings (tied). An item-ID embedding must be learnt item by item; the codes are shared by
   * every item of an interest, so "which interests the recent events hold" is there from the first step, in the
   * space the decoder writes its codes in. Needs the trie; absent in older checkpoints = 0 (item id only).
   */
  codeInputs?: number;
  /**
   * Lifecycle slots that summarise one coarse interest (the 'interests' summary) also carry that interest's
   * codebook-0 embedding, tied with the decoder's level-0 code embeddings: a slot points at the code it would bring
   * back. Needs batches with lifecycleCodes; absent in older checkpoints = off.
   */
  lifecycleCodes?: boolean;
  /**
   * With lifecycleCodes: a slot whose interest also occurs in the mid-term stream gets one more learned vector
   * (`life.inmid`). The offline memory cannot know what happened after it was built; the request knows its mid-term
   * events, so "this interest is dormant" is an input and need not be inferred by attention. Absent = off.
   */
  lifecycleInMid?: boolean;
  decoderLayers: number;
  indexer: { heads: number; dim: number; topK: number; klWeight: number };
  /**
   * What the indexer scores a mid-term key from. 'features': the event's behavior features (the behavior encoder's
   * input, before any MLP) plus a learned vector per mid-term position — so at serving time the behavior MLP and the
   * mid-term MLP run only on the keys the indexer selected (encode lazyMid), not on all T_mid − T_recent events.
   * 'encoded': the encoded mid-term key (absent in older checkpoints = 'encoded').
   */
  indexerKeys?: 'encoded' | 'features';
  lifecycle: { slots: number; inDim: number; layers: number };
  fusion: FusionKind;
  streams: Record<StreamName, boolean>;
}

export function defaultGemsConfig(numItems: number, sizes: number[], over: Partial<GemsModelConfig> = {}): GemsModelConfig {
  return {
    kind: 'gems',
    numItems,
    sizes,
    d: 64,
    heads: 2,
    ffMult: 2,
    dropout: 0.1,
    seed: 42,
    features: { authorBuckets: 1024, tagBuckets: 512, maxTags: 4, itemDim: 48, authorDim: 8, tagDim: 8, timeDim: 4, gapFrom: 'prev' },
    tRecent: 64,
    tMid: 512,
    recentLayers: 2,
    recentCausal: true,
    bosFromRecent: true,
    prefixEmbeddings: true,
    decoderLayers: 2,
    indexer: { heads: 2, dim: 16, topK: 64, klWeight: 1 },
    indexerKeys: 'features',
    lifecycle: { slots: 32, inDim: 32, layers: 1 },
    fusion: 'sum',
    streams: { recent: true, mid: true, lifecycle: true },
    ...over,
  };
}

/** Model input for B users: the three streams as of the request (or the training target). */
export interface GemsBatch {
  B: number;
  recent: StreamBatch;
  mid: StreamBatch;
  /** B × slots × inDim lifecycle summaries and B × slots validity. */
  lifecycle: Float32Array;
  lifecycleValid: Uint8Array;
  /** B × slots: each slot's coarse interest, −1 for none (summaries that name one: LifecycleSummary.codes). */
  lifecycleCodes?: Int32Array;
  /** B × slots: 1 when the slot's coarse interest also occurs in the mid-term stream (cfg.lifecycleInMid). */
  lifecycleInMid?: Uint8Array;
}

export interface ForwardOptions {
  training: boolean;
  /** Compute the indexer KL (stages 2 and 3). */
  indexerLoss: boolean;
  /** Attend only to the indexer's top-k mid-term keys (stage 3 and serving); 0 = full attention. */
  topK: number;
  /** Record each stream's share of the cross-attention output (explanations; inference only). */
  wantMass?: boolean;
  /**
   * Decoder rows per encoded user (beam search: one per beam; default 1). Inference only: the rows of a user are
   * folded into the query axis of that user's cross-attention, so keys/values are never copied per beam.
   */
  rowsPerUser?: number;
  /**
   * Inference with indexer top-k: 'gather' (default) attends over only the k selected keys; 'mask' runs full
   * attention with the others masked (the training formulation; kept for tests and comparison).
   */
  topKMode?: 'gather' | 'mask';
  /**
   * Inference: the last decoder block computes only the last position (the one whose next code is scored); the
   * returned hidden then has one position. Earlier positions still feed its self-attention.
   */
  lastOnly?: boolean;
}

interface Memory {
  keys: T;
  /** Additive key mask [B,1,1,Lk]. */
  bias: T;
  /** Validity per key (B × Lk), for the indexer's top-k. */
  valid: Uint8Array;
  /** Mid-term stream with cfg.indexerKeys 'features': the events' behavior features [B, Lk, featureDim]. */
  features?: T;
}

/**
 * The mid-term stream encoded lazily (encode lazyMid; inference): only the behavior features of its events, from which
 * the indexer scores keys; the MLPs run on the selected keys only (GemsModel.encodeMidRows), as decodeStep needs them.
 */
export interface LazyMidTerm {
  features: T;
  bias: T;
  valid: Uint8Array;
}

export interface EncodedStreams {
  B: number;
  /** The encoded streams; with `midLazy` the mid-term stream is not here. */
  mem: Partial<Record<StreamName | 'all', Memory>>;
  midLazy?: LazyMidTerm;
  /** Key/value (and indexer key) projections per cross-attention, from GemsModel.prepare (inference). */
  proj?: Map<string, ProjectedMemory>;
  /**
   * prepare(enc, { lazyMid: true }): per decoder layer, only the indexer's keys [U, Lk, dim] of the mid-term stream;
   * its keys/values are then projected per step for the selected keys only (decodeStep with selection 'user',
   * 'request' or 'shared'). With selection 'shared' only the first layer's: it selects for every layer.
   */
  indexKeys?: Map<number, T>;
  /**
   * With `indexKeys`: the mid-term keys [U·Lk·d] on the host, for gathering the selected rows (faster than tf.gather on
   * wasm) — or, with `midLazy`, the events' behavior features [U·Lk·featureDim], from which the selected keys are encoded.
   */
  midKeysHost?: Float32Array;
  /** With `midLazy` and `indexKeys`: the encoded mid-term keys [d] of the keys selected so far in this search. */
  midEncoded?: RowCache;
  /**
   * With `indexKeys`: per decoder layer, the keys/values of the mid-term keys selected so far in this search (host
   * copies), so a key selected again at a later level is not projected again: successive levels' beams mostly pick
   * the same keys.
   */
  midProjected?: Map<number, RowCache>;
  /** Selection 'request' / 'shared': per decoder layer, the per-user key selection made at the search's first step. */
  midSelection?: Map<number, UserSelection>;
  /** Prepared for selection 'shared': the first decoder layer's selection serves every layer. */
  midSelectionShared?: boolean;
}

/**
 * Host rows computed on demand for some keys of a memory (key u·Lk + j), appended as keys get selected: one buffer per
 * computed quantity (the keys/values projected for a cross-attention, or the encoded keys), `widths[i]` floats a row.
 */
export interface RowCache {
  /** Row of key u·Lk + j in the buffers, or −1 while it has not been computed. */
  slot: Int32Array;
  bufs: Float32Array[];
  widths: number[];
  /** Rows filled. */
  n: number;
}

/** Per user, the mid-term keys one cross-attention attends (GemsModel.userTopKAttention). */
interface UserSelection {
  /** U × width key indices u·Lk + j (ascending per user; padding slots repeat a valid index and are masked). */
  flat: Int32Array;
  /** U × width additive mask: 0 for a selected key, −1e9 for a padding slot. */
  bias: Float32Array;
  width: number;
  /** Users without any valid key (they attend uniformly over all keys, as the masked formulation does). */
  empty: Uint8Array;
  /**
   * Selection 'request' / 'shared': the selected keys' keys/values split by head [U, H, width, dh], kept (tf.keep)
   * for the later levels — they do not change within the search; freed by GemsModel.release.
   */
  kv?: { Kh: T; Vh: T };
}

/** Decoder self-attention cache (inference, decodeStep): per layer, keys and values of every decoded position. */
export interface DecoderCache {
  /** Per layer [rows, positions, H·dh]. */
  K: T[];
  V: T[];
}

export interface StepOptions {
  /** Indexer top-k for the mid-term stream (0 = full attention). */
  topK: number;
  /**
   * 'user' (default): one set of top-k mid-term keys per user for all its rows (beams) of the step — the k keys with
   * the most indexer attention mass summed over the rows (softmax of each row's indexer scores); with one row per
   * user exactly the row's own top-k. Keys/values are projected for the selected keys only.
   * 'request': as 'user', but each layer's key set is chosen once, at the search's first step (the user's BOS query:
   * one row, so exactly its top-k), and kept for the later levels — no indexer scoring after the first step.
   * 'shared': as 'request', but the first decoder layer's key set serves every layer: one indexer scoring and at
   * most k keys encoded per user for the whole search (the layers' own indexers are not consulted).
   * 'query': each row's own top-k (the training formulation; GemsModel.gatherAttention).
   */
  selection?: IndexerSelection;
  wantMass?: boolean;
  /** Rows (beams) per user; rows of a user are consecutive. */
  rowsPerUser?: number;
  /** Every row asks for a return of a dormant interest (returnIntent models; level 0 only reads it). */
  returnIntent?: boolean;
  /** Levels ≥ 1 with prefix embeddings: the trie node of each row's prefix (its `level` codes so far). */
  prefixNodes?: Int32Array;
}

/** One cross-attention's keys and values projected once per user. */
interface ProjectedMemory {
  /** [U, Lk, H·dh] */
  K: T;
  V: T;
  /** The same split by head: [U, H, Lk, dh]. */
  Kh: T;
  Vh: T;
  /** [U, Lk, indexer dim] (mid-term stream with an indexer). */
  ki?: T;
}

/**
 * Dense training (GemsModel.denseLoss): the decoder runs `perUser` target rows per encoded user and each user's rows
 * are folded into the query axis of its cross-attentions; `bias` holds the per-row key masks [U, 1, perUser·len, Lk]
 * of the memories that contain the recent window (a row sees only the window events up to its own).
 */
export interface DenseTargets {
  perUser: number;
  /** Per target row (U·perUser), 1 = the row asks for a return (returnIntent models). */
  returnRows?: Uint8Array;
  bias: Partial<Record<'recent' | 'all', T>>;
}

export interface DecodeResult {
  hidden: T;
  /** Mean indexer KL over blocks and valid queries (scalar), when asked for. */
  kl?: T;
  /** B × S per-stream output-norm shares (S = enabled streams in STREAMS order), when asked for. */
  mass?: Float32Array;
}

interface ItemCodeIndex {
  known: Float32Array;
  code0: Int32Array;
  code1: Int32Array;
  node1: Int32Array;
}

/**
 * Vocabulary index → the item's level-0 code, level-1 code and level-1 trie node. The vocabulary is the items in
 * ascending id order (features.ts ItemVocab over SemanticIds.itemIds, the trie's leaves), index 0 = padding.
 */
function itemCodeIndex(trie: CodeTrie, numItems: number): ItemCodeIndex {
  const parent = new Int32Array(trie.nodes).fill(-1);
  for (let v = 0; v < trie.nodes; v++) for (let k = 0; k < trie.childCount[v]!; k++) parent[trie.firstChild[v]! + k] = v;
  const leaves: Array<[number, number]> = [];
  for (let v = 0; v < trie.nodes; v++) if (trie.leafItem[v]! >= 0) leaves.push([trie.leafItem[v]!, v]);
  if (leaves.length !== numItems) throw new Error(`GEMs codeInputs: the trie has ${leaves.length} items, the model ${numItems}`);
  leaves.sort((a, b) => a[0] - b[0]);
  const out: ItemCodeIndex = { known: new Float32Array(numItems + 1), code0: new Int32Array(numItems + 1), code1: new Int32Array(numItems + 1), node1: new Int32Array(numItems + 1) };
  leaves.forEach(([, leaf], i) => {
    let node = leaf;
    while (trie.nodeDepth[node]! > 2) node = parent[node]!;
    const first = trie.nodeDepth[node] === 2 ? parent[node]! : node;
    out.known[i + 1] = 1;
    out.code0[i + 1] = trie.nodeCode[first]!;
    out.code1[i + 1] = trie.nodeDepth[node] === 2 ? trie.nodeCode[node]! : 0;
    out.node1[i + 1] = trie.nodeDepth[node] === 2 ? node : 0;
  });
  return out;
}

function maskFromValid(valid: Uint8Array, B: number, L: number): T {
  const m = new Float32Array(B * L);
  for (let i = 0; i < B * L; i++) m[i] = valid[i] ? 0 : -1e9;
  return tf.tensor4d(m, [B, 1, 1, L]);
}

export class GemsModel {
  readonly params: ParamStore;
  private dropSeed = 7;
  private readonly causal = new Map<number, T>();
  /** midKeyMeans' padding-key mean, with the parameter tensors it was computed from (see paddingMidMean). */
  private paddingMean: { from: object[]; mean: T } | null = null;
  readonly W: number;

  /** The Semantic-ID trie, when codes have prefix embeddings (cfg.prefixEmbeddings). */
  readonly trie: CodeTrie | null;
  /** Per vocabulary index (0 = padding/unknown): the item's first codes and level-1 trie node (cfg.codeInputs). */
  private readonly itemCodes: ItemCodeIndex | null;

  constructor(
    readonly cfg: GemsModelConfig,
    trie?: CodeTrie,
  ) {
    if (!STREAMS.some((s) => cfg.streams[s])) throw new Error('GEMs config: at least one stream must be on');
    if (cfg.tMid <= cfg.tRecent) throw new Error(`GEMs config: tMid (${cfg.tMid}) must exceed tRecent (${cfg.tRecent})`);
    this.W = cfg.sizes.length;
    if (cfg.prefixEmbeddings && !trie) throw new Error('GEMs config: prefixEmbeddings needs the Semantic-ID trie');
    if (trie && trie.depth !== this.W) throw new Error(`GEMs model: trie depth ${trie.depth} ≠ ${this.W} code levels`);
    this.trie = cfg.prefixEmbeddings ? trie! : null;
    const codeInputs = cfg.codeInputs ?? 0;
    if (codeInputs < 0 || codeInputs > Math.min(2, this.W - 1) || !Number.isInteger(codeInputs)) throw new Error(`GEMs config: codeInputs must be 0, 1 or 2 (and below the ${this.W} code levels), got ${codeInputs}`);
    if (codeInputs > 0 && !trie) throw new Error('GEMs config: codeInputs needs the Semantic-ID trie');
    if (cfg.lifecycleInMid && !cfg.lifecycleCodes) throw new Error('GEMs config: lifecycleInMid marks interest slots, it needs lifecycleCodes');
    this.itemCodes = codeInputs > 0 ? itemCodeIndex(trie!, cfg.numItems) : null;
    this.params = new ParamStore(cfg.seed);
    this.defineParams();
  }

  get enabledStreams(): StreamName[] {
    return STREAMS.filter((s) => this.cfg.streams[s]);
  }

  get midLen(): number {
    return this.cfg.tMid - this.cfg.tRecent;
  }

  /** Frees the parameters and the cached causal masks (a replaced or finished model must not keep either). */
  dispose(): void {
    this.params.dispose();
    for (const m of this.causal.values()) m.dispose();
    this.causal.clear();
    this.paddingMean?.mean.dispose();
    this.paddingMean = null;
  }

  /** Whether the mid-term stream has its own cross-attention (and so an indexer). */
  get hasIndexer(): boolean {
    return this.cfg.streams.mid && (this.cfg.fusion === 'sum' || this.cfg.fusion === 'gated');
  }

  /** Whether the indexer scores mid-term keys from their behavior features (cfg.indexerKeys), so encode can be lazy. */
  get indexerOnFeatures(): boolean {
    return this.hasIndexer && this.cfg.indexerKeys === 'features';
  }

  /** Width of an event's behavior features (the behavior encoder's input). */
  get featureDim(): number {
    const f = this.cfg.features;
    return f.itemDim + f.authorDim + f.tagDim + 4 * f.timeDim + LABEL_BITS + (this.cfg.codeInputs ?? 0) * this.cfg.d;
  }

  // ---- parameters -------------------------------------------------------------------------------------------

  private attnParams(prefix: string, dIn = this.cfg.d): void {
    const { d } = this.cfg;
    const p = this.params;
    p.get(`${prefix}.wq`, [d, d]);
    p.get(`${prefix}.wk`, [dIn, d]);
    p.get(`${prefix}.wv`, [dIn, d]);
    p.get(`${prefix}.wo`, [d, d]);
  }

  private normParams(prefix: string): void {
    this.params.get(`${prefix}.g`, [this.cfg.d], 'ones');
    this.params.get(`${prefix}.b`, [this.cfg.d], 'zeros');
  }

  private ffnParams(prefix: string): void {
    const { d, ffMult } = this.cfg;
    this.params.get(`${prefix}.w1`, [d, d * ffMult]);
    this.params.get(`${prefix}.b1`, [d * ffMult], 'zeros');
    this.params.get(`${prefix}.w2`, [d * ffMult, d]);
    this.params.get(`${prefix}.b2`, [d], 'zeros');
  }

  private selfBlockParams(prefix: string): void {
    this.normParams(`${prefix}.norm1`);
    this.attnParams(`${prefix}.attn`);
    this.normParams(`${prefix}.norm2`);
    this.ffnParams(`${prefix}.ffn`);
  }

  private defineParams(): void {
    const c = this.cfg;
    const f = c.features;
    const p = this.params;
    const { d } = c;
    // Behavior encoder (shared by the event streams).
    p.get('be.item', [c.numItems + 1, f.itemDim], 'normal', 0.1);
    p.get('be.author', [f.authorBuckets, f.authorDim], 'normal', 0.1);
    p.get('be.tag', [f.tagBuckets, f.tagDim], 'normal', 0.1);
    p.get('be.gap', [GAP_BUCKETS, f.timeDim], 'normal', 0.1);
    p.get('be.hour', [HOUR_BUCKETS, f.timeDim], 'normal', 0.1);
    p.get('be.play', [LOG_BUCKETS, f.timeDim], 'normal', 0.1);
    p.get('be.dur', [LOG_BUCKETS, f.timeDim], 'normal', 0.1);
    p.get('be.w1', [this.featureDim, d]);
    p.get('be.b1', [d], 'zeros');
    p.get('be.w2', [d, d]);
    p.get('be.b2', [d], 'zeros');
    const shared = c.fusion === 'shared';
    if (c.streams.recent || shared) {
      p.get('recent.pos', [c.tRecent, d], 'normal', 0.02);
      for (let l = 0; l < c.recentLayers; l++) this.selfBlockParams(`recent${l}`);
      this.normParams('recent.out');
    }
    if (c.streams.mid) {
      p.get('mid.pos', [this.midLen, d], 'normal', 0.02);
      this.ffnParams('mid.mlp');
      this.normParams('mid.out');
    }
    if (c.streams.lifecycle) {
      p.get('life.proj', [c.lifecycle.inDim, d]);
      p.get('life.projb', [d], 'zeros');
      p.get('life.slot', [c.lifecycle.slots, d], 'normal', 0.02);
      if (c.lifecycleInMid) p.get('life.inmid', [d], 'normal', 0.1);
      if (!shared) {
        for (let l = 0; l < c.lifecycle.layers; l++) this.selfBlockParams(`life${l}`);
        this.normParams('life.out');
      }
    }
    if (shared) p.get('shared.segment', [3, d], 'normal', 0.02);
    // Decoder.
    p.get('dec.bos', [d], 'normal', 0.1);
    if (c.returnIntent) p.get('dec.return', [d], 'normal', 0.1);
    p.get('dec.pos', [this.W, d], 'normal', 0.02);
    c.sizes.forEach((k, l) => p.get(`code${l}`, [k, d], 'normal', 1 / Math.sqrt(d)));
    // One row per trie node (indexed by node id). Rows of the root and of level-1 nodes stay unused except the root's,
    // which stands for "no such child" in the output logits (those codes are masked by the trie at inference).
    // Zero at the start: the model begins as the codebook-only one and learns what each prefix changes.
    if (this.trie) p.get('code.node', [this.trie.nodes, d], 'zeros');
    for (let l = 0; l < c.decoderLayers; l++) {
      const pre = `dec${l}`;
      this.normParams(`${pre}.norm_self`);
      this.attnParams(`${pre}.self`);
      if (c.fusion === 'sum' || c.fusion === 'gated') {
        for (const s of this.enabledStreams) {
          this.normParams(`${pre}.norm_${s}`);
          this.attnParams(`${pre}.x_${s}`);
        }
        if (c.fusion === 'gated') {
          p.get(`${pre}.gate.w`, [d, this.enabledStreams.length]);
          p.get(`${pre}.gate.b`, [this.enabledStreams.length], 'zeros');
        }
        if (this.hasIndexer) {
          const ix = c.indexer;
          p.get(`${pre}.indexer.wq`, [d, ix.heads * ix.dim]);
          p.get(`${pre}.indexer.wk`, [this.indexerOnFeatures ? this.featureDim : d, ix.dim]);
          p.get(`${pre}.indexer.ww`, [d, ix.heads]);
          if (this.indexerOnFeatures) p.get(`${pre}.indexer.pos`, [this.midLen, ix.dim], 'normal', 0.02);
        }
      } else {
        this.normParams(`${pre}.norm_all`);
        this.attnParams(`${pre}.x_all`);
      }
      this.normParams(`${pre}.norm_ffn`);
      this.ffnParams(`${pre}.ffn`);
    }
    this.normParams('dec.out');
  }

  private v(name: string): T {
    const x = this.params.vars.get(name);
    if (!x) throw new Error(`GEMs model: missing parameter ${name}`);
    return x;
  }

  private attn(prefix: string): AttentionParams {
    return { wq: this.v(`${prefix}.wq`), wk: this.v(`${prefix}.wk`), wv: this.v(`${prefix}.wv`), wo: this.v(`${prefix}.wo`) };
  }

  private norm(prefix: string, x: T): T {
    return layerNorm(x, this.v(`${prefix}.g`), this.v(`${prefix}.b`));
  }

  private ffn(prefix: string, x: T, training: boolean): T {
    const h = gelu(dense(x, this.v(`${prefix}.w1`), this.v(`${prefix}.b1`)));
    return dense(this.drop(h, training), this.v(`${prefix}.w2`), this.v(`${prefix}.b2`));
  }

  private drop(x: T, training: boolean): T {
    return training ? dropout(x, this.cfg.dropout, this.dropSeed++) : x;
  }

  private causalMask(L: number): T {
    let m = this.causal.get(L);
    if (!m) {
      m = tf.keep(causalBias(L));
      this.causal.set(L, m);
    }
    return m;
  }

  private selfBlock(prefix: string, x: T, bias: T, training: boolean): T {
    const n = this.norm(`${prefix}.norm1`, x);
    const a = attention(n, n, this.attn(`${prefix}.attn`), this.cfg.heads, bias).out;
    x = x.add(this.drop(a, training));
    return x.add(this.drop(this.ffn(`${prefix}.ffn`, this.norm(`${prefix}.norm2`, x), training), training));
  }

  // ---- encoders ---------------------------------------------------------------------------------------------

  /** Behavior encoder: event features → [B, T, d]. */
  behavior(sb: StreamBatch, training: boolean): T {
    return this.behaviorMlp(this.behaviorFeatures(sb), training).reshape([sb.B, sb.T, this.cfg.d]);
  }

  /** The behavior encoder's MLP: features [n, featureDim] → [n, d]. */
  private behaviorMlp(x: T, training: boolean): T {
    return dense(this.drop(gelu(dense(x, this.v('be.w1'), this.v('be.b1'))), training), this.v('be.w2'), this.v('be.b2'));
  }

  /** The behavior encoder's input [B·T, featureDim]: the event's embeddings and encodings, concatenated. */
  private behaviorFeatures(sb: StreamBatch): T {
    const f = this.cfg.features;
    const n = sb.B * sb.T;
    const tagMask = new Float32Array(n * f.maxTags);
    const tagCount = new Float32Array(n);
    for (let i = 0; i < n * f.maxTags; i++) if (sb.tags[i]! > 0) {
      tagMask[i] = 1;
      tagCount[Math.floor(i / f.maxTags)]! += 1;
    }
    for (let i = 0; i < n; i++) tagCount[i] = 1 / Math.max(1, tagCount[i]!);
    const tags = gatherRows(this.v('be.tag'), sb.tags)
      .reshape([n, f.maxTags, f.tagDim])
      .mul(tf.tensor3d(tagMask, [n, f.maxTags, 1]))
      .sum(1)
      .mul(tf.tensor2d(tagCount, [n, 1]));
    return tf.concat(
      [
        ...this.codeFeatures(sb.item),
        gatherRows(this.v('be.item'), sb.item),
        gatherRows(this.v('be.author'), sb.author),
        tags,
        gatherRows(this.v('be.gap'), sb.gap),
        gatherRows(this.v('be.hour'), sb.hour),
        gatherRows(this.v('be.play'), sb.play),
        gatherRows(this.v('be.dur'), sb.dur),
        tf.tensor2d(sb.labels, [n, LABEL_BITS]),
      ],
      1,
    );
  }

  /** The items' code embeddings (cfg.codeInputs levels, each [n, d]; zero for padding and unknown items). */
  private codeFeatures(items: Int32Array): T[] {
    const ic = this.itemCodes;
    if (!ic) return [];
    const n = items.length;
    const known = new Float32Array(n);
    const c0 = new Int32Array(n);
    const c1 = new Int32Array(n);
    const n1 = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const v = items[i]!;
      known[i] = ic.known[v]!;
      c0[i] = ic.code0[v]!;
      c1[i] = ic.code1[v]!;
      n1[i] = ic.node1[v]!;
    }
    const mask = tf.tensor2d(known, [n, 1]);
    const out = [gatherRows(this.v('code0'), c0).mul(mask)];
    if ((this.cfg.codeInputs ?? 0) > 1) {
      let e = gatherRows(this.v('code1'), c1);
      if (this.trie) e = e.add(gatherRows(this.v('code.node'), n1));
      out.push(e.mul(mask));
    }
    return out;
  }

  private positions(name: string, T: number): T {
    return this.v(name).reshape([1, T, this.cfg.d]);
  }

  private lifecycleTokens(batch: GemsBatch): T {
    const { slots, inDim } = this.cfg.lifecycle;
    const x = tf.tensor3d(batch.lifecycle, [batch.B, slots, inDim]);
    const tokens = dense(x, this.v('life.proj'), this.v('life.projb')).add(this.v('life.slot').reshape([1, slots, this.cfg.d]));
    if (!this.cfg.lifecycleCodes) return tokens;
    const codes = batch.lifecycleCodes;
    if (!codes || codes.length !== batch.B * slots) throw new Error('GEMs lifecycleCodes: the batch has no per-slot interest codes (a summary that names them: --lifecycle-source interests)');
    const mask = tf.tensor3d(Float32Array.from(codes, (c) => (c >= 0 ? 1 : 0)), [batch.B, slots, 1]);
    const e = gatherRows(this.v('code0'), Int32Array.from(codes, (c) => Math.max(0, c))).reshape([batch.B, slots, this.cfg.d]);
    const withCodes = tokens.add(e.mul(mask));
    if (!this.cfg.lifecycleInMid) return withCodes;
    const inMid = batch.lifecycleInMid;
    if (!inMid || inMid.length !== batch.B * slots) throw new Error('GEMs lifecycleInMid: the batch does not say which slots occur in the mid-term stream');
    return withCodes.add(tf.tensor3d(Float32Array.from(inMid), [batch.B, slots, 1]).mul(this.v('life.inmid').reshape([1, 1, this.cfg.d])));
  }

  /**
   * Encodes the enabled streams into decoder memories. `lazyMid` (inference, indexer on features): the mid-term stream
   * only as behavior features (EncodedStreams.midLazy); beam search with the indexer's per-user selection then encodes
   * just the keys it selects.
   */
  encode(batch: GemsBatch, training: boolean, opts: { lazyMid?: boolean } = {}): EncodedStreams {
    const c = this.cfg;
    if (opts.lazyMid && (training || !this.indexerOnFeatures)) throw new Error('GEMs encode: lazyMid is for inference with cfg.indexerKeys \'features\'');
    const B = batch.B;
    if (batch.recent.T !== c.tRecent || batch.mid.T !== this.midLen) throw new Error(`GEMs batch: stream lengths ${batch.recent.T}/${batch.mid.T}, model expects ${c.tRecent}/${this.midLen}`);
    if (batch.lifecycle.length !== B * c.lifecycle.slots * c.lifecycle.inDim) throw new Error(`GEMs batch: lifecycle summary has ${batch.lifecycle.length} values, expected ${B}×${c.lifecycle.slots}×${c.lifecycle.inDim}`);
    const mem: EncodedStreams['mem'] = {};
    if (c.fusion === 'shared') {
      const parts: T[] = [];
      const valids: Uint8Array[] = [];
      const seg = this.v('shared.segment');
      const segRow = (i: number) => seg.slice([i, 0], [1, c.d]).reshape([1, 1, c.d]);
      if (c.streams.lifecycle) {
        parts.push(this.lifecycleTokens(batch).add(segRow(0)));
        valids.push(batch.lifecycleValid);
      }
      if (c.streams.mid) {
        parts.push(this.behavior(batch.mid, training).add(this.positions('mid.pos', this.midLen)).add(segRow(1)));
        valids.push(batch.mid.valid);
      }
      if (c.streams.recent) {
        parts.push(this.behavior(batch.recent, training).add(this.positions('recent.pos', c.tRecent)).add(segRow(2)));
        valids.push(batch.recent.valid);
      }
      const valid = concatValid(valids, B);
      const L = valid.length / B;
      const bias = maskFromValid(valid, B, L);
      let x = this.drop(tf.concat(parts, 1), training);
      for (let l = 0; l < c.recentLayers; l++) x = this.selfBlock(`recent${l}`, x, bias, training);
      mem.all = { keys: this.norm('recent.out', x), bias, valid };
      return { B, mem };
    }
    if (c.streams.recent) {
      const keyBias = maskFromValid(batch.recent.valid, B, c.tRecent);
      const bias = c.recentCausal ? keyBias.add(this.causalMask(c.tRecent)) : keyBias;
      let x = this.drop(this.behavior(batch.recent, training).add(this.positions('recent.pos', c.tRecent)), training);
      for (let l = 0; l < c.recentLayers; l++) x = this.selfBlock(`recent${l}`, x, bias, training);
      mem.recent = { keys: this.norm('recent.out', x), bias: keyBias, valid: batch.recent.valid };
    }
    let midLazy: LazyMidTerm | undefined;
    if (c.streams.mid) {
      const f = this.behaviorFeatures(batch.mid);
      const bias = maskFromValid(batch.mid.valid, B, this.midLen);
      const features = this.indexerOnFeatures ? f.reshape([B, this.midLen, this.featureDim]) : undefined;
      if (opts.lazyMid) midLazy = { features: features!, bias, valid: batch.mid.valid };
      else {
        const x = this.behaviorMlp(f, training).reshape([B, this.midLen, c.d]).add(this.positions('mid.pos', this.midLen));
        mem.mid = { keys: this.midMlp(x, training), bias, valid: batch.mid.valid, features };
      }
    }
    if (c.streams.lifecycle) {
      const bias = maskFromValid(batch.lifecycleValid, B, c.lifecycle.slots);
      let x = this.lifecycleTokens(batch);
      for (let l = 0; l < c.lifecycle.layers; l++) x = this.selfBlock(`life${l}`, x, bias, training);
      mem.lifecycle = { keys: this.norm('life.out', x), bias, valid: batch.lifecycleValid };
    }
    if (c.fusion === 'concat') {
      const names = this.enabledStreams;
      const valid = concatValid(names.map((s) => mem[s]!.valid), B);
      const keys = tf.concat(names.map((s) => mem[s]!.keys), 1);
      return { B, mem: { all: { keys, bias: maskFromValid(valid, B, valid.length / B), valid } } };
    }
    return midLazy ? { B, mem, midLazy } : { B, mem };
  }

  /**
   * Encodes for beam search with the given indexer options: lazily (only the mid-term events' behavior features; the
   * selected keys are encoded during the search) when the indexer scores features and selects once per request.
   */
  encodeForSearch(batch: GemsBatch, topK: number, selection: IndexerSelection = DEFAULT_INDEXER_SELECTION): EncodedStreams {
    // Only 'request' and 'shared' bound the keys a search selects (≤ k per layer); with 'user' the levels together
    // select most keys, and encoding them in pieces costs more than encoding the stream at once (serve-latency).
    return this.encode(batch, false, { lazyMid: this.indexerOnFeatures && topK > 0 && selectsOnce(selection) });
  }

  /** The mid-term MLP and output norm over behavior-encoded events (with positions) [.., d]. */
  private midMlp(x: T, training: boolean): T {
    return this.norm('mid.out', x.add(this.drop(this.ffn('mid.mlp', x, training), training)));
  }

  /**
   * Encoded mid-term keys [n, d] of the given events from their behavior features [n, featureDim] and mid-term
   * positions — per event exactly what encode computes for the whole stream (inference: no dropout).
   */
  encodeMidRows(features: T, positions: Int32Array): T {
    return this.midMlp(this.behaviorMlp(features, false).add(gatherRows(this.v('mid.pos'), positions)), false);
  }

  /** Repeats each user's memories `times` times (beam search: one row per beam). */
  tile(enc: EncodedStreams, times: number): EncodedStreams {
    if (times === 1) return enc;
    if (enc.midLazy) throw new Error('GEMs tile: a lazily encoded mid-term stream cannot be tiled');
    const idx = Int32Array.from({ length: enc.B * times }, (_, i) => Math.floor(i / times));
    const idxT = tf.tensor1d(idx, 'int32');
    const mem: EncodedStreams['mem'] = {};
    for (const [k, m] of Object.entries(enc.mem) as [StreamName | 'all', Memory][]) {
      const Lk = m.valid.length / enc.B;
      const valid = new Uint8Array(idx.length * Lk);
      idx.forEach((u, i) => valid.set(m.valid.subarray(u * Lk, (u + 1) * Lk), i * Lk));
      mem[k] = { keys: tf.gather(m.keys, idxT), bias: tf.gather(m.bias, idxT), valid, features: m.features && tf.gather(m.features, idxT) };
    }
    return { B: enc.B * times, mem };
  }

  // ---- indexer ----------------------------------------------------------------------------------------------

  /**
   * The indexer's keys [B, Lk, dim] of the mid-term stream, from detached inputs (the indexer learns only from its
   * KL): the events' behavior features plus a per-position vector (cfg.indexerKeys 'features'), or the encoded keys.
   */
  indexerKeys(layer: number, m: { keys?: T; features?: T }): T {
    const wk = this.v(`dec${layer}.indexer.wk`);
    if (!this.indexerOnFeatures) return dense(stopGradient(m.keys!), wk);
    if (!m.features) throw new Error('GEMs indexer: the mid-term memory has no behavior features (encoded without them)');
    const pos = this.v(`dec${layer}.indexer.pos`);
    return dense(stopGradient(m.features), wk).add(pos.reshape([1, this.midLen, this.cfg.indexer.dim]));
  }

  /** Indexer scores [B, Lq, Lk] from detached queries and the indexer's keys `ki` [B, Lk, dim] (indexerKeys). */
  indexerScores(layer: number, q: T, ki: T): T {
    const ix = this.cfg.indexer;
    const [B, Lq] = q.shape as [number, number, number];
    const Lk = ki.shape[1]!;
    const qd = stopGradient(q);
    const qi = dense(qd, this.v(`dec${layer}.indexer.wq`)).reshape([B, Lq * ix.heads, ix.dim]);
    const dots = tf.relu(tf.matMul(qi, ki, false, true)).reshape([B, Lq, ix.heads, Lk]);
    const w = dense(qd, this.v(`dec${layer}.indexer.ww`)).reshape([B, Lq, ix.heads, 1]);
    return dots.mul(w).sum(2);
  }

  /** Additive mask [B,1,Lq,Lk] keeping each query's top-k valid keys by indexer score (a constant: no gradient). */
  static topKBias(scores: Float32Array, valid: Uint8Array, B: number, Lq: number, Lk: number, k: number): T {
    const out = new Float32Array(B * Lq * Lk).fill(-1e9);
    const validKeys = Array.from({ length: B }, (_, b) => {
      const keys: number[] = [];
      for (let j = 0; j < Lk; j++) if (valid[b * Lk + j]) keys.push(j);
      return keys;
    });
    // Quickselect per row (selectTopK), not a sort: dense training has B·T_recent·W query rows per batch.
    const kk = Math.min(k, Lk);
    const sel = selectTopK(scores, validKeys, Lq, Lk, kk);
    for (let r = 0; r < B * Lq; r++) {
      for (let i = 0; i < kk; i++) {
        const j = sel[r * kk + i]!;
        if (j >= 0) out[r * Lk + j] = 0;
      }
    }
    return tf.tensor4d(out, [B, 1, Lq, Lk]);
  }


  // ---- decoder ----------------------------------------------------------------------------------------------

  /**
   * What the BOS position adds to `dec.bos` (bosFromRecent): per decoder row, the recent encoder's output at the
   * newest event it may see — window row i in dense training (`perUser` rows a user), else the last position (the
   * newest recent event; zero for a user without recent events), repeated for the user's `rowsPerUser` rows.
   */
  private bosState(enc: EncodedStreams, rowsPerUser: number, perUser?: number): T | null {
    const m = enc.mem.recent;
    if (!this.cfg.bosFromRecent || !this.cfg.recentCausal || !m) return null;
    const { d, tRecent: T } = this.cfg;
    const U = enc.B;
    if (perUser !== undefined) return m.keys.reshape([U * perUser, 1, d]);
    const present = Float32Array.from({ length: U }, (_, u) => m.valid[u * T + T - 1]!);
    const last = m.keys.slice([0, T - 1, 0], [U, 1, d]).mul(tf.tensor3d(present, [U, 1, 1]));
    if (rowsPerUser === 1) return last;
    return tf.gather(last, tf.tensor1d(Int32Array.from({ length: U * rowsPerUser }, (_, i) => Math.floor(i / rowsPerUser)), 'int32'));
  }

  /**
   * Decoder input embeddings for prefixes: `codes` is B × (len-1) (the codes after BOS); `state` is added to BOS.
   * `padRows`: rows may be dense training's empty targets (zero codes, not a Semantic ID).
   */
  private decoderInput(codes: Int32Array, B: number, len: number, state: T | null = null, padRows = false, returnRows?: Uint8Array | 'all'): T {
    const { d } = this.cfg;
    let bos = tf.zeros([B, 1, d]).add(this.v('dec.bos').reshape([1, 1, d]));
    if (returnRows) {
      if (!this.cfg.returnIntent) throw new Error('GEMs decoder: a return intent needs a model trained with returnIntent');
      const ret = this.v('dec.return').reshape([1, 1, d]);
      bos = bos.add(returnRows === 'all' ? ret : tf.tensor3d(Float32Array.from(returnRows), [B, 1, 1]).mul(ret));
    }
    const parts: T[] = [state ? bos.add(state) : bos];
    const nodes = this.trie && len > 2 ? this.prefixNodes(codes, B, len - 1, len - 1, padRows) : null;
    for (let p = 1; p < len; p++) {
      const col = Int32Array.from({ length: B }, (_, b) => codes[b * (len - 1) + (p - 1)]!);
      let e = gatherRows(this.v(`code${p - 1}`), col);
      if (nodes && p >= 2) e = e.add(gatherRows(this.v('code.node'), nodes[p - 1]!));
      parts.push(e.reshape([B, 1, d]));
    }
    const x = parts.length === 1 ? parts[0]! : tf.concat(parts, 1);
    return x.add(this.v('dec.pos').slice([0, 0], [len, d]).reshape([1, len, d]));
  }

  /** Runs the decoder over prefixes [BOS, codes…] of length `len` (1..W). */
  decode(enc: EncodedStreams, codes: Int32Array, len: number, opts: ForwardOptions, dense?: DenseTargets): DecodeResult {
    const c = this.cfg;
    const R = opts.rowsPerUser ?? 1;
    // Dense targets always take the training formulation (masked attention), also without dropout.
    const inference = !opts.training && !opts.indexerLoss && !dense;
    if (R !== 1 && (!inference || opts.topKMode === 'mask')) throw new Error('GEMs decode: rowsPerUser > 1 is for inference without topKMode mask only');
    const U = enc.B;
    const P = dense?.perUser ?? 1;
    const B = U * R * P;
    // Dense: cross-attention queries per user = its P target rows × len positions (keys are never copied per row).
    const Bq = dense ? U : B;
    const Lq = P * len;
    const fold = (q: T) => (dense ? q.reshape([U, Lq, c.d]) : q);
    const unfold = (o: T) => (dense ? o.reshape([B, len, c.d]) : o);
    let h = this.drop(this.decoderInput(codes, B, len, this.bosState(enc, R, dense?.perUser), dense !== undefined, dense?.returnRows), opts.training);
    const kls: T[] = [];
    const names = this.enabledStreams;
    const massAcc = opts.wantMass ? new Float32Array(B * names.length) : undefined;
    for (let l = 0; l < c.decoderLayers; l++) {
      const pre = `dec${l}`;
      const s = this.norm(`${pre}.norm_self`, h);
      if (inference && opts.lastOnly && len > 1 && l === c.decoderLayers - 1) {
        // The last position attends to every position (causality allows all of them): no mask needed.
        h = h.slice([0, len - 1, 0], [B, 1, -1]).add(attention(s.slice([0, len - 1, 0], [B, 1, -1]), s, this.attn(`${pre}.self`), c.heads).out);
      } else h = h.add(this.drop(attention(s, s, this.attn(`${pre}.self`), c.heads, this.causalMask(len)).out, opts.training));
      if (c.fusion === 'sum' || c.fusion === 'gated') {
        const outs: T[] = [];
        for (const name of names) {
          const m = enc.mem[name]!;
          const q = this.norm(`${pre}.norm_${name}`, h);
          if (inference && opts.topKMode !== 'mask') {
            const Lk = m.valid.length / U;
            const kv = this.projected(enc, l, name);
            const p = this.attn(`${pre}.x_${name}`);
            if (name === 'mid' && this.hasIndexer && opts.topK > 0 && opts.topK < Lk) outs.push(this.gatherAttention(l, q, kv, m, U, R, opts.topK, p));
            else outs.push(foldedAttention(q, kv, p, c.heads, m.bias, U, R));
          } else if (name === 'mid' && this.hasIndexer && (opts.indexerLoss || opts.topK > 0)) {
            const Lk = this.midLen;
            const qf = fold(q);
            const scores = this.indexerScores(l, qf, this.indexerKeys(l, m)).add(m.bias.reshape([Bq, 1, Lk]));
            let bias = m.bias;
            if (opts.topK > 0 && opts.topK < Lk) bias = GemsModel.topKBias(scores.dataSync() as Float32Array, m.valid, Bq, Lq, Lk, opts.topK);
            const { out, probs } = attention(qf, m.keys, this.attn(`${pre}.x_${name}`), c.heads, bias, true);
            if (opts.indexerLoss) kls.push(indexerKl(probs!, scores.add(bias.reshape([Bq, bias.shape[2]!, Lk])), m.valid, Bq, Lq, Lk));
            outs.push(unfold(out));
          } else {
            const bias = (name === 'recent' && dense?.bias.recent) || m.bias;
            outs.push(unfold(attention(fold(q), m.keys, this.attn(`${pre}.x_${name}`), c.heads, bias).out));
          }
        }
        if (massAcc) accumulateMass(massAcc, outs, names.map((s) => enc.mem[s]!.valid), U, R);
        h = h.add(this.drop(this.fuse(pre, h, outs), opts.training));
      } else {
        const m = enc.mem.all!;
        const q = this.norm(`${pre}.norm_all`, h);
        const out = inference
          ? foldedAttention(q, this.projected(enc, l, 'all'), this.attn(`${pre}.x_all`), c.heads, m.bias, U, R)
          : unfold(attention(fold(q), m.keys, this.attn(`${pre}.x_all`), c.heads, dense?.bias.all ?? m.bias).out);
        if (massAcc) fillUsedShares(massAcc, names.map((s) => streamValid(enc, s, U)), U, R);
        h = h.add(this.drop(out, opts.training));
      }
      h = h.add(this.drop(this.ffn(`${pre}.ffn`, this.norm(`${pre}.norm_ffn`, h), opts.training), opts.training));
    }
    const res: DecodeResult = { hidden: this.norm('dec.out', h) };
    if (kls.length) res.kl = tf.addN(kls).div(kls.length);
    if (massAcc) res.mass = normaliseMass(massAcc, B, names.length);
    return res;
  }

  /**
   * Projects every cross-attention's keys and values (and the indexer's keys) once per user, for repeated decoder
   * calls on the same encoded streams (beam search levels and beams). The result shares `mem` with `enc`.
   * `lazyMid`: of the mid-term stream only the indexer's keys (decodeStep with selection 'user', 'request' or
   * 'shared' projects the selected keys' keys/values per step instead of all T_mid − T_recent of them; a lazily encoded stream —
   * encode lazyMid — must be prepared so, and its selected keys are encoded first).
   */
  prepare(enc: EncodedStreams, opts: { lazyMid?: boolean; selection?: IndexerSelection } = {}): EncodedStreams {
    const proj = new Map<string, ProjectedMemory>();
    const out: EncodedStreams = { B: enc.B, mem: enc.mem, proj };
    const fused = this.cfg.fusion === 'sum' || this.cfg.fusion === 'gated';
    const lazy = opts.lazyMid === true && this.hasIndexer;
    if (enc.midLazy && !lazy) throw new Error('GEMs prepare: a lazily encoded mid-term stream needs prepare lazyMid (indexer selection \'user\', \'request\' or \'shared\')');
    if (lazy) {
      out.midLazy = enc.midLazy;
      out.indexKeys = new Map();
      out.midKeysHost = (enc.midLazy?.features ?? enc.mem.mid!.keys).dataSync() as Float32Array;
      if (enc.midLazy) out.midEncoded = rowCache(enc.midLazy.valid.length, [this.cfg.d]);
      out.midProjected = new Map();
      out.midSelection = new Map();
      out.midSelectionShared = opts.selection === 'shared';
    }
    for (let l = 0; l < this.cfg.decoderLayers; l++) {
      for (const name of fused ? this.enabledStreams : (['all'] as const)) {
        if (lazy && name === 'mid') {
          if (l === 0 || !out.midSelectionShared) out.indexKeys!.set(l, this.indexerKeys(l, enc.midLazy ?? enc.mem.mid!));
        }
        else proj.set(`${l}.${name}`, this.projected(enc, l, name));
      }
    }
    return out;
  }

  /**
   * Encoded mid-term keys [rows, d] for key indices u·Lk + j (prepare lazyMid): copied from the host keys, or — for a
   * lazily encoded stream — encoded from the host behavior features for the keys not encoded earlier in this search.
   */
  private midKeyRows(enc: EncodedStreams, rows: Int32Array): T {
    const { d } = this.cfg;
    const host = enc.midKeysHost!;
    const cache = enc.midEncoded;
    if (!cache) return tf.tensor2d(copyRows(host, rows, d), [rows.length, d]);
    const F = this.featureDim;
    const Lk = this.midLen;
    fillRows(cache, rows, (fresh) => [this.encodeMidRows(tf.tensor2d(copyRows(host, fresh, F), [fresh.length, F]), fresh.map((r) => r % Lk))]);
    return tf.tensor2d(copyRows(cache.bufs[0]!, rows.map((r) => cache.slot[r]!), d), [rows.length, d]);
  }

  /**
   * Frees what a search kept beyond its scopes in prepared streams (selection 'request' / 'shared': the selected
   * keys/values).
   */
  release(prepared: EncodedStreams): void {
    for (const s of prepared.midSelection?.values() ?? []) {
      s.kv?.Kh.dispose();
      s.kv?.Vh.dispose();
      delete s.kv;
    }
  }

  /** The layer's cache of projected mid-term keys for this search (prepare lazyMid), created on first use. */
  private projectionCache(enc: EncodedStreams, layer: number, keys: number): RowCache {
    let c = enc.midProjected!.get(layer);
    if (!c) {
      c = rowCache(keys, [this.cfg.d, this.cfg.d]);
      enc.midProjected!.set(layer, c);
    }
    return c;
  }

  /**
   * Mean encoded mid-term key [U, 1, d] of each listed user over all its Lk keys (uniform attention; others 0). The
   * listed users have no mid-term event, so on a lazily encoded stream their keys are all padding: the same for
   * every user (see paddingMidMean), not encoded per request.
   */
  private midKeyMeans(enc: EncodedStreams, users: Uint8Array): T {
    const m = enc.mem.mid;
    if (m) return m.keys.mean(1, true);
    const pad = this.paddingMidMean();
    return tf.stack(Array.from(users, (on) => (on ? pad : tf.zeros([this.cfg.d])))).reshape([users.length, 1, this.cfg.d]);
  }

  /**
   * Mean [d] of the encoded mid-term keys of a stream that is all padding: padding events have all-zero features,
   * so their keys differ only by position and the mean is a constant of the weights. Encoding all T_mid − T_recent
   * padding keys per request would cost a user without mid-term events what brute force costs, so it is computed
   * once and kept until a parameter changes (an optimizer's assign gives a variable a new data id, which is what
   * the cache compares).
   */
  private paddingMidMean(): T {
    const from = [...this.params.vars.values()].map((v) => v.dataId);
    const hit = this.paddingMean;
    if (hit && hit.from.length === from.length && hit.from.every((id, i) => id === from[i])) return hit.mean;
    hit?.mean.dispose();
    const Lk = this.midLen;
    const mean = tf.tidy(() => {
      const row = this.behaviorFeatures(emptyStreamBatch(1, 1, this.cfg.features)); // [1, F]
      return this.encodeMidRows(tf.tile(row, [Lk, 1]), Int32Array.from({ length: Lk }, (_, j) => j)).mean(0);
    });
    this.paddingMean = { from, mean: tf.keep(mean) };
    return mean;
  }

  private projected(enc: EncodedStreams, layer: number, name: StreamName | 'all'): ProjectedMemory {
    const hit = enc.proj?.get(`${layer}.${name}`);
    if (hit) return hit;
    const m = enc.mem[name]!;
    const p = this.attn(`dec${layer}.x_${name}`);
    const K = dense(m.keys, p.wk, p.bk);
    const V = dense(m.keys, p.wv, p.bv);
    const [U, Lk, hd] = K.shape as [number, number, number];
    const split = (x: T) => x.reshape([U, Lk, this.cfg.heads, hd / this.cfg.heads]).transpose([0, 2, 1, 3]);
    const pm: ProjectedMemory = { K, V, Kh: split(K), Vh: split(V) };
    if (name === 'mid' && this.hasIndexer) pm.ki = this.indexerKeys(layer, m);
    return pm;
  }

  /**
   * Mid-term cross-attention over only each query's top-k keys by indexer score (inference). The indexer scores all
   * keys (cheap: few heads, small dim); per user, the union of the keys its queries (beams × positions) selected is
   * gathered once — beams of a user mostly pick the same keys, so the union is far smaller than T_mid — and each
   * query attends over that union with every key it did not select masked. That is exactly full attention with the
   * unselected keys masked (the training formulation), at the cost of |union| keys instead of all of them. A user with
   * no valid key attends uniformly over all (padding) keys, as the masked formulation does.
   */
  private gatherAttention(layer: number, q: T, kv: ProjectedMemory, m: Memory, U: number, R: number, k: number, p: AttentionParams): T {
    const { heads } = this.cfg;
    const ix = this.cfg.indexer;
    const Lq = q.shape[1]!;
    const Lk = m.valid.length / U;
    const hd = kv.K.shape[2]!;
    const dh = hd / heads;
    const rows = R * Lq; // query rows per user (beams folded into the query axis)
    const validKeys = Array.from({ length: U }, (_, u) => {
      const out: number[] = [];
      for (let j = 0; j < Lk; j++) if (m.valid[u * Lk + j]) out.push(j);
      return out;
    });
    // No user has more than k valid keys: top-k keeps them all, which is plain attention over the valid keys.
    if (validKeys.every((v) => v.length <= k)) return foldedAttention(q, kv, p, heads, m.bias, U, R);
    const qi = dense(q, this.v(`dec${layer}.indexer.wq`)).reshape([U, rows * ix.heads, ix.dim]);
    const dots = tf.relu(tf.matMul(qi, kv.ki!, false, true)).reshape([U, rows, ix.heads, Lk]);
    const w = dense(q, this.v(`dec${layer}.indexer.ww`)).reshape([U, rows, ix.heads, 1]);
    const scores = dots.mul(w).sum(2).dataSync() as Float32Array; // [U, rows, Lk]
    const sel = selectTopK(scores, validKeys, rows, Lk, k); // per (user, row): selected key indices, -1 padded
    // Per user: the union of selected keys (ascending), and each row's allowed positions in it.
    const slot = new Int32Array(Lk);
    const unions: number[][] = [];
    for (let u = 0; u < U; u++) {
      slot.fill(-1);
      const keys: number[] = [];
      for (let i = u * rows * k; i < (u + 1) * rows * k; i++) {
        const j = sel[i]!;
        if (j >= 0 && slot[j] === -1) {
          slot[j] = 0;
          keys.push(j);
        }
      }
      unions.push(keys.sort((a, b) => a - b));
    }
    const width = Math.max(1, ...unions.map((x) => x.length));
    const flat = new Int32Array(U * width);
    const bias = new Float32Array(U * rows * width).fill(-1e9);
    const empty = new Uint8Array(U);
    for (let u = 0; u < U; u++) {
      const keys = unions[u]!;
      if (keys.length === 0) empty[u] = 1;
      slot.fill(-1);
      keys.forEach((j, c) => {
        slot[j] = c;
        flat[u * width + c] = u * Lk + j;
      });
      for (let r = 0; r < rows; r++) {
        for (let i = 0; i < k; i++) {
          const j = sel[(u * rows + r) * k + i]!;
          if (j >= 0) bias[(u * rows + r) * width + slot[j]!] = 0;
        }
      }
    }
    const idx = tf.tensor1d(flat, 'int32');
    const split = (x: T) => tf.gather(x.reshape([U * Lk, hd]), idx).reshape([U, width, heads, dh]).transpose([0, 2, 1, 3]);
    const Q = dense(q, p.wq, p.bq).reshape([U, rows, heads, dh]).transpose([0, 2, 1, 3]);
    const probs = tf.softmax(tf.matMul(Q, split(kv.K), false, true).mul(1 / Math.sqrt(dh)).add(tf.tensor4d(bias, [U, 1, rows, width])), -1);
    let ctx = tf.matMul(probs, split(kv.V)).transpose([0, 2, 1, 3]).reshape([U, rows, hd]);
    if (empty.some((x) => x)) ctx = withEmptyUsers(ctx, kv.V.mean(1, true), empty);
    return dense(ctx.reshape([U * R, Lq, hd]), p.wo, p.bo);
  }

  /**
   * One incremental decoder step (inference; beam search): runs only the newest position `level` of each of the
   * B = U·R rows, with the earlier positions' self-attention keys/values taken from `cache` (rows reordered by
   * `parents`: row i continues the previous step's row parents[i]). Causal decoding makes this exactly the last
   * position of decode() over the whole prefix. `codes` are the rows' codes of level − 1 (null at level 0).
   * Returns the next-code log-probabilities [B, sizes[level]] and the extended cache (not kept: the caller keeps it).
   */
  decodeStep(enc: EncodedStreams, cache: DecoderCache | null, parents: Int32Array | null, codes: Int32Array | null, level: number, opts: StepOptions): { logp: T; mass?: Float32Array; cache: DecoderCache } {
    const c = this.cfg;
    const { d, heads } = c;
    const R = opts.rowsPerUser ?? 1;
    const U = enc.B;
    const B = U * R;
    const dh = d / heads;
    if (level > 0 && (!cache || !parents || !codes)) throw new Error('GEMs decodeStep: level > 0 needs the cache, parents and codes');
    const pos = this.v('dec.pos').slice([level, 0], [1, d]).reshape([1, 1, d]);
    const nodes = this.trie && level > 0 ? opts.prefixNodes : undefined;
    if (this.trie && level > 0 && nodes?.length !== B) throw new Error('GEMs decodeStep: prefix embeddings need opts.prefixNodes (the trie node of each row\'s prefix)');
    let h: T;
    if (level === 0) h = this.decoderInput(new Int32Array(0), B, 1, this.bosState(enc, R), false, opts.returnIntent ? 'all' : undefined);
    else {
      let e = gatherRows(this.v(`code${level - 1}`), codes!);
      if (nodes && level >= 2) e = e.add(gatherRows(this.v('code.node'), nodes));
      h = e.reshape([B, 1, d]).add(pos);
    }
    const parentIdx = parents ? tf.tensor1d(parents, 'int32') : null;
    const next: DecoderCache = { K: [], V: [] };
    const names = this.enabledStreams;
    const massAcc = opts.wantMass ? new Float32Array(B * names.length) : undefined;
    const split = (x: T) => x.reshape([B, -1, heads, dh]).transpose([0, 2, 1, 3]);
    for (let l = 0; l < c.decoderLayers; l++) {
      const pre = `dec${l}`;
      const s = this.norm(`${pre}.norm_self`, h);
      const p = this.attn(`${pre}.self`);
      let K = dense(s, p.wk, p.bk);
      let V = dense(s, p.wv, p.bv);
      if (cache && parentIdx) {
        K = tf.concat([tf.gather(cache.K[l]!, parentIdx), K], 1);
        V = tf.concat([tf.gather(cache.V[l]!, parentIdx), V], 1);
      }
      next.K.push(K);
      next.V.push(V);
      const Q = split(dense(s, p.wq, p.bq));
      const probs = tf.softmax(tf.matMul(Q, split(K), false, true).mul(1 / Math.sqrt(dh)), -1);
      h = h.add(dense(tf.matMul(probs, split(V)).transpose([0, 2, 1, 3]).reshape([B, 1, d]), p.wo, p.bo));
      if (c.fusion === 'sum' || c.fusion === 'gated') {
        const outs: T[] = [];
        for (const name of names) {
          const q = this.norm(`${pre}.norm_${name}`, h);
          const pa = this.attn(`${pre}.x_${name}`);
          const lazy = name === 'mid' && enc.indexKeys !== undefined;
          const { bias, valid } = streamMasks(enc, name);
          const Lk = valid.length / U;
          // Lazy mid-term keys: the per-user path also serves k ≥ keys (it then takes every valid key).
          const select = name === 'mid' && this.hasIndexer && opts.topK > 0 && (opts.topK < Lk || lazy);
          const selection = opts.selection ?? 'user';
          if (select && selection !== 'query') {
            const kv = lazy ? { cache: this.projectionCache(enc, l, U * Lk) } : this.projected(enc, l, name);
            const kept = selectsOnce(selection);
            const reuse = kept ? enc.midSelection : undefined;
            if (kept && !reuse) throw new Error(`GEMs decodeStep: selection '${selection}' needs the streams prepared with lazyMid`);
            if (kept && (selection === 'shared') !== (enc.midSelectionShared === true)) throw new Error(`GEMs decodeStep: selection '${selection}' on streams prepared for selection ${enc.midSelectionShared ? "'shared'" : 'per layer'}`);
            outs.push(this.userTopKAttention(enc, l, q, { bias, valid }, lazy ? enc.indexKeys!.get(l) : (kv as ProjectedMemory).ki!, kv, U, R, opts.topK, pa, reuse));
          }
          else if (lazy) throw new Error(`GEMs decodeStep: mid-term keys/values were not projected (prepare lazyMid) but selection is ${select ? "'query'" : 'off'}`);
          else if (select) outs.push(this.gatherAttention(l, q, this.projected(enc, l, name), enc.mem[name]!, U, R, opts.topK, pa));
          else outs.push(foldedAttention(q, this.projected(enc, l, name), pa, heads, bias, U, R));
        }
        if (massAcc) accumulateMass(massAcc, outs, names.map((s) => streamMasks(enc, s).valid), U, R);
        h = h.add(this.fuse(pre, h, outs));
      } else {
        const m = enc.mem.all!;
        h = h.add(foldedAttention(this.norm(`${pre}.norm_all`, h), this.projected(enc, l, 'all'), this.attn(`${pre}.x_all`), heads, m.bias, U, R));
        if (massAcc) fillUsedShares(massAcc, names.map((s) => streamValid(enc, s, U)), U, R);
      }
      h = h.add(this.ffn(`${pre}.ffn`, this.norm(`${pre}.norm_ffn`, h), false));
    }
    const last = this.norm('dec.out', h).reshape([B, d]);
    const res: { logp: T; mass?: Float32Array; cache: DecoderCache } = { logp: logSoftmaxLast(this.levelLogits(last, level, nodes)), cache: next };
    if (massAcc) res.mass = normaliseMass(massAcc, B, names.length);
    return res;
  }

  /**
   * Mid-term cross-attention with one top-k key set per user (inference, one query position per row): the indexer
   * scores every key for every row of the user; keys are ranked by the indexer's attention mass summed over the
   * rows (Σ_r softmax_j(score_rj) over the valid keys; with a single row, by the row's scores — then this is exactly
   * the per-query top-k); ties → lower index; all valid keys when there are ≤ k. Only the selected keys are gathered
   * (`kv` = the projected keys/values, or a cache that projects — and for a lazily encoded stream first encodes — only
   * the selected keys), so the cost is O(k) per row plus the indexer's O(T) scoring. With `reuse` (selection
   * 'request') a layer's selection is made once and kept: later calls skip the scoring; with selection 'shared'
   * (`enc.midSelectionShared`) the later layers take the first layer's key set.
   * A user with no valid key attends uniformly over all (padding) keys, as the masked formulation does.
   */
  private userTopKAttention(
    enc: EncodedStreams,
    layer: number,
    q: T,
    m: { bias: T; valid: Uint8Array },
    ki: T | undefined,
    kv: ProjectedMemory | { cache: RowCache },
    U: number,
    R: number,
    k: number,
    p: AttentionParams,
    reuse?: Map<number, UserSelection>,
  ): T {
    const { heads } = this.cfg;
    const Lq = q.shape[1]!;
    const rows = R * Lq;
    const Lk = m.valid.length / U;
    const hd = p.wq.shape[1]!;
    const dh = hd / heads;
    let sel = reuse?.get(layer);
    if (!sel) {
      const first = enc.midSelectionShared && layer > 0 ? reuse?.get(0) : undefined;
      // A shared key set gets this layer's own keys/values (sel.kv), so only the key indices are copied.
      if (first) sel = { flat: first.flat, bias: first.bias, width: first.width, empty: first.empty };
      else if (ki) sel = this.selectUserKeys(layer, q, m, ki, U, rows, k);
      else throw new Error(`GEMs: decoder layer ${layer} has no indexer keys and no shared selection to reuse`);
      reuse?.set(layer, sel);
    }
    const { flat, bias, width, empty } = sel;
    const splitH = (x: T) => x.reshape([U, width, heads, dh]).transpose([0, 2, 1, 3]);
    let Kg: T;
    let Vg: T;
    if (sel.kv) [Kg, Vg] = [sel.kv.Kh, sel.kv.Vh];
    else if (!('cache' in kv)) {
      const idx = tf.tensor1d(flat, 'int32');
      Kg = tf.gather(kv.K.reshape([U * Lk, hd]), idx);
      Vg = tf.gather(kv.V.reshape([U * Lk, hd]), idx);
    } else {
      // Keys/values projected only for selected keys not projected earlier in this search: O(new keys · d²), not O(T·d²).
      const { cache } = kv;
      fillRows(cache, flat.filter((_, i) => bias[i] === 0), (fresh) => {
        const x = this.midKeyRows(enc, fresh);
        return [dense(x, p.wk, p.bk), dense(x, p.wv, p.bv)];
      });
      const kh = new Float32Array(U * width * hd);
      const vh = new Float32Array(U * width * hd);
      const [Kc, Vc] = cache.bufs as [Float32Array, Float32Array];
      for (let i = 0; i < flat.length; i++) {
        if (bias[i] !== 0) continue; // padding slot: masked, its row stays zero
        const r = cache.slot[flat[i]!]!;
        kh.set(Kc.subarray(r * hd, (r + 1) * hd), i * hd);
        vh.set(Vc.subarray(r * hd, (r + 1) * hd), i * hd);
      }
      Kg = tf.tensor2d(kh, [U * width, hd]);
      Vg = tf.tensor2d(vh, [U * width, hd]);
    }
    if (!sel.kv) {
      [Kg, Vg] = [splitH(Kg), splitH(Vg)];
      if (reuse) sel.kv = { Kh: tf.keep(Kg), Vh: tf.keep(Vg) };
    }
    const Q = dense(q, p.wq, p.bq).reshape([U, rows, heads, dh]).transpose([0, 2, 1, 3]);
    const probs = tf.softmax(tf.matMul(Q, Kg, false, true).mul(1 / Math.sqrt(dh)).add(tf.tensor4d(bias, [U, 1, 1, width])), -1);
    let ctx = tf.matMul(probs, Vg).transpose([0, 2, 1, 3]).reshape([U, rows, hd]);
    if (empty.some((x) => x)) {
      // Uniform attention over all keys: the mean of the values = the projection of the mean key (linear).
      ctx = withEmptyUsers(ctx, 'cache' in kv ? dense(this.midKeyMeans(enc, empty), p.wv, p.bv) : kv.V.mean(1, true), empty);
    }
    return dense(ctx.reshape([U * R, Lq, hd]), p.wo, p.bo);
  }

  /** userTopKAttention's key set per user: the top-k valid keys by the indexer mass of the user's `rows` queries. */
  private selectUserKeys(layer: number, q: T, m: { bias: T; valid: Uint8Array }, ki: T, U: number, rows: number, k: number): UserSelection {
    const ix = this.cfg.indexer;
    const Lk = m.valid.length / U;
    const qi = dense(q, this.v(`dec${layer}.indexer.wq`)).reshape([U, rows * ix.heads, ix.dim]);
    const dots = tf.relu(tf.matMul(qi, ki, false, true)).reshape([U * rows, ix.heads, Lk]);
    const w = dense(q, this.v(`dec${layer}.indexer.ww`)).reshape([U * rows, 1, ix.heads]);
    const scores = tf.matMul(w, dots).reshape([U, rows, Lk]); // Σ_h w_h · ReLU(q_h · k)
    // Σ over the user's rows of softmax over its valid keys (as a [1 × rows] · [rows × Lk] product).
    const mass = () => tf.matMul(tf.ones([U, 1, rows]), tf.softmax(scores.add(m.bias.reshape([U, 1, Lk])), -1));
    const rank = (rows === 1 ? scores : mass()).dataSync() as Float32Array; // [U, Lk]
    const validKeys = validKeyLists(m.valid, U);
    const top = selectTopK(rank, validKeys, 1, Lk, k); // [U, k], -1 padded
    const width = Math.max(1, ...validKeys.map((v) => Math.min(k, v.length)));
    const flat = new Int32Array(U * width);
    const bias = new Float32Array(U * width).fill(-1e9);
    const empty = new Uint8Array(U);
    for (let u = 0; u < U; u++) {
      if (validKeys[u]!.length === 0) empty[u] = 1;
      const chosen = Array.from(top.subarray(u * k, u * k + width)).filter((j) => j >= 0).sort((a, b) => a - b);
      for (let c = 0; c < width; c++) {
        const j = chosen[c];
        flat[u * width + c] = u * Lk + (j ?? 0);
        if (j !== undefined) bias[u * width + c] = 0;
      }
    }
    return { flat, bias, width, empty };
  }

  /** Fusion of the per-stream cross-attention outputs (sum: no parameters; gated: learned softmax gate). */
  fuse(prefix: string, h: T, outs: T[]): T {
    if (this.cfg.fusion === 'gated') {
      const g = tf.softmax(dense(h, this.v(`${prefix}.gate.w`), this.v(`${prefix}.gate.b`)), -1); // [B,L,S]
      return tf.addN(outs.map((o, i) => o.mul(g.slice([0, 0, i], [-1, -1, 1]))));
    }
    return outs.length === 1 ? outs[0]! : tf.addN(outs);
  }

  /**
   * Logits [n, sizes[level]] of the next code from hidden states h [n, d]. With prefix embeddings, `parents` (levels
   * ≥ 1) holds each row's trie node before this code, and code c scores h·(codebook[c] + node[child(parent, c)]).
   */
  levelLogits(h: T, level: number, parents?: Int32Array): T {
    const base = matMul2d(h, this.v(`code${level}`), true);
    if (!this.trie || level === 0) return base;
    if (!parents) throw new Error(`GEMs levelLogits: level ${level} needs each row's parent trie node (prefix embeddings)`);
    const n = parents.length;
    const S = this.cfg.sizes[level]!;
    const { d } = this.cfg;
    const children = this.childNodes(parents, S);
    const nodeEmb = gatherRows(this.v('code.node'), children).reshape([n, S, d]);
    return base.add(nodeEmb.mul(h.reshape([n, 1, d])).sum(-1));
  }

  /** n × S: the trie child of each parent node by code (the root, 0, where that child does not exist). */
  private childNodes(parents: Int32Array, S: number): Int32Array {
    const trie = this.trie!;
    const out = new Int32Array(parents.length * S);
    parents.forEach((node, b) => {
      const { codes, nodes } = trie.children(node);
      for (let i = 0; i < codes.length; i++) out[b * S + codes[i]!] = nodes.start + i;
    });
    return out;
  }

  /**
   * Trie nodes of rows' prefixes: `codes` is rows × stride (stride ≥ width); out[p][b] = node of row b's first
   * p + 1 codes, p < width. A prefix no item has is an error (it has no embedding), except with `padRows` (dense
   * training's empty target rows, whose codes are zeros and whose outputs are dropped): those get the root's row.
   */
  private prefixNodes(codes: Int32Array, rows: number, width: number, stride = width, padRows = false): Int32Array[] {
    const trie = this.trie!;
    const out = Array.from({ length: width }, () => new Int32Array(rows));
    for (let b = 0; b < rows; b++) {
      let node = CodeTrie.ROOT;
      for (let p = 0; p < width; p++) {
        node = node < 0 ? node : trie.child(node, codes[b * stride + p]!);
        if (node < 0 && padRows) continue; // out[p][b] stays 0 (the root)
        if (node < 0) throw new Error(`GEMs: codes [${Array.from(codes.subarray(b * stride, b * stride + p + 1)).join(',')}] are not a Semantic-ID prefix`);
        out[p]![b] = node;
      }
    }
    return out;
  }

  /** Training loss on target codes (B × W): Σ_levels mean NLL + λ·KL. Returns the parts as scalars. */
  loss(batch: GemsBatch, targetCodes: Int32Array, opts: ForwardOptions): { total: tf.Scalar; nll: tf.Scalar; kl: tf.Scalar } {
    const B = batch.B;
    const W = this.W;
    const enc = this.encode(batch, opts.training);
    const prefix = new Int32Array(B * (W - 1));
    for (let b = 0; b < B; b++) for (let l = 0; l < W - 1; l++) prefix[b * (W - 1) + l] = targetCodes[b * W + l]!;
    const dec = this.decode(enc, prefix, W, opts);
    return this.combine(this.targetNll(dec.hidden, targetCodes).mean() as tf.Scalar, dec.kl, opts);
  }

  /**
   * Dense training loss: `batch.recent` holds each user's window of up to T_recent events (left-padded like every
   * stream) and the target of window row i is the event right after it — targetCodes (B·T_recent) × W, targetMask
   * B·T_recent. The recent encoder is causal and row i's decoder cross-attends only to window rows ≤ i, while the
   * mid-term and lifecycle streams end before the window starts; so row i sees exactly the events before its target,
   * and one encoding of the window serves T_recent targets (SASRec-style) instead of one.
   */
  denseLoss(batch: GemsBatch, targetCodes: Int32Array, targetMask: Uint8Array, opts: ForwardOptions, targetWeight?: Float32Array, returnRows?: Uint8Array): { total: tf.Scalar; nll: tf.Scalar; kl: tf.Scalar; targets: number } {
    const c = this.cfg;
    if (!GemsModel.denseTrainable(c)) throw new Error(`GEMs dense loss needs recentCausal, features.gapFrom 'prev' and a fusion other than 'shared' (got ${c.recentCausal}, ${c.features.gapFrom}, ${c.fusion})`);
    const W = this.W;
    const U = batch.B;
    const P = c.tRecent;
    if (targetMask.length !== U * P || targetCodes.length !== U * P * W) throw new Error(`GEMs dense loss: ${targetMask.length} target rows / ${targetCodes.length} codes for ${U} windows of ${P}`);
    if (targetWeight && targetWeight.length !== U * P) throw new Error(`GEMs dense loss: ${targetWeight.length} target weights for ${U * P} target rows`);
    if (returnRows && returnRows.length !== U * P) throw new Error(`GEMs dense loss: ${returnRows.length} return flags for ${U * P} target rows`);
    const enc = this.encode(batch, opts.training);
    const prefix = new Int32Array(U * P * (W - 1));
    for (let r = 0; r < U * P; r++) for (let l = 0; l < W - 1; l++) prefix[r * (W - 1) + l] = targetCodes[r * W + l]!;
    const dec = this.decode(enc, prefix, W, opts, { perUser: P, bias: this.denseBiases(enc, P, W), returnRows });
    const rows: number[] = [];
    targetMask.forEach((m, r) => m && rows.push(r));
    if (rows.length === 0) throw new Error('GEMs dense loss: no valid target in the batch');
    const hidden = gatherRows(dec.hidden.reshape([U * P, W * c.d]), Int32Array.from(rows)).reshape([rows.length, W, c.d]);
    const codes = new Int32Array(rows.length * W);
    rows.forEach((r, i) => codes.set(targetCodes.subarray(r * W, r * W + W), i * W));
    const perTarget = this.targetNll(hidden, codes);
    const nll = perTarget.mean() as tf.Scalar;
    if (!targetWeight) return { ...this.combine(nll, dec.kl, opts), targets: rows.length };
    // Weighted targets: the loss is Σ w·NLL / Σ w; the reported NLL stays the plain mean (comparable across runs).
    const w = Float32Array.from(rows, (r) => targetWeight[r]!);
    const weighted = perTarget.mul(tf.tensor1d(w)).sum().div(w.reduce((a, b) => a + b, 0)) as tf.Scalar;
    return { ...this.combine(weighted, dec.kl, opts), nll, targets: rows.length };
  }

  /**
   * Whether one encoded window can serve all its targets: the recent encoder must be causal, the time features must
   * not depend on the target (gap since the previous event), and no encoder may mix the window with other streams
   * bidirectionally ('shared' fusion does).
   */
  static denseTrainable(c: GemsModelConfig): boolean {
    return c.recentCausal === true && c.features.gapFrom === 'prev' && c.fusion !== 'shared';
  }

  /** Per-row key masks of the memories holding the recent window: row i of a user sees valid window keys ≤ i. */
  private denseBiases(enc: EncodedStreams, P: number, len: number): DenseTargets['bias'] {
    const U = enc.B;
    const build = (valid: Uint8Array, windowKeys: number): T => {
      const Lk = valid.length / U;
      const m = new Float32Array(U * P * len * Lk).fill(-1e9);
      for (let u = 0; u < U; u++) {
        for (let i = 0; i < P; i++) {
          const base = (u * P + i) * len * Lk;
          for (let j = 0; j < Lk; j++) if (valid[u * Lk + j] && (j >= windowKeys || j <= i)) m[base + j] = 0;
          for (let w = 1; w < len; w++) m.copyWithin(base + w * Lk, base, base + Lk);
        }
      }
      return tf.tensor4d(m, [U, 1, P * len, Lk]);
    };
    const out: DenseTargets['bias'] = {};
    if (enc.mem.recent) out.recent = build(enc.mem.recent.valid, P);
    // concat fusion: the recent stream's keys come first in the single memory (enabledStreams order).
    if (enc.mem.all) out.all = build(enc.mem.all.valid, this.cfg.streams.recent ? P : 0);
    return out;
  }

  /** Per target, Σ over levels of the NLL of `codes` (n × W) given decoder hidden states [n, W, d]: [n]. */
  private targetNll(hidden: T, codes: Int32Array): tf.Tensor1D {
    const W = this.W;
    const n = codes.length / W;
    const nodes = this.trie ? this.prefixNodes(codes, n, W - 1, W) : null;
    const nlls: T[] = [];
    for (let l = 0; l < W; l++) {
      const hl = hidden.slice([0, l, 0], [n, 1, this.cfg.d]).reshape([n, this.cfg.d]);
      const labels = tf.tensor1d(Int32Array.from({ length: n }, (_, b) => codes[b * W + l]!), 'int32');
      nlls.push(softmaxCrossEntropy(this.levelLogits(hl, l, nodes && l > 0 ? nodes[l - 1] : undefined) as tf.Tensor2D, labels));
    }
    return tf.addN(nlls) as tf.Tensor1D;
  }

  private combine(nll: tf.Scalar, klT: T | undefined, opts: ForwardOptions): { total: tf.Scalar; nll: tf.Scalar; kl: tf.Scalar } {
    const kl = (klT ?? tf.scalar(0)) as tf.Scalar;
    const total = (opts.indexerLoss ? nll.add(kl.mul(this.cfg.indexer.klWeight)) : nll) as tf.Scalar;
    return { total, nll, kl };
  }

  /** Log-probabilities [B, sizes[level]] of the next code after the given prefixes (B × level codes). */
  nextLogProbs(enc: EncodedStreams, prefixes: Int32Array, level: number, opts: ForwardOptions): { logp: T; mass?: Float32Array } {
    const inference = !opts.training && !opts.indexerLoss;
    const dec = this.decode(enc, prefixes, level + 1, { ...opts, lastOnly: inference });
    const rows = enc.B * (opts.rowsPerUser ?? 1);
    const last = dec.hidden.slice([0, dec.hidden.shape[1]! - 1, 0], [rows, 1, this.cfg.d]).reshape([rows, this.cfg.d]);
    const parents = this.trie && level > 0 ? this.prefixNodes(prefixes, rows, level)[level - 1] : undefined;
    return { logp: logSoftmaxLast(this.levelLogits(last, level, parents)), mass: dec.mass };
  }
}

function concatValid(vs: Uint8Array[], B: number): Uint8Array {
  const lens = vs.map((v) => v.length / B);
  const L = lens.reduce((a, b) => a + b, 0);
  const out = new Uint8Array(B * L);
  for (let b = 0; b < B; b++) {
    let off = 0;
    vs.forEach((v, i) => {
      out.set(v.subarray(b * lens[i]!, (b + 1) * lens[i]!), b * L + off);
      off += lens[i]!;
    });
  }
  return out;
}

/**
 * KL(p ‖ q) averaged over queries with at least one valid key: p = detached mean-over-heads full attention
 * [B,H,Lq,Lk], q = softmax of the (masked) indexer scores [B,Lq,Lk].
 */
function indexerKl(probs: T, scores: T, valid: Uint8Array, B: number, Lq: number, Lk: number): T {
  const p = stopGradient(probs.mean(1)); // [B,Lq,Lk]
  const logq = logSoftmaxLast(scores);
  const logp = p.add(1e-9).log();
  const rowValid = new Float32Array(B * Lq);
  let count = 0;
  for (let b = 0; b < B; b++) {
    let any = 0;
    for (let j = 0; j < Lk; j++) any |= valid[b * Lk + j]!;
    for (let q = 0; q < Lq; q++) {
      rowValid[b * Lq + q] = any;
      count += any;
    }
  }
  const kl = p.mul(logp.sub(logq)).sum(-1).mul(tf.tensor2d(rowValid, [B, Lq]));
  return kl.sum().div(Math.max(1, count));
}

const validKeyCache = new WeakMap<Uint8Array, number[][]>();

/** Per user, the indices of its valid keys (cached per validity array: memories are reused across beam levels). */
/**
 * Attention output ctx [U, rows, hd] with the rows of the users flagged in `empty` (no valid key) set to their
 * uniform-attention value [U, 1, hd]: a blend by a 0/1 mask broadcast over the rows — exact (x·1 + u·0 = x), and
 * no Tile (wasm's costs ~1 ms on [1, 100, 256], twice per layer and level).
 */
function withEmptyUsers(ctx: T, uniform: T, empty: Uint8Array): T {
  const e = tf.tensor3d(Float32Array.from(empty), [empty.length, 1, 1]);
  return ctx.mul(tf.sub(1, e)).add(uniform.mul(e));
}

function validKeyLists(valid: Uint8Array, U: number): number[][] {
  const hit = validKeyCache.get(valid);
  if (hit && hit.length === U) return hit;
  const Lk = valid.length / U;
  const lists = Array.from({ length: U }, (_, u) => {
    const out: number[] = [];
    for (let j = 0; j < Lk; j++) if (valid[u * Lk + j]) out.push(j);
    return out;
  });
  validKeyCache.set(valid, lists);
  return lists;
}

/** An empty RowCache over `keys` keys with one buffer per width. */
function rowCache(keys: number, widths: number[]): RowCache {
  return { slot: new Int32Array(keys).fill(-1), bufs: widths.map(() => new Float32Array(0)), widths, n: 0 };
}

/**
 * Computes the rows of the keys in `wanted` that `cache` does not hold yet, in one batch (`compute` maps their key
 * indices to one [n, width] tensor per buffer), and appends them to the cache.
 */
function fillRows(cache: RowCache, wanted: Int32Array, compute: (fresh: Int32Array) => T[]): void {
  const fresh: number[] = [];
  for (const row of wanted) {
    if (cache.slot[row] !== -1) continue;
    cache.slot[row] = cache.n + fresh.length;
    fresh.push(row);
  }
  if (fresh.length === 0) return;
  const n = cache.n + fresh.length;
  cache.bufs = cache.bufs.map((buf, i) => {
    const w = cache.widths[i]!;
    if (n * w <= buf.length) return buf;
    // Grow by doubling (rows are appended as later levels select new keys).
    const grown = new Float32Array(Math.max(n * w, buf.length * 2));
    grown.set(buf.subarray(0, cache.n * w));
    return grown;
  });
  tf.tidy(() => {
    compute(Int32Array.from(fresh)).forEach((t, i) => cache.bufs[i]!.set(t.dataSync() as Float32Array, cache.n * cache.widths[i]!));
  });
  cache.n = n;
}

/** Rows `rows` (of `width` floats each) of a host matrix, packed. */
function copyRows(src: Float32Array, rows: Int32Array, width: number): Float32Array {
  const out = new Float32Array(rows.length * width);
  rows.forEach((r, i) => out.set(src.subarray(r * width, (r + 1) * width), i * width));
  return out;
}

/**
 * Per user u and row r, the k valid keys with the highest score (ties → lower index, as GemsModel.topKBias), or all
 * valid keys when there are ≤ k; out[(u·rows + r)·k + i], -1 where fewer than k. Average O(valid keys) per row
 * (quickselect of the k-th largest score, then one pass).
 */
function selectTopK(scores: Float32Array, validKeys: number[][], rows: number, Lk: number, k: number): Int32Array {
  const out = new Int32Array(validKeys.length * rows * k).fill(-1);
  const buf = new Float32Array(Lk);
  validKeys.forEach((keys, u) => {
    for (let r = 0; r < rows; r++) {
      const base = (u * rows + r) * Lk;
      let o = (u * rows + r) * k;
      if (keys.length <= k) {
        for (const j of keys) out[o++] = j;
        continue;
      }
      for (let i = 0; i < keys.length; i++) buf[i] = scores[base + keys[i]!]!;
      const thr = kthLargest(buf, keys.length, k);
      let above = 0;
      for (const j of keys) if (scores[base + j]! > thr) above++;
      let ties = k - above;
      for (const j of keys) {
        const v = scores[base + j]!;
        if (v > thr) out[o++] = j;
        else if (v === thr && ties > 0) {
          out[o++] = j;
          ties--;
        }
      }
    }
  });
  return out;
}

/** The k-th largest of a[0..n) (1-based k ≤ n); reorders a. Hoare quickselect. */
function kthLargest(a: Float32Array, n: number, k: number): number {
  let lo = 0;
  let hi = n - 1;
  const target = k - 1;
  while (lo < hi) {
    const pivot = a[(lo + hi) >>> 1]!;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i]! > pivot) i++;
      while (a[j]! < pivot) j--;
      if (i <= j) {
        const t = a[i]!;
        a[i] = a[j]!;
        a[j] = t;
        i++;
        j--;
      }
    }
    if (target <= j) hi = j;
    else if (target >= i) lo = i;
    else return a[target]!;
  }
  return a[target]!;
}

/** Per user, whether a stream has any valid key (an input). */
function usedPerUser(valid: Uint8Array, U: number): Uint8Array {
  const L = valid.length / U;
  return Uint8Array.from({ length: U }, (_, u) => (valid.subarray(u * L, (u + 1) * L).some((x) => x) ? 1 : 0));
}

/** A stream's key mask and validity, also for a lazily encoded mid-term stream (which has no entry in `mem`). */
function streamMasks(enc: EncodedStreams, s: StreamName): { bias: T; valid: Uint8Array } {
  const m = enc.mem[s] ?? (s === 'mid' ? enc.midLazy : undefined);
  if (!m) throw new Error(`GEMs: stream '${s}' was not encoded`);
  return m;
}

function streamValid(enc: EncodedStreams, s: StreamName, U: number): Uint8Array {
  // Under concat/shared fusion the per-stream memories are not kept; validity is known only for 'all'.
  const m = enc.mem[s];
  return m ? usedPerUser(m.valid, U) : new Uint8Array(U).fill(1);
}

/**
 * Adds each stream's output norm at the last query position to the per-row mass. Streams without any input for a
 * user get 0 (their attention over padding still produces an output, but it explains nothing).
 */
function accumulateMass(acc: Float32Array, outs: T[], valids: Uint8Array[], U: number, R: number): void {
  const S = outs.length;
  const B = U * R;
  outs.forEach((o, s) => {
    const used = usedPerUser(valids[s]!, U);
    const norms = tf.tidy(() => o.slice([0, o.shape[1]! - 1, 0], [B, 1, -1]).square().sum(-1).sqrt().reshape([B]).dataSync());
    for (let b = 0; b < B; b++) if (used[Math.floor(b / R)]) acc[b * S + s]! += norms[b]!;
  });
}

/** Single decoder memory (concat/shared fusion): equal shares over the streams that have input. */
function fillUsedShares(acc: Float32Array, used: Uint8Array[], U: number, R: number): void {
  const S = used.length;
  for (let b = 0; b < U * R; b++) for (let s = 0; s < S; s++) acc[b * S + s] = used[s]![Math.floor(b / R)]!;
}

/** Shares summing to 1 over the streams with mass; all zero when no stream had input. */
function normaliseMass(acc: Float32Array, B: number, S: number): Float32Array {
  for (let b = 0; b < B; b++) {
    let tot = 0;
    for (let s = 0; s < S; s++) tot += acc[b * S + s]!;
    for (let s = 0; s < S; s++) acc[b * S + s] = tot > 0 ? acc[b * S + s]! / tot : 0;
  }
  return acc;
}

/**
 * Cross-attention with keys/values already projected per user (K, V [U, Lk, H·dh]) for U·R query rows q
 * [U·R, Lq, d]: the R rows of a user are folded into its query axis ([U, H, R·Lq, dh]), so K/V are shared by all
 * of the user's beams instead of being copied. `bias` [U, 1, 1, Lk]. Same result as attention() on tiled memories.
 */
function foldedAttention(q: T, kv: ProjectedMemory, p: AttentionParams, heads: number, bias: T, U: number, R: number): T {
  const Lq = q.shape[1]!;
  const hd = kv.K.shape[2]!;
  const dh = hd / heads;
  const Q = dense(q, p.wq, p.bq).reshape([U, R * Lq, heads, dh]).transpose([0, 2, 1, 3]);
  const probs = tf.softmax(tf.matMul(Q, kv.Kh, false, true).mul(1 / Math.sqrt(dh)).add(bias), -1);
  const ctx = tf.matMul(probs, kv.Vh).transpose([0, 2, 1, 3]).reshape([U * R, Lq, hd]);
  return dense(ctx, p.wo, p.bo);
}
