// Helpers shared by the native-kernel parity tests.
import { expect, it } from 'vitest';
import { tf } from '../../src/compute/backend.js';
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
