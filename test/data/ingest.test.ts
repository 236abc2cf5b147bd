// Ingestion into a real DuckDB file + local object folder: the shipped ml-latest-small, the other MovieLens forms
// (small fixtures written here), malformed rows, --skip-bad-rows, and the generic csv / parquet mapping.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, resolvedPaths } from '../../src/config/config.js';
import { openHistoryStore, type ParquetHistoryStore } from '../../src/data/parquetHistoryStore.js';
import { ingestMovieLens } from '../../src/data/ingest/movielens.js';
import { ingestMappedCsv, ingestMappedParquet, parseColumnMap } from '../../src/data/ingest/mapped.js';
import { IngestError, splitFields } from '../../src/data/ingest/common.js';
import { LABEL } from '../../src/data/events.js';

const ML_SMALL = join(import.meta.dirname, '..', '..', 'data', 'ml-latest-small');

async function freshStore(root: string, name: string): Promise<ParquetHistoryStore> {
  const config = loadConfig({ flags: { dataDir: join(root, name), 'history.userBuckets': '16' }, env: {} });
  return openHistoryStore(config);
}

function listObjects(store: ParquetHistoryStore): string[] {
  const dir = join(resolvedPaths(store.config).objects, 'events');
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.parquet'));
}

describe('ingest', () => {
  let root: string;
  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'gems-ingest-'));
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('splits quoted CSV fields', () => {
    expect(splitFields('1,"Toy Story, The (1995)",Comedy', ',')).toEqual(['1', 'Toy Story, The (1995)', 'Comedy']);
    expect(splitFields('1,"say ""hi""",x', ',')).toEqual(['1', 'say "hi"', 'x']);
    expect(splitFields('1,"open', ',')).toBeNull();
    expect(splitFields('1::Title: a::Drama', '::')).toEqual(['1', 'Title: a', 'Drama']);
  });

  it('loads the shipped ml-latest-small: 610 users, 9,724 items, 100,836 events, chronological; twice adds nothing', async () => {
    const store = await freshStore(root, 'mls');
    try {
      const first = await ingestMovieLens(store, ML_SMALL);
      expect(first.added).toBe(100_836);
      expect(first.items).toBe(9_742);
      const s = await store.stats();
      expect(s.users).toBe(610);
      expect(s.items).toBe(9_724);
      expect(s.events).toBe(100_836);
      expect(s.historyLength.max).toBe(2_698);
      expect(s.historyLength.min).toBe(20);
      let users = 0;
      for await (const h of store.scanHistories()) {
        users++;
        for (let i = 1; i < h.length; i++) {
          expect(h.ts[i]! > h.ts[i - 1]! || (h.ts[i] === h.ts[i - 1] && h.seq[i]! > h.seq[i - 1]!)).toBe(true);
        }
      }
      expect(users).toBe(610);
      // User 1's first rating in ratings.csv: 1,1,4.0,964982703 → like, ts in ms, genres of Toy Story as tags.
      const h1 = await store.userHistory(1);
      const i = Array.from(h1.itemId).indexOf(1);
      expect(h1.ts[i]).toBe(964_982_703_000);
      expect(h1.labels[i]).toBe(LABEL.like);
      expect(h1.tagOffsets[i + 1]! - h1.tagOffsets[i]!).toBe(5);

      const objectsBefore = listObjects(store).length;
      const again = await ingestMovieLens(store, ML_SMALL);
      expect(again.added).toBe(0);
      expect(again.files[0]!.alreadyIngested).toBe(true);
      // Forced re-read: every event is a duplicate of a stored one.
      const forced = await ingestMovieLens(store, ML_SMALL, { force: true });
      expect(forced.added).toBe(0);
      expect(forced.duplicates).toBe(100_836);
      expect((await store.stats()).events).toBe(100_836);
      expect(listObjects(store).length).toBe(objectsBefore);
    } finally {
      await store.close();
    }
  });

  it('recognises ML-1M ratings.dat / movies.dat (Latin-1) and ml-100k u.data', async () => {
    const d1 = join(root, 'ml1m');
    mkdirSync(d1);
    writeFileSync(join(d1, 'ratings.dat'), '1::10::5::978300760\n1::20::3::978300700\n2::10::1::978300800\n');
    writeFileSync(join(d1, 'movies.dat'), Buffer.from('10::Amélie (2001)::Comedy|Romance\n20::Heat (1995)::Action\n', 'latin1'));
    const store = await freshStore(root, 'ml1m-store');
    try {
      const r = await ingestMovieLens(store, d1);
      expect(r.added).toBe(3);
      const h = await store.userHistory(1);
      expect(Array.from(h.itemId)).toEqual([20, 10]);
      expect(Array.from(h.seq)).toEqual([0, 1]);
      expect(Array.from(h.labels)).toEqual([0, LABEL.like]);
      expect((await store.userHistory(2)).labels[0]).toBe(LABEL.skip);
      const items = await store.items();
      expect(items.titles[0]).toBe('Amélie (2001)');
    } finally {
      await store.close();
    }
    const d2 = join(root, 'ml100k');
    mkdirSync(d2);
    writeFileSync(join(d2, 'u.data'), '196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t377\t1\t878887116\n');
    const store2 = await freshStore(root, 'ml100k-store');
    try {
      expect((await ingestMovieLens(store2, d2)).added).toBe(3);
      expect(Array.from((await store2.userHistory(196)).itemId)).toEqual([377, 242]);
    } finally {
      await store2.close();
    }
  });

  it('loads the sequences.csv form (no timestamps: ts NaN, seq orders)', async () => {
    const d = join(root, 'seq');
    mkdirSync(d);
    writeFileSync(join(d, 'sequences.csv'), 'user_id,seq,item_id\n1,1,30\n1,0,20\n2,0,5\n1,2,40\n');
    const store = await freshStore(root, 'seq-store');
    try {
      expect((await ingestMovieLens(store, d)).added).toBe(4);
      const h = await store.userHistory(1);
      expect(Array.from(h.itemId)).toEqual([20, 30, 40]);
      expect(Number.isNaN(h.ts[0]!)).toBe(true);
      const s = await store.userStreams(1, 1, 2);
      expect(Array.from(s.recent.itemId)).toEqual([40]);
      expect(Array.from(s.mid.itemId)).toEqual([30]);
      expect(Array.from(s.lifecycle.itemId)).toEqual([20]);
      expect((await store.userHistory(1, { seq: 1 })).length).toBe(2);
    } finally {
      await store.close();
    }
  });

  it('a malformed row stops the file with file, line and field, and leaves nothing', async () => {
    const d = join(root, 'bad');
    mkdirSync(d);
    const good = 'userId,movieId,rating,timestamp\n1,10,4.0,964982703\n1,11,3.0,964982704\n';
    const store = await freshStore(root, 'bad-store');
    try {
      writeFileSync(join(d, 'ratings.csv'), good + '2,12,four,964982705\n3,13,4.0,964982706\n');
      const err = await ingestMovieLens(store, d).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(IngestError);
      expect((err as IngestError).message).toBe(`${join(d, 'ratings.csv')}:4: field 'rating': 'four' is not a number`);
      expect((err as IngestError).line).toBe(4);
      writeFileSync(join(d, 'ratings.csv'), good + '2,12,4.0\n');
      const err2 = (await ingestMovieLens(store, d).catch((e: unknown) => e)) as IngestError;
      expect(err2.line).toBe(4);
      expect(err2.field).toBe('timestamp');
      expect(err2.reason).toMatch(/missing/);
      writeFileSync(join(d, 'ratings.csv'), good + 'x,12,4.0,1\n');
      expect(((await ingestMovieLens(store, d).catch((e: unknown) => e)) as IngestError).field).toBe('userId');
      const s = await store.stats();
      expect(s.events).toBe(0);
      expect(s.users).toBe(0);
      expect(listObjects(store)).toEqual([]);
      expect(await store.withDb((db) => db.rows(`SELECT * FROM ingest_files`))).toEqual([]);
      expect(await store.withDb((db) => db.rows(`SELECT * FROM duckdb_tables() WHERE temporary`))).toEqual([]);
    } finally {
      await store.close();
    }
  });

  it('--skip-bad-rows writes rejected rows with reasons and loads the rest', async () => {
    const d = join(root, 'skip');
    mkdirSync(d);
    writeFileSync(
      join(d, 'ratings.csv'),
      'userId,movieId,rating,timestamp\n1,10,4.0,964982703\n2,12,four,964982705\n1,11,3.0,964982704\n3,13\n3,14,2.0,-5\n',
    );
    const rejectsFile = join(root, 'rejects.tsv');
    const store = await freshStore(root, 'skip-store');
    try {
      const r = await ingestMovieLens(store, d, { skipBadRows: rejectsFile });
      expect(r.added).toBe(2);
      expect(r.rejected).toBe(3);
      const lines = readFileSync(rejectsFile, 'utf8').trim().split('\n');
      expect(lines[0]).toBe('file\tline\tfield\treason\trow');
      expect(lines.slice(1).map((l) => l.split('\t').slice(1, 3))).toEqual([
        ['3', 'rating'],
        ['5', 'rating'],
        ['6', 'timestamp'],
      ]);
      expect(lines[1]!.split('\t')[4]).toBe('2,12,four,964982705');
      expect(Array.from((await store.userHistory(1)).itemId)).toEqual([10, 11]);
    } finally {
      await store.close();
    }
  });

  it('generic csv with a column map (ISO times, tag names, label names) and parquet', async () => {
    const f = join(root, 'events.csv');
    writeFileSync(
      f,
      'who,what,when,kw,fb,play\n' +
        '7,100,2024-01-02T00:00:00Z,"a|b",like|share,1500\n' +
        '7,101,2024-01-01T00:00:00Z,,skip,20\n' +
        '8,100,2024-01-03T00:00:00Z,b,,0\n',
    );
    const store = await freshStore(root, 'csv-store');
    try {
      const map = parseColumnMap('user_id=who,item_id=what,ts=when,tags=kw,labels=fb,play_ms=play');
      const r = await ingestMappedCsv(store, f, { map, source: 'csv', tsUnit: 'iso' });
      expect(r.added).toBe(3);
      const h = await store.userHistory(7);
      expect(Array.from(h.itemId)).toEqual([101, 100]);
      expect(h.ts[1]).toBe(Date.parse('2024-01-02T00:00:00Z'));
      expect(Array.from(h.labels)).toEqual([LABEL.skip, LABEL.like | LABEL.share]);
      expect(Array.from(h.playMs)).toEqual([20, 1500]);
      const [a, b] = await store.tagIds(['a', 'b']);
      expect(Array.from(h.tagIds)).toEqual([a, b]);
      expect(() => parseColumnMap('user_id=a,item_id=b')).toThrow(/ts or seq/);
      expect(() => parseColumnMap('user=a')).toThrow(/unknown key/);

      const pq = join(root, 'events.parquet');
      await store.withDb((db) =>
        db.run(
          `COPY (SELECT * FROM (VALUES (9, 1, TIMESTAMP '2024-05-01 10:00:00', 4.5), (9, 2, TIMESTAMP '2024-04-01 10:00:00', 1.0)) t(u, i, happened, stars))
           TO '${pq}' (FORMAT parquet)`,
        ),
      );
      const rp = await ingestMappedParquet(store, pq, { map: parseColumnMap('user_id=u,item_id=i,ts=happened,rating=stars'), source: 'pq' });
      expect(rp.added).toBe(2);
      const h9 = await store.userHistory(9);
      expect(Array.from(h9.itemId)).toEqual([2, 1]);
      expect(h9.ts[1]).toBe(Date.parse('2024-05-01T10:00:00Z'));
      expect(Array.from(h9.labels)).toEqual([LABEL.skip, LABEL.like]);

      const bad = join(root, 'bad.parquet');
      await store.withDb((db) => db.run(`COPY (SELECT * FROM (VALUES (1, 5, 10), (NULL, 6, 11)) t(u, i, s)) TO '${bad}' (FORMAT parquet)`));
      const err = (await ingestMappedParquet(store, bad, { map: parseColumnMap('user_id=u,item_id=i,seq=s'), source: 'pq2' }).catch((e: unknown) => e)) as IngestError;
      expect(err).toBeInstanceOf(IngestError);
      expect([err.line, err.field]).toEqual([2, 'u']);
    } finally {
      await store.close();
    }
  });
});
