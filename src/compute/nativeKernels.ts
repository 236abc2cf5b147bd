// Native kernels for the tfjs **wasm** backend (issue 7). The wasm backend keeps every tensor in one
// WebAssembly.Memory; the N-API addon in native/ (OpenBLAS) reads and writes that memory in place, given its
// ArrayBuffer and each tensor's byte offset (backend.dataIdMap.get(dataId).memoryOffset).
//
// Overridden wasm kernels (native): BatchMatMul, _FusedMatMul (bias + linear/relu/relu6/elu/sigmoid/leakyrelu/prelu),
// Transpose, Softmax (its gradient through a native GemsSoftmaxGrad kernel) and Sum / Mean / Max over contiguous axes
// (Sum's and Mean's gradients through GemsReduceGrad).
// Cases they do not cover (other dtypes, bias or prelu slopes not one per column, softmax over another axis,
// reductions over non-adjacent axes) go to the original wasm kernel, kept in
// `originalKernels`, which is also the reference the parity tests compare against. Added native kernels:
// GemsSoftmaxXent / GemsSoftmaxXentGrad, used by softmaxCrossEntropy in ./ops.ts, GemsDropoutMask (ops.ts dropout),
// GemsLayerNorm / GemsLayerNormGrad (ops.ts layerNorm), GemsGelu / GemsGeluGrad (ops.ts gelu) and GemsAdam
// (ops.ts adamUpdate).
// Pure-JS kernels, registered on wasm with or without the addon: UnsortedSegmentSum (so tf.gather's gradient works),
// a memory-sharing Identity and same-dtype Cast, and block-copy GatherV2 / Unpack / Pack / Concat / SplitV.
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs';
import { dropoutMaskParams } from './ops.js';

/** The functions exported by native/src/gems_native.cc. Offsets are bytes into `heap`; strides are elements. */
export interface NativeAddon {
  matmul(
    heap: ArrayBuffer, aOff: number, bOff: number, cOff: number, batch: number, m: number, n: number, k: number,
    transA: boolean, transB: boolean, strideA: number, strideB: number, biasOff?: number, act?: number, alpha?: number,
    preluOff?: number,
  ): void;
  transpose(heap: ArrayBuffer, xOff: number, outOff: number, shape: number[], perm: number[]): void;
  softmax(heap: ArrayBuffer, xOff: number, yOff: number, rows: number, cols: number): void;
  softmaxGrad(heap: ArrayBuffer, yOff: number, dyOff: number, dxOff: number, rows: number, cols: number): void;
  softmaxXent(heap: ArrayBuffer, logitsOff: number, labelsOff: number, lossOff: number, lseOff: number, rows: number,
    classes: number): void;
  softmaxXentGrad(heap: ArrayBuffer, logitsOff: number, labelsOff: number, lseOff: number, dyOff: number,
    dxOff: number, rows: number, classes: number): void;
  /** out[o, i] = op over r < n of x[o, r, i] (x viewed as [outer, n, inner]); op 0 sum, 1 mean, 2 max. */
  reduce(heap: ArrayBuffer, xOff: number, outOff: number, outer: number, n: number, inner: number, op: number): void;
  /** Row-wise layer norm over the last axis (d); writes y and the per-row mean and 1/√(var + eps). */
  layerNorm(heap: ArrayBuffer, xOff: number, gOff: number, bOff: number, yOff: number, meanOff: number, rstdOff: number,
    rows: number, d: number, eps: number): void;
  /** Its gradient: dx, and dgamma / dbeta summed over rows. */
  layerNormGrad(heap: ArrayBuffer, xOff: number, gOff: number, meanOff: number, rstdOff: number, dyOff: number,
    dxOff: number, dgOff: number, dbOff: number, rows: number, d: number): void;
  /** out[o, r, i] = scale · dy[o, i] (the gradient of reduce() for sum / mean). */
  expand(heap: ArrayBuffer, dyOff: number, outOff: number, outer: number, n: number, inner: number, scale: number): void;
  /** One Adam step (ops.ts adamUpdate): p, m, v → pOut, mOut, vOut; hyper = [scale, β1, 1−β1, β2, 1−β2, bc1, bc2, eps, lr, wd]. */
  adam(heap: ArrayBuffer, pOff: number, gOff: number, mOff: number, vOff: number, pOutOff: number, mOutOff: number,
    vOutOff: number, count: number, hyper: number[]): void;
  /** y = gelu(x) (ops.ts gelu's tanh approximation) over `count` floats; geluGrad: dx = dy · gelu'(x). */
  gelu(heap: ArrayBuffer, xOff: number, yOff: number, count: number): void;
  geluGrad(heap: ArrayBuffer, xOff: number, dyOff: number, dxOff: number, count: number): void;
  /** Fills `count` floats at outOff with the dropout mask of src/compute/ops.ts dropoutMask(). */
  dropoutMask(heap: ArrayBuffer, outOff: number, count: number, s1: number, s2: number, threshold: number, scale: number): void;
  /** Seconds per (m×k)·(k×n) sgemm on the addon's own buffers: the BLAS's rate without tfjs. */
  blasBench(m: number, n: number, k: number, iterations: number): number;
  setThreads(threads: number): void;
  info(): { blas: string; threads: number; config: string; core: string };
}

/** The slice of tfjs-backend-wasm's BackendWasm these kernels use. */
interface WasmTensorData {
  memoryOffset: number;
  shape: number[];
  dtype: tf.DataType;
}
interface WasmBackend {
  wasm: { HEAPU8: Uint8Array };
  dataIdMap: { get(dataId: object): WasmTensorData };
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
}

type KernelArgs = Parameters<tf.KernelFunc>[0];

const require = createRequire(import.meta.url);
const ACTIVATIONS: Record<string, number> = { linear: 0, relu: 1, relu6: 2, elu: 3, sigmoid: 4, leakyrelu: 5, prelu: 6 };
const OVERRIDDEN = ['BatchMatMul', '_FusedMatMul', 'Transpose', 'Softmax', 'Sum', 'Mean', 'Max'] as const;
const REDUCE_OPS: Record<string, number> = { Sum: 0, Mean: 1, Max: 2 };

/** Original wasm kernel configs, captured before the first override (the fallback and the parity reference). */
export const originalKernels = new Map<string, tf.KernelConfig>();
let installed: NativeAddon | null = null;

/** Loads the addon; returns it or the reason it is unavailable (never throws). */
export function loadNativeAddon(): { addon: NativeAddon | null; reason: string } {
  try {
    const addon = require('@gems/native') as NativeAddon;
    return { addon, reason: 'loaded' };
  } catch (e) {
    return { addon: null, reason: (e as Error).message.split('\n')[0] ?? 'unknown error' };
  }
}

function heapOf(backend: WasmBackend): ArrayBuffer {
  // Re-read after every allocation: the wasm memory may have grown and replaced its buffer.
  return backend.wasm.HEAPU8.buffer as ArrayBuffer;
}

function offsetOf(backend: WasmBackend, t: tf.TensorInfo): number {
  return backend.dataIdMap.get(t.dataId).memoryOffset;
}

function callOriginal(name: string, args: KernelArgs): tf.TensorInfo | tf.TensorInfo[] {
  const config = originalKernels.get(name);
  if (!config) throw new Error(`no original wasm kernel ${name} to fall back on`);
  return config.kernelFunc(args);
}

/** Flat batch index into a batch shape (right-aligned broadcasting) for each output batch index. */
function broadcastIndex(outer: number[], from: number[]): number[] {
  const total = outer.reduce((p, d) => p * d, 1);
  const idx = new Array<number>(total);
  const offset = outer.length - from.length;
  for (let o = 0; o < total; o++) {
    let rem = o;
    let flat = 0;
    let mul = 1;
    for (let d = outer.length - 1; d >= 0; d--) {
      const coord = rem % outer[d]!;
      rem = Math.floor(rem / outer[d]!);
      const fd = d - offset;
      if (fd >= 0) {
        const size = from[fd]!;
        flat += (size === 1 ? 0 : coord) * mul;
        mul *= size;
      }
    }
    idx[o] = flat;
  }
  return idx;
}

/** Shared body of BatchMatMul and _FusedMatMul; returns null when the case must go to the original kernel. */
function nativeMatMul(
  addon: NativeAddon, backend: WasmBackend, a: tf.TensorInfo, b: tf.TensorInfo, transA: boolean, transB: boolean,
  bias: tf.TensorInfo | null, act: number, alpha: number, slopes: tf.TensorInfo | null = null,
): tf.TensorInfo | null {
  if (a.dtype !== 'float32' || b.dtype !== 'float32') return null;
  const ra = a.shape.length;
  const rb = b.shape.length;
  if (ra < 2 || rb < 2) return null;
  const k = transA ? a.shape[ra - 2]! : a.shape[ra - 1]!;
  const kb = transB ? b.shape[rb - 1]! : b.shape[rb - 2]!;
  const m = transA ? a.shape[ra - 1]! : a.shape[ra - 2]!;
  const n = transB ? b.shape[rb - 2]! : b.shape[rb - 1]!;
  if (k !== kb) {
    throw new Error(`Error in matMul: inner shapes (${k}) and (${kb}) of Tensors with shapes ${a.shape} and ` +
      `${b.shape} and transposeA=${transA} and transposeB=${transB} must match.`);
  }
  const outerA = a.shape.slice(0, -2);
  const outerB = b.shape.slice(0, -2);
  const outer = tf.broadcast_util.assertAndGetBroadcastShape(outerA, outerB);
  // Bias and prelu slopes: one value per output column (shape [n], [1, n], …), else the original kernel.
  const perColumn = (t: tf.TensorInfo) => t.dtype === 'float32' && t.shape.reduce((p, d) => p * d, 1) === n &&
    (t.shape.length === 0 || t.shape[t.shape.length - 1] === n);
  if ((bias && !perColumn(bias)) || (slopes && !perColumn(slopes))) return null;
  const out = backend.makeOutput([...outer, m, n], 'float32');
  const heap = heapOf(backend);
  const aOff = offsetOf(backend, a);
  const bOff = offsetOf(backend, b);
  const cOff = offsetOf(backend, out);
  const biasOff = bias ? offsetOf(backend, bias) : -1;
  const slopesOff = slopes ? offsetOf(backend, slopes) : -1;
  const batch = outer.reduce((p, d) => p * d, 1);
  const batchA = outerA.reduce((p, d) => p * d, 1);
  const batchB = outerB.reduce((p, d) => p * d, 1);
  const sizeA = m * k;
  const sizeB = k * n;
  if ((batchA === batch || batchA === 1) && (batchB === batch || batchB === 1)) {
    // Same batch, or one side a single matrix broadcast over it: one call with stride 0 for the broadcast side.
    addon.matmul(heap, aOff, bOff, cOff, batch, m, n, k, transA, transB, batchA === 1 ? 0 : sizeA,
      batchB === 1 ? 0 : sizeB, biasOff, act, alpha, slopesOff);
  } else {
    // General broadcasting ([2,1] × [1,3]): one call per output matrix.
    const ia = broadcastIndex(outer, outerA);
    const ib = broadcastIndex(outer, outerB);
    for (let i = 0; i < batch; i++) {
      addon.matmul(heap, aOff + ia[i]! * sizeA * 4, bOff + ib[i]! * sizeB * 4, cOff + i * m * n * 4, 1, m, n, k,
        transA, transB, 0, 0, biasOff, act, alpha, slopesOff);
    }
  }
  return out;
}

function makeBatchMatMul(addon: NativeAddon): tf.KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as WasmBackend;
    const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
    const { transposeA, transposeB } = args.attrs as { transposeA: boolean; transposeB: boolean };
    return nativeMatMul(addon, backend, a, b, !!transposeA, !!transposeB, null, 0, 0) ?? callOriginal('BatchMatMul', args);
  };
}

function makeFusedMatMul(addon: NativeAddon): tf.KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as WasmBackend;
    const { a, b, bias, preluActivationWeights } = args.inputs as Record<string, tf.TensorInfo | undefined>;
    const { transposeA, transposeB, activation, leakyreluAlpha } = args.attrs as {
      transposeA: boolean; transposeB: boolean; activation?: string; leakyreluAlpha?: number;
    };
    const act = ACTIVATIONS[activation ?? 'linear'];
    if (act === undefined || !a || !b || (act === ACTIVATIONS['prelu'] && !preluActivationWeights)) {
      return callOriginal('_FusedMatMul', args);
    }
    return nativeMatMul(addon, backend, a, b, !!transposeA, !!transposeB, bias ?? null, act, leakyreluAlpha ?? 0.2,
      preluActivationWeights ?? null) ??
      callOriginal('_FusedMatMul', args);
  };
}

function makeTranspose(addon: NativeAddon): tf.KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as WasmBackend;
    const { x } = args.inputs as { x: tf.TensorInfo };
    const { perm } = args.attrs as { perm: number[] };
    if (x.dtype !== 'float32' && x.dtype !== 'int32') return callOriginal('Transpose', args);
    const outShape = perm.map((p) => x.shape[p]!);
    const out = backend.makeOutput(outShape, x.dtype);
    addon.transpose(heapOf(backend), offsetOf(backend, x), offsetOf(backend, out), x.shape, perm);
    return out;
  };
}

/** x viewed as [outer, n, inner] for a reduction over `axis`, or null when the axes are not one contiguous group. */
function reductionView(shape: number[], axis: number | number[] | null | undefined):
  { first: number; last: number; outer: number; n: number; inner: number } | null {
  const axes = (axis == null ? shape.map((_, i) => i) : tf.util.parseAxisParam(axis, shape)).slice().sort((p, q) => p - q);
  const contiguous = axes.every((a, i) => i === 0 || a === axes[i - 1]! + 1);
  if (axes.length === 0 || !contiguous || shape.some((d) => d === 0)) return null;
  const first = axes[0]!;
  const last = axes[axes.length - 1]!;
  const prod = (dims: number[]) => dims.reduce((p, d) => p * d, 1);
  return { first, last, outer: prod(shape.slice(0, first)), n: prod(shape.slice(first, last + 1)), inner: prod(shape.slice(last + 1)) };
}

/**
 * Sum / Mean / Max over one contiguous group of axes (e.g. [0] or [0, 1] for bias gradients, -1 for LayerNorm), as
 * one pass over x viewed as [outer, n, inner]. tfjs-backend-wasm transposes the reduced axes innermost first, which
 * made the bias-gradient sums of a training step ~10× slower than this. Other dtypes, non-contiguous axis sets and
 * empty reductions go to the original kernel.
 */
function makeReduce(addon: NativeAddon, name: 'Sum' | 'Mean' | 'Max'): tf.KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as WasmBackend;
    const { x } = args.inputs as { x: tf.TensorInfo };
    const attrs = args.attrs as { axis?: number | number[] | null; reductionIndices?: number | number[] | null; keepDims: boolean };
    const rawAxis = name === 'Max' ? attrs.reductionIndices : attrs.axis;
    if (x.dtype !== 'float32') return callOriginal(name, args);
    const view = reductionView(x.shape, rawAxis);
    if (!view) return callOriginal(name, args);
    const { first, last, outer, n, inner } = view;
    const outShape = attrs.keepDims ? x.shape.map((d, i) => (i >= first && i <= last ? 1 : d)) :
      x.shape.filter((_, i) => i < first || i > last);
    const out = backend.makeOutput(outShape, 'float32');
    addon.reduce(heapOf(backend), offsetOf(backend, x), offsetOf(backend, out), outer, n, inner, REDUCE_OPS[name]!);
    return out;
  };
}

/** GemsDropoutMask (no inputs; attrs shape, rate, seed): the mask of ops.ts dropoutMask(), written by the addon. */
function makeDropoutMask(addon: NativeAddon): tf.KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as WasmBackend;
    const { shape, rate, seed } = args.attrs as { shape: number[]; rate: number; seed: number };
    const out = backend.makeOutput(shape, 'float32');
    const { s1, s2, threshold, scale } = dropoutMaskParams(rate, seed);
    addon.dropoutMask(heapOf(backend), offsetOf(backend, out), shape.reduce((p, d) => p * d, 1), s1, s2, threshold, scale);
    return out;
  };
}

/** GemsAdam (param, grad, m, v; attr hyper) → [param', m', v']; used by ops.ts adamUpdate. */
function makeAdam(addon: NativeAddon): tf.KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as WasmBackend;
    const { param, grad, m, v } = args.inputs as Record<string, tf.TensorInfo>;
    const { hyper } = args.attrs as unknown as { hyper: number[] };
    const outs = [param!, m!, v!].map((t) => backend.makeOutput(t.shape, 'float32'));
    addon.adam(heapOf(backend), offsetOf(backend, param!), offsetOf(backend, grad!), offsetOf(backend, m!), offsetOf(backend, v!),
      offsetOf(backend, outs[0]!), offsetOf(backend, outs[1]!), offsetOf(backend, outs[2]!), param!.shape.reduce((p, n) => p * n, 1), hyper);
    return outs;
  };
}

/** GemsGelu (x) → gelu(x); used by ops.ts gelu. */
function makeGelu(addon: NativeAddon): tf.KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as WasmBackend;
    const { x } = args.inputs as Record<string, tf.TensorInfo>;
    const y = backend.makeOutput(x!.shape, 'float32');
    addon.gelu(heapOf(backend), offsetOf(backend, x!), offsetOf(backend, y), x!.shape.reduce((p, n) => p * n, 1));
    return y;
  };
}

/** GemsGeluGrad (x, dy) → dy · gelu'(x). */
function makeGeluGrad(addon: NativeAddon): tf.KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as WasmBackend;
    const { x, dy } = args.inputs as Record<string, tf.TensorInfo>;
    const dx = backend.makeOutput(x!.shape, 'float32');
    addon.geluGrad(heapOf(backend), offsetOf(backend, x!), offsetOf(backend, dy!), offsetOf(backend, dx), x!.shape.reduce((p, n) => p * n, 1));
    return dx;
  };
}

/** GemsLayerNorm (x [..., d], gamma [d], beta [d]; attr eps) → [y, mean [rows], rstd [rows]]; used by ops.ts layerNorm. */
function makeLayerNorm(addon: NativeAddon): tf.KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as WasmBackend;
    const { x, gamma, beta } = args.inputs as Record<string, tf.TensorInfo>;
    const { eps } = args.attrs as { eps: number };
    const d = x!.shape[x!.shape.length - 1]!;
    const rows = x!.shape.reduce((p, n) => p * n, 1) / d;
    const y = backend.makeOutput(x!.shape, 'float32');
    const mean = backend.makeOutput([rows], 'float32');
    const rstd = backend.makeOutput([rows], 'float32');
    addon.layerNorm(heapOf(backend), offsetOf(backend, x!), offsetOf(backend, gamma!), offsetOf(backend, beta!),
      offsetOf(backend, y), offsetOf(backend, mean), offsetOf(backend, rstd), rows, d, eps);
    return [y, mean, rstd];
  };
}

/** GemsLayerNormGrad (x, gamma, mean, rstd, dy) → [dx, dgamma, dbeta]. */
function makeLayerNormGrad(addon: NativeAddon): tf.KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as WasmBackend;
    const { x, gamma, mean, rstd, dy } = args.inputs as Record<string, tf.TensorInfo>;
    const d = x!.shape[x!.shape.length - 1]!;
    const rows = x!.shape.reduce((p, n) => p * n, 1) / d;
    const dx = backend.makeOutput(x!.shape, 'float32');
    const dg = backend.makeOutput(gamma!.shape, 'float32');
    const db = backend.makeOutput(gamma!.shape, 'float32');
    addon.layerNormGrad(heapOf(backend), offsetOf(backend, x!), offsetOf(backend, gamma!), offsetOf(backend, mean!),
      offsetOf(backend, rstd!), offsetOf(backend, dy!), offsetOf(backend, dx), offsetOf(backend, dg), offsetOf(backend, db),
      rows, d);
    return [dx, dg, db];
  };
}

/** UnsortedSegmentSum for wasm in JS: out[s, …] = Σ x[i, …] over i with segmentIds[i] = s (ids outside [0, n) dropped). */
function unsortedSegmentSum(args: KernelArgs): tf.TensorInfo {
  const backend = args.backend as unknown as WasmBackend;
  const { x, segmentIds } = args.inputs as { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
  const { numSegments } = args.attrs as { numSegments: number };
  if (x.dtype !== 'float32' && x.dtype !== 'int32') {
    throw new Error(`UnsortedSegmentSum on wasm supports float32 and int32, got ${x.dtype}`);
  }
  const ids = segmentIds.shape.reduce((p, d) => p * d, 1);
  const idRank = segmentIds.shape.length;
  for (let d = 0; d < idRank; d++) {
    if (segmentIds.shape[d] !== x.shape[d]) {
      throw new Error(`UnsortedSegmentSum: segmentIds shape ${segmentIds.shape} is not a prefix of x shape ${x.shape}`);
    }
  }
  const inner = x.shape.slice(idRank).reduce((p, d) => p * d, 1);
  const out = backend.makeOutput([numSegments, ...x.shape.slice(idRank)], x.dtype);
  const heap = heapOf(backend);
  const View = x.dtype === 'float32' ? Float32Array : Int32Array;
  const xs = new View(heap, offsetOf(backend, x), ids * inner);
  const os = new View(heap, offsetOf(backend, out), numSegments * inner).fill(0);
  const seg = new Int32Array(heap, offsetOf(backend, segmentIds), ids);
  for (let i = 0; i < ids; i++) {
    const s = seg[i]!;
    if (s < 0 || s >= numSegments) continue;
    const src = i * inner;
    const dst = s * inner;
    for (let j = 0; j < inner; j++) os[dst + j]! += xs[src + j]!;
  }
  return out;
}

/** Softmax over the last axis (the only axis tf.softmax supports); other cases go to the original kernel. */
function makeSoftmax(addon: NativeAddon): tf.KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as WasmBackend;
    const { logits } = args.inputs as { logits: tf.TensorInfo };
    const { dim } = args.attrs as { dim: number };
    const rank = logits.shape.length;
    if (logits.dtype !== 'float32' || rank === 0 || (dim !== -1 && dim !== rank - 1)) return callOriginal('Softmax', args);
    const cols = logits.shape[rank - 1]!;
    const rows = logits.shape.reduce((p, d) => p * d, 1) / Math.max(cols, 1);
    const out = backend.makeOutput(logits.shape, 'float32');
    if (cols > 0) addon.softmax(heapOf(backend), offsetOf(backend, logits), offsetOf(backend, out), rows, cols);
    return out;
  };
}

function makeSoftmaxGrad(addon: NativeAddon): tf.KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as WasmBackend;
    const { y, dy } = args.inputs as { y: tf.TensorInfo; dy: tf.TensorInfo };
    const cols = y.shape[y.shape.length - 1]!;
    const rows = y.shape.reduce((p, d) => p * d, 1) / Math.max(cols, 1);
    const dx = backend.makeOutput(y.shape, 'float32');
    if (cols > 0) addon.softmaxGrad(heapOf(backend), offsetOf(backend, y), offsetOf(backend, dy), offsetOf(backend, dx), rows, cols);
    return dx;
  };
}

/** GemsReduceGrad (inputs dy; attrs shape, axis, mean): dy broadcast back over the reduced axes, ÷ n for a mean. */
function makeReduceGrad(addon: NativeAddon): tf.KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as WasmBackend;
    const { dy } = args.inputs as { dy: tf.TensorInfo };
    const { shape, axis, mean } = args.attrs as { shape: number[]; axis: number[]; mean: boolean };
    const { outer, n, inner } = reductionView(shape, axis)!;
    const dx = backend.makeOutput(shape, 'float32');
    addon.expand(heapOf(backend), offsetOf(backend, dy), offsetOf(backend, dx), outer, n, inner, mean ? 1 / n : 1);
    return dx;
  };
}

const originalReduceGrads = new Map<string, tf.GradConfig>();

/**
 * Sum's and Mean's gradients multiply dy by a ones tensor of x's shape that tfjs fills in JS and uploads on every
 * call (~35 ms of a SASRec step here). With native kernels on wasm they become one GemsReduceGrad pass instead.
 */
function installReduceGradients(): void {
  for (const name of ['Sum', 'Mean'] as const) {
    if (originalReduceGrads.has(name)) continue;
    const original = tf.getGradient(name);
    if (!original) continue;
    originalReduceGrads.set(name, original);
    tf.registerGradient({
      ...original,
      gradFunc: (dy, saved, attrs) => {
        const x = saved[0]!;
        const { axis } = attrs as { axis: number | number[] | null };
        const g = dy as tf.Tensor;
        if (installed && tf.getBackend() === 'wasm' && x.dtype === 'float32' && g.dtype === 'float32' &&
          reductionView(x.shape, axis) !== null) {
          const axes = axis == null ? x.shape.map((_, i) => i) : tf.util.parseAxisParam(axis, x.shape);
          return { x: () => tf.engine().runKernel('GemsReduceGrad', { dy: g }, { shape: x.shape, axis: axes, mean: name === 'Mean' }) as tf.Tensor };
        }
        return original.gradFunc(dy, saved, attrs);
      },
    });
  }
}

let originalSoftmaxGrad: tf.GradConfig | null = null;

/**
 * Softmax's gradient is registered globally (not per backend), so it is replaced by one that uses the native
 * GemsSoftmaxGrad kernel when native kernels are active on wasm, and the original formula otherwise.
 */
function installSoftmaxGradient(): void {
  if (originalSoftmaxGrad) return;
  const original = tf.getGradient('Softmax');
  if (!original) return;
  originalSoftmaxGrad = original;
  tf.registerGradient({
    ...original,
    gradFunc: (dy, saved, attrs) => {
      const y = saved[0]!;
      const dim = (attrs as { dim: number }).dim;
      if (installed && tf.getBackend() === 'wasm' && (dim === -1 || dim === y.rank - 1) && y.dtype === 'float32') {
        return { logits: () => tf.engine().runKernel('GemsSoftmaxGrad', { y, dy: dy as tf.Tensor }) as tf.Tensor };
      }
      return original.gradFunc(dy, saved, attrs);
    },
  });
}

function makeSoftmaxXent(addon: NativeAddon): tf.KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as WasmBackend;
    const { logits, labels } = args.inputs as { logits: tf.TensorInfo; labels: tf.TensorInfo };
    const [rows, classes] = logits.shape as [number, number];
    const loss = backend.makeOutput([rows], 'float32');
    const lse = backend.makeOutput([rows], 'float32');
    addon.softmaxXent(heapOf(backend), offsetOf(backend, logits), offsetOf(backend, labels), offsetOf(backend, loss),
      offsetOf(backend, lse), rows, classes);
    return [loss, lse];
  };
}

function makeSoftmaxXentGrad(addon: NativeAddon): tf.KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as WasmBackend;
    const { logits, labels, lse, dy } = args.inputs as Record<string, tf.TensorInfo>;
    const [rows, classes] = logits!.shape as [number, number];
    const dx = backend.makeOutput([rows, classes], 'float32');
    addon.softmaxXentGrad(heapOf(backend), offsetOf(backend, logits!), offsetOf(backend, labels!),
      offsetOf(backend, lse!), offsetOf(backend, dy!), offsetOf(backend, dx), rows, classes);
    return dx;
  };
}

function replaceKernel(config: tf.KernelConfig): void {
  if (tf.getKernel(config.kernelName, config.backendName)) tf.unregisterKernel(config.kernelName, config.backendName);
  tf.registerKernel(config);
}

/**
 * Identity that shares the input's memory (reference count) instead of copying it, as the cpu backend and wasm's
 * own Reshape do. The engine clones every tensor a gradient saves through Identity, so wasm's copying Identity
 * spent ~10% of a training step duplicating activations (a 12,800 × 3,707 logits tensor is 190 MB). tfjs tensors
 * are immutable, so sharing is safe.
 */
function sharedIdentity(args: KernelArgs): tf.TensorInfo {
  const { x } = args.inputs as { x: tf.TensorInfo };
  if (x.dtype === 'string') return callOriginal('Identity', args) as tf.TensorInfo;
  (args.backend as unknown as { incRef(dataId: object): void }).incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
}

/** Cast to the tensor's own dtype shares memory like Identity (wasm copied it; tf.dropout casts every call). */
function sharedCast(args: KernelArgs): tf.TensorInfo {
  const { x } = args.inputs as { x: tf.TensorInfo };
  const { dtype } = args.attrs as { dtype: tf.DataType };
  if (x.dtype !== dtype || dtype === 'string') return callOriginal('Cast', args) as tf.TensorInfo;
  (args.backend as unknown as { incRef(dataId: object): void }).incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
}

/**
 * GatherV2 by block copies inside the wasm heap (copyWithin = memmove): tfjs-backend-wasm's own gather took
 * ~60–130 ms for an embedding lookup of 12,800 rows × 64 (this: ~1 ms). batchDims > 0 and other dtypes go to the
 * original kernel. Indices outside [0, size) throw, as the cpu backend does.
 */
function gatherRows(args: KernelArgs): tf.TensorInfo {
  const backend = args.backend as unknown as WasmBackend;
  const { x, indices } = args.inputs as { x: tf.TensorInfo; indices: tf.TensorInfo };
  const { axis, batchDims } = args.attrs as { axis: number; batchDims?: number };
  if ((batchDims ?? 0) !== 0 || (x.dtype !== 'float32' && x.dtype !== 'int32') || indices.dtype !== 'int32') {
    return callOriginal('GatherV2', args) as tf.TensorInfo;
  }
  const ax = axis < 0 ? axis + x.shape.length : axis;
  const size = x.shape[ax]!;
  const outer = x.shape.slice(0, ax).reduce((p, d) => p * d, 1);
  const inner = x.shape.slice(ax + 1).reduce((p, d) => p * d, 1);
  const n = indices.shape.reduce((p, d) => p * d, 1);
  const out = backend.makeOutput([...x.shape.slice(0, ax), ...indices.shape, ...x.shape.slice(ax + 1)], x.dtype);
  const heap = new Int32Array(heapOf(backend)); // 4-byte elements: copying as int32 is exact for float32 too
  const xBase = offsetOf(backend, x) / 4;
  const outBase = offsetOf(backend, out) / 4;
  const idx = new Int32Array(heap.buffer, offsetOf(backend, indices), n);
  for (let i = 0; i < n; i++) {
    const v = idx[i]!;
    if (v < 0 || v >= size) throw new Error(`GatherV2: the index value ${v} is not in [0, ${size - 1}]`);
  }
  for (let o = 0; o < outer; o++) {
    const src = xBase + o * size * inner;
    const dst = outBase + o * n * inner;
    if (inner === 1) {
      for (let i = 0; i < n; i++) heap[dst + i] = heap[src + idx[i]!]!;
    } else {
      for (let i = 0; i < n; i++) heap.copyWithin(dst + i * inner, src + idx[i]! * inner, src + (idx[i]! + 1) * inner);
    }
  }
  return out;
}

const is4Byte = (dtype: tf.DataType): boolean => dtype === 'float32' || dtype === 'int32';

/** Copies `outer` blocks of `inner` elements: dst[o·dstStride + j] = src[o·srcStride + j] (element offsets). */
function copyBlocks(heap: Int32Array, src: number, srcStride: number, dst: number, dstStride: number, outer: number,
  inner: number): void {
  if (inner >= 32) {
    for (let o = 0; o < outer; o++) heap.copyWithin(dst + o * dstStride, src + o * srcStride, src + o * srcStride + inner);
    return;
  }
  // Short blocks (e.g. a 4-wide feature column per row): an element loop beats a copyWithin call per block.
  for (let o = 0; o < outer; o++) {
    const s = src + o * srcStride;
    const d = dst + o * dstStride;
    for (let j = 0; j < inner; j++) heap[d + j] = heap[s + j]!;
  }
}

/**
 * Concat by block copies. wasm's took ~5–13 ms to join the behavior features ([6,144 × 48], [6,144 × 8], …, along
 * the last axis) that a training step builds, and its gradient (SplitV, below) ~40 ms.
 */
function concatBlocks(args: KernelArgs): tf.TensorInfo {
  const backend = args.backend as unknown as WasmBackend;
  const inputs = args.inputs as unknown as tf.TensorInfo[];
  const first = inputs[0];
  const rank = first?.shape.length ?? 0;
  if (!first || rank === 0 || !is4Byte(first.dtype) || inputs.some((t) => t.dtype !== first.dtype || t.shape.length !== rank)) {
    return callOriginal('Concat', args) as tf.TensorInfo;
  }
  const axis = (((args.attrs as { axis: number }).axis % rank) + rank) % rank;
  if (inputs.some((t) => t.shape.some((d, i) => i !== axis && d !== first.shape[i]))) return callOriginal('Concat', args) as tf.TensorInfo;
  const outShape = first.shape.map((d, i) => (i === axis ? inputs.reduce((p, t) => p + t.shape[axis]!, 0) : d));
  const outer = first.shape.slice(0, axis).reduce((p, d) => p * d, 1);
  const innerOf = (shape: number[]) => shape.slice(axis).reduce((p, d) => p * d, 1);
  const total = innerOf(outShape);
  const out = backend.makeOutput(outShape, first.dtype);
  const heap = new Int32Array(heapOf(backend)); // after makeOutput: the heap may have grown
  const dst = offsetOf(backend, out) / 4;
  let at = 0;
  for (const t of inputs) {
    const inner = innerOf(t.shape);
    if (inner > 0) copyBlocks(heap, offsetOf(backend, t) / 4, inner, dst + at, total, outer, inner);
    at += inner;
  }
  return out;
}

/** SplitV (tf.split, and Concat's gradient) by block copies; wasm's runs one strided Slice per output. */
function splitBlocks(args: KernelArgs): tf.TensorInfo[] {
  const backend = args.backend as unknown as WasmBackend;
  const { x } = args.inputs as { x: tf.TensorInfo };
  const rank = x.shape.length;
  if (!is4Byte(x.dtype) || rank === 0) return callOriginal('SplitV', args) as tf.TensorInfo[];
  const { numOrSizeSplits, axis: axisAttr } = args.attrs as { numOrSizeSplits: number | number[]; axis: number };
  const axis = ((axisAttr % rank) + rank) % rank;
  const size = x.shape[axis]!;
  let sizes: number[];
  if (typeof numOrSizeSplits === 'number') {
    if (size % numOrSizeSplits !== 0) return callOriginal('SplitV', args) as tf.TensorInfo[];
    sizes = Array.from({ length: numOrSizeSplits }, () => size / numOrSizeSplits);
  } else {
    const known = numOrSizeSplits.reduce((p, s) => p + (s === -1 ? 0 : s), 0);
    sizes = numOrSizeSplits.map((s) => (s === -1 ? size - known : s));
  }
  if (sizes.reduce((p, s) => p + s, 0) !== size || sizes.some((s) => s < 0)) return callOriginal('SplitV', args) as tf.TensorInfo[];
  const outer = x.shape.slice(0, axis).reduce((p, d) => p * d, 1);
  const unit = x.shape.slice(axis + 1).reduce((p, d) => p * d, 1);
  const outs = sizes.map((s) => backend.makeOutput(x.shape.map((d, i) => (i === axis ? s : d)), x.dtype));
  const heap = new Int32Array(heapOf(backend)); // after every makeOutput: the heap may have grown
  const src = offsetOf(backend, x) / 4;
  let at = 0;
  sizes.forEach((s, i) => {
    if (s > 0) copyBlocks(heap, src + at * unit, size * unit, offsetOf(backend, outs[i]!) / 4, s * unit, outer, s * unit);
    at += s;
  });
  return outs;
}

/** Unpack (tf.unstack) by block copies; wasm's slices it one strided Slice per output (~10× slower). */
function unpackBlocks(args: KernelArgs): tf.TensorInfo[] {
  const backend = args.backend as unknown as WasmBackend;
  const { value } = args.inputs as { value: tf.TensorInfo };
  if (!is4Byte(value.dtype)) return callOriginal('Unpack', args) as tf.TensorInfo[];
  const rank = value.shape.length;
  const axis = ((args.attrs as { axis: number }).axis + rank) % rank;
  const n = value.shape[axis]!;
  const outShape = value.shape.filter((_, i) => i !== axis);
  const outer = value.shape.slice(0, axis).reduce((p, d) => p * d, 1);
  const inner = value.shape.slice(axis + 1).reduce((p, d) => p * d, 1);
  const outs = Array.from({ length: n }, () => backend.makeOutput(outShape, value.dtype));
  const heap = new Int32Array(heapOf(backend)); // after every makeOutput: the heap may have grown
  const src = offsetOf(backend, value) / 4;
  for (let i = 0; i < n; i++) copyBlocks(heap, src + i * inner, n * inner, offsetOf(backend, outs[i]!) / 4, inner, outer, inner);
  return outs;
}

/** Pack (tf.stack) by block copies; wasm's expands every input and concatenates. */
function packBlocks(args: KernelArgs): tf.TensorInfo {
  const backend = args.backend as unknown as WasmBackend;
  const inputs = args.inputs as unknown as tf.TensorInfo[];
  const first = inputs[0];
  const same = first && inputs.every((t) => t.dtype === first.dtype && t.shape.length === first.shape.length &&
    t.shape.every((d, i) => d === first.shape[i]));
  if (!first || !same || !is4Byte(first.dtype)) return callOriginal('Pack', args) as tf.TensorInfo;
  const rank = first.shape.length + 1;
  const axis = ((args.attrs as { axis: number }).axis + rank) % rank;
  const n = inputs.length;
  const outShape = [...first.shape.slice(0, axis), n, ...first.shape.slice(axis)];
  const outer = first.shape.slice(0, axis).reduce((p, d) => p * d, 1);
  const inner = first.shape.slice(axis).reduce((p, d) => p * d, 1);
  const out = backend.makeOutput(outShape, first.dtype);
  const heap = new Int32Array(heapOf(backend));
  const dst = offsetOf(backend, out) / 4;
  inputs.forEach((t, i) => copyBlocks(heap, offsetOf(backend, t) / 4, inner, dst + i * inner, n * inner, outer, inner));
  return out;
}

/**
 * Registers the pure-JS kernels for wasm (no addon needed): UnsortedSegmentSum (missing in tfjs-backend-wasm), the
 * memory-sharing Identity and same-dtype Cast, and block-copy GatherV2, Unpack, Pack, Concat and SplitV. Idempotent.
 */
export function registerJsKernels(): void {
  if (!tf.getKernel('UnsortedSegmentSum', 'wasm')) {
    tf.registerKernel({ kernelName: 'UnsortedSegmentSum', backendName: 'wasm', kernelFunc: unsortedSegmentSum });
  }
  const kernels: Array<[string, tf.KernelFunc]> = [
    ['Identity', sharedIdentity], ['Cast', sharedCast], ['GatherV2', gatherRows], ['Unpack', unpackBlocks as unknown as tf.KernelFunc], ['Pack', packBlocks],
    ['Concat', concatBlocks], ['SplitV', splitBlocks as unknown as tf.KernelFunc],
  ];
  for (const [name, kernelFunc] of kernels) {
    if (originalKernels.has(name)) continue;
    const original = tf.getKernel(name, 'wasm');
    if (!original) throw new Error(`wasm backend has no ${name} kernel (is tfjs-backend-wasm loaded?)`);
    originalKernels.set(name, original);
    replaceKernel({ kernelName: name, backendName: 'wasm', kernelFunc });
  }
}

/** Overrides the wasm matmul/transpose kernels with the addon's and adds the softmax cross-entropy kernels. */
export function installNativeKernels(addon: NativeAddon): void {
  for (const name of OVERRIDDEN) {
    if (!originalKernels.has(name)) {
      const original = tf.getKernel(name, 'wasm');
      if (!original) throw new Error(`wasm backend has no ${name} kernel to override (is tfjs-backend-wasm loaded?)`);
      originalKernels.set(name, original);
    }
  }
  replaceKernel({ kernelName: 'BatchMatMul', backendName: 'wasm', kernelFunc: makeBatchMatMul(addon) });
  replaceKernel({ kernelName: '_FusedMatMul', backendName: 'wasm', kernelFunc: makeFusedMatMul(addon) });
  replaceKernel({ kernelName: 'Transpose', backendName: 'wasm', kernelFunc: makeTranspose(addon) });
  replaceKernel({ kernelName: 'Softmax', backendName: 'wasm', kernelFunc: makeSoftmax(addon) });
  for (const name of ['Sum', 'Mean', 'Max'] as const) replaceKernel({ kernelName: name, backendName: 'wasm', kernelFunc: makeReduce(addon, name) });
  replaceKernel({ kernelName: 'GemsReduceGrad', backendName: 'wasm', kernelFunc: makeReduceGrad(addon) });
  installReduceGradients();
  replaceKernel({ kernelName: 'GemsDropoutMask', backendName: 'wasm', kernelFunc: makeDropoutMask(addon) });
  replaceKernel({ kernelName: 'GemsLayerNorm', backendName: 'wasm', kernelFunc: makeLayerNorm(addon) });
  replaceKernel({ kernelName: 'GemsLayerNormGrad', backendName: 'wasm', kernelFunc: makeLayerNormGrad(addon) });
  replaceKernel({ kernelName: 'GemsGelu', backendName: 'wasm', kernelFunc: makeGelu(addon) });
  replaceKernel({ kernelName: 'GemsGeluGrad', backendName: 'wasm', kernelFunc: makeGeluGrad(addon) });
  replaceKernel({ kernelName: 'GemsAdam', backendName: 'wasm', kernelFunc: makeAdam(addon) });
  replaceKernel({ kernelName: 'GemsSoftmaxGrad', backendName: 'wasm', kernelFunc: makeSoftmaxGrad(addon) });
  installSoftmaxGradient();
  replaceKernel({ kernelName: 'GemsSoftmaxXent', backendName: 'wasm', kernelFunc: makeSoftmaxXent(addon) });
  replaceKernel({ kernelName: 'GemsSoftmaxXentGrad', backendName: 'wasm', kernelFunc: makeSoftmaxXentGrad(addon) });
  installed = addon;
}

/** Puts the original wasm kernels back (plain wasm); the JS kernels (registerJsKernels) stay. */
export function uninstallNativeKernels(): void {
  for (const name of OVERRIDDEN) {
    const config = originalKernels.get(name);
    if (config) replaceKernel(config);
  }
  for (const name of ['GemsSoftmaxGrad', 'GemsSoftmaxXent', 'GemsSoftmaxXentGrad', 'GemsDropoutMask', 'GemsReduceGrad', 'GemsLayerNorm', 'GemsLayerNormGrad', 'GemsGelu', 'GemsGeluGrad', 'GemsAdam']) {
    if (tf.getKernel(name, 'wasm')) tf.unregisterKernel(name, 'wasm');
  }
  installed = null;
}

/** The addon whose kernels are currently registered, or null (plain wasm / other backend). */
export function activeNativeAddon(): NativeAddon | null {
  return installed;
}
