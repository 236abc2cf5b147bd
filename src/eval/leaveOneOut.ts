// Leave-one-out protocol (DESIGN §5, as the HSTU code): per user, last item = test target, second-to-last =
// validation target, the rest = training. A model is asked for scores over all items given the input history; the
// target is ranked over all items, "filtered" = the items of the input history are removed from the ranking (the
// HSTU default), "unfiltered" = they stay. Both are reported; the filtered one compares with the published table.
import { RankAccumulator, targetRank } from './metrics.js';
import { userItems, type UserSequences } from './sequences.js';
import { logger, progress } from '../util/log.js';

export type Split = 'train' | 'valid' | 'test';
export const DEFAULT_KS = [10, 50, 200];

/** The input history and target of user u for a split (train: the sequence without its last two items, no target). */
export function splitOf(seqs: UserSequences, u: number, split: Split): { input: Int32Array; target: number } {
  const all = userItems(seqs, u);
  const n = all.length;
  if (split === 'test') return { input: all.subarray(0, n - 1), target: all[n - 1]! };
  if (split === 'valid') return { input: all.subarray(0, n - 2), target: all[n - 2]! };
  return { input: all.subarray(0, Math.max(0, n - 2)), target: 0 };
}

/** Users with at least `min` items (ML-1M: every user has ≥ 20). Leave-one-out needs 3. */
export function eligibleUsers(seqs: UserSequences, min = 3): Int32Array {
  const out: number[] = [];
  for (let u = 0; u < seqs.userIds.length; u++) if (seqs.offsets[u + 1]! - seqs.offsets[u]! >= min) out.push(u);
  return Int32Array.from(out);
}

/** Scores over item indices 0..numItems for a batch of input histories (one row per history, column 0 ignored). */
export type BatchScorer = (inputs: Int32Array[]) => Float32Array[] | Promise<Float32Array[]>;

export interface LooResult {
  split: Split;
  filtered: Record<string, number>;
  unfiltered: Record<string, number>;
  seconds: number;
}

export async function evaluateLeaveOneOut(
  seqs: UserSequences,
  scorer: BatchScorer,
  opts: { split: Split; ks?: number[]; batchSize?: number; users?: Int32Array; quiet?: boolean },
): Promise<LooResult> {
  const ks = opts.ks ?? DEFAULT_KS;
  const users = opts.users ?? eligibleUsers(seqs);
  const bs = opts.batchSize ?? 256;
  const filtered = new RankAccumulator(ks);
  const unfiltered = new RankAccumulator(ks);
  const t0 = performance.now();
  const prog = opts.quiet ? null : progress(logger('eval'), `leave-one-out ${opts.split}`, users.length, 'users');
  for (let start = 0; start < users.length; start += bs) {
    const batch = Array.from(users.subarray(start, Math.min(users.length, start + bs)));
    const parts = batch.map((u) => splitOf(seqs, u, opts.split));
    const scores = await scorer(parts.map((p) => p.input));
    parts.forEach((p, i) => {
      unfiltered.add(targetRank(scores[i]!, p.target));
      filtered.add(targetRank(scores[i]!, p.target, p.input));
    });
    prog?.tick(batch.length);
  }
  prog?.done();
  return { split: opts.split, filtered: filtered.result(), unfiltered: unfiltered.result(), seconds: (performance.now() - t0) / 1000 };
}
