// The served list policies: GemsRecommender applies serving.reserveReturns to a return-intent checkpoint (the same
// list policy as `gems eval --reserve-returns`) and ignores it for checkpoints without the intent, and it applies
// serving.renormalize (the beam conditioned on an admissible item, as `gems eval --renormalize`). A tiny in-memory
// model stands in for a trained checkpoint (the policy, not the training, is under test; the gRPC path is covered
// by recommenderService.test.ts).
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../src/compute/backend.js';
import { cutStreams } from '../../src/data/events.js';
import { recommend } from '../../src/model/recommend.js';
import { GemsRecommender } from '../../src/serving/gemsRecommender.js';
import type { CheckpointMeta } from '../../src/train/checkpoint.js';
import { ringHistories, tinyModel } from '../model/fixture.js';

beforeAll(async () => {
  await initBackend();
});

describe('GemsRecommender list policy', () => {
  it('a return-intent checkpoint serves the reserved share; other checkpoints ignore the setting', async () => {
    const hs = ringHistories(2, 30);
    const asCheckpoint = (t: ReturnType<typeof tinyModel>) => ({ ...t.loaded, meta: { train: {}, createdAt: 'test' } as unknown as CheckpointMeta });
    const tiny = tinyModel({ returnIntent: true });
    const { cfg } = tiny;
    const loaded = asCheckpoint(tiny);
    // An untrained intent vector barely moves the distribution: make the return search find other items.
    tf.tidy(() => tiny.model.params.get('dec.return', [cfg.d]).assign(tf.randomNormal([cfg.d], 0, 3, 'float32', 9)));
    const input = (i: number) => ({ userId: hs[i]!.userId, k: 6, streams: cutStreams(hs[i]!, cfg.tRecent, cfg.tMid), memory: null, options: { excludeSeen: false, indexerTopK: 0 } });
    const served = await new GemsRecommender(loaded, { reserveReturns: 0.5 }).recommendBatch([input(0), input(1)]);
    const want = recommend(loaded, hs, 6, { topK: 0, reserveReturns: 0.5 });
    const plain = recommend(loaded, hs, 6, { topK: 0 });
    served.forEach((s, i) => expect(Array.from(s.items)).toEqual(Array.from(want[i]!.items)));
    expect(served.map((s) => Array.from(s.items))).not.toEqual(plain.map((p) => Array.from(p.items)));
    expect(new GemsRecommender(asCheckpoint(tinyModel()), { reserveReturns: 0.5 }).reserveReturns).toBe(0);
  });

  it('serving.renormalize: the served scores are the renormalised beam of recommend', async () => {
    const hs = ringHistories(2, 30);
    const tiny = tinyModel();
    const loaded = { ...tiny.loaded, meta: { train: {}, createdAt: 'test' } as unknown as CheckpointMeta };
    const input = (i: number) => ({ userId: hs[i]!.userId, k: 6, streams: cutStreams(hs[i]!, tiny.cfg.tRecent, tiny.cfg.tMid), memory: null, options: { excludeSeen: true, indexerTopK: 0 } });
    const served = await new GemsRecommender(loaded, { renormalize: true }).recommendBatch([input(0), input(1)]);
    const want = recommend(loaded, hs, 6, { topK: 0, excludeSeen: true, renormalize: true });
    const plain = recommend(loaded, hs, 6, { topK: 0, excludeSeen: true });
    served.forEach((s, i) => {
      expect(Array.from(s.items)).toEqual(Array.from(want[i]!.items));
      expect(Array.from(s.scores)).toEqual(Array.from(want[i]!.scores));
    });
    expect(served.map((s) => Array.from(s.scores))).not.toEqual(plain.map((p) => Array.from(p.scores)));
  });
});
