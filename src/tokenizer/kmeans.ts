// k-means on row-major Float32Array points: k-means++ initialisation (on a seeded sample for large n), Lloyd
// iterations, repair of empty clusters, and an optional balanced (capacity-constrained) assignment.
//
// The assignment step (n×k distances) is the whole cost, so it is pluggable: `jsAssigner` (plain loops) and
// `tfAssigner` (TensorFlow.js: one 2-D non-transposed matMul per chunk, the wasm backend's fast path). Both give
// the same assignments up to float rounding; bench/tokenize.ts measures them and `pickEngine` uses the result.
import { Rng } from '../util/random.js';

/** Computes, for each point, the nearest centroid and the squared distance to it; optionally all distances. */
export interface Assigner {
  readonly name: string;
  assign(x: Float32Array, n: number, d: number, c: Float32Array, k: number, outAssign: Int32Array, outDist: Float32Array, all?: Float32Array): Promise<void>;
}

function rowNorms(x: Float32Array, n: number, d: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    const o = i * d;
    for (let j = 0; j < d; j++) s += x[o + j]! * x[o + j]!;
    out[i] = s;
  }
  return out;
}

/** Plain typed-array loops: ‖x‖² − 2x·c + ‖c‖² per (point, centroid). */
export const jsAssigner: Assigner = {
  name: 'js',
  async assign(x, n, d, c, k, outAssign, outDist, all) {
    const cn = rowNorms(c, k, d);
    for (let i = 0; i < n; i++) {
      const xo = i * d;
      let xx = 0;
      for (let j = 0; j < d; j++) xx += x[xo + j]! * x[xo + j]!;
      let best = Infinity;
      let arg = 0;
      for (let q = 0; q < k; q++) {
        const co = q * d;
        let dot = 0;
        let j = 0;
        for (; j + 3 < d; j += 4) {
          dot += x[xo + j]! * c[co + j]! + x[xo + j + 1]! * c[co + j + 1]! + x[xo + j + 2]! * c[co + j + 2]! + x[xo + j + 3]! * c[co + j + 3]!;
        }
        for (; j < d; j++) dot += x[xo + j]! * c[co + j]!;
        const dist = cn[q]! - 2 * dot;
        if (all) all[i * k + q] = Math.max(0, xx + dist);
        if (dist < best) {
          best = dist;
          arg = q;
        }
      }
      outAssign[i] = arg;
      outDist[i] = Math.max(0, xx + best);
    }
  },
};

/** TensorFlow.js assignment: chunks of X (rows × d) times Cᵀ (d × k, pre-transposed so matMul takes the fast path). */
export async function tfAssigner(chunkRows = 8192): Promise<Assigner> {
  const { initBackend, tf } = await import('../compute/backend.js');
  const backend = await initBackend();
  return {
    name: `tf-${backend}`,
    async assign(x, n, d, c, k, outAssign, outDist, all) {
      const ct = new Float32Array(d * k);
      for (let q = 0; q < k; q++) for (let j = 0; j < d; j++) ct[j * k + q] = c[q * d + j]!;
      const cn = rowNorms(c, k, d);
      const xn = rowNorms(x, n, d);
      const ctT = tf.tensor2d(ct, [d, k]);
      const cnT = tf.tensor2d(cn, [1, k]);
      try {
        for (let start = 0; start < n; start += chunkRows) {
          const rows = Math.min(chunkRows, n - start);
          const [argT, minT, allT] = tf.tidy(() => {
            const xs = tf.tensor2d(x.subarray(start * d, (start + rows) * d), [rows, d]);
            const dist = tf.sub(cnT, tf.mul(tf.matMul(xs, ctT), 2));
            return [tf.argMin(dist, 1), tf.min(dist, 1), all ? dist : null] as const;
          });
          const arg = (await argT.data()) as Int32Array;
          const min = (await minT.data()) as Float32Array;
          for (let i = 0; i < rows; i++) {
            outAssign[start + i] = arg[i]!;
            outDist[start + i] = Math.max(0, xn[start + i]! + min[i]!);
          }
          if (all && allT) {
            const full = (await allT.data()) as Float32Array;
            for (let i = 0; i < rows; i++) {
              const xx = xn[start + i]!;
              for (let q = 0; q < k; q++) all[(start + i) * k + q] = Math.max(0, xx + full[i * k + q]!);
            }
          }
          argT.dispose();
          minT.dispose();
          allT?.dispose();
        }
      } finally {
        ctT.dispose();
        cnT.dispose();
      }
    },
  };
}

export type EngineName = 'js' | 'tf' | 'auto';

/**
 * The assignment engine. 'auto' picks TensorFlow.js unless the whole job is tiny (n·k·d < `tfMinWork`, where
 * loading the backend costs more than it saves). Measured here (one pass, 2 shared cores): 3,883×32×64 js 67 ms vs
 * tf-wasm 3.4 ms; 100,000×256×64 js 8.5 s vs tf-wasm 0.36 s (bench/tokenize.ts reports both every run).
 */
export async function pickEngine(name: EngineName, n: number, k: number, d: number, tfMinWork = 1e6): Promise<Assigner> {
  if (name === 'js') return jsAssigner;
  if (name === 'tf') return tfAssigner();
  return n * k * d >= tfMinWork ? tfAssigner() : jsAssigner;
}

export interface KMeansOptions {
  k: number;
  iterations: number;
  seed: number;
  balanced?: boolean;
  engine?: Assigner;
  /** Stop when fewer than this share of points change cluster in an iteration. */
  tolerance?: number;
  /** k-means++ runs on at most this many points per centroid (a seeded sample) to bound its O(n·k·d) cost. */
  initSamplePerCluster?: number;
  onIteration?: (it: number, changed: number, inertia: number) => void;
}

export interface KMeansResult {
  k: number;
  centroids: Float32Array;
  assign: Int32Array;
  /** Squared distance of each point to its centroid. */
  dist: Float32Array;
  inertia: number;
  iterations: number;
  /** Clusters that ended empty (only possible when there are fewer distinct points than k). */
  empty: number;
}

/** k-means++ seeding (D² sampling) over the given sample rows. Centroids beyond the number of distinct points
 * repeat already chosen ones (their clusters will stay empty; the caller reports it). */
export function kmeansPlusPlus(x: Float32Array, d: number, sample: Int32Array, k: number, rng: Rng): Float32Array {
  const m = sample.length;
  const c = new Float32Array(k * d);
  const d2 = new Float64Array(m).fill(Infinity);
  let pick = rng.int(m);
  for (let q = 0; q < k; q++) {
    const src = sample[pick]! * d;
    for (let j = 0; j < d; j++) c[q * d + j] = x[src + j]!;
    let total = 0;
    for (let s = 0; s < m; s++) {
      const o = sample[s]! * d;
      let dist = 0;
      for (let j = 0; j < d; j++) {
        const diff = x[o + j]! - c[q * d + j]!;
        dist += diff * diff;
      }
      if (dist < d2[s]!) d2[s] = dist;
      total += d2[s]!;
    }
    if (q + 1 < k) pick = total > 0 ? rng.weighted(d2, total) : rng.int(m);
  }
  return c;
}

/** Capacity-constrained assignment: each cluster takes at most ceil(n/k) points. Points with the largest regret
 * (second-best minus best distance) choose first; each takes its nearest cluster that still has room. */
export function balancedAssign(all: Float32Array, n: number, k: number, outAssign: Int32Array, outDist: Float32Array): void {
  const cap = Math.ceil(n / k);
  const regret = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let b1 = Infinity;
    let b2 = Infinity;
    for (let q = 0; q < k; q++) {
      const v = all[i * k + q]!;
      if (v < b1) {
        b2 = b1;
        b1 = v;
      } else if (v < b2) b2 = v;
    }
    regret[i] = Number.isFinite(b2) ? b2 - b1 : 0;
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => regret[b]! - regret[a]! || a - b);
  const fill = new Int32Array(k);
  for (const i of order) {
    let best = Infinity;
    let arg = -1;
    for (let q = 0; q < k; q++) {
      if (fill[q]! >= cap) continue;
      const v = all[i * k + q]!;
      if (v < best) {
        best = v;
        arg = q;
      }
    }
    outAssign[i] = arg;
    outDist[i] = best;
    fill[arg]!++;
  }
}

/** Lloyd's k-means with k-means++ seeding, empty-cluster repair and optional balanced assignment. */
export async function kmeans(x: Float32Array, n: number, d: number, opts: KMeansOptions): Promise<KMeansResult> {
  const k = opts.k;
  if (!Number.isInteger(k) || k < 1) throw new Error(`k-means: k must be a positive integer, got ${k}`);
  if (n < 1) throw new Error('k-means: no points');
  if (k > n) throw new Error(`k-means: k (${k}) > number of points (${n}); shrink the codebook first`);
  const engine = opts.engine ?? jsAssigner;
  const rng = new Rng(opts.seed);
  const tol = (opts.tolerance ?? 1e-4) * n;

  const sampleSize = Math.min(n, k * (opts.initSamplePerCluster ?? 64));
  let sample: Int32Array;
  if (sampleSize === n) sample = Int32Array.from({ length: n }, (_, i) => i);
  else {
    const perm = Int32Array.from({ length: n }, (_, i) => i);
    rng.shuffle(perm);
    sample = perm.slice(0, sampleSize).sort();
  }
  const c = kmeansPlusPlus(x, d, sample, k, rng);

  const assign = new Int32Array(n).fill(-1);
  const next = new Int32Array(n);
  const dist = new Float32Array(n);
  const all = opts.balanced ? new Float32Array(n * k) : undefined;
  const sums = new Float64Array(k * d);
  const sizes = new Int32Array(k);
  let it = 0;
  for (; it < Math.max(1, opts.iterations); it++) {
    await engine.assign(x, n, d, c, k, next, dist, all);
    if (all) balancedAssign(all, n, k, next, dist);
    let changed = 0;
    for (let i = 0; i < n; i++) if (next[i] !== assign[i]) changed++;
    assign.set(next);
    updateCentroids(x, n, d, assign, k, c, sums, sizes);
    repairEmpty(x, d, assign, dist, k, c, sizes);
    if (opts.onIteration) {
      let assignedInertia = 0;
      for (let i = 0; i < n; i++) assignedInertia += dist[i]!;
      opts.onIteration(it, changed, assignedInertia);
    }
    if (changed <= tol && it > 0) {
      it++;
      break;
    }
  }
  // Final distances to the final centroids (the means of the final clusters).
  let inertia = 0;
  for (let i = 0; i < n; i++) {
    const o = i * d;
    const co = assign[i]! * d;
    let s = 0;
    for (let j = 0; j < d; j++) s += (x[o + j]! - c[co + j]!) ** 2;
    dist[i] = s;
    inertia += s;
  }
  let empty = 0;
  for (let q = 0; q < k; q++) if (sizes[q] === 0) empty++;
  return { k, centroids: c, assign, dist, inertia, iterations: it, empty };
}

function updateCentroids(x: Float32Array, n: number, d: number, assign: Int32Array, k: number, c: Float32Array, sums: Float64Array, sizes: Int32Array): void {
  sums.fill(0);
  sizes.fill(0);
  for (let i = 0; i < n; i++) {
    const q = assign[i]!;
    sizes[q]!++;
    const o = i * d;
    const so = q * d;
    for (let j = 0; j < d; j++) sums[so + j] += x[o + j]!;
  }
  for (let q = 0; q < k; q++) {
    if (sizes[q] === 0) continue;
    for (let j = 0; j < d; j++) c[q * d + j] = sums[q * d + j]! / sizes[q]!;
  }
}

/** Each empty cluster takes the point farthest from its centroid among clusters with more than one point. When no
 * point is away from its centroid (fewer distinct points than clusters), the cluster stays empty. */
function repairEmpty(x: Float32Array, d: number, assign: Int32Array, dist: Float32Array, k: number, c: Float32Array, sizes: Int32Array): void {
  for (let q = 0; q < k; q++) {
    if (sizes[q]! > 0) continue;
    let far = -1;
    let farDist = 0;
    for (let i = 0; i < assign.length; i++) {
      if (sizes[assign[i]!]! > 1 && dist[i]! > farDist) {
        farDist = dist[i]!;
        far = i;
      }
    }
    if (far < 0) continue;
    const from = assign[far]!;
    // Remove the point from its old mean, make it the new cluster.
    const m = sizes[from]!;
    for (let j = 0; j < d; j++) c[from * d + j] = (c[from * d + j]! * m - x[far * d + j]!) / (m - 1);
    sizes[from] = m - 1;
    for (let j = 0; j < d; j++) c[q * d + j] = x[far * d + j]!;
    assign[far] = q;
    sizes[q] = 1;
    dist[far] = 0;
  }
}
