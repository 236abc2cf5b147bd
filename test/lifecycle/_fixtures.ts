// Synthetic lifecycle histories for the compressor tests (columnar, seeded).
import { historiesToBatch, type History } from '../../src/data/events.js';
import { Rng } from '../../src/util/random.js';

/** A chronological history of n events over `items` items (ids 1000..), with authors, tags, times and labels. */
export function syntheticHistory(userId: number, n: number, items: number, seed: number, t0 = Date.UTC(2024, 0, 1)): History {
  const rng = new Rng(seed);
  const itemId = new Int32Array(n);
  const ts = new Float64Array(n);
  const seq = new Int32Array(n);
  const authorId = new Int32Array(n);
  const tagOffsets = new Int32Array(n + 1);
  const tags: number[] = [];
  const playMs = new Float32Array(n);
  const durationMs = new Float32Array(n);
  const labels = new Uint8Array(n);
  let t = t0;
  for (let i = 0; i < n; i++) {
    const item = rng.int(items);
    itemId[i] = 1000 + item;
    t += 1000 + rng.int(600_000);
    ts[i] = t;
    seq[i] = i;
    authorId[i] = item % 97;
    const k = rng.int(3);
    for (let j = 0; j < k; j++) tags.push((item * 7 + j) % 50);
    tagOffsets[i + 1] = tags.length;
    durationMs[i] = 5000 + (item % 13) * 1000;
    playMs[i] = durationMs[i]! * rng.next();
    labels[i] = rng.next() < 0.1 ? 1 : 0;
  }
  return { userId, length: n, itemId, ts, seq, authorId, tagOffsets, tagIds: Int32Array.from(tags), playMs, durationMs, labels };
}

export const itemVocabulary = (items: number): Int32Array => Int32Array.from({ length: items }, (_, i) => 1000 + i);

/** max |a−b| / max|b| (norm-relative) and the largest element-wise |a−b| / max(|b|, floor). */
export function relDiff(a: Float32Array, b: Float32Array, floor = 1e-3): { normRel: number; elemRel: number } {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let maxAbs = 0;
  let maxB = 0;
  let elem = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    maxAbs = Math.max(maxAbs, d);
    maxB = Math.max(maxB, Math.abs(b[i]!));
    elem = Math.max(elem, d / Math.max(Math.abs(b[i]!), floor));
  }
  return { normRel: maxAbs / Math.max(maxB, 1e-30), elemRel: elem };
}

/** Concatenates histories into one EventColumns batch for HistoryStore.append. */
export const toColumns = (histories: History[], source = 'test') => historiesToBatch(histories, source);
