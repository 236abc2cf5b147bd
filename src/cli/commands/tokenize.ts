// `gems tokenize`: reads the catalogue and every user's history from the history store, builds item embeddings,
// quantises them into Semantic IDs by residual k-means, saves a new tokenizer version in DuckDB (current from then
// on), and prints and saves the quality report (<dataDir>/runs/tokenize-<version>.json).
import { resolvedPaths } from '../../config/config.js';
import { openHistoryStore } from '../../data/parquetHistoryStore.js';
import { progress } from '../../util/log.js';
import { flagBool, flagNumber, flagString, UsageError } from '../args.js';
import type { Command } from '../command.js';
import { CooccurrenceBuilder, ItemIndex } from '../../tokenizer/embeddings.js';
import { formatQuality, tokenizeCatalog, tokenizeParamsFromConfig, writeQualityReport } from '../../tokenizer/pipeline.js';
import { listTokenizerVersions, saveTokenizer } from '../../tokenizer/store.js';
import type { EngineName } from '../../tokenizer/kmeans.js';

export const command: Command = {
  summary: 'Build Semantic IDs: item embeddings → residual k-means codes, saved as a new tokenizer version',
  usage: `gems tokenize [--sizes 64,64,64] [--levels 3] [--balanced] [--iterations N] [--window N] [--engine js|tf|auto] [--dry-run] [--json]
gems tokenize --list

Reads items and histories from the history store and writes tokenizer_versions / item_sid / codebooks /
item_embeddings (migrations/0002_semantic_ids.sql). Defaults come from config.tokenizer; codebook sizes of 0 (the
default) are chosen from the catalogue size (32³ for ML-1M's 3.7k items, 128³ for 100k items, 256³ from ~1M).
  --sizes       codebook size per level (comma-separated); sets --levels to its length
  --balanced    capacity-constrained assignment (every code holds at most ceil(n/K) items)
  --engine      k-means assignment engine (auto: TensorFlow.js for large catalogues)
  --dry-run     compute and print the report without saving a version
  --json        print the report as JSON instead of a table
  --list        list saved tokenizer versions`,
  async run({ config, args, log, out }) {
    const params = tokenizeParamsFromConfig(config);
    if (args.flags['sizes'] !== undefined) {
      const sizes = flagString(args, 'sizes').split(',').map((s) => Number(s.trim()));
      if (sizes.some((k) => !Number.isInteger(k) || k < 2)) throw new UsageError(`--sizes: expected comma-separated integers ≥ 2, got '${flagString(args, 'sizes')}'`);
      params.codebookSizes = sizes;
      params.levels = sizes.length;
    } else if (args.flags['levels'] !== undefined) {
      const levels = flagNumber(args, 'levels');
      if (!Number.isInteger(levels) || levels < 1) throw new UsageError('--levels must be a positive integer');
      params.levels = levels;
      params.codebookSizes = new Array<number>(levels).fill(0);
    }
    if (flagBool(args, 'balanced')) params.balanced = true;
    params.iterations = flagNumber(args, 'iterations', params.iterations);
    params.embedding.window = flagNumber(args, 'window', params.embedding.window);
    const engine = flagString(args, 'engine', params.engine);
    if (!['js', 'tf', 'auto'].includes(engine)) throw new UsageError(`--engine must be js, tf or auto, got '${engine}'`);
    params.engine = engine as EngineName;

    const store = await openHistoryStore(config);
    try {
      if (flagBool(args, 'list')) {
        const versions = await store.withDb((db) => listTokenizerVersions(db));
        if (versions.length === 0) out('no tokenizer versions yet: run `gems tokenize`');
        for (const v of versions) out(`${v.isCurrent ? '*' : ' '} v${v.version}  ${v.createdAt.toISOString()}  ${v.items} items  sizes ${v.sizes.join('×')}`);
        return 0;
      }
      const noItems = () => new Error(`the history store in ${config.dataDir} has no items: run \`gems ingest\` or \`gems generate\` first`);
      if ((await store.stats()).items === 0) throw noItems();
      const catalog = await store.items();
      if (catalog.length === 0) throw noItems();
      const cooc = new CooccurrenceBuilder(new ItemIndex(catalog.itemId), params.embedding.window);
      const users = (await store.userIds()).length;
      const bar = progress(log, 'tokenize: reading histories', users, 'users');
      for await (const h of store.scanHistories()) {
        cooc.addSequence(h.itemId);
        bar.tick();
      }
      bar.done();
      if (cooc.unknownItemEvents > 0) log.warn('events reference items missing from the catalogue; they were skipped', { events: cooc.unknownItemEvents });

      const run = await tokenizeCatalog(catalog, cooc, params, log);
      let version: number | null = null;
      if (!flagBool(args, 'dry-run')) {
        version = await store.withDb((db) => saveTokenizer(db, run));
        const file = writeQualityReport(resolvedPaths(config).runs, version, { version, params: run.params, quality: run.report });
        log.info('tokenizer saved', { version, report: file });
      }
      if (flagBool(args, 'json')) out(JSON.stringify({ version, params: run.params, quality: run.report }));
      else {
        out(version === null ? 'tokenizer (dry run, not saved)' : `tokenizer version ${version} (current)`);
        for (const line of formatQuality(run.report)) out(line);
      }
      return 0;
    } finally {
      await store.close();
    }
  },
};
