// The default dense batch shrinks to fit the wasm heap; a training step that overflows it anyway fails inside a
// kernel ("memory access out of bounds", an abort), and the trainer rethrows it naming the step, the size of its
// attention maps and the flag to change. The overflow itself needs a 4 GB heap, so these tests hand the helper the
// errors wasm raises instead of provoking one.
import { describe, expect, it } from 'vitest';
import { DENSE_ATTENTION_MAP_BUDGET, defaultDenseBatch, denseAttentionMapBytes, explainStepFailure } from '../../src/train/gemsTrainer.js';

// The error class wasm traps raise (the project's TypeScript lib has no WebAssembly value types).
const RuntimeError = (globalThis as unknown as { WebAssembly: { RuntimeError: new (m: string) => Error } }).WebAssembly.RuntimeError;

describe('explainStepFailure', () => {
  const cfg = { heads: 2, tRecent: 256, tMid: 1024, sizes: [128, 128, 128, 2] };

  it('sizes a dense step\'s mid-term attention map: windows × heads × targets × levels × keys × 4 bytes', () => {
    expect(denseAttentionMapBytes(cfg, 32)).toBe(32 * 2 * 256 * 4 * 768 * 4); // 192 MiB: what overflowed here at --batch 32
    expect(denseAttentionMapBytes(cfg, 8)).toBe(denseAttentionMapBytes(cfg, 32) / 4);
  });

  it('explains a wasm heap overflow with the step, the map size and what to lower', () => {
    for (const raw of [new RuntimeError('memory access out of bounds'), new Error('Aborted(). Build with -sASSERTIONS for more info.')]) {
      const e = explainStepFailure(raw, 'stage 1 epoch 1 step 3', denseAttentionMapBytes(cfg, 32), 'wasm') as Error;
      expect(e).toBeInstanceOf(Error);
      expect(e.message).toMatch(/^stage 1 epoch 1 step 3: the wasm backend's heap \(at most 4 GB\) overflowed/);
      expect(e.message).toContain('192 MB');
      expect(e.message).toContain('Lower --batch');
      expect(e.cause).toBe(raw);
    }
  });

  it('passes other errors, and errors of other backends, through unchanged', () => {
    const other = new Error('GEMs dense loss: 3 target rows / 12 codes for 2 windows of 64');
    expect(explainStepFailure(other, 'step', 1, 'wasm')).toBe(other);
    const oob = new RuntimeError('memory access out of bounds');
    expect(explainStepFailure(oob, 'step', 1, 'tensorflow')).toBe(oob);
  });
});

describe('defaultDenseBatch', () => {
  it('keeps the default batch for small streams and shrinks it where the attention maps would not fit', () => {
    // The ml-1m preset (T_recent 64, T_mid 256): 0.4 MB a window, the default 32 stays.
    expect(defaultDenseBatch({ heads: 2, tRecent: 64, tMid: 256, sizes: [64, 64, 64, 2] }, 32)).toBe(32);
    // The default streams on the generated set: 6 MB a window, 8 windows (48 MB maps) — the batch that trained.
    const big = { heads: 2, tRecent: 256, tMid: 1024, sizes: [128, 128, 128, 2] };
    expect(defaultDenseBatch(big, 32)).toBe(8);
    expect(denseAttentionMapBytes(big, defaultDenseBatch(big, 32))).toBeLessThanOrEqual(DENSE_ATTENTION_MAP_BUDGET);
    // Never below one window.
    expect(defaultDenseBatch({ heads: 8, tRecent: 1000, tMid: 100_000, sizes: [256, 256, 256] }, 32)).toBe(1);
  });
});
