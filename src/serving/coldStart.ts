// Cold start: popular items, overall and within the user's recent interests. It serves users without history or
// memory (and everyone, until a trained GEMs checkpoint exists) through the same RecommenderModel interface.
//
// Popularity = event count per item in the history store (its item_stats counters, or a scan for other stores).
// Interests = tags and authors of the user's Recent (weight 1) and Mid-term (weight ½) events. A candidate that
// shares tags/authors with them scores 1 + affinity × popularity (affinity ∈ (0, 1]), so every interest match ranks
// above the overall-popular fill, which scores popularity ∈ [0, 1]. Deterministic: ties go to the smaller item id.
import type { History } from '../data/events.js';
import type { HistoryStore, ItemColumns } from '../data/historyStore.js';
import { NO_ATTENTION, seenItems, type RecommendInput, type RecommendOutput, type RecommenderModel, type StreamName } from './recommender.js';

/** What cold start needs from a tokenizer (src/tokenizer/store.ts `Tokenizer` and src/model/sid.ts both fit). */
export interface SidLookup {
  sizes: number[];
  codes: Int32Array;
  rowOf(itemId: number): number;
}

/** Item popularity and catalogue attributes, indexed for interest lookups. */
export class PopularityIndex {
  /** Item ids by popularity (most events first, then smaller id). */
  readonly order: Int32Array;
  /** log(1 + count) / log(1 + max count), per position of `order`. */
  readonly popularity: Float32Array;
  private readonly posOf = new Map<number, number>();
  /** Positions (into `order`, ascending = most popular first) of items with a tag / author. */
  private readonly byTag = new Map<number, Int32Array>();
  private readonly byAuthor = new Map<number, Int32Array>();
  private readonly tagsOf = new Map<number, Int32Array>();
  private readonly authorOf = new Map<number, number>();
  readonly titles = new Map<number, string>();

  constructor(
    catalogue: ItemColumns,
    counts: Map<number, number>,
    /** Identifies the snapshot (becomes the model version). */
    readonly snapshot: string,
  ) {
    const ids = new Set<number>(counts.keys());
    for (let i = 0; i < catalogue.length; i++) {
      const id = catalogue.itemId[i]!;
      ids.add(id);
      this.authorOf.set(id, catalogue.authorId[i]!);
      this.tagsOf.set(id, catalogue.tagIds.subarray(catalogue.tagOffsets[i]!, catalogue.tagOffsets[i + 1]!));
      if (catalogue.titles[i]) this.titles.set(id, catalogue.titles[i]!);
    }
    const all = Int32Array.from(ids);
    const countOf = (id: number) => counts.get(id) ?? 0;
    all.sort((a, b) => countOf(b) - countOf(a) || a - b);
    this.order = all;
    const maxLog = Math.log1p(all.length > 0 ? countOf(all[0]!) : 0) || 1;
    this.popularity = Float32Array.from(all, (id) => Math.log1p(countOf(id)) / maxLog);
    const tagLists = new Map<number, number[]>();
    const authorLists = new Map<number, number[]>();
    all.forEach((id, pos) => {
      this.posOf.set(id, pos);
      for (const t of this.tagsOf.get(id) ?? []) pushTo(tagLists, t, pos);
      const a = this.authorOf.get(id) ?? 0;
      if (a > 0) pushTo(authorLists, a, pos);
    });
    for (const [t, l] of tagLists) this.byTag.set(t, Int32Array.from(l));
    for (const [a, l] of authorLists) this.byAuthor.set(a, Int32Array.from(l));
  }

  get size(): number {
    return this.order.length;
  }

  itemsWithTag(tag: number): Int32Array | undefined {
    return this.byTag.get(tag);
  }
  itemsByAuthor(author: number): Int32Array | undefined {
    return this.byAuthor.get(author);
  }
  tags(itemId: number): Int32Array | undefined {
    return this.tagsOf.get(itemId);
  }
  author(itemId: number): number {
    return this.authorOf.get(itemId) ?? 0;
  }
  position(itemId: number): number {
    return this.posOf.get(itemId) ?? -1;
  }
}

function pushTo(m: Map<number, number[]>, key: number, v: number): void {
  let l = m.get(key);
  if (!l) m.set(key, (l = []));
  l.push(v);
}

/** A store that can answer SQL over its own tables (ParquetHistoryStore); popularity then comes from item_stats. */
interface SqlCapableStore {
  withDb<T>(fn: (db: { rows<R>(sql: string, params?: unknown[]): Promise<R[]> }) => Promise<T>): Promise<T>;
}

function hasSql(store: HistoryStore): store is HistoryStore & SqlCapableStore {
  return typeof (store as Partial<SqlCapableStore>).withDb === 'function';
}

/** Event counts per item: the store's counters when it keeps them, otherwise one scan over every history. */
export async function itemCounts(store: HistoryStore): Promise<Map<number, number>> {
  const counts = new Map<number, number>();
  if (hasSql(store)) {
    const rows = await store.withDb((db) => db.rows<{ item_id: number; n: number }>(`SELECT item_id, n_events::DOUBLE AS n FROM item_stats`));
    for (const r of rows) counts.set(Number(r.item_id), Number(r.n));
    return counts;
  }
  for await (const h of store.scanHistories()) for (const id of h.itemId) counts.set(id, (counts.get(id) ?? 0) + 1);
  return counts;
}

/** Builds the popularity index from the history store (catalogue + counters). */
export async function popularityFromStore(store: HistoryStore): Promise<PopularityIndex> {
  const [catalogue, counts] = await Promise.all([store.items(), itemCounts(store)]);
  let events = 0;
  for (const c of counts.values()) events += c;
  return new PopularityIndex(catalogue, counts, `popularity@${catalogue.length}i/${counts.size}c/${events}e`);
}

/** Top interest keys kept per user (more would only add long-tail candidates). */
const MAX_INTEREST_KEYS = 8;
/** Candidates read per interest key, most popular first. */
const CANDIDATES_PER_KEY = 512;

interface Interests {
  tags: Map<number, number>;
  authors: Map<number, number>;
  /** Streams whose events contributed. */
  streams: StreamName[];
}

function topKeys(m: Map<number, number>): Map<number, number> {
  const top = [...m.entries()].sort((a, b) => b[1] - a[1] || a[0] - b[0]).slice(0, MAX_INTEREST_KEYS);
  const total = top.reduce((s, [, w]) => s + w, 0) || 1;
  return new Map(top.map(([k, w]) => [k, w / total]));
}

export class PopularityModel implements RecommenderModel {
  readonly kind = 'popularity';
  readonly version: string;

  constructor(
    readonly index: PopularityIndex,
    private readonly sid: SidLookup | null = null,
  ) {
    this.version = index.snapshot;
  }

  /** Tag/author weights from the user's Recent and Mid-term events (event tags, else the catalogue's). */
  interests(input: RecommendInput): Interests {
    const tags = new Map<number, number>();
    const authors = new Map<number, number>();
    const streams: StreamName[] = [];
    const add = (h: History, w: number, name: StreamName) => {
      if (h.length === 0) return;
      streams.push(name);
      for (let i = 0; i < h.length; i++) {
        const id = h.itemId[i]!;
        const a = h.authorId[i]! > 0 ? h.authorId[i]! : this.index.author(id);
        if (a > 0) authors.set(a, (authors.get(a) ?? 0) + w);
        const t0 = h.tagOffsets[i]!;
        const t1 = h.tagOffsets[i + 1]!;
        const tagList = t1 > t0 ? h.tagIds.subarray(t0, t1) : (this.index.tags(id) ?? []);
        for (const t of tagList) tags.set(t, (tags.get(t) ?? 0) + w);
      }
    };
    add(input.streams.mid, 0.5, 'mid');
    add(input.streams.recent, 1, 'recent');
    return { tags: topKeys(tags), authors: topKeys(authors), streams: streams.reverse() };
  }

  recommendOne(input: RecommendInput): RecommendOutput {
    const { k } = input;
    const exclude = input.options.excludeSeen ? seenItems(input.streams) : new Set<number>();
    const interests = this.interests(input);
    const idx = this.index;
    const hasTags = interests.tags.size > 0;
    const hasAuthors = interests.authors.size > 0;
    // Tags and authors share the affinity equally when both are known.
    const tagShare = hasTags && hasAuthors ? 0.5 : hasTags ? 1 : 0;
    const authorShare = 1 - tagShare;

    const affinity = new Map<number, number>();
    const addCandidates = (positions: Int32Array | undefined, weight: number) => {
      if (!positions) return;
      for (let j = 0; j < Math.min(positions.length, CANDIDATES_PER_KEY); j++) {
        const pos = positions[j]!;
        if (!affinity.has(pos)) affinity.set(pos, 0);
        affinity.set(pos, affinity.get(pos)! + weight);
      }
    };
    for (const [t, w] of interests.tags) addCandidates(idx.itemsWithTag(t), tagShare * w);
    for (const [a, w] of interests.authors) addCandidates(idx.itemsByAuthor(a), authorShare * w);

    const ranked = [...affinity.entries()]
      .filter(([pos]) => !exclude.has(idx.order[pos]!))
      .map(([pos, aff]) => ({ pos, score: 1 + Math.min(1, aff) * idx.popularity[pos]! }))
      .sort((a, b) => b.score - a.score || idx.order[a.pos]! - idx.order[b.pos]!);

    const items: number[] = [];
    const scores: number[] = [];
    const taken = new Set<number>();
    for (const r of ranked) {
      if (items.length >= k) break;
      items.push(idx.order[r.pos]!);
      scores.push(r.score);
      taken.add(r.pos);
    }
    const fromInterests = items.length;
    for (let pos = 0; pos < idx.size && items.length < k; pos++) {
      const id = idx.order[pos]!;
      if (taken.has(pos) || exclude.has(id)) continue;
      items.push(id);
      scores.push(idx.popularity[pos]!);
    }
    return {
      items: Int32Array.from(items),
      scores: Float32Array.from(scores),
      ...this.sidsOf(items),
      attention: { ...NO_ATTENTION },
      streamsUsed: fromInterests > 0 ? interests.streams : [],
      coldStart: true,
      strategy: fromInterests > 0 ? 'popular_in_interests' : 'popular_overall',
      lifecycleSource: '',
    };
  }

  sidsOf(items: number[]): { sids: Int32Array; sidWidth: number } {
    if (!this.sid) return { sids: new Int32Array(0), sidWidth: 0 };
    const W = this.sid.sizes.length;
    const out = new Int32Array(items.length * W).fill(-1);
    items.forEach((id, i) => {
      const r = this.sid!.rowOf(id);
      if (r >= 0) out.set(this.sid!.codes.subarray(r * W, r * W + W), i * W);
    });
    return { sids: out, sidWidth: W };
  }

  recommendBatch(inputs: RecommendInput[]): Promise<RecommendOutput[]> {
    return Promise.resolve(inputs.map((x) => this.recommendOne(x)));
  }
}
