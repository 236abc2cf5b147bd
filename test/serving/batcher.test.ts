import { describe, expect, it } from 'vitest';
import { DeadlineExceededError, MicroBatcher, QueueFullError } from '../../src/serving/batcher.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('MicroBatcher', () => {
  it('groups concurrent requests into batches and gives each caller its own answer', async () => {
    const sizes: number[] = [];
    const b = new MicroBatcher<number, number>({ maxBatchSize: 4, maxWaitMs: 20, maxQueue: 100 }, async (reqs) => {
      sizes.push(reqs.length);
      await sleep(5);
      return reqs.map((r) => r * 10);
    });
    const out = await Promise.all(Array.from({ length: 10 }, (_, i) => b.submit(i)));
    expect(out).toEqual(Array.from({ length: 10 }, (_, i) => i * 10));
    expect(sizes.reduce((a, c) => a + c, 0)).toBe(10);
    expect(Math.max(...sizes)).toBe(4);
    expect(b.stats.batches).toBeLessThan(10);
  });

  it('rejects past the queue bound with QueueFullError instead of queueing without limit', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const b = new MicroBatcher<number, number>({ maxBatchSize: 1, maxWaitMs: 0, maxQueue: 2 }, async (reqs) => {
      await gate;
      return reqs;
    });
    const first = b.submit(1); // running
    const queued = [b.submit(2), b.submit(3)]; // queue now full
    await expect(b.submit(4)).rejects.toBeInstanceOf(QueueFullError);
    release();
    expect(await first).toBe(1);
    expect(await Promise.all(queued)).toEqual([2, 3]);
  });

  it('drops requests whose deadline passed while queued, and errors per request stay per request', async () => {
    const b = new MicroBatcher<number, number>({ maxBatchSize: 8, maxWaitMs: 30, maxQueue: 10 }, async (reqs) =>
      reqs.map((r) => (r < 0 ? new Error(`bad ${r}`) : r)),
    );
    const late = b.submit(1, Date.now() + 1);
    const bad = b.submit(-1);
    const ok = b.submit(2);
    await expect(late).rejects.toBeInstanceOf(DeadlineExceededError);
    await expect(bad).rejects.toThrow('bad -1');
    expect(await ok).toBe(2);
  });

  it('drain() finishes queued work and then refuses new requests', async () => {
    const done: number[] = [];
    const b = new MicroBatcher<number, number>({ maxBatchSize: 2, maxWaitMs: 10, maxQueue: 10 }, async (reqs) => {
      await sleep(10);
      done.push(...reqs);
      return reqs;
    });
    const pending = [b.submit(1), b.submit(2), b.submit(3)];
    await b.drain();
    expect(done.sort()).toEqual([1, 2, 3]);
    expect(await Promise.all(pending)).toEqual([1, 2, 3]);
    await expect(b.submit(4)).rejects.toThrow(/shut down/);
  });
});
