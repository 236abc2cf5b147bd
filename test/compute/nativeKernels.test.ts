// Native kernels against the plain wasm kernels (issue 7): every transpose flag, batch broadcasting, bias and
// activation variants, transpose permutations, the fused softmax cross-entropy, gradients of a small transformer,
// and no leaks over 1,000 calls. Error measure: max |native − plain| / max |plain| over the tensor (normwise), so
// values near zero do not blow up a per-element ratio. Native-specific cases skip, printing why, when the addon is
// not built; the JS UnsortedSegmentSum cases always run.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initCompute, tf, type ComputeInfo } from '../../src/compute/backend.js';
import {
  activeNativeAddon, installNativeKernels, originalKernels, type NativeAddon,
} from '../../src/compute/nativeKernels.js';
import { softmaxCrossEntropy } from '../../src/compute/ops.js';
import { createReferenceTransformer } from '../../src/compute/referenceTransformer.js';
import { Rng } from '../../src/util/random.js';
import { asArrays, expectNoLeak, nativeItFor, plainThenNative, randn, relErr } from './_helpers.js';

let info: ComputeInfo;
let addon: NativeAddon | null = null;

beforeAll(async () => {
  info = await initCompute();
  addon = activeNativeAddon();
  if (!addon) console.warn(`[skip] native kernel parity tests: native kernels not active (${info.path}: ${info.nativeReason})`);
});

afterAll(() => {
  if (addon) installNativeKernels(addon);
});

/** Runs `reference` with the plain wasm kernels and `fn` (default: the same function) with the native ones, as arrays. */
function both(fn: () => tf.Tensor | tf.Tensor[], reference = fn): { plain: Float32Array[]; native: Float32Array[] } {
  return plainThenNative(addon!, asArrays(fn), asArrays(reference));
}

const nativeIt = nativeItFor(() => ({ on: addon !== null, reason: info?.nativeReason }));

describe('native kernels vs plain wasm', () => {
  it('reports the compute path', () => {
    expect(info.backend).toBe('wasm');
    expect(info.path).toBe(addon ? 'wasm+native' : 'wasm');
  });

  nativeIt('BatchMatMul: all transpose flags, batch broadcasting, odd sizes', () => {
    const rng = new Rng(1);
    const cases: Array<[number[], number[]]> = [[[], []], [[3], [3]], [[1], [4]], [[5], [1]], [[2, 3], [2, 3]],
      [[2, 1], [1, 3]], [[4], []], [[], [2, 2]], [[3, 1, 2], [4, 1]]];
    let worst = 0;
    for (const [outerA, outerB] of cases) {
      for (const transA of [false, true]) {
        for (const transB of [false, true]) {
          const m = 1 + rng.int(37);
          const n = 1 + rng.int(41);
          const k = 1 + rng.int(70);
          const a = randn(rng, [...outerA, ...(transA ? [k, m] : [m, k])]);
          const b = randn(rng, [...outerB, ...(transB ? [n, k] : [k, n])]);
          // Reference: both sides broadcast explicitly first — plain wasm's own BatchMatMul mis-sizes its output
          // when both batch shapes broadcast ([2,1] × [1,3]), so it cannot be the reference for those.
          const outer = tf.broadcast_util.assertAndGetBroadcastShape(outerA, outerB);
          const { plain, native } = both(() => tf.matMul(a, b, transA, transB), () => tf.matMul(
            tf.broadcastTo(a, [...outer, ...a.shape.slice(-2)]), tf.broadcastTo(b, [...outer, ...b.shape.slice(-2)]), transA, transB));
          worst = Math.max(worst, relErr(native[0]!, plain[0]!));
          a.dispose();
          b.dispose();
        }
      }
    }
    expect(worst).toBeLessThanOrEqual(1e-5);
  });

  nativeIt('BatchMatMul: large 2-D and attention-shaped cases', () => {
    const rng = new Rng(2);
    const a = randn(rng, [300, 64]);
    const b = randn(rng, [513, 64]);
    const q = randn(rng, [2, 4, 50, 16]);
    const k = randn(rng, [2, 4, 50, 16]);
    const r = both(() => [tf.matMul(a, b, false, true), tf.matMul(q, k, false, true), tf.matMul(q, k, true, false)]);
    for (let i = 0; i < 3; i++) expect(relErr(r.native[i]!, r.plain[i]!)).toBeLessThanOrEqual(1e-5);
    tf.dispose([a, b, q, k]);
  });

  nativeIt('_FusedMatMul: bias and every activation, batched and not', () => {
    const rng = new Rng(3);
    let worst = 0;
    for (const activation of ['linear', 'relu', 'relu6', 'elu', 'sigmoid', 'leakyrelu', 'prelu'] as const) {
      for (const withBias of [false, true]) {
        for (const [transA, transB] of [[false, false], [true, false], [false, true], [true, true]] as const) {
          const m = 1 + rng.int(30);
          const n = 1 + rng.int(30);
          const k = 1 + rng.int(40);
          const a = randn(rng, transA ? [2, k, m] : [2, m, k]);
          const b = randn(rng, transB ? [n, k] : [k, n]);
          const bias = withBias ? randn(rng, [n]) : undefined;
          const alpha = activation === 'prelu' ? randn(rng, [n]) : undefined;
          // Reference: the unfused ops on plain wasm. Plain wasm's own _FusedMatMul adds the bias wrongly when the
          // batch is > 1 (measured: [2,3,5]·[2,5,4] + bias is off by ~0.9), so it cannot be the reference.
          const { plain, native } = both(() => tf.fused.matMul({
            a, b, transposeA: transA, transposeB: transB, bias, activation, preluActivationWeights: alpha, leakyreluAlpha: 0.1,
          }), () => {
            let y = tf.matMul(a, b, transA, transB);
            if (bias) y = tf.add(y, bias);
            switch (activation) {
              case 'relu': return tf.relu(y);
              case 'relu6': return tf.relu6(y);
              case 'elu': return tf.elu(y);
              case 'sigmoid': return tf.sigmoid(y);
              case 'leakyrelu': return tf.leakyRelu(y, 0.1);
              case 'prelu': return tf.prelu(y, alpha!);
              default: return y;
            }
          });
          worst = Math.max(worst, relErr(native[0]!, plain[0]!));
          tf.dispose([a, b, ...(bias ? [bias] : []), ...(alpha ? [alpha] : [])]);
        }
      }
    }
    expect(worst).toBeLessThanOrEqual(1e-5);
  });

  nativeIt('Transpose: random ranks, permutations and dtypes', () => {
    const rng = new Rng(4);
    for (let trial = 0; trial < 60; trial++) {
      const rank = 1 + rng.int(5);
      const big = trial % 3 === 0 && rank <= 3; // some tensors larger than one 32×32 tile, most small
      const shape = Array.from({ length: rank }, () => 1 + rng.int(big ? 70 : 7));
      const perm = Array.from({ length: rank }, (_, i) => i);
      rng.shuffle(perm);
      const x = trial % 4 === 0 ? tf.cast(tf.mul(randn(rng, shape), 100), 'int32') : randn(rng, shape);
      const { plain, native } = both(() => tf.cast(tf.transpose(x, perm), 'float32'));
      // A transpose moves values: the results must be identical, not merely close.
      expect(relErr(native[0]!, plain[0]!), `shape ${shape} perm ${perm}`).toBe(0);
      x.dispose();
    }
  });

  nativeIt('Softmax and its gradient over the last axis (attention-shaped and odd widths)', () => {
    const rng = new Rng(8);
    for (const shape of [[2, 3, 7, 7], [5, 1], [4, 333], [3, 2, 64]]) {
      const x = tf.mul(randn(rng, shape), 3);
      const w = randn(rng, shape);
      const { plain, native } = both(() => {
        const { value, grad } = tf.valueAndGrad((t: tf.Tensor) => tf.sum(tf.mul(tf.softmax(t), w)))(x);
        return [tf.softmax(x), value, grad];
      });
      for (let i = 0; i < 3; i++) expect(relErr(native[i]!, plain[i]!), `shape ${shape} output ${i}`).toBeLessThanOrEqual(1e-5);
      tf.dispose([x, w]);
    }
  });

  nativeIt('softmaxCrossEntropy: loss and gradient match the tf-ops reference, ignored rows included', () => {
    const rng = new Rng(5);
    const rows = 37;
    const classes = 1001;
    const logits = tf.mul(randn(rng, [rows, classes]), 4) as tf.Tensor2D;
    const labels = tf.tensor1d(Array.from({ length: rows }, (_, i) => (i % 9 === 4 ? -1 : rng.int(classes))), 'int32');
    const weights = randn(rng, [rows]);
    const { plain, native } = both(() => {
      const f = (z: tf.Tensor) => tf.sum(tf.mul(softmaxCrossEntropy(z as tf.Tensor2D, labels), weights));
      const { value, grad } = tf.valueAndGrad(f)(logits);
      return [softmaxCrossEntropy(logits, labels), value, grad];
    });
    for (let i = 0; i < 3; i++) expect(relErr(native[i]!, plain[i]!)).toBeLessThanOrEqual(1e-5);
    expect(native[0]![4]).toBe(0); // ignored row
    tf.dispose([logits, labels, weights]);
  });

  nativeIt('gradients of a small transformer match plain wasm', () => {
    const model = createReferenceTransformer({ layers: 2, d: 16, heads: 4, batch: 3, seqLen: 12, items: 97, seed: 11 });
    const { inputs, targets } = model.batch(5);
    const { plain, native } = both(() => {
      const { value, grads } = tf.variableGrads(() => model.loss(inputs, targets), model.variables);
      return [value, ...model.variables.map((v) => grads[v.name]!)];
    });
    expect(plain.length).toBe(model.variables.length + 1);
    for (let i = 0; i < plain.length; i++) expect(relErr(native[i]!, plain[i]!), `tensor ${i}`).toBeLessThanOrEqual(1e-4);
    tf.dispose([inputs, targets]);
    model.dispose();
  });

  nativeIt('no leak across rounds of 1,000 calls of each kernel (tf.memory exact, RSS flat)', () => {
    const rng = new Rng(6);
    const a = randn(rng, [4, 32, 48]);
    const b = randn(rng, [48, 40]);
    const bias = randn(rng, [40]);
    const z = randn(rng, [16, 300]) as tf.Tensor2D;
    const y = tf.tensor1d(Array.from({ length: 16 }, () => rng.int(300)), 'int32');
    const round = () => {
      for (let i = 0; i < 1000; i++) {
        tf.tidy(() => {
          tf.matMul(a, b);
          tf.fused.matMul({ a, b, bias, activation: 'relu' });
          tf.transpose(a, [2, 0, 1]);
          tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.softmax(t), t)))(z);
          tf.grad((t: tf.Tensor) => tf.sum(softmaxCrossEntropy(t as tf.Tensor2D, y)))(z);
          tf.grad((t: tf.Tensor) => tf.sum(tf.gather(t, y, 1)))(z); // JS GatherV2 + UnsortedSegmentSum + Identity
          tf.grad((t: tf.Tensor) => tf.sum(tf.stack(tf.unstack(t, 1), 0)))(z); // JS Unpack + Pack
          tf.grad((t: tf.Tensor) => tf.sum(tf.concat(tf.split(t, [7, 93, 200], 1), 1)))(z); // JS SplitV + Concat
        });
      }
    };
    expectNoLeak(round);
    tf.dispose([a, b, bias, z, y]);
  }, 180_000);

  nativeIt('rejects offsets outside the heap instead of corrupting memory', () => {
    const heap = new ArrayBuffer(64);
    expect(() => addon!.matmul(heap, 0, 0, 1024, 1, 2, 2, 2, false, false, 0, 0)).toThrow(/outside the heap/);
    expect(() => addon!.transpose(heap, 0, 0, [4, 8], [1, 0])).toThrow(/outside the heap/);
    expect(() => addon!.transpose(heap, 0, 0, [2, 2], [0, 0])).toThrow(/permutation/);
    expect(() => addon!.gelu(heap, 0, 32, 16)).toThrow(/gelu y.*outside the heap/);
    expect(() => addon!.geluGrad(heap, 0, 0, 0, -1)).toThrow(/count/);
    expect(() => addon!.adam(heap, 0, 0, 0, 0, 0, 0, 48, 8, [1, 0.9, 0.1, 0.98, 0.02, 1, 1, 1e-8, 1e-3, 0])).toThrow(/adam v out.*outside the heap/);
  });
});

describe('JS kernels (always registered on wasm)', () => {
  /** Runs the original wasm kernel `name` directly: the reference for a JS replacement. */
  const original = (name: string, inputs: Record<string, tf.Tensor>, attrs: Record<string, unknown>): tf.Tensor => {
    const out = originalKernels.get(name)!.kernelFunc({ inputs, backend: tf.backend(), attrs: attrs as tf.NamedAttrMap });
    return tf.engine().makeTensorFromTensorInfo(out as tf.TensorInfo);
  };

  it('GatherV2 matches the original wasm kernel on random shapes, axes and dtypes', () => {
    const rng = new Rng(7);
    for (let trial = 0; trial < 40; trial++) {
      const rank = 1 + rng.int(4);
      const shape = Array.from({ length: rank }, () => 1 + rng.int(9));
      const axis = rng.int(rank) - (trial % 2 ? rank : 0); // negative axes too
      const size = shape[(axis + rank) % rank]!;
      const idxShape = trial % 3 === 0 ? [2, 1 + rng.int(5)] : [1 + rng.int(12)];
      const idx = tf.tensor(Array.from({ length: idxShape.reduce((p, d) => p * d, 1) }, () => rng.int(size)), idxShape, 'int32');
      const x = trial % 4 === 0 ? tf.cast(tf.mul(randn(rng, shape), 50), 'int32') : randn(rng, shape);
      const got = tf.gather(x, idx, axis);
      const want = original('GatherV2', { x, indices: idx }, { axis, batchDims: 0 });
      expect(got.shape).toEqual(want.shape);
      expect(Array.from(got.dataSync())).toEqual(Array.from(want.dataSync()));
      tf.dispose([idx, x, got, want]);
    }
    const x = tf.zeros([3, 2]);
    expect(() => tf.gather(x, tf.tensor1d([0, 3], 'int32'))).toThrow(/index value 3 is not in \[0, 2\]/);
    x.dispose();
  });

  it('Unpack and Pack match the original wasm kernels on random shapes, axes and dtypes', () => {
    const rng = new Rng(9);
    for (let trial = 0; trial < 30; trial++) {
      const rank = 1 + rng.int(4);
      const shape = Array.from({ length: rank }, () => 1 + rng.int(6));
      const axis = rng.int(rank) - (trial % 2 ? rank : 0);
      const x = trial % 4 === 0 ? tf.cast(tf.mul(randn(rng, shape), 50), 'int32') : randn(rng, shape);
      const got = tf.unstack(x, axis);
      const want = originalKernels.get('Unpack')!.kernelFunc({ inputs: { value: x }, backend: tf.backend(), attrs: { axis } }) as tf.TensorInfo[];
      expect(got.length).toBe(want.length);
      want.forEach((w, i) => {
        const wt = tf.engine().makeTensorFromTensorInfo(w);
        expect(got[i]!.shape).toEqual(wt.shape);
        expect(Array.from(got[i]!.dataSync())).toEqual(Array.from(wt.dataSync()));
        wt.dispose();
      });
      const packAxis = rng.int(rank); // the stacked tensors have rank − 1 dims: axes 0 … rank − 1
      const stacked = tf.stack(got, packAxis);
      const ref = tf.engine().makeTensorFromTensorInfo(originalKernels.get('Pack')!.kernelFunc(
        { inputs: got as unknown as tf.NamedTensorInfoMap, backend: tf.backend(), attrs: { axis: packAxis } }) as tf.TensorInfo);
      expect(stacked.shape).toEqual(ref.shape);
      expect(Array.from(stacked.dataSync())).toEqual(Array.from(ref.dataSync()));
      tf.dispose([x, ...got, stacked, ref]);
    }
  });

  it('Concat and SplitV match the original wasm kernels on random shapes, axes, sizes and dtypes', () => {
    const rng = new Rng(10);
    for (let trial = 0; trial < 40; trial++) {
      const rank = 1 + rng.int(4);
      const axis = rng.int(rank);
      const base = Array.from({ length: rank }, () => 1 + rng.int(5));
      // Parts of different widths along the axis (a 0-wide part too, sometimes), some wider than the copy threshold.
      const widths = Array.from({ length: 1 + rng.int(4) }, (_, i) => (trial % 5 === 0 && i === 0 ? 0 : 1 + rng.int(trial % 3 === 0 ? 40 : 6)));
      const int = trial % 4 === 0;
      const parts = widths.map((w) => {
        const t = randn(rng, base.map((d, i) => (i === axis ? w : d)));
        return int ? tf.cast(tf.mul(t, 50), 'int32') : t;
      });
      const axisArg = trial % 2 ? axis - rank : axis;
      const joined = tf.concat(parts, axisArg);
      const ref = tf.engine().makeTensorFromTensorInfo(originalKernels.get('Concat')!.kernelFunc(
        { inputs: parts as unknown as tf.NamedTensorInfoMap, backend: tf.backend(), attrs: { axis: axisArg } }) as tf.TensorInfo);
      expect(joined.shape).toEqual(ref.shape);
      expect(Array.from(joined.dataSync())).toEqual(Array.from(ref.dataSync()));
      // Split back: by the sizes (one given as −1), and into equal parts when the axis allows.
      const sizes = widths.map((w, i) => (i === widths.length - 1 && trial % 3 === 1 ? -1 : w));
      const split = tf.split(joined, sizes, axisArg);
      split.forEach((s, i) => {
        expect(s.shape).toEqual(parts[i]!.shape);
        expect(Array.from(s.dataSync())).toEqual(Array.from(parts[i]!.dataSync()));
      });
      const n = joined.shape[axis]! % 2 === 0 ? 2 : 1;
      const halves = tf.split(joined, n, axisArg);
      const want = originalKernels.get('SplitV')!.kernelFunc({ inputs: { x: joined }, backend: tf.backend(), attrs: { numOrSizeSplits: n, axis: axisArg } }) as tf.TensorInfo[];
      want.forEach((w, i) => {
        const wt = tf.engine().makeTensorFromTensorInfo(w);
        expect(halves[i]!.shape).toEqual(wt.shape);
        expect(Array.from(halves[i]!.dataSync())).toEqual(Array.from(wt.dataSync()));
        wt.dispose();
      });
      tf.dispose([...parts, joined, ref, ...split, ...halves]);
    }
  });

  it('Identity shares memory safely: a clone outlives its disposed source', () => {
    const before = tf.memory().numBytes;
    const a = tf.tensor1d([1, 2, 3]);
    const b = tf.clone(a);
    a.dispose();
    expect(Array.from(b.dataSync())).toEqual([1, 2, 3]);
    b.dispose();
    expect(tf.memory().numBytes).toBe(before);
  });

  it('sums rows by segment, drops out-of-range ids, works for int32', () => {
    const x = tf.tensor2d([[1, 2], [3, 4], [5, 6], [7, 8]]);
    const ids = tf.tensor1d([2, 0, 2, 5], 'int32');
    expect(tf.unsortedSegmentSum(x, ids, 3).arraySync()).toEqual([[3, 4], [0, 0], [6, 8]]);
    const xi = tf.tensor1d([1, 2, 3], 'int32');
    expect(tf.unsortedSegmentSum(xi, tf.tensor1d([1, 1, 0], 'int32'), 2).arraySync()).toEqual([3, 3]);
    tf.dispose([x, ids, xi]);
  });

  it("makes tf.gather's gradient work (embedding training)", () => {
    const table = tf.variable(tf.tensor2d([[1, 1], [2, 2], [3, 3]]));
    const idx = tf.tensor1d([2, 0, 2], 'int32');
    const g = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.gather(t, idx), tf.tensor2d([[1, 2], [3, 4], [5, 6]]))))(table);
    expect(g.arraySync()).toEqual([[3, 4], [0, 0], [6, 8]]);
    tf.dispose([table, idx, g]);
  });
});
