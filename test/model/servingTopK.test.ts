// Which indexer top-k a checkpoint serves with: selection only once the indexer was trained (stage 2 on).
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/compute/backend.js';
import { GemsModel } from '../../src/model/gems.js';
import { servingTopK } from '../../src/model/recommend.js';
import type { CheckpointMeta } from '../../src/train/checkpoint.js';
import { fixtureSid, tinyConfig } from './fixture.js';

beforeAll(async () => {
  await initBackend();
});

const meta = (stages: number[]) => ({ train: { history: stages.map((stage) => ({ stage })) } }) as unknown as CheckpointMeta;

describe('servingTopK', () => {
  it('serves full mid-term attention until the indexer has trained, the configured k after', () => {
    const model = new GemsModel(tinyConfig(), fixtureSid().trie);
    const k = model.cfg.indexer.topK;
    expect(servingTopK({ model, meta: meta([1, 1, 1]) })).toBe(0); // stopped in stage 1: indexer untrained
    expect(servingTopK({ model, meta: meta([1, 1, 2]) })).toBe(k);
    expect(servingTopK({ model, meta: meta([1, 2, 3]) })).toBe(k);
    expect(servingTopK({ model, meta: {} as CheckpointMeta })).toBe(k); // no training record (benchmarks)
    // No indexer at all (concat fusion): always full attention.
    expect(servingTopK({ model: new GemsModel(tinyConfig({ fusion: 'concat' }), fixtureSid().trie), meta: meta([1, 2, 3]) })).toBe(0);
    model.params.dispose();
  });
});
