// Everything the GEMs model trains and evaluates on: all users' histories (from the history store), the current
// Semantic IDs (from the tokenizer tables in the same DuckDB file), and — for the generated lifelong set — the
// ground-truth targets written next to the data (<dataDir>/generated/truth.jsonl).
import { existsSync } from 'node:fs';
import { resolvedPaths, type GemsConfig } from '../config/config.js';
import { Database } from '../data/db.js';
import { readTruth as readTruthRecords } from '../data/generator/write.js';
import type { History } from '../data/events.js';
import type { LifelongTarget } from '../eval/gemsEval.js';
import type { SemanticIds } from '../model/sid.js';
import { inIdRange, type IdRange } from '../util/idRange.js';
import { logger, progress } from '../util/log.js';

const log = logger('train.data');

export interface GemsData {
  histories: History[];
  sid: SemanticIds;
  /** Generated set only: truth targets and, per history, the first target position. */
  targets?: LifelongTarget[];
  testStart?: Int32Array;
}

export async function loadSid(config: GemsConfig, version?: number): Promise<SemanticIds> {
  const { loadTokenizer } = await import('../tokenizer/store.js');
  const db = await Database.open(resolvedPaths(config).duckdb, { readOnly: true });
  try {
    return await loadTokenizer(db, version);
  } finally {
    db.close();
  }
}

/**
 * Users' histories from the history store, in user order: all users, the given `userIds`, or those in `userRange`
 * (the users a run trains or evaluates on, e.g. training users 1..300 and held-out users 301..1000 of one store);
 * `maxUsers` stops after that many.
 */
export async function loadHistories(config: GemsConfig, opts: { maxUsers?: number; userIds?: number[]; userRange?: IdRange } = {}): Promise<History[]> {
  const { openHistoryStore } = await import('../data/parquetHistoryStore.js');
  const store = await openHistoryStore(config, { readOnly: true });
  try {
    const range = opts.userRange;
    const userIds = opts.userIds ?? (range ? Array.from(await store.userIds()).filter((u) => inIdRange(u, range)) : undefined);
    if (range && userIds!.length === 0) throw new Error(`the history store in ${config.dataDir} has no users with ids ${range.from}..${range.to}`);
    const total = userIds?.length ?? (await store.userIds()).length;
    const prog = progress(log, 'reading histories', Math.min(total, opts.maxUsers ?? total), 'users');
    const out: History[] = [];
    for await (const h of store.scanHistories(userIds ? { userIds } : {})) {
      if (h.length > 0) out.push(h);
      prog.tick();
      if (opts.maxUsers && out.length >= opts.maxUsers) break;
    }
    prog.done({ events: out.reduce((s, h) => s + h.length, 0) });
    if (out.length === 0) throw new Error(`the history store in ${config.dataDir} has no users: ingest or generate data first`);
    return out;
  } finally {
    await store.close();
  }
}

/** The generator's truth.jsonl as evaluation targets (write.ts reads and validates it, naming file and line). */
export function readTruth(path: string): LifelongTarget[] {
  if (!existsSync(path)) throw new Error(`${path} does not exist: run \`gems generate\` first (or evaluate with --protocol loo)`);
  return readTruthRecords(path).map((r) => ({ userId: r.user_id, position: r.position, itemId: r.item_id, dormant: r.dormant }));
}

/** First truth position per history (histories without targets: their length, i.e. no test targets). */
export function testStartOf(histories: History[], targets: LifelongTarget[]): Int32Array {
  const first = new Map<number, number>();
  for (const t of targets) first.set(t.userId, Math.min(first.get(t.userId) ?? Infinity, t.position));
  return Int32Array.from(histories.map((h) => Math.min(h.length, first.get(h.userId) ?? h.length)));
}
