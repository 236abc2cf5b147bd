// The lifecycle summary by coarse interest (InterestSummarizer, --lifecycle-source interests): one slot per first
// Semantic-ID code of the lifecycle events, most frequent first, each the group's mean quantised item vector plus
// log-count, share and time since last seen; and the plumbing that makes a checkpoint trained on it use it again.
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.js';
import { lifecycleSourceOf } from '../../src/lifecycle/memorySummarizer.js';
import { InterestSummarizer } from '../../src/model/features.js';
import { centroidItemVectors, simpleSemanticIds } from '../../src/model/sid.js';
import { parseLifecycleSource, trainingLifecycle } from '../../src/train/lifecycleSource.js';
import { historyOf } from './fixture.js';

const ids = Array.from({ length: 40 }, (_, i) => i + 1);
const sid = simpleSemanticIds(ids, [4, 4, 16], 5, 8);
const W = sid.sizes.length;
const first = (id: number) => sid.codes[sid.rowOf(id) * W]!;
const { dim: vd, vectors } = centroidItemVectors(sid);

describe('InterestSummarizer', () => {
  it('makes one slot per coarse interest, most frequent first, with mean vector, log-count, share and recency', () => {
    const s = new InterestSummarizer(sid, 4);
    expect(s.dim).toBe(vd + 3);
    const items = [1, 2, 3, 1, 2, 5, 9, 9, 9, 9, 40];
    const sum = s.summarize(historyOf(1, items));
    // Groups by first code, in order of count (ties → lower code).
    const groups = new Map<number, number[]>();
    items.forEach((it, e) => groups.set(first(it), [...(groups.get(first(it)) ?? []), e]));
    const order = [...groups.keys()].sort((a, b) => groups.get(b)!.length - groups.get(a)!.length || a - b);
    expect(Array.from(sum.valid)).toEqual([0, 1, 2, 3].map((i) => (i < order.length ? 1 : 0)));
    order.forEach((code, slot) => {
      const events = groups.get(code)!;
      const row = sum.vectors.subarray(slot * s.dim, (slot + 1) * s.dim);
      for (let j = 0; j < vd; j++) {
        const mean = events.reduce((a, e) => a + vectors[sid.rowOf(items[e]!) * vd + j]!, 0) / events.length;
        expect(row[j]).toBeCloseTo(mean, 5);
      }
      expect(row[vd]).toBeCloseTo(Math.log1p(events.length) / 10, 6);
      expect(row[vd + 1]).toBeCloseTo(events.length / items.length, 6);
      expect(row[vd + 2]).toBeCloseTo((items.length - 1 - events[events.length - 1]!) / items.length, 6);
    });
  });

  it('keeps the M most frequent interests, ignores items without a Semantic ID, and is empty for no events', () => {
    const s = new InterestSummarizer(sid, 1);
    const items = [1, 1, 1, 9, 9, 999, 999, 999, 999];
    const sum = s.summarize(historyOf(1, items));
    expect(Array.from(sum.valid)).toEqual([1]);
    // 999 is unknown: the one slot is item 1's interest (3 of the 5 known events).
    expect(first(1)).not.toBe(first(9));
    expect(sum.vectors[vd + 1]).toBeCloseTo(3 / 5, 6);
    const empty = s.summarize(historyOf(1, [999]));
    expect(Array.from(empty.valid)).toEqual([0]);
    expect(empty.vectors.every((x) => x === 0)).toBe(true);
  });

  it('is a lifecycle source: parsed, recorded in the checkpoint meta, read back', () => {
    const config = loadConfig({ flags: { dataDir: '/nonexistent-gems-dir' } });
    expect(parseLifecycleSource('interests', config)).toBe('interests');
    const life = trainingLifecycle(config, sid, 'interests', 6);
    expect(life.summarizer).toBeInstanceOf(InterestSummarizer);
    expect(life.summarizer.slots).toBe(6);
    expect(life.trainMeta).toEqual({ lifecycleSource: 'interests' });
    expect(lifecycleSourceOf(life.trainMeta)).toBe('interests');
    expect(lifecycleSourceOf({})).toBe('chunk-mean');
  });
});
