// Reductions, their gradients, same-dtype Cast, fused layer norm and dropout on the wasm backend (issue 7, second round): native
// Sum / Mean / Max and GemsReduceGrad against the original wasm kernels and tfjs gradients (max normwise relative
// error ≤ 1e-5), fallbacks for cases the native path does not take, the dropout mask identical with and without
// the addon, and no leak over 1,000 calls. Native cases skip, printing why, when the addon is not built.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initCompute, tf, type ComputeInfo } from '../../src/compute/backend.js';
import {
  activeNativeAddon, installNativeKernels, originalKernels, uninstallNativeKernels, type NativeAddon,
} from '../../src/compute/nativeKernels.js';
import { dropout, dropoutMask, gelu, layerNorm } from '../../src/compute/ops.js';
import { Rng } from '../../src/util/random.js';
import { asArrays, expectNoLeak, nativeItFor, plainThenNative, randn, relErr } from './_helpers.js';

let info: ComputeInfo;
let addon: NativeAddon | null = null;

beforeAll(async () => {
  info = await initCompute();
  addon = activeNativeAddon();
  if (!addon) console.warn(`[skip] native reduction/dropout tests: native kernels not active (${info.path}: ${info.nativeReason})`);
});

afterAll(() => {
  if (addon) installNativeKernels(addon);
});

/** Runs `fn` once with the plain wasm kernels (and tfjs's own gradients) and once with the native ones, as arrays. */
function both(fn: () => tf.Tensor | tf.Tensor[]): { plain: Float32Array[]; native: Float32Array[] } {
  return plainThenNative(addon!, asArrays(fn));
}

const nativeIt = nativeItFor(() => ({ on: addon !== null, reason: info?.nativeReason }));

const SHAPES_AND_AXES: Array<[number[], number | number[] | null]> = [
  [[12800 / 16, 50], 0], [[64, 20, 50], [0, 1]], [[64, 20, 50], 2], [[64, 20, 50], -1], [[7, 5, 3], 1], [[7, 5, 3], [1, 2]],
  [[4, 3, 5, 2], [1, 2]], [[33], 0], [[5, 7], null], [[6, 1, 4], 1], [[3, 4, 5], [0, 2]], [[2, 3], []],
];

describe('native reductions vs plain wasm', () => {
  nativeIt('Sum / Mean / Max: contiguous axis groups, keepDims, full reduction, fallbacks', () => {
    const rng = new Rng(11);
    for (const [shape, axis] of SHAPES_AND_AXES) {
      for (const keepDims of [false, true]) {
        const x = randn(rng, shape);
        const ax = axis ?? undefined;
        const { plain, native } = both(() => [tf.sum(x, ax, keepDims), tf.mean(x, ax, keepDims), tf.max(x, ax, keepDims)]);
        const shapes = tf.tidy(() => [tf.sum(x, ax, keepDims), tf.mean(x, ax, keepDims), tf.max(x, ax, keepDims)].map((t) => t.shape));
        const plainShapes = (() => {
          uninstallNativeKernels();
          const s = tf.tidy(() => [tf.sum(x, ax, keepDims), tf.mean(x, ax, keepDims), tf.max(x, ax, keepDims)].map((t) => t.shape));
          installNativeKernels(addon!);
          return s;
        })();
        expect(shapes, `${shape} axis ${JSON.stringify(axis)} keepDims ${keepDims}`).toEqual(plainShapes);
        for (let i = 0; i < 3; i++) {
          expect(relErr(native[i]!, plain[i]!), `op ${i} ${shape} axis ${JSON.stringify(axis)}`).toBeLessThanOrEqual(1e-5);
        }
        x.dispose();
      }
    }
  });

  nativeIt('int32 sums go to the original kernel and stay exact', () => {
    const x = tf.tensor2d([[1, 2, 3], [4, 5, 6]], [2, 3], 'int32');
    const s = tf.sum(x, 0);
    expect(s.dtype).toBe('int32');
    expect(Array.from(s.dataSync())).toEqual([5, 7, 9]);
    tf.dispose([x, s]);
  });

  nativeIt('gradients of sum and mean (GemsReduceGrad) match tfjs\'s ones-multiply gradients', () => {
    const rng = new Rng(12);
    for (const [shape, axis] of SHAPES_AND_AXES) {
      const x = randn(rng, shape);
      const w = randn(rng, shape);
      const ax = axis ?? undefined;
      // A non-uniform upstream gradient: d/dx of Σ (reduce(x·w))² exercises dy ≠ 1.
      const f = (v: tf.Tensor) => tf.add(tf.sum(tf.square(tf.sum(tf.mul(v, w), ax))), tf.sum(tf.square(tf.mean(tf.mul(v, w), ax, true))));
      const { plain, native } = both(() => tf.grad(f)(x));
      expect(relErr(native[0]!, plain[0]!), `${shape} axis ${JSON.stringify(axis)}`).toBeLessThanOrEqual(1e-5);
      tf.dispose([x, w]);
    }
  });

  it('Cast to the same dtype shares memory and survives disposing its input', () => {
    const x = tf.tensor1d([1.5, -2, 3]);
    const y = tf.cast(x, 'float32');
    x.dispose();
    expect(Array.from(y.dataSync())).toEqual([1.5, -2, 3]);
    y.dispose();
    const i = tf.cast(tf.tensor1d([1.7, -2.2]), 'int32');
    expect(i.dtype).toBe('int32');
    expect(Array.from(i.dataSync())).toEqual([1, -2]);
    i.dispose();
    expect(originalKernels.has('Cast')).toBe(true);
  });
});

describe('layer norm', () => {
  nativeIt('GemsLayerNorm and its gradient (x, gamma, beta) match the tf-op formula', () => {
    const rng = new Rng(15);
    for (const shape of [[64, 20, 50], [300, 64], [5, 1], [7, 3, 2, 33]]) {
      const d = shape[shape.length - 1]!;
      const x = tf.add(randn(rng, shape), 3); // an offset mean checks the centring
      const g = randn(rng, [d]);
      const b = randn(rng, [d]);
      const w = randn(rng, shape);
      const { plain, native } = both(() => {
        const f = (v: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor) => tf.sum(tf.mul(layerNorm(v, gg, bb, 1e-5), w));
        return [layerNorm(x, g, b, 1e-5), ...tf.grads(f)([x, g, b])];
      });
      for (let i = 0; i < 4; i++) expect(relErr(native[i]!, plain[i]!), `${shape} output ${i}`).toBeLessThanOrEqual(1e-5);
      tf.dispose([x, g, b, w]);
    }
  });

  nativeIt('gamma / beta not of shape [d] take the tf-op path', () => {
    const x = tf.tensor2d([[1, 2, 3], [4, 6, 8]]);
    const y = layerNorm(x, tf.ones([1, 3]), tf.zeros([1, 3]));
    const v = y.dataSync();
    expect(v[0]!).toBeCloseTo(-Math.sqrt(1.5), 4);
    expect(v[4]!).toBeCloseTo(0, 5);
    tf.dispose([x, y]);
  });
});

describe('gelu', () => {
  nativeIt('GemsGelu and its gradient match the tf-op formula, tails and zero included', () => {
    const rng = new Rng(16);
    for (const shape of [[8192, 19], [3, 5, 7], [1], [0, 4]]) {
      const x = tf.mul(randn(rng, shape), 4); // reaches the tails, where σ saturates
      const w = randn(rng, shape);
      const { plain, native } = both(() => [gelu(x), tf.grad((v: tf.Tensor) => tf.sum(tf.mul(gelu(v), w)))(x)]);
      for (let i = 0; i < 2; i++) expect(relErr(native[i]!, plain[i]!), `${shape} output ${i}`).toBeLessThanOrEqual(1e-5);
      tf.dispose([x, w]);
    }
    const edge = tf.tensor1d([0, -30, 30, -1e-3, 5.5]);
    const { plain, native } = both(() => [gelu(edge), tf.grad((v: tf.Tensor) => tf.sum(gelu(v)))(edge)]);
    expect(Array.from(native[0]!)[0]).toBe(0);
    expect(native[0]![2]!).toBeCloseTo(30, 5); // gelu(x) → x for large x, → 0 for very negative x
    expect(Math.abs(native[0]![1]!)).toBeLessThan(1e-6);
    expect(native[1]![0]!).toBeCloseTo(0.5, 6); // gelu'(0) = ½
    for (let i = 0; i < 2; i++) expect(relErr(native[i]!, plain[i]!)).toBeLessThanOrEqual(1e-5);
    edge.dispose();
  });
});

describe('dropout', () => {
  it('mask: keeps about 1 − rate, scaled by 1/(1 − rate), deterministic per seed', () => {
    const a = dropoutMask(200_000, 0.2, 5);
    const b = dropoutMask(200_000, 0.2, 5);
    const c = dropoutMask(200_000, 0.2, 6);
    expect(a).toEqual(b);
    let kept = 0;
    let same = 0;
    const values = new Set<number>();
    for (let i = 0; i < a.length; i++) {
      values.add(a[i]!);
      if (a[i] !== 0) kept++;
      if ((a[i] !== 0) === (c[i] !== 0)) same++;
    }
    expect([...values].sort()).toEqual([0, Math.fround(1 / 0.8)]);
    expect(Math.abs(kept / a.length - 0.8)).toBeLessThan(0.005);
    // Independent masks agree on ~0.8² + 0.2² = 68% of the elements.
    expect(Math.abs(same / a.length - 0.68)).toBeLessThan(0.01);
    expect(() => dropoutMask(10, 1, 1)).not.toThrow(); // the mask itself; dropout() rejects rate 1
    expect(() => dropout(tf.ones([2]), 1, 1)).toThrow(/rate/);
  });

  nativeIt('native mask equals the JS mask bit for bit, and gradients equal dy · mask', () => {
    const rng = new Rng(13);
    const x = randn(rng, [8, 33, 17]);
    for (const [rate, seed] of [[0.2, 1], [0.5, 123456789], [0.05, 4294967295]] as const) {
      const js = dropoutMask(x.size, rate, seed);
      const nat = tf.tidy(() => Float32Array.from((tf.engine().runKernel('GemsDropoutMask', {}, { shape: x.shape, rate, seed }) as tf.Tensor).dataSync()));
      expect(nat).toEqual(js);
      const [y, g] = tf.tidy(() => {
        const w = randn(rng, x.shape);
        const out = dropout(x, rate, seed);
        const grad = tf.grad((v: tf.Tensor) => tf.sum(tf.mul(dropout(v, rate, seed), w)))(x);
        return [Float32Array.from(out.dataSync()), Float32Array.from(tf.sub(grad, tf.mul(w, tf.tensor(js, x.shape))).dataSync())];
      });
      const xv = x.dataSync();
      for (let i = 0; i < y.length; i++) expect(y[i]).toBeCloseTo(xv[i]! * js[i]!, 5);
      expect(Math.max(...Array.from(g, Math.abs))).toBe(0);
    }
    // Without the addon the same seed gives the same output (JS mask).
    const withNative = tf.tidy(() => Float32Array.from(dropout(x, 0.3, 9).dataSync()));
    uninstallNativeKernels();
    const plain = tf.tidy(() => Float32Array.from(dropout(x, 0.3, 9).dataSync()));
    installNativeKernels(addon!);
    expect(withNative).toEqual(plain);
    expect(dropout(x, 0, 1)).toBe(x);
    x.dispose();
  });

  nativeIt('no leak across 1,000 calls of reductions, layer norm, gelu, their gradients and dropout (tf.memory exact, RSS flat)', () => {
    const rng = new Rng(14);
    const x = randn(rng, [64, 20, 50]);
    const gamma = randn(rng, [50]);
    const beta = randn(rng, [50]);
    const once = () => tf.tidy(() => {
      const g = tf.grad((v: tf.Tensor) => tf.sum(tf.mean(gelu(layerNorm(dropout(v, 0.2, 3), gamma, beta)), -1)))(x);
      tf.max(tf.sum(g, [0, 1])).dataSync();
    });
    expectNoLeak(() => {
      for (let i = 0; i < 1000; i++) once();
    });
    tf.dispose([x, gamma, beta]);
  }, 60_000);
});
