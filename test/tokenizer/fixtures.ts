// Seeded synthetic inputs for the tokenizer tests: clustered unit vectors, and a small catalogue whose users
// browse one cluster of items each (so co-occurrence has a known structure).
import { Rng } from '../../src/util/random.js';
import type { CatalogColumns } from '../../src/tokenizer/embeddings.js';

/** n unit vectors in d dims around `clusters` random centres (noise std `spread`). */
export function clusteredVectors(n: number, d: number, clusters: number, seed: number, spread = 0.3): Float32Array {
  const rng = new Rng(seed);
  const centres = Float32Array.from({ length: clusters * d }, () => rng.normal());
  const x = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    const c = rng.int(clusters);
    let s = 0;
    for (let j = 0; j < d; j++) {
      const v = centres[c * d + j]! + spread * rng.normal();
      x[i * d + j] = v;
      s += v * v;
    }
    const norm = Math.sqrt(s);
    for (let j = 0; j < d; j++) x[i * d + j] = x[i * d + j]! / norm;
  }
  return x;
}

/**
 * `groups` groups of `perGroup` items (ids 100, 101, …); items of group g carry tag g and author 1000+g. Each user
 * browses random items of one group. The last `cold` items of every group appear in no history.
 */
export function groupedCatalogue(groups: number, perGroup: number, users: number, seqLen: number, seed: number, cold = 0) {
  const n = groups * perGroup;
  const itemId = Int32Array.from({ length: n }, (_, i) => 100 + i);
  const catalog: CatalogColumns = {
    length: n,
    itemId,
    authorId: Int32Array.from({ length: n }, (_, i) => 1000 + Math.floor(i / perGroup)),
    tagOffsets: Int32Array.from({ length: n + 1 }, (_, i) => i),
    tagIds: Int32Array.from({ length: n }, (_, i) => Math.floor(i / perGroup)),
  };
  const rng = new Rng(seed);
  const sequences: Int32Array[] = [];
  for (let u = 0; u < users; u++) {
    const g = u % groups;
    sequences.push(Int32Array.from({ length: seqLen }, () => itemId[g * perGroup + rng.int(perGroup - cold)]!));
  }
  return { catalog, sequences, groupOf: (row: number) => Math.floor(row / perGroup) };
}
