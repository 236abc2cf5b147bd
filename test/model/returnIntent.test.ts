// The return intent (GemsModelConfig.returnIntent): one learned BOS vector that asks the decoder for a return of a
// dormant interest instead of the next event, and the list policy that serves it (beam.ts reserveReturns). The tests
// pin down that rows without the intent are exactly the plain model, that the intent is learnable (one input, two
// different answers), and what the served list holds.
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../src/compute/backend.js';
import { sliceHistory } from '../../src/data/events.js';
import { beamSearch, reserveReturns } from '../../src/model/beam.js';
import { GemsModel } from '../../src/model/gems.js';
import { scoped } from '../../src/model/ops.js';
import { batchFromInputs, denseBatchFromWindows } from '../../src/train/samples.js';
import { Adam, DEFAULT_ADAM } from '../../src/train/optim.js';
import { ringHistories, tinyModel } from './fixture.js';

beforeAll(async () => {
  await initBackend();
});

const levelZero = (model: GemsModel, batch: ReturnType<typeof batchFromInputs>, returnIntent: boolean) =>
  scoped(() => {
    const prepared = model.prepare(model.encode(batch, false), {});
    try {
      return model.decodeStep(prepared, null, null, null, 0, { topK: 0, returnIntent }).logp.dataSync() as Float32Array;
    } finally {
      model.release(prepared);
    }
  });

describe('return intent', () => {
  it('rows without the intent are the plain model; the intent changes only the rows that carry it', () => {
    const withIntent = tinyModel({ returnIntent: true, tRecent: 6, tMid: 14 });
    const plain = tinyModel({ tRecent: 6, tMid: 14 });
    // Same weights everywhere except dec.return, which only the intent model has.
    const source = new Map(withIntent.model.params.trainable().map((x) => [x.name, x.v] as const));
    for (const { name, v } of plain.model.params.trainable()) v.assign(source.get(name)!);
    const hs = ringHistories(3, 40);
    const batch = batchFromInputs(withIntent.ctx, hs);
    expect(Array.from(levelZero(withIntent.model, batch, false))).toEqual(Array.from(levelZero(plain.model, batch, false)));
    const ret = levelZero(withIntent.model, batch, true);
    expect(Array.from(ret)).not.toEqual(Array.from(levelZero(plain.model, batch, false)));
    expect(() => levelZero(plain.model, batch, true)).toThrow(/returnIntent/);
    // Dense training: flagging rows changes their loss and leaves every other row's loss as it was.
    const d = denseBatchFromWindows(withIntent.ctx, hs, [{ user: 0, t: 30 }]);
    const rowNll = (row: number, flags: Uint8Array) => {
      const mask = new Uint8Array(d.targetMask.length);
      mask[row] = 1;
      return tf.tidy(() => withIntent.model.denseLoss(d.batch, d.targetCodes, mask, { training: false, indexerLoss: false, topK: 0 }, undefined, flags).nll.dataSync()[0]!);
    };
    const none = new Uint8Array(d.targetMask.length);
    const some = none.slice();
    some[2] = 1;
    some[4] = 1;
    expect(rowNll(2, some)).not.toBeCloseTo(rowNll(2, none), 4);
    for (const r of [0, 1, 3, 5]) expect(rowNll(r, some)).toBe(rowNll(r, none));
    expect(() => withIntent.model.denseLoss(d.batch, d.targetCodes, d.targetMask, { training: false, indexerLoss: false, topK: 0 }, undefined, new Uint8Array(3))).toThrow(/return flags/);
  });

  it('one input, two answers: the model learns a different item for each intent', () => {
    const { model, ctx, sid } = tinyModel({ returnIntent: true, tRecent: 6, tMid: 14 });
    const W = sid.sizes.length;
    const hs = ringHistories(4, 40);
    const windows = hs.map((_, u) => ({ user: u, t: 30 }));
    // Each window twice: its rows plain → item A, its copy's rows with the intent → item B (the same inputs).
    const d = denseBatchFromWindows(ctx, hs, [...windows, ...windows]);
    const [A, B] = [sid.itemIds[3]!, sid.itemIds[17]!];
    const codesOf = (item: number) => sid.codes.subarray(sid.rowOf(item) * W, sid.rowOf(item) * W + W);
    const rows = 2 * windows.length * ctx.cfg.tRecent;
    const flags = Uint8Array.from({ length: rows }, (_, r) => (r < rows / 2 ? 0 : 1));
    const targets = new Int32Array(rows * W);
    for (let r = 0; r < rows; r++) targets.set(codesOf(flags[r] ? B : A), r * W);
    const opt = new Adam(model.params, { ...DEFAULT_ADAM, lr: 1e-2, warmupSteps: 5 });
    for (let step = 0; step < 80; step++) opt.minimize(() => model.denseLoss(d.batch, targets, d.targetMask, { training: true, indexerLoss: false, topK: 0 }, undefined, flags).total);
    opt.dispose();
    const enc = () => model.encodeForSearch(batchFromInputs(ctx, hs.map((h) => sliceHistory(h, 0, 30))), 0);
    const next = scoped(() => beamSearch(model, sid, enc(), { k: 1, beam: 4, topK: 0 }));
    const back = scoped(() => beamSearch(model, sid, enc(), { k: 1, beam: 4, topK: 0, returnIntent: true }));
    for (const u of next.users) expect(u.items[0]).toBe(A);
    for (const u of back.users) expect(u.items[0]).toBe(B);
    // The served list with a reserved share holds both answers, the next event first.
    const both = scoped(() => beamSearch(model, sid, enc(), { k: 4, beam: 8, topK: 0, reserveReturns: 0.5 }));
    for (const u of both.users) {
      expect(u.items[0]).toBe(A);
      expect(u.items[1]).toBe(B);
      expect(new Set(u.items).size).toBe(4);
    }
    model.params.dispose();
  });

  it('reserveReturns: floor(n·ρ) of every prefix from the return list, duplicates once, the other list fills when one runs out', () => {
    const W = 1;
    const list = (items: number[]) => ({ items: Int32Array.from(items), scores: Float32Array.from(items, (x) => -x), codes: Int32Array.from(items) });
    const merged = reserveReturns(list([1, 2, 3, 4, 5, 6, 7, 8]), list([10, 11, 12]), 8, 0.3, W);
    // ρ = 0.3: places 4 and 7 (floor(4·0.3) = 1, floor(7·0.3) = 2) hold returns.
    expect(Array.from(merged.items)).toEqual([1, 2, 3, 10, 4, 5, 11, 6]);
    expect(Array.from(merged.scores)).toEqual([-1, -2, -3, -10, -4, -5, -11, -6]);
    expect(Array.from(merged.codes)).toEqual(Array.from(merged.items));
    // An item in both lists keeps its first place; the next return takes the reserved place.
    expect(Array.from(reserveReturns(list([1, 2, 3, 10, 5, 6, 7, 8]), list([3, 11]), 6, 0.5, W).items)).toEqual([1, 3, 2, 11, 10, 5]);
    // The return list runs out: the main list fills.
    expect(Array.from(reserveReturns(list([1, 2, 3, 4, 5]), list([9]), 5, 0.5, W).items)).toEqual([1, 9, 2, 3, 4]);
  });

  it('beam search refuses a reserved share without a trained intent, and a share outside [0, 1)', () => {
    const { model, ctx, sid } = tinyModel();
    const enc = model.encodeForSearch(batchFromInputs(ctx, ringHistories(2, 20)), 0);
    expect(() => beamSearch(model, sid, enc, { k: 4, topK: 0, reserveReturns: 0.3 })).toThrow(/return intent/);
    const withIntent = tinyModel({ returnIntent: true });
    const enc2 = withIntent.model.encodeForSearch(batchFromInputs(withIntent.ctx, ringHistories(2, 20)), 0);
    expect(() => beamSearch(withIntent.model, withIntent.sid, enc2, { k: 4, topK: 0, reserveReturns: 1 })).toThrow(/reserveReturns/);
    const ok = beamSearch(withIntent.model, withIntent.sid, enc2, { k: 6, topK: 0, reserveReturns: 0.3 });
    for (const u of ok.users) {
      expect(u.items.length).toBe(6);
      expect(new Set(u.items).size).toBe(6);
      for (const it of u.items) expect(withIntent.sid.rowOf(it)).toBeGreaterThanOrEqual(0);
    }
  });
});
