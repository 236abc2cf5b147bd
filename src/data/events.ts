// The event and item model shared by every stage. Reads return columnar typed arrays (one array per field),
// never arrays of objects: histories reach 100,000 events per user.

/** Feedback flags packed into `labels` (one byte per event). */
export const LABEL = { like: 1, follow: 2, share: 4, comment: 8, skip: 16 } as const;
export type LabelName = keyof typeof LABEL;

/**
 * A batch of events, column by column. Row i is one event. `ts` is epoch ms, NaN where the source has no
 * timestamps (then `seq` is the sort key). Tags are a ragged list: row i's tag ids are
 * `tagIds[tagOffsets[i] .. tagOffsets[i+1])`.
 */
export interface EventColumns {
  length: number;
  userId: Int32Array;
  itemId: Int32Array;
  ts: Float64Array;
  seq: Int32Array;
  authorId: Int32Array;
  tagOffsets: Int32Array;
  tagIds: Int32Array;
  playMs: Float32Array;
  durationMs: Float32Array;
  labels: Uint8Array;
  /** One source name for the whole batch (e.g. "ml-latest-small", "generator"). */
  source: string;
}

export interface Item {
  itemId: number;
  authorId: number;
  tags: number[];
  title: string;
  /** Free attributes (JSON-serialisable). */
  attrs?: Record<string, unknown>;
}

/** One user's events in chronological order (seq breaks ties), as columns. */
export type History = Omit<EventColumns, 'userId' | 'source'> & { userId: number };

/** A user's history cut by the budgets T_recent < T_mid (DESIGN §2): lifecycle | mid | recent, oldest first. */
export interface Streams {
  userId: number;
  recent: History;
  mid: History;
  lifecycle: History;
}

/** A zero-filled history of `length` events with room for `tagCount` tag ids. */
export function allocHistory(userId: number, length: number, tagCount = 0): History {
  return {
    userId,
    length,
    itemId: new Int32Array(length),
    ts: new Float64Array(length),
    seq: new Int32Array(length),
    authorId: new Int32Array(length),
    tagOffsets: new Int32Array(length + 1),
    tagIds: new Int32Array(tagCount),
    playMs: new Float32Array(length),
    durationMs: new Float32Array(length),
    labels: new Uint8Array(length),
  };
}

export function emptyHistory(userId: number): History {
  return allocHistory(userId, 0);
}

/** Histories concatenated in order into one (copies; tag offsets rebased). A single non-empty part is returned as is. */
export function concatHistories(userId: number, parts: History[]): History {
  const nonEmpty = parts.filter((p) => p.length > 0);
  if (nonEmpty.length === 0) return emptyHistory(userId);
  if (nonEmpty.length === 1) return { ...nonEmpty[0]!, userId };
  const out = allocHistory(
    userId,
    nonEmpty.reduce((s, p) => s + p.length, 0),
    nonEmpty.reduce((s, p) => s + p.tagIds.length, 0),
  );
  let row = 0;
  let tag = 0;
  for (const p of nonEmpty) {
    out.itemId.set(p.itemId, row);
    out.ts.set(p.ts, row);
    out.seq.set(p.seq, row);
    out.authorId.set(p.authorId, row);
    out.playMs.set(p.playMs, row);
    out.durationMs.set(p.durationMs, row);
    out.labels.set(p.labels, row);
    out.tagIds.set(p.tagIds, tag);
    for (let i = 1; i <= p.length; i++) out.tagOffsets[row + i] = tag + p.tagOffsets[i]!;
    row += p.length;
    tag += p.tagIds.length;
  }
  return out;
}

/** Several users' histories as one EventColumns batch (e.g. for HistoryStore.append). */
export function historiesToBatch(histories: History[], source: string): EventColumns {
  const all = concatHistories(0, histories);
  const userId = new Int32Array(all.length);
  let at = 0;
  for (const h of histories) {
    userId.fill(h.userId, at, at + h.length);
    at += h.length;
  }
  return { ...all, userId, source };
}

/** Rows [start, end) of a history, as a new history (views, no copies, except rebased tag offsets). */
export function sliceHistory(h: History, start: number, end: number): History {
  start = Math.max(0, Math.min(start, h.length));
  end = Math.max(start, Math.min(end, h.length));
  const t0 = h.tagOffsets[start]!;
  const t1 = h.tagOffsets[end]!;
  const offsets = new Int32Array(end - start + 1);
  for (let i = 0; i <= end - start; i++) offsets[i] = h.tagOffsets[start + i]! - t0;
  return {
    userId: h.userId,
    length: end - start,
    itemId: h.itemId.subarray(start, end),
    ts: h.ts.subarray(start, end),
    seq: h.seq.subarray(start, end),
    authorId: h.authorId.subarray(start, end),
    tagOffsets: offsets,
    tagIds: h.tagIds.subarray(t0, t1),
    playMs: h.playMs.subarray(start, end),
    durationMs: h.durationMs.subarray(start, end),
    labels: h.labels.subarray(start, end),
  };
}

/**
 * Cuts a chronological history into the three streams: Recent = last tRecent events, Mid-term = the events from
 * tRecent back to tMid, Lifecycle = everything older than tMid.
 */
export function cutStreams(h: History, tRecent: number, tMid: number): Streams {
  if (!(tRecent > 0 && tMid > tRecent)) throw new Error(`cutStreams: need 0 < tRecent (${tRecent}) < tMid (${tMid})`);
  const n = h.length;
  const recentStart = Math.max(0, n - tRecent);
  const midStart = Math.max(0, n - tMid);
  return {
    userId: h.userId,
    lifecycle: sliceHistory(h, 0, midStart),
    mid: sliceHistory(h, midStart, recentStart),
    recent: sliceHistory(h, recentStart, n),
  };
}
