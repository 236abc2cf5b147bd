// The synthetic item catalogue behind the lifelong generator: items grouped into interest clusters, each cluster
// with its own authors (a few cross over), a correlated tag set drawn from its topic, a typical duration, and a
// Zipf popularity skew inside the cluster. Everything is columnar and indexed by item id (1-based; 0 unused).
import { Rng } from '../../util/random.js';
import type { Item } from '../events.js';

export interface CatalogueOptions {
  seed: number;
  items: number;
  clusters: number;
  /** Zipf exponent of item popularity within a cluster. */
  itemZipf: number;
  /** Zipf exponent of cluster popularity across users (which clusters become interests). */
  clusterZipf: number;
}

export interface Catalogue {
  numItems: number;
  numClusters: number;
  numAuthors: number;
  /** Tag names; events and items carry indexes into this list (the store maps them to its tag ids). */
  tagNames: string[];
  /** Per item id (length numItems + 1). */
  itemCluster: Int32Array;
  itemAuthor: Int32Array;
  itemDurationMs: Float32Array;
  /** Popularity rank inside its cluster (0 = most popular). */
  itemRank: Int32Array;
  /** Index of the item inside its cluster (the "345" of "cluster 12 item 345"). */
  itemIndexInCluster: Int32Array;
  itemTagOffsets: Int32Array;
  itemTagIds: Int32Array;
  /** Items of cluster c are clusterItems[clusterStart[c] .. clusterStart[c+1]), sorted by author. */
  clusterStart: Int32Array;
  clusterItems: Int32Array;
  /** Cumulative popularity over clusterItems, normalised to 1 at the end of each cluster's range. */
  clusterCdf: Float64Array;
  /** Cumulative global popularity of clusters (normalised to 1). */
  clusterPopularityCdf: Float64Array;
  /**
   * Author runs inside each cluster: run r covers clusterItems[runStart[r] .. runEnd[r]) (all by one author);
   * cluster c owns runs clusterRunStart[c] .. clusterRunStart[c+1].
   */
  clusterRunStart: Int32Array;
  runStart: Int32Array;
  runEnd: Int32Array;
}

const TOPICS_PER_CLUSTERS = 10; // one topic (tag family) per ~10 clusters
const TAGS_PER_TOPIC = 12;
const GENERIC_TAGS = 60;
const CLUSTER_CORE_TAGS = 4;

/** Binary search: first index i in [lo, hi) with cdf[i] > u (hi - 1 if none, guarding float round-off). */
export function searchCdf(cdf: Float64Array, lo: number, hi: number, u: number): number {
  let a = lo;
  let b = hi - 1;
  while (a < b) {
    const m = (a + b) >>> 1;
    if (cdf[m]! > u) b = m;
    else a = m + 1;
  }
  return a;
}

export function buildCatalogue(o: CatalogueOptions): Catalogue {
  if (!Number.isInteger(o.clusters) || o.clusters < 2) throw new Error(`generator: clusters must be an integer ≥ 2 (got ${o.clusters})`);
  if (!Number.isInteger(o.items) || o.items < o.clusters * 5) {
    throw new Error(`generator: items must be an integer ≥ 5 × clusters (${o.clusters * 5}), got ${o.items}`);
  }
  // A stream of its own, so the catalogue does not depend on how many users are generated.
  const rng = new Rng(o.seed).fork(0x7a11c0de);
  const C = o.clusters;
  const N = o.items;

  // Cluster sizes: log-normal shares, at least 5 items each.
  const share = new Float64Array(C);
  let shareSum = 0;
  for (let c = 0; c < C; c++) shareSum += share[c] = Math.exp(rng.normal(0, 0.5));
  const size = new Int32Array(C);
  let assigned = 0;
  for (let c = 0; c < C; c++) assigned += size[c] = 5 + Math.floor(((N - 5 * C) * share[c]!) / shareSum);
  for (let k = 0; assigned < N; k++, assigned++) size[k % C]++;

  // Item ids are a random permutation so an id says nothing about the cluster.
  const ids = new Int32Array(N);
  for (let i = 0; i < N; i++) ids[i] = i + 1;
  rng.shuffle(ids);

  // Tags: clusters share a topic (a family of tags); each cluster has 4 core tags from its topic.
  const topics = Math.max(1, Math.ceil(C / TOPICS_PER_CLUSTERS));
  const tagNames: string[] = [];
  for (let t = 0; t < topics; t++) for (let k = 0; k < TAGS_PER_TOPIC; k++) tagNames.push(`topic${t}/tag${k}`);
  for (let k = 0; k < GENERIC_TAGS; k++) tagNames.push(`generic/tag${k}`);
  const clusterTags = new Int32Array(C * CLUSTER_CORE_TAGS);
  for (let c = 0; c < C; c++) {
    const topic = rng.int(topics);
    const pool = Int32Array.from({ length: TAGS_PER_TOPIC }, (_, k) => topic * TAGS_PER_TOPIC + k);
    rng.shuffle(pool);
    clusterTags.set(pool.subarray(0, CLUSTER_CORE_TAGS), c * CLUSTER_CORE_TAGS);
  }

  // Authors: each cluster has its own 5–40; 5% of items are by an author of another cluster (correlated, not identical).
  const authorStart = new Int32Array(C + 1);
  for (let c = 0; c < C; c++) authorStart[c + 1] = authorStart[c]! + Math.min(size[c]!, 5 + rng.int(36));
  const numAuthors = authorStart[C]!;
  const authorWeights = new Float64Array(64);

  const itemCluster = new Int32Array(N + 1).fill(-1);
  const itemAuthor = new Int32Array(N + 1);
  const itemDurationMs = new Float32Array(N + 1);
  const itemRank = new Int32Array(N + 1);
  const itemIndexInCluster = new Int32Array(N + 1);
  const itemTagCount = new Int32Array(N + 1);
  const itemTags = new Int32Array((N + 1) * 4);
  const clusterStart = new Int32Array(C + 1);
  const clusterItems = new Int32Array(N);
  const clusterCdf = new Float64Array(N);

  let pos = 0;
  for (let c = 0; c < C; c++) {
    clusterStart[c] = pos;
    const n = size[c]!;
    const nAuthors = authorStart[c + 1]! - authorStart[c]!;
    let aw = 0;
    for (let a = 0; a < nAuthors; a++) aw += authorWeights[a] = 1 / (a + 1); // a few prolific authors
    const typicalDuration = Math.exp(rng.normal(Math.log(30_000), 0.6));
    const ranks = Int32Array.from({ length: n }, (_, k) => k);
    rng.shuffle(ranks);
    for (let k = 0; k < n; k++) {
      const item = ids[pos + k]!;
      itemCluster[item] = c;
      itemIndexInCluster[item] = k;
      itemRank[item] = ranks[k]!;
      // Every cluster author gets at least one item, the rest follow the author skew.
      const local = k < nAuthors ? k : rng.weighted(authorWeights.subarray(0, nAuthors), aw);
      itemAuthor[item] = rng.next() < 0.05 ? 1 + rng.int(numAuthors) : 1 + authorStart[c]! + local;
      itemDurationMs[item] = Math.round(Math.min(1_200_000, Math.max(3_000, typicalDuration * Math.exp(rng.normal(0, 0.4)))));
      // 2–3 of the cluster's core tags, sometimes one generic tag.
      const nCore = 2 + rng.int(2);
      const core = Int32Array.from({ length: CLUSTER_CORE_TAGS }, (_, j) => clusterTags[c * CLUSTER_CORE_TAGS + j]!);
      rng.shuffle(core);
      let t = 0;
      for (; t < nCore; t++) itemTags[item * 4 + t] = core[t]!;
      if (rng.next() < 0.3) itemTags[item * 4 + t++] = topics * TAGS_PER_TOPIC + rng.int(GENERIC_TAGS);
      itemTagCount[item] = t;
    }
    // Sort the cluster's items by author (so a user's favourite author is a contiguous run), then item id.
    const slice = clusterItems.subarray(pos, pos + n);
    const sorted = Array.from(ids.subarray(pos, pos + n)).sort((x, y) => itemAuthor[x]! - itemAuthor[y]! || x - y);
    slice.set(sorted);
    let cum = 0;
    for (let k = 0; k < n; k++) clusterCdf[pos + k] = cum += 1 / Math.pow(itemRank[slice[k]!]! + 1, o.itemZipf);
    for (let k = 0; k < n; k++) clusterCdf[pos + k] /= cum;
    pos += n;
  }
  clusterStart[C] = pos;

  // Author runs per cluster.
  const runStartList: number[] = [];
  const runEndList: number[] = [];
  const clusterRunStart = new Int32Array(C + 1);
  for (let c = 0; c < C; c++) {
    clusterRunStart[c] = runStartList.length;
    for (let k = clusterStart[c]!; k < clusterStart[c + 1]!; ) {
      const a = itemAuthor[clusterItems[k]!]!;
      let e = k + 1;
      while (e < clusterStart[c + 1]! && itemAuthor[clusterItems[e]!] === a) e++;
      runStartList.push(k);
      runEndList.push(e);
      k = e;
    }
  }
  clusterRunStart[C] = runStartList.length;

  const itemTagOffsets = new Int32Array(N + 2);
  for (let i = 0; i <= N; i++) itemTagOffsets[i + 1] = itemTagOffsets[i]! + itemTagCount[i]!;
  const itemTagIds = new Int32Array(itemTagOffsets[N + 1]!);
  for (let i = 1; i <= N; i++) itemTagIds.set(itemTags.subarray(i * 4, i * 4 + itemTagCount[i]!), itemTagOffsets[i]!);

  // Cluster popularity across users: Zipf over a random order of clusters.
  const clusterOrder = Int32Array.from({ length: C }, (_, c) => c);
  rng.shuffle(clusterOrder);
  const clusterPopularityCdf = new Float64Array(C);
  const cw = new Float64Array(C);
  for (let r = 0; r < C; r++) cw[clusterOrder[r]!] = 1 / Math.pow(r + 1, o.clusterZipf);
  let cs = 0;
  for (let c = 0; c < C; c++) clusterPopularityCdf[c] = cs += cw[c]!;
  for (let c = 0; c < C; c++) clusterPopularityCdf[c] /= cs;

  return {
    numItems: N,
    numClusters: C,
    numAuthors,
    tagNames,
    itemCluster,
    itemAuthor,
    itemDurationMs,
    itemRank,
    itemIndexInCluster,
    itemTagOffsets,
    itemTagIds,
    clusterStart,
    clusterItems,
    clusterCdf,
    clusterPopularityCdf,
    clusterRunStart,
    runStart: Int32Array.from(runStartList),
    runEnd: Int32Array.from(runEndList),
  };
}

/** The catalogue as store items; `tagIdOf` maps a catalogue tag index to the store's tag id. */
export function catalogueItems(cat: Catalogue, tagIdOf: ArrayLike<number>): Item[] {
  const out: Item[] = new Array(cat.numItems);
  for (let item = 1; item <= cat.numItems; item++) {
    const tags: number[] = [];
    for (let j = cat.itemTagOffsets[item]!; j < cat.itemTagOffsets[item + 1]!; j++) tags.push(tagIdOf[cat.itemTagIds[j]!]!);
    const c = cat.itemCluster[item]!;
    out[item - 1] = {
      itemId: item,
      authorId: cat.itemAuthor[item]!,
      tags,
      title: `cluster ${c} item ${cat.itemIndexInCluster[item]}`,
      attrs: { cluster: c, popularity_rank: cat.itemRank[item]!, duration_ms: cat.itemDurationMs[item]! },
    };
  }
  return out;
}
