// Beam search over the Semantic-ID levels, batched over users, constrained by the prefix trie so that every beam
// is a prefix of an existing item; complete codes map back to items. Beams are distinct code paths and full codes
// are unique per item, so the returned items are distinct; scores (sum of log-probabilities) come sorted.
//
// Exclusions (e.g. the user's history) are applied at every level, not only the last: a prefix whose subtree has
// no admissible item left is never kept, so a beam of width ≥ k ends with k items whenever the catalogue has ≥ k
// admissible ones (each kept prefix holds ≥ 1 admissible item, or all admissible prefixes were kept).
//
// Cost: the user's streams are encoded once and their cross-attention keys/values projected once
// (GemsModel.prepare); the beams of a user are folded into the query axis of that user's attention, so nothing
// of the encoders or the key/value projections is repeated per beam. Levels decode incrementally
// (GemsModel.decodeStep): only the newest position of each beam runs, earlier positions' decoder self-attention
// keys/values come from a cache reordered by each beam's parent. With indexer top-k, the default 'shared'
// selection chooses one mid-term key set once, by the first decoder layer's indexer at the first level (the user's
// BOS query), and every layer attends to it, so the search scores once and encodes at most k keys; 'request'
// chooses each layer's set once (scores per layer, encodes up to k per layer); 'user' lets each user's beams share
// one top-k set per level and layer (only those keys are projected, prepare lazyMid: the indexer's scoring plus O(k)
// per level); 'query' gives each beam its own top-k (the stage-3 training formulation; as costly as full attention
// once beams disagree).
import { tf } from '../compute/backend.js';
import { scoped } from './ops.js';
import { DEFAULT_INDEXER_SELECTION, type DecoderCache, type EncodedStreams, type GemsModel, type IndexerSelection } from './gems.js';
import type { SemanticIds } from './sid.js';
import type { CodeTrie } from '../tokenizer/trie.js';

export interface BeamOptions {
  /** Items wanted per user. */
  k: number;
  /** Beam width (≥ k; default k). */
  beam?: number;
  /** Per user, item ids not to return (or null). */
  exclude?: (Set<number> | null)[];
  /** Indexer top-k for the mid-term stream (0 = full attention). */
  topK: number;
  /** Return per-stream attention mass (at the first level's query). */
  wantMass?: boolean;
  /**
   * Indexer selection (GemsModel.decodeStep): 'shared' (default) one top-k key set per user for every layer, chosen
   * by the first layer's indexer at the first level (the user's BOS query) and kept: one indexer scoring, at most k
   * keys encoded — the fastest; 'request' one set per user and layer, chosen and kept the same way; 'user' one set
   * per user, layer and level (keys ranked by indexer attention mass summed over the beams); 'query' each beam its
   * own top-k (the stage-3 training formulation; as slow as full attention).
   * On ML-1M (test, 6,040 users, top-64 of 192 keys) HR@10 was 0.2750 / 0.2755 / 0.2745 for request / user / query
   * against 0.2735 with full attention (encoded-key indexer), and 0.2917 / 0.2909 for shared / request against
   * 0.2912 (the preset's feature indexer, dropout 0.1); on the tiny overfit fixture (k = 3 of 8 keys, beam 4) 'user'
   * missed 1–2 of 8 users that 'query' got.
   */
  selection?: IndexerSelection;
  /**
   * Share ρ of the list reserved for returning interests (models trained with returnIntent; default 0): a second
   * search with the return intent fills, of every list prefix of length n, floor(n·ρ) places (reserveReturns).
   */
  reserveReturns?: number;
  /** This search asks for returns of dormant interests (the decoder's return intent). */
  returnIntent?: boolean;
  /**
   * Score each level's code conditioned on the item being admissible: a beam's next-code log-probabilities are
   * renormalised over its admissible children (existing prefixes with an unexcluded item below them) before they
   * are added, so the scores are log-probabilities over the admissible items. The model's per-level distributions
   * keep mass on codes of seen items (it learns from every next event, repeats included) and on code paths no item
   * has; conditioned on an unseen item, that mass goes to the remaining items of the same prefix. A user's heavily
   * consumed interest then still offers its few unseen items at the interest's own weight.
   */
  renormalize?: boolean;
}

function disposeCache(c: DecoderCache): void {
  for (const t of [...c.K, ...c.V]) t.dispose();
}

export interface UserRecommendations {
  items: Int32Array;
  scores: Float32Array;
  /** count × W codes, row-major. */
  codes: Int32Array;
}

export interface BeamOutput {
  users: UserRecommendations[];
  /** B × S per-stream attention mass shares (S = model.enabledStreams), when asked for. */
  mass?: Float32Array;
}

interface Beam {
  node: number;
  score: number;
  codes: number[];
  /** Index of the beam it extends in the previous level's list of its user (its decoder-cache row). */
  parent: number;
}

/**
 * Per trie: items under each node, each item's leaf node, and each node's first leaf (computed once, cached). Nodes
 * are numbered breadth-first and every leaf is at full depth, so the leaves under a node are the contiguous run of
 * node ids [firstLeaf, firstLeaf + leaves).
 */
interface TrieCounts {
  leaves: Int32Array;
  firstLeaf: Int32Array;
  leafOf: Map<number, number>;
}
const countsCache = new WeakMap<CodeTrie, TrieCounts>();

function trieCounts(trie: CodeTrie): TrieCounts {
  let c = countsCache.get(trie);
  if (c) return c;
  const n = trie.nodes;
  const leaves = new Int32Array(n);
  const firstLeaf = new Int32Array(n);
  const leafOf = new Map<number, number>();
  // Children come after their parent: a reverse sweep sees a node's children before the node.
  for (let node = n - 1; node >= 0; node--) {
    if (trie.nodeDepth[node] === trie.depth) {
      leaves[node] = 1;
      firstLeaf[node] = node;
      leafOf.set(trie.leafItem[node]!, node);
      continue;
    }
    const start = trie.firstChild[node]!;
    firstLeaf[node] = firstLeaf[start]!;
    for (let i = 0; i < trie.childCount[node]!; i++) leaves[node] += leaves[start + i]!;
  }
  c = { leaves, firstLeaf, leafOf };
  countsCache.set(trie, c);
  return c;
}

/** The leaf nodes of a user's excluded items, ascending (items outside the trie dropped): O(excluded) memory. */
function excludedLeaves(tc: TrieCounts, ex: Set<number>): Int32Array {
  const out = new Int32Array(ex.size);
  let n = 0;
  for (const item of ex) {
    const leaf = tc.leafOf.get(item);
    if (leaf !== undefined) out[n++] = leaf;
  }
  return out.subarray(0, n).sort();
}

/** Index of the first value ≥ x in the ascending array `a`. */
function lowerBound(a: Int32Array, x: number): number {
  let l = 0;
  let r = a.length;
  while (l < r) {
    const mid = (l + r) >>> 1;
    if (a[mid]! < x) l = mid + 1;
    else r = mid;
  }
  return l;
}

export function beamSearch(model: GemsModel, sid: SemanticIds, enc: EncodedStreams, opts: BeamOptions): BeamOutput {
  const share = opts.reserveReturns ?? 0;
  if (!(share >= 0 && share < 1)) throw new Error(`beam search: reserveReturns must be in [0, 1), got ${share}`);
  if (share === 0) return searchLevels(model, sid, enc, opts);
  if (!model.cfg.returnIntent) throw new Error('beam search: reserveReturns needs a model trained with a return intent (gems train --return-intent)');
  // The main search finds k + (the returns' places) items, so the list is full even when every return is in it too.
  const main = searchLevels(model, sid, enc, { ...opts, k: opts.k + Math.ceil(opts.k * share), returnIntent: false });
  const returns = searchLevels(model, sid, enc, { ...opts, k: Math.ceil(opts.k * share), wantMass: false, returnIntent: true });
  return { users: main.users.map((u, b) => reserveReturns(u, returns.users[b]!, opts.k, share, model.W)), mass: main.mass };
}

/**
 * The list policy for a return-intent model: of every prefix of length n, floor(n·ρ) places hold the return
 * search's items (in its order) and the rest the next-event search's; an item both searches found keeps its first
 * place. Scores are each item's own search score, so the list is ordered by the policy, not by score.
 */
export function reserveReturns(main: UserRecommendations, returns: UserRecommendations, k: number, share: number, W: number): UserRecommendations {
  const items: number[] = [];
  const scores: number[] = [];
  const codes: number[] = [];
  const taken = new Set<number>();
  const lists = [main, returns];
  const next = [0, 0];
  // The next item of list `from` not already in the list (its index), or -1 when the list has none left.
  const nextFree = (from: number) => {
    const list = lists[from]!;
    while (next[from]! < list.items.length && taken.has(list.items[next[from]!]!)) next[from]!++;
    return next[from]! < list.items.length ? next[from]! : -1;
  };
  while (items.length < k) {
    const n = items.length + 1;
    let from = Math.floor(n * share) > Math.floor((n - 1) * share) ? 1 : 0;
    let i = nextFree(from);
    if (i < 0) i = nextFree((from = 1 - from)); // one list ran out: the other fills
    if (i < 0) break;
    const list = lists[from]!;
    next[from] = i + 1;
    taken.add(list.items[i]!);
    items.push(list.items[i]!);
    scores.push(list.scores[i]!);
    for (let l = 0; l < W; l++) codes.push(list.codes[i * W + l]!);
  }
  return { items: Int32Array.from(items), scores: Float32Array.from(scores), codes: Int32Array.from(codes) };
}

function searchLevels(model: GemsModel, sid: SemanticIds, enc: EncodedStreams, opts: BeamOptions): BeamOutput {
  const W = model.W;
  if (sid.trie.depth !== W) throw new Error(`beam search: trie depth ${sid.trie.depth} ≠ decoder levels ${W}`);
  const beamW = Math.max(opts.k, opts.beam ?? opts.k);
  const B = enc.B;
  const tc = trieCounts(sid.trie);
  // Admissible items under a node = its leaves minus the user's excluded leaves in its leaf range (two binary
  // searches): a 100k-event history's exclusions cost ~0.5 ms to sort instead of ~3 ms of per-node map counts.
  const excluded = Array.from({ length: B }, (_, b) => {
    const ex = opts.exclude?.[b];
    return ex && ex.size ? excludedLeaves(tc, ex) : null;
  });
  const admissible = (b: number, node: number) => {
    const all = tc.leaves[node]!;
    const ex = excluded[b];
    if (!ex || ex.length === 0) return all;
    const lo = tc.firstLeaf[node]!;
    return all - (lowerBound(ex, lo + all) - lowerBound(ex, lo));
  };
  let beams: Beam[][] = Array.from({ length: B }, (_, b) => (admissible(b, 0) > 0 ? [{ node: 0, score: 0, codes: [], parent: 0 }] : []));
  let mass: Float32Array | undefined;
  const selection = opts.selection ?? DEFAULT_INDEXER_SELECTION;
  return scoped(() => {
    // Key/value projections of every cross-attention, once per user for all levels and beams (with the per-user
    // indexer selection, of the mid-term stream only the indexer's keys: the selected keys are projected per step).
    const prepared = model.prepare(enc, { lazyMid: selection !== 'query' && opts.topK > 0, selection });
    let cache: DecoderCache | null = null;
    let prevR = 1;
    try {
      for (let level = 0; level < W; level++) {
        // Rows per user = the most live beams any user has (1 at the root, then ≤ beam width); a user with fewer
        // repeats its last beam (its rows are ignored).
        const R = Math.max(1, ...beams.map((bs) => bs.length));
        const rows = B * R;
        const codes = level > 0 ? new Int32Array(rows) : null;
        const parents = level > 0 ? new Int32Array(rows) : null;
        const prefixNodes = level > 0 ? new Int32Array(rows) : undefined;
        for (let b = 0; b < B; b++) {
          for (let j = 0; j < R; j++) {
            const beam = beams[b]![Math.min(j, beams[b]!.length - 1)];
            if (codes && parents) {
              codes[b * R + j] = beam ? beam.codes[level - 1]! : 0;
              parents[b * R + j] = b * prevR + (beam ? beam.parent : 0);
              prefixNodes![b * R + j] = beam ? beam.node : 0;
            }
          }
        }
        const wantMass = opts.wantMass === true && level === 0;
        const prevCache: DecoderCache | null = cache;
        const step = scoped(() => {
          const r = model.decodeStep(prepared, prevCache, parents, codes, level, { topK: opts.topK, selection, wantMass, rowsPerUser: R, prefixNodes, returnIntent: opts.returnIntent });
          if (level < W - 1) for (const t of [...r.cache.K, ...r.cache.V]) tf.keep(t);
          return { logp: r.logp.dataSync() as Float32Array, mass: r.mass, cache: level < W - 1 ? r.cache : null };
        });
        if (prevCache) disposeCache(prevCache);
        cache = step.cache;
        prevR = R;
        const { logp, mass: m } = step;
        if (wantMass && m) {
          const S = m.length / rows;
          mass = new Float32Array(B * S);
          for (let b = 0; b < B; b++) mass.set(m.subarray(b * R * S, b * R * S + S), b * S);
        }
        const K = model.cfg.sizes[level]!;
        const last = level === W - 1;
        const keep = last ? opts.k : beamW;
        beams = beams.map((userBeams, b) => {
          // Candidates as flat arrays; only the survivors get Beam objects.
          const candScore: number[] = [];
          const candNode: number[] = [];
          const candFrom: number[] = [];
          const candCode: number[] = [];
          userBeams.forEach((beam, j) => {
            const row = (b * R + j) * K;
            const { codes: cc, nodes } = sid.trie.children(beam.node);
            const live: number[] = [];
            for (let i = 0; i < cc.length; i++) if (admissible(b, nodes.start + i) > 0) live.push(i);
            // log Σ p over the admissible children (log-sum-exp), subtracted when conditioning on them.
            let norm = 0;
            if (opts.renormalize && live.length > 0) {
              const mx = Math.max(...live.map((i) => logp[row + cc[i]!]!));
              norm = mx + Math.log(live.reduce((sum, i) => sum + Math.exp(logp[row + cc[i]!]! - mx), 0));
            }
            for (const i of live) {
              const node = nodes.start + i;
              candScore.push(beam.score + logp[row + cc[i]!]! - norm);
              candNode.push(node);
              candFrom.push(j);
              candCode.push(cc[i]!);
            }
          });
          const order = Array.from(candScore.keys());
          order.sort((x, y) => candScore[y]! - candScore[x]! || candNode[x]! - candNode[y]!);
          return order.slice(0, keep).map((c) => {
            const from = userBeams[candFrom[c]!]!;
            return { node: candNode[c]!, score: candScore[c]!, codes: [...from.codes, candCode[c]!], parent: candFrom[c]! };
          });
        });
      }
    } finally {
      if (cache) disposeCache(cache);
      model.release(prepared);
    }
    const users = beams.map((bs) => ({
      items: Int32Array.from(bs.map((x) => sid.trie.leafItem[x.node]!)),
      scores: Float32Array.from(bs.map((x) => x.score)),
      codes: Int32Array.from(bs.flatMap((x) => x.codes)),
    }));
    return { users, mass };
  });
}
