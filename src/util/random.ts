// Seeded randomness: every random choice in gems takes a seed and draws from this generator, so the same seed
// gives the same data, codebooks and models. mulberry32 for uniforms, Box–Muller for normals.

export class Rng {
  private state: number;
  private spare: number | null = null;
  private readonly seed: number;

  constructor(seed: number) {
    this.seed = seed >>> 0;
    // Mix the seed so nearby seeds give unrelated streams.
    this.state = hash32(this.seed ^ 0x9e3779b9);
  }

  /** Uniform in [0, 1). */
  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  normal(mean = 0, std = 1): number {
    if (this.spare !== null) {
      const s = this.spare;
      this.spare = null;
      return mean + std * s;
    }
    let u = 0;
    while (u === 0) u = this.next();
    const v = this.next();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return mean + std * r * Math.cos(2 * Math.PI * v);
  }

  /** Index drawn with probability proportional to weights[i] (weights ≥ 0, not all 0). */
  weighted(weights: ArrayLike<number>, total?: number): number {
    let sum = total ?? 0;
    if (total === undefined) for (let i = 0; i < weights.length; i++) sum += weights[i]!;
    let r = this.next() * sum;
    for (let i = 0; i < weights.length; i++) {
      r -= weights[i]!;
      if (r < 0) return i;
    }
    return weights.length - 1;
  }

  shuffle<T>(arr: T[] | Int32Array | Uint32Array): void {
    for (let i = arr.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = arr[i]!;
      arr[i] = arr[j]!;
      arr[j] = t as never;
    }
  }

  /** A derived generator for an independent sub-stream (e.g. one per user), stable under reordering. */
  fork(salt: number): Rng {
    return new Rng(hash32((this.seed ^ hash32(salt + 0x632be5ab)) >>> 0));
  }
}

/** 32-bit integer hash (murmur3 finaliser); used for user buckets and shards, so it must never change. */
export function hash32(x: number): number {
  x = x >>> 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}
