// Events entering by their Semantic ID (GemsModelConfig.codeInputs): the behavior features carry the decoder's own
// code embeddings of each event's item, so they move with exactly the items that share those codes.
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../src/compute/backend.js';
import { InterestSummarizer } from '../../src/model/features.js';
import { GemsModel } from '../../src/model/gems.js';
import { scoped } from '../../src/model/ops.js';
import { batchFromInputs, makeSampleContext } from '../../src/train/samples.js';
import { fixtureSid, historyOf, ITEM_IDS, ringHistories, tinyConfig, tinyModel } from './fixture.js';

beforeAll(async () => {
  await initBackend();
});

/** Behavior-encoder output rows [T][d] of one history's recent stream, and which rows are real events. */
function behaviorRows(setup: ReturnType<typeof tinyModel>, items: number[]): { rows: number[][]; valid: Uint8Array } {
  const batch = batchFromInputs(setup.ctx, [historyOf(7, items)]);
  const out = scoped(() => Array.from(setup.model.behavior(batch.recent, false).dataSync()));
  const d = setup.cfg.d;
  return { rows: Array.from({ length: batch.recent.T }, (_, j) => out.slice(j * d, (j + 1) * d)), valid: batch.recent.valid };
}

describe('GEMs code inputs', () => {
  it('an event carries its item’s level-0 and level-1 code embeddings: changing one moves exactly the events of items under it', () => {
    const setup = tinyModel({ codeInputs: 2 });
    const { sid, model, cfg } = setup;
    const W = sid.sizes.length;
    const items = ITEM_IDS.slice(0, cfg.tRecent);
    const codesOf = (id: number) => Array.from(sid.codes.subarray(sid.rowOf(id) * W, sid.rowOf(id) * W + W));
    const before = behaviorRows(setup, items);
    expect(before.valid.every((v) => v === 1)).toBe(true);
    const changed = (after: number[][]) => after.map((r, j) => r.some((x, k) => Math.abs(x - before.rows[j]![k]!) > 1e-6));

    // Level 0: bump the codebook-0 row of the first event's first code.
    const c0 = codesOf(items[0]!)[0]!;
    const code0 = model.params.get('code0', [sid.sizes[0]!, cfg.d]);
    const saved0 = code0.clone();
    tf.tidy(() => code0.assign(code0.add(tf.oneHot([c0], sid.sizes[0]!).reshape([sid.sizes[0]!, 1]).mul(0.5))));
    expect(changed(behaviorRows(setup, items).rows)).toEqual(items.map((id) => codesOf(id)[0] === c0));
    code0.assign(saved0);
    saved0.dispose();

    // Level 1: bump the trie node of the second event's first two codes (prefix-specialised, so only that prefix).
    const [a, b] = codesOf(items[1]!);
    const node = sid.trie.nodeOf([a!, b!]);
    const nodes = model.params.get('code.node', [sid.trie.nodes, cfg.d]);
    tf.tidy(() => nodes.assign(nodes.add(tf.oneHot([node], sid.trie.nodes).reshape([sid.trie.nodes, 1]).mul(0.5))));
    expect(changed(behaviorRows(setup, items).rows)).toEqual(items.map((id) => codesOf(id)[0] === a && codesOf(id)[1] === b));
    model.dispose();
  });

  it('padding rows carry no code embedding, and a model without code inputs (older checkpoints) has the old feature width', () => {
    const on = tinyModel({ codeInputs: 1 });
    const off = tinyModel();
    expect(on.model.featureDim - off.model.featureDim).toBe(on.cfg.d);
    // A history shorter than T_recent leaves padding rows: moving every code-0 row leaves them as they were.
    const items = ITEM_IDS.slice(0, on.cfg.tRecent - 2);
    const before = behaviorRows(on, items);
    const code0 = on.model.params.get('code0', [on.sid.sizes[0]!, on.cfg.d]);
    tf.tidy(() => code0.assign(code0.add(1)));
    const after = behaviorRows(on, items);
    before.valid.forEach((v, j) => expect(after.rows[j]!.some((x, k) => Math.abs(x - before.rows[j]![k]!) > 1e-6)).toBe(v === 1));
    on.model.dispose();
    off.model.dispose();
  });

  it('refuses code inputs it cannot build: more levels than the codes have, or no trie', () => {
    const { cfg, sid } = tinyModel();
    expect(() => new GemsModel({ ...cfg, codeInputs: 3 }, sid.trie)).toThrow(/codeInputs must be 0, 1 or 2/);
    expect(() => new GemsModel({ ...cfg, prefixEmbeddings: false, codeInputs: 1 })).toThrow(/codeInputs needs the Semantic-ID trie/);
  });

  it('lifecycle codes: an interest slot carries its code’s level-0 embedding, so only codes held by a slot move the lifecycle memory', () => {
    const sid = fixtureSid();
    const summarizer = new InterestSummarizer(sid, 3);
    const cfg = tinyConfig({ lifecycleCodes: true, lifecycle: { slots: 3, inDim: summarizer.dim, layers: 1 } });
    const model = new GemsModel(cfg, sid.trie);
    const ctx = makeSampleContext(cfg, sid, summarizer);
    const [h] = ringHistories(1, 40);
    const batch = batchFromInputs(ctx, [h!]);
    const held = [...batch.lifecycleCodes!].filter((c) => c >= 0);
    expect(held.length).toBe(3);
    const keys = () => scoped(() => Array.from(model.encode(batch, false).mem.lifecycle!.keys.dataSync()));
    const code0 = model.params.get('code0', [sid.sizes[0]!, cfg.d]);
    const moves = (c: number) => {
      const before = keys();
      const saved = code0.clone();
      // A random direction: a constant shift of a token would vanish in the memory's layer norm.
      tf.tidy(() => code0.assign(code0.add(tf.oneHot([c], sid.sizes[0]!).reshape([sid.sizes[0]!, 1]).mul(tf.randomNormal([1, cfg.d], 0, 0.5, 'float32', 9)))));
      const after = keys();
      code0.assign(saved);
      saved.dispose();
      return after.some((x, i) => Math.abs(x - before[i]!) > 1e-6);
    };
    for (let c = 0; c < sid.sizes[0]!; c++) expect(moves(c)).toBe(held.includes(c));
    // A hand-built batch without the slots' codes is refused, not silently read as "no interest".
    expect(() => scoped(() => model.encode({ ...batch, lifecycleCodes: undefined }, false))).toThrow(/no per-slot interest codes/);
    model.dispose();
  });

  it('lifecycle in-mid: a slot is marked exactly when its interest occurs among the mid-term events (not the recent ones), and the mark is an input', () => {
    const sid = fixtureSid();
    const summarizer = new InterestSummarizer(sid, 3);
    const cfg = tinyConfig({ lifecycleCodes: true, lifecycleInMid: true, lifecycle: { slots: 3, inDim: summarizer.dim, layers: 1 } });
    const model = new GemsModel(cfg, sid.trie);
    const ctx = makeSampleContext(cfg, sid, summarizer);
    const byCode = new Map<number, number[]>();
    for (const id of ITEM_IDS) byCode.set(sid.codes[sid.rowOf(id) * sid.sizes.length]!, [...(byCode.get(sid.codes[sid.rowOf(id) * sid.sizes.length]!) ?? []), id]);
    const [a, b, c] = [...byCode.keys()];
    const pick = (code: number, n: number) => Array.from({ length: n }, (_, i) => byCode.get(code)![i % byCode.get(code)!.length]!);
    // Lifecycle part: interests a and b; mid-term (T_mid − T_recent = 8 events): b only; recent (4): c only.
    const h = historyOf(5, [...pick(a!, 10), ...pick(b!, 10), ...pick(b!, cfg.tMid - cfg.tRecent), ...pick(c!, cfg.tRecent)]);
    const batch = batchFromInputs(ctx, [h]);
    const marks = new Map([...batch.lifecycleCodes!].map((code, s) => [code, batch.lifecycleInMid![s]!]));
    expect(marks.get(a!)).toBe(0);
    expect(marks.get(b!)).toBe(1);
    expect(marks.has(c!)).toBe(false);
    const keys = (x: typeof batch) => scoped(() => Array.from(model.encode(x, false).mem.lifecycle!.keys.dataSync()));
    expect(keys({ ...batch, lifecycleInMid: new Uint8Array(3) })).not.toEqual(keys(batch));
    expect(() => scoped(() => model.encode({ ...batch, lifecycleInMid: undefined }, false))).toThrow(/which slots occur in the mid-term stream/);
    expect(() => new GemsModel({ ...cfg, lifecycleCodes: false }, sid.trie)).toThrow(/needs lifecycleCodes/);
    model.dispose();
  });
});
