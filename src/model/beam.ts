// Beam search over the Semantic-ID levels, batched over users, constrained by the prefix trie so that every beam
// is a prefix of an existing item; complete codes map back to items. Beams are distinct code paths and full codes
// are unique per item, so the returned items are distinct; scores (sum of log-probabilities) come sorted.
// `exclude` drops items (e.g. the user's history) at the last level, so the beam still yields k new items.
import { scoped } from './ops.js';
import type { EncodedStreams, GemsModel } from './gems.js';
import type { SemanticIds } from './sid.js';

export interface BeamOptions {
  /** Items wanted per user. */
  k: number;
  /** Beam width (≥ k; default k). */
  beam?: number;
  /** Per user, item ids not to return (or null). */
  exclude?: (Set<number> | null)[];
  /** Indexer top-k for the mid-term stream (0 = full attention). */
  topK: number;
  /** Return per-stream attention mass (at the first level's query). */
  wantMass?: boolean;
}

export interface UserRecommendations {
  items: Int32Array;
  scores: Float32Array;
  /** count × W codes, row-major. */
  codes: Int32Array;
}

export interface BeamOutput {
  users: UserRecommendations[];
  /** B × S per-stream attention mass shares (S = model.enabledStreams), when asked for. */
  mass?: Float32Array;
}

interface Beam {
  node: number;
  score: number;
  codes: number[];
}

export function beamSearch(model: GemsModel, sid: SemanticIds, enc: EncodedStreams, opts: BeamOptions): BeamOutput {
  const W = model.W;
  if (sid.trie.depth !== W) throw new Error(`beam search: trie depth ${sid.trie.depth} ≠ decoder levels ${W}`);
  const beamW = Math.max(opts.k, opts.beam ?? opts.k);
  const B = enc.B;
  let beams: Beam[][] = Array.from({ length: B }, () => [{ node: 0, score: 0, codes: [] }]);
  let mass: Float32Array | undefined;
  for (let level = 0; level < W; level++) {
    // Rows per user = the most live beams any user has (1 at the root, then ≤ beam width): the memories are
    // tiled only that many times, so early levels cost far less than beamW rows.
    const R = Math.max(1, ...beams.map((bs) => bs.length));
    const rows = B * R;
    const prefixes = new Int32Array(rows * level);
    for (let b = 0; b < B; b++) {
      for (let j = 0; j < R; j++) {
        const beam = beams[b]![Math.min(j, beams[b]!.length - 1)];
        if (beam) for (let l = 0; l < level; l++) prefixes[(b * R + j) * level + l] = beam.codes[l]!;
      }
    }
    const wantMass = opts.wantMass === true && level === 0;
    const { logp, mass: m } = scoped(() => {
      const tiled = model.tile(enc, R);
      const r = model.nextLogProbs(tiled, prefixes, level, { training: false, indexerLoss: false, topK: opts.topK, wantMass });
      return { logp: r.logp.dataSync() as Float32Array, mass: r.mass };
    });
    if (wantMass && m) {
      const S = m.length / rows;
      mass = new Float32Array(B * S);
      for (let b = 0; b < B; b++) mass.set(m.subarray(b * R * S, b * R * S + S), b * S);
    }
    const K = model.cfg.sizes[level]!;
    const last = level === W - 1;
    beams = beams.map((userBeams, b) => {
      const cand: Beam[] = [];
      const ex = opts.exclude?.[b];
      userBeams.forEach((beam, j) => {
        const row = (b * R + j) * K;
        const { codes, nodes } = sid.trie.children(beam.node);
        for (let i = 0; i < codes.length; i++) {
          const node = nodes.start + i;
          if (last && ex && ex.has(sid.trie.leafItem[node]!)) continue;
          cand.push({ node, score: beam.score + logp[row + codes[i]!]!, codes: [...beam.codes, codes[i]!] });
        }
      });
      cand.sort((x, y) => y.score - x.score || x.node - y.node);
      return cand.slice(0, last ? opts.k : beamW);
    });
  }
  const users = beams.map((bs) => ({
    items: Int32Array.from(bs.map((x) => sid.trie.leafItem[x.node]!)),
    scores: Float32Array.from(bs.map((x) => x.score)),
    codes: Int32Array.from(bs.flatMap((x) => x.codes)),
  }));
  return { users, mass };
}
