import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../src/compute/backend.js';
import { evaluateLeaveOneOut } from '../../src/eval/leaveOneOut.js';
import { packSequences } from '../../src/eval/sequences.js';
import { gatherRows, matMul2d } from '../../src/model/ops.js';
import { SasRec } from '../../src/model/sasrec.js';
import { Adam, DEFAULT_ADAM } from '../../src/train/optim.js';
import { leftPad, sasrecScorer } from '../../src/train/sasrecTrainer.js';
import { ringHistories } from './fixture.js';

beforeAll(async () => {
  await initBackend();
});

describe('wasm-safe ops', () => {
  it('gatherRows and matMul2d give the same gradients as the reference ops', () => {
    const table = tf.variable(tf.randomNormal([7, 3], 0, 1, 'float32', 1));
    const w = tf.variable(tf.randomNormal([3, 5], 0, 1, 'float32', 2));
    const ids = Int32Array.from([1, 1, 4, 6]);
    const f = (custom: boolean) =>
      tf.variableGrads(() => {
        const e = custom ? gatherRows(table, ids) : tf.gather(table, tf.tensor1d(ids, 'int32'));
        const y = custom ? matMul2d(e, w) : tf.matMul(e, w);
        return y.square().sum() as tf.Scalar;
      });
    const a = f(true);
    const b = f(false);
    expect(a.value.dataSync()[0]).toBeCloseTo(b.value.dataSync()[0]!, 4);
    for (const k of Object.keys(b.grads)) {
      const x = a.grads[k]!.dataSync();
      const y = b.grads[k]!.dataSync();
      x.forEach((v, i) => expect(v).toBeCloseTo(y[i]!, 4));
    }
  });
});

describe('SASRec baseline', () => {
  it('learns a deterministic next-item rule (HR@1 on held-out targets) under the leave-one-out protocol', async () => {
    const hs = ringHistories(24, 30);
    const seqs = packSequences(hs.map((h) => h.userId), hs.map((h) => h.itemId));
    const model = new SasRec({ kind: 'sasrec', numItems: seqs.numItems, maxLen: 16, d: 32, heads: 1, layers: 2, dropout: 0, seed: 1 });
    const opt = new Adam(model.params, { ...DEFAULT_ADAM, lr: 5e-3, warmupSteps: 5 });
    const L = 16;
    const B = hs.length;
    for (let step = 0; step < 60; step++) {
      const inp = new Int32Array(B * L);
      const tgt = new Int32Array(B * L);
      for (let u = 0; u < B; u++) {
        const all = seqs.items.subarray(seqs.offsets[u]!, seqs.offsets[u + 1]! - 2);
        const w = all.subarray(all.length - L - 1 - (step % 5));
        leftPad(w.subarray(0, L), L, inp, u);
        leftPad(w.subarray(1, L + 1), L, tgt, u);
      }
      opt.minimize(() => model.loss(inp, tgt, B));
    }
    const res = await evaluateLeaveOneOut(seqs, sasrecScorer(model), { split: 'test', ks: [1, 10], quiet: true });
    expect(res.unfiltered['HR@1']).toBeGreaterThan(0.95);
    expect(res.filtered['HR@1']).toBeGreaterThan(0.95);
    model.params.dispose();
    opt.dispose();
  });
});
