// `gems stats`: what a data directory holds. The history store's figures (users, items, events, history lengths,
// partitions) come first; later stages add their own sections to SECTIONS (tokenizer, model, memory versions).
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { flagBool } from '../args.js';
import type { Command } from '../command.js';
import { resolvedPaths, type GemsConfig } from '../../config/config.js';
import { openHistoryStore, type ParquetHistoryStore } from '../../data/parquetHistoryStore.js';
import { latestCompressorVersion } from '../../lifecycle/compressor.js';
import { openMemoryStore } from '../../lifecycle/openMemoryStore.js';
import { listTokenizerVersions } from '../../tokenizer/store.js';

/** A stats section: fields merged into the output (a section reads through the open store, or its own files). */
export type StatsSection = (store: ParquetHistoryStore, config: GemsConfig) => Promise<Record<string, unknown>>;

/** The current Semantic-ID tokenizer version and its size (DuckDB tokenizer_versions). */
const tokenizerSection: StatsSection = async (store) => {
  const versions = await store.withDb((db) => listTokenizerVersions(db));
  const current = versions.find((v) => v.isCurrent);
  return { tokenizer: current ? { version: current.version, items: current.items, sizes: current.sizes, versions: versions.length } : null };
};

/** Model checkpoints under <dataDir>/checkpoints/<run>/best (the compressor's are listed by the lifecycle section). */
const modelSection: StatsSection = async (_store, config) => {
  const dir = resolvedPaths(config).checkpoints;
  const models: Record<string, unknown>[] = [];
  if (existsSync(dir)) {
    for (const run of readdirSync(dir).sort()) {
      const meta = join(dir, run, 'best', 'meta.json');
      if (!existsSync(meta)) continue;
      try {
        const m = JSON.parse(readFileSync(meta, 'utf8')) as { kind?: string; tokenizerVersion?: string; dataFingerprint?: string; createdAt?: string };
        models.push({ run, kind: m.kind, tokenizerVersion: m.tokenizerVersion, dataFingerprint: m.dataFingerprint, createdAt: m.createdAt });
      } catch (e) {
        models.push({ run, error: `unreadable meta.json: ${(e as Error).message}` });
      }
    }
  }
  return { models };
};

/** Lifecycle memories: the latest compressor version and how many users have a memory. */
const memorySection: StatsSection = async (_store, config) => {
  const compressorVersion = latestCompressorVersion(config);
  // Opening lmdb creates its file: only look when the store exists already (or is remote).
  if (config.lifecycle.memoryStore === 'lmdb' && !existsSync(resolvedPaths(config).memories)) return { memories: { compressorVersion, users: 0 } };
  const memories = await openMemoryStore(config);
  try {
    return { memories: { compressorVersion, store: memories.kind, users: await memories.count() } };
  } finally {
    await memories.close();
  }
};

export const SECTIONS: StatsSection[] = [tokenizerSection, modelSection, memorySection];

export async function collectStats(config: GemsConfig): Promise<Record<string, unknown>> {
  const store = await openHistoryStore(config);
  try {
    const out: Record<string, unknown> = { dataDir: config.dataDir, ...(await store.stats()) };
    for (const section of SECTIONS) Object.assign(out, await section(store, config));
    return out;
  } finally {
    await store.close();
  }
}

export const command: Command = {
  summary: 'show what the data directory holds (users, items, events, history lengths, …)',
  usage: `gems stats [--json]
  Prints users, items (distinct items with events), catalogItems, events, historyLength {min, mean, max},
  partitions and their bytes, plus the sections later stages register. --json prints one JSON object.`,
  async run({ config, args, out }) {
    const fresh = !existsSync(resolvedPaths(config).duckdb);
    const stats = await collectStats(config);
    if (fresh) stats['empty'] = true;
    if (flagBool(args, 'json')) {
      out(JSON.stringify(stats));
      return 0;
    }
    const h = stats['historyLength'] as { min: number; mean: number; max: number };
    out(`data dir      ${config.dataDir}`);
    out(`users         ${stats['users']}`);
    out(`items         ${stats['items']} with events (${stats['catalogItems']} in the catalogue, ${stats['tags']} tags)`);
    out(`events        ${stats['events']}`);
    out(`history len   min ${h.min}  mean ${h.mean.toFixed(1)}  max ${h.max}`);
    out(`partitions    ${stats['partitions']} objects, ${(Number(stats['partitionBytes']) / 1e6).toFixed(1)} MB`);
    const known = new Set(['dataDir', 'users', 'items', 'catalogItems', 'tags', 'events', 'historyLength', 'partitions', 'partitionBytes', 'empty']);
    for (const [k, v] of Object.entries(stats)) if (!known.has(k)) out(`${k.padEnd(13)} ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`);
    return 0;
  },
};
