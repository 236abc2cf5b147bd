// Training throughput of the GEMs model (and the SASRec baseline) on synthetic histories: training targets/s and ms
// per optimisation step (p50) for the `default` and `ml-1m` presets, in stage 1 (full attention) and stage 3 (indexer
// KL + top-k selection), per-target (one target per sample, batch 32) and dense (one encoded window of T_recent
// events serves a target at every position, batch 32 windows) in the same run; `dense_speedup` = dense targets/s ÷
// per-target targets/s. Args: [steps=8] [users=256] [length=600].
import type { Bench } from './run.js';
import { median, round } from './_stats.js';
import { initCompute, tf } from '../src/compute/backend.js';
import type { History } from '../src/data/events.js';
import { ChunkMeanSummarizer } from '../src/model/features.js';
import { defaultGemsConfig, GemsModel } from '../src/model/gems.js';
import { simpleSemanticIds } from '../src/model/sid.js';
import { SasRec, SASREC_ML1M } from '../src/model/sasrec.js';
import { GEMS_PRESETS } from '../src/train/gemsCommand.js';
import { stageOptions } from '../src/train/gemsTrainer.js';
import { Adam, DEFAULT_ADAM } from '../src/train/optim.js';
import { batchFromSamples, denseBatchFromWindows, makeSampleContext, trainingSamples, trainingWindows } from '../src/train/samples.js';
import { Rng } from '../src/util/random.js';

function syntheticHistories(users: number, length: number, items: number, seed: number): History[] {
  const rng = new Rng(seed);
  return Array.from({ length: users }, (_, u) => {
    const n = length;
    const itemId = Int32Array.from({ length: n }, () => 1 + rng.int(items));
    return {
      userId: u + 1,
      length: n,
      itemId,
      ts: Float64Array.from({ length: n }, (_, i) => 1.7e12 + i * 60_000),
      seq: Int32Array.from({ length: n }, (_, i) => i),
      authorId: Int32Array.from(itemId, (x) => x % 97),
      tagOffsets: Int32Array.from({ length: n + 1 }, (_, i) => i),
      tagIds: Int32Array.from(itemId, (x) => x % 31),
      playMs: Float32Array.from(itemId, () => rng.next() * 60_000),
      durationMs: new Float32Array(n).fill(60_000),
      labels: Uint8Array.from(itemId, () => rng.int(32)),
    };
  });
}

export const bench: Bench = {
  summary: 'GEMs / SASRec training throughput: samples/s and ms per step (p50) per preset',
  async run(args) {
    const steps = Number(args[0] ?? 8);
    const users = Number(args[1] ?? 256);
    const length = Number(args[2] ?? 600);
    const info = await initCompute();
    const items = 3706;
    const itemIds = Array.from({ length: items }, (_, i) => i + 1);
    const sid = simpleSemanticIds(itemIds, [64, 64, 64, 16], 5, 32);
    const histories = syntheticHistories(users, length, items, 9);
    const out: Record<string, unknown> = { backend: info.path, steps, users, history_length: length };
    for (const preset of ['default', 'ml-1m']) {
      for (const stage of [1, 3] as const) {
        // dense_codebook_only: dense without prefix embeddings (their cost, as a ratio in the same run).
        for (const mode of ['per_target', 'dense', 'dense_codebook_only'] as const) {
          const summarizer = new ChunkMeanSummarizer(sid, 32);
          const cfg = defaultGemsConfig(items, sid.sizes, { ...GEMS_PRESETS[preset], lifecycle: { slots: 32, inDim: summarizer.dim, layers: 1 }, ...(mode === 'dense_codebook_only' ? { prefixEmbeddings: false } : {}) });
          const model = new GemsModel(cfg, sid.trie);
          const ctx = makeSampleContext(cfg, sid, summarizer);
          const opt = new Adam(model.params, DEFAULT_ADAM);
          const samples =
            mode === 'dense'
              ? trainingWindows(histories, { perUser: 4, tRecent: cfg.tRecent, heldOut: 2, seed: 1 })
              : trainingSamples(histories, sid, { perUser: 4, heldOut: 2, minInput: 1, seed: 1 });
          const B = 32;
          const times: number[] = [];
          const prep: number[] = [];
          const targets: number[] = [];
          for (let s = 0; s <= steps; s++) {
            const part = samples.slice(s * B, (s + 1) * B);
            const t0 = performance.now();
            let loss: () => tf.Scalar;
            let n = part.length;
            if (mode !== 'per_target') {
              const d = denseBatchFromWindows(ctx, histories, part);
              n = d.targets;
              loss = () => model.denseLoss(d.batch, d.targetCodes, d.targetMask, stageOptions(model, stage, true)).total;
            } else {
              const { batch, targetCodes } = batchFromSamples(ctx, histories, part);
              loss = () => model.loss(batch, targetCodes, stageOptions(model, stage, true)).total;
            }
            const t1 = performance.now();
            opt.minimize(loss);
            if (s > 0) {
              // step 0 warms up kernels
              times.push(performance.now() - t0);
              prep.push(t1 - t0);
              targets.push(n);
            }
          }
          const p50 = median(times);
          const perStep = median(targets);
          const row = { samples_per_s: round((perStep * 1000) / p50, 1), step_ms_p50: round(p50, 1), batch_build_ms_p50: round(median(prep), 1), batch: B, targets_per_step: perStep, params: model.params.count(), t_recent: cfg.tRecent, t_mid: cfg.tMid };
          const key = `gems_${preset}_stage${stage}${mode === 'per_target' ? '' : `_${mode}`}`;
          out[key] = row;
          if (mode === 'dense') {
            const base = out[`gems_${preset}_stage${stage}`] as typeof row;
            out[`${key}_speedup`] = round(row.samples_per_s / base.samples_per_s, 2);
          }
          if (mode === 'dense_codebook_only') {
            const withPrefix = out[`gems_${preset}_stage${stage}_dense`] as typeof row;
            out[`gems_${preset}_stage${stage}_prefix_embeddings_cost`] = round(row.samples_per_s / withPrefix.samples_per_s, 2);
          }
          console.log(`gems ${preset} stage ${stage} ${mode}: ${row.samples_per_s} targets/s, ${row.step_ms_p50} ms/step`);
          model.dispose();
          opt.dispose();
        }
      }
    }
    // SASRec (ML-1M configuration): a sample = one user window, every position a target.
    const sas = new SasRec({ ...SASREC_ML1M, numItems: items });
    const opt = new Adam(sas.params, DEFAULT_ADAM);
    const L = SASREC_ML1M.maxLen;
    const B = 64;
    const times: number[] = [];
    for (let s = 0; s <= steps; s++) {
      const inp = new Int32Array(B * L);
      const tgt = new Int32Array(B * L);
      for (let b = 0; b < B; b++) {
        const h = histories[(s * B + b) % histories.length]!.itemId;
        for (let j = 0; j < L; j++) {
          inp[b * L + j] = h[j]!;
          tgt[b * L + j] = h[j + 1]!;
        }
      }
      const t0 = performance.now();
      opt.minimize(() => sas.loss(inp, tgt, B));
      if (s > 0) times.push(performance.now() - t0);
    }
    const p50 = median(times);
    out['sasrec_ml1m'] = { samples_per_s: round((B * 1000) / p50, 1), positions_per_s: round((B * L * 1000) / p50, 0), step_ms_p50: round(p50, 1), batch: B };
    console.log(`sasrec: ${round((B * 1000) / p50, 1)} user windows/s, ${round(p50, 1)} ms/step`);
    sas.params.dispose();
    opt.dispose();
    out['tensors_left'] = tf.memory().numTensors;
    return out as never;
  },
};
