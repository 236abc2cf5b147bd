// Ranking metrics. HR@K / NDCG@K from the rank of one held-out target (leave-one-out, DESIGN §5), optionally
// with the user's input items filtered out of the ranking (as the HSTU code does by default); Recall@K / NDCG@K
// and hierarchical recall per code level for ranked lists (the lifelong evaluation).

/**
 * 0-based rank of the target among candidate indices 1..scores.length-1 (column 0 = padding is skipped): the number
 * of candidates with a strictly higher score, half the ties. With `exclude`, those indices (the user's history) are
 * left out of the ranking — except the target itself.
 */
export function targetRank(scores: Float32Array, target: number, exclude?: ArrayLike<number>): number {
  const t = scores[target]!;
  let higher = 0;
  let ties = 0;
  for (let i = 1; i < scores.length; i++) {
    if (i === target) continue;
    const s = scores[i]!;
    if (s > t) higher++;
    else if (s === t) ties++;
  }
  if (exclude) {
    const seen = new Set<number>();
    for (let j = 0; j < exclude.length; j++) {
      const i = exclude[j]!;
      if (i === target || i <= 0 || seen.has(i)) continue;
      seen.add(i);
      const s = scores[i]!;
      if (s > t) higher--;
      else if (s === t) ties--;
    }
  }
  return higher + Math.floor(ties / 2);
}

export class RankAccumulator {
  private n = 0;
  private hr: number[];
  private ndcg: number[];
  private mrr = 0;

  constructor(readonly ks: number[]) {
    this.hr = ks.map(() => 0);
    this.ndcg = ks.map(() => 0);
  }

  /** Adds one target's 0-based rank (Infinity = not retrieved). */
  add(rank: number): void {
    this.n++;
    if (Number.isFinite(rank)) this.mrr += 1 / (rank + 1);
    this.ks.forEach((k, i) => {
      if (rank < k) {
        this.hr[i]! += 1;
        this.ndcg[i]! += 1 / Math.log2(rank + 2);
      }
    });
  }

  get count(): number {
    return this.n;
  }

  result(): Record<string, number> {
    const out: Record<string, number> = { users: this.n };
    this.ks.forEach((k, i) => {
      out[`HR@${k}`] = this.n ? this.hr[i]! / this.n : 0;
      out[`NDCG@${k}`] = this.n ? this.ndcg[i]! / this.n : 0;
    });
    out['MRR'] = this.n ? this.mrr / this.n : 0;
    return out;
  }
}

/** Position of `target` in a ranked list (0-based), Infinity when absent. */
export function rankInList(list: ArrayLike<number>, target: number): number {
  for (let i = 0; i < list.length; i++) if (list[i] === target) return i;
  return Infinity;
}

/**
 * Hierarchical recall at level ℓ: 1 when the target's first ℓ codes equal the first ℓ codes of any of the first K
 * beams. `beamCodes` is K × L row-major, `targetCodes` has ≥ ℓ entries.
 */
export function hierarchicalHit(beamCodes: Int32Array, L: number, k: number, targetCodes: ArrayLike<number>, level: number): number {
  const n = Math.min(k, Math.floor(beamCodes.length / L));
  for (let b = 0; b < n; b++) {
    let ok = true;
    for (let l = 0; l < level; l++) if (beamCodes[b * L + l] !== targetCodes[l]) ok = false;
    if (ok) return 1;
  }
  return 0;
}
