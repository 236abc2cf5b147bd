// The reference training workload for the compute backend (issue 7's benchmark and the gradient-parity tests):
// a SASRec-shaped causal transformer — item + position embeddings, `layers` pre-norm blocks of multi-head
// self-attention and a ReLU feed-forward, tied output embedding, softmax cross-entropy over all items at every
// position, Adam. Default size: 2 layers, d = 64, 4 heads, batch 64 × 200 tokens, 3,707 items.
import * as tf from '@tensorflow/tfjs';
import { Rng } from '../util/random.js';
import { variableFrom } from './backend.js';
import { layerNorm as fusedLayerNorm, softmaxCrossEntropy } from './ops.js';

export interface ReferenceTransformerConfig {
  layers: number;
  d: number;
  heads: number;
  batch: number;
  seqLen: number;
  items: number;
  learningRate: number;
  seed: number;
}

export const REFERENCE_TRANSFORMER: ReferenceTransformerConfig = {
  layers: 2, d: 64, heads: 4, batch: 64, seqLen: 200, items: 3707, learningRate: 1e-3, seed: 7,
};

export interface ReferenceTransformer {
  readonly config: ReferenceTransformerConfig;
  readonly variables: tf.Variable[];
  /** Mean loss over the batch (a scalar the caller disposes). */
  loss(inputs: tf.Tensor2D, targets: tf.Tensor2D): tf.Scalar;
  /** One Adam step on a batch; returns the loss. */
  trainStep(inputs: tf.Tensor2D, targets: tf.Tensor2D): number;
  /** A deterministic random batch: inputs and next-item targets [batch, seqLen] int32. */
  batch(seed: number): { inputs: tf.Tensor2D; targets: tf.Tensor2D };
  dispose(): void;
}

let instances = 0; // tfjs variable names are global: each model instance gets its own prefix

export function createReferenceTransformer(overrides: Partial<ReferenceTransformerConfig> = {}): ReferenceTransformer {
  const cfg: ReferenceTransformerConfig = { ...REFERENCE_TRANSFORMER, ...overrides };
  const { layers, d, heads, seqLen, items } = cfg;
  if (d % heads !== 0) throw new Error(`reference transformer: d=${d} is not divisible by heads=${heads}`);
  const dh = d / heads;
  const rng = new Rng(cfg.seed);
  const vars: tf.Variable[] = [];
  const prefix = `reftx${instances++}`;
  const sizeOf = (shape: number[]) => shape.reduce((p, x) => p * x, 1);
  const add = (values: Float32Array, shape: number[], name: string): tf.Variable => {
    const v = variableFrom(values, shape, true, `${prefix}/${name}`);
    vars.push(v);
    return v;
  };
  const param = (shape: number[], scale: number, name: string): tf.Variable => {
    const values = new Float32Array(sizeOf(shape));
    for (let i = 0; i < values.length; i++) values[i] = rng.normal() * scale;
    return add(values, shape, name);
  };
  const ones = (shape: number[], name: string): tf.Variable => add(new Float32Array(sizeOf(shape)).fill(1), shape, name);
  const zeros = (shape: number[], name: string): tf.Variable => add(new Float32Array(sizeOf(shape)), shape, name);
  const itemEmb = param([items, d], 0.05, 'item');
  const posEmb = param([seqLen, d], 0.05, 'pos');
  const blocks = Array.from({ length: layers }, (_, l) => ({
    ln1g: ones([d], `ln1g${l}`), ln1b: zeros([d], `ln1b${l}`),
    wqkv: param([d, 3 * d], 1 / Math.sqrt(d), `wqkv${l}`), bqkv: zeros([3 * d], `bqkv${l}`),
    wo: param([d, d], 1 / Math.sqrt(d), `wo${l}`), bo: zeros([d], `bo${l}`),
    ln2g: ones([d], `ln2g${l}`), ln2b: zeros([d], `ln2b${l}`),
    w1: param([d, 4 * d], 1 / Math.sqrt(d), `w1${l}`), b1: zeros([4 * d], `b1${l}`),
    w2: param([4 * d, d], 1 / Math.sqrt(4 * d), `w2${l}`), b2: zeros([d], `b2${l}`),
  }));
  const lnF = { g: ones([d], 'lnfg'), b: zeros([d], 'lnfb') };
  // Causal mask as a constant (bandPart's gradient fails on wasm): 0 on and below the diagonal, −1e9 above.
  const maskValues = new Float32Array(seqLen * seqLen);
  for (let i = 0; i < seqLen; i++) for (let j = i + 1; j < seqLen; j++) maskValues[i * seqLen + j] = -1e9;
  const mask = tf.tensor2d(maskValues, [seqLen, seqLen]);
  const optimizer = tf.train.adam(cfg.learningRate);

  // Fused native layer norm when the addon is active, the tf-op formula otherwise (see ./ops.ts).
  const layerNorm = (x: tf.Tensor2D, g: tf.Tensor, b: tf.Tensor): tf.Tensor2D => fusedLayerNorm(x, g, b, 1e-5) as tf.Tensor2D;

  const loss = (inputs: tf.Tensor2D, targets: tf.Tensor2D): tf.Scalar => {
    const [B, T] = inputs.shape;
    const rows = B * T;
    let h = tf.reshape(tf.add(tf.reshape(tf.gather(itemEmb, tf.reshape(inputs, [rows])), [B, T, d]), posEmb), [rows, d]) as tf.Tensor2D;
    for (const blk of blocks) {
      const x = layerNorm(h, blk.ln1g, blk.ln1b);
      const qkv = tf.reshape(tf.fused.matMul({ a: x, b: blk.wqkv, bias: blk.bqkv }), [B, T, 3, heads, dh]);
      const split = tf.transpose(qkv, [2, 0, 3, 1, 4]); // [3, B, H, T, dh]
      const [q, k, v] = tf.unstack(split) as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D];
      const scores = tf.add(tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(dh)), mask);
      const att = tf.matMul(tf.softmax(scores), v); // [B, H, T, dh]
      const merged = tf.reshape(tf.transpose(att, [0, 2, 1, 3]), [rows, d]);
      h = tf.add(h, tf.fused.matMul({ a: merged as tf.Tensor2D, b: blk.wo, bias: blk.bo })) as tf.Tensor2D;
      const y = layerNorm(h, blk.ln2g, blk.ln2b);
      const ff = tf.fused.matMul({ a: y, b: blk.w1, bias: blk.b1, activation: 'relu' });
      h = tf.add(h, tf.fused.matMul({ a: ff, b: blk.w2, bias: blk.b2 })) as tf.Tensor2D;
    }
    const out = layerNorm(h, lnF.g, lnF.b);
    const logits = tf.matMul(out, itemEmb, false, true) as tf.Tensor2D; // tied output embedding: [rows, items]
    return tf.mean(softmaxCrossEntropy(logits, tf.reshape(targets, [rows]) as tf.Tensor1D)) as tf.Scalar;
  };

  return {
    config: cfg,
    variables: vars,
    loss,
    trainStep(inputs, targets) {
      const value = optimizer.minimize(() => loss(inputs, targets), true, vars);
      const result = value!.dataSync()[0]!;
      value!.dispose();
      return result;
    },
    batch(seed) {
      const r = new Rng(seed);
      const seq = new Int32Array(cfg.batch * (seqLen + 1));
      for (let i = 0; i < seq.length; i++) seq[i] = r.int(items);
      const inputs = new Int32Array(cfg.batch * seqLen);
      const targets = new Int32Array(cfg.batch * seqLen);
      for (let b = 0; b < cfg.batch; b++) {
        for (let t = 0; t < seqLen; t++) {
          inputs[b * seqLen + t] = seq[b * (seqLen + 1) + t]!;
          targets[b * seqLen + t] = seq[b * (seqLen + 1) + t + 1]!;
        }
      }
      return { inputs: tf.tensor2d(inputs, [cfg.batch, seqLen], 'int32'), targets: tf.tensor2d(targets, [cfg.batch, seqLen], 'int32') };
    },
    dispose() {
      optimizer.dispose();
      mask.dispose();
      for (const v of vars) v.dispose();
    },
  };
}
