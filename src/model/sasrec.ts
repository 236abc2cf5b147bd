// SASRec-style ID baseline (Kang & McAuley 2018), the calibration model of the evaluation protocol: causal
// self-attention over the last `maxLen` items, every position predicts the next item, full softmax over all items
// (affordable on ML-1M's 3,706 items), item embeddings tied between input and output.
// Item index 0 is padding; real items are 1..numItems.
import { tf } from '../compute/backend.js';
import { ParamStore } from './params.js';
import { softmaxCrossEntropy } from '../compute/ops.js';
import { attention, causalBias, dense, dropout, gatherRows, layerNorm, matMul2d, type AttentionParams } from './ops.js';

export interface SasRecConfig {
  kind: 'sasrec';
  numItems: number;
  maxLen: number;
  d: number;
  heads: number;
  layers: number;
  dropout: number;
  seed: number;
}

export const SASREC_ML1M: Omit<SasRecConfig, 'numItems'> = { kind: 'sasrec', maxLen: 200, d: 50, heads: 1, layers: 2, dropout: 0.2, seed: 42 };

type T = tf.Tensor;

export class SasRec {
  readonly params: ParamStore;
  private readonly causal: T;
  private readonly posIdx: tf.Tensor1D;
  private dropSeed = 1;

  constructor(readonly cfg: SasRecConfig) {
    this.params = new ParamStore(cfg.seed);
    const { d } = cfg;
    const p = this.params;
    p.get('item_emb', [cfg.numItems + 1, d], 'normal', 1 / Math.sqrt(d));
    p.get('pos_emb', [cfg.maxLen, d], 'normal', 1 / Math.sqrt(d));
    for (let l = 0; l < cfg.layers; l++) {
      for (const w of ['wq', 'wk', 'wv', 'wo']) p.get(`block${l}.attn.${w}`, [d, d]);
      for (const b of ['bq', 'bk', 'bv', 'bo']) p.get(`block${l}.attn.${b}`, [d], 'zeros');
      p.get(`block${l}.norm1.g`, [d], 'ones');
      p.get(`block${l}.norm1.b`, [d], 'zeros');
      p.get(`block${l}.norm2.g`, [d], 'ones');
      p.get(`block${l}.norm2.b`, [d], 'zeros');
      p.get(`block${l}.ff.w1`, [d, d]);
      p.get(`block${l}.ff.b1`, [d], 'zeros');
      p.get(`block${l}.ff.w2`, [d, d]);
      p.get(`block${l}.ff.b2`, [d], 'zeros');
    }
    p.get('final_norm.g', [d], 'ones');
    p.get('final_norm.b', [d], 'zeros');
    this.causal = causalBias(cfg.maxLen);
    this.posIdx = tf.range(0, cfg.maxLen, 1, 'int32') as tf.Tensor1D;
  }

  private v(name: string): T {
    return this.params.vars.get(name)!;
  }

  private attn(l: number): AttentionParams {
    const g = (n: string) => this.v(`block${l}.attn.${n}`);
    return { wq: g('wq'), wk: g('wk'), wv: g('wv'), wo: g('wo'), bq: g('bq'), bk: g('bk'), bv: g('bv'), bo: g('bo') };
  }

  /** Hidden states [B, T, d] for left-padded item-index windows `seqs` (B × maxLen, 0 = pad). */
  encode(seqs: Int32Array, B: number, training: boolean): T {
    const { d, maxLen: L } = this.cfg;
    const rate = training ? this.cfg.dropout : 0;
    const seed = () => (training ? this.dropSeed++ : undefined);
    const valid = new Float32Array(B * L);
    for (let i = 0; i < B * L; i++) valid[i] = seqs[i] !== 0 ? 1 : 0;
    const mask = tf.tensor3d(valid, [B, L, 1]);
    let x = gatherRows(this.v('item_emb'), seqs).reshape([B, L, d]).mul(Math.sqrt(d));
    x = x.add(gatherRows(this.v('pos_emb'), this.posIdx).reshape([1, L, d]));
    x = dropout(x, rate, seed()).mul(mask);
    for (let l = 0; l < this.cfg.layers; l++) {
      const q = layerNorm(x, this.v(`block${l}.norm1.g`), this.v(`block${l}.norm1.b`));
      const a = attention(q, x, this.attn(l), this.cfg.heads, this.causal).out;
      x = q.add(dropout(a, rate, seed()));
      const h = layerNorm(x, this.v(`block${l}.norm2.g`), this.v(`block${l}.norm2.b`));
      const f = dense(dropout(tf.relu(dense(h, this.v(`block${l}.ff.w1`), this.v(`block${l}.ff.b1`))), rate, seed()), this.v(`block${l}.ff.w2`), this.v(`block${l}.ff.b2`));
      x = h.add(dropout(f, rate, seed())).mul(mask);
    }
    return layerNorm(x, this.v('final_norm.g'), this.v('final_norm.b'));
  }

  /** Logits over item indices 0..numItems for hidden rows h [n, d]; padding column 0 is masked out. */
  logits(h: T): T {
    const scores = matMul2d(h, this.v('item_emb'), true);
    const padMask = tf.tensor1d(Array.from({ length: this.cfg.numItems + 1 }, (_, i) => (i === 0 ? -1e9 : 0)));
    return scores.add(padMask);
  }

  /**
   * Logits over the real items only (column j = item index j + 1) for training: the padding row is sliced off the
   * table instead of masking a column with a rows × items Add; softmax over these equals softmax over logits()
   * (the masked column has probability exactly 0).
   */
  itemLogits(h: T): T {
    const n = this.cfg.numItems;
    return matMul2d(h, this.v('item_emb').slice([1, 0], [n, this.cfg.d]), true);
  }

  /**
   * Mean next-item cross-entropy over the positions with a target: `targets` is B × maxLen (0 = no target).
   */
  loss(seqs: Int32Array, targets: Int32Array, B: number): tf.Scalar {
    const { d } = this.cfg;
    const rows: number[] = [];
    const tg: number[] = [];
    for (let i = 0; i < targets.length; i++) {
      if (targets[i] === 0) continue;
      rows.push(i);
      tg.push(targets[i]!);
    }
    if (rows.length === 0) throw new Error('SASRec loss: batch has no targets');
    const h = gatherRows(this.encode(seqs, B, true).reshape([-1, d]), Int32Array.from(rows));
    // Fused softmax cross-entropy (native kernel when present; no one-hot of rows × items either way).
    return softmaxCrossEntropy(this.itemLogits(h) as tf.Tensor2D, tf.tensor1d(Int32Array.from(tg, (t) => t - 1), 'int32')).mean() as tf.Scalar;
  }

  /** Scores over item indices (B × (numItems+1), column 0 = -inf) from the last position of each window. */
  scoreLast(seqs: Int32Array, B: number): Float32Array {
    return tf.tidy(() => {
      const { d, maxLen: L } = this.cfg;
      const h = this.encode(seqs, B, false);
      const last = gatherRows(h.reshape([-1, d]), Int32Array.from({ length: B }, (_, b) => b * L + L - 1));
      return this.logits(last).dataSync() as Float32Array;
    });
  }
}
