// `npm run bench -- tokenize [--items 100000] [--iterations 25] [--skip-ml1m] [--skip-generated] [--ml1m DIR]`
//
// 1. Speed: 100,000 synthetic clustered 64-d items (seeded) → 3 levels of 256 codes: tokenize_s and peak_rss_mb,
//    with the engine `auto` picks, plus one k-means assignment pass timed on each engine (plain JS vs TensorFlow.js).
// 2. Quality on ML-1M (read from ../shared/data/ml-1m, never copied into the repository): sequences.csv + movies.dat
//    (genres as tags) through the real embedding + quantisation pipeline with the default parameters, and variants.
// 3. Quality on the synthetic lifelong set (src/data/generator), with the generator's true interest clusters to
//    check that first-level codes follow them.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Bench, Figures } from './run.js';
import { rssSampler, round } from './_stats.js';
import { DEFAULT_CONFIG } from '../src/config/config.js';
import { Rng } from '../src/util/random.js';
import { CooccurrenceBuilder, ItemIndex, type CatalogColumns, type ItemEmbeddings } from '../src/tokenizer/embeddings.js';
import { jsAssigner, tfAssigner } from '../src/tokenizer/kmeans.js';
import { quantizeEmbeddings, tokenizeCatalog, tokenizeParamsFromConfig, type TokenizeParams, type TokenizeRun } from '../src/tokenizer/pipeline.js';
import { buildCatalogue } from '../src/data/generator/catalogue.js';
import { generateLifelong, resolveLifelongOptions } from '../src/data/generator/lifelong.js';

const here = dirname(fileURLToPath(import.meta.url));

function arg(args: string[], name: string): string | undefined {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
}

/** n unit vectors around `clusters` seeded centres (two-level: centre + sub-centre + noise). */
function syntheticEmbeddings(n: number, d: number, clusters: number, seed: number): ItemEmbeddings {
  const rng = new Rng(seed);
  const centres = Float32Array.from({ length: clusters * d }, () => rng.normal());
  const x = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    const c = rng.int(clusters);
    let s = 0;
    for (let j = 0; j < d; j++) {
      const v = centres[c * d + j]! + 0.4 * rng.normal();
      x[i * d + j] = v;
      s += v * v;
    }
    const norm = Math.sqrt(s);
    for (let j = 0; j < d; j++) x[i * d + j] = x[i * d + j]! / norm;
  }
  return {
    n,
    dim: d,
    itemIds: Int32Array.from({ length: n }, (_, i) => i + 1),
    vectors: x,
    source: new Uint8Array(n),
    stats: { collabDim: d, contentDim: 0, window: 0, pairsCounted: 0, distinctPairs: 0, ppmiNonZeros: 0, itemsWithHistory: n, collabAndContent: 0, contentOnly: 0, collabOnly: n, random: 0, unknownItemEvents: 0, seconds: 0 },
  };
}

/** Share of items whose level-1 code's majority label equals their own label (how well codes follow a known grouping). */
function l1Purity(run: TokenizeRun, labelOf: (row: number) => number): number {
  const w = run.quantized.levels + 1;
  const byCode = new Map<number, Map<number, number>>();
  for (let i = 0; i < run.quantized.n; i++) {
    const c = run.quantized.codes[i * w]!;
    let m = byCode.get(c);
    if (!m) byCode.set(c, (m = new Map()));
    m.set(labelOf(i), (m.get(labelOf(i)) ?? 0) + 1);
  }
  let hit = 0;
  for (const m of byCode.values()) hit += Math.max(...m.values());
  return hit / run.quantized.n;
}

function qualityFigures(run: TokenizeRun, seconds: number): Record<string, unknown> {
  const q = run.report;
  const out: Record<string, unknown> = {
    items: q.items,
    sizes: q.sizes,
    collision_rate: round(q.collisionRate, 4),
    collision_rate_nearest: round(q.collisionRateNearest, 4),
    longest_collision_group: q.longestCollisionGroup,
    items_per_l1_code_median: q.itemsPerL1Code.median,
    content_only_items: q.embeddings.contentOnly,
    tokenize_s: round(seconds, 2),
    quantize_s: round(q.seconds, 2),
    embed_s: round(q.embeddings.seconds, 2),
  };
  q.perLevel.forEach((l) => {
    out[`perplexity_l${l.level}`] = round(l.perplexity, 1);
    out[`used_share_l${l.level}`] = round(l.usedShare, 3);
    out[`recon_rel_l${l.level}`] = round(l.reconRelative, 4);
  });
  return out;
}

function loadMl1m(dir: string): { catalog: CatalogColumns; sequences: Int32Array[]; firstGenre: Int32Array } {
  const movies = readFileSync(resolve(dir, 'movies.dat'), 'latin1').trim().split('\n');
  const genres = new Map<string, number>();
  const ids: number[] = [];
  const offs = [0];
  const tags: number[] = [];
  const first: number[] = [];
  movies.forEach((line, k) => {
    const parts = line.split('::');
    if (parts.length !== 3) throw new Error(`${dir}/movies.dat line ${k + 1}: expected id::title::genres`);
    ids.push(Number(parts[0]));
    parts[2]!.trim().split('|').forEach((name, j) => {
      if (!genres.has(name)) genres.set(name, genres.size + 1);
      tags.push(genres.get(name)!);
      if (j === 0) first.push(genres.get(name)!);
    });
    offs.push(tags.length);
  });
  const catalog: CatalogColumns = { length: ids.length, itemId: Int32Array.from(ids), authorId: new Int32Array(ids.length), tagOffsets: Int32Array.from(offs), tagIds: Int32Array.from(tags) };
  // sequences.csv is sorted by user, then seq.
  const lines = readFileSync(resolve(dir, 'sequences.csv'), 'utf8').trim().split('\n');
  const sequences: Int32Array[] = [];
  let user = NaN;
  let cur: number[] = [];
  for (let k = 1; k < lines.length; k++) {
    const [u, , item] = lines[k]!.split(',');
    if (Number(u) !== user) {
      if (cur.length) sequences.push(Int32Array.from(cur));
      cur = [];
      user = Number(u);
    }
    cur.push(Number(item));
  }
  if (cur.length) sequences.push(Int32Array.from(cur));
  return { catalog, sequences, firstGenre: Int32Array.from(first) };
}

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const out = await fn();
  return [out, (performance.now() - t0) / 1000];
}

export const bench: Bench = {
  summary: 'Semantic-ID tokenizer: 100k×64-d items → 256³ (time, RSS, JS vs TF.js k-means); ML-1M and generated-set code quality',
  async run(args) {
    const n = Number(arg(args, 'items') ?? 100_000);
    const iterations = Number(arg(args, 'iterations') ?? DEFAULT_CONFIG.tokenizer.iterations);
    const figures: Figures = {};
    const base: TokenizeParams = { ...tokenizeParamsFromConfig({ ...DEFAULT_CONFIG, seed: 42 }), iterations };

    // 1. Speed.
    const emb = syntheticEmbeddings(n, 64, 1000, 42);
    const tf = await tfAssigner();
    const passes: Record<string, number> = {};
    for (const [label, rows, k] of [
      ['100k_256', n, 256],
      ['ml1m_64', 3883, 64],
    ] as const) {
      const c = emb.vectors.slice(0, k * 64);
      for (const engine of [jsAssigner, tf]) {
        await engine.assign(emb.vectors, Math.min(rows, 2000), 64, c, k, new Int32Array(rows), new Float32Array(rows)); // warm-up
        const [, s] = await timed(() => engine.assign(emb.vectors, rows, 64, c, k, new Int32Array(rows), new Float32Array(rows)));
        passes[`assign_pass_s_${engine.name.startsWith('tf') ? 'tf' : 'js'}_${label}`] = round(s, 4);
      }
    }
    Object.assign(figures, passes, { tf_backend: tf.name });
    console.log('one k-means assignment pass:', passes);

    const rss = rssSampler();
    const [synth, synthS] = await timed(() => quantizeEmbeddings(emb, { ...base, codebookSizes: [256, 256, 256] }));
    figures['peak_rss_mb'] = rss.stop();
    figures['tokenize_s'] = round(synthS, 2);
    figures['synthetic'] = { ...qualityFigures(synth, synthS), engine: synth.report.engine };
    console.log(`synthetic ${n}×64 → 256³: ${synthS.toFixed(2)} s, peak RSS ${figures['peak_rss_mb']} MB, engine ${synth.report.engine}`);

    // 2. ML-1M.
    const ml1mDir = arg(args, 'ml1m') ?? resolve(here, '..', '..', 'shared', 'data', 'ml-1m');
    if (args.includes('--skip-ml1m')) figures['ml1m'] = 'skipped (--skip-ml1m)';
    else if (!existsSync(resolve(ml1mDir, 'sequences.csv'))) figures['ml1m'] = `not found: ${ml1mDir}`;
    else {
      const { catalog, sequences, firstGenre } = loadMl1m(ml1mDir);
      const variants: Record<string, Partial<TokenizeParams>> = {
        default: {},
        nearest_only: { uniqueLastLevel: false },
        unbalanced: { balanced: false },
        k32: { codebookSizes: [32, 32, 32] },
        k256: { codebookSizes: [256, 256, 256] },
      };
      const out: Record<string, unknown> = {};
      for (const [name, over] of Object.entries(variants)) {
        const [run, s] = await timed(async () => {
          const cooc = new CooccurrenceBuilder(new ItemIndex(catalog.itemId), base.embedding.window);
          for (const seq of sequences) cooc.addSequence(seq);
          return tokenizeCatalog(catalog, cooc, { ...base, ...over });
        });
        out[name] = { ...qualityFigures(run, s), l1_first_genre_purity: round(l1Purity(run, (i) => firstGenre[i]!), 3) };
        console.log(`ml-1m ${name}:`, JSON.stringify(out[name]));
      }
      figures['ml1m'] = out;
      const d = out['default'] as Record<string, unknown>;
      for (const key of ['collision_rate', 'perplexity_l1', 'perplexity_l2', 'perplexity_l3']) figures[`ml1m_${key}`] = d[key] as number;
    }

    // 3. Generated lifelong set.
    if (args.includes('--skip-generated')) figures['generated'] = 'skipped (--skip-generated)';
    else {
      const o = resolveLifelongOptions('small', { users: Number(arg(args, 'gen-users') ?? 400) });
      const cat = buildCatalogue(o);
      const [run, s] = await timed(async () => {
        const itemIds = Int32Array.from({ length: cat.numItems }, (_, i) => i + 1);
        const catalog: CatalogColumns = {
          length: cat.numItems,
          itemId: itemIds,
          authorId: cat.itemAuthor.slice(1),
          tagOffsets: Int32Array.from(cat.itemTagOffsets.subarray(1), (v) => v - cat.itemTagOffsets[1]!),
          tagIds: cat.itemTagIds.slice(cat.itemTagOffsets[1]!),
        };
        const cooc = new CooccurrenceBuilder(new ItemIndex(itemIds), base.embedding.window);
        let events = 0;
        for (const batch of generateLifelong(o, 1_000_000, cat)) {
          const ev = batch.events;
          events += ev.length;
          let start = 0;
          for (let r = 1; r <= ev.length; r++) {
            if (r === ev.length || ev.userId[r] !== ev.userId[start]) {
              cooc.addSequence(ev.itemId.subarray(start, r));
              start = r;
            }
          }
        }
        const out = await tokenizeCatalog(catalog, cooc, base);
        return Object.assign(out, { events });
      });
      figures['generated'] = {
        users: o.users,
        events: run.events,
        clusters: cat.numClusters,
        ...qualityFigures(run, s),
        l1_true_cluster_purity: round(l1Purity(run, (i) => cat.itemCluster[i + 1]!), 3),
      };
      const g = figures['generated'] as Record<string, unknown>;
      for (const key of ['collision_rate', 'perplexity_l1', 'perplexity_l2', 'perplexity_l3']) figures[`generated_${key}`] = g[key] as number;
      console.log('generated:', JSON.stringify(g));
    }
    return figures;
  },
};
