// The lifelong history store: events as Parquet objects in an ObjectStore, indexed and queried by DuckDB.
//
// Layout: events/bucket=BBB/dt=YYYY-MM-DD/part-<batch>-BBB.parquet, with bucket = hash32(user_id) % userBuckets and
// dt = the ingestion date (UTC). Rows in an object are sorted by (user_id, ts NULLS FIRST, seq) and written in row
// groups, so Parquet min/max statistics let DuckDB skip row groups of other users. One user's history lives in the
// objects of one bucket only; the `partitions` table (manifest) gives each object's bucket and user range, so a read
// opens only the few objects that can hold the user. The nightly job finds changed users from the `users` table
// (last event ts, last ingestion time) without listing objects. A tail read (`userHistory(u, asOf, { lastN })`,
// `userStreams(…, { lifecycle: 'count' })`) first reads the narrow ts column to find the time of the n-th newest
// event, then every column only from that time on, so ts statistics skip the user's older row groups.
//
// Crash safety: a batch's objects are uploaded first; then its manifest rows, user and item counters (and, for file
// ingests, the file's content hash) are committed in one DuckDB transaction. Reads only see objects in the manifest,
// so a crash between the two leaves an invisible orphan object (removed by `removeOrphans`), never half a batch.
//
// Dedup: an event equal to a stored one on (user_id, item_id, ts, seq, source) is dropped (anti-join against the
// objects of the batch's known users only); ingests also skip a file whose bytes (sha256) were loaded before.
// Conventions in returned columns: ts NaN = unknown time (ordered first, by seq); authorId, playMs, durationMs 0 =
// unknown; tag ids start at 1 (0 is free for padding).
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  BIGINT,
  DOUBLE,
  DuckDBDataChunk,
  FLOAT,
  INTEGER,
  LIST,
  UTINYINT,
  VARCHAR,
  listValue,
  type DuckDBConnection,
  type DuckDBResult,
  type DuckDBResultReader,
  type DuckDBVector,
  type DuckDBListVector,
  type DuckDBValue,
  type DuckDBType,
} from '@duckdb/node-api';
import { resolvedPaths, type GemsConfig } from '../config/config.js';
import { hash32 } from '../util/random.js';
import { logger } from '../util/log.js';
import { Database } from './db.js';
import { allocHistory, cutStreams, emptyHistory, sliceHistory, type EventColumns, type History, type Item } from './events.js';
import type { AppendResult, AsOf, HistoryRange, HistoryStore, ItemColumns, ScanOptions, StoredStreams, StoreStats, StreamOptions } from './historyStore.js';
import { openObjectStore } from './openObjectStore.js';
import type { ObjectInfo, ObjectStore } from './objectStore.js';

const log = logger('history');

export interface OpenHistoryStoreOptions {
  /** Object store for the partitions; default: from config (local folder or S3). */
  objectStore?: ObjectStore;
  /** Open DuckDB read-only (serving): writes throw. */
  readOnly?: boolean;
  /** Rows per Parquet row group (smaller = finer pruning for one-user reads, more metadata). */
  rowGroupSize?: number;
  /** Events per query in scanHistories (bounds scan memory; a single larger user is read whole). */
  scanBatchEvents?: number;
  /** Migrations folder (default: the repository's migrations/). */
  migrationsDir?: string;
}

/** A file's identity for file-level dedup of ingests. */
export interface IngestFileRecord {
  sha256: string;
  path: string;
  source: string;
}

/**
 * Columns of a staging table (see `createStage`): ingest code loads rows here and commits them with `commitStage`.
 * ts is epoch ms as DOUBLE, NULL or NaN when unknown.
 */
export const STAGE_COLUMNS =
  'user_id INTEGER NOT NULL, item_id INTEGER NOT NULL, ts DOUBLE, seq INTEGER NOT NULL, author_id INTEGER, ' +
  'tags INTEGER[], play_ms FLOAT, duration_ms FLOAT, labels UTINYINT, bucket INTEGER NOT NULL';
const STAGE_TYPES: DuckDBType[] = [INTEGER, INTEGER, DOUBLE, INTEGER, INTEGER, LIST(INTEGER), FLOAT, FLOAT, UTINYINT, INTEGER];
/** Stage ts (DOUBLE, NaN/NULL = unknown) as stored (BIGINT ms, NULL = unknown). */
const STAGE_TS_BIGINT = `(CASE WHEN ts IS NULL OR isnan(ts) THEN NULL ELSE round(ts)::BIGINT END)`;
/** Stand-in for an unknown ts in dedup keys (no real event has it). */
const NO_TS = '-9223372036854775807';
const STAGE_TS_KEY = (alias: string) => `(CASE WHEN ${alias}.ts IS NULL OR isnan(${alias}.ts) THEN ${NO_TS} ELSE round(${alias}.ts)::BIGINT END)`;

/** What a stage's producer knows about its rows (lets commit skip work). */
export interface StageHints {
  /** (user_id, seq) is unique: no in-batch duplicates possible. */
  unique?: boolean;
  /** Rows are in (user_id, ts NULLS FIRST, seq) order. */
  sorted?: boolean;
}

/**
 * hash32 of src/util/random.ts as DuckDB macros (bit-identical; a test checks the parity), for SQL that needs a user's
 * bucket or shard. Appends compute buckets in JS.
 */
const HASH_MACROS = `
CREATE OR REPLACE TEMP MACRO gems_h16(x) AS xor(x, x >> 16);
CREATE OR REPLACE TEMP MACRO gems_h13(x) AS xor(x, x >> 13);
CREATE OR REPLACE TEMP MACRO gems_m1(x) AS (x * 2246822507::UBIGINT) & 4294967295::UBIGINT;
CREATE OR REPLACE TEMP MACRO gems_m2(x) AS (x * 3266489909::UBIGINT) & 4294967295::UBIGINT;
CREATE OR REPLACE TEMP MACRO gems_hash32(v) AS gems_h16(gems_m2(gems_h13(gems_m1(gems_h16((v::BIGINT & 4294967295)::UBIGINT)))));
`;

/** A result's columns as JS arrays; an empty result still has one (empty) array per column. */
function columnsJS(reader: DuckDBResultReader): unknown[][] {
  const cols = reader.getColumnsJS() as unknown[][];
  return Array.from({ length: reader.columnCount }, (_, i) => cols[i] ?? []);
}

/** SQL string literal (for the few places DuckDB takes no parameters: COPY targets). */
function sqlString(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

export async function openHistoryStore(config: GemsConfig, opts: OpenHistoryStoreOptions = {}): Promise<ParquetHistoryStore> {
  const objects = opts.objectStore ?? openObjectStore(config);
  // A store we opened is ours to close (S3 keeps pooled connections); a store passed in belongs to the caller.
  const ownObjects = opts.objectStore === undefined;
  const db = await Database.open(resolvedPaths(config).duckdb, { readOnly: opts.readOnly === true, migrationsDir: opts.migrationsDir });
  try {
    await db.run(HASH_MACROS);
  } catch (e) {
    db.close();
    throw e;
  }
  const store = new ParquetHistoryStore(config, db, objects, opts);
  if (ownObjects) store.onClose = () => (objects as { close?: () => void }).close?.();
  return store;
}

interface PartitionRef {
  key: string;
  bucket: number;
  minUser: number;
  maxUser: number;
  bytes: number;
  etag: string;
  createdAt: number;
}

/** Writes numbers straight into a chunk vector's buffer (falls back to per-item writes). */
function writeVector(v: DuckDBVector, src: ArrayLike<number>): void {
  const items = (v as unknown as { items?: unknown }).items;
  if (ArrayBuffer.isView(items) && !(items instanceof DataView) && (items as unknown as ArrayLike<number>).length >= src.length) {
    // A fresh chunk vector is all-valid and we never write NULLs, so the validity mask needs no update.
    (items as unknown as { set(a: ArrayLike<number>, o?: number): void }).set(src, 0);
  } else {
    for (let i = 0; i < src.length; i++) v.setItem(i, src[i]! as never);
  }
  v.flush();
}

/** What a batch's row order lets commit skip: duplicates need equal (user, seq); sorting is done if rows are in order. */
function batchOrder(b: EventColumns): StageHints {
  let unique = true;
  let sorted = true;
  for (let i = 1; i < b.length && (unique || sorted); i++) {
    const u0 = b.userId[i - 1]!;
    const u1 = b.userId[i]!;
    if (u1 < u0) {
      unique = false;
      sorted = false;
    } else if (u1 === u0) {
      if (b.seq[i]! <= b.seq[i - 1]!) unique = false;
      if (!chronoBefore(b.ts[i - 1]!, b.seq[i - 1]!, b.ts[i]!, b.seq[i]!)) sorted = false;
    }
  }
  return { unique, sorted };
}

// ---- column extraction from DuckDB result vectors ----------------------------------------------------------------

/** The vector's backing typed array when the binding exposes one (fast path), else a per-item copy. */
function vectorItems(v: DuckDBVector): ArrayLike<number> {
  const items = (v as unknown as { items?: unknown }).items;
  if (ArrayBuffer.isView(items) && !(items instanceof DataView) && !(items instanceof BigInt64Array) && !(items instanceof BigUint64Array)) {
    return items as unknown as ArrayLike<number>;
  }
  const n = v.itemCount;
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = Number(v.getItem(i) as number);
  return out;
}

/**
 * List rows' (offset, length) as 32-bit words: row i's offset is word 4i, its length word 4i+2. The binding keeps
 * them as 64-bit pairs; reading them as BigInts allocates two per row, so read the low words (little-endian, and a
 * chunk's child vector is far below 2^32). Null when the binding does not expose them (then ask per row).
 */
function entryWords(lv: DuckDBListVector, rows: number): Uint32Array | null {
  const data = (lv as unknown as { entryData?: unknown }).entryData;
  if (data instanceof BigUint64Array && data.length >= rows * 2 && LITTLE_ENDIAN) return new Uint32Array(data.buffer, data.byteOffset, rows * 4);
  return null;
}
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** The first m items of a vector's numbers, as a view when it is a typed array. */
function prefix(src: ArrayLike<number>, m: number): ArrayLike<number> {
  if (src.length === m) return src;
  return slicePart(src, 0, m);
}

function slicePart(src: ArrayLike<number>, start: number, end: number): ArrayLike<number> {
  const sub = (src as { subarray?: (s: number, e: number) => ArrayLike<number> }).subarray;
  return sub ? sub.call(src, start, end) : (Array.prototype.slice.call(src, start, end) as number[]);
}

/** Columns of an event query: user_id?, item_id, ts, seq, author_id, tags, play_ms, duration_ms, labels (no NULLs). */
class EventChunks {
  length = 0;
  chunks: DuckDBDataChunk[] = [];
  constructor(readonly withUser: boolean) {}

  async readAll(result: DuckDBResult): Promise<void> {
    for (;;) {
      const chunk = await result.fetchChunk();
      if (!chunk || chunk.rowCount === 0) break;
      this.chunks.push(chunk);
      this.length += chunk.rowCount;
    }
  }

  /** Flattens the chunks into typed columns. */
  columns(): EventColumns & { userIdAll: Int32Array } {
    return gatherRows(
      this.chunks.map((chunk) => ({ chunk, start: 0, end: chunk.rowCount })),
      this.withUser,
    );
  }

  /**
   * Each user's rows as segments of chunks, in result order (rows come object by object, each object sorted by
   * user; a user's rows from several objects form several runs). Needs the user_id column.
   */
  segmentsByUser(): Map<number, RowSegment[]> {
    const byUser = new Map<number, RowSegment[]>();
    for (const chunk of this.chunks) {
      // rowCount is a call into the binding: read it once.
      const m = chunk.rowCount;
      const uid = prefix(vectorItems(chunk.getColumnVector(0)), m);
      for (let r = 0; r < m; ) {
        const u = uid[r]!;
        let e = r + 1;
        while (e < m && uid[e] === u) e++;
        const list = byUser.get(u);
        if (list) list.push({ chunk, start: r, end: e });
        else byUser.set(u, [{ chunk, start: r, end: e }]);
        r = e;
      }
    }
    return byUser;
  }
}

/** Rows [start, end) of one result chunk. */
interface RowSegment {
  chunk: DuckDBDataChunk;
  start: number;
  end: number;
}

/**
 * Copies the rows of `segments` (in order) from the chunks' vectors into typed columns: numeric columns by
 * typed-array copies of the vectors' buffers, tags by runs of the list child vectors. Columns of the chunks:
 * user_id (when `userColumn`; copied out when `withUser`), item_id, ts, seq, author_id, tags, play_ms, duration_ms, labels.
 */
function gatherRows(segments: RowSegment[], userColumn: boolean, withUser = userColumn): EventColumns & { userIdAll: Int32Array } {
  let n = 0;
  for (const sg of segments) n += sg.end - sg.start;
  const off = userColumn ? 1 : 0;
  const userId = new Int32Array(withUser ? n : 0);
  const itemId = new Int32Array(n);
  const ts = new Float64Array(n);
  const seq = new Int32Array(n);
  const authorId = new Int32Array(n);
  const playMs = new Float32Array(n);
  const durationMs = new Float32Array(n);
  const labels = new Uint8Array(n);
  const tagOffsets = new Int32Array(n + 1);
  // Runs [start, end) of child vectors holding the tag ids in row order (usually one per chunk).
  const tagParts: { child: ArrayLike<number>; start: number; end: number }[] = [];
  let row = 0;
  let tagCount = 0;
  for (const { chunk, start, end } of segments) {
    const m = end - start;
    const set = (dst: { set(a: ArrayLike<number>, o: number): void }, col: number) => dst.set(slicePart(vectorItems(chunk.getColumnVector(col)), start, end), row);
    if (withUser) set(userId, 0);
    set(itemId, off);
    set(ts, off + 1);
    set(seq, off + 2);
    set(authorId, off + 3);
    set(playMs, off + 5);
    set(durationMs, off + 6);
    set(labels, off + 7);
    const lv = chunk.getColumnVector(off + 4) as DuckDBListVector;
    const child = vectorItems(lv.childVector);
    // The writer never stores NULL tag lists (it writes []); a NULL read anyway counts as empty.
    const validity = (lv as unknown as { validity?: { data?: unknown; itemValid(i: number): boolean } }).validity;
    const nullable = validity !== undefined && validity.data != null ? validity : null;
    const words = entryWords(lv, chunk.rowCount);
    let ps = 0;
    let pe = 0;
    for (let i = start; i < end; i++) {
      let len: number;
      let o: number;
      if (words) {
        o = words[i * 4]!;
        len = words[i * 4 + 2]!;
      } else {
        o = lv.getEntryOffset(i);
        len = lv.getEntryLength(i);
      }
      if (nullable && !nullable.itemValid(i)) len = 0;
      if (len > 0) {
        // Consecutive rows are usually adjacent in the child vector: extend the current run.
        if (o !== pe || pe === ps) {
          if (pe > ps) tagParts.push({ child, start: ps, end: pe });
          ps = o;
        }
        pe = o + len;
      }
      tagCount += len;
      tagOffsets[row + i - start + 1] = tagCount;
    }
    if (pe > ps) tagParts.push({ child, start: ps, end: pe });
    row += m;
  }
  const tagIds = new Int32Array(tagCount);
  let t = 0;
  for (const p of tagParts) {
    tagIds.set(slicePart(p.child, p.start, p.end), t);
    t += p.end - p.start;
  }
  return { length: n, userId, userIdAll: userId, itemId, ts, seq, authorId, tagOffsets, tagIds, playMs, durationMs, labels, source: '' };
}

/** ts ascending with NaN (unknown) first, then seq: the chronological order of a history. */
function chronoBefore(tsA: number, seqA: number, tsB: number, seqB: number): boolean {
  const na = Number.isNaN(tsA);
  const nb = Number.isNaN(tsB);
  if (na !== nb) return na;
  if (!na && tsA !== tsB) return tsA < tsB;
  return seqA < seqB;
}

/** Rows `idx` (in that order) of columns `c` as one user's history. */
function gatherHistory(userId: number, c: EventColumns, idx: ArrayLike<number>): History {
  const n = idx.length;
  const h = allocHistory(userId, n);
  let tags = 0;
  for (let i = 0; i < n; i++) tags += c.tagOffsets[idx[i]! + 1]! - c.tagOffsets[idx[i]!]!;
  h.tagIds = new Int32Array(tags);
  let t = 0;
  for (let i = 0; i < n; i++) {
    const r = idx[i]!;
    h.itemId[i] = c.itemId[r]!;
    h.ts[i] = c.ts[r]!;
    h.seq[i] = c.seq[r]!;
    h.authorId[i] = c.authorId[r]!;
    h.playMs[i] = c.playMs[r]!;
    h.durationMs[i] = c.durationMs[r]!;
    h.labels[i] = c.labels[r]!;
    for (let k = c.tagOffsets[r]!; k < c.tagOffsets[r + 1]!; k++) h.tagIds[t++] = c.tagIds[k]!;
    h.tagOffsets[i + 1] = t;
  }
  return h;
}

/** One user's rows [start, end) of `c`, in chronological order (sorted here when several objects interleave). */
function historyFromRows(userId: number, c: EventColumns, start: number, end: number): History {
  let sorted = true;
  for (let i = start + 1; i < end; i++) {
    if (chronoBefore(c.ts[i]!, c.seq[i]!, c.ts[i - 1]!, c.seq[i - 1]!)) {
      sorted = false;
      break;
    }
  }
  if (sorted && start === 0 && end === c.length) {
    // The whole result is this user's history: hand over the columns without copying.
    return { userId, length: c.length, itemId: c.itemId, ts: c.ts, seq: c.seq, authorId: c.authorId, tagOffsets: c.tagOffsets, tagIds: c.tagIds, playMs: c.playMs, durationMs: c.durationMs, labels: c.labels };
  }
  // A copy, not views: a kept history must not pin its whole scan group's buffers (a memcpy is cheap next to decoding).
  if (sorted) {
    const v = sliceHistory({ ...c, userId }, start, end);
    return {
      userId,
      length: v.length,
      itemId: v.itemId.slice(),
      ts: v.ts.slice(),
      seq: v.seq.slice(),
      authorId: v.authorId.slice(),
      tagOffsets: v.tagOffsets,
      tagIds: v.tagIds.slice(),
      playMs: v.playMs.slice(),
      durationMs: v.durationMs.slice(),
      labels: v.labels.slice(),
    };
  }
  const idx = new Int32Array(end - start);
  for (let i = 0; i < idx.length; i++) idx[i] = start + i;
  sortChronological(c, idx);
  return gatherHistory(userId, c, idx);
}

const EVENT_SELECT =
  `item_id, coalesce(ts::DOUBLE, 'NaN'::DOUBLE) AS ts, seq, coalesce(author_id, 0) AS author_id, ` +
  `tags, coalesce(play_ms, 0)::FLOAT AS play_ms, coalesce(duration_ms, 0)::FLOAT AS duration_ms, ` +
  `coalesce(labels, 0)::UTINYINT AS labels`;

export class ParquetHistoryStore implements HistoryStore {
  private lock: Promise<unknown> = Promise.resolve();
  private partitionCache: Map<number, PartitionRef[]> | null = null;
  private stageCounter = 0;
  /** Called after the database is closed (releases the object store when the store opened it). */
  onClose: (() => void) | null = null;
  readonly rowGroupSize: number;
  readonly scanBatchEvents: number;
  readonly buckets: number;

  constructor(
    readonly config: GemsConfig,
    readonly db: Database,
    readonly objects: ObjectStore,
    opts: OpenHistoryStoreOptions = {},
  ) {
    this.rowGroupSize = opts.rowGroupSize ?? config.history.rowGroupSize ?? 32_768;
    this.scanBatchEvents = opts.scanBatchEvents ?? config.history.scanBatchEvents ?? 1_000_000;
    this.buckets = config.history.userBuckets;
  }

  private get conn(): DuckDBConnection {
    return this.db.conn;
  }

  /** Runs `fn` alone on the connection (DuckDB runs one statement at a time; transactions must not interleave). */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(fn, fn);
    this.lock = run.catch(() => undefined);
    return run;
  }

  /** Runs `fn` with exclusive use of the DuckDB connection (ingest SQL on staging tables). */
  withDb<T>(fn: (db: Database) => Promise<T>): Promise<T> {
    return this.exclusive(() => fn(this.db));
  }

  bucketOf(userId: number): number {
    return hash32(userId) % this.buckets;
  }

  // ---- writes ----------------------------------------------------------------------------------------------------

  async append(batch: EventColumns): Promise<AppendResult> {
    validateBatch(batch);
    const order = batchOrder(batch);
    return this.exclusive(async () => {
      const stage = await this.createStageUnlocked();
      try {
        await this.loadColumnsUnlocked(stage, batch);
        return await this.commitStageUnlocked(stage, batch.source, undefined, order);
      } finally {
        await this.conn.run(`DROP TABLE IF EXISTS ${stage}`);
      }
    });
  }

  /** A new temp staging table (columns STAGE_COLUMNS); the caller fills it and passes it to commitStage. */
  createStage(): Promise<string> {
    return this.exclusive(() => this.createStageUnlocked());
  }

  private async createStageUnlocked(): Promise<string> {
    const name = `gems_stage_${process.pid}_${++this.stageCounter}`;
    await this.conn.run(`CREATE OR REPLACE TEMP TABLE ${name} (${STAGE_COLUMNS})`);
    return name;
  }

  async dropStage(stage: string): Promise<void> {
    await this.exclusive(() => this.conn.run(`DROP TABLE IF EXISTS ${stage}`));
  }

  /** Appends typed columns to a staging table (the bucket column is computed here). */
  loadColumns(stage: string, batch: Omit<EventColumns, 'source'>): Promise<void> {
    return this.exclusive(() => this.loadColumnsUnlocked(stage, batch));
  }

  private async loadColumnsUnlocked(stage: string, b: Omit<EventColumns, 'source'>): Promise<void> {
    const appender = await this.conn.createAppender(stage, 'main', 'temp');
    try {
      const CH = 2048;
      const chunk = DuckDBDataChunk.create(STAGE_TYPES, CH);
      const bucket = new Int32Array(CH);
      for (let off = 0; off < b.length; off += CH) {
        const m = Math.min(CH, b.length - off);
        chunk.rowCount = m;
        for (let i = 0; i < m; i++) bucket[i] = hash32(b.userId[off + i]!) % this.buckets;
        const numeric: [number, ArrayLike<number> & { subarray(s: number, e: number): ArrayLike<number> }][] = [
          [0, b.userId],
          [1, b.itemId],
          [2, b.ts],
          [3, b.seq],
          [4, b.authorId],
          [6, b.playMs],
          [7, b.durationMs],
          [8, b.labels],
        ];
        for (const [col, src] of numeric) writeVector(chunk.getColumnVector(col), src.subarray(off, off + m));
        writeVector(chunk.getColumnVector(9), bucket.subarray(0, m));
        const lv = chunk.getColumnVector(5);
        for (let i = 0; i < m; i++) {
          const r = off + i;
          const a = b.tagOffsets[r]!;
          const e = b.tagOffsets[r + 1]!;
          const vals: number[] = [];
          for (let k = a; k < e; k++) vals.push(b.tagIds[k]!);
          lv.setItem(i, listValue(vals) as never);
        }
        lv.flush();
        appender.appendDataChunk(chunk);
      }
      appender.flushSync();
    } finally {
      appender.closeSync();
    }
  }

  /** True when a file with this content hash has been ingested. */
  async fileIngested(sha256: string): Promise<{ path: string; rowsLoaded: number; ingestedAt: number } | null> {
    const r = await this.exclusive(() =>
      this.db.one<{ path: string; rows_loaded: bigint; ingested_at: bigint }>(`SELECT path, rows_loaded, ingested_at FROM ingest_files WHERE sha256 = $1`, [sha256]),
    );
    return r ? { path: r.path, rowsLoaded: Number(r.rows_loaded), ingestedAt: Number(r.ingested_at) } : null;
  }

  /**
   * Writes a staging table's rows as Parquet objects and commits them (manifest, user and item counters, and the
   * ingested file's hash when given) in one transaction. Drops duplicates of stored events and, unless the caller
   * vouches that (user_id, seq) is unique in the stage, duplicates within the stage. `sorted`: the stage's rows are
   * already in (user_id, ts, seq) order, so objects are written without sorting.
   */
  commitStage(stage: string, source: string, file?: IngestFileRecord, hints: StageHints = {}): Promise<AppendResult> {
    return this.exclusive(() => this.commitStageUnlocked(stage, source, file, hints));
  }

  private async commitStageUnlocked(stage: string, source: string, file?: IngestFileRecord, hints: StageHints = {}): Promise<AppendResult> {
    if (!source) throw new Error('append: batch.source is required (it is part of the dedup key)');
    const c = this.conn;
    const batchId = `${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
    const now = Date.now();
    const dt = new Date(now).toISOString().slice(0, 10);
    const t0 = performance.now();
    const phase: Record<string, number> = {};
    const mark = (name: string) => (phase[name] = Math.round(performance.now() - t0));
    const staged = Number((await this.db.one<{ n: bigint }>(`SELECT count(*) AS n FROM ${stage}`))!.n);
    let sorted = hints.sorted === true;
    if (!hints.unique) {
      await c.run(`CREATE OR REPLACE TEMP TABLE ${stage} AS SELECT DISTINCT ON (user_id, item_id, ts, seq) * FROM ${stage}`);
      sorted = false;
    }
    // Drop events already stored: only users that exist can have them, and only in their bucket's objects.
    const known = await this.db.rows<{ bucket: number }>(`SELECT DISTINCT s.bucket FROM ${stage} s SEMI JOIN users u ON s.user_id = u.user_id ORDER BY 1`);
    if (known.length > 0) {
      const parts = await this.partitionsForBucketsUnlocked(known.map((k) => k.bucket));
      if (parts.length > 0) {
        const paths = await Promise.all(parts.map((p) => this.localPathOf(p)));
        await c.run(
          `CREATE OR REPLACE TEMP TABLE ${stage} AS
           SELECT s.* FROM ${stage} s ANTI JOIN (
             SELECT user_id, item_id, coalesce(ts, ${NO_TS}) AS tsk, seq
             FROM read_parquet($1, hive_partitioning = false)
             WHERE source = $2 AND user_id IN (SELECT user_id FROM ${stage} SEMI JOIN users USING (user_id))
           ) o ON s.user_id = o.user_id AND s.item_id = o.item_id AND ${STAGE_TS_KEY('s')} = o.tsk AND s.seq = o.seq`,
          [listValue(paths), source],
          [LIST(VARCHAR), VARCHAR],
        );
      }
    }
    mark('dedup');
    const groups = await this.db.rows<{ bucket: number; n: bigint; lo: number; hi: number }>(
      `SELECT bucket, count(*) AS n, min(user_id) AS lo, max(user_id) AS hi FROM ${stage} GROUP BY bucket ORDER BY bucket`,
    );
    const added = groups.reduce((s, g) => s + Number(g.n), 0);
    const written: { key: string; bucket: number; rows: number; lo: number; hi: number; bytes: number; etag: string }[] = [];
    const tmp = mkdtempSync(join(tmpdir(), 'gems-part-'));
    try {
      for (const g of groups) {
        const b = String(g.bucket).padStart(3, '0');
        const key = `events/bucket=${b}/dt=${dt}/part-${batchId}-${b}.parquet`;
        const file = join(tmp, `part-${b}.parquet`);
        // COPY takes no parameters; the source name is quoted as a SQL literal, the rest are our own numbers.
        await c.run(
          `COPY (SELECT user_id, item_id, ${STAGE_TS_BIGINT} AS ts, seq, coalesce(author_id, 0) AS author_id, coalesce(tags, []) AS tags,
                        coalesce(play_ms, 0) AS play_ms, coalesce(duration_ms, 0) AS duration_ms, coalesce(labels, 0) AS labels, ${sqlString(source)} AS source
                 FROM ${stage} WHERE bucket = ${Number(g.bucket)} ${sorted ? '' : 'ORDER BY user_id, ts NULLS FIRST, seq'})
           TO ${sqlString(file)} (FORMAT parquet, ROW_GROUP_SIZE ${this.rowGroupSize})`,
        );
        const info = await this.objects.putFile(key, file);
        written.push({ key, bucket: g.bucket, rows: Number(g.n), lo: g.lo, hi: g.hi, bytes: statSync(file).size, etag: info.etag });
        rmSync(file, { force: true });
      }
    } catch (e) {
      await Promise.all(written.map((w) => this.objects.delete(w.key).catch(() => undefined)));
      throw e;
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
    mark('write');
    try {
      await this.db.transaction(async () => {
        for (const w of written) {
          await c.run(`INSERT INTO partitions VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`, [
            w.key, w.bucket, dt, w.rows, w.lo, w.hi, w.bytes, w.etag, batchId, now,
          ]);
        }
        if (added > 0) {
          await c.run(
            `INSERT INTO users
             SELECT user_id, any_value(bucket), count(*), min(${STAGE_TS_BIGINT}), max(${STAGE_TS_BIGINT}), max(seq), $1::BIGINT FROM ${stage} GROUP BY user_id
             ON CONFLICT (user_id) DO UPDATE SET
               n_events = users.n_events + excluded.n_events,
               first_ts = least(users.first_ts, excluded.first_ts),
               last_ts = greatest(users.last_ts, excluded.last_ts),
               last_seq = greatest(users.last_seq, excluded.last_seq),
               last_ingested_at = excluded.last_ingested_at`,
            [now],
          );
          await c.run(
            `INSERT INTO item_stats SELECT item_id, count(*), min(${STAGE_TS_BIGINT}), max(${STAGE_TS_BIGINT}) FROM ${stage} GROUP BY item_id
             ON CONFLICT (item_id) DO UPDATE SET
               n_events = item_stats.n_events + excluded.n_events,
               first_ts = least(item_stats.first_ts, excluded.first_ts),
               last_ts = greatest(item_stats.last_ts, excluded.last_ts)`,
          );
        }
        if (file) {
          await c.run(`INSERT OR REPLACE INTO ingest_files VALUES ($1, $2, $3, $4, $5)`, [file.sha256, file.path, file.source, added, now]);
        }
      });
    } catch (e) {
      await Promise.all(written.map((w) => this.objects.delete(w.key).catch(() => undefined)));
      throw e;
    } finally {
      this.partitionCache = null;
    }
    mark('commit');
    log.debug('committed batch', { batchId, source, staged, added, duplicates: staged - added, objects: written.length, ms: phase });
    return { added, duplicates: staged - added, objects: written.map((w) => w.key) };
  }

  async upsertItems(items: Item[]): Promise<void> {
    if (items.length === 0) return;
    await this.exclusive(async () => {
      const tmp = `gems_items_${process.pid}_${++this.stageCounter}`;
      await this.conn.run(`CREATE OR REPLACE TEMP TABLE ${tmp} (item_id INTEGER, author_id INTEGER, tags INTEGER[], title VARCHAR, attrs VARCHAR)`);
      try {
        const ap = await this.conn.createAppender(tmp, 'main', 'temp');
        for (const it of items) {
          if (!Number.isInteger(it.itemId)) throw new Error(`upsertItems: item id ${String(it.itemId)} is not an integer`);
          ap.appendInteger(it.itemId);
          ap.appendInteger(it.authorId | 0);
          ap.appendList(listValue(it.tags), LIST(INTEGER));
          ap.appendVarchar(it.title ?? '');
          if (it.attrs) ap.appendVarchar(JSON.stringify(it.attrs));
          else ap.appendNull();
          ap.endRow();
        }
        ap.flushSync();
        ap.closeSync();
        await this.conn.run(`INSERT OR REPLACE INTO items SELECT item_id, author_id, tags, title, attrs::JSON FROM ${tmp}`);
      } finally {
        await this.conn.run(`DROP TABLE IF EXISTS ${tmp}`);
      }
    });
  }

  async tagIds(names: string[]): Promise<number[]> {
    if (names.length === 0) return [];
    return this.exclusive(async () => {
      const unique = [...new Set(names)];
      await this.db.transaction(async () => {
        // New names get ids after the current maximum, in order of first appearance (ids start at 1; 0 = none).
        await this.conn.run(
          `INSERT INTO tag_vocab
           SELECT (SELECT coalesce(max(tag_id), 0) FROM tag_vocab) + row_number() OVER (ORDER BY i), name
           FROM (SELECT unnest($1) AS name, generate_subscripts($1, 1) AS i) n
           WHERE name NOT IN (SELECT name FROM tag_vocab)`,
          [listValue(unique)],
          [LIST(VARCHAR)],
        );
      });
      const rows = await this.db.rows<{ tag_id: number; name: string }>(`SELECT tag_id, name FROM tag_vocab WHERE name IN (SELECT unnest($1))`, [
        listValue(unique),
      ]);
      const byName = new Map(rows.map((r) => [r.name, r.tag_id]));
      return names.map((n) => byName.get(n)!);
    });
  }

  /** Tag names by id. */
  async tagNames(): Promise<Map<number, string>> {
    const rows = await this.exclusive(() => this.db.rows<{ tag_id: number; name: string }>(`SELECT tag_id, name FROM tag_vocab`));
    return new Map(rows.map((r) => [r.tag_id, r.name]));
  }

  // ---- reads -----------------------------------------------------------------------------------------------------

  async items(): Promise<ItemColumns> {
    return this.exclusive(async () => {
      const reader = await this.conn.runAndReadAll(
        `SELECT item_id, coalesce(author_id, 0) AS author_id, coalesce(tags, []::INTEGER[]) AS tags, coalesce(title, '') AS title FROM items ORDER BY item_id`,
      );
      const cols = columnsJS(reader) as [number[], number[], number[][], string[]];
      const n = cols[0].length;
      const tagOffsets = new Int32Array(n + 1);
      let t = 0;
      for (let i = 0; i < n; i++) {
        t += cols[2][i]!.length;
        tagOffsets[i + 1] = t;
      }
      const tagIds = new Int32Array(t);
      t = 0;
      for (let i = 0; i < n; i++) for (const x of cols[2][i]!) tagIds[t++] = x;
      return { length: n, itemId: Int32Array.from(cols[0]), authorId: Int32Array.from(cols[1]), tagOffsets, tagIds, titles: cols[3] };
    });
  }

  private async loadPartitionsUnlocked(): Promise<Map<number, PartitionRef[]>> {
    if (this.partitionCache) return this.partitionCache;
    const rows = await this.db.rows<{ key: string; bucket: number; min_user: number; max_user: number; bytes: bigint; etag: string; created_at: bigint }>(
      `SELECT key, bucket, min_user, max_user, bytes, etag, created_at FROM partitions ORDER BY bucket, key`,
    );
    const m = new Map<number, PartitionRef[]>();
    for (const r of rows) {
      let arr = m.get(r.bucket);
      if (!arr) m.set(r.bucket, (arr = []));
      arr.push({
        key: r.key,
        bucket: r.bucket,
        minUser: r.min_user,
        maxUser: r.max_user,
        bytes: Number(r.bytes),
        etag: r.etag,
        createdAt: Number(r.created_at),
      });
    }
    this.partitionCache = m;
    return m;
  }

  private async partitionsForBucketsUnlocked(buckets: number[]): Promise<PartitionRef[]> {
    const m = await this.loadPartitionsUnlocked();
    return buckets.flatMap((b) => m.get(b) ?? []);
  }

  /** A local file for a committed object; the manifest's size and ETag spare S3 stores a HEAD request. */
  private localPathOf(p: PartitionRef): Promise<string> {
    const known: ObjectInfo = { key: p.key, size: p.bytes, etag: p.etag, lastModified: new Date(p.createdAt) };
    return (this.objects.localPath as (key: string, known?: ObjectInfo) => Promise<string>).call(this.objects, p.key, known);
  }

  /** Local paths of the committed objects that may hold users in [lo, hi] of the given buckets. */
  private async pathsFor(buckets: Iterable<number>, lo: number, hi: number): Promise<string[]> {
    const m = await this.loadPartitionsUnlocked();
    const parts: PartitionRef[] = [];
    for (const b of buckets) for (const p of m.get(b) ?? []) if (p.maxUser >= lo && p.minUser <= hi) parts.push(p);
    parts.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    return Promise.all(parts.map((p) => this.localPathOf(p)));
  }

  async userHistory(userId: number, asOf?: AsOf, range?: HistoryRange): Promise<History> {
    if (!Number.isInteger(userId)) throw new Error(`userHistory: user id ${String(userId)} is not an integer`);
    validateRange(range);
    return this.exclusive(async () => (await this.readUserUnlocked(userId, asOf, range)).history);
  }

  /**
   * One user's events (as of `asOf`, within `range`), and the number of events before `lastN` is applied. `lastN`
   * reads in two steps: the time of the n-th newest event from the narrow ts column, then every column only from
   * that time on (a ts bound, so Parquet statistics skip the older row groups).
   */
  private async readUserUnlocked(userId: number, asOf: AsOf | undefined, range: HistoryRange | undefined): Promise<{ history: History; total: number }> {
    const paths = await this.pathsFor([this.bucketOf(userId)], userId, userId);
    if (paths.length === 0) return { history: emptyHistory(userId), total: 0 };
    const params: DuckDBValue[] = [listValue(paths), userId];
    const types: DuckDBType[] = [LIST(VARCHAR), INTEGER];
    const conds = ['user_id = $2'];
    const param = (v: DuckDBValue, t: DuckDBType) => {
      params.push(v);
      types.push(t);
      return `$${params.length}`;
    };
    if (asOf?.ts !== undefined) {
      // Events without a timestamp cannot be shown to precede a time cut-off, so they are left out.
      conds.push(`ts IS NOT NULL AND ts <= ${param(asOf.ts, DOUBLE)}`);
    }
    if (asOf?.seq !== undefined) conds.push(`seq <= ${param(asOf.seq, DOUBLE)}`);
    if (range?.after) conds.push(afterCondition(range.after, param));
    const from = `FROM read_parquet($1, hive_partitioning = false)`;
    const lastN = range?.lastN;
    let total = -1;
    if (lastN !== undefined) {
      // Step 1: the narrow ts column of the selected events gives their number and the time of the n-th newest
      // (nearly always in order already: one sorted run per object).
      const r = await this.conn.run(`SELECT coalesce(ts::DOUBLE, 'NaN'::DOUBLE) AS ts ${from} WHERE ${conds.join(' AND ')}`, params, types);
      const times = await readDoubles(r);
      total = times.length;
      if (total === 0 || lastN === 0) return { history: emptyHistory(userId), total };
      if (total > lastN) {
        const cut = nthInTimeOrder(times, total - lastN);
        // Step 2 reads everything from that time on: a suffix of the chronological order that holds the last n.
        // (Events without a time sort first; a cut among them reads them all, and the tail is taken below.)
        if (!Number.isNaN(cut)) conds.push(`ts >= ${param(BigInt(cut), BIGINT)}`);
      }
    }
    const result = await this.conn.run(`SELECT ${EVENT_SELECT} ${from} WHERE ${conds.join(' AND ')}`, params, types);
    const chunks = new EventChunks(false);
    await chunks.readAll(result);
    if (chunks.length === 0) return { history: emptyHistory(userId), total: Math.max(total, 0) };
    let h = historyFromRows(userId, chunks.columns(), 0, chunks.length);
    if (lastN !== undefined && h.length > lastN) h = copyHistory(sliceHistory(h, h.length - lastN, h.length));
    return { history: h, total: total < 0 ? h.length : total };
  }

  async userStreams(userId: number, tRecent: number, tMid: number, asOf?: AsOf, opts: StreamOptions = {}): Promise<StoredStreams> {
    if (!(Number.isInteger(tRecent) && Number.isInteger(tMid) && tRecent > 0 && tMid > tRecent)) {
      throw new Error(`userStreams: need integers 0 < tRecent (${tRecent}) < tMid (${tMid})`);
    }
    if (opts.lifecycle === 'count') {
      if (!Number.isInteger(userId)) throw new Error(`userStreams: user id ${String(userId)} is not an integer`);
      const { history, total } = await this.exclusive(() => this.readUserUnlocked(userId, asOf, { lastN: tMid }));
      return { ...cutStreams(history, tRecent, tMid), lifecycleLength: Math.max(0, total - tMid) };
    }
    const s = cutStreams(await this.userHistory(userId, asOf), tRecent, tMid);
    return { ...s, lifecycleLength: s.lifecycle.length };
  }

  async userEventCounts(userIds: ArrayLike<number>): Promise<Float64Array> {
    const ids = Array.from(userIds);
    for (const u of ids) if (!Number.isInteger(u)) throw new Error(`userEventCounts: user id ${String(u)} is not an integer`);
    const out = new Float64Array(ids.length);
    if (ids.length === 0) return out;
    const rows = await this.exclusive(async () => {
      const reader = await this.conn.runAndReadAll(
        `SELECT user_id, n_events::DOUBLE AS n FROM users WHERE user_id IN (SELECT unnest($1))`,
        [listValue(ids)],
        [LIST(INTEGER)],
      );
      return columnsJS(reader) as [number[], number[]];
    });
    const byUser = new Map<number, number>();
    for (let i = 0; i < rows[0].length; i++) byUser.set(rows[0][i]!, rows[1][i]!);
    for (let i = 0; i < ids.length; i++) out[i] = byUser.get(ids[i]!) ?? 0;
    return out;
  }

  /** Selected users (ascending) with their bucket and event count. */
  private async selectUsers(opts: ScanOptions): Promise<{ ids: Int32Array; buckets: Int32Array; counts: Float64Array }> {
    const rows = await this.exclusive(async () => {
      const reader = await this.conn.runAndReadAll(
        `SELECT user_id, bucket, n_events::DOUBLE AS n FROM users WHERE user_id > $1 ORDER BY user_id`,
        [opts.afterUserId ?? -2147483649],
        [DOUBLE],
      );
      return columnsJS(reader) as [number[], number[], number[]];
    });
    const only = opts.userIds ? new Set(Array.from(opts.userIds)) : null;
    const shard = opts.shard;
    if (shard && !(Number.isInteger(shard.count) && shard.count > 0 && Number.isInteger(shard.index) && shard.index >= 0 && shard.index < shard.count)) {
      throw new Error(`scanHistories: invalid shard ${shard.index}/${shard.count}`);
    }
    const keep: number[] = [];
    for (let i = 0; i < rows[0].length; i++) {
      const u = rows[0][i]!;
      if (only && !only.has(u)) continue;
      if (shard && hash32(u) % shard.count !== shard.index) continue;
      keep.push(i);
    }
    return {
      ids: Int32Array.from(keep, (i) => rows[0][i]!),
      buckets: Int32Array.from(keep, (i) => rows[1][i]!),
      counts: Float64Array.from(keep, (i) => rows[2][i]!),
    };
  }

  async *scanHistories(opts: ScanOptions = {}): AsyncIterable<History> {
    const sel = await this.selectUsers(opts);
    const n = sel.ids.length;
    // Groups of consecutive selected users holding at most scanBatchEvents events each (at least one user).
    const groups: [number, number][] = [];
    for (let i = 0; i < n; ) {
      let j = i;
      let events = 0;
      while (j < n && (j === i || events + sel.counts[j]! <= this.scanBatchEvents)) events += sel.counts[j++]!;
      groups.push([i, j]);
      i = j;
    }
    // DuckDB reads group g+1 on its own threads while this thread converts and hands out group g (at most two
    // groups in memory). A prefetch failure is reported when its group is reached.
    const fetchGroup = (g: number): Promise<EventChunks | null> => {
      const [i, j] = groups[g]!;
      const buckets = new Set(sel.buckets.subarray(i, j));
      const lo = sel.ids[i]!;
      const hi = sel.ids[j - 1]!;
      const wanted = sel.ids.subarray(i, j);
      return this.exclusive(async () => {
        const paths = await this.pathsFor(buckets, lo, hi);
        if (paths.length === 0) return null;
        const dense = hi - lo + 1 === wanted.length;
        const result = await this.conn.run(
          `SELECT user_id, ${EVENT_SELECT} FROM read_parquet($1, hive_partitioning = false)
           WHERE user_id BETWEEN $2 AND $3 ${dense ? '' : 'AND list_contains($4, user_id)'}`,
          dense ? [listValue(paths), lo, hi] : [listValue(paths), lo, hi, listValue(Array.from(wanted))],
          dense ? [LIST(VARCHAR), INTEGER, INTEGER] : [LIST(VARCHAR), INTEGER, INTEGER, LIST(INTEGER)],
        );
        const chunks = new EventChunks(true);
        await chunks.readAll(result);
        return chunks;
      });
    };
    const settle = (p: Promise<EventChunks | null>) => {
      p.catch(() => undefined);
      return p;
    };
    let next = groups.length > 0 ? settle(fetchGroup(0)) : null;
    for (let g = 0; g < groups.length; g++) {
      const chunks = await next!;
      next = g + 1 < groups.length ? settle(fetchGroup(g + 1)) : null;
      const [i, j] = groups[g]!;
      if (!chunks) {
        for (let k = i; k < j; k++) yield emptyHistory(sel.ids[k]!);
        continue;
      }
      // Each user's rows are copied straight from the chunks into arrays of its own (one copy; a kept history pins
      // nothing of the group). Runs from several objects are concatenated and put in order by historyFromRows.
      const byUser = chunks.segmentsByUser();
      chunks.chunks = [];
      for (let k = i; k < j; k++) {
        const u = sel.ids[k]!;
        const segments = byUser.get(u);
        if (!segments) {
          yield emptyHistory(u);
          continue;
        }
        byUser.delete(u);
        const cols = gatherRows(segments, true, false);
        yield historyFromRows(u, cols, 0, cols.length);
      }
    }
  }

  async usersChangedSince(watermarkMs: number, by: 'event' | 'ingested' = 'event'): Promise<Int32Array> {
    const col = by === 'ingested' ? 'last_ingested_at' : 'last_ts';
    return this.exclusive(async () => {
      const reader = await this.conn.runAndReadAll(`SELECT user_id FROM users WHERE ${col} > $1 ORDER BY user_id`, [watermarkMs], [DOUBLE]);
      return Int32Array.from(columnsJS(reader)[0] as number[]);
    });
  }

  async userIds(): Promise<Int32Array> {
    return this.exclusive(async () => {
      const reader = await this.conn.runAndReadAll(`SELECT user_id FROM users ORDER BY user_id`);
      return Int32Array.from(columnsJS(reader)[0] as number[]);
    });
  }

  async stats(): Promise<StoreStats> {
    return this.exclusive(async () => {
      const u = (await this.db.one<{ users: bigint; events: number | null; mn: number | null; mean: number | null; mx: number | null }>(
        `SELECT count(*) AS users, sum(n_events)::DOUBLE AS events, min(n_events)::DOUBLE AS mn, avg(n_events) AS mean, max(n_events)::DOUBLE AS mx FROM users`,
      ))!;
      const it = (await this.db.one<{ items: bigint; catalog: bigint; tags: bigint; parts: bigint; bytes: number | null }>(
        `SELECT (SELECT count(*) FROM item_stats) AS items, (SELECT count(*) FROM items) AS catalog, (SELECT count(*) FROM tag_vocab) AS tags,
                (SELECT count(*) FROM partitions) AS parts, (SELECT sum(bytes)::DOUBLE FROM partitions) AS bytes`,
      ))!;
      return {
        users: Number(u.users),
        items: Number(it.items),
        events: u.events ?? 0,
        historyLength: { min: u.mn ?? 0, mean: u.mean ?? 0, max: u.mx ?? 0 },
        catalogItems: Number(it.catalog),
        tags: Number(it.tags),
        partitions: Number(it.parts),
        partitionBytes: it.bytes ?? 0,
      };
    });
  }

  /**
   * Merges each bucket's objects into one (buckets with at least `minObjects` objects), so reads open fewer files
   * after many small appends. The merged object is written first, the manifest swap is one transaction, and the old
   * objects are deleted after it (a crash leaves orphans for removeOrphans, never a gap or a double).
   */
  async compact(minObjects = 2): Promise<{ buckets: number; objectsBefore: number; objectsAfter: number }> {
    return this.exclusive(async () => {
      const byBucket = await this.loadPartitionsUnlocked();
      let buckets = 0;
      let before = 0;
      let after = 0;
      for (const [bucket, parts] of [...byBucket].sort((a, b) => a[0] - b[0])) {
        before += parts.length;
        if (parts.length < minObjects) {
          after += parts.length;
          continue;
        }
        const paths = await Promise.all(parts.map((p) => this.localPathOf(p)));
        const now = Date.now();
        const dt = new Date(now).toISOString().slice(0, 10);
        const batchId = `${now.toString(36)}-${randomBytes(4).toString('hex')}`;
        const b = String(bucket).padStart(3, '0');
        const key = `events/bucket=${b}/dt=${dt}/part-${batchId}-${b}-compact.parquet`;
        const tmp = mkdtempSync(join(tmpdir(), 'gems-compact-'));
        const file = join(tmp, 'part.parquet');
        try {
          const pathList = `[${paths.map(sqlString).join(', ')}]`;
          await this.conn.run(
            `COPY (SELECT user_id, item_id, ts, seq, author_id, tags, play_ms, duration_ms, labels, source
                   FROM read_parquet(${pathList}, hive_partitioning = false) ORDER BY user_id, ts NULLS FIRST, seq)
             TO ${sqlString(file)} (FORMAT parquet, ROW_GROUP_SIZE ${this.rowGroupSize})`,
          );
          const stats = (await this.db.one<{ n: bigint; lo: number; hi: number }>(
            `SELECT count(*) AS n, min(user_id) AS lo, max(user_id) AS hi FROM read_parquet($1)`,
            [file],
          ))!;
          const info = await this.objects.putFile(key, file);
          try {
            await this.db.transaction(async () => {
              for (const p of parts) await this.conn.run(`DELETE FROM partitions WHERE key = $1`, [p.key]);
              await this.conn.run(`INSERT INTO partitions VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`, [
                key, bucket, dt, Number(stats.n), stats.lo, stats.hi, statSync(file).size, info.etag, batchId, now,
              ]);
            });
          } catch (e) {
            await this.objects.delete(key).catch(() => undefined);
            throw e;
          } finally {
            this.partitionCache = null;
          }
        } finally {
          rmSync(tmp, { recursive: true, force: true });
        }
        for (const p of parts) await this.objects.delete(p.key).catch((e: unknown) => log.warn('could not delete compacted object', { key: p.key, error: String(e) }));
        buckets++;
        after++;
      }
      return { buckets, objectsBefore: before, objectsAfter: after };
    });
  }

  /** Deletes objects under events/ that are not in the manifest and older than `minAgeMs` (crash leftovers). */
  async removeOrphans(minAgeMs = 3_600_000): Promise<string[]> {
    return this.exclusive(async () => {
      const known = new Set((await this.db.rows<{ key: string }>(`SELECT key FROM partitions`)).map((r) => r.key));
      const removed: string[] = [];
      for (const o of await this.objects.list('events/')) {
        if (known.has(o.key) || Date.now() - o.lastModified.getTime() < minAgeMs) continue;
        await this.objects.delete(o.key);
        removed.push(o.key);
      }
      return removed;
    });
  }

  async close(): Promise<void> {
    await this.exclusive(async () => {
      this.db.close();
      this.onClose?.();
    });
  }
}

/** Sorts row indices by (ts with unknown first, seq, row). */
function sortChronological(c: EventColumns, idx: Int32Array): void {
  idx.sort((a, b) => {
    const ta = c.ts[a]!;
    const tb = c.ts[b]!;
    const na = Number.isNaN(ta);
    const nb = Number.isNaN(tb);
    if (na !== nb) return na ? -1 : 1;
    if (!na && ta !== tb) return ta - tb;
    return c.seq[a]! - c.seq[b]! || a - b;
  });
}

function validateRange(range: HistoryRange | undefined): void {
  if (!range) return;
  if (range.lastN !== undefined && !(Number.isInteger(range.lastN) && range.lastN >= 0)) {
    throw new Error(`userHistory: range.lastN must be a non-negative integer, got ${String(range.lastN)}`);
  }
  const a = range.after;
  if (a !== undefined) {
    if (!(Number.isNaN(a.ts) || Number.isSafeInteger(a.ts))) throw new Error(`userHistory: range.after.ts must be an integer epoch ms or NaN, got ${String(a.ts)}`);
    if (!Number.isInteger(a.seq)) throw new Error(`userHistory: range.after.seq must be an integer, got ${String(a.seq)}`);
  }
}

/** SQL for "chronologically after (ts, seq)": unknown times come first, then ts, then seq. */
function afterCondition(after: { ts: number; seq: number }, param: (v: DuckDBValue, t: DuckDBType) => string): string {
  const seq = param(after.seq, INTEGER);
  if (Number.isNaN(after.ts)) return `(ts IS NOT NULL OR seq > ${seq})`;
  const ts = param(BigInt(after.ts), BIGINT);
  // The plain `ts >= t` lets Parquet statistics skip older row groups.
  return `ts >= ${ts} AND (ts > ${ts} OR seq > ${seq})`;
}

/** All values of a one-column DOUBLE result. */
async function readDoubles(result: DuckDBResult): Promise<Float64Array> {
  const parts: ArrayLike<number>[] = [];
  let n = 0;
  for (;;) {
    const chunk = await result.fetchChunk();
    if (!chunk || chunk.rowCount === 0) break;
    parts.push(prefix(vectorItems(chunk.getColumnVector(0)), chunk.rowCount));
    n += chunk.rowCount;
  }
  const out = new Float64Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** The k-th (0-based) of `times` in chronological order, NaN (unknown) first. Sorts only when out of order. */
function nthInTimeOrder(times: Float64Array, k: number): number {
  let sorted = true;
  for (let i = 1; i < times.length && sorted; i++) {
    const a = times[i - 1]!;
    const b = times[i]!;
    sorted = Number.isNaN(a) || (!Number.isNaN(b) && a <= b);
  }
  if (sorted) return times[k]!;
  // Unknown times become -Infinity (no real event has it) so they sort first.
  const keys = Float64Array.from(times, (t) => (Number.isNaN(t) ? -Infinity : t)).sort();
  return keys[k] === -Infinity ? NaN : keys[k]!;
}

/** A history that owns its buffers (a tail must not pin the whole read's arrays). */
function copyHistory(v: History): History {
  return {
    userId: v.userId,
    length: v.length,
    itemId: v.itemId.slice(),
    ts: v.ts.slice(),
    seq: v.seq.slice(),
    authorId: v.authorId.slice(),
    tagOffsets: v.tagOffsets.slice(),
    tagIds: v.tagIds.slice(),
    playMs: v.playMs.slice(),
    durationMs: v.durationMs.slice(),
    labels: v.labels.slice(),
  };
}

function validateBatch(b: EventColumns): void {
  const n = b.length;
  if (!Number.isInteger(n) || n < 0) throw new Error(`append: invalid batch length ${n}`);
  const cols: [string, ArrayLike<number>][] = [
    ['userId', b.userId],
    ['itemId', b.itemId],
    ['ts', b.ts],
    ['seq', b.seq],
    ['authorId', b.authorId],
    ['playMs', b.playMs],
    ['durationMs', b.durationMs],
    ['labels', b.labels],
  ];
  for (const [name, col] of cols) {
    if (col.length !== n) throw new Error(`append: column ${name} has ${col.length} rows, batch length is ${n}`);
  }
  if (b.tagOffsets.length !== n + 1) throw new Error(`append: tagOffsets has ${b.tagOffsets.length} entries, expected ${n + 1}`);
  if (b.tagOffsets[0] !== 0 || b.tagOffsets[n] !== b.tagIds.length) throw new Error('append: tagOffsets must start at 0 and end at tagIds.length');
  for (let i = 0; i < n; i++) {
    if (b.tagOffsets[i + 1]! < b.tagOffsets[i]!) throw new Error(`append: tagOffsets decrease at row ${i}`);
  }
}
