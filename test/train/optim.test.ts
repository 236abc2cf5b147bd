// The learning-rate schedule of Adam: linear warm-up, then constant or cosine decay to a floor.
import { describe, expect, it } from 'vitest';
import { ParamStore } from '../../src/model/params.js';
import { Adam, DEFAULT_ADAM } from '../../src/train/optim.js';

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
