// Users' item sequences in chronological order, as item indices 1..numItems (0 = padding), packed into one array
// with offsets: the input of the ID baseline and of the leave-one-out protocol. Built from the history store, or
// from a `user_id,seq,item_id` CSV (the ML-1M `sequences.csv` layout).
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import type { HistoryStore } from '../data/historyStore.js';

export interface UserSequences {
  userIds: Int32Array;
  /** User u's items are items[offsets[u] .. offsets[u+1]). */
  offsets: Int32Array;
  items: Int32Array;
  /** indexToItemId[i] = the raw item id of index i (index 0 = padding, -1). */
  indexToItemId: Int32Array;
  numItems: number;
}

export function userItems(s: UserSequences, u: number): Int32Array {
  return s.items.subarray(s.offsets[u]!, s.offsets[u + 1]!);
}

/** Packs per-user raw-item lists; item indices follow ascending raw id, so they are stable across loads. */
export function packSequences(users: number[], lists: Int32Array[], vocab?: Int32Array): UserSequences {
  const ids = vocab ?? Int32Array.from(new Set(lists.flatMap((l) => Array.from(l)))).sort();
  const index = new Map<number, number>();
  ids.forEach((id, i) => index.set(id, i + 1));
  const offsets = new Int32Array(users.length + 1);
  lists.forEach((l, u) => (offsets[u + 1] = offsets[u]! + l.length));
  const items = new Int32Array(offsets[users.length]!);
  lists.forEach((l, u) => {
    for (let i = 0; i < l.length; i++) {
      const idx = index.get(l[i]!);
      if (idx === undefined) throw new Error(`item ${l[i]} of user ${users[u]} is not in the item vocabulary`);
      items[offsets[u]! + i] = idx;
    }
  });
  const indexToItemId = new Int32Array(ids.length + 1);
  indexToItemId[0] = -1;
  indexToItemId.set(ids, 1);
  return { userIds: Int32Array.from(users), offsets, items, indexToItemId, numItems: ids.length };
}

/** All users' histories from the store (chronological item ids). */
export async function sequencesFromStore(store: HistoryStore, opts: { maxUsers?: number } = {}): Promise<UserSequences> {
  const users: number[] = [];
  const lists: Int32Array[] = [];
  for await (const h of store.scanHistories()) {
    if (h.length === 0) continue;
    users.push(h.userId);
    lists.push(Int32Array.from(h.itemId));
    if (opts.maxUsers && users.length >= opts.maxUsers) break;
  }
  if (users.length === 0) throw new Error('the history store has no users (ingest a data set first)');
  return packSequences(users, lists);
}

/** Reads a `user_id,seq,item_id` CSV (header required); rows may come in any order. */
export async function sequencesFromCsv(path: string): Promise<UserSequences> {
  const rows = new Map<number, { seq: number[]; item: number[] }>();
  const rl = createInterface({ input: createReadStream(path), crlfDelay: Infinity });
  let line = 0;
  let cols: number[] | null = null;
  for await (const text of rl) {
    line++;
    if (!text.trim()) continue;
    const f = text.split(',');
    if (!cols) {
      const names = f.map((s) => s.trim());
      cols = ['user_id', 'seq', 'item_id'].map((n) => names.indexOf(n));
      if (cols.some((c) => c < 0)) throw new Error(`${path}:1: header must name user_id, seq, item_id (got ${text})`);
      continue;
    }
    const [u, s, it] = cols.map((c) => Number(f[c]));
    if (!Number.isInteger(u) || !Number.isInteger(s) || !Number.isInteger(it)) throw new Error(`${path}:${line}: expected integers user_id,seq,item_id, got '${text}'`);
    let r = rows.get(u!);
    if (!r) rows.set(u!, (r = { seq: [], item: [] }));
    r.seq.push(s!);
    r.item.push(it!);
  }
  const users = [...rows.keys()].sort((a, b) => a - b);
  const lists = users.map((u) => {
    const r = rows.get(u)!;
    const order = r.seq.map((_, i) => i).sort((a, b) => r.seq[a]! - r.seq[b]!);
    return Int32Array.from(order.map((i) => r.item[i]!));
  });
  return packSequences(users, lists);
}

/** Sequences from a CSV when given, else from the configured history store (opened read-only, then closed). */
export async function loadSequences(config: import('../config/config.js').GemsConfig, csv?: string): Promise<UserSequences> {
  if (csv) return sequencesFromCsv(csv);
  const { openHistoryStore } = await import('../data/parquetHistoryStore.js');
  const store = await openHistoryStore(config, { readOnly: true });
  try {
    return await sequencesFromStore(store);
  } finally {
    await store.close();
  }
}
