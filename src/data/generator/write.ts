// Writes a generated lifelong data set through the HistoryStore: the catalogue as items (tags mapped to the
// store's tag ids), the events in batches, and next to them in <dataDir>/generated/:
//   truth.jsonl      one line per held-out target (TruthRecord), for evaluation split by dormancy;
//   users.jsonl      each user's lifetime interests (cluster, kind, weight, affinity, event count);
//   manifest.json    the options used and totals, written last (its presence means the run completed).
// Files are written to a temporary name and renamed at the end, so a crash never leaves a partial truth file.
// Re-running with the same options is safe: the store drops the duplicate events. Generating another user range
// into the same data dir (--first-user) keeps the truth and interests of the users already there: the files then
// hold every generated user, sorted by user id, and the manifest lists the earlier runs.
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { HistoryStore } from '../historyStore.js';
import { inIdRange, type IdRange } from '../../util/idRange.js';
import { Rng } from '../../util/random.js';
import { logger, progress, type Logger } from '../../util/log.js';
import { buildCatalogue, catalogueItems } from './catalogue.js';
import { generateLifelong, sampleLength, validateLifelongOptions, type GeneratedBatch, type LifelongOptions, type TruthRecord } from './lifelong.js';

/** Bump when the generator's output for the same options changes (benchmarks then rebuild their data). */
export const GENERATOR_VERSION = 1;

export function generatedPaths(dataDir: string) {
  const dir = join(dataDir, 'generated');
  return { dir, truth: join(dir, 'truth.jsonl'), users: join(dir, 'users.jsonl'), manifest: join(dir, 'manifest.json') };
}

export interface GeneratedManifest {
  generator: 'lifelong';
  version: number;
  options: LifelongOptions;
  users: number;
  events: number;
  targets: number;
  dormant_targets: number;
  truth: string;
  users_file: string;
  created_at: string;
  /** What truth.jsonl / users.jsonl hold after this run: this run's users plus the kept users of earlier runs. */
  files?: { users: number; targets: number; dormant_targets: number };
  /** Earlier runs into the same data dir whose users outside this run's range were kept. */
  earlier_runs?: Array<Pick<GeneratedManifest, 'options' | 'users' | 'events' | 'targets' | 'created_at'>>;
}

export interface WriteLifelongOptions {
  /** Ground-truth file (default <dataDir>/generated/truth.jsonl via generatedPaths). */
  truthPath: string;
  usersPath?: string;
  manifestPath?: string;
  /** Events per store append (a batch ends at a user boundary). */
  batchEvents?: number;
  log?: Logger;
}

export interface WriteLifelongResult {
  users: number;
  events: number;
  added: number;
  duplicates: number;
  items: number;
  targets: number;
  dormantTargets: number;
  seconds: number;
  eventsPerSecond: number;
}

/** Total events the options will produce (each user's length is the first draw of its own stream). */
export function plannedEvents(o: LifelongOptions): number {
  let total = 0;
  for (let u = 0; u < o.users; u++) total += sampleLength(new Rng(o.seed).fork(o.firstUserId + u), o);
  return total;
}

export function readManifest(path: string): GeneratedManifest | null {
  if (!existsSync(path)) return null;
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as GeneratedManifest;
  } catch (e) {
    throw new Error(`generator manifest ${path}: not valid JSON (${(e as Error).message})`, { cause: e });
  }
}

/** Reads a ground-truth file; a bad line throws an error naming the file, line and field. */
export function readTruth(path: string): TruthRecord[] {
  const lines = readFileSync(path, 'utf8').split('\n');
  const out: TruthRecord[] = [];
  const numeric = ['user_id', 'position', 'ts', 'item_id', 'cluster', 'interest', 'history_length', 't_recent', 't_mid'] as const;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (!line) continue;
    let rec: TruthRecord;
    try {
      rec = JSON.parse(line) as TruthRecord;
    } catch (e) {
      throw new Error(`${path}:${i + 1}: not valid JSON (${(e as Error).message})`, { cause: e });
    }
    for (const f of numeric) {
      if (typeof rec[f] !== 'number' || !Number.isFinite(rec[f])) throw new Error(`${path}:${i + 1}: field ${f} must be a number`);
    }
    if (typeof rec.dormant !== 'boolean') throw new Error(`${path}:${i + 1}: field dormant must be true or false`);
    out.push(rec);
  }
  return out;
}

/** True when two option sets generate the same data. */
export function sameOptions(a: LifelongOptions, b: LifelongOptions): boolean {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]) as Set<keyof LifelongOptions>;
  for (const k of keys) if (a[k] !== b[k]) return false;
  return true;
}

/** The user ids [from, to] a generator run writes. */
export function userRangeOf(o: Pick<LifelongOptions, 'firstUserId' | 'users'>): IdRange {
  return { from: o.firstUserId, to: o.firstUserId + o.users - 1 };
}

interface UserLine {
  userId: number;
  line: string;
}

/**
 * The lines of an earlier truth.jsonl / users.jsonl whose user_id lies outside [from, to]: the users a new run does
 * not regenerate. A line without a numeric user_id throws an error naming the file and line.
 */
function keptLines(path: string, range: IdRange): UserLine[] {
  if (!existsSync(path)) return [];
  const out: UserLine[] = [];
  readFileSync(path, 'utf8')
    .split('\n')
    .forEach((raw, i) => {
      const line = raw.trim();
      if (!line) return;
      let userId: unknown;
      try {
        userId = (JSON.parse(line) as { user_id?: unknown }).user_id;
      } catch (e) {
        throw new Error(`${path}:${i + 1}: not valid JSON (${(e as Error).message})`, { cause: e });
      }
      if (typeof userId !== 'number' || !Number.isInteger(userId)) throw new Error(`${path}:${i + 1}: field user_id must be an integer`);
      if (!inIdRange(userId, range)) out.push({ userId, line });
    });
  return out;
}

/** One JSON object per user and line; committed (merged with the kept lines, sorted by user) by a rename. */
class LineFile {
  private readonly lines: UserLine[] = [];
  constructor(
    readonly path: string,
    /** Earlier users' lines, carried into the committed file. */
    readonly kept: UserLine[],
  ) {
    mkdirSync(dirname(path), { recursive: true });
  }
  add(userId: number, obj: unknown): void {
    this.lines.push({ userId, line: JSON.stringify(obj) });
  }
  commit(): UserLine[] {
    // Stable sort: a user's lines (several targets) keep their order.
    const all = [...this.kept, ...this.lines].sort((a, b) => a.userId - b.userId);
    writeFileSync(this.path + '.tmp', all.map((l) => l.line + '\n').join(''));
    renameSync(this.path + '.tmp', this.path);
    return all;
  }
}

export async function writeLifelong(store: HistoryStore, o: LifelongOptions, w: WriteLifelongOptions): Promise<WriteLifelongResult> {
  validateLifelongOptions(o);
  const log = w.log ?? logger('generate');
  const t0 = performance.now();
  const range = userRangeOf(o);
  const usersPath = w.usersPath ?? join(dirname(w.truthPath), 'users.jsonl');
  // Read before anything is written: a malformed earlier file stops the run with nothing changed.
  const truthFile = new LineFile(w.truthPath, keptLines(w.truthPath, range));
  const usersFile = new LineFile(usersPath, keptLines(usersPath, range));
  const cat = buildCatalogue(o);
  const tagIdOf = Int32Array.from(await store.tagIds(cat.tagNames));
  await store.upsertItems(catalogueItems(cat, tagIdOf));

  const total = plannedEvents(o);
  log.info('generating lifelong histories', { users: o.users, events: total, items: o.items, clusters: o.clusters, seed: o.seed });
  const bar = progress(log, 'generate lifelong', total, 'events');
  const result: WriteLifelongResult = { users: 0, events: 0, added: 0, duplicates: 0, items: cat.numItems, targets: 0, dormantTargets: 0, seconds: 0, eventsPerSecond: 0 };

  const handle = (b: GeneratedBatch): Promise<void> => {
    // Catalogue tag indexes → store tag ids.
    const tags = b.events.tagIds;
    for (let i = 0; i < tags.length; i++) tags[i] = tagIdOf[tags[i]!]!;
    const truth: TruthRecord[] = b.truth;
    return store.append(b.events).then((r) => {
      result.added += r.added;
      result.duplicates += r.duplicates;
      result.events += b.events.length;
      result.users += b.users.length;
      for (const t of truth) {
        truthFile.add(t.user_id, t);
        result.targets++;
        if (t.dormant) result.dormantTargets++;
      }
      for (const u of b.users) usersFile.add(u.user_id, u);
      bar.tick(b.events.length, { users: result.users });
    });
  };

  // Generate the next batch (CPU, this thread) while the store writes the previous one (DuckDB's own threads).
  let inFlight: Promise<void> | null = null;
  for (const batch of generateLifelong(o, w.batchEvents ?? 1_000_000, cat)) {
    if (inFlight) await inFlight;
    inFlight = handle(batch);
  }
  if (inFlight) await inFlight;

  const allTruth = truthFile.commit();
  const allUsers = usersFile.commit();
  result.seconds = (performance.now() - t0) / 1000;
  result.eventsPerSecond = Math.round(result.events / Math.max(result.seconds, 1e-9));
  const manifestPath = w.manifestPath ?? join(dirname(w.truthPath), 'manifest.json');
  const previous = truthFile.kept.length > 0 ? readManifest(manifestPath) : null;
  const manifest: GeneratedManifest = {
    generator: 'lifelong',
    version: GENERATOR_VERSION,
    options: o,
    users: result.users,
    events: result.events,
    targets: result.targets,
    dormant_targets: result.dormantTargets,
    truth: w.truthPath,
    users_file: usersFile.path,
    created_at: new Date().toISOString(),
    files: {
      users: allUsers.length,
      targets: allTruth.length,
      dormant_targets: allTruth.filter((l) => (JSON.parse(l.line) as TruthRecord).dormant).length,
    },
  };
  if (previous) {
    const { options, users, events, targets, created_at } = previous;
    manifest.earlier_runs = [...(previous.earlier_runs ?? []), { options, users, events, targets, created_at }];
  }
  writeFileSync(manifestPath + '.tmp', JSON.stringify(manifest, null, 2) + '\n');
  renameSync(manifestPath + '.tmp', manifestPath);
  bar.done({ users: result.users, added: result.added, duplicates: result.duplicates });
  return result;
}
