// Adam: the learning-rate schedule (linear warm-up, then constant or cosine decay to a floor), and its update.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initCompute, tf } from '../../src/compute/backend.js';
import { activeNativeAddon, installNativeKernels, type NativeAddon } from '../../src/compute/nativeKernels.js';
import { adamUpdate } from '../../src/compute/ops.js';
import { ParamStore } from '../../src/model/params.js';
import { Adam, DEFAULT_ADAM } from '../../src/train/optim.js';
import { Rng } from '../../src/util/random.js';
import { nativeItFor, plainThenNative, randn, relErr } from '../compute/_helpers.js';

describe('Adam learning-rate schedule', () => {
  const params = new ParamStore(1);

  it('warms up linearly, then stays constant without decay', () => {
    const a = new Adam(params, { ...DEFAULT_ADAM, lr: 2e-3, warmupSteps: 100 });
    expect(a.lrAt(0)).toBeCloseTo(2e-5, 12);
    expect(a.lrAt(49)).toBeCloseTo(1e-3, 12);
    expect(a.lrAt(99)).toBeCloseTo(2e-3, 12);
    expect(a.lrAt(50_000)).toBeCloseTo(2e-3, 12);
  });

  it('decays by a cosine from lr to lr·decayTo at decaySteps, monotonically, and stays there', () => {
    const a = new Adam(params, { ...DEFAULT_ADAM, lr: 2e-3, warmupSteps: 100, decaySteps: 1100, decayTo: 0.1 });
    expect(a.lrAt(100)).toBeCloseTo(2e-3, 12);
    expect(a.lrAt(600)).toBeCloseTo(2e-3 * (0.1 + 0.9 * 0.5), 12); // halfway: cos(π/2) = 0
    expect(a.lrAt(1100)).toBeCloseTo(2e-4, 12);
    expect(a.lrAt(5000)).toBeCloseTo(2e-4, 12);
    for (let s = 100; s < 1100; s += 50) expect(a.lrAt(s + 50)).toBeLessThanOrEqual(a.lrAt(s));
  });
});

// One Adam step as one native pass (GemsAdam) against the tf-op formula it replaces.
describe('Adam update: native kernel vs tf ops', () => {
  let addon: NativeAddon | null = null;
  beforeAll(async () => {
    await initCompute();
    addon = activeNativeAddon();
  });
  afterAll(() => {
    if (addon) installNativeKernels(addon);
  });
  const nativeIt = nativeItFor(() => ({ on: addon !== null, reason: 'no native addon' }));

  const both = <R>(fn: () => R) => plainThenNative(addon!, fn);

  nativeIt('gives bit-identical float32 numbers, with and without clipping scale and weight decay', () => {
    const rng = new Rng(3);
    const shape = [37, 41];
    const [p, g, m, v] = [0, 1, 2, 3].map((i) => (i === 3 ? tf.abs(randn(rng, shape)) : randn(rng, shape)));
    for (const s of [
      { lr: 2e-3, beta1: 0.9, beta2: 0.98, eps: 1e-8, bc1: 1 - 0.9 ** 7, bc2: 1 - 0.98 ** 7, scale: 1, weightDecay: 0 },
      { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-6, bc1: 0.1, bc2: 0.001, scale: 0.37, weightDecay: 0.01 },
    ]) {
      const { plain, native } = both(() => tf.tidy(() => adamUpdate(p!, g!, m!, v!, s).map((t) => Float32Array.from(t.dataSync()))));
      for (let i = 0; i < 3; i++) expect(relErr(native[i]!, plain[i]!), `output ${i}`).toBe(0); // bit for bit
      expect(native[0]!.some((x, i) => x !== p!.dataSync()[i])).toBe(true); // it moved the parameter
    }
    tf.dispose([p!, g!, m!, v!]);
  });

  nativeIt('Adam.minimize follows the same trajectory natively (5 clipped steps of a quadratic), leaking no tensor', () => {
    const run = () => {
      const params = new ParamStore(5);
      const w = params.get('w', [64, 8], 'xavier');
      const target = tf.tensor2d(Array.from({ length: 512 }, (_, i) => Math.sin(i)), [64, 8]);
      const opt = new Adam(params, { ...DEFAULT_ADAM, lr: 0.05, warmupSteps: 0, clipNorm: 0.5, weightDecay: 1e-3 });
      const before = tf.memory().numTensors;
      for (let s = 0; s < 5; s++) opt.minimize(() => tf.sum(tf.square(tf.sub(w, target))) as tf.Scalar);
      const grown = tf.memory().numTensors - before;
      const out = Float32Array.from(w.dataSync());
      opt.dispose();
      params.dispose();
      target.dispose();
      return { out, grown };
    };
    const { plain, native } = both(run);
    expect(relErr(native.out, plain.out)).toBeLessThanOrEqual(1e-6);
    expect(native.grown).toBe(plain.grown); // the moment slots, nothing per step
  });
});
