// Parameters free their memory when disposed: a model that is loaded (initialised, then overwritten from a
// checkpoint) and disposed — what a serving hot-swap does — leaves no tensors and no bytes behind, nor does
// optimizer state restored on resume; a GEMs model also frees the causal masks it cached.
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../src/compute/backend.js';
import { ParamStore } from '../../src/model/params.js';
import { recommend } from '../../src/model/recommend.js';
import { Adam, DEFAULT_ADAM } from '../../src/train/optim.js';
import { ringHistories, tinyModel } from './fixture.js';

beforeAll(async () => {
  await initBackend();
});

function build(seed: number): ParamStore {
  const p = new ParamStore(seed);
  p.get('emb', [50, 8], 'normal');
  p.get('w', [8, 8]);
  p.get('b', [8], 'zeros');
  p.get('g', [8], 'ones');
  return p;
}

describe('ParamStore memory', () => {
  it('create → load a checkpoint → dispose returns tensors and bytes to where they were', () => {
    const original = build(7);
    const saved = original.serialize();
    original.dispose();
    const before = tf.memory();
    for (let round = 0; round < 3; round++) {
      const p = build(round);
      p.load(saved.manifest, saved.blob, 'test checkpoint');
      expect(p.serialize().blob).toEqual(saved.blob); // the loaded values are the ones in use
      // One tensor per parameter while it lives (not one more per initial value or per load).
      expect(tf.memory().numTensors - before.numTensors).toBe(p.vars.size);
      p.dispose();
    }
    const after = tf.memory();
    expect(after.numTensors).toBe(before.numTensors);
    expect(after.numBytes).toBe(before.numBytes);
  });

  it('a parameter created by load() (not built yet) is freed on dispose too', () => {
    const original = build(3);
    const saved = original.serialize();
    original.dispose();
    const before = tf.memory();
    const p = new ParamStore(1);
    p.load(saved.manifest, saved.blob, 'test checkpoint');
    expect(p.serialize().blob).toEqual(saved.blob);
    p.dispose();
    expect(tf.memory().numBytes).toBe(before.numBytes);
    expect(tf.memory().numTensors).toBe(before.numTensors);
  });

  it('optimizer state restored from a checkpoint is freed on dispose', () => {
    const p = build(1);
    const adam = new Adam(p, { ...DEFAULT_ADAM, lr: 1e-2 });
    const loss = () => tf.sum(tf.square(p.vars.get('w')!)).add(tf.sum(p.vars.get('emb')!)) as tf.Scalar;
    adam.minimize(loss);
    const state = adam.serialize();
    const before = tf.memory();
    const restored = new Adam(p, { ...DEFAULT_ADAM, lr: 1e-2 });
    restored.load(state, state.blob);
    expect(restored.serialize().blob).toEqual(state.blob);
    restored.dispose();
    expect(tf.memory().numBytes).toBe(before.numBytes);
    expect(tf.memory().numTensors).toBe(before.numTensors);
    adam.dispose();
    p.dispose();
  });
});

describe('GemsModel memory', () => {
  it('a model that ran beam search frees everything on dispose: parameters and cached causal masks', () => {
    const before = tf.memory();
    for (let round = 0; round < 2; round++) {
      const { loaded, model } = tinyModel();
      const hs = ringHistories(2, 40);
      const out = recommend(loaded, hs, 3, { beam: 4 });
      expect(out.map((o) => o.items.length)).toEqual([3, 3]);
      model.dispose();
      expect(tf.memory().numTensors).toBe(before.numTensors);
      expect(tf.memory().numBytes).toBe(before.numBytes);
    }
  });
});
