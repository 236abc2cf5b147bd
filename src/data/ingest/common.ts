// Shared ingestion machinery: streaming line/field reading with exact line numbers, row errors that name the file,
// line and field, the --skip-bad-rows rejects file, and a stage writer that buffers parsed events into typed columns
// and loads them into a DuckDB staging table of the history store. Nothing becomes visible until the file's rows are
// committed together (ParquetHistoryStore.commitStage), so a file that fails leaves nothing behind.
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, statSync, type WriteStream } from 'node:fs';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import type { ParquetHistoryStore } from '../parquetHistoryStore.js';
import type { AppendResult } from '../historyStore.js';
import { logger, progress } from '../../util/log.js';

export const log = logger('ingest');

/** A row that cannot be loaded. `line` is 1-based (the header is line 1). */
export class IngestError extends Error {
  override name = 'IngestError';
  constructor(
    readonly file: string,
    readonly line: number,
    readonly field: string,
    readonly reason: string,
  ) {
    super(`${file}:${line}: field '${field}': ${reason}`);
  }
}

/** Thrown by a row parser for one bad field (the reader adds file and line). */
export class FieldError extends Error {
  constructor(
    readonly field: string,
    readonly reason: string,
  ) {
    super(`${field}: ${reason}`);
  }
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

export type Delimiter = ',' | '\t' | '::' | '|' | ';';

/**
 * Splits one record into fields. For ',' / ';' / '\t' / '|' it honours double quotes ("a, b" and "" escapes);
 * returns null when a quoted field continues on the next line.
 */
export function splitFields(line: string, delim: Delimiter): string[] | null {
  if (delim === '::') return line.split('::');
  if (!line.includes('"')) return line.split(delim);
  const out: string[] = [];
  let cur = '';
  let i = 0;
  let quoted = false;
  let fieldStart = true;
  while (i < line.length) {
    const ch = line[i]!;
    if (quoted) {
      if (ch === '"') {
        if (line[i + 1] === '"') {
          cur += '"';
          i += 2;
          continue;
        }
        quoted = false;
        i++;
        continue;
      }
      cur += ch;
      i++;
      continue;
    }
    if (ch === '"' && fieldStart) {
      quoted = true;
      fieldStart = false;
      i++;
      continue;
    }
    if (line.startsWith(delim, i)) {
      out.push(cur);
      cur = '';
      fieldStart = true;
      i += delim.length;
      continue;
    }
    cur += ch;
    fieldStart = false;
    i++;
  }
  if (quoted) return null;
  out.push(cur);
  return out;
}

export interface Record_ {
  line: number;
  fields: string[];
  raw: string;
}

/** Streams the records of a delimited text file with their starting line numbers (quoted newlines joined). */
export async function* readRecords(
  path: string,
  opts: { delimiter: Delimiter; encoding?: BufferEncoding; onBytes?: (bytes: number) => void },
): AsyncGenerator<Record_> {
  const stream = createReadStream(path, { encoding: opts.encoding ?? 'utf8' });
  let bytes = 0;
  if (opts.onBytes) {
    stream.on('data', (c) => {
      bytes += Buffer.byteLength(c as string, opts.encoding ?? 'utf8');
      opts.onBytes!(bytes);
    });
  }
  const rl = createInterface({ input: stream, crlfDelay: Infinity });
  let lineNo = 0;
  let pending: { line: number; text: string } | null = null;
  for await (const raw of rl) {
    lineNo++;
    let text = raw;
    let start = lineNo;
    if (pending) {
      text = pending.text + '\n' + raw;
      start = pending.line;
      pending = null;
    } else if (lineNo === 1 && text.charCodeAt(0) === 0xfeff) {
      text = text.slice(1);
    }
    if (text.length === 0) continue;
    const fields = splitFields(text, opts.delimiter);
    if (fields === null) {
      pending = { line: start, text };
      continue;
    }
    yield { line: start, fields, raw: text };
  }
  if (pending) throw new IngestError(path, pending.line, '(record)', 'unterminated quoted field at end of file');
}

/** Parses a required integer field (int32). */
export function intField(value: string | undefined, field: string, min = -2147483648): number {
  if (value === undefined) throw new FieldError(field, 'missing');
  const s = value.trim();
  if (s === '') throw new FieldError(field, 'empty');
  if (!/^[+-]?\d+$/.test(s)) throw new FieldError(field, `'${value}' is not an integer`);
  const n = Number(s);
  if (n < min || n > 2147483647) throw new FieldError(field, `${s} is out of range [${min}, 2147483647]`);
  return n;
}

/** Parses a required finite number field. */
export function numField(value: string | undefined, field: string): number {
  if (value === undefined) throw new FieldError(field, 'missing');
  const s = value.trim();
  if (s === '') throw new FieldError(field, 'empty');
  const n = Number(s);
  if (!Number.isFinite(n)) throw new FieldError(field, `'${value}' is not a number`);
  return n;
}

/** Writes rejected rows (with line and reason) to the --skip-bad-rows file, as TSV. */
export class Rejects {
  private out: WriteStream | null = null;
  count = 0;
  constructor(readonly path: string | null) {}

  get enabled(): boolean {
    return this.path !== null;
  }

  async add(e: IngestError, raw: string): Promise<void> {
    if (!this.path) throw e;
    if (!this.out) {
      this.out = createWriteStream(this.path, { flags: 'a' });
      if (statSizeOrZero(this.path) === 0) this.out.write('file\tline\tfield\treason\trow\n');
    }
    this.count++;
    const clean = (s: string) => s.replace(/[\t\r\n]/g, ' ');
    if (!this.out.write(`${clean(e.file)}\t${e.line}\t${clean(e.field)}\t${clean(e.reason)}\t${clean(raw)}\n`)) await once(this.out, 'drain');
  }

  async close(): Promise<void> {
    if (!this.out) return;
    this.out.end();
    await once(this.out, 'finish');
    this.out = null;
  }
}

function statSizeOrZero(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

/** Buffers parsed events into typed columns and loads them into a staging table in blocks. */
export class StageWriter {
  private cap = 65_536;
  private n = 0;
  total = 0;
  private userId = new Int32Array(this.cap);
  private itemId = new Int32Array(this.cap);
  private ts = new Float64Array(this.cap);
  private seq = new Int32Array(this.cap);
  private authorId = new Int32Array(this.cap);
  private playMs = new Float32Array(this.cap);
  private durationMs = new Float32Array(this.cap);
  private labels = new Uint8Array(this.cap);
  private tagOffsets = new Int32Array(this.cap + 1);
  private tagIds: number[] = [];

  constructor(
    readonly store: ParquetHistoryStore,
    readonly stage: string,
  ) {}

  /** Adds one event; `seq` for timestamped sources is the line number (renumbered per user later). */
  async add(e: { userId: number; itemId: number; ts: number; seq: number; authorId?: number; tags?: number[]; playMs?: number; durationMs?: number; labels?: number }): Promise<void> {
    const i = this.n;
    this.userId[i] = e.userId;
    this.itemId[i] = e.itemId;
    this.ts[i] = e.ts;
    this.seq[i] = e.seq;
    this.authorId[i] = e.authorId ?? 0;
    this.playMs[i] = e.playMs ?? 0;
    this.durationMs[i] = e.durationMs ?? 0;
    this.labels[i] = e.labels ?? 0;
    if (e.tags) for (const t of e.tags) this.tagIds.push(t);
    this.tagOffsets[i + 1] = this.tagIds.length;
    this.n++;
    this.total++;
    if (this.n === this.cap) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.n === 0) return;
    const n = this.n;
    await this.store.loadColumns(this.stage, {
      length: n,
      userId: this.userId.subarray(0, n),
      itemId: this.itemId.subarray(0, n),
      ts: this.ts.subarray(0, n),
      seq: this.seq.subarray(0, n),
      authorId: this.authorId.subarray(0, n),
      tagOffsets: this.tagOffsets.subarray(0, n + 1),
      tagIds: Int32Array.from(this.tagIds),
      playMs: this.playMs.subarray(0, n),
      durationMs: this.durationMs.subarray(0, n),
      labels: this.labels.subarray(0, n),
    });
    this.n = 0;
    this.tagIds = [];
    this.tagOffsets[0] = 0;
  }
}

export interface FileIngestResult {
  file: string;
  source: string;
  /** True when this exact file (same bytes) was ingested before: nothing was added. */
  alreadyIngested: boolean;
  rows: number;
  rejected: number;
  added: number;
  duplicates: number;
  objects: number;
}

/** How a parsed file's seq column is meant: per-user order given by the source, or to be derived from (ts, line). */
export type SeqMode = 'given' | 'from-ts';

/**
 * The common frame of an events-file ingest: file-level dedup by content hash, a fresh stage, the row loop (given by
 * `parse`), seq renumbering, optional tag fill from the item catalogue, and the single commit at the end.
 */
export async function ingestEventsFile(
  store: ParquetHistoryStore,
  file: string,
  source: string,
  opts: { rejects: Rejects; seqMode: SeqMode; tagsFromItems: boolean; force?: boolean },
  parse: (writer: StageWriter, onBytes: (b: number) => void) => Promise<number>,
): Promise<FileIngestResult> {
  const sha = await sha256File(file);
  const prior = opts.force ? null : await store.fileIngested(sha);
  if (prior) {
    log.info('file already ingested, skipping', { file, sha256: sha, first_path: prior.path, rows_loaded: prior.rowsLoaded });
    return { file, source, alreadyIngested: true, rows: 0, rejected: 0, added: 0, duplicates: 0, objects: 0 };
  }
  const size = statSync(file).size;
  const bar = progress(log, `ingest ${file}`, size, 'bytes');
  const stage = await store.createStage();
  try {
    const writer = new StageWriter(store, stage);
    const rejectedBefore = opts.rejects.count;
    const rows = await parse(writer, (b) => bar.set(b));
    await writer.flush();
    bar.done({ rows, events: writer.total });
    await store.withDb(async (db) => {
      if (opts.tagsFromItems) {
        await db.run(`UPDATE ${stage} SET tags = i.tags FROM items i WHERE ${stage}.item_id = i.item_id AND len(coalesce(${stage}.tags, [])) = 0`);
      }
      if (opts.seqMode === 'from-ts') {
        // seq holds the line number: the per-user order is (ts, line), numbered from 0. Rows come out sorted.
        await db.run(
          `CREATE OR REPLACE TEMP TABLE ${stage} AS
           SELECT user_id, item_id, ts, (row_number() OVER (PARTITION BY user_id ORDER BY ts NULLS FIRST, seq) - 1)::INTEGER AS seq,
                  author_id, tags, play_ms, duration_ms, labels, bucket FROM ${stage}
           ORDER BY user_id, ts NULLS FIRST, seq`,
        );
      }
    });
    // Renumbered seqs are unique per user; a given seq column may repeat (the store then drops in-file duplicates).
    const hints = opts.seqMode === 'from-ts' ? { unique: true, sorted: true } : {};
    const res: AppendResult = await store.commitStage(stage, source, { sha256: sha, path: file, source }, hints);
    return {
      file,
      source,
      alreadyIngested: false,
      rows,
      rejected: opts.rejects.count - rejectedBefore,
      added: res.added,
      duplicates: res.duplicates,
      objects: res.objects.length,
    };
  } finally {
    await store.dropStage(stage);
  }
}
