import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/compute/backend.js';
import { loadConfig } from '../../src/config/config.js';
import {
  compressorDir,
  CompressorFormatError,
  compressorVersion,
  initCompressorWeights,
  latestCompressorVersion,
  loadCompressor,
  loadCompressorWeights,
  saveCompressor,
} from '../../src/lifecycle/compressor.js';
import { openHistoryStore } from '../../src/data/parquetHistoryStore.js';
import { trainCompressor } from '../../src/lifecycle/trainCompressor.js';
import type { Logger } from '../../src/util/log.js';
import { itemVocabulary, syntheticHistory, toColumns } from './_fixtures.js';

const silent: Logger = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {}, child: () => silent };

const dir = mkdtempSync(join(tmpdir(), 'gems-compressor-'));
const config = loadConfig({ flags: { dataDir: dir }, env: {} });

describe('compressor weights', () => {
  beforeAll(async () => {
    await initBackend();
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('saves and loads versioned weights; the version is a content hash', () => {
    expect(latestCompressorVersion(config)).toBeNull();
    expect(() => loadCompressorWeights(config)).toThrow(/run 'gems train-compressor' first/);
    const w = initCompressorWeights(config, itemVocabulary(100), 1);
    const v = saveCompressor(config, w, { note: 'test' });
    expect(v).toMatch(/^[0-9a-f]{16}$/);
    expect(v).toBe(compressorVersion(initCompressorWeights(config, itemVocabulary(100), 1))); // deterministic
    expect(latestCompressorVersion(config)).toBe(v);
    const { weights, manifest } = loadCompressorWeights(config);
    expect(manifest.training).toEqual({ note: 'test' });
    expect(compressorVersion(weights)).toBe(v);
    expect(Array.from(weights.encoder.itemIds)).toEqual(Array.from(itemVocabulary(100)));

    // Same input, same memory, through a saved/loaded copy.
    const h = syntheticHistory(1, 3000, 100, 4);
    const a = loadCompressor(config, v).compress(h).vectors;
    const b = loadCompressor(config, v, 'reference').compress(h).vectors;
    let maxd = 0;
    for (let i = 0; i < a.length; i++) maxd = Math.max(maxd, Math.abs(a[i]! - b[i]!));
    expect(maxd).toBeLessThan(1e-3);

    const v2 = saveCompressor(config, initCompressorWeights(config, itemVocabulary(100), 2));
    expect(v2).not.toBe(v);
    expect(latestCompressorVersion(config)).toBe(v2);
    expect(loadCompressor(config, v).version).toBe(v); // older versions stay loadable
  });

  it('refuses corrupt weights, naming the file', () => {
    const v = saveCompressor(config, initCompressorWeights(config, itemVocabulary(50), 3));
    const bin = join(compressorDir(config, v), 'weights.bin');
    const bytes = readFileSync(bin);
    bytes[100] = bytes[100]! ^ 0xff;
    writeFileSync(bin, bytes);
    expect(() => loadCompressorWeights(config, v)).toThrow(CompressorFormatError);
    expect(() => loadCompressorWeights(config, v)).toThrow(/does not match its version/);
    writeFileSync(bin, bytes.subarray(0, 64));
    expect(() => loadCompressorWeights(config, v)).toThrow(/weights\.bin: array '.*' runs past the end/);
  });

  it('trains with the reconstruction loss and beats the uniform reference on held-out users', async () => {
    const tdir = mkdtempSync(join(tmpdir(), 'gems-train-'));
    writeFileSync(join(tdir, 'gems.config.json'), JSON.stringify({ streams: { tRecent: 16, tMid: 64 }, lifecycle: { slots: 8, dim: 32 } }));
    const tconfig = loadConfig({ flags: { dataDir: tdir }, env: {} });
    // 5 taste groups of 60 items each among 300: a user's lifecycle says which group it is in.
    const histories = Array.from({ length: 50 }, (_, u) => {
      const h = syntheticHistory(u + 1, 400, 60, 100 + u);
      for (let i = 0; i < h.length; i++) h.itemId[i] = h.itemId[i]! + (u % 5) * 60;
      return h;
    });
    const store = await openHistoryStore(tconfig);
    try {
      await store.upsertItems(Array.from(itemVocabulary(300), (itemId) => ({ itemId, authorId: itemId % 97, tags: [], title: `item ${itemId}` })));
      await store.append(toColumns(histories));
      const { weights, report } = await trainCompressor(tconfig, store, silent, {
        steps: 40,
        batchUsers: 4,
        eventsPerUser: 64,
        targetsPerUser: 32,
        negatives: 128,
        evalFraction: 0.2,
        learningRate: 1e-2,
        recallK: 60,
      });
      expect(report.items).toBe(300);
      expect(report.eval.compressor.users).toBeGreaterThan(3);
      const curve = report.lossCurve;
      expect(curve[curve.length - 1]!.compressor).toBeLessThan(curve[0]!.compressor);
      // Knowing the group cuts the catalogue from 300 to 60 items: NLL well under log(300).
      expect(report.eval.compressor.nll).toBeLessThan(report.eval.uniformNll - 0.5);
      expect(report.eval.baseline.nll).toBeLessThan(report.eval.uniformNll);
      const v = saveCompressor(tconfig, weights, report as unknown as Record<string, unknown>);
      expect(loadCompressor(tconfig, v).compress(histories[0]!).vectors).toHaveLength(8 * 32);
    } finally {
      await store.close();
      rmSync(tdir, { recursive: true, force: true });
    }
  });

  it('is deterministic: the same seed gives the same weights and version, another seed a different one', async () => {
    const tdir = mkdtempSync(join(tmpdir(), 'gems-train-det-'));
    writeFileSync(join(tdir, 'gems.config.json'), JSON.stringify({ streams: { tRecent: 16, tMid: 64 }, lifecycle: { slots: 4, dim: 16 } }));
    const tconfig = loadConfig({ flags: { dataDir: tdir }, env: {} });
    // 30 users: some held out (evalFraction 0.2), histories longer than the reservoir so the reservoir sampling runs.
    const histories = Array.from({ length: 30 }, (_, u) => syntheticHistory(u + 1, 300, 80, 500 + u));
    const store = await openHistoryStore(tconfig);
    const opts = { steps: 6, batchUsers: 4, eventsPerUser: 32, targetsPerUser: 16, negatives: 32, evalFraction: 0.2, evalUsers: 3, reservoir: 128 };
    try {
      await store.upsertItems(Array.from(itemVocabulary(80), (itemId) => ({ itemId, authorId: itemId % 97, tags: [], title: `item ${itemId}` })));
      await store.append(toColumns(histories));
      const a = await trainCompressor(tconfig, store, silent, { ...opts, seed: 7 });
      const b = await trainCompressor(tconfig, store, silent, { ...opts, seed: 7 });
      // The same store yielding users in reverse order (as another scan plan or shard layout might): same model.
      // A thin wrapper over the real store, reordering its scan — not a mock.
      const reversed = Object.create(store) as typeof store;
      reversed.scanHistories = async function* () {
        const all = [];
        for await (const h of store.scanHistories()) all.push(h);
        yield* all.reverse();
      };
      const r = await trainCompressor(tconfig, reversed, silent, { ...opts, seed: 7 });
      const c = await trainCompressor(tconfig, store, silent, { ...opts, seed: 8 });
      expect(a.report.evalUserIds.length).toBeGreaterThan(0);
      const v = compressorVersion(a.weights);
      expect(compressorVersion(b.weights)).toBe(v);
      expect(compressorVersion(r.weights)).toBe(v);
      expect(r.report.evalUserIds).toEqual(a.report.evalUserIds);
      expect(Buffer.from(b.weights.encoder.w1.buffer).equals(Buffer.from(a.weights.encoder.w1.buffer))).toBe(true);
      expect(Buffer.from(b.weights.qla.seeds.buffer).equals(Buffer.from(a.weights.qla.seeds.buffer))).toBe(true);
      expect(b.report.eval.compressor.nll).toBe(a.report.eval.compressor.nll);
      expect(a.report.seed).toBe(7);
      expect(a.report.compute).toMatch(/\w/);
      expect(compressorVersion(c.weights)).not.toBe(v);
      // Saved twice (different createdAt and timings in the manifest): still one version.
      expect(saveCompressor(tconfig, a.weights, { ...a.report })).toBe(v);
      expect(saveCompressor(tconfig, b.weights, { ...b.report })).toBe(v);
    } finally {
      await store.close();
      rmSync(tdir, { recursive: true, force: true });
    }
  });
});
