// Groups concurrent requests into one model execution (the paper's "batch several users' requests into one graph
// execution"). A request waits at most `maxWaitMs` for companions; a batch holds at most `maxBatchSize`. The queue
// is bounded: past `maxQueue` waiting requests, submit() rejects at once with QueueFullError (→ RESOURCE_EXHAUSTED)
// instead of letting latency grow without bound. Requests whose deadline passed while queued are dropped before
// they cost model time.

export class QueueFullError extends Error {
  override name = 'QueueFullError';
}
export class DeadlineExceededError extends Error {
  override name = 'DeadlineExceededError';
}

export interface BatcherOptions {
  maxBatchSize: number;
  maxWaitMs: number;
  maxQueue: number;
}

interface Pending<Req, Res> {
  req: Req;
  deadline: number;
  resolve: (r: Res) => void;
  reject: (e: Error) => void;
}

export interface BatchStats {
  batches: number;
  requests: number;
}

export class MicroBatcher<Req, Res> {
  private queue: Pending<Req, Res>[] = [];
  private timer: NodeJS.Timeout | null = null;
  private running = 0;
  private closed = false;
  private idleWaiters: (() => void)[] = [];
  readonly stats: BatchStats = { batches: 0, requests: 0 };

  constructor(
    private readonly opts: BatcherOptions,
    /** Runs one batch; must return one result (or Error) per request, in order. */
    private readonly runBatch: (reqs: Req[]) => Promise<(Res | Error)[]>,
    private readonly onBatch?: (size: number, queueDepth: number) => void,
  ) {
    if (opts.maxBatchSize < 1) throw new Error('maxBatchSize must be ≥ 1');
  }

  get queueDepth(): number {
    return this.queue.length;
  }

  /** Queues a request; `deadline` is epoch ms (Infinity for none). */
  submit(req: Req, deadline = Infinity): Promise<Res> {
    if (this.closed) return Promise.reject(new Error('batcher is shut down'));
    if (this.queue.length >= this.opts.maxQueue) {
      return Promise.reject(new QueueFullError(`request queue is full (${this.opts.maxQueue} waiting)`));
    }
    return new Promise<Res>((resolve, reject) => {
      this.queue.push({ req, deadline, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    // One batch runs at a time: the model already uses the cores; a second batch would only interleave.
    if (this.running > 0) return;
    if (this.queue.length >= this.opts.maxBatchSize || this.opts.maxWaitMs <= 0) {
      this.flush();
    } else if (!this.timer && this.queue.length > 0) {
      this.timer = setTimeout(() => this.flush(), this.opts.maxWaitMs);
    }
  }

  private flush(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.running > 0 || this.queue.length === 0) return;
    const now = Date.now();
    const batch: Pending<Req, Res>[] = [];
    while (this.queue.length > 0 && batch.length < this.opts.maxBatchSize) {
      const p = this.queue.shift()!;
      if (p.deadline <= now) p.reject(new DeadlineExceededError('deadline passed while queued'));
      else batch.push(p);
    }
    if (batch.length === 0) {
      this.afterBatch();
      return;
    }
    this.running++;
    this.stats.batches++;
    this.stats.requests += batch.length;
    this.onBatch?.(batch.length, this.queue.length);
    this.runBatch(batch.map((p) => p.req))
      .then((results) => {
        batch.forEach((p, i) => {
          const r = results[i];
          if (r instanceof Error) p.reject(r);
          else if (r === undefined) p.reject(new Error('batch returned no result for a request'));
          else p.resolve(r);
        });
      })
      .catch((e: Error) => batch.forEach((p) => p.reject(e)))
      .finally(() => {
        this.running--;
        this.afterBatch();
      });
  }

  private afterBatch(): void {
    if (this.queue.length > 0) this.schedule();
    else if (this.running === 0) {
      const w = this.idleWaiters;
      this.idleWaiters = [];
      w.forEach((f) => f());
    }
  }

  /** Stops accepting requests and resolves when everything queued has run (graceful shutdown). */
  drain(): Promise<void> {
    this.closed = true;
    if (this.queue.length === 0 && this.running === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.idleWaiters.push(resolve);
      this.schedule();
    });
  }
}
