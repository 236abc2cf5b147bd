// `gems ingest movielens|csv|parquet`: loads events (and MovieLens items) into the history store of the data dir.
// A malformed row stops the file with an error naming file, line and field, and nothing of that file is kept;
// --skip-bad-rows FILE writes rejected rows with reasons to FILE and loads the rest. Re-ingesting a file adds nothing.
import { resolve } from 'node:path';
import { existsSync, statSync } from 'node:fs';
import { flagBool, flagList, flagNumber, flagString, UsageError } from '../args.js';
import type { Command } from '../command.js';
import { openHistoryStore } from '../../data/parquetHistoryStore.js';
import { ingestMovieLens } from '../../data/ingest/movielens.js';
import { ingestMappedCsv, ingestMappedParquet, parseColumnMap, type MappedIngestOptions } from '../../data/ingest/mapped.js';
import type { Delimiter } from '../../data/ingest/common.js';

const DELIMITERS: Record<string, Delimiter> = { ',': ',', comma: ',', tab: '\t', '\\t': '\t', '::': '::', '|': '|', pipe: '|', ';': ';' };

export const command: Command = {
  summary: 'load events into the history store (movielens | csv | parquet)',
  usage: `gems ingest movielens --path DIR [--source NAME] [--skip-bad-rows FILE] [--force]
  DIR holds ratings.csv (ml-latest*), ratings.dat (ML-1M), u.data (ml-100k) or sequences.csv (user_id,seq,item_id),
  and optionally movies.csv / movies.dat / u.item (titles, genres → tags). Ratings ≥ 4 → like, ≤ 2 → skip.
gems ingest csv --path FILE --map user_id=COL,item_id=COL,ts=COL[,seq=COL,author_id=COL,tags=COL,play_ms=COL,
        duration_ms=COL,labels=COL,rating=COL] [--ts-unit ms|s|iso] [--delimiter ,|tab|::|pipe|;] [--tag-sep '|']
        [--source NAME] [--skip-bad-rows FILE] [--force]
gems ingest parquet --path FILE --map ... (same keys; TIMESTAMP columns are converted, list columns become tags)
  The same file (same bytes) is never loaded twice (--force re-reads it; identical events are still dropped).
  Prints one JSON summary line.`,
  async run({ config, args, out, log }) {
    const kind = args.positional[0];
    if (!kind || !['movielens', 'csv', 'parquet'].includes(kind)) throw new UsageError(`gems ingest: expected movielens|csv|parquet, got '${kind ?? ''}'`);
    const path = resolve(flagString(args, 'path'));
    if (!existsSync(path)) throw new UsageError(`--path ${path} does not exist`);
    const skipBadRows = args.flags['skip-bad-rows'] !== undefined ? resolve(flagString(args, 'skip-bad-rows')) : null;
    const force = flagBool(args, 'force');
    const store = await openHistoryStore(config);
    try {
      if (kind === 'movielens') {
        if (!statSync(path).isDirectory()) throw new UsageError(`--path ${path}: expected a MovieLens folder`);
        const res = await ingestMovieLens(store, path, { source: flagString(args, 'source', 'movielens'), skipBadRows, force });
        out(JSON.stringify({ ...res, stats: await store.stats() }));
        return 0;
      }
      let map;
      try {
        map = parseColumnMap(flagList(args, 'map'));
      } catch (e) {
        throw new UsageError((e as Error).message);
      }
      const tsUnit = flagString(args, 'ts-unit', 'ms');
      if (!['ms', 's', 'iso'].includes(tsUnit)) throw new UsageError(`--ts-unit must be ms, s or iso`);
      const delimName = flagString(args, 'delimiter', ',');
      const delimiter = DELIMITERS[delimName];
      if (!delimiter) throw new UsageError(`--delimiter: unsupported '${delimName}' (use , tab :: | ;)`);
      const o: MappedIngestOptions = {
        map,
        source: flagString(args, 'source', kind),
        tsUnit: tsUnit as 'ms' | 's' | 'iso',
        delimiter,
        tagSep: flagString(args, 'tag-sep', '|'),
        likeThreshold: flagNumber(args, 'like-threshold', 4),
        skipThreshold: flagNumber(args, 'skip-threshold', 2),
        skipBadRows,
        force,
      };
      const res = kind === 'csv' ? await ingestMappedCsv(store, path, o) : await ingestMappedParquet(store, path, o);
      out(JSON.stringify({ ...res, stats: await store.stats() }));
      return 0;
    } finally {
      // Objects left by a crashed earlier ingest (uploaded, never committed) and older than an hour.
      const removed = await store.removeOrphans().catch((e: unknown) => {
        log.warn('could not remove orphan objects', { error: String(e) });
        return [];
      });
      if (removed.length > 0) log.info('removed orphan objects of an interrupted ingest', { count: removed.length });
      await store.close();
    }
  },
};
