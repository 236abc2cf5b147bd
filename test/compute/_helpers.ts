// Helpers shared by the native-kernel parity tests.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { expect, it } from 'vitest';
import { tf } from '../../src/compute/backend.js';
import { installNativeKernels, uninstallNativeKernels, type NativeAddon } from '../../src/compute/nativeKernels.js';
import type { Rng } from '../../src/util/random.js';

/** max |native − plain| / max |plain| (the absolute difference when plain is all zeros). */
export function relErr(native: ArrayLike<number>, plain: ArrayLike<number>): number {
  expect(native.length).toBe(plain.length);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < plain.length; i++) {
    diff = Math.max(diff, Math.abs(native[i]! - plain[i]!));
    scale = Math.max(scale, Math.abs(plain[i]!));
  }
  return scale === 0 ? diff : diff / scale;
}

export function randn(rng: Rng, shape: number[]): tf.Tensor {
  const size = shape.reduce((p, d) => p * d, 1);
  const v = new Float32Array(size);
  for (let i = 0; i < size; i++) v[i] = rng.normal();
  return tf.tensor(v, shape);
}

/** An `it` that skips, with the reason printed, when the native kernels are not active (`active()` is read at run time). */
export function nativeItFor(active: () => { on: boolean; reason: string | null | undefined }) {
  return (name: string, fn: () => void | Promise<void>, timeout?: number) =>
    it(name, async (ctx) => {
      const a = active();
      if (!a.on) {
        console.warn(`[skip] ${name}: native kernels not active (${a.reason})`);
        ctx.skip();
        return;
      }
      await fn();
    }, timeout);
}

/**
 * Runs `reference` with the plain wasm kernels (and tfjs's own gradients), then `fn` (default: the same function)
 * with the native ones of `addon`, which stay installed.
 */
export function plainThenNative<R>(addon: NativeAddon, fn: () => R, reference: () => R = fn): { plain: R; native: R } {
  uninstallNativeKernels();
  const plain = reference();
  installNativeKernels(addon);
  return { plain, native: fn() };
}

/** `fn`'s output tensor(s) as plain arrays (the tensors are freed). */
export function asArrays(fn: () => tf.Tensor | tf.Tensor[]): () => Float32Array[] {
  return () => tf.tidy(() => {
    const out = fn();
    return (Array.isArray(out) ? out : [out]).map((t) => Float32Array.from(t.dataSync()));
  });
}

/** V8's collector, made callable without `--expose-gc` on the command line (vitest starts the forks). */
const collectGarbage: () => void = (() => {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
})();

/** RSS after a full collection, so garbage not yet collected does not count as growth. */
function settledRss(): number {
  collectGarbage();
  collectGarbage();
  return process.memoryUsage.rss();
}

/**
 * Asserts that `round` leaks nothing: after a warm-up round, each of `rounds` (odd) further rounds leaves tf.memory
 * exactly as it was, and the median round grows RSS by less than `maxRoundGrowthMb`. A leak grows RSS in every round;
 * V8 or the allocator growing a heap once (it happened on a CI machine: +72 MB in one round) moves one round only.
 */
export function expectNoLeak(round: () => void, { rounds = 3, maxRoundGrowthMb = 16 } = {}): void {
  round(); // warm-up: lets the wasm heap and V8 reach their working size
  const growthsMb: number[] = [];
  let mem = tf.memory();
  let rss = settledRss();
  for (let r = 0; r < rounds; r++) {
    round();
    const nextMem = tf.memory();
    const nextRss = settledRss();
    expect(nextMem.numTensors, `tensors after round ${r + 1}`).toBe(mem.numTensors);
    expect(nextMem.numBytes, `tensor bytes after round ${r + 1}`).toBe(mem.numBytes);
    growthsMb.push((nextRss - rss) / 2 ** 20);
    mem = nextMem;
    rss = nextRss;
  }
  const median = [...growthsMb].sort((x, y) => x - y)[Math.floor(rounds / 2)]!;
  expect(median, `median RSS growth per round (MB) of ${growthsMb.map((g) => g.toFixed(1)).join(', ')}`).toBeLessThan(maxRoundGrowthMb);
}
