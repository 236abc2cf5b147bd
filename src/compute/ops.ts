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
