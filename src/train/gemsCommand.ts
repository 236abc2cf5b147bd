// `gems train --model gems`: reads histories + Semantic IDs from the data dir, builds the model from a preset
// plus flags, runs the three-stage training and writes checkpoints under <dataDir>/checkpoints/<run>/.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { flagBool, flagIdRange, flagList, flagNumber, flagString, UsageError } from '../cli/args.js';
import type { CommandContext } from '../cli/command.js';
import type { GemsConfig } from '../config/config.js';
import { generatedPaths } from '../data/generator/write.js';
import { defaultGemsConfig, STREAMS, type FusionKind, type GemsModelConfig, type StreamName } from '../model/gems.js';
import type { SemanticIds } from '../model/sid.js';
import { DEFAULT_GEMS_TRAIN, defaultDenseBatch, trainGems, type GemsTrainConfig } from './gemsTrainer.js';
import { loadHistories, loadSid, readTruth, testStartOf } from './gemsData.js';
import { parseLifecycleSource, trainingLifecycle } from './lifecycleSource.js';

/** Model presets sized for a 2-core CPU. Stream budgets default to config.streams unless the preset sets them. */
export const GEMS_PRESETS: Record<string, Partial<GemsModelConfig>> = {
  default: {},
  tiny: { d: 32, recentLayers: 1, decoderLayers: 1, tRecent: 16, tMid: 64 },
  // ml-1m: d 96 — within the 88-minute budget it beat d 64 (more epochs) and d 128 (fewer) on test HR@10; dropout
  // 0.1 — the budget allows ~17 epochs, and at 0.2 validation NLL was still falling (test HR@10 0.2909 vs 0.2738).
  'ml-1m': { d: 96, heads: 2, recentLayers: 2, decoderLayers: 2, tRecent: 64, tMid: 256, dropout: 0.1 },
  lifelong: { d: 64, heads: 2, recentLayers: 2, decoderLayers: 2 },
};

/**
 * Training defaults per preset (flags still win). `ml-1m`: dense windows, Adam at 2e-3, stage 1 up to 30 epochs,
 * one epoch each of stages 2 and 3, an 88-minute budget of which stage 1 gets what stages 2 and 3 leave
 * (stageYieldsToLater) — sized for the 2-core machine.
 */
export const GEMS_TRAIN_PRESETS: Record<string, Partial<Pick<GemsTrainConfig, 'windowsPerUser' | 'maxMinutes' | 'validUsers' | 'lrDecayTo'>> & { epochs?: [number, number, number]; lr?: number }> = {
  'ml-1m': { windowsPerUser: 3, maxMinutes: 88, validUsers: 1000, epochs: [30, 1, 1], lr: 2e-3 },
};

/**
 * `lifecycle`: the summary's shape; `fixedSlots` (memory source) = the compressor's M, which --slots may not change;
 * `streamsFromConfig` (memory source): T_recent / T_mid come from config.streams, not the preset — stored memories
 * cover the events older than config.streams.tMid, so the model's mid-term stream must end exactly there.
 */
export function buildModelConfig(
  config: GemsConfig,
  sid: SemanticIds,
  summaryDim: number,
  args: CommandContext['args'],
  lifecycle: { fixedSlots?: number; streamsFromConfig?: boolean } = {},
): GemsModelConfig {
  const preset = flagString(args, 'preset', 'default');
  const p0 = GEMS_PRESETS[preset];
  if (!p0) throw new UsageError(`unknown --preset '${preset}' (have: ${Object.keys(GEMS_PRESETS).join(', ')})`);
  const p: Partial<GemsModelConfig> = { ...p0 };
  if (lifecycle.streamsFromConfig) {
    delete p.tRecent;
    delete p.tMid;
    if (args.flags['t-mid'] !== undefined && flagNumber(args, 't-mid') !== config.streams.tMid) {
      throw new UsageError(
        `--t-mid ${flagNumber(args, 't-mid')} differs from streams.tMid ${config.streams.tMid}, the boundary the stored lifecycle memories are cut at: ` +
          `set --set streams.tMid=${flagNumber(args, 't-mid')} (and recompress), or train with --lifecycle-source chunk-mean`,
      );
    }
  }
  if (lifecycle.fixedSlots !== undefined && args.flags['slots'] !== undefined && flagNumber(args, 'slots') !== lifecycle.fixedSlots) {
    throw new UsageError(`--slots ${flagNumber(args, 'slots')}: the lifecycle memories have ${lifecycle.fixedSlots} slots (lifecycle.slots of the compressor); drop --slots or use --lifecycle-source chunk-mean`);
  }
  const base = defaultGemsConfig(sid.itemIds.length, sid.sizes, { tRecent: config.streams.tRecent, tMid: config.streams.tMid, seed: config.seed, ...p });
  const streams = flagList(args, 'streams');
  const on: Record<StreamName, boolean> = { recent: true, mid: true, lifecycle: true };
  if (streams.length) {
    const names = streams.flatMap((s) => s.split(',')).map((s) => s.trim());
    for (const n of names) if (!STREAMS.includes(n as StreamName)) throw new UsageError(`--streams: unknown stream '${n}' (recent, mid, lifecycle)`);
    for (const s of STREAMS) on[s] = names.includes(s);
  }
  const fusion = flagString(args, 'fusion', base.fusion) as FusionKind;
  if (!['sum', 'gated', 'concat', 'shared'].includes(fusion)) throw new UsageError(`--fusion must be sum|gated|concat|shared, got '${fusion}'`);
  return {
    ...base,
    d: flagNumber(args, 'dim', base.d),
    dropout: flagNumber(args, 'dropout', base.dropout),
    tRecent: flagNumber(args, 't-recent', base.tRecent),
    tMid: flagNumber(args, 't-mid', base.tMid),
    fusion,
    streams: on,
    // --codebook-only: one embedding per code and level, not specialised by prefix (the earlier model, to compare).
    prefixEmbeddings: base.prefixEmbeddings === true && !flagBool(args, 'codebook-only'),
    // --return-intent: return targets (--return-share) get their own BOS intent instead of sharing the next event's.
    ...(flagBool(args, 'return-intent') ? { returnIntent: true } : {}),
    // --code-inputs N: events also enter by the embeddings of their first N Semantic-ID codes (model config codeInputs).
    ...(args.flags['code-inputs'] !== undefined ? { codeInputs: flagNumber(args, 'code-inputs') } : {}),
    // --lifecycle-codes: interest slots also carry their code's embedding (model config lifecycleCodes).
    ...(flagBool(args, 'lifecycle-codes') ? { lifecycleCodes: true } : {}),
    // --lifecycle-in-mid: ... and a vector for slots whose interest also occurs in the mid-term stream (lifecycleInMid).
    ...(flagBool(args, 'lifecycle-in-mid') ? { lifecycleCodes: true, lifecycleInMid: true } : {}),
    indexer: { ...base.indexer, topK: flagNumber(args, 'top-k', base.indexer.topK), klWeight: flagNumber(args, 'kl-weight', base.indexer.klWeight) },
    lifecycle: { ...base.lifecycle, slots: lifecycle.fixedSlots ?? flagNumber(args, 'slots', base.lifecycle.slots), inDim: summaryDim },
  };
}

export async function runGemsTrainCommand(ctx: CommandContext, runDir: string): Promise<number> {
  const { config, args, out, log } = ctx;
  const sid = await loadSid(config, args.flags['tokenizer-version'] ? flagNumber(args, 'tokenizer-version') : undefined);
  // --user-ids FROM..TO: train on these users only (held-out users of the same store stay unseen).
  const histories = await loadHistories(config, { maxUsers: args.flags['max-users'] ? flagNumber(args, 'max-users') : undefined, userRange: flagIdRange(args, 'user-ids') });
  const truthPath = generatedPaths(config.dataDir).truth;
  const protocol = flagString(args, 'protocol', existsSync(truthPath) ? 'lifelong' : 'loo');
  const testStart = protocol === 'lifelong' ? testStartOf(histories, readTruth(truthPath)) : undefined;
  const slots = flagNumber(args, 'slots', defaultGemsConfig(1, [2]).lifecycle.slots);
  const source = parseLifecycleSource(args.flags['lifecycle-source'] !== undefined ? flagString(args, 'lifecycle-source') : undefined, config);
  const life = trainingLifecycle(config, sid, source, slots, args.flags['compressor-version'] !== undefined ? flagString(args, 'compressor-version') : undefined);
  const summarizer = life.summarizer;
  const mc = buildModelConfig(config, sid, summarizer.dim, args, source === 'memory' ? { fixedSlots: summarizer.slots, streamsFromConfig: true } : {});
  if (mc.lifecycleCodes && source !== 'interests') throw new UsageError(`--lifecycle-codes needs a summary whose slots are interests (--lifecycle-source interests), not '${source}'`);
  const tp = GEMS_TRAIN_PRESETS[flagString(args, 'preset', 'default')] ?? {};
  const s1 = flagNumber(args, 'epochs', tp.epochs?.[0] ?? DEFAULT_GEMS_TRAIN.stages[0].maxEpochs);
  const patience = flagNumber(args, 'patience', DEFAULT_GEMS_TRAIN.stages[0].patience);
  // --per-target trains one target per sample (the pre-dense path, kept for comparison).
  const dense = !flagBool(args, 'per-target');
  const tc: GemsTrainConfig = {
    ...DEFAULT_GEMS_TRAIN,
    // Dense steps' attention maps grow with T_recent × (T_mid − T_recent): the default batch shrinks to fit the wasm
    // heap (an explicit --batch is taken as given).
    batchSize: args.flags['batch'] !== undefined ? flagNumber(args, 'batch') : dense ? defaultDenseBatch(mc, DEFAULT_GEMS_TRAIN.batchSize) : DEFAULT_GEMS_TRAIN.batchSize,
    targetsPerUser: flagNumber(args, 'targets-per-user', DEFAULT_GEMS_TRAIN.targetsPerUser),
    dense,
    windowsPerUser: flagNumber(args, 'windows-per-user', tp.windowsPerUser ?? DEFAULT_GEMS_TRAIN.windowsPerUser),
    maxMinutes: flagNumber(args, 'max-minutes', tp.maxMinutes ?? 0),
    validUsers: flagNumber(args, 'valid-users', tp.validUsers ?? 1000),
    seed: config.seed,
    adam: { ...DEFAULT_GEMS_TRAIN.adam, lr: flagNumber(args, 'lr', tp.lr ?? DEFAULT_GEMS_TRAIN.adam.lr) },
    lrDecayTo: flagNumber(args, 'lr-decay-to', tp.lrDecayTo ?? 0),
    longRangeWeight: positiveWeight(flagNumber(args, 'long-range-weight', 1)),
    returnShare: shareOf(flagNumber(args, 'return-share', 0)),
    newItems: flagBool(args, 'new-items'),
    interestTargets: flagBool(args, 'interest-targets'),
    returnNewItems: flagBool(args, 'return-new-items'),
    returnShareOfRows: flagBool(args, 'return-share-of-rows'),
    stages: [
      { maxEpochs: s1, patience },
      { maxEpochs: flagNumber(args, 'epochs2', tp.epochs?.[1] ?? DEFAULT_GEMS_TRAIN.stages[1].maxEpochs), patience: DEFAULT_GEMS_TRAIN.stages[1].patience },
      { maxEpochs: flagNumber(args, 'epochs3', tp.epochs?.[2] ?? DEFAULT_GEMS_TRAIN.stages[2].maxEpochs), patience: DEFAULT_GEMS_TRAIN.stages[2].patience },
    ],
  };
  log.info('gems training', {
    users: histories.length, items: sid.itemIds.length, sizes: sid.sizes, protocol, fusion: mc.fusion, streams: mc.streams, tRecent: mc.tRecent, tMid: mc.tMid,
    lifecycleSource: source, compressorVersion: life.trainMeta['compressorVersion'] ?? null, lifecycleSlots: mc.lifecycle.slots, lifecycleDim: mc.lifecycle.inDim,
    batch: tc.batchSize, ...(tc.batchSize < DEFAULT_GEMS_TRAIN.batchSize && args.flags['batch'] === undefined ? { batch_lowered_from: DEFAULT_GEMS_TRAIN.batchSize, why: 'dense attention maps within DENSE_ATTENTION_MAP_BUDGET' } : {}),
  });
  let res;
  try {
    res = await trainGems({ histories, sid, summarizer, modelConfig: mc, train: tc, runDir, resume: flagBool(args, 'resume'), testStart, trainMeta: life.trainMeta, arrays: life.arrays });
  } finally {
    life.dispose();
  }
  mkdirSync(runDir, { recursive: true });
  writeFileSync(join(runDir, 'train-summary.json'), JSON.stringify({ protocol, modelConfig: mc, train: tc, lifecycle: life.trainMeta, state: res.state }, null, 2));
  out(
    JSON.stringify({
      run: runDir, checkpoint: res.bestDir, epochs: res.state.totalEpochs, stage: res.state.stage, last: res.state.history[res.state.history.length - 1],
      lifecycleSource: source, compressorVersion: life.trainMeta['compressorVersion'] ?? null,
    }),
  );
  res.model.dispose();
  return 0;
}

function positiveWeight(w: number): number {
  if (!(w > 0) || !Number.isFinite(w)) throw new UsageError(`--long-range-weight must be a positive number, got ${w}`);
  return w;
}

function shareOf(q: number): number {
  if (!(q >= 0 && q <= 1)) throw new UsageError(`--return-share must be in [0, 1], got ${q}`);
  return q;
}
