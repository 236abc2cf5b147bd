import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../src/compute/backend.js';
import { sliceHistory } from '../../src/data/events.js';
import { ChunkMeanSummarizer } from '../../src/model/features.js';
import { loadGems, recommend } from '../../src/model/recommend.js';
import { DEFAULT_GEMS_TRAIN, trainGems, type GemsTrainConfig } from '../../src/train/gemsTrainer.js';
import { readCheckpoint } from '../../src/train/checkpoint.js';
import { fixtureSid, ringHistories, tinyConfig } from '../model/fixture.js';

const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'gems-train-'));
  dirs.push(d);
  return d;
};

beforeAll(async () => {
  await initBackend();
});
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

const baseTrain = (over: Partial<GemsTrainConfig> = {}): GemsTrainConfig => ({
  ...DEFAULT_GEMS_TRAIN,
  batchSize: 16,
  targetsPerUser: 4,
  minInput: 8,
  adam: { ...DEFAULT_GEMS_TRAIN.adam, lr: 5e-3, warmupSteps: 5 },
  ...over,
});

describe('GEMs training', () => {
  it('a tiny model overfits tiny data to perfect recall, and the KL falls during stage 2', async () => {
    const sid = fixtureSid();
    const cfg = tinyConfig();
    const histories = ringHistories(8, 20);
    const kls: number[] = [];
    const res = await trainGems({
      histories,
      sid,
      summarizer: new ChunkMeanSummarizer(sid, cfg.lifecycle.slots),
      modelConfig: cfg,
      // heldOut 0: every position (incl. the last) is a training target; recall is measured on trained targets.
      // Dense windows (the default): 8 users × 3 windows of 4 events (targets from position 8 on), 4 windows a step.
      // Only a window's last row has the full context the test asks with, so dense needs more epochs than the
      // per-target path did (20 of 6 steps). Stage 3 attends to 3 of 8 mid-term keys, a different attention than
      // stage 1 learned: it gets 10 epochs to fit again (with 3 it left 1 of 8 users wrong in some seeds/configs).
      train: baseTrain({ heldOut: 0, batchSize: 4, adam: { ...DEFAULT_GEMS_TRAIN.adam, lr: 3e-3, warmupSteps: 5 }, stages: [{ maxEpochs: 40, patience: 40 }, { maxEpochs: 4, patience: 4 }, { maxEpochs: 10, patience: 10 }] }),
      runDir: tmp(),
      onEpoch: (e) => {
        if (e.stage === 2) kls.push(e.validKl);
      },
    });
    expect(res.state.done).toBe(true);
    expect(kls.length).toBeGreaterThanOrEqual(3);
    expect(kls[kls.length - 1]!).toBeLessThan(kls[0]! * 0.8);
    // Recall@1 on the last (trained) target of every user, through the saved checkpoint and beam search.
    const loaded = loadGems(res.bestDir);
    const inputs = histories.map((h) => sliceHistory(h, 0, h.length - 1));
    // Per-beam top-k, the formulation stage 3 trained: the default per-user key set of serving is a different
    // approximation, and with k = 3 of 8 keys and 4 beams it can miss a user on this fixture.
    const recs = recommend(loaded, inputs, 1, { beam: 4, selection: 'query' });
    const hits = recs.filter((r, u) => r.items[0] === histories[u]!.itemId[histories[u]!.length - 1]).length;
    expect(hits / histories.length).toBe(1);
    res.model.params.dispose();
    loaded.model.params.dispose();
  });

  it('a checkpoint round-trip reproduces outputs exactly, and training resumes from the last checkpoint', async () => {
    const sid = fixtureSid();
    const cfg = tinyConfig();
    const histories = ringHistories(6, 20);
    const runDir = tmp();
    const input = {
      histories,
      sid,
      summarizer: new ChunkMeanSummarizer(sid, cfg.lifecycle.slots),
      modelConfig: cfg,
      train: baseTrain({ stages: [{ maxEpochs: 2, patience: 5 }, { maxEpochs: 1, patience: 1 }, { maxEpochs: 1, patience: 1 }] }),
      runDir,
    };
    const res = await trainGems(input);
    const meta = readCheckpoint(join(runDir, 'best')).meta;
    expect(meta.tokenizerVersion).toBe(String(sid.version));
    expect(meta.dataFingerprint).toBe(res.dataFingerprint);
    const inputs = histories.map((h) => sliceHistory(h, 0, 15));
    const a = loadGems(join(runDir, 'best'));
    const b = loadGems(join(runDir, 'best'));
    const ra = recommend(a, inputs, 5, { beam: 8 });
    const rb = recommend(b, inputs, 5, { beam: 8 });
    expect(rb.map((r) => [Array.from(r.items), Array.from(r.scores), Array.from(r.sids), r.attentionMass])).toEqual(
      ra.map((r) => [Array.from(r.items), Array.from(r.scores), Array.from(r.sids), r.attentionMass]),
    );
    // The in-memory model that wrote the checkpoint gives the same scores as the reloaded one.
    const live = recommend({ ...a, model: res.model }, inputs, 5, { beam: 8 });
    expect(live.map((r) => Array.from(r.scores))).toEqual(ra.map((r) => Array.from(r.scores)));
    // Resume: a finished run resumed does no more epochs; a run with a larger budget continues from its state.
    const last = readCheckpoint(join(runDir, 'last')).meta.train as { totalEpochs: number };
    const more = await trainGems({ ...input, resume: true, train: { ...input.train, stages: [{ maxEpochs: 2, patience: 5 }, { maxEpochs: 1, patience: 1 }, { maxEpochs: 1, patience: 1 }] } });
    expect(more.state.totalEpochs).toBe(last.totalEpochs);
    // A larger budget for the finished run's last stage trains that stage on (one more epoch here).
    const extended = await trainGems({ ...input, resume: true, train: { ...input.train, stages: [{ maxEpochs: 2, patience: 5 }, { maxEpochs: 1, patience: 1 }, { maxEpochs: 2, patience: 5 }] } });
    expect(extended.state).toMatchObject({ stage: 3, epochInStage: 2, totalEpochs: last.totalEpochs + 1, done: true });
    extended.model.params.dispose();
    // The objective is part of the checkpoint: a resume that changes it is refused (meta without the key = the default).
    expect(readCheckpoint(join(runDir, 'last')).meta.train).toMatchObject({ longRangeWeight: 1, returnShare: 0 });
    await expect(trainGems({ ...input, resume: true, train: { ...input.train, returnShare: 0.3 } })).rejects.toThrow(/returnShare = 0, this run has 0.3: cannot resume/);
    await expect(trainGems({ ...input, resume: true, train: { ...input.train, longRangeWeight: 2 } })).rejects.toThrow(/longRangeWeight = 1, this run has 2/);
    for (const m of [a, b]) m.model.params.dispose();
    res.model.params.dispose();
    more.model.params.dispose();
    expect(tf.memory().numTensors).toBeLessThan(5000);
  });

  it('skips a stage without epochs: --epochs2 0 --epochs3 0 trains stage 1 only, and stage 3 can follow stage 1 directly', async () => {
    const sid = fixtureSid();
    const cfg = tinyConfig();
    const base = { histories: ringHistories(4, 20), sid, summarizer: new ChunkMeanSummarizer(sid, cfg.lifecycle.slots), modelConfig: cfg };
    const dir1 = tmp();
    const only1 = await trainGems({ ...base, runDir: dir1, train: baseTrain({ stages: [{ maxEpochs: 2, patience: 5 }, { maxEpochs: 0, patience: 1 }, { maxEpochs: 0, patience: 1 }] }) });
    expect(only1.model.hasIndexer).toBe(true);
    expect(only1.state).toMatchObject({ stage: 1, epochInStage: 2, totalEpochs: 2, done: true });
    expect(only1.state.history.map((e) => e.stage)).toEqual([1, 1]);
    const skip2 = await trainGems({ ...base, runDir: tmp(), train: baseTrain({ stages: [{ maxEpochs: 1, patience: 5 }, { maxEpochs: 0, patience: 1 }, { maxEpochs: 1, patience: 1 }] }) });
    expect(skip2.state.history.map((e) => e.stage)).toEqual([1, 3]);
    expect(skip2.state).toMatchObject({ stage: 3, totalEpochs: 2, done: true });
    // The stage-1-only run, resumed with epochs for stages 2 and 3, goes on with them (not retraining stage 1).
    const go = await trainGems({ ...base, runDir: dir1, resume: true, train: baseTrain({ stages: [{ maxEpochs: 2, patience: 5 }, { maxEpochs: 1, patience: 1 }, { maxEpochs: 1, patience: 1 }] }) });
    expect(go.state.history.map((e) => e.stage)).toEqual([1, 1, 2, 3]);
    expect(go.state).toMatchObject({ stage: 3, totalEpochs: 4, done: true });
    for (const r of [only1, skip2, go]) r.model.params.dispose();
  });

  it('refuses a return intent or new-item returns without return targets (returnShare 0), before any epoch', async () => {
    const sid = fixtureSid();
    const base = { histories: ringHistories(2, 20), sid, summarizer: new ChunkMeanSummarizer(sid, tinyConfig().lifecycle.slots), train: baseTrain({}) };
    const runDir = tmp();
    await expect(trainGems({ ...base, modelConfig: tinyConfig({ returnIntent: true }), runDir })).rejects.toThrow(/need return targets \(returnShare > 0\)/);
    await expect(trainGems({ ...base, modelConfig: tinyConfig(), train: { ...base.train, returnNewItems: true }, runDir })).rejects.toThrow(/need return targets/);
    await expect(trainGems({ ...base, modelConfig: tinyConfig(), train: { ...base.train, returnShareOfRows: true }, runDir })).rejects.toThrow(/need return targets/);
    expect(existsSync(join(runDir, 'last'))).toBe(false);
  });
});
