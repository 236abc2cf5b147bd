// Quasi-linear attention (QLA, DESIGN §2; VISTA arXiv 2510.22049 appendix): M learnable seed queries E attend to a
// user's lifecycle events through the positive feature map φ(x) = x for x ≥ 1, else e^(x−1):
//
//   O = φ(Q_E) · S / (φ(Q_E) · z),   S = Σ_i φ(k_i)ᵀ v_i,   z = Σ_i φ(k_i)
//
// S and z are sums over events, so they are the whole per-user state: a 100,000-event history is folded in chunk by
// chunk with bounded memory, and new events are folded into a stored state without rereading the old ones. The
// memory vectors are a pure function of the state (`finalizeMemory`), which is what keeps incremental updates exact.
//
// A learnable "sink" key/value pair joins the normalisation at finalize time (not in the state): it gives users with
// no lifecycle events a defined memory and keeps the denominator away from 0.
import { tf } from '../compute/backend.js';
import { encodeReference, inputDim, type EncoderWeights } from './eventEncoder.js';

/** φ(x) = x for x ≥ 1, else e^(x−1): positive, continuous, with a continuous first derivative at 1. */
export function phi(x: number): number {
  return x >= 1 ? x : Math.exp(x - 1);
}

/** φ on tensors without `where` (whose gradient evaluates both branches): max(x,1) + e^(min(x,1)−1) − 1. */
export function phiTensor(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => tf.maximum(x, 1).add(tf.exp(tf.minimum(x, 1).sub(1))).sub(1));
}

export interface QlaWeights {
  slots: number;
  keyDim: number;
  valueDim: number;
  /** Width of the output memory vectors. */
  dim: number;
  seeds: Float32Array; // slots × keyDim
  sinkKey: Float32Array; // keyDim
  sinkValue: Float32Array; // valueDim
  wo: Float32Array; // valueDim × dim
  bo: Float32Array; // dim
  slotEmb: Float32Array; // slots × dim
  lnGamma: Float32Array; // dim
  lnBeta: Float32Array; // dim
}

export function initQla(slots: number, keyDim: number, valueDim: number, dim: number, normal: () => number): QlaWeights {
  const fill = (n: number, std: number) => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = normal() * std;
    return a;
  };
  return {
    slots,
    keyDim,
    valueDim,
    dim,
    seeds: fill(slots * keyDim, 1),
    sinkKey: fill(keyDim, 0.1),
    sinkValue: new Float32Array(valueDim),
    wo: fill(valueDim * dim, Math.sqrt(1 / valueDim)),
    bo: new Float32Array(dim),
    slotEmb: fill(slots * dim, 0.1),
    lnGamma: new Float32Array(dim).fill(1),
    lnBeta: new Float32Array(dim),
  };
}

/** Length of the stored additive state: S (keyDim × valueDim, row-major) followed by z (keyDim). */
export function stateLength(keyDim: number, valueDim: number): number {
  return keyDim * valueDim + keyDim;
}

/** The additive state being accumulated, in float64 so long sums keep their precision. */
export class QlaState {
  readonly s: Float64Array;
  readonly z: Float64Array;
  constructor(
    readonly keyDim: number,
    readonly valueDim: number,
  ) {
    this.s = new Float64Array(keyDim * valueDim);
    this.z = new Float64Array(keyDim);
  }

  static from(stored: Float32Array, keyDim: number, valueDim: number): QlaState {
    const want = stateLength(keyDim, valueDim);
    if (stored.length !== want) throw new Error(`QLA state has ${stored.length} values, expected ${want} (keyDim ${keyDim} × valueDim ${valueDim} + keyDim)`);
    const st = new QlaState(keyDim, valueDim);
    for (let i = 0; i < st.s.length; i++) st.s[i] = stored[i]!;
    for (let i = 0; i < keyDim; i++) st.z[i] = stored[st.s.length + i]!;
    return st;
  }

  /** The state as stored with a memory (float32). */
  toFloat32(): Float32Array {
    const out = new Float32Array(stateLength(this.keyDim, this.valueDim));
    out.set(this.s);
    out.set(this.z, this.s.length);
    return out;
  }

  /** Adds φ(K)ᵀV and Σφ(K) of n events (K: n × keyDim, V: n × valueDim) — the plain reference accumulation. */
  addReference(k: Float32Array, v: Float32Array, n: number): void {
    const dk = this.keyDim;
    const dv = this.valueDim;
    const pk = new Float64Array(dk);
    for (let r = 0; r < n; r++) {
      for (let a = 0; a < dk; a++) pk[a] = phi(k[r * dk + a]!);
      for (let a = 0; a < dk; a++) {
        const p = pk[a]!;
        this.z[a]! += p;
        const row = a * dv;
        for (let b = 0; b < dv; b++) this.s[row + b]! += p * v[r * dv + b]!;
      }
    }
  }

  /** Adds a partial state computed elsewhere (e.g. one chunk's φ(K)ᵀV from the tfjs path). */
  addPartial(s: ArrayLike<number>, z: ArrayLike<number>): void {
    for (let i = 0; i < this.s.length; i++) this.s[i]! += s[i]!;
    for (let i = 0; i < this.z.length; i++) this.z[i]! += z[i]!;
  }
}

/**
 * Memory vectors (slots × dim) from a state: O_m = (φ(q_m)·S + φ(q_m)·φ(k_sink) v_sink) / (φ(q_m)·z + φ(q_m)·φ(k_sink)),
 * then LayerNorm(O_m·Wo + bo + slotEmb_m). `stored` is the float32 state as kept with the memory.
 */
export function finalizeMemory(w: QlaWeights, stored: Float32Array): Float32Array {
  const dk = w.keyDim;
  const dv = w.valueDim;
  if (stored.length !== stateLength(dk, dv)) throw new Error(`QLA state has ${stored.length} values, expected ${stateLength(dk, dv)}`);
  const z = stored.subarray(dk * dv);
  const psink = new Float64Array(dk);
  for (let a = 0; a < dk; a++) psink[a] = phi(w.sinkKey[a]!);
  const out = new Float32Array(w.slots * w.dim);
  const num = new Float64Array(dv);
  const y = new Float64Array(w.dim);
  for (let m = 0; m < w.slots; m++) {
    num.fill(0);
    let den = 0;
    let sinkWeight = 0;
    for (let a = 0; a < dk; a++) {
      const q = phi(w.seeds[m * dk + a]!);
      den += q * z[a]!;
      sinkWeight += q * psink[a]!;
      const row = a * dv;
      for (let b = 0; b < dv; b++) num[b]! += q * stored[row + b]!;
    }
    den += sinkWeight;
    for (let b = 0; b < dv; b++) num[b] = (num[b]! + sinkWeight * w.sinkValue[b]!) / den;
    for (let j = 0; j < w.dim; j++) y[j] = w.bo[j]! + w.slotEmb[m * w.dim + j]!;
    for (let b = 0; b < dv; b++) {
      const o = num[b]!;
      const row = b * w.dim;
      for (let j = 0; j < w.dim; j++) y[j]! += o * w.wo[row + j]!;
    }
    let mean = 0;
    for (let j = 0; j < w.dim; j++) mean += y[j]!;
    mean /= w.dim;
    let variance = 0;
    for (let j = 0; j < w.dim; j++) variance += (y[j]! - mean) ** 2;
    variance /= w.dim;
    const inv = 1 / Math.sqrt(variance + 1e-5);
    for (let j = 0; j < w.dim; j++) out[m * w.dim + j] = (y[j]! - mean) * inv * w.lnGamma[j]! + w.lnBeta[j]!;
  }
  return out;
}

/** Folds one chunk of feature rows (n × inputDim) into a state. */
export interface ChunkAccumulator {
  readonly kind: 'reference' | 'tfjs';
  add(x: Float32Array, n: number, state: QlaState): void;
  dispose(): void;
}

/** Plain TypeScript path: the reference the fast path is tested against. */
export class ReferenceAccumulator implements ChunkAccumulator {
  readonly kind = 'reference' as const;
  constructor(private readonly enc: EncoderWeights) {}
  add(x: Float32Array, n: number, state: QlaState): void {
    const { k, v } = encodeReference(this.enc, x, n);
    state.addReference(k, v, n);
  }
  dispose(): void {}
}

/**
 * TensorFlow.js path for the matrix products — every one a 2-D non-transposed matMul (wasm's fast path, DESIGN §6) —
 * with φ, the key bias and z computed in plain TypeScript on the read-back keys: elementwise tfjs ops on wasm cost
 * more than the matMuls here (measured: φ as 5 tensor ops took 17 ms per 4096-event chunk, the matMuls 6 ms).
 * The value bias enters analytically: Σ φ(k_i)ᵀ(v_i + b_v) = Σ φ(k_i)ᵀ v_i + z ⊗ b_v. Call `await initBackend()` first.
 */
export class TfAccumulator implements ChunkAccumulator {
  readonly kind = 'tfjs' as const;
  private readonly w1: tf.Tensor2D;
  private readonly b1: tf.Tensor1D;
  private readonly wkv: tf.Tensor2D;
  private readonly din: number;
  private pkT = new Float32Array(0);
  private vals = new Float32Array(0);
  constructor(private readonly enc: EncoderWeights) {
    const s = enc.shape;
    this.din = inputDim(s);
    this.w1 = tf.tensor2d(enc.w1, [this.din, s.hidden]);
    this.b1 = tf.tensor1d(enc.b1);
    this.wkv = tf.tensor2d(enc.wkv, [s.hidden, s.keyDim + s.valueDim]);
  }
  add(x: Float32Array, n: number, state: QlaState): void {
    if (n === 0) return;
    const s = this.enc.shape;
    const dk = s.keyDim;
    const dv = s.valueDim;
    const kvw = dk + dv;
    const kvT = tf.tidy(() => {
      const xt = tf.tensor2d(x.subarray(0, n * this.din), [n, this.din]);
      return tf.matMul(tf.relu(tf.matMul(xt, this.w1).add(this.b1)), this.wkv);
    });
    const kv = kvT.dataSync() as Float32Array;
    kvT.dispose();
    if (this.pkT.length < n * dk) this.pkT = new Float32Array(n * dk);
    if (this.vals.length < n * dv) this.vals = new Float32Array(n * dv);
    const pkT = this.pkT;
    const vals = this.vals;
    const bkv = this.enc.bkv;
    const z = new Float64Array(dk);
    for (let r = 0; r < n; r++) {
      const row = r * kvw;
      for (let a = 0; a < dk; a++) {
        const kk = kv[row + a]! + bkv[a]!;
        const p = kk >= 1 ? kk : Math.exp(kk - 1);
        pkT[a * n + r] = p;
        z[a]! += p;
      }
      for (let b = 0; b < dv; b++) vals[r * dv + b] = kv[row + dk + b]!;
    }
    const sT = tf.tidy(() => tf.matMul(tf.tensor2d(pkT.subarray(0, dk * n), [dk, n]), tf.tensor2d(vals.subarray(0, n * dv), [n, dv])));
    const sPart = sT.dataSync() as Float32Array;
    sT.dispose();
    const full = new Float64Array(dk * dv);
    for (let a = 0; a < dk; a++) {
      for (let b = 0; b < dv; b++) full[a * dv + b] = sPart[a * dv + b]! + z[a]! * bkv[dk + b]!;
    }
    state.addPartial(full, z);
  }
  dispose(): void {
    this.w1.dispose();
    this.b1.dispose();
    this.wkv.dispose();
  }
}

/** Multiply-adds ×2 per event of the encoder MLP and the state update (what `flops_ratio` counts). */
export function flopsPerEvent(enc: EncoderWeights): number {
  const s = enc.shape;
  return 2 * (inputDim(s) * s.hidden + s.hidden * (s.keyDim + s.valueDim) + s.keyDim * s.valueDim);
}
