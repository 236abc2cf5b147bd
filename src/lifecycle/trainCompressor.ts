// Offline training of the lifecycle compressor (DESIGN §2 "two-stage compression") with a reconstruction loss: a
// small decoder must regenerate the items of a user's lifecycle from the M memory vectors alone.
//
// Decoder: a mixture of softmaxes over the item catalogue, one component per memory slot (slot m proposes items by
// (mem_m·Wd)·e_item, a learned gate weighs the slots), so the slots can specialise on different interests. Training
// uses a sampled softmax (the batch's target items + uniform negatives); evaluation scores the full catalogue.
// Training reads a random subset of each user's lifecycle events and scales the sums by N/L, an unbiased estimate of
// the full state (QLA is a sum over events), so it costs the same for 1,000- and 100,000-event histories.
//
// Baseline: the same decoder fed by the mean item embedding of the history through an MLP (one softmax). Reported
// side by side: per-event NLL over the full catalogue and recall@K (share of lifecycle events whose item is in the
// top K). Embedding gradients use tf.customGrad + scatterND (wasm has no gather gradient, DESIGN §6).
import { initCompute, tf, variableFrom } from '../compute/backend.js';
import type { GemsConfig } from '../config/config.js';
import { cutStreams, type History } from '../data/events.js';
import type { HistoryStore } from '../data/historyStore.js';
import { progress, type Logger } from '../util/log.js';
import { hash32, Rng } from '../util/random.js';
import { Compressor, initCompressorWeights, type CompressorWeights } from './compressor.js';
import { authorBucket, denseFeatures, DENSE_FEATURES, ItemVocab, MAX_TAGS, tagBucket } from './eventEncoder.js';
import { phiTensor } from './qla.js';

export interface TrainCompressorOptions {
  steps: number;
  /** Users per step. */
  batchUsers: number;
  /** Lifecycle events read per user per step (L). */
  eventsPerUser: number;
  /** Items to reconstruct per user per step. */
  targetsPerUser: number;
  /** Uniform negative items per step (sampled softmax). */
  negatives: number;
  learningRate: number;
  /** Share of users held out for evaluation (by hash of user id). */
  evalFraction: number;
  /** At most this many held-out users are evaluated (full lifecycle, full catalogue). */
  evalUsers: number;
  /** Lifecycle events kept per training user (reservoir sample, bounds memory). */
  reservoir: number;
  recallK: number;
  seed: number;
}

export const DEFAULT_TRAIN_OPTIONS: TrainCompressorOptions = {
  steps: 300,
  batchUsers: 8,
  eventsPerUser: 256,
  targetsPerUser: 64,
  negatives: 1024,
  learningRate: 3e-3,
  evalFraction: 0.1,
  evalUsers: 32,
  reservoir: 4096,
  recallK: 100,
  seed: 42,
};

export interface ReconstructionMetrics {
  users: number;
  events: number;
  nll: number;
  recallAtK: number;
}

export interface TrainCompressorReport {
  steps: number;
  seed: number;
  /**
   * Compute path (e.g. 'wasm+native'). Same data + seed + path → the same weights and version; another path (other
   * matMul kernels) rounds differently, so its weights and version differ slightly.
   */
  compute: string;
  trainUsers: number;
  evalUserIds: number[];
  items: number;
  finalLoss: { compressor: number; baseline: number };
  lossCurve: { step: number; compressor: number; baseline: number }[];
  /** `popularity`: item frequencies of the training users (add-one smoothed), the same for every user. */
  eval: { compressor: ReconstructionMetrics; baseline: ReconstructionMetrics; popularity: ReconstructionMetrics; uniformNll: number; k: number };
  seconds: number;
}

/** A user's lifecycle events kept for training: a uniform sample (columns) and the true lifecycle length. */
interface Sample {
  userId: number;
  total: number;
  h: History;
}

function pickRows(h: History, rows: number[]): History {
  const n = rows.length;
  const tagOffsets = new Int32Array(n + 1);
  const tags: number[] = [];
  for (let i = 0; i < n; i++) {
    const r = rows[i]!;
    const t1 = Math.min(h.tagOffsets[r + 1]!, h.tagOffsets[r]! + MAX_TAGS);
    for (let t = h.tagOffsets[r]!; t < t1; t++) tags.push(h.tagIds[t]!);
    tagOffsets[i + 1] = tags.length;
  }
  const col = <T extends { length: number; [i: number]: number }>(src: T, make: new (n: number) => T): T => {
    const a = new make(n);
    for (let i = 0; i < n; i++) a[i] = src[rows[i]!]!;
    return a;
  };
  return {
    userId: h.userId,
    length: n,
    itemId: col(h.itemId, Int32Array),
    ts: col(h.ts, Float64Array),
    seq: col(h.seq, Int32Array),
    authorId: col(h.authorId, Int32Array),
    tagOffsets,
    tagIds: Int32Array.from(tags),
    playMs: col(h.playMs, Float32Array),
    durationMs: col(h.durationMs, Float32Array),
    labels: col(h.labels, Uint8Array),
  };
}

/** Embedding bag Σ_t w[n,t]·table[idx[n,t]] with a scatterND gradient (wasm lacks gather's gradient). */
function embeddingBag(table: tf.Variable, idx: tf.Tensor1D, w: tf.Tensor2D, n: number, t: number): tf.Tensor2D {
  const dim = table.shape[1]!;
  const f = tf.customGrad(((tab: tf.Tensor) => {
    const value = tf.gather(tab, idx).reshape([n, t, dim]).mul(w.expandDims(2)).sum(1);
    return {
      value,
      gradFunc: (dy: tf.Tensor) => [tf.scatterND(idx.expandDims(1), dy.expandDims(1).mul(w.expandDims(2)).reshape([n * t, dim]), tab.shape)],
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return f(table) as tf.Tensor2D;
}

/**
 * log Σ exp along an axis, written with differentiable primitives (tf.logSumExp's gradient is slow on wasm). The
 * max shift's gradient cancels exactly (−1 from the exp term, +1 from the added max).
 */
function logSumExp(x: tf.Tensor, axis: number): tf.Tensor {
  const mx = tf.max(x, axis, true);
  return tf.log(tf.sum(tf.exp(x.sub(mx)), axis)).add(mx.squeeze([axis]));
}

function layerNorm(y: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor): tf.Tensor {
  const { mean, variance } = tf.moments(y, -1, true);
  return y.sub(mean).div(tf.sqrt(variance.add(1e-5))).mul(gamma).add(beta);
}

// Variable names only need to be unique in the process; a counter (not Math.random) keeps runs reproducible.
let paramSerial = 0;

class Params {
  readonly v: Record<string, tf.Variable> = {};
  add(name: string, data: Float32Array, shape: number[]): tf.Variable {
    this.v[name] = variableFrom(data, shape, true, `cmp_${name}_${++paramSerial}`);
    return this.v[name]!;
  }
  list(): tf.Variable[] {
    return Object.values(this.v);
  }
  dispose(): void {
    for (const x of this.list()) x.dispose();
  }
}

function normalInit(rng: Rng, n: number, std: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal() * std;
  return a;
}

/** Streams the store once: item vocabulary, per-user reservoirs, held-out users. */
async function collect(config: GemsConfig, store: HistoryStore, o: TrainCompressorOptions, log: Logger) {
  const items = await store.items();
  const ids = new Set<number>(Array.from(items.itemId));
  const train: Sample[] = [];
  const evalCandidates: number[] = [];
  const userCount = (await store.userIds()).length;
  const bar = progress(log, 'read histories', userCount, 'users');
  for await (const h of store.scanHistories()) {
    for (let i = 0; i < h.length; i++) ids.add(h.itemId[i]!);
    const life = cutStreams(h, config.streams.tRecent, config.streams.tMid).lifecycle;
    bar.tick();
    if (life.length < 8) continue;
    if ((hash32(h.userId ^ 0x3e7a) % 10_000) / 10_000 < o.evalFraction) {
      evalCandidates.push(h.userId);
      continue;
    }
    const k = Math.min(o.reservoir, life.length);
    const rows: number[] = [];
    // A generator per user (seed, user id): the sample does not depend on the order the store yields users in.
    const rng = new Rng(hash32(h.userId ^ hash32(o.seed ^ 0x7a11)));
    if (k === life.length) for (let i = 0; i < k; i++) rows.push(i);
    else {
      const chosen = new Set<number>();
      while (chosen.size < k) chosen.add(rng.int(life.length));
      rows.push(...Array.from(chosen).sort((a, b) => a - b));
    }
    train.push({ userId: h.userId, total: life.length, h: pickRows(life, rows) });
  }
  // Order-independent selection: the training list by user id, the held-out users the smallest ids.
  train.sort((a, b) => a.userId - b.userId);
  const evalIds = evalCandidates.sort((a, b) => a - b).slice(0, o.evalUsers);
  bar.done({ train_users: train.length, eval_users: evalIds.length });
  return { itemIds: Int32Array.from(Array.from(ids).sort((a, b) => a - b)), train, evalIds };
}

export async function trainCompressor(
  config: GemsConfig,
  store: HistoryStore,
  log: Logger,
  opts: Partial<TrainCompressorOptions> = {},
): Promise<{ weights: CompressorWeights; report: TrainCompressorReport }> {
  const o = { ...DEFAULT_TRAIN_OPTIONS, ...opts };
  const t0 = performance.now();
  const { itemIds, train, evalIds } = await collect(config, store, o, log);
  if (train.length === 0) throw new Error(`train-compressor: no user has a lifecycle segment (history longer than streams.tMid = ${config.streams.tMid} + 8)`);
  const init = initCompressorWeights(config, itemIds, o.seed);
  const enc = init.encoder;
  const s = enc.shape;
  const q = init.qla;
  const vocab = new ItemVocab(itemIds);
  const V = itemIds.length + 1;
  const d = q.dim;
  const M = q.slots;
  const rng = new Rng(o.seed);

  // Log item frequencies of the training users (add-one smoothed): the popularity reference, and the initial
  // per-item logit bias of both decoders (so the memory only has to carry what is personal).
  const popularity = new Float32Array(V);
  {
    const counts = new Float64Array(V).fill(1);
    counts[0] = 0;
    let total = V - 1;
    for (const u of train) {
      for (let i = 0; i < u.h.length; i++) counts[vocab.row(u.h.itemId[i]!)]! += 1;
      total += u.h.length;
    }
    popularity[0] = -Infinity;
    for (let r = 1; r < V; r++) popularity[r] = Math.log(counts[r]! / total);
  }
  const popBias = Float32Array.from(popularity, (x) => (Number.isFinite(x) ? x : -30));

  const P = new Params();
  const itemEmb = P.add('itemEmb', enc.itemEmb, [V, s.itemDim]);
  const authorEmb = P.add('authorEmb', enc.authorEmb, [s.authorBuckets, s.authorDim]);
  const tagEmb = P.add('tagEmb', enc.tagEmb, [s.tagBuckets, s.tagDim]);
  const w1 = P.add('w1', enc.w1, [s.itemDim + s.authorDim + s.tagDim + DENSE_FEATURES, s.hidden]);
  const b1 = P.add('b1', enc.b1, [s.hidden]);
  const wkv = P.add('wkv', enc.wkv, [s.hidden, s.keyDim + s.valueDim]);
  const bkv = P.add('bkv', enc.bkv, [s.keyDim + s.valueDim]);
  const seeds = P.add('seeds', q.seeds, [M, q.keyDim]);
  const sinkKey = P.add('sinkKey', q.sinkKey, [q.keyDim]);
  const sinkValue = P.add('sinkValue', q.sinkValue, [q.valueDim]);
  const wo = P.add('wo', q.wo, [q.valueDim, d]);
  const bo = P.add('bo', q.bo, [d]);
  const slotEmb = P.add('slotEmb', q.slotEmb, [M, d]);
  const lnGamma = P.add('lnGamma', q.lnGamma, [d]);
  const lnBeta = P.add('lnBeta', q.lnBeta, [d]);
  // Decoder (training only).
  const wd = P.add('wd', normalInit(rng, d * d, Math.sqrt(1 / d)), [d, d]);
  const wgate = P.add('wgate', normalInit(rng, d, 0.01), [d, 1]);
  const itemOut = P.add('itemOut', normalInit(rng, V * d, 0.05), [V, d]);
  const itemBias = P.add('itemBias', popBias, [V, 1]);
  const compressorVars = P.list();
  // Baseline: mean item embedding → MLP → one softmax.
  const B = new Params();
  const bItem = B.add('item', normalInit(rng, V * s.itemDim, 0.1), [V, s.itemDim]);
  const bw1 = B.add('w1', normalInit(rng, s.itemDim * d, Math.sqrt(2 / s.itemDim)), [s.itemDim, d]);
  const bb1 = B.add('b1', new Float32Array(d), [d]);
  const bw2 = B.add('w2', normalInit(rng, d * d, Math.sqrt(1 / d)), [d, d]);
  const bOut = B.add('out', normalInit(rng, V * d, 0.05), [V, d]);
  const bBias = B.add('bias', popBias, [V, 1]);

  /** Memory vectors (b·M × d) of a batch of event feature inputs. */
  const memoryOf = (inp: BatchInputs): tf.Tensor2D => {
    const n = inp.n;
    const L = o.eventsPerUser;
    const bsz = n / L;
    const x = tf.concat(
      [
        embeddingBag(itemEmb, inp.itemIdx, inp.ones, n, 1),
        embeddingBag(authorEmb, inp.authorIdx, inp.ones, n, 1),
        embeddingBag(tagEmb, inp.tagIdx, inp.tagW, n, MAX_TAGS),
        inp.dense,
      ],
      1,
    );
    const h = tf.relu(tf.matMul(x, w1).add(b1));
    const kv = tf.matMul(h, wkv).add(bkv);
    const pk = phiTensor(kv.slice([0, 0], [n, s.keyDim])).reshape([bsz, L, s.keyDim]).mul(inp.scale);
    const v = kv.slice([0, s.keyDim], [n, s.valueDim]).reshape([bsz, L, s.valueDim]);
    const S = tf.matMul(pk, v, true, false); // bsz × dk × dv
    const z = tf.sum(pk, 1); // bsz × dk
    const pq = phiTensor(seeds) as tf.Tensor2D; // M × dk
    const sinkW = tf.matMul(pq, phiTensor(sinkKey).reshape([q.keyDim, 1])); // M × 1
    const num = tf
      .matMul(pq, S.transpose([1, 0, 2]).reshape([q.keyDim, bsz * q.valueDim]))
      .reshape([M, bsz, q.valueDim])
      .transpose([1, 0, 2])
      .add(sinkW.mul(sinkValue.reshape([1, q.valueDim])));
    const den = tf.matMul(z, pq, false, true).add(sinkW.reshape([1, M])); // bsz × M
    const O = num.div(den.expandDims(2)).reshape([bsz * M, q.valueDim]);
    const y = tf.matMul(O, wo).add(bo).reshape([bsz, M, d]).add(slotEmb);
    return layerNorm(y, lnGamma, lnBeta).reshape([bsz * M, d]) as tf.Tensor2D;
  };

  /** log p(candidate) (bsz × C) under the slot mixture. */
  const mixtureLogProb = (mem: tf.Tensor2D, candOut: tf.Tensor2D, candBias: tf.Tensor2D, bsz: number): tf.Tensor2D => {
    const C = candOut.shape[0];
    const logits = tf.matMul(tf.matMul(mem, wd), candOut.transpose()).add(candBias.reshape([1, C])); // bsz·M × C
    const logp = tf.logSoftmax(logits).reshape([bsz, M, C]);
    const gate = tf.logSoftmax(tf.matMul(mem, wgate).reshape([bsz, M])).expandDims(2);
    return logSumExp(logp.add(gate), 1) as tf.Tensor2D;
  };

  const baselineLogProb = (meanEmb: tf.Tensor2D, candOut: tf.Tensor2D, candBias: tf.Tensor2D): tf.Tensor2D => {
    const u = tf.matMul(tf.relu(tf.matMul(meanEmb, bw1).add(bb1)), bw2);
    return tf.logSoftmax(tf.matMul(u, candOut.transpose()).add(candBias.reshape([1, candOut.shape[0]]))) as tf.Tensor2D;
  };

  const optC = tf.train.adam(o.learningRate);
  const optB = tf.train.adam(o.learningRate);
  const lossCurve: TrainCompressorReport['lossCurve'] = [];
  let emaC = NaN;
  let emaB = NaN;
  const bar = progress(log, 'train compressor', o.steps, 'steps');
  for (let step = 1; step <= o.steps; step++) {
    const batch: Sample[] = [];
    for (let b = 0; b < Math.min(o.batchUsers, train.length); b++) batch.push(train[rng.int(train.length)]!);
    const inp = buildInputs(batch, o, enc.shape, vocab, rng);
    const lc = optC.minimize(() => {
      const mem = memoryOf(inp);
      const candOut = embeddingBag(itemOut, inp.candIdx, inp.candOnes, inp.candCount, 1);
      const candBias = embeddingBag(itemBias, inp.candIdx, inp.candOnes, inp.candCount, 1);
      return tf.neg(tf.sum(mixtureLogProb(mem, candOut, candBias, batch.length).mul(inp.targetMask))).div(inp.targetTotal) as tf.Scalar;
    }, true, compressorVars)!;
    const lb = optB.minimize(() => {
      const e = embeddingBag(bItem, inp.itemIdx, inp.meanW, batch.length, o.eventsPerUser);
      const candOut = embeddingBag(bOut, inp.candIdx, inp.candOnes, inp.candCount, 1);
      const candBias = embeddingBag(bBias, inp.candIdx, inp.candOnes, inp.candCount, 1);
      return tf.neg(tf.sum(baselineLogProb(e, candOut, candBias).mul(inp.targetMask))).div(inp.targetTotal) as tf.Scalar;
    }, true, B.list())!;
    const [c, b] = [lc.dataSync()[0]!, lb.dataSync()[0]!];
    lc.dispose();
    lb.dispose();
    inp.dispose();
    emaC = Number.isNaN(emaC) ? c : 0.9 * emaC + 0.1 * c;
    emaB = Number.isNaN(emaB) ? b : 0.9 * emaB + 0.1 * b;
    if (!Number.isFinite(c) || !Number.isFinite(b)) throw new Error(`train-compressor: loss diverged at step ${step} (compressor ${c}, baseline ${b}); lower --lr`);
    if (step % 10 === 0 || step === o.steps) lossCurve.push({ step, compressor: round4(emaC), baseline: round4(emaB) });
    bar.tick(1, { loss: round4(emaC), baseline_loss: round4(emaB) });
  }
  bar.done({ loss: round4(emaC), baseline_loss: round4(emaB) });

  // Trained weights back into the inference format.
  const arr = (x: tf.Variable) => x.dataSync() as Float32Array;
  const weights: CompressorWeights = {
    encoder: { ...enc, itemEmb: arr(itemEmb), authorEmb: arr(authorEmb), tagEmb: arr(tagEmb), w1: arr(w1), b1: arr(b1), wkv: arr(wkv), bkv: arr(bkv) },
    qla: {
      ...q,
      seeds: arr(seeds),
      sinkKey: arr(sinkKey),
      sinkValue: arr(sinkValue),
      wo: arr(wo),
      bo: arr(bo),
      slotEmb: arr(slotEmb),
      lnGamma: arr(lnGamma),
      lnBeta: arr(lnBeta),
    },
  };

  // Evaluation on held-out users: full lifecycle through the real inference path, full catalogue.
  const compressor = new Compressor(weights, config.lifecycle.chunkSize);
  const evalC: ReconstructionMetrics = { users: 0, events: 0, nll: 0, recallAtK: 0 };
  const evalB: ReconstructionMetrics = { users: 0, events: 0, nll: 0, recallAtK: 0 };
  const evalP: ReconstructionMetrics = { users: 0, events: 0, nll: 0, recallAtK: 0 };

  const allOut = tf.tensor2d(arr(itemOut), [V, d]);
  const allBOut = tf.tensor2d(arr(bOut), [V, d]);
  const allBias = tf.tensor2d(arr(itemBias), [V, 1]);
  const allBBias = tf.tensor2d(arr(bBias), [V, 1]);
  const bItemArr = arr(bItem);
  for (const uid of evalIds) {
    const h = await store.userHistory(uid);
    const life = cutStreams(h, config.streams.tRecent, config.streams.tMid).lifecycle;
    const rows = new Int32Array(life.length);
    for (let i = 0; i < life.length; i++) rows[i] = vocab.row(life.itemId[i]!);
    const mem = compressor.compress(life).vectors;
    const mean = new Float32Array(s.itemDim);
    for (let i = 0; i < rows.length; i++) for (let c = 0; c < s.itemDim; c++) mean[c]! += bItemArr[rows[i]! * s.itemDim + c]! / rows.length;
    const [lpC, lpB] = tf.tidy(() => [
      mixtureLogProb(tf.tensor2d(mem, [M, d]), allOut, allBias, 1),
      baselineLogProb(tf.tensor2d(mean, [1, s.itemDim]), allBOut, allBBias),
    ]);
    for (const [lp, m] of [
      [lpC, evalC],
      [lpB, evalB],
      [null, evalP],
    ] as const) {
      const p = lp ? (lp.dataSync() as Float32Array) : popularity;
      lp?.dispose();
      const kth = kthLargest(p.subarray(1), o.recallK); // row 0 (unknown item) is never a target
      let nll = 0;
      let hits = 0;
      for (let i = 0; i < rows.length; i++) {
        nll -= p[rows[i]!]!;
        if (rows[i]! > 0 && p[rows[i]!]! >= kth) hits++;
      }
      m.users++;
      m.events += rows.length;
      m.nll += nll;
      m.recallAtK += hits;
    }
  }
  for (const t of [allOut, allBOut, allBias, allBBias]) t.dispose();
  compressor.dispose();
  for (const m of [evalC, evalB, evalP]) {
    m.nll = round4(m.nll / Math.max(1, m.events));
    m.recallAtK = round4(m.recallAtK / Math.max(1, m.events));
  }
  P.dispose();
  B.dispose();
  optC.dispose();
  optB.dispose();
  const report: TrainCompressorReport = {
    steps: o.steps,
    seed: o.seed,
    compute: (await initCompute()).path,
    trainUsers: train.length,
    evalUserIds: evalIds,
    items: itemIds.length,
    finalLoss: { compressor: round4(emaC), baseline: round4(emaB) },
    lossCurve,
    eval: { compressor: evalC, baseline: evalB, popularity: evalP, uniformNll: round4(Math.log(itemIds.length)), k: o.recallK },
    seconds: round4((performance.now() - t0) / 1000),
  };
  log.info('compressor trained', { final_loss: report.finalLoss, eval: report.eval });
  return { weights, report };
}

const round4 = (x: number) => Number(x.toFixed(4));

function kthLargest(a: Float32Array, k: number): number {
  if (a.length === 0) return Infinity;
  const s = Float32Array.from(a).sort();
  return s[Math.max(0, s.length - Math.min(k, s.length))]!;
}

interface BatchInputs {
  n: number;
  itemIdx: tf.Tensor1D;
  authorIdx: tf.Tensor1D;
  tagIdx: tf.Tensor1D;
  tagW: tf.Tensor2D;
  ones: tf.Tensor2D;
  meanW: tf.Tensor2D;
  dense: tf.Tensor2D;
  scale: tf.Tensor3D;
  candIdx: tf.Tensor1D;
  candOnes: tf.Tensor2D;
  candCount: number;
  targetMask: tf.Tensor2D;
  targetTotal: tf.Scalar;
  dispose(): void;
}

/** Samples L events (encoder input) and T targets per user, and the candidate set (targets ∪ uniform negatives). */
function buildInputs(
  batch: Sample[],
  o: TrainCompressorOptions,
  shape: { authorBuckets: number; tagBuckets: number },
  vocab: ItemVocab,
  rng: Rng,
): BatchInputs {
  const L = o.eventsPerUser;
  const n = batch.length * L;
  const itemIdx = new Int32Array(n);
  const authorIdx = new Int32Array(n);
  const tagIdx = new Int32Array(n * MAX_TAGS);
  const tagW = new Float32Array(n * MAX_TAGS);
  const dense = new Float32Array(n * DENSE_FEATURES);
  const scale = new Float32Array(batch.length);
  const cand = new Map<number, number>();
  const targets: number[][] = [];
  batch.forEach((u, b) => {
    scale[b] = u.total / L;
    for (let j = 0; j < L; j++) {
      const r = rng.int(u.h.length);
      const i = b * L + j;
      itemIdx[i] = vocab.row(u.h.itemId[r]!);
      authorIdx[i] = authorBucket(u.h.authorId[r]!, shape.authorBuckets);
      const t0 = u.h.tagOffsets[r]!;
      const t1 = Math.min(u.h.tagOffsets[r + 1]!, t0 + MAX_TAGS);
      for (let t = t0; t < t1; t++) {
        tagIdx[i * MAX_TAGS + t - t0] = tagBucket(u.h.tagIds[t]!, shape.tagBuckets);
        tagW[i * MAX_TAGS + t - t0] = 1 / (t1 - t0);
      }
      denseFeatures(u.h, r, t1 - t0, dense, i * DENSE_FEATURES);
    }
    const tg: number[] = [];
    for (let j = 0; j < o.targetsPerUser; j++) {
      const row = vocab.row(u.h.itemId[rng.int(u.h.length)]!);
      if (!cand.has(row)) cand.set(row, cand.size);
      tg.push(cand.get(row)!);
    }
    targets.push(tg);
  });
  for (let j = 0; j < o.negatives; j++) {
    const row = 1 + rng.int(vocab.size);
    if (!cand.has(row)) cand.set(row, cand.size);
  }
  const C = cand.size;
  const mask = new Float32Array(batch.length * C);
  targets.forEach((tg, b) => tg.forEach((c) => (mask[b * C + c]! += 1)));
  const candRows = new Int32Array(C);
  for (const [row, c] of cand) candRows[c] = row;
  const tensors = {
    itemIdx: tf.tensor1d(itemIdx, 'int32'),
    authorIdx: tf.tensor1d(authorIdx, 'int32'),
    tagIdx: tf.tensor1d(tagIdx, 'int32'),
    tagW: tf.tensor2d(tagW, [n, MAX_TAGS]),
    ones: tf.ones([n, 1]) as tf.Tensor2D,
    meanW: tf.fill([batch.length, L], 1 / L) as tf.Tensor2D,
    dense: tf.tensor2d(dense, [n, DENSE_FEATURES]),
    scale: tf.tensor3d(scale, [batch.length, 1, 1]),
    candIdx: tf.tensor1d(candRows, 'int32'),
    candOnes: tf.ones([C, 1]) as tf.Tensor2D,
    targetMask: tf.tensor2d(mask, [batch.length, C]),
    targetTotal: tf.scalar(batch.length * o.targetsPerUser),
  };
  return {
    n,
    candCount: C,
    ...tensors,
    dispose() {
      for (const t of Object.values(tensors)) t.dispose();
    },
  };
}
