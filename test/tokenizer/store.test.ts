import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Database } from '../../src/data/db.js';
import { embedItemsFromSequences } from '../../src/tokenizer/embeddings.js';
import { quantizeEmbeddings, type TokenizeParams } from '../../src/tokenizer/pipeline.js';
import { listTokenizerVersions, loadItemEmbeddings, loadTokenizer, saveTokenizer, TokenizerNotFoundError } from '../../src/tokenizer/store.js';
import { groupedCatalogue } from './fixtures.js';

const params: TokenizeParams = {
  seed: 1,
  levels: 3,
  codebookSizes: [6, 4, 4],
  iterations: 15,
  balanced: false,
  engine: 'js',
  uniqueLastLevel: true,
  embedding: { dim: 12, contentDim: 4, contentWeight: 0.25, window: 4 },
};

describe('tokenizer persistence (real DuckDB file)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gems-tok-store-'));
  const file = join(dir, 'gems.duckdb');
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const { catalog, sequences } = groupedCatalogue(5, 24, 60, 30, 2, 2);

  it('saves versions, reopens the file and loads codes, sizes, centroids, embeddings and the trie', async () => {
    const emb = embedItemsFromSequences(catalog, sequences, { ...params.embedding, seed: params.seed });
    const run1 = await quantizeEmbeddings(emb, params);
    const run2 = await quantizeEmbeddings(emb, { ...params, codebookSizes: [8, 8, 8] });

    let db = await Database.open(file);
    await expect(loadTokenizer(db)).rejects.toThrow(TokenizerNotFoundError);
    expect(await saveTokenizer(db, run1)).toBe(1);
    expect(await saveTokenizer(db, { ...run2, report: run2.report })).toBe(2);
    db.close();

    db = await Database.open(file);
    try {
      const versions = await listTokenizerVersions(db);
      expect(versions.map((v) => [v.version, v.isCurrent])).toEqual([
        [2, true],
        [1, false],
      ]);
      const current = await loadTokenizer(db);
      expect(current.version).toBe(2);
      expect(current.sizes).toEqual(run2.quantized.sizes);
      expect((current.quality as unknown as { embeddings: { contentOnly: number } }).embeddings.contentOnly).toBe(10);

      const t = await loadTokenizer(db, 1);
      expect(t.levels).toBe(3);
      expect(t.sizes).toEqual(run1.quantized.sizes);
      expect(t.dim).toBe(12);
      expect(Array.from(t.itemIds)).toEqual(Array.from(catalog.itemId)); // ascending ids
      for (let i = 0; i < catalog.length; i++) {
        const id = catalog.itemId[i]!;
        expect(Array.from(t.codesOf(id)!)).toEqual(Array.from(run1.quantized.codes.subarray(i * 4, i * 4 + 4)));
        expect(t.trie.item(t.codesOf(id)!)).toBe(id);
      }
      expect(t.codesOf(-5)).toBeUndefined();
      expect(t.rowOf(-5)).toBe(-1);
      for (let l = 0; l < 3; l++) {
        expect(t.centroids[l]!.length).toBe(t.sizes[l]! * 12);
        expect(Array.from(t.centroids[l]!)).toEqual(Array.from(run1.quantized.centroids[l]!));
      }
      expect(t.params['codebookSizes']).toEqual([6, 4, 4]);

      const e = await loadItemEmbeddings(db, 1);
      expect(e.dim).toBe(12);
      expect(Array.from(e.vectors)).toEqual(Array.from(emb.vectors));
      expect(Array.from(e.source)).toEqual(Array.from(emb.source));

      await expect(loadTokenizer(db, 9)).rejects.toThrow(/tokenizer version 9 does not exist/);
    } finally {
      db.close();
    }
  });
});
