// The time-budget rule that ends an earlier training stage early so the later stages still fit.
import { describe, expect, it } from 'vitest';
import { LATER_STAGE_EPOCH_COST, stageYieldsToLater } from '../../src/train/gemsTrainer.js';

describe('stageYieldsToLater', () => {
  it('ends stage 1 once another epoch would leave less than the later stages need', () => {
    // 88-minute budget, 3.5-minute epochs, stages 2 and 3 one epoch each (reserve 2 × 3.5 × cost).
    const reserve = 2 * 3.5 * LATER_STAGE_EPOCH_COST;
    const lastStart = 88 - 3.5 - reserve; // the latest elapsed time at which one more stage-1 epoch still fits
    expect(stageYieldsToLater(lastStart - 0.1, 3.5, 2, 88)).toBe(false);
    expect(stageYieldsToLater(lastStart + 0.1, 3.5, 2, 88)).toBe(true);
    // Stage-1 epochs that run 3.5 min each stop after ⌊lastStart / 3.5⌋ + 1 of them (the check runs after an epoch).
    let elapsed = 0;
    let epochs = 0;
    while (epochs < 100) {
      elapsed += 3.5;
      epochs++;
      if (stageYieldsToLater(elapsed, 3.5, 2, 88)) break;
    }
    expect(epochs).toBe(Math.floor(lastStart / 3.5) + 1);
    expect(elapsed + reserve).toBeLessThanOrEqual(88);
  });

  it('never ends the last stage early (nothing comes after it)', () => {
    expect(stageYieldsToLater(87, 3.5, 0, 88)).toBe(false);
    expect(stageYieldsToLater(200, 3.5, 0, 88)).toBe(false);
  });

  it('reserves more when more later epochs are planned', () => {
    expect(stageYieldsToLater(50, 3, 2, 88)).toBe(false);
    expect(stageYieldsToLater(50, 3, 8, 88)).toBe(true);
  });
});
