// Persistence of Semantic IDs in the DuckDB database (migrations/0002_semantic_ids.sql): every tokenizer run is a
// new version (item codes, codebook centroids, embeddings, params and the quality report); one version is current.
// `loadTokenizer` gives the model and the serving side everything they need, including the prefix trie.
import { FLOAT, INTEGER, LIST } from '@duckdb/node-api';
import type { Database } from '../data/db.js';
import type { ItemEmbeddings } from './embeddings.js';
import type { QuantizeResult, QualityReport } from './quantize.js';
import { CodeTrie } from './trie.js';

/** A loaded tokenizer version: what the decoder (output heads), beam search (trie) and training (targets) read. */
export interface Tokenizer {
  version: number;
  /** Residual levels L (the codes have L+1 entries: the last is the disambiguation code). */
  levels: number;
  /** L codebook sizes, then the disambiguation level's size. */
  sizes: number[];
  dim: number;
  /** Item ids in ascending order; row i of `codes` belongs to itemIds[i]. */
  itemIds: Int32Array;
  /** n×(L+1) row-major codes. */
  codes: Int32Array;
  /** Per level, sizes[ℓ]×dim row-major centroids. */
  centroids: Float32Array[];
  trie: CodeTrie;
  /** Row of an item id in itemIds/codes, -1 when the item has no Semantic ID in this version. */
  rowOf(itemId: number): number;
  /** The L+1 codes of an item (a view), or undefined. */
  codesOf(itemId: number): Int32Array | undefined;
  params: Record<string, unknown>;
  quality: QualityReport;
  createdAt: Date;
}

export class TokenizerNotFoundError extends Error {
  override name = 'TokenizerNotFoundError';
}

/** Builds the in-memory tokenizer from codes (sorted by item id here, whatever the input order). */
export function makeTokenizer(args: {
  version: number;
  sizes: number[];
  dim: number;
  itemIds: Int32Array;
  codes: Int32Array;
  centroids: Float32Array[];
  params: Record<string, unknown>;
  quality: QualityReport;
  createdAt: Date;
}): Tokenizer {
  const n = args.itemIds.length;
  const w = args.sizes.length;
  const order = Int32Array.from({ length: n }, (_, i) => i).sort((a, b) => args.itemIds[a]! - args.itemIds[b]!);
  const itemIds = new Int32Array(n);
  const codes = new Int32Array(n * w);
  order.forEach((src, dst) => {
    itemIds[dst] = args.itemIds[src]!;
    codes.set(args.codes.subarray(src * w, src * w + w), dst * w);
  });
  const rows = new Map<number, number>();
  for (let i = 0; i < n; i++) rows.set(itemIds[i]!, i);
  const trie = CodeTrie.build(codes, n, w, itemIds);
  return {
    version: args.version,
    levels: w - 1,
    sizes: args.sizes,
    dim: args.dim,
    itemIds,
    codes,
    centroids: args.centroids,
    trie,
    rowOf: (id) => rows.get(id) ?? -1,
    codesOf: (id) => {
      const r = rows.get(id);
      return r === undefined ? undefined : codes.subarray(r * w, r * w + w);
    },
    params: args.params,
    quality: args.quality,
    createdAt: args.createdAt,
  };
}

/** Saves a tokenizer run as a new version, marks it current, and returns the version number. */
export async function saveTokenizer(db: Database, run: { embeddings: ItemEmbeddings; quantized: QuantizeResult; params: Record<string, unknown>; report?: QualityReport }): Promise<number> {
  const { embeddings: emb, quantized: q } = run;
  const n = q.n;
  const w = q.levels + 1;
  return db.transaction(async () => {
    const row = await db.one<{ v: number | null }>(`SELECT max(version) AS v FROM tokenizer_versions`);
    const version = (row?.v ?? 0) + 1;
    await db.run(`UPDATE tokenizer_versions SET is_current = false WHERE is_current`);
    await db.run(
      `INSERT INTO tokenizer_versions (version, created_at, levels, sizes, embedding_dim, items, params, quality, is_current)
       VALUES ($1, now()::TIMESTAMP, $2, $3::INTEGER[], $4, $5, $6::JSON, $7::JSON, true)`,
      [version, q.levels, JSON.stringify(q.sizes), q.dim, n, JSON.stringify(run.params), JSON.stringify(run.report ?? q.quality)],
    );
    const listInt = LIST(INTEGER);
    const listFloat = LIST(FLOAT);
    const sid = await db.conn.createAppender('item_sid');
    for (let i = 0; i < n; i++) {
      sid.appendInteger(version);
      sid.appendInteger(q.itemIds[i]!);
      sid.appendList(Array.from(q.codes.subarray(i * w, i * w + w)), listInt);
      sid.endRow();
    }
    sid.closeSync();
    const vec = await db.conn.createAppender('item_embeddings');
    for (let i = 0; i < emb.n; i++) {
      vec.appendInteger(version);
      vec.appendInteger(emb.itemIds[i]!);
      vec.appendTinyInt(emb.source[i]!);
      vec.appendList(Array.from(emb.vectors.subarray(i * emb.dim, (i + 1) * emb.dim)), listFloat);
      vec.endRow();
    }
    vec.closeSync();
    const cb = await db.conn.createAppender('codebooks');
    for (let l = 0; l < q.levels; l++) {
      cb.appendInteger(version);
      cb.appendInteger(l + 1);
      cb.appendInteger(q.sizes[l]!);
      cb.appendInteger(q.dim);
      cb.appendList(Array.from(q.centroids[l]!), listFloat);
      cb.endRow();
    }
    cb.closeSync();
    return version;
  });
}

/** Versions, newest first. */
export async function listTokenizerVersions(db: Database): Promise<Array<{ version: number; createdAt: Date; items: number; sizes: number[]; isCurrent: boolean }>> {
  const rows = await db.rows<{ version: number; created_at: Date; items: number; sizes: number[]; is_current: boolean }>(
    `SELECT version, created_at, items, sizes, is_current FROM tokenizer_versions ORDER BY version DESC`,
  );
  return rows.map((r) => ({ version: r.version, createdAt: r.created_at, items: r.items, sizes: r.sizes, isCurrent: r.is_current }));
}

/** Loads a tokenizer version (default: the current one). Throws TokenizerNotFoundError naming what is missing. */
export async function loadTokenizer(db: Database, version?: number): Promise<Tokenizer> {
  const meta = await db.one<{ version: number; created_at: Date; levels: number; sizes: number[]; embedding_dim: number; items: number; params: string; quality: string }>(
    version === undefined
      ? `SELECT version, created_at, levels, sizes, embedding_dim, items, params::VARCHAR AS params, quality::VARCHAR AS quality FROM tokenizer_versions WHERE is_current`
      : `SELECT version, created_at, levels, sizes, embedding_dim, items, params::VARCHAR AS params, quality::VARCHAR AS quality FROM tokenizer_versions WHERE version = $1`,
    version === undefined ? undefined : [version],
  );
  if (!meta) {
    throw new TokenizerNotFoundError(
      version === undefined ? `no current tokenizer in ${db.path}: run \`gems tokenize\` first` : `tokenizer version ${version} does not exist in ${db.path}`,
    );
  }
  const w = meta.levels + 1;
  const sidRows = await db.rows<{ item_id: number; codes: number[] }>(`SELECT item_id, codes FROM item_sid WHERE tokenizer_version = $1 ORDER BY item_id`, [meta.version]);
  if (sidRows.length !== meta.items) throw new Error(`tokenizer version ${meta.version}: ${sidRows.length} item_sid rows, expected ${meta.items}`);
  const itemIds = new Int32Array(sidRows.length);
  const codes = new Int32Array(sidRows.length * w);
  sidRows.forEach((r, i) => {
    if (r.codes.length !== w) throw new Error(`item_sid version ${meta.version} item ${r.item_id}: ${r.codes.length} codes, expected ${w}`);
    itemIds[i] = r.item_id;
    codes.set(r.codes, i * w);
  });
  const cbRows = await db.rows<{ level: number; size: number; dim: number; centroids: number[] }>(
    `SELECT level, size, dim, centroids FROM codebooks WHERE tokenizer_version = $1 ORDER BY level`,
    [meta.version],
  );
  if (cbRows.length !== meta.levels) throw new Error(`tokenizer version ${meta.version}: ${cbRows.length} codebooks, expected ${meta.levels}`);
  const centroids = cbRows.map((r) => Float32Array.from(r.centroids));
  return makeTokenizer({
    version: meta.version,
    sizes: meta.sizes,
    dim: meta.embedding_dim,
    itemIds,
    codes,
    centroids,
    params: JSON.parse(meta.params) as Record<string, unknown>,
    quality: JSON.parse(meta.quality) as QualityReport,
    createdAt: meta.created_at,
  });
}

/** The saved item embeddings of a version (ascending item id), for initialising item tables. */
export async function loadItemEmbeddings(db: Database, version: number): Promise<{ itemIds: Int32Array; vectors: Float32Array; dim: number; source: Uint8Array }> {
  const rows = await db.rows<{ item_id: number; source: number; vector: number[] }>(
    `SELECT item_id, source, vector FROM item_embeddings WHERE tokenizer_version = $1 ORDER BY item_id`,
    [version],
  );
  const dim = rows[0]?.vector.length ?? 0;
  const vectors = new Float32Array(rows.length * dim);
  rows.forEach((r, i) => vectors.set(r.vector, i * dim));
  return { itemIds: Int32Array.from(rows, (r) => r.item_id), vectors, dim, source: Uint8Array.from(rows, (r) => r.source) };
}
