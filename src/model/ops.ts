// TensorFlow.js building blocks that train on every backend we ship, including plain wasm (DESIGN §6):
// - embedding lookups get their gradient through scatterND (wasm has no UnsortedSegmentSum, so tf.gather's own
//   gradient throws there);
// - 2-D matMul passes transpose flags to tf.matMul (forward and backward) instead of materialising transposes
//   where that is fast (native kernels, or any non-wasm backend); plain wasm only has a fast path for
//   non-transposed 2-D matMul (DESIGN §6), so there the transposes are still materialised;
// - dropout, layerNorm and gelu are the fused ones of src/compute/ops.ts (hashed mask; one-pass native kernels);
// - logSumExp gets the cheap softmax·dy gradient;
// - stopGradient is a customGrad with a zero gradient (tfjs has no stop_gradient op);
// - masks are constants added to scores (bandPart's gradient throws).
import { tf } from '../compute/backend.js';
import { dropout as fusedDropout, gelu as fusedGelu, layerNorm as fusedLayerNorm } from '../compute/ops.js';
import { activeNativeAddon } from '../compute/nativeKernels.js';

type T = tf.Tensor;

/** Rows `ids` of a 2-D table; gradient = scatterND of dy into the table's shape (sums duplicate ids). */
export function gatherRows(table: T, ids: tf.Tensor1D | Int32Array): T {
  const idx = ids instanceof Int32Array ? tf.tensor1d(ids, 'int32') : ids;
  const f = tf.customGrad(((x: T, save: tf.GradSaveFunc) => {
    save([idx]);
    const value = tf.gather(x, idx);
    const gradFunc = (dy: T, saved: T[]) => [tf.scatterND(saved[0]!.expandDims(1), dy, x.shape)];
    return { value, gradFunc };
  }) as any) as (x: T) => T;
  return f(table);
}

/**
 * a [n,k] × b [k,m] (or × bᵀ for b [m,k] when `transposeB`), forward and gradients as 2-D matMuls with transpose
 * flags — no transposed copy of either operand is made.
 */
export function matMul2d(a: T, b: T, transposeB = false): T {
  const flags = transposeFlagsFast();
  // mm(p, q, ta, tb) = op(p)·op(q), by flags or by materialised transposes (plain wasm).
  const mm = (p: tf.Tensor2D, q: tf.Tensor2D, ta: boolean, tb: boolean) =>
    flags ? tf.matMul(p, q, ta, tb) : tf.matMul(ta ? tf.transpose(p) : p, tb ? tf.transpose(q) : q);
  const f = tf.customGrad(((x: T, y: T, save: tf.GradSaveFunc) => {
    save([x, y]);
    const value = mm(x as tf.Tensor2D, y as tf.Tensor2D, false, transposeB);
    const gradFunc = (dy: T, saved: T[]) => {
      const [sx, sy] = saved as [tf.Tensor2D, tf.Tensor2D];
      const d = dy as tf.Tensor2D;
      // y = x·w: dx = dy·wᵀ, dw = xᵀ·dy.  y = x·wᵀ: dx = dy·w, dw = dyᵀ·x.
      return transposeB ? [mm(d, sy, false, false), mm(d, sx, true, false)] : [mm(d, sy, false, true), mm(sx, d, true, false)];
    };
    return { value, gradFunc };
  }) as any) as (x: T, y: T) => T;
  return f(a, b);
}

/** Whether tf.matMul with transpose flags is fast here: not on plain wasm without the native kernels (DESIGN §6). */
function transposeFlagsFast(): boolean {
  return tf.getBackend() !== 'wasm' || activeNativeAddon() !== null;
}

/** x [..., k] · w [k, m] + b, computed as one 2-D matMul. */
export function dense(x: T, w: T, b?: T): T {
  const shape = x.shape;
  const k = shape[shape.length - 1]!;
  const m = w.shape[1]!;
  let y = matMul2d(x.reshape([-1, k]), w);
  if (b) y = y.add(b);
  return y.reshape([...shape.slice(0, -1), m]);
}

/** logSumExp over the last axis (keepDims), with gradient softmax(x)·dy. */
export function logSumExpLast(x: T): T {
  const f = tf.customGrad(((v: T, save: tf.GradSaveFunc) => {
    const mx = v.max(-1, true);
    const lse = v.sub(mx).exp().sum(-1, true).log().add(mx);
    save([v, lse]);
    const gradFunc = (dy: T, saved: T[]) => [saved[0]!.sub(saved[1]!).exp().mul(dy)];
    return { value: lse, gradFunc };
  }) as any) as (v: T) => T;
  return f(x);
}

export function logSoftmaxLast(x: T): T {
  return x.sub(logSumExpLast(x));
}

/** Identity forward, zero gradient (detaches `x` from the tape). */
export function stopGradient(x: T): T {
  const f = tf.customGrad(((v: T) => ({ value: v.clone(), gradFunc: (dy: T) => [tf.zerosLike(dy)] })) as any) as (v: T) => T;
  return f(x);
}

/** Layer norm over the last axis (fused native kernel when available; same formula otherwise). */
export function layerNorm(x: T, gamma: T, beta: T, eps = 1e-6): T {
  return fusedLayerNorm(x, gamma, beta, eps);
}

/** GELU (tanh approximation; fused native kernel when available, the same formula in tf ops otherwise). */
export function gelu(x: T): T {
  return fusedGelu(x);
}

/** Dropout with an explicit seed (hashed mask: deterministic on every backend); identity when rate is 0 or no seed (not training). */
export function dropout(x: T, rate: number, seed: number | undefined): T {
  if (!(rate > 0) || seed === undefined) return x;
  return fusedDropout(x, rate, seed);
}

export interface AttentionParams {
  wq: T;
  wk: T;
  wv: T;
  wo: T;
  bq?: T;
  bk?: T;
  bv?: T;
  bo?: T;
}

export interface AttentionOut {
  out: T;
  /** Attention probabilities [B, H, Lq, Lk] (only when asked for). */
  probs?: T;
}

/**
 * Multi-head attention. q [B, Lq, d], kv [B, Lk, d]; `bias` is added to the scores and broadcasts to
 * [B, H, Lq, Lk] (0 = allowed, -1e9 = masked). Projections are 2-D matMuls; only the score and value products are
 * batched.
 */
export function attention(q: T, kv: T, p: AttentionParams, heads: number, bias?: T, wantProbs = false): AttentionOut {
  const [B, Lq, d] = q.shape as [number, number, number];
  const Lk = kv.shape[1]!;
  const dh = p.wq.shape[1]! / heads;
  const split = (x: T, L: number) => x.reshape([B, L, heads, dh]).transpose([0, 2, 1, 3]); // [B,H,L,dh]
  const Q = split(dense(q, p.wq, p.bq), Lq);
  const K = split(dense(kv, p.wk, p.bk), Lk);
  const V = split(dense(kv, p.wv, p.bv), Lk);
  let scores = tf.matMul(Q, K, false, true).mul(1 / Math.sqrt(dh));
  if (bias) scores = scores.add(bias);
  const probs = tf.softmax(scores, -1);
  const ctx = tf.matMul(probs, V).transpose([0, 2, 1, 3]).reshape([B, Lq, heads * dh]);
  const out = dense(ctx, p.wo, p.bo);
  void d;
  return wantProbs ? { out, probs } : { out };
}

/** Additive causal mask [1, 1, L, L] as a constant (0 on/below the diagonal, -1e9 above). */
export function causalBias(L: number): T {
  const m = new Float32Array(L * L);
  for (let i = 0; i < L; i++) for (let j = i + 1; j < L; j++) m[i * L + j] = -1e9;
  return tf.tensor4d(m, [1, 1, L, L]);
}

/** Additive key-padding mask [B, 1, 1, Lk] from a 0/1 validity array (row-major B × Lk). */
export function keyPaddingBias(valid: Uint8Array | Float32Array, B: number, Lk: number): T {
  const m = new Float32Array(B * Lk);
  for (let i = 0; i < B * Lk; i++) m[i] = valid[i] ? 0 : -1e9;
  return tf.tensor4d(m, [B, 1, 1, Lk]);
}

/** Runs `fn` in an engine scope and frees every tensor it made; for functions that return plain JS values. */
export function scoped<R>(fn: () => R): R {
  tf.engine().startScope();
  try {
    return fn();
  } finally {
    tf.engine().endScope();
  }
}
