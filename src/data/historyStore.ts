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
  /** One user's full history, chronological (ts, then seq). Empty history for an unknown user. */
  userHistory(userId: number, asOf?: AsOf): Promise<History>;
  /** One user's history cut into Recent / Mid-term / Lifecycle by tRecent < tMid. */
  userStreams(userId: number, tRecent: number, tMid: number, asOf?: AsOf): Promise<Streams>;
  /** Full histories of many users in ascending user order, with bounded memory. */
  scanHistories(opts?: ScanOptions): AsyncIterable<History>;
  /** Users whose newest event (by ts, or by ingestion time when `by: 'ingested'`) is after the watermark (epoch ms). */
  usersChangedSince(watermarkMs: number, by?: 'event' | 'ingested'): Promise<Int32Array>;
  /** All user ids, ascending. */
  userIds(): Promise<Int32Array>;
  stats(): Promise<StoreStats>;
  close(): Promise<void>;
}
