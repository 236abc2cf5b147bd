// Generic ingestion of any CSV or Parquet events file through a column map:
//   gems ingest csv|parquet --path FILE --map user_id=uid,item_id=video,ts=time[,seq=..][,author_id=..][,tags=..]
//                           [,play_ms=..][,duration_ms=..][,labels=..][,rating=..]
// Required: user_id, item_id, and ts or seq. ts units: --ts-unit ms (default) | s | iso (ISO-8601 text); Parquet
// TIMESTAMP/DATE columns are converted exactly. tags: names separated by --tag-sep ('|'), or a Parquet list; they
// become tag ids through the tag vocabulary. labels: an integer bit set (src/data/events.ts LABEL) or flag names
// separated by '|' (like|share). rating: like when ≥ --like-threshold (4), skip when ≤ --skip-threshold (2).
// Parquet rows are read in blocks through DuckDB (types cast to text, so one validator serves both formats; rows
// are numbered from 1 in file order, as "line" in errors).
import { LABEL, type LabelName } from '../events.js';
import type { ParquetHistoryStore } from '../parquetHistoryStore.js';
import { statSync } from 'node:fs';
import {
  FieldError,
  IngestError,
  ingestEventsFile,
  intField,
  numField,
  readRecords,
  Rejects,
  type Delimiter,
  type FileIngestResult,
  type StageWriter,
} from './common.js';

export const MAP_KEYS = ['user_id', 'item_id', 'ts', 'seq', 'author_id', 'tags', 'play_ms', 'duration_ms', 'labels', 'rating'] as const;
export type MapKey = (typeof MAP_KEYS)[number];
export type ColumnMap = Partial<Record<MapKey, string>>;

export interface MappedIngestOptions {
  map: ColumnMap;
  source: string;
  tsUnit?: 'ms' | 's' | 'iso';
  delimiter?: Delimiter;
  tagSep?: string;
  likeThreshold?: number;
  skipThreshold?: number;
  skipBadRows?: string | null;
  force?: boolean;
}

/** Parses `user_id=a,item_id=b,...` into a column map, refusing unknown keys and incomplete maps. */
export function parseColumnMap(spec: string | string[]): ColumnMap {
  const parts = (Array.isArray(spec) ? spec : [spec]).flatMap((s) => s.split(',')).filter((s) => s.trim() !== '');
  const map: ColumnMap = {};
  for (const p of parts) {
    const eq = p.indexOf('=');
    if (eq <= 0) throw new Error(`--map: '${p}' is not key=column`);
    const key = p.slice(0, eq).trim() as MapKey;
    if (!MAP_KEYS.includes(key)) throw new Error(`--map: unknown key '${key}' (known: ${MAP_KEYS.join(', ')})`);
    map[key] = p.slice(eq + 1).trim();
  }
  if (!map.user_id || !map.item_id) throw new Error('--map: user_id and item_id are required');
  if (!map.ts && !map.seq) throw new Error('--map: ts or seq is required (the order of events)');
  return map;
}

const LABEL_NAMES = Object.keys(LABEL) as LabelName[];

/** Turns text fields (by map key) into one event on the writer. */
class RowParser {
  private tagCache = new Map<string, number>();
  constructor(
    readonly store: ParquetHistoryStore,
    readonly o: MappedIngestOptions,
  ) {}

  async add(writer: StageWriter, get: (k: MapKey) => string | undefined, line: number): Promise<void> {
    const m = this.o.map;
    const userId = intField(get('user_id'), m.user_id!);
    const itemId = intField(get('item_id'), m.item_id!);
    let ts = NaN;
    if (m.ts) {
      const raw = get('ts');
      if (raw === undefined || raw.trim() === '') throw new FieldError(m.ts, raw === undefined ? 'missing' : 'empty');
      const unit = this.o.tsUnit ?? 'ms';
      if (unit === 'iso') {
        ts = Date.parse(raw.trim());
        if (!Number.isFinite(ts)) throw new FieldError(m.ts, `'${raw}' is not an ISO-8601 time`);
      } else {
        ts = numField(raw, m.ts) * (unit === 's' ? 1000 : 1);
        if (ts < 0) throw new FieldError(m.ts, `${raw} is negative`);
      }
      ts = Math.round(ts);
    }
    // Without a seq column the per-user order is (ts, line): seq holds the line until the stage is renumbered.
    const seq = m.seq ? intField(get('seq'), m.seq, 0) : line;
    const authorId = m.author_id ? intField(get('author_id'), m.author_id) : 0;
    const playMs = m.play_ms ? numField(get('play_ms'), m.play_ms) : 0;
    const durationMs = m.duration_ms ? numField(get('duration_ms'), m.duration_ms) : 0;
    let labels = 0;
    if (m.labels) {
      const raw = (get('labels') ?? '').trim();
      if (/^\d+$/.test(raw)) {
        labels = Number(raw);
        if (labels > 255) throw new FieldError(m.labels, `${raw} is not a label bit set (0..255)`);
      } else if (raw !== '') {
        for (const name of raw.split('|').map((s) => s.trim().toLowerCase())) {
          if (!LABEL_NAMES.includes(name as LabelName)) throw new FieldError(m.labels, `unknown label '${name}' (known: ${LABEL_NAMES.join(', ')})`);
          labels |= LABEL[name as LabelName];
        }
      }
    }
    if (m.rating) {
      const r = numField(get('rating'), m.rating);
      if (r >= (this.o.likeThreshold ?? 4)) labels |= LABEL.like;
      if (r <= (this.o.skipThreshold ?? 2)) labels |= LABEL.skip;
    }
    let tags: number[] | undefined;
    if (m.tags) {
      const raw = (get('tags') ?? '').trim();
      const names = raw === '' ? [] : raw.split(this.o.tagSep ?? '|').map((s) => s.trim()).filter((s) => s !== '');
      const missing = names.filter((n) => !this.tagCache.has(n));
      if (missing.length > 0) {
        const ids = await this.store.tagIds(missing);
        missing.forEach((n, i) => this.tagCache.set(n, ids[i]!));
      }
      tags = names.map((n) => this.tagCache.get(n)!);
    }
    await writer.add({ userId, itemId, ts, seq, authorId, tags, playMs, durationMs, labels });
  }
}

export async function ingestMappedCsv(store: ParquetHistoryStore, file: string, o: MappedIngestOptions): Promise<FileIngestResult> {
  const rejects = new Rejects(o.skipBadRows ?? null);
  try {
    const parser = new RowParser(store, o);
    return await ingestEventsFile(store, file, o.source, { rejects, seqMode: o.map.seq ? 'given' : 'from-ts', tagsFromItems: !o.map.tags, force: o.force }, async (writer, onBytes) => {
      let rows = 0;
      const index: Partial<Record<MapKey, number>> = {};
      let width = 0;
      for await (const r of readRecords(file, { delimiter: o.delimiter ?? ',', onBytes })) {
        if (r.line === 1) {
          const header = r.fields.map((s) => s.trim());
          for (const [k, col] of Object.entries(o.map) as [MapKey, string][]) {
            const i = header.indexOf(col);
            if (i < 0) throw new IngestError(file, 1, col, `mapped column (for ${k}) is not in the header: ${header.join(',')}`);
            index[k] = i;
          }
          width = header.length;
          continue;
        }
        rows++;
        try {
          if (r.fields.length < width) {
            const missingKey = (Object.entries(index) as [MapKey, number][]).find(([, i]) => i >= r.fields.length);
            if (missingKey) throw new FieldError(o.map[missingKey[0]]!, `missing (row has ${r.fields.length} of ${width} fields)`);
          }
          await parser.add(writer, (k) => (index[k] === undefined ? undefined : r.fields[index[k]!]), r.line);
        } catch (e) {
          if (!(e instanceof FieldError)) throw e;
          await rejects.add(new IngestError(file, r.line, e.field, e.reason), r.raw);
        }
      }
      return rows;
    });
  } finally {
    await rejects.close();
  }
}

export async function ingestMappedParquet(store: ParquetHistoryStore, file: string, opts: MappedIngestOptions): Promise<FileIngestResult> {
  const schema = await store.withDb((db) =>
    db.rows<{ column_name: string; column_type: string }>(`SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet($1))`, [file]),
  );
  const typeOf = new Map(schema.map((s) => [s.column_name, s.column_type]));
  const keys = Object.keys(opts.map) as MapKey[];
  const exprs: string[] = [];
  let o = opts;
  for (const k of keys) {
    const col = opts.map[k]!;
    const t = typeOf.get(col);
    if (t === undefined) throw new IngestError(file, 0, col, `mapped column (for ${k}) is not in the file (columns: ${[...typeOf.keys()].join(', ')})`);
    const q = `"${col.replace(/"/g, '""')}"`;
    if (k === 'ts' && /^(TIMESTAMP|DATE)/.test(t)) {
      exprs.push(`epoch_ms(${q}::TIMESTAMP)::VARCHAR`);
      o = { ...o, tsUnit: 'ms' };
    } else if (t.endsWith('[]')) {
      exprs.push(`array_to_string(${q}, '${(k === 'tags' ? (o.tagSep ?? '|') : '|').replace(/'/g, "''")}')`);
    } else exprs.push(`${q}::VARCHAR`);
  }
  const size = statSync(file).size;
  const rejects = new Rejects(o.skipBadRows ?? null);
  try {
    const parser = new RowParser(store, o);
    return await ingestEventsFile(store, file, o.source, { rejects, seqMode: o.map.seq ? 'given' : 'from-ts', tagsFromItems: !o.map.tags, force: o.force }, async (writer, onBytes) => {
      const total = Number((await store.withDb((db) => db.one<{ n: bigint }>(`SELECT count(*) AS n FROM read_parquet($1)`, [file])))!.n);
      const BLOCK = 100_000;
      let rows = 0;
      for (let start = 0; start < total; start += BLOCK) {
        const block = await store.withDb(async (db) => {
          const reader = await db.conn.runAndReadAll(
            `SELECT file_row_number, ${exprs.join(', ')} FROM read_parquet($1, file_row_number = true)
             WHERE file_row_number >= $2 AND file_row_number < $3 ORDER BY file_row_number`,
            [file, start, start + BLOCK],
          );
          return reader.getRowsJS() as (string | number | bigint | null)[][];
        });
        for (const row of block) {
          // Rows are numbered from 1 in file order and reported as the "line".
          const line = Number(row[0]) + 1;
          rows++;
          try {
            await parser.add(
              writer,
              (k) => {
                const i = keys.indexOf(k);
                if (i < 0) return undefined;
                const v = row[i + 1];
                return v === null || v === undefined ? '' : String(v);
              },
              line,
            );
          } catch (e) {
            if (!(e instanceof FieldError)) throw e;
            await rejects.add(new IngestError(file, line, e.field, e.reason), JSON.stringify(row.slice(1).map((v) => (v === null ? null : String(v)))));
          }
        }
        onBytes(Math.round((size * (start + block.length)) / Math.max(1, total)));
      }
      return rows;
    });
  } finally {
    await rejects.close();
  }
}
