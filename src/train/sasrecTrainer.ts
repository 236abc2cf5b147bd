// Training of the SASRec calibration baseline on leave-one-out data: each epoch visits every user once with the
// last maxLen+1 items of the training part (no validation/test item is ever an input or a target), every position
// a target; Adam + warm-up + clipping; validation (filtered NDCG@10) after each epoch decides early stopping; the
// `last` checkpoint is written every epoch (resume after a kill) and `best` when validation improves.
import { join } from 'node:path';
import { tf } from '../compute/backend.js';
import { SasRec, type SasRecConfig } from '../model/sasrec.js';
import { evaluateLeaveOneOut, eligibleUsers, splitOf, type LooResult } from '../eval/leaveOneOut.js';
import type { UserSequences } from '../eval/sequences.js';
import { Rng } from '../util/random.js';
import { logger, progress } from '../util/log.js';
import { Adam, DEFAULT_ADAM, type AdamConfig } from './optim.js';
import { cleanStaleTemps, fingerprint, isCheckpoint, readCheckpoint, restoreInto, saveCheckpoint } from './checkpoint.js';

const log = logger('train.sasrec');

export interface SasRecTrainConfig {
  epochs: number;
  batchSize: number;
  patience: number;
  /** Stop after this many minutes (0 = no limit); the best checkpoint so far is kept. */
  maxMinutes: number;
  /** Validate every N epochs. */
  evalEvery: number;
  adam: AdamConfig;
  seed: number;
}

export const DEFAULT_SASREC_TRAIN: SasRecTrainConfig = {
  epochs: 200,
  batchSize: 64,
  patience: 5,
  maxMinutes: 0,
  evalEvery: 1,
  adam: { ...DEFAULT_ADAM, lr: 1e-3, beta2: 0.98, warmupSteps: 50, clipNorm: 5 },
  seed: 42,
};

/** Left-padded window of the last L items of `input` (B rows written into `out` at row b). */
export function leftPad(input: ArrayLike<number>, L: number, out: Int32Array, row: number): void {
  const n = Math.min(L, input.length);
  const start = input.length - n;
  for (let i = 0; i < n; i++) out[row * L + (L - n) + i] = input[start + i]!;
}

export function sasrecScorer(model: SasRec) {
  return (inputs: Int32Array[]): Float32Array[] => {
    const L = model.cfg.maxLen;
    const seqs = new Int32Array(inputs.length * L);
    inputs.forEach((inp, b) => leftPad(inp, L, seqs, b));
    const flat = model.scoreLast(seqs, inputs.length);
    const V = model.cfg.numItems + 1;
    return inputs.map((_, b) => flat.subarray(b * V, (b + 1) * V));
  };
}

export interface SasRecRunResult {
  bestEpoch: number;
  epochsRun: number;
  valid: LooResult | null;
  history: { epoch: number; loss: number; seconds: number; validNdcg10?: number; validHr10?: number }[];
  checkpointDir: string;
}

export async function trainSasRec(
  seqs: UserSequences,
  modelCfg: SasRecConfig,
  tc: SasRecTrainConfig,
  runDir: string,
  opts: { resume?: boolean; validUsers?: Int32Array } = {},
): Promise<SasRecRunResult> {
  const model = new SasRec(modelCfg);
  const opt = new Adam(model.params, tc.adam);
  const lastDir = join(runDir, 'last');
  const bestDir = join(runDir, 'best');
  cleanStaleTemps(lastDir);
  cleanStaleTemps(bestDir);
  const dataFp = fingerprint(seqs.offsets, seqs.items);
  let state = { epoch: 0, bestEpoch: -1, bestScore: -Infinity, badEpochs: 0, history: [] as SasRecRunResult['history'] };
  if (opts.resume && isCheckpoint(lastDir)) {
    const ck = readCheckpoint(lastDir);
    if (ck.meta.dataFingerprint !== dataFp) throw new Error(`${lastDir}: trained on data ${ck.meta.dataFingerprint}, current data is ${dataFp}`);
    restoreInto(ck, model.params, opt);
    state = ck.meta.train as typeof state;
    log.info('resumed', { from: lastDir, epoch: state.epoch, step: opt.step });
  }
  const users = eligibleUsers(seqs);
  const L = modelCfg.maxLen;
  const t0 = performance.now();
  const save = (dir: string, withOpt: boolean) =>
    saveCheckpoint(dir, {
      kind: 'sasrec',
      modelConfig: modelCfg,
      tokenizerVersion: null,
      dataFingerprint: dataFp,
      train: state,
      params: model.params,
      optimizer: withOpt ? opt : undefined,
      arrays: { indexToItemId: seqs.indexToItemId },
    });
  let lastValid: LooResult | null = null;
  while (state.epoch < tc.epochs) {
    const epoch = state.epoch;
    const rng = new Rng(tc.seed).fork(epoch);
    const order = Int32Array.from(users);
    rng.shuffle(order);
    const steps = Math.ceil(order.length / tc.batchSize);
    const prog = progress(log, `epoch ${epoch + 1}`, steps, 'steps');
    const te = performance.now();
    let lossSum = 0;
    for (let s = 0; s < steps; s++) {
      const batch = order.subarray(s * tc.batchSize, Math.min(order.length, (s + 1) * tc.batchSize));
      const B = batch.length;
      const inp = new Int32Array(B * L);
      const tgt = new Int32Array(B * L);
      batch.forEach((u, b) => {
        const train = splitOf(seqs, u, 'train').input;
        const w = train.subarray(Math.max(0, train.length - L - 1));
        leftPad(w.subarray(0, w.length - 1), L, inp, b);
        leftPad(w.subarray(1), L, tgt, b);
      });
      const st = opt.minimize(() => model.loss(inp, tgt, B));
      lossSum += st.loss;
      prog.tick(1, { loss: Number(st.loss.toFixed(4)) });
    }
    prog.done();
    state.epoch = epoch + 1;
    const entry: SasRecRunResult['history'][number] = { epoch: epoch + 1, loss: lossSum / steps, seconds: (performance.now() - te) / 1000 };
    const timeUp = tc.maxMinutes > 0 && (performance.now() - t0) / 60000 > tc.maxMinutes;
    if ((epoch + 1) % tc.evalEvery === 0 || timeUp || state.epoch >= tc.epochs) {
      lastValid = await evaluateLeaveOneOut(seqs, sasrecScorer(model), { split: 'valid', users: opts.validUsers, quiet: true });
      entry.validNdcg10 = lastValid.filtered['NDCG@10'];
      entry.validHr10 = lastValid.filtered['HR@10'];
      if (entry.validNdcg10! > state.bestScore) {
        state.bestScore = entry.validNdcg10!;
        state.bestEpoch = epoch + 1;
        state.badEpochs = 0;
        state.history.push(entry);
        save(bestDir, false);
      } else {
        state.badEpochs++;
        state.history.push(entry);
      }
    } else state.history.push(entry);
    save(lastDir, true);
    log.info('epoch done', { ...entry, best_epoch: state.bestEpoch, tensors: tf.memory().numTensors });
    if (state.badEpochs >= tc.patience) {
      log.info('early stop', { epoch: state.epoch, best_epoch: state.bestEpoch });
      break;
    }
    if (timeUp) {
      log.info('time budget reached', { minutes: tc.maxMinutes, epoch: state.epoch });
      break;
    }
  }
  model.params.dispose();
  opt.dispose();
  return { bestEpoch: state.bestEpoch, epochsRun: state.epoch, valid: lastValid, history: state.history, checkpointDir: bestDir };
}

export function loadSasRec(dir: string): { model: SasRec; indexToItemId: Int32Array; meta: ReturnType<typeof readCheckpoint>['meta'] } {
  const ck = readCheckpoint(dir);
  if (ck.meta.kind !== 'sasrec') throw new Error(`${dir}: checkpoint of a '${ck.meta.kind}' model, expected sasrec`);
  const model = new SasRec(ck.meta.modelConfig as unknown as SasRecConfig);
  restoreInto(ck, model.params);
  return { model, indexToItemId: ck.arrays['indexToItemId'] as Int32Array, meta: ck.meta };
}
