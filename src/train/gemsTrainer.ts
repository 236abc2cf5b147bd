// Three-stage training of the GEMs model (DESIGN §2):
//   stage 1 full attention, NLL only (the indexer is not trained) — until validation NLL stops improving;
//   stage 2 indexer KL on (the indexer learns to imitate the detached full attention), selection off — until the
//           validation KL stops improving;
//   stage 3 top-k selection on, NLL + λ·KL, so training matches serving — until validation NLL stops improving.
// At each stage switch the best weights of the stage are restored. Models without an indexer (mid stream off,
// or fusion concat/shared) train stage 1 only. Adam + warm-up + clipping; `last` checkpoint every epoch (resume
// after a kill continues the same stage and epoch), `best` = best weights of the latest stage.
import { join } from 'node:path';
import { tf } from '../compute/backend.js';
import type { History } from '../data/events.js';
import { GemsModel, type ForwardOptions, type GemsModelConfig } from '../model/gems.js';
import type { LifecycleSummarizer } from '../model/features.js';
import type { SemanticIds } from '../model/sid.js';
import { logger, progress } from '../util/log.js';
import { Rng } from '../util/random.js';
import { cleanStaleTemps, fingerprint, isCheckpoint, readCheckpoint, restoreInto, saveCheckpoint } from './checkpoint.js';
import { Adam, DEFAULT_ADAM, type AdamConfig } from './optim.js';
import { batchFromSamples, denseBatchFromWindows, heldOutSamples, makeSampleContext, trainingEnd, trainingSamples, trainingWindows, type Sample, type SampleContext } from './samples.js';

const log = logger('train.gems');

export interface StageConfig {
  maxEpochs: number;
  patience: number;
}

export interface GemsTrainConfig {
  batchSize: number;
  /** Training targets drawn per user per epoch (per-target training). */
  targetsPerUser: number;
  /**
   * Dense training (default where the model allows it, GemsModel.denseTrainable): a batch row is a window of
   * T_recent events whose every position is a target (GemsModel.denseLoss); `batchSize` counts windows.
   */
  dense: boolean;
  /** Dense windows per user per epoch (the newest + random older ones). */
  windowsPerUser: number;
  /** Events at the end of each history held out (2 = leave-one-out valid + test). */
  heldOut: number;
  /** Smallest input length of a training target. */
  minInput: number;
  stages: [StageConfig, StageConfig, StageConfig];
  adam: AdamConfig;
  seed: number;
  /** Stop after this many minutes (0 = no limit). */
  maxMinutes: number;
  /** Validation users (0 = all). */
  validUsers: number;
  /**
   * Cosine learning-rate decay over stage 1's maxEpochs, down to lr × lrDecayTo (0 = constant lr). Stages 2 and 3
   * run at the final rate.
   */
  lrDecayTo?: number;
  /**
   * Dense training: loss weight of long-range targets — those whose coarse interest (first Semantic-ID code) is
   * absent from the recent and mid-term events the target sees but present in the lifecycle part (1 = off). Returns
   * to dormant interests are rare next events, so the plain next-event loss gives them little beam mass; this is
   * the lever for serving them (the lifecycle stream's purpose).
   */
  longRangeWeight?: number;
  /**
   * Dense training: share of targets that are the row's *next return* — the next training event whose coarse interest
   * is long-range for the row (see longRangeWeight) and a real past interest (≥ 1% of the lifecycle events) — instead
   * of its next event (0 = off; samples.ts denseBatchFromWindows). A next-event model spends its beams on the current
   * interests; this objective asks it to also bring back dormant ones, as a lifelong recommender is meant to.
   */
  returnShare?: number;
  /**
   * Dense training: every target is an item new to the user (the next event whose item the row has not seen), as
   * the served list never holds seen items (false = the next event, repeats included).
   */
  newItems?: boolean;
  /**
   * Dense training: every target is an engaged event (not skipped) in an established interest of the user (its
   * coarse interest holds ≥ 1% of the events before it): skipped exploration clicks are not positives (false = any
   * event). Combines with newItems and returnShare (samples.ts denseBatchFromWindows).
   */
  interestTargets?: boolean;
  /** Dense training with returnShare: a return target is the returning interest's first new item. */
  returnNewItems?: boolean;
  /** returnShare is the share of the loss, not of the rows that have a return ahead (samples.ts DenseTargetOptions.returnShareOfRows). */
  returnShareOfRows?: boolean;
}

export const DEFAULT_GEMS_TRAIN: GemsTrainConfig = {
  batchSize: 32,
  targetsPerUser: 8,
  dense: true,
  windowsPerUser: 4,
  heldOut: 2,
  minInput: 1,
  stages: [
    { maxEpochs: 30, patience: 3 },
    { maxEpochs: 5, patience: 2 },
    { maxEpochs: 10, patience: 2 },
  ],
  adam: { ...DEFAULT_ADAM, lr: 1e-3, warmupSteps: 100, clipNorm: 1 },
  seed: 42,
  maxMinutes: 0,
  validUsers: 0,
};

/** What sizes a dense step's attention maps. */
type DenseMapShape = Pick<GemsModelConfig, 'heads' | 'tRecent' | 'tMid' | 'sizes'>;

/**
 * Bytes of one decoder cross-attention map of a dense step over the mid-term stream (the largest activation):
 * windows × heads × (T_recent targets × code levels) queries × (T_mid − T_recent) keys, float32.
 */
export function denseAttentionMapBytes(mc: DenseMapShape, windows: number): number {
  return windows * mc.heads * mc.tRecent * mc.sizes.length * (mc.tMid - mc.tRecent) * 4;
}

/**
 * Largest dense-step attention map the default batch allows. Measured on the generated set (T_recent 256, T_mid 1024,
 * 4 code levels, 2 heads: 6 MB a window): 8 windows (48 MB maps) trained with a ~2.7 GB process; 32 (192 MB)
 * overflowed the wasm heap's 4 GB.
 */
export const DENSE_ATTENTION_MAP_BUDGET = 48 * 2 ** 20;

/** The default dense batch for a model: `wanted` windows, fewer when their attention maps would exceed the budget. */
export function defaultDenseBatch(mc: DenseMapShape, wanted: number): number {
  return Math.max(1, Math.min(wanted, Math.floor(DENSE_ATTENTION_MAP_BUDGET / denseAttentionMapBytes(mc, 1))));
}

/**
 * A training step that overflows the wasm heap (at most 4 GB) fails deep inside a kernel, as "memory access out of
 * bounds" or an abort: name the step and what to change. Other errors pass through unchanged.
 */
export function explainStepFailure(e: unknown, step: string, mapBytes: number, backend = tf.getBackend()): unknown {
  const msg = e instanceof Error ? e.message : String(e);
  if (backend !== 'wasm' || !/memory access out of bounds|Aborted\(|out of memory|Cannot enlarge memory/i.test(msg)) return e;
  const maps = mapBytes > 0 ? `; each decoder cross-attention map of this step takes ${(mapBytes / 2 ** 20).toFixed(0)} MB` : '';
  return new Error(`${step}: the wasm backend's heap (at most 4 GB) overflowed (${msg})${maps}. Lower --batch, or T_recent / T_mid; the checkpoints of finished epochs are kept (--resume)`, { cause: e });
}

/** A stage-2/3 epoch's cost in stage-1 epochs, with a margin (measured 1.42 / 1.65 on ML-1M: the indexer's KL and top-k). */
export const LATER_STAGE_EPOCH_COST = 1.8;

/**
 * With a time budget, whether a stage should end now (though it could go on) so that the later stages still fit:
 * true when one more epoch of it (`epochMin`, the last one's duration) plus `laterEpochs` epochs of the later stages
 * at LATER_STAGE_EPOCH_COST times that would overrun `maxMinutes`. So a budget-bound run trains all three stages
 * instead of spending the budget in stage 1.
 */
export function stageYieldsToLater(elapsedMin: number, epochMin: number, laterEpochs: number, maxMinutes: number): boolean {
  if (laterEpochs <= 0) return false;
  return elapsedMin + epochMin + laterEpochs * epochMin * LATER_STAGE_EPOCH_COST > maxMinutes;
}

/**
 * The dense-training objective options (GemsTrainConfig keys, passed on to denseBatchFromWindows under the same
 * names) with their off values: plain next-event training. A checkpoint records them; a resume must keep them.
 */
const OBJECTIVE_OFF = { longRangeWeight: 1, returnShare: 0, newItems: false, interestTargets: false, returnNewItems: false, returnShareOfRows: false };
type Objective = typeof OBJECTIVE_OFF;

/** What a checkpoint's meta.train means when it lacks a key: the choice before the key existed. */
const OLDER_CHECKPOINT_TRAIN_META: Record<string, unknown> = { lifecycleSource: 'chunk-mean', ...OBJECTIVE_OFF };

export interface TrainState {
  stage: 1 | 2 | 3;
  epochInStage: number;
  totalEpochs: number;
  best: number;
  bad: number;
  done: boolean;
  history: { stage: number; epoch: number; loss: number; nll: number; kl: number; validNll: number; validKl: number; seconds: number; samplesPerS: number }[];
}

/** tc.adam with the decay steps of tc.lrDecayTo: stage 1's max epochs × the steps of one epoch. */
function withDecay(tc: GemsTrainConfig, histories: History[], sid: SemanticIds, tRecent: number, testStart?: Int32Array): AdamConfig {
  if (!tc.lrDecayTo || tc.lrDecayTo <= 0 || tc.lrDecayTo >= 1) return tc.adam;
  const perEpoch = tc.dense
    ? trainingWindows(histories, { perUser: tc.windowsPerUser, tRecent, heldOut: tc.heldOut, minInput: tc.minInput, seed: tc.seed, testStart }).length
    : trainingSamples(histories, sid, { perUser: tc.targetsPerUser, heldOut: tc.heldOut, minInput: tc.minInput, seed: tc.seed, testStart }).length;
  return { ...tc.adam, decaySteps: tc.stages[0].maxEpochs * Math.ceil(perEpoch / tc.batchSize), decayTo: tc.lrDecayTo };
}

export function stageOptions(model: GemsModel, stage: 1 | 2 | 3, training: boolean): ForwardOptions {
  const ix = model.hasIndexer;
  return {
    training,
    indexerLoss: ix && stage >= 2,
    topK: ix && stage === 3 ? model.cfg.indexer.topK : 0,
  };
}

/** Mean NLL and KL over samples (no dropout). */
export function validate(model: GemsModel, ctx: SampleContext, histories: History[], samples: Sample[], opts: ForwardOptions, batchSize: number): { nll: number; kl: number } {
  let nll = 0;
  let kl = 0;
  let n = 0;
  for (let i = 0; i < samples.length; i += batchSize) {
    const part = samples.slice(i, i + batchSize);
    const { batch, targetCodes } = batchFromSamples(ctx, histories, part);
    tf.tidy(() => {
      const r = model.loss(batch, targetCodes, { ...opts, training: false, indexerLoss: model.hasIndexer });
      nll += r.nll.dataSync()[0]! * part.length;
      kl += r.kl.dataSync()[0]! * part.length;
    });
    n += part.length;
  }
  return { nll: nll / Math.max(1, n), kl: kl / Math.max(1, n) };
}

export interface GemsTrainInput {
  histories: History[];
  sid: SemanticIds;
  summarizer: LifecycleSummarizer;
  modelConfig: GemsModelConfig;
  train: GemsTrainConfig;
  runDir: string;
  resume?: boolean;
  /** Extra arrays saved with the checkpoint (e.g. the summarizer's data). */
  arrays?: Record<string, Int32Array | Float32Array>;
  /**
   * Recorded in meta.train next to the training state (e.g. lifecycleSource + compressorVersion). A resume must
   * bring the same values: weights trained on one lifecycle summary do not continue on another.
   */
  trainMeta?: Record<string, unknown>;
  /** Per user, the first test-target position (generated set: the first truth target); default: the last event. */
  testStart?: Int32Array;
  /** Called after every epoch (tests observe the KL curve). */
  onEpoch?: (entry: TrainState['history'][number]) => void;
}

export interface GemsTrainResult {
  model: GemsModel;
  state: TrainState;
  bestDir: string;
  dataFingerprint: string;
}

export function dataFingerprintOf(histories: History[]): string {
  const lens = Int32Array.from(histories.map((h) => h.length));
  const users = Int32Array.from(histories.map((h) => h.userId));
  const parts: Int32Array[] = [lens, users];
  for (const h of histories) parts.push(h.itemId);
  return fingerprint(...parts);
}

export function sidArrays(sid: SemanticIds): Record<string, Int32Array | Float32Array> {
  const out: Record<string, Int32Array | Float32Array> = { sidItemIds: sid.itemIds, sidCodes: sid.codes, sidSizes: Int32Array.from(sid.sizes) };
  sid.centroids.forEach((c, i) => (out[`sidCentroids${i}`] = c));
  return out;
}

export async function trainGems(input: GemsTrainInput): Promise<GemsTrainResult> {
  const { histories, sid, summarizer, modelConfig: mc, train: tc, runDir } = input;
  const model = new GemsModel(mc, sid.trie);
  const ctx = makeSampleContext(mc, sid, summarizer);
  const opt = new Adam(model.params, withDecay(tc, histories, sid, mc.tRecent, input.testStart));
  const lastDir = join(runDir, 'last');
  const bestDir = join(runDir, 'best');
  cleanStaleTemps(lastDir);
  cleanStaleTemps(bestDir);
  const dataFp = dataFingerprintOf(histories);
  let state: TrainState = { stage: 1, epochInStage: 0, totalEpochs: 0, best: Infinity, bad: 0, done: false, history: [] };
  // The training objective is part of what a checkpoint is, like its lifecycle source: a resume must keep both.
  const objective = Object.fromEntries(Object.entries(OBJECTIVE_OFF).map(([k, off]) => [k, tc[k as keyof Objective] ?? off])) as Objective;
  const trainMeta = { ...(input.trainMeta ?? {}), ...objective };
  if (input.resume && isCheckpoint(lastDir)) {
    const ck = readCheckpoint(lastDir);
    if (ck.meta.dataFingerprint !== dataFp) throw new Error(`${lastDir}: trained on data ${ck.meta.dataFingerprint}, current data is ${dataFp}`);
    for (const [k, v] of Object.entries(trainMeta)) {
      // Older checkpoints do not name what was then the only choice.
      const had = ck.meta.train[k] ?? OLDER_CHECKPOINT_TRAIN_META[k];
      if (JSON.stringify(had) !== JSON.stringify(v)) throw new Error(`${lastDir}: trained with ${k} = ${JSON.stringify(had)}, this run has ${JSON.stringify(v)}: cannot resume`);
    }
    restoreInto(ck, model.params, opt);
    state = ck.meta.train as unknown as TrainState;
    log.info('resumed', { from: lastDir, stage: state.stage, epoch: state.epochInStage, step: opt.step });
    // A finished run whose last stage now has a larger epoch budget (and did not stop on patience) trains on: e.g.
    // a recent-only control given as many epochs as the three stages of the full model.
    const sc = tc.stages[state.stage - 1]!;
    if (state.done && state.epochInStage < sc.maxEpochs && state.bad < sc.patience) {
      state.done = false;
      log.info('extending a finished run', { stage: state.stage, epoch_in_stage: state.epochInStage, max_epochs: sc.maxEpochs });
    }
  }
  let validSamples = heldOutSamples(histories, 'valid', sid, input.testStart);
  if (tc.validUsers > 0 && validSamples.length > tc.validUsers) {
    const rng = new Rng(tc.seed ^ 0x51ed);
    rng.shuffle(validSamples);
    validSamples = validSamples.slice(0, tc.validUsers).sort((a, b) => a.user - b.user);
  }
  const arrays = { ...sidArrays(sid), ...(input.arrays ?? {}) };
  const save = (dir: string, withOpt: boolean) =>
    saveCheckpoint(dir, {
      kind: 'gems',
      modelConfig: mc,
      tokenizerVersion: String(sid.version),
      dataFingerprint: dataFp,
      train: { ...(state as unknown as Record<string, unknown>), ...trainMeta },
      params: model.params,
      optimizer: withOpt ? opt : undefined,
      arrays,
    });
  let bestSnapshot = model.params.serialize();
  const t0 = performance.now();
  // A stage without epochs is skipped (e.g. --epochs2 0 --epochs3 0 trains stage 1 only): the run ends after the last
  // stage that has epochs.
  let lastStage = model.hasIndexer ? 3 : 1;
  while (lastStage > 1 && tc.stages[lastStage - 1]!.maxEpochs <= 0) lastStage--;
  const dense = tc.dense && GemsModel.denseTrainable(mc);
  if (!dense && objective.longRangeWeight !== 1) throw new Error('long-range target weighting needs dense training (it weights the targets of a window)');
  if ((mc.returnIntent || objective.returnNewItems || objective.returnShareOfRows) && !(objective.returnShare > 0)) throw new Error('a return intent, new-item returns and a share of all rows need return targets (returnShare > 0)');
  if (!dense && (objective.returnShare > 0 || objective.newItems || objective.interestTargets)) throw new Error('return, new-item and interest targets need dense training (they replace targets of a window)');
  const longRangeLogged = objective.longRangeWeight !== 1 || objective.returnShare > 0;
  // Where each history's training events end (the windows' targets and return targets stay before it).
  const trainEnd = Int32Array.from(histories, (h, u) => trainingEnd(h, u, tc.heldOut, input.testStart));
  if (tc.dense && !dense) log.warn('dense training needs recentCausal, gapFrom prev and fusion ≠ shared: training one target per sample', { fusion: mc.fusion });
  log.info('training mode', { dense, batch: tc.batchSize, per_user: dense ? tc.windowsPerUser : tc.targetsPerUser });
  // The run is done after the last stage; otherwise the next stage starts afresh (its own best and patience).
  const endStage = (stage: number) => {
    if (stage >= lastStage) state.done = true;
    else {
      state.stage = (stage + 1) as 2 | 3;
      state.epochInStage = 0;
      state.best = Infinity;
      state.bad = 0;
      log.info('next stage', { stage: state.stage });
    }
  };
  // A finished run resumed with epochs for the stages it had skipped (stage 1 alone, then --epochs2 1 --epochs3 1)
  // goes on with them, as an unbroken run would have.
  if (state.done && state.stage < lastStage) {
    state.done = false;
    log.info('continuing a finished run with its later stages', { finished_stage: state.stage, last_stage: lastStage });
    endStage(state.stage);
  }
  while (!state.done) {
    const stage = state.stage;
    const sc = tc.stages[stage - 1]!;
    if (sc.maxEpochs <= 0) {
      endStage(stage);
      continue;
    }
    const fopts = stageOptions(model, stage, true);
    // Stage 1 does not train the indexer at all; later stages train everything (the indexer sees only the KL).
    const filter = stage === 1 ? (n: string) => !n.includes('.indexer.') : undefined;
    const epochSeed = tc.seed * 7919 + state.totalEpochs;
    const samples = dense
      ? trainingWindows(histories, { perUser: tc.windowsPerUser, tRecent: mc.tRecent, heldOut: tc.heldOut, minInput: tc.minInput, seed: epochSeed, testStart: input.testStart })
      : trainingSamples(histories, sid, { perUser: tc.targetsPerUser, heldOut: tc.heldOut, minInput: tc.minInput, seed: epochSeed, testStart: input.testStart });
    new Rng(tc.seed + state.totalEpochs).shuffle(samples);
    const steps = Math.ceil(samples.length / tc.batchSize);
    const prog = progress(log, `stage ${stage} epoch ${state.epochInStage + 1}`, steps, 'steps');
    const te = performance.now();
    let lossSum = 0;
    let nllSum = 0;
    let klSum = 0;
    let targets = 0;
    let longRange = 0;
    let returns = 0;
    for (let s = 0; s < steps; s++) {
      const part = samples.slice(s * tc.batchSize, (s + 1) * tc.batchSize);
      let nll = 0;
      let kl = 0;
      let loss: () => { total: tf.Scalar; nll: tf.Scalar; kl: tf.Scalar };
      if (dense) {
        const d = denseBatchFromWindows(ctx, histories, part, { ...objective, minInput: tc.minInput, trainEnd, seed: epochSeed });
        if (d.targets === 0) {
          prog.tick(1);
          continue; // every target of these windows lacks a Semantic ID
        }
        targets += d.targets;
        longRange += d.longRange;
        returns += d.returns;
        loss = () => model.denseLoss(d.batch, d.targetCodes, d.targetMask, fopts, d.targetWeight, mc.returnIntent ? d.returnRows : undefined);
      } else {
        const { batch, targetCodes } = batchFromSamples(ctx, histories, part);
        targets += part.length;
        loss = () => model.loss(batch, targetCodes, fopts);
      }
      let st: ReturnType<typeof opt.minimize>;
      try {
        st = opt.minimize(() => {
          const r = loss();
          nll = r.nll.dataSync()[0]!;
          kl = r.kl.dataSync()[0]!;
          return r.total;
        }, filter);
      } catch (e) {
        throw explainStepFailure(e, `stage ${stage} epoch ${state.epochInStage + 1} step ${s + 1}`, dense ? denseAttentionMapBytes(mc, part.length) : 0);
      }
      lossSum += st.loss;
      nllSum += nll;
      klSum += kl;
      prog.tick(1, { loss: Number(st.loss.toFixed(4)), kl: Number(kl.toFixed(4)) });
    }
    prog.done();
    const seconds = (performance.now() - te) / 1000;
    const v = validate(model, ctx, histories, validSamples, stageOptions(model, stage, false), tc.batchSize * 2);
    const entry = { stage, epoch: state.epochInStage + 1, loss: lossSum / steps, nll: nllSum / steps, kl: klSum / steps, validNll: v.nll, validKl: v.kl, seconds, samplesPerS: targets / seconds };
    state.history.push(entry);
    state.epochInStage++;
    state.totalEpochs++;
    input.onEpoch?.(entry);
    const metric = stage === 2 ? v.kl : v.nll;
    if (metric < state.best - 1e-5) {
      state.best = metric;
      state.bad = 0;
      bestSnapshot = model.params.serialize();
      save(bestDir, false);
    } else state.bad++;
    log.info('epoch done', { ...entry, best: state.best, bad: state.bad, ...(longRangeLogged ? { long_range_targets: longRange, return_targets: returns } : {}) });
    const elapsedMin = (performance.now() - t0) / 60000;
    const timeUp = tc.maxMinutes > 0 && elapsedMin > tc.maxMinutes;
    const epochMin = (performance.now() - te) / 60000;
    const laterEpochs = tc.stages.slice(stage, lastStage).reduce((a, s) => a + s.maxEpochs, 0);
    const yieldToLater = tc.maxMinutes > 0 && stageYieldsToLater(elapsedMin, epochMin, laterEpochs, tc.maxMinutes);
    if (yieldToLater && !(state.bad >= sc.patience || state.epochInStage >= sc.maxEpochs)) {
      log.info('stage ends to leave time for the later stages', { stage, epoch_in_stage: state.epochInStage, elapsed_min: Number(elapsedMin.toFixed(1)), later_epochs: laterEpochs });
    }
    if (state.bad >= sc.patience || state.epochInStage >= sc.maxEpochs || yieldToLater) {
      // Stage over: continue from its best weights.
      model.params.load(bestSnapshot.manifest, bestSnapshot.blob, 'best snapshot');
      endStage(stage);
    }
    save(lastDir, true);
    if (timeUp && !state.done) {
      // Not done: `--resume` continues this stage (or starts the next) from the last checkpoint.
      log.info('time budget reached', { minutes: tc.maxMinutes, stage: state.stage, epoch_in_stage: state.epochInStage });
      break;
    }
  }
  save(bestDir, false);
  opt.dispose();
  return { model, state, bestDir, dataFingerprint: dataFp };
}
