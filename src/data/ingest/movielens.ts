// MovieLens readers. A folder is recognised by its files:
//   events: ratings.csv (ml-latest*, header userId,movieId,rating,timestamp), ratings.dat (ML-1M/10M, user::item::rating::ts),
//           u.data (ml-100k, tab-separated user item rating ts), sequences.csv (user_id,seq,item_id: order only, no ts);
//   items:  movies.csv (movieId,title,genres; quoted titles), movies.dat (id::title::genres, Latin-1),
//           u.item + u.genre (ml-100k, '|'-separated, Latin-1, genre flags).
// Ratings become feedback labels: rating ≥ 4 → like, rating ≤ 2 → skip (a negative signal); 2.5–3.5 carry no flag.
// MovieLens has no play time, duration or authors: those columns are 0 (unknown). Genres become tags (tag_vocab),
// on the items and, copied from the item, on each event. Timestamps (seconds) become epoch ms; within a user, seq
// numbers events by (ts, line) from 0. For sequences.csv, ts is unknown (NaN) and seq is the given order.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LABEL, type Item } from '../events.js';
import type { ParquetHistoryStore } from '../parquetHistoryStore.js';
import {
  FieldError,
  IngestError,
  ingestEventsFile,
  intField,
  log,
  numField,
  readRecords,
  type Delimiter,
  type FileIngestResult,
  Rejects,
} from './common.js';

export interface MovieLensIngestOptions {
  /** Source name stored with every event (part of the dedup key). */
  source?: string;
  /** Write rejected rows here and load the rest (otherwise the first bad row stops the file). */
  skipBadRows?: string | null;
  /** Re-read files even when their content hash was ingested before (events are still deduplicated). */
  force?: boolean;
}

export interface MovieLensIngestResult {
  path: string;
  itemsFile: string | null;
  items: number;
  files: FileIngestResult[];
  added: number;
  duplicates: number;
  rejected: number;
}

type EventFormat = { file: string; kind: 'ratings.csv' | 'ratings.dat' | 'u.data' | 'sequences.csv' };
type ItemFormat = { file: string; kind: 'movies.csv' | 'movies.dat' | 'u.item' };

/** The events and items files found in a MovieLens folder (events: ratings preferred over sequences). */
export function detectMovieLens(dir: string): { events: EventFormat; items: ItemFormat | null } {
  const has = (f: string) => existsSync(join(dir, f));
  const kinds = ['ratings.csv', 'ratings.dat', 'u.data', 'sequences.csv'] as const;
  const found = kinds.filter(has);
  if (found.length === 0) {
    throw new Error(`${dir}: no MovieLens events file (expected one of ${kinds.join(', ')})`);
  }
  if (found.length > 1) log.warn('several MovieLens events files; using the first', { dir, found, using: found[0] });
  const itemKinds = ['movies.csv', 'movies.dat', 'u.item'] as const;
  const item = itemKinds.find(has);
  return {
    events: { file: join(dir, found[0]!), kind: found[0]! },
    items: item ? { file: join(dir, item), kind: item } : null,
  };
}

function ratingLabels(rating: number): number {
  if (rating >= 4) return LABEL.like;
  if (rating <= 2) return LABEL.skip;
  return 0;
}

/** Reads the items file into items with genre tags (tag ids from the store's vocabulary). */
export async function ingestMovieLensItems(store: ParquetHistoryStore, f: ItemFormat): Promise<number> {
  const rows: { id: number; title: string; genres: string[]; attrs?: Record<string, unknown> }[] = [];
  const fail = (line: number, e: unknown): never => {
    if (e instanceof FieldError) throw new IngestError(f.file, line, e.field, e.reason);
    throw e;
  };
  if (f.kind === 'u.item') {
    const genreFile = join(f.file, '..', 'u.genre');
    const genreNames: string[] = [];
    if (existsSync(genreFile)) {
      for (const l of readFileSync(genreFile, 'latin1').split('\n')) {
        const [name, idx] = l.split('|');
        if (name && idx !== undefined && idx.trim() !== '') genreNames[Number(idx)] = name;
      }
    }
    for await (const r of readRecords(f.file, { delimiter: '|', encoding: 'latin1' })) {
      try {
        const id = intField(r.fields[0], 'movie id', 0);
        const flags = r.fields.slice(5);
        const genres = flags.flatMap((v, i) => (v.trim() === '1' ? [genreNames[i] ?? `genre${i}`] : []));
        rows.push({ id, title: r.fields[1] ?? '', genres: genres.filter((g) => g !== 'unknown') });
      } catch (e) {
        fail(r.line, e);
      }
    }
  } else {
    const csv = f.kind === 'movies.csv';
    const delimiter: Delimiter = csv ? ',' : '::';
    for await (const r of readRecords(f.file, { delimiter, encoding: csv ? 'utf8' : 'latin1' })) {
      if (csv && r.line === 1 && r.fields[0]?.trim() === 'movieId') continue;
      try {
        if (r.fields.length < 3) throw new FieldError(r.fields.length < 2 ? 'title' : 'genres', 'missing');
        const id = intField(r.fields[0], csv ? 'movieId' : 'movie id', 0);
        // A title may itself contain the delimiter in the '::' format only in theory; genres are the last field.
        const genresRaw = r.fields[r.fields.length - 1]!;
        const title = r.fields.slice(1, r.fields.length - 1).join(csv ? ',' : '::');
        const genres = genresRaw === '(no genres listed)' || genresRaw.trim() === '' ? [] : genresRaw.split('|');
        rows.push({ id, title, genres });
      } catch (e) {
        fail(r.line, e);
      }
    }
  }
  const names = [...new Set(rows.flatMap((r) => r.genres))].sort();
  const ids = await store.tagIds(names);
  const idOf = new Map(names.map((n, i) => [n, ids[i]!]));
  const items: Item[] = rows.map((r) => ({ itemId: r.id, authorId: 0, tags: r.genres.map((g) => idOf.get(g)!), title: r.title }));
  await store.upsertItems(items);
  log.info('items loaded', { file: f.file, items: items.length, genres: names.length });
  return items.length;
}

/** Ingests one MovieLens events file. */
export async function ingestMovieLensEvents(store: ParquetHistoryStore, f: EventFormat, source: string, rejects: Rejects, force = false): Promise<FileIngestResult> {
  const seqMode = f.kind === 'sequences.csv' ? 'given' : 'from-ts';
  return ingestEventsFile(store, f.file, source, { rejects, seqMode, tagsFromItems: true, force }, async (writer, onBytes) => {
    let rows = 0;
    const delimiter: Delimiter = f.kind === 'ratings.dat' ? '::' : f.kind === 'u.data' ? '\t' : ',';
    const header = f.kind === 'ratings.csv' || f.kind === 'sequences.csv';
    const names =
      f.kind === 'ratings.csv'
        ? ['userId', 'movieId', 'rating', 'timestamp']
        : f.kind === 'sequences.csv'
          ? ['user_id', 'seq', 'item_id']
          : ['user id', 'item id', 'rating', 'timestamp'];
    let colIdx = names.map((_, i) => i);
    for await (const r of readRecords(f.file, { delimiter, onBytes })) {
      if (header && r.line === 1) {
        const got = r.fields.map((s) => s.trim());
        const idx = names.map((n) => got.indexOf(n));
        if (idx.some((i) => i < 0)) {
          throw new IngestError(f.file, 1, names[idx.findIndex((i) => i < 0)]!, `header '${r.raw}' lacks this column (expected ${names.join(',')})`);
        }
        colIdx = idx;
        continue;
      }
      rows++;
      try {
        if (r.fields.length < names.length) throw new FieldError(names[r.fields.length]!, `missing (row has ${r.fields.length} of ${names.length} fields)`);
        if (r.fields.length > names.length && !header) throw new FieldError('(row)', `has ${r.fields.length} fields, expected ${names.length}`);
        const v = (k: number) => r.fields[colIdx[k]!];
        if (f.kind === 'sequences.csv') {
          const userId = intField(v(0), names[0]!);
          const seq = intField(v(1), names[1]!, 0);
          const itemId = intField(v(2), names[2]!);
          await writer.add({ userId, itemId, ts: NaN, seq });
        } else {
          const userId = intField(v(0), names[0]!);
          const itemId = intField(v(1), names[1]!);
          const rating = numField(v(2), names[2]!);
          if (rating < 0 || rating > 10) throw new FieldError(names[2]!, `${rating} is outside 0..10`);
          const tsSec = numField(v(3), names[3]!);
          if (tsSec < 0 || !Number.isInteger(tsSec)) throw new FieldError(names[3]!, `'${v(3)}' is not a non-negative integer (seconds)`);
          await writer.add({ userId, itemId, ts: tsSec * 1000, seq: r.line, labels: ratingLabels(rating) });
        }
      } catch (e) {
        if (!(e instanceof FieldError)) throw e;
        await rejects.add(new IngestError(f.file, r.line, e.field, e.reason), r.raw);
      }
    }
    return rows;
  });
}

/** `gems ingest movielens --path DIR`: items first (so events get genre tags), then the events file. */
export async function ingestMovieLens(store: ParquetHistoryStore, dir: string, opts: MovieLensIngestOptions = {}): Promise<MovieLensIngestResult> {
  const found = detectMovieLens(dir);
  const source = opts.source ?? 'movielens';
  const rejects = new Rejects(opts.skipBadRows ?? null);
  try {
    const items = found.items ? await ingestMovieLensItems(store, found.items) : 0;
    const res = await ingestMovieLensEvents(store, found.events, source, rejects, opts.force === true);
    return {
      path: dir,
      itemsFile: found.items?.file ?? null,
      items,
      files: [res],
      added: res.added,
      duplicates: res.duplicates,
      rejected: res.rejected,
    };
  } finally {
    await rejects.close();
  }
}
