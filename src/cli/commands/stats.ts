// `gems stats`: what a data directory holds. The history store's figures (users, items, events, history lengths,
// partitions) come first; later stages add their own sections to SECTIONS (tokenizer, model, memory versions).
import { existsSync } from 'node:fs';
import { flagBool } from '../args.js';
import type { Command } from '../command.js';
import { resolvedPaths, type GemsConfig } from '../../config/config.js';
import { openHistoryStore, type ParquetHistoryStore } from '../../data/parquetHistoryStore.js';

/** A stats section: fields merged into the output (a section reads through the open store, or its own files). */
export type StatsSection = (store: ParquetHistoryStore, config: GemsConfig) => Promise<Record<string, unknown>>;

export const SECTIONS: StatsSection[] = [];

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
