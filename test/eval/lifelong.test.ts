// The generated-set evaluation (evaluateLifelong): by default the user's seen items are filtered from the beam, as
// serving does and as the generator intends (its targets are unseen items); the target itself never is.
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/compute/backend.js';
import { evaluateLifelong } from '../../src/eval/gemsEval.js';
import { historyOf, ITEM_IDS, tinyModel } from '../model/fixture.js';

beforeAll(async () => {
  await initBackend();
});

describe('lifelong evaluation', () => {
  it('filters the input’s seen items (not the target) unless asked not to', () => {
    const { loaded } = tinyModel();
    // Each user has seen every item but one before the target position; the target is that one (users 1–6), or a
    // repeat of a seen item (user 7: the target must stay rankable).
    const users = [1, 2, 3, 4, 5, 6, 7];
    const histories = new Map<number, ReturnType<typeof historyOf>>();
    const targets = users.map((u) => {
      const target = ITEM_IDS[(u * 5) % ITEM_IDS.length]!;
      const seen = u === 7 ? ITEM_IDS : ITEM_IDS.filter((x) => x !== target);
      const items = [...seen, target];
      histories.set(u, historyOf(u, items));
      return { userId: u, position: seen.length, itemId: target, dormant: u % 2 === 0 };
    });
    const filtered = evaluateLifelong(loaded, histories, targets, [1, 2]);
    // Users 1–6: the only unseen item is the target, so it is the whole filtered list. User 7: the beam holds just
    // the target (every other item is excluded), so it is first too.
    expect(filtered.overall['Recall@1']).toBe(1);
    expect(filtered.overall['targets']).toBe(7);
    const unfiltered = evaluateLifelong(loaded, histories, targets, [1, 2], { filterSeen: false });
    // Without filtering an untrained model ranks the target first for few of them (the filter is what did it).
    expect(unfiltered.overall['Recall@1']!).toBeLessThan(1);
  });
});
