// The tokenizer pipeline without I/O: catalogue + co-occurrence → item embeddings → residual k-means → codes and
// quality report. The `gems tokenize` command feeds it from the history store and saves the result; tests and the
// benchmark call it on typed arrays directly.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { GemsConfig } from '../config/config.js';
import type { Logger } from '../util/log.js';
import { embedItems, type CatalogColumns, type CooccurrenceBuilder, type EmbeddingParams, type ItemEmbeddings } from './embeddings.js';
import type { EngineName } from './kmeans.js';
import { defaultCodebookSizes, residualQuantize, type QualityReport, type QuantizeResult } from './quantize.js';

export interface TokenizeParams {
  seed: number;
  levels: number;
  /** Per level; 0 (or missing) = defaultCodebookSizes(n, levels). */
  codebookSizes: number[];
  iterations: number;
  balanced: boolean;
  engine: EngineName;
  uniqueLastLevel: boolean;
  embedding: Omit<EmbeddingParams, 'seed'>;
}

export function tokenizeParamsFromConfig(config: GemsConfig): TokenizeParams {
  const t = config.tokenizer;
  return {
    seed: config.seed,
    levels: t.levels,
    codebookSizes: [...t.codebookSizes],
    iterations: t.iterations,
    balanced: t.balanced,
    engine: t.engine as EngineName,
    uniqueLastLevel: t.uniqueLastLevel,
    embedding: { dim: t.embeddingDim, contentDim: t.contentDim, contentWeight: t.contentWeight, window: t.window },
  };
}

/** Codebook sizes with 0 entries replaced by the per-catalogue defaults. */
export function resolveCodebookSizes(params: Pick<TokenizeParams, 'levels' | 'codebookSizes'>, nItems: number): number[] {
  const defaults = defaultCodebookSizes(nItems, params.levels);
  return defaults.map((k, l) => (params.codebookSizes[l] ? params.codebookSizes[l]! : k));
}

export interface TokenizeRun {
  embeddings: ItemEmbeddings;
  quantized: QuantizeResult;
  /** The resolved parameters (as saved with the version). */
  params: Record<string, unknown>;
  /** The quantiser's report plus the embedding statistics. */
  report: QualityReport & { embeddings: ItemEmbeddings['stats'] };
}

/** Embeds and quantises a catalogue whose histories have been fed into `cooc`. */
export async function tokenizeCatalog(catalog: CatalogColumns, cooc: CooccurrenceBuilder, params: TokenizeParams, log?: Logger): Promise<TokenizeRun> {
  const embeddings = embedItems(catalog, cooc, { ...params.embedding, seed: params.seed }, log);
  return quantizeEmbeddings(embeddings, params, log);
}

/** Quantises ready embeddings (the benchmark's synthetic path). */
export async function quantizeEmbeddings(embeddings: ItemEmbeddings, params: TokenizeParams, log?: Logger): Promise<TokenizeRun> {
  const sizes = resolveCodebookSizes(params, embeddings.n);
  const quantized = await residualQuantize(
    embeddings.vectors,
    embeddings.n,
    embeddings.dim,
    embeddings.itemIds,
    { sizes, iterations: params.iterations, seed: params.seed, balanced: params.balanced, engine: params.engine, uniqueLastLevel: params.uniqueLastLevel },
    log,
  );
  const resolved = { ...params, codebookSizes: sizes, embedding: { ...params.embedding, seed: params.seed } };
  return { embeddings, quantized, params: resolved, report: { ...quantized.quality, embeddings: embeddings.stats } };
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

/** Human-readable quality report lines. */
export function formatQuality(r: TokenizeRun['report']): string[] {
  const e = r.embeddings;
  const lines = [
    `items ${r.items}, embedding dim ${r.dim} (collaborative ${e.collabDim} + content ${e.contentDim}), window ${e.window}`,
    `embeddings: ${e.collabAndContent} history+content, ${e.collabOnly} history only, ${e.contentOnly} content only (no usable history), ${e.random} random (no history, no content)`,
    `codebooks ${r.sizes.slice(0, r.levels).join('×')} (requested ${r.requestedSizes.join('×')}), engine ${r.engine}${r.balanced ? ', balanced' : ''}, ${r.seconds.toFixed(2)} s`,
    'level  size  used    used%   perplexity  recon-mse  recon-rel  iters',
  ];
  for (const l of r.perLevel) {
    lines.push(
      `${String(l.level).padEnd(6)} ${String(l.size).padEnd(5)} ${String(l.used).padEnd(7)} ${pct(l.usedShare).padEnd(7)} ${l.perplexity.toFixed(1).padEnd(11)} ${l.reconMse.toFixed(4).padEnd(10)} ${l.reconRelative.toFixed(4).padEnd(10)} ${l.iterations}`,
    );
  }
  lines.push(
    `collisions before disambiguation: ${pct(r.collisionRate)} of items (distinct codes ${pct(r.distinctCodeShare)}), longest group ${r.longestCollisionGroup} → disambiguation level size ${r.sizes[r.levels]}`,
    r.uniqueLastLevel
      ? `unique last level: ${r.lastLevelMoved} items moved to their nearest free last-level code (nearest-centroid codes collided for ${pct(r.collisionRateNearest)})`
      : `unique last level: off`,
    `items per level-1 code: min ${r.itemsPerL1Code.min}, median ${r.itemsPerL1Code.median}, max ${r.itemsPerL1Code.max}`,
  );
  for (const note of r.notes) lines.push(`note: ${note}`);
  return lines;
}

/** Writes the report JSON to <runsDir>/tokenize-<version>.json and returns the path. */
export function writeQualityReport(runsDir: string, version: number, report: unknown): string {
  mkdirSync(runsDir, { recursive: true });
  const file = join(runsDir, `tokenize-${version}.json`);
  writeFileSync(file, JSON.stringify(report, null, 2) + '\n');
  return file;
}
