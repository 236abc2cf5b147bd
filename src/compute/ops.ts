// Ops the model code needs that are slow or missing on the wasm backend, each with a plain reference path.
import * as tf from '@tensorflow/tfjs';
import { activeNativeAddon } from './nativeKernels.js';

/**
 * Per-row softmax cross-entropy: loss[r] = logsumexp(logits[r]) − logits[r, labels[r]], with gradient
 * (softmax − onehot) · dy for the logits. Rows whose label is negative are ignored (loss 0, gradient 0).
 * With native kernels it is one pass over the logits each way and no one-hot tensor; otherwise tf ops
 * (the reference the tests compare against). `logits` [rows, classes] float32, `labels` [rows] int32.
 */
export function softmaxCrossEntropy(logits: tf.Tensor2D, labels: tf.Tensor1D): tf.Tensor1D {
  if (logits.rank !== 2 || labels.rank !== 1 || labels.shape[0] !== logits.shape[0]) {
    throw new Error(`softmaxCrossEntropy: logits ${logits.shape} and labels ${labels.shape} must be [rows, classes] and [rows]`);
  }
  const ids = labels.dtype === 'int32' ? labels : tf.cast(labels, 'int32');
  const native = activeNativeAddon() !== null && tf.getBackend() === 'wasm';
  const f = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const [z, y, save] = args as [tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    const [loss, lse] = native ? nativeForward(z as tf.Tensor2D, y as tf.Tensor1D) : plainForward(z as tf.Tensor2D, y as tf.Tensor1D);
    save([z, y, lse]);
    return {
      value: loss,
      gradFunc: (dy: tf.Tensor1D, saved: tf.Tensor[]) => {
        const [sz, sy, slse] = saved as [tf.Tensor2D, tf.Tensor1D, tf.Tensor1D];
        const dz = native
          ? tf.engine().runKernel('GemsSoftmaxXentGrad', { logits: sz, labels: sy, lse: slse, dy }) as tf.Tensor
          : plainGrad(sz, sy, slse, dy);
        return [dz, tf.zerosLike(sy)];
      },
    };
  });
  const out = f(logits, ids) as tf.Tensor1D;
  if (ids !== labels) ids.dispose();
  return out;
}

function nativeForward(logits: tf.Tensor2D, labels: tf.Tensor1D): [tf.Tensor1D, tf.Tensor1D] {
  return tf.engine().runKernel('GemsSoftmaxXent', { logits, labels }) as unknown as [tf.Tensor1D, tf.Tensor1D];
}

function plainForward(logits: tf.Tensor2D, labels: tf.Tensor1D): [tf.Tensor1D, tf.Tensor1D] {
  return tf.tidy(() => {
    const [rows, classes] = logits.shape;
    const max = tf.max(logits, 1, true);
    const lse = tf.add(tf.log(tf.sum(tf.exp(tf.sub(logits, max)), 1)), tf.reshape(max, [rows])) as tf.Tensor1D;
    const valid = tf.greaterEqual(labels, 0);
    const flat = tf.add(tf.mul(tf.range(0, rows, 1, 'int32'), tf.scalar(classes, 'int32')), tf.maximum(labels, tf.scalar(0, 'int32')));
    const picked = tf.gather(tf.reshape(logits, [-1]), flat);
    const loss = tf.where(valid, tf.sub(lse, picked), tf.zerosLike(lse)) as tf.Tensor1D;
    return [loss, lse];
  });
}

function plainGrad(logits: tf.Tensor2D, labels: tf.Tensor1D, lse: tf.Tensor1D, dy: tf.Tensor1D): tf.Tensor2D {
  return tf.tidy(() => {
    const [rows, classes] = logits.shape;
    const probs = tf.exp(tf.sub(logits, tf.reshape(lse, [rows, 1])));
    const onehot = tf.oneHot(tf.maximum(labels, tf.scalar(0, 'int32')), classes);
    const scale = tf.mul(dy, tf.cast(tf.greaterEqual(labels, 0), 'float32'));
    return tf.mul(tf.sub(probs, onehot), tf.reshape(scale, [rows, 1])) as tf.Tensor2D;
  });
}

/**
 * Inverted dropout: x · mask with mask = 1/(1 − rate) where kept, 0 where dropped; gradient dy · mask. The mask is a
 * counter-based hash of (seed, element index), so the same seed gives the same mask on every backend and with or
 * without native kernels (which write it straight into the wasm heap). tf.dropout draws its noise through seedrandom
 * one value at a time and then runs add/floor/div/mul over it: ~9 ms for 64 × 200 × 50 on wasm here. rate 0 returns x.
 */
export function dropout(x: tf.Tensor, rate: number, seed: number): tf.Tensor {
  if (!(rate >= 0 && rate < 1)) throw new Error(`dropout: rate must be in [0, 1), got ${rate}`);
  if (x.dtype !== 'float32') throw new Error(`dropout: x must be float32, got ${x.dtype}`);
  if (rate === 0) return x;
  const native = activeNativeAddon() !== null && tf.getBackend() === 'wasm';
  const f = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const [v, save] = args as [tf.Tensor, tf.GradSaveFunc];
    const m = native
      ? tf.engine().runKernel('GemsDropoutMask', {}, { shape: v.shape, rate, seed }) as tf.Tensor
      : tf.tensor(dropoutMask(v.size, rate, seed), v.shape, 'float32');
    save([m]);
    return { value: tf.mul(v, m), gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => [tf.mul(dy, saved[0]!)] };
  });
  return f(x) as tf.Tensor;
}

/** Parameters of the dropout mask hash shared by dropoutMask() and the native GemsDropoutMask kernel. */
export function dropoutMaskParams(rate: number, seed: number): { s1: number; s2: number; threshold: number; scale: number } {
  const keep = 1 - rate;
  // Compare 24-bit integers: u < keep·2^24 ⇔ u·2^-24 < keep, with no float rounding in the loop.
  return { s1: mix32(seed >>> 0), s2: mix32((seed ^ 0x5bd1e995) >>> 0), threshold: Math.round(keep * 16777216), scale: 1 / keep };
}

/** The dropout mask values: element i is 1/(1 − rate) when mix32(mix32(i ^ s1) + s2) >>> 8 < keep·2^24, else 0. */
export function dropoutMask(size: number, rate: number, seed: number): Float32Array {
  const { s1, s2, threshold, scale } = dropoutMaskParams(rate, seed);
  const out = new Float32Array(size);
  for (let i = 0; i < size; i++) {
    const u = mix32((mix32((i ^ s1) >>> 0) + s2) >>> 0) >>> 8;
    out[i] = u < threshold ? scale : 0;
  }
  return out;
}

/** 32-bit integer hash (lowbias32, C. Wellons); identical to Mix32 in native/src/gems_native.cc. */
function mix32(v: number): number {
  let x = v >>> 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/**
 * Layer norm over the last axis: (x − mean)/√(var + eps) · gamma + beta, biased variance (as tf.moments). With
 * native kernels on wasm it is one pass forward and one backward (GemsLayerNorm / GemsLayerNormGrad) instead of ~9
 * forward and ~15 backward tf ops over the whole activation; otherwise those tf ops (the reference the tests compare
 * against). gamma and beta must have shape [d] (d = x's last dimension) for the native path.
 */
export function layerNorm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, eps = 1e-6): tf.Tensor {
  const d = x.shape[x.rank - 1];
  const native = activeNativeAddon() !== null && tf.getBackend() === 'wasm' && x.rank >= 1 && d !== undefined && d > 0 &&
    x.dtype === 'float32' && gamma.dtype === 'float32' && beta.dtype === 'float32' &&
    gamma.rank === 1 && gamma.shape[0] === d && beta.rank === 1 && beta.shape[0] === d;
  if (!native) return plainLayerNorm(x, gamma, beta, eps);
  const f = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const [v, g, b, save] = args as [tf.Tensor, tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    const [y, mean, rstd] = tf.engine().runKernel('GemsLayerNorm', { x: v, gamma: g, beta: b }, { eps }) as unknown as tf.Tensor[];
    save([v, g, mean!, rstd!]);
    return {
      value: y!,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sx, sg, sm, sr] = saved as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor];
        return tf.engine().runKernel('GemsLayerNormGrad', { x: sx, gamma: sg, mean: sm, rstd: sr, dy }) as unknown as tf.Tensor[];
      },
    };
  });
  return f(x, gamma, beta) as tf.Tensor;
}

/**
 * GELU, tanh approximation, written as x·σ(2c(x + 0.044715x³)) — the same function, since ½(1 + tanh z) = σ(2z) —
 * because wasm's pow and tanh are slow. With native kernels on wasm it is one pass forward and one backward
 * (GemsGelu / GemsGeluGrad) instead of seven forward and ~ten backward tf ops over the activation (the decoder's
 * FFN activation of a dense ML-1M step is 8,192 × 192); otherwise those tf ops (the reference the tests compare against).
 */
export function gelu(x: tf.Tensor): tf.Tensor {
  if (!(activeNativeAddon() !== null && tf.getBackend() === 'wasm' && x.dtype === 'float32')) return plainGelu(x);
  const f = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const [v, save] = args as [tf.Tensor, tf.GradSaveFunc];
    save([v]);
    return {
      value: tf.engine().runKernel('GemsGelu', { x: v }) as tf.Tensor,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.engine().runKernel('GemsGeluGrad', { x: saved[0]!, dy }) as tf.Tensor,
    };
  });
  return f(x) as tf.Tensor;
}

/** Adam's hyper-parameters for one step (bias corrections bc = 1 − β^step; scale = gradient clipping factor). */
export interface AdamStep {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  bc1: number;
  bc2: number;
  scale: number;
  /** L2 term: weightDecay · param is added to the update (0 = none). */
  weightDecay: number;
}

/**
 * One Adam step for one parameter: returns [param', m', v']. With native kernels on wasm it is one pass over the four
 * arrays (GemsAdam) instead of ~14 tf ops per parameter, each allocating a parameter-sized tensor (the ML-1M preset
 * has 139 parameters, 1.9M floats); otherwise the tf ops, in the same order — the native kernel does the same float32
 * operations, so both give the same numbers.
 */
export function adamUpdate(param: tf.Tensor, grad: tf.Tensor, m: tf.Tensor, v: tf.Tensor, s: AdamStep): [tf.Tensor, tf.Tensor, tf.Tensor] {
  const native = activeNativeAddon() !== null && tf.getBackend() === 'wasm' && [param, grad, m, v].every((t) => t.dtype === 'float32');
  if (native) {
    const hyper = [s.scale, s.beta1, 1 - s.beta1, s.beta2, 1 - s.beta2, s.bc1, s.bc2, s.eps, s.lr, s.weightDecay];
    return tf.engine().runKernel('GemsAdam', { param, grad, m, v }, { hyper } as unknown as tf.NamedAttrMap) as unknown as [tf.Tensor, tf.Tensor, tf.Tensor];
  }
  return tf.tidy(() => {
    const g = s.scale !== 1 ? grad.mul(s.scale) : grad;
    const m1 = m.mul(s.beta1).add(g.mul(1 - s.beta1));
    const v1 = v.mul(s.beta2).add(g.square().mul(1 - s.beta2));
    let upd = m1.div(s.bc1).div(v1.div(s.bc2).sqrt().add(s.eps));
    if (s.weightDecay > 0) upd = upd.add(param.mul(s.weightDecay));
    return [param.sub(upd.mul(s.lr)), m1, v1] as [tf.Tensor, tf.Tensor, tf.Tensor];
  });
}

function plainGelu(x: tf.Tensor): tf.Tensor {
  const c = Math.sqrt(2 / Math.PI);
  return x.mul(tf.sigmoid(x.add(x.mul(x).mul(x).mul(0.044715)).mul(2 * c)));
}

function plainLayerNorm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, eps: number): tf.Tensor {
  const mean = tf.mean(x, -1, true);
  const xc = tf.sub(x, mean);
  const variance = tf.mean(tf.square(xc), -1, true);
  return tf.add(tf.mul(tf.div(xc, tf.sqrt(tf.add(variance, eps))), gamma), beta);
}
