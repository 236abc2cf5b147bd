// The lifelong history store: the contract every later stage reads through. Implementation:
// src/data/parquetHistoryStore.ts (Parquet partitions in an ObjectStore, indexed and queried by DuckDB).
import type { EventColumns, History, Item, Streams } from './events.js';

export interface AppendResult {
  /** Events written (after dropping duplicates by the dedup key). */
  added: number;
  /** Events dropped because an identical event (same dedup key) is already stored. */
  duplicates: number;
  /** Object keys written. */
  objects: string[];
}

export interface ItemColumns {
  length: number;
  itemId: Int32Array;
  authorId: Int32Array;
  tagOffsets: Int32Array;
  tagIds: Int32Array;
  titles: string[];
}

export interface StoreStats {
  users: number;
  items: number;
  events: number;
  historyLength: { min: number; mean: number; max: number };
  /** Filled in by later stages (tokenizer, model, lifecycle) through their own tables. */
  [extra: string]: unknown;
}

/** As-of cut-off: no event after it is returned (training and evaluation must never see the future). */
export interface AsOf {
  /** Keep events with ts ≤ this (epoch ms). */
  ts?: number;
  /** Keep events with seq ≤ this (for sources without timestamps). */
  seq?: number;
}

/**
 * Part of one user's history, applied after the as-of cut-off; the result stays chronological. Reads only what the
 * range needs (Parquet row groups outside it are skipped), so a tail costs in proportion to its length.
 */
export interface HistoryRange {
  /**
   * Only events strictly after this position of the chronological order (ts, unknown time first, then seq).
   * `ts` is an integer epoch ms, or NaN for "among the events without a time".
   */
  after?: { ts: number; seq: number };
  /** Only the last n events of those the other filters keep. */
  lastN?: number;
}

export interface StreamOptions {
  /**
   * 'events' (default): read the whole history and return the lifecycle events too.
   * 'count': read only the last tMid events; `lifecycle` is then empty and `lifecycleLength` says how many events
   * it holds (serving takes the lifecycle stream from the memory store, compressed offline).
   */
  lifecycle?: 'events' | 'count';
}

/** Streams as the store returns them: with the lifecycle segment's length even when its events were not read. */
export interface StoredStreams extends Streams {
  lifecycleLength: number;
}

export interface ScanOptions {
  /** Only users whose hash(user_id) % count == index (see src/util/random.ts hash32). */
  shard?: { index: number; count: number };
  /** Only these users. */
  userIds?: ArrayLike<number>;
  /** Skip users with id ≤ this (resume a scan after a checkpoint). Scans go in ascending user id. */
  afterUserId?: number;
}

export interface HistoryStore {
  /** Appends events; duplicates of stored events (same user, item, ts, seq, source) are dropped. */
  append(batch: EventColumns): Promise<AppendResult>;
  /** Inserts or replaces items. */
  upsertItems(items: Item[]): Promise<void>;
  /** Ids for tag names (created on first use). */
  tagIds(names: string[]): Promise<number[]>;
  items(): Promise<ItemColumns>;
  /**
   * One user's history, chronological (ts, then seq): all of it, or only the part `range` selects. Empty history
   * for an unknown user.
   */
  userHistory(userId: number, asOf?: AsOf, range?: HistoryRange): Promise<History>;
  /**
   * One user's history cut into Recent / Mid-term / Lifecycle by tRecent < tMid. With `{ lifecycle: 'count' }` only
   * the last tMid events are read (see StreamOptions).
   */
  userStreams(userId: number, tRecent: number, tMid: number, asOf?: AsOf, opts?: StreamOptions): Promise<StoredStreams>;
  /** Number of stored events of each user (0 for unknown users), in the order given. */
  userEventCounts(userIds: ArrayLike<number>): Promise<Float64Array>;
  /** Full histories of many users in ascending user order, with bounded memory. */
  scanHistories(opts?: ScanOptions): AsyncIterable<History>;
  /** Users whose newest event (by ts, or by ingestion time when `by: 'ingested'`) is after the watermark (epoch ms). */
  usersChangedSince(watermarkMs: number, by?: 'event' | 'ingested'): Promise<Int32Array>;
  /** All user ids, ascending. */
  userIds(): Promise<Int32Array>;
  stats(): Promise<StoreStats>;
  close(): Promise<void>;
}
