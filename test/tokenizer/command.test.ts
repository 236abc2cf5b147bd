// `gems tokenize` end to end: a real history store (Parquet objects + DuckDB file in a temp data dir) filled through
// its public API, the CLI entry point, then the saved version read back.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.js';
import { runCli } from '../../src/cli/main.js';
import { Database } from '../../src/data/db.js';
import type { EventColumns } from '../../src/data/events.js';
import { openHistoryStore } from '../../src/data/parquetHistoryStore.js';
import { loadTokenizer } from '../../src/tokenizer/store.js';
import { setLogSink } from '../../src/util/log.js';
import { groupedCatalogue } from './fixtures.js';

describe('gems tokenize', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gems-tok-cmd-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reads the store, saves a current version with codes for every item, and writes the report', async () => {
    const { catalog, sequences } = groupedCatalogue(4, 20, 40, 25, 9, 2);
    const config = loadConfig({ env: {}, flags: { dataDir: dir } });
    const store = await openHistoryStore(config);
    try {
      const tags = await store.tagIds(['g0', 'g1', 'g2', 'g3']);
      await store.upsertItems(
        Array.from(catalog.itemId, (id, i) => ({ itemId: id, authorId: catalog.authorId[i]!, tags: [tags[catalog.tagIds[i]!]!], title: `item ${id}` })),
      );
      const n = sequences.length * sequences[0]!.length;
      const batch: EventColumns = {
        length: n,
        userId: new Int32Array(n),
        itemId: new Int32Array(n),
        ts: new Float64Array(n).fill(NaN),
        seq: new Int32Array(n),
        authorId: new Int32Array(n),
        tagOffsets: new Int32Array(n + 1),
        tagIds: new Int32Array(0),
        playMs: new Float32Array(n),
        durationMs: new Float32Array(n),
        labels: new Uint8Array(n),
        source: 'test',
      };
      let r = 0;
      sequences.forEach((s, u) => {
        s.forEach((item, k) => {
          batch.userId[r] = u + 1;
          batch.itemId[r] = item;
          batch.seq[r++] = k;
        });
      });
      await store.append(batch);
    } finally {
      await store.close();
    }

    const lines: string[] = [];
    const code = await runCli(['tokenize', '--data-dir', dir, '--sizes', '4,4,4', '--engine', 'js'], (l) => lines.push(l));
    expect(code).toBe(0);
    const text = lines.join('\n');
    expect(text).toMatch(/tokenizer version 1 \(current\)/);
    expect(text).toMatch(/collisions before disambiguation/);
    expect(text).toMatch(/8 content only/);
    const report = JSON.parse(readFileSync(join(dir, 'runs', 'tokenize-1.json'), 'utf8')) as { quality: { perLevel: unknown[]; items: number } };
    expect(report.quality.items).toBe(80);
    expect(report.quality.perLevel).toHaveLength(3);

    const dry: string[] = [];
    expect(await runCli(['tokenize', '--data-dir', dir, '--levels', '2', '--dry-run', '--json'], (l) => dry.push(l))).toBe(0);
    const parsed = JSON.parse(dry[0]!) as { version: number | null; quality: { levels: number; sizes: number[] } };
    expect(parsed.version).toBeNull();
    expect(parsed.quality.levels).toBe(2);
    expect(parsed.quality.sizes[0]).toBe(80); // default for 80 items, 2 levels: 128 (128² ≥ 64·80), shrunk to the 80 items

    const list: string[] = [];
    expect(await runCli(['tokenize', '--data-dir', dir, '--list'], (l) => list.push(l))).toBe(0);
    expect(list).toHaveLength(1);
    expect(list[0]).toMatch(/^\* v1 .* 80 items +sizes 4×4×4×\d+/);

    const db = await Database.open(join(dir, 'gems.duckdb'));
    try {
      const t = await loadTokenizer(db);
      expect(t.version).toBe(1);
      expect(t.itemIds.length).toBe(80);
      for (const id of catalog.itemId) expect(t.trie.item(t.codesOf(id)!)).toBe(id);
    } finally {
      db.close();
    }
    expect(existsSync(join(dir, 'runs', 'tokenize-2.json'))).toBe(false);
  });

  it('fails with a clear message on an empty store and on bad flags', async () => {
    const empty = mkdtempSync(join(tmpdir(), 'gems-tok-empty-'));
    const logs: string[] = [];
    const prev = setLogSink((l) => logs.push(l));
    try {
      expect(await runCli(['tokenize', '--data-dir', empty], () => undefined)).toBe(1);
      expect(logs.join('\n')).toMatch(/has no items: run `gems ingest` or `gems generate` first/);
      expect(await runCli(['tokenize', '--data-dir', empty, '--sizes', '4,1'], () => undefined)).toBe(2);
      expect(await runCli(['tokenize', '--data-dir', empty, '--engine', 'gpu'], () => undefined)).toBe(2);
      expect(logs.join('\n')).toMatch(/--engine must be js, tf or auto/);
    } finally {
      setLogSink(prev);
      rmSync(empty, { recursive: true, force: true });
    }
  });
});
