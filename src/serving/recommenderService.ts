// gems.v1.RecommenderService: one request, start to finish.
//   validate (INVALID_ARGUMENT naming the field) → admit (bounded: RESOURCE_EXHAUSTED past the limit) → queue in
//   the MicroBatcher (deadline-aware) → per batch: read the users' Recent + Mid-term events (history store, or the
//   request), fetch their lifecycle memories in one call (memory store in process, or the memory service over
//   gRPC), run the current model once for all users → answer each caller with its own items, Semantic IDs, titles
//   and per-stream attention mass.
// The model is one reference swapped between batches (reload()): a batch keeps the model it started with, and an
// old model is disposed when its last batch ends, so a hot-swap drops nothing.
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type * as protoLoader from '@grpc/proto-loader';
import { Counter, Gauge } from 'prom-client';
import { resolvedPaths, type GemsConfig } from '../config/config.js';
import { allocHistory, cutStreams, emptyHistory, type History, type Streams } from '../data/events.js';
import type { HistoryStore } from '../data/historyStore.js';
import type { LifecycleMemory } from '../lifecycle/memory.js';
import { INDEXER_SELECTIONS, isIndexerSelection } from '../model/gems.js';
import { logger, type Logger } from '../util/log.js';
import { DeadlineExceededError, MicroBatcher, QueueFullError, type BatcherOptions } from './batcher.js';
import { PopularityModel, popularityFromStore, type SidLookup } from './coldStart.js';
import {
  callGone,
  clientCredentials,
  clientOptions,
  deadlinePassed,
  loadProtos,
  rpcError,
  serviceOf,
  startGrpcServer,
  statusName,
  type GrpcServerHandle,
  type ServiceRegistration,
} from './grpc.js';
import type { ServiceMetrics } from './metrics.js';
import { concatHistories, type RecommendInput, type RecommendOptions, type RecommendOutput, type RecommenderModel } from './recommender.js';

export const RECOMMENDER_SERVICE = 'gems.v1.RecommenderService';
const METHOD = 'GetRecommendations';
const MAX_INT32 = 2_147_483_647;

let cachedDef: protoLoader.PackageDefinition | undefined;
export function recommenderPackageDefinition(): protoLoader.PackageDefinition {
  return (cachedDef ??= loadProtos(['gems/v1/recommender.proto']));
}

// --- wire messages (as @grpc/proto-loader decodes them with LOADER_OPTIONS) ----------------------------------------

export interface WireRecentEvent {
  itemId: number;
  tsMs: number;
  authorId: number;
  tagIds: number[];
  playMs: number;
  durationMs: number;
  labels: number;
}
export interface GetRecommendationsRequest {
  userId: number;
  k: number;
  recentEvents: WireRecentEvent[];
  options: Record<string, string>;
}
export interface WireItem {
  itemId: number;
  score: number;
  semanticId: number[];
  title: string;
}
export interface GetRecommendationsResponse {
  userId: number;
  items: WireItem[];
  attention: { recent: number; mid: number; lifecycle: number };
  streamsUsed: string[];
  coldStart: boolean;
  strategy: string;
  modelVersion: string;
  lifecycleSource: string;
}

// --- validation --------------------------------------------------------------------------------------------------

export class InvalidRequest extends Error {
  override name = 'InvalidRequest';
}

export type HistoryMode = 'store' | 'request' | 'merge';
export const OPTION_KEYS = ['exclude_seen', 'beam', 'indexer_top_k', 'indexer_selection', 'history'] as const;

export interface ParsedRequest {
  userId: number;
  k: number;
  events: History | null;
  history: HistoryMode;
  options: RecommendOptions;
}

function intOption(key: string, raw: string, min: number, max: number): number {
  if (!/^\d+$/.test(raw.trim())) throw new InvalidRequest(`options.${key}: '${raw}' is not a non-negative integer`);
  const v = Number(raw);
  if (v < min || v > max) throw new InvalidRequest(`options.${key}: ${v} is outside [${min}, ${max}]`);
  return v;
}

/** Checks a request against the limits; throws InvalidRequest naming the offending field. */
export function parseRequest(req: GetRecommendationsRequest, limits: { maxK: number; maxEvents: number }): ParsedRequest {
  const { userId, k } = req;
  if (!Number.isSafeInteger(userId) || userId <= 0 || userId > MAX_INT32) throw new InvalidRequest(`user_id must be an integer in [1, ${MAX_INT32}], got ${userId}`);
  if (!Number.isInteger(k) || k <= 0) throw new InvalidRequest(`k must be ≥ 1, got ${k}`);
  if (k > limits.maxK) throw new InvalidRequest(`k is ${k}, above the limit serving.maxK = ${limits.maxK}`);

  const opts = req.options ?? {};
  const options: RecommendOptions = { excludeSeen: true };
  let history: HistoryMode | undefined;
  for (const [key, raw] of Object.entries(opts)) {
    switch (key) {
      case 'exclude_seen':
        if (raw !== 'true' && raw !== 'false') throw new InvalidRequest(`options.exclude_seen: '${raw}' is not true|false`);
        options.excludeSeen = raw === 'true';
        break;
      case 'beam':
        options.beam = intOption(key, raw, k, Math.max(k, 4 * limits.maxK));
        break;
      case 'indexer_top_k':
        options.indexerTopK = intOption(key, raw, 0, limits.maxEvents);
        break;
      case 'indexer_selection':
        if (!isIndexerSelection(raw)) throw new InvalidRequest(`options.indexer_selection: '${raw}' is not ${INDEXER_SELECTIONS.join('|')}`);
        options.indexerSelection = raw;
        break;
      case 'history':
        if (raw !== 'store' && raw !== 'request' && raw !== 'merge') throw new InvalidRequest(`options.history: '${raw}' is not request|merge|store`);
        history = raw;
        break;
      default:
        throw new InvalidRequest(`options.${key}: unknown option (known: ${OPTION_KEYS.join(', ')})`);
    }
  }
  const events = req.recentEvents ?? [];
  if (events.length > limits.maxEvents) throw new InvalidRequest(`recent_events has ${events.length} events, the limit is streams.tMid = ${limits.maxEvents}`);
  return { userId, k, events: events.length > 0 ? historyFromEvents(userId, events) : null, history: history ?? (events.length > 0 ? 'request' : 'store'), options };
}

/** The request's events as a History (seq = position); throws InvalidRequest naming `recent_events[i].field`. */
export function historyFromEvents(userId: number, events: WireRecentEvent[], firstSeq = 0): History {
  const n = events.length;
  const h = allocHistory(userId, n);
  const tags: number[] = [];
  let lastTs = -Infinity;
  events.forEach((e, i) => {
    const bad = (field: string, why: string) => new InvalidRequest(`recent_events[${i}].${field}: ${why}`);
    if (!Number.isInteger(e.itemId) || e.itemId <= 0) throw bad('item_id', `must be a positive integer, got ${e.itemId}`);
    if (!Number.isSafeInteger(e.tsMs) || e.tsMs < 0) throw bad('ts_ms', `must be epoch ms ≥ 0 (0 = unknown), got ${e.tsMs}`);
    if (e.tsMs > 0) {
      if (e.tsMs < lastTs) throw bad('ts_ms', `${e.tsMs} is before the previous event's ${lastTs} (events must be oldest first)`);
      lastTs = e.tsMs;
    }
    if (!Number.isInteger(e.authorId) || e.authorId < 0) throw bad('author_id', `must be ≥ 0, got ${e.authorId}`);
    if (!Number.isFinite(e.playMs) || e.playMs < 0) throw bad('play_ms', `must be a finite number ≥ 0, got ${e.playMs}`);
    if (!Number.isFinite(e.durationMs) || e.durationMs < 0) throw bad('duration_ms', `must be a finite number ≥ 0, got ${e.durationMs}`);
    if (!Number.isInteger(e.labels) || e.labels < 0 || e.labels > 31) throw bad('labels', `must be a bit set in [0, 31], got ${e.labels}`);
    (e.tagIds ?? []).forEach((t, j) => {
      if (!Number.isInteger(t) || t <= 0) throw bad(`tag_ids[${j}]`, `must be a positive integer, got ${t}`);
      tags.push(t);
    });
    h.itemId[i] = e.itemId;
    h.ts[i] = e.tsMs > 0 ? e.tsMs : NaN;
    h.seq[i] = firstSeq + i;
    h.authorId[i] = e.authorId;
    h.tagOffsets[i + 1] = tags.length;
    h.playMs[i] = e.playMs;
    h.durationMs[i] = e.durationMs;
    h.labels[i] = e.labels;
  });
  h.tagIds = Int32Array.from(tags);
  return h;
}

// --- the service ---------------------------------------------------------------------------------------------------

/** Where lifecycle memories come from: a MemoryStore in process or a LifecycleMemoryClient (both fit). */
export interface MemorySource {
  getMany(userIds: number[]): Promise<(LifecycleMemory | null)[]>;
}

export interface RecommenderServiceOptions {
  config: GemsConfig;
  history: HistoryStore;
  /** null = no lifecycle memories (the lifecycle stream then comes from events, if the model reads them). */
  memories: MemorySource | null;
  model: RecommenderModel;
  /** Builds a fresh model for reload() without an argument (e.g. from the checkpoint directory). */
  loadModel?: () => Promise<RecommenderModel>;
  /** Catalogue titles (item id → title). */
  titles?: Map<number, string>;
  metrics?: ServiceMetrics;
  log?: Logger;
  /** Overrides config.serving.maxBatchSize / maxWaitMs / maxQueue. */
  batching?: Partial<BatcherOptions>;
}

interface Job {
  request: ParsedRequest;
}

/**
 * A store that reads many users' histories in one query. Used for a batch's reads when the store has it (one
 * DuckDB round trip per batch instead of one per user); otherwise the service reads user by user.
 */
interface BatchReadStore {
  userHistories(userIds: number[]): Promise<History[]>;
}

/** Extra metrics of this service, registered once per registry. */
function serviceMetrics(metrics: ServiceMetrics | undefined) {
  if (!metrics) return null;
  const reg = metrics.registry;
  const get = <M>(name: string, make: () => M): M => (reg.getSingleMetric(name) as M | undefined) ?? make();
  return {
    answers: get(
      'gems_recommendations_total',
      () => new Counter({ name: 'gems_recommendations_total', help: 'Answers by strategy (gems, popular_in_interests, popular_overall)', labelNames: ['strategy'] as const, registers: [reg] }),
    ),
    reloads: get('gems_model_reloads_total', () => new Counter({ name: 'gems_model_reloads_total', help: 'Model hot-swaps by outcome', labelNames: ['outcome'] as const, registers: [reg] })),
    lifecycleSource: get(
      'gems_lifecycle_source_total',
      () => new Counter({ name: 'gems_lifecycle_source_total', help: 'How served users got their lifecycle stream (memory, or computed from events and why)', labelNames: ['outcome'] as const, registers: [reg] }),
    ),
    inflight: get('gems_recommender_inflight', () => new Gauge({ name: 'gems_recommender_inflight', help: 'Admitted GetRecommendations calls not yet answered', registers: [reg] })),
  };
}

export class RecommenderService {
  readonly config: GemsConfig;
  private model: RecommenderModel;
  private readonly inUse = new Map<RecommenderModel, number>();
  private readonly retired = new Set<RecommenderModel>();
  private readonly batcher: MicroBatcher<Job, RecommendOutput>;
  private readonly batching: BatcherOptions;
  private readonly log: Logger;
  private readonly extra: ReturnType<typeof serviceMetrics>;
  private admitted = 0;
  private reloading: Promise<RecommenderModel> | null = null;
  private stopWatch: (() => void) | null = null;

  constructor(private readonly opts: RecommenderServiceOptions) {
    this.config = opts.config;
    this.model = opts.model;
    this.log = opts.log ?? logger('serving.recommender');
    this.extra = serviceMetrics(opts.metrics);
    const s = opts.config.serving;
    this.batching = { maxBatchSize: s.maxBatchSize, maxWaitMs: s.maxWaitMs, maxQueue: s.maxQueue, ...opts.batching };
    this.batcher = new MicroBatcher<Job, RecommendOutput>(
      this.batching,
      (jobs) => this.runBatch(jobs),
      (size, depth) => {
        opts.metrics?.batchSize.observe(size);
        opts.metrics?.queueDepth.set(depth);
      },
    );
  }

  get modelVersion(): string {
    return this.model.version;
  }
  get modelKind(): string {
    return this.model.kind;
  }
  get batchStats() {
    return this.batcher.stats;
  }

  /** Admission limit: requests reading history + queued + running. Past it: RESOURCE_EXHAUSTED at once. */
  get admissionLimit(): number {
    return this.batching.maxQueue + this.batching.maxBatchSize;
  }

  // ---- model lifecycle ---------------------------------------------------------------------------------------

  /**
   * Swaps in a new model (given, or built by options.loadModel). Batches already running finish on the old one,
   * which is disposed when its last batch ends. Concurrent reloads share one load. A failed load keeps the old model.
   */
  async reload(next?: RecommenderModel): Promise<RecommenderModel> {
    if (!next) {
      if (!this.opts.loadModel) throw new Error('reload(): no model given and no loadModel configured');
      this.reloading ??= this.opts.loadModel().finally(() => (this.reloading = null));
      try {
        next = await this.reloading;
      } catch (e) {
        this.extra?.reloads.inc({ outcome: 'failed' });
        this.log.error('model reload failed; keeping the current model', { version: this.model.version, error: (e as Error).message });
        throw e;
      }
    }
    const old = this.model;
    if (next === old) return old;
    this.model = next;
    this.extra?.reloads.inc({ outcome: 'ok' });
    this.log.info('model swapped', { from: old.version, to: next.version, kind: next.kind });
    this.retire(old);
    return next;
  }

  private retire(m: RecommenderModel): void {
    if ((this.inUse.get(m) ?? 0) > 0) this.retired.add(m);
    else m.dispose?.();
  }

  /**
   * Polls `stampOf()` every `pollMs` and reloads when it changes (e.g. a checkpoint's meta.json replaced by a new
   * training run). Returns a stop function.
   */
  watch(stampOf: () => string | null, pollMs: number): () => void {
    this.stopWatch?.();
    let last = stampOf();
    let failedAt: string | null = null;
    const timer = setInterval(() => {
      const now = stampOf();
      if (now === null || now === last || now === failedAt || this.reloading) return;
      this.log.info('model source changed; reloading', { stamp: now });
      this.reload().then(
        () => {
          last = now;
        },
        () => {
          failedAt = now;
        },
      );
    }, pollMs);
    timer.unref();
    this.stopWatch = () => clearInterval(timer);
    return this.stopWatch;
  }

  // ---- batches ---------------------------------------------------------------------------------------------

  // History reads happen here, per batch, not per request before queueing: the store answers one query at a time
  // and the model holds the event loop while it runs, so reads made before queueing would trickle into the batcher
  // one by one and batches would stay small (measured: mean batch 1.7 at 64 concurrent callers).
  private async runBatch(jobs: Job[]): Promise<(RecommendOutput | Error)[]> {
    const t0 = performance.now();
    const streams = await this.readStreams(jobs.map((j) => j.request));
    const out: (RecommendOutput | Error)[] = new Array(jobs.length);
    const inputs: RecommendInput[] = [];
    const slots: number[] = [];
    jobs.forEach((j, i) => {
      const s = streams[i]!;
      if (s instanceof Error) out[i] = s;
      else {
        inputs.push({ userId: j.request.userId, k: j.request.k, streams: s, memory: null, options: j.request.options });
        slots.push(i);
      }
    });
    if (inputs.length === 0) return out;
    await this.attachMemories(inputs);
    const tRead = performance.now();
    const model = this.model;
    this.inUse.set(model, (this.inUse.get(model) ?? 0) + 1);
    try {
      const res = await model.recommendBatch(inputs);
      slots.forEach((i, j) => (out[i] = res[j] ?? new Error('model returned no result for a request')));
      const ms = (a: number, b: number) => Math.round((b - a) * 100) / 100;
      this.log.debug('batch', { size: inputs.length, readMs: ms(t0, tRead), modelMs: ms(tRead, performance.now()), model: model.version });
      return out;
    } finally {
      const left = this.inUse.get(model)! - 1;
      if (left > 0) this.inUse.set(model, left);
      else {
        this.inUse.delete(model);
        if (this.retired.delete(model)) model.dispose?.();
      }
    }
  }

  /** One memory read for the whole batch. A failing memory source degrades to "no memory", it does not fail calls. */
  private async attachMemories(inputs: RecommendInput[]): Promise<void> {
    const src = this.opts.memories;
    if (!src) return;
    const ids = [...new Set(inputs.map((x) => x.userId))];
    let found: (LifecycleMemory | null)[];
    try {
      found = await src.getMany(ids);
    } catch (e) {
      this.log.warn('lifecycle memory read failed; answering without memories', { users: ids.length, error: (e as Error).message });
      return;
    }
    const byId = new Map<number, LifecycleMemory>();
    ids.forEach((id, i) => {
      const m = found[i];
      if (m) byId.set(id, m);
    });
    this.opts.metrics?.memoryHits.inc(byId.size);
    this.opts.metrics?.memoryMisses.inc(ids.length - byId.size);
    for (const x of inputs) x.memory = byId.get(x.userId) ?? null;
  }

  // ---- one request ------------------------------------------------------------------------------------------

  /**
   * Each request's streams as it asks: from the store, from the request, or both (request events appended). Stored
   * histories of the batch are read in one call when the store supports it. A failed read fails only its request.
   */
  private async readStreams(reqs: ParsedRequest[]): Promise<(Streams | Error)[]> {
    const { tRecent, tMid } = this.config.streams;
    const store = this.opts.history;
    const needStore = [...new Set(reqs.filter((p) => p.history !== 'request').map((p) => p.userId))];
    const stored = new Map<number, History | Error>();
    if (needStore.length > 0) {
      const batchRead = (store as HistoryStore & Partial<BatchReadStore>).userHistories;
      if (typeof batchRead === 'function') {
        try {
          const hs = await batchRead.call(store, needStore);
          needStore.forEach((id, i) => stored.set(id, hs[i] ?? emptyHistory(id)));
        } catch (e) {
          needStore.forEach((id) => stored.set(id, e as Error));
        }
      } else {
        const hs = await Promise.all(needStore.map((id) => store.userHistory(id).catch((e: Error) => e)));
        needStore.forEach((id, i) => stored.set(id, hs[i]!));
      }
    }
    return reqs.map((p) => {
      if (p.history === 'request') return cutStreams(p.events ?? emptyHistory(p.userId), tRecent, tMid);
      const h = stored.get(p.userId)!;
      if (h instanceof Error) {
        this.log.error('history read failed', { userId: p.userId, error: h.message });
        return new Error(`history read failed: ${h.message}`);
      }
      if (p.history === 'store' || !p.events) return cutStreams(h, tRecent, tMid);
      const lastSeq = h.length > 0 ? h.seq[h.length - 1]! + 1 : 0;
      const events = { ...p.events, seq: Int32Array.from(p.events.seq, (s) => s + lastSeq) };
      return cutStreams(concatHistories(p.userId, [h, events]), tRecent, tMid);
    });
  }

  /** Runs one request through validation, history read and the batcher (also used in process by benchmarks). */
  async recommend(req: GetRecommendationsRequest, deadlineMs = Infinity): Promise<GetRecommendationsResponse> {
    const p = parseRequest(req, { maxK: this.config.serving.maxK, maxEvents: this.config.streams.tMid });
    if (this.admitted >= this.admissionLimit) throw new QueueFullError(`recommender is at capacity (${this.admitted} calls in flight, limit ${this.admissionLimit})`);
    this.admitted++;
    this.extra?.inflight.set(this.admitted);
    try {
      const pending = this.batcher.submit({ request: p }, deadlineMs);
      this.opts.metrics?.queueDepth.set(this.batcher.queueDepth);
      const out = await pending;
      this.extra?.answers.inc({ strategy: out.strategy });
      return this.toWire(p.userId, out);
    } finally {
      this.admitted--;
      this.extra?.inflight.set(this.admitted);
    }
  }

  private toWire(userId: number, out: RecommendOutput): GetRecommendationsResponse {
    const W = out.sidWidth;
    const titles = this.opts.titles;
    const items: WireItem[] = [];
    for (let i = 0; i < out.items.length; i++) {
      const id = out.items[i]!;
      const codes = W > 0 ? Array.from(out.sids.subarray(i * W, i * W + W)) : [];
      items.push({ itemId: id, score: out.scores[i]!, semanticId: codes.some((c) => c < 0) ? [] : codes, title: titles?.get(id) ?? '' });
    }
    return {
      userId,
      items,
      attention: { ...out.attention },
      streamsUsed: out.streamsUsed,
      coldStart: out.coldStart,
      strategy: out.strategy,
      modelVersion: this.model.version,
      lifecycleSource: out.lifecycleSource,
    };
  }

  /** gRPC handlers, to register on a server (startRecommenderServer does that). */
  registration(): ServiceRegistration {
    const { definition } = serviceOf(recommenderPackageDefinition(), RECOMMENDER_SERVICE);
    const metrics = this.opts.metrics;
    const implementation: grpc.UntypedServiceImplementation = {
      [METHOD]: (call: grpc.ServerUnaryCall<GetRecommendationsRequest, GetRecommendationsResponse>, cb: grpc.sendUnaryData<GetRecommendationsResponse>) => {
        const t0 = performance.now();
        const finish = (err: grpc.ServiceError | null, res?: GetRecommendationsResponse) => {
          const gone = callGone(call);
          const code = gone ? (deadlinePassed(call) ? grpc.status.DEADLINE_EXCEEDED : grpc.status.CANCELLED) : err ? err.code : grpc.status.OK;
          const ms = performance.now() - t0;
          metrics?.observe(METHOD, statusName(code), ms / 1000);
          const fields = { userId: call.request.userId, k: call.request.k, status: statusName(code), ms: Math.round(ms * 100) / 100 };
          if (code === grpc.status.OK) this.log.debug('GetRecommendations', { ...fields, strategy: res?.strategy, items: res?.items.length });
          else if (code === grpc.status.INTERNAL || code === grpc.status.UNKNOWN) this.log.error('GetRecommendations failed', { ...fields, error: err?.details });
          else this.log.info('GetRecommendations refused', { ...fields, error: err?.details });
          if (gone) return;
          if (err) cb(err);
          else cb(null, res);
        };
        if (callGone(call)) return finish(null);
        const d = call.getDeadline();
        const deadlineMs = d instanceof Date ? d.getTime() : Number.isFinite(d) && d > 0 ? d : Infinity;
        this.recommend(call.request, deadlineMs).then(
          (res) => finish(null, res),
          (e: Error) => finish(toRpcError(e)),
        );
      },
    };
    return { name: RECOMMENDER_SERVICE, definition, implementation };
  }

  /** Stops the watcher, answers everything queued (graceful shutdown), then releases the model. */
  async close(): Promise<void> {
    this.stopWatch?.();
    await this.batcher.drain();
    this.model.dispose?.();
  }
}

export function toRpcError(e: Error): grpc.ServiceError {
  if (e instanceof InvalidRequest) return rpcError(grpc.status.INVALID_ARGUMENT, e.message);
  if (e instanceof QueueFullError) return rpcError(grpc.status.RESOURCE_EXHAUSTED, `${e.message}; retry with backoff`);
  if (e instanceof DeadlineExceededError) return rpcError(grpc.status.DEADLINE_EXCEEDED, e.message);
  if (e.message === 'batcher is shut down') return rpcError(grpc.status.UNAVAILABLE, 'recommender is shutting down');
  return rpcError(grpc.status.INTERNAL, `recommendation failed: ${e.message}`);
}

// --- building the served model from configuration ----------------------------------------------------------------

/** The checkpoint directory the recommender serves (config.serving.checkpoint, else the default run's best). */
export function checkpointDirOf(config: GemsConfig): string {
  return config.serving.checkpoint || join(resolvedPaths(config).checkpoints, 'gems', 'best');
}

/**
 * The model for a configuration: GEMs (hybrid with the popularity fallback) when the checkpoint exists, else the
 * popularity model alone. Semantic IDs for cold-start answers come from the checkpoint, or the current tokenizer.
 */
export async function buildModel(
  config: GemsConfig,
  history: HistoryStore,
  log: Logger = logger('serving.recommender'),
  metrics?: ServiceMetrics,
): Promise<RecommenderModel> {
  const popularity = await popularityFromStore(history);
  const { checkpointStamp } = await import('./gemsRecommender.js');
  const dir = checkpointDirOf(config);
  if (checkpointStamp(dir) !== null) {
    const { initBackend } = await import('../compute/backend.js');
    await initBackend();
    const { GemsRecommender, HybridRecommender } = await import('./gemsRecommender.js');
    const gems = GemsRecommender.load(dir, { reserveReturns: config.serving.reserveReturns, renormalize: config.serving.renormalize });
    log.info('serving GEMs checkpoint', { dir, version: gems.version, lifecycle: gems.useMemories ? 'memory' : 'history', coldStartMinEvents: config.serving.coldStartMinEvents, reserveReturns: gems.reserveReturns, renormalize: gems.renormalize });
    // The memories in the store are cut at streams.tMid: a model trained at another T_mid would read shifted streams.
    const trainedTMid = gems.loaded.meta.train['lifecycleTMid'];
    if (gems.useMemories && typeof trainedTMid === 'number' && trainedTMid !== config.streams.tMid) {
      log.warn('model was trained on memories cut at another T_mid than this service uses', { modelTMid: trainedTMid, configTMid: config.streams.tMid });
    }
    const lifecycleSource = serviceMetrics(metrics)?.lifecycleSource;
    if (lifecycleSource) gems.onLifecycle = (outcome) => lifecycleSource.inc({ outcome });
    return new HybridRecommender(gems, new PopularityModel(popularity, gems.sid), config.serving.coldStartMinEvents);
  }
  if (config.serving.checkpoint) throw new Error(`config serving.checkpoint: ${dir} has no checkpoint (meta.json missing)`);
  const sid = await currentTokenizer(history);
  log.warn('no GEMs checkpoint yet: serving popular items (cold-start model) to everyone', { expected: dir, items: popularity.size, semanticIds: sid !== null });
  return new PopularityModel(popularity, sid);
}

/** The store's current tokenizer version, or null when none was built (or the store keeps no tokenizer tables). */
async function currentTokenizer(history: HistoryStore): Promise<SidLookup | null> {
  const h = history as HistoryStore & { withDb?: <T>(fn: (db: never) => Promise<T>) => Promise<T> };
  if (typeof h.withDb !== 'function') return null;
  const { loadTokenizer, TokenizerNotFoundError } = await import('../tokenizer/store.js');
  try {
    return await h.withDb((db) => loadTokenizer(db));
  } catch (e) {
    if (e instanceof TokenizerNotFoundError) return null;
    throw e;
  }
}

export interface StartRecommenderOptions extends Omit<RecommenderServiceOptions, 'model' | 'loadModel'> {
  /** Defaults to buildModel(config, history). */
  model?: RecommenderModel;
  loadModel?: () => Promise<RecommenderModel>;
  /** Overrides config.serving.host / recommenderPort (tests pass port 0). */
  host?: string;
  port?: number;
  /** More services on the same server (colocated memory service). */
  extraServices?: ServiceRegistration[];
  extraReflect?: protoLoader.PackageDefinition[];
  /** Poll the checkpoint for hot-swap (default config.serving.reloadPollMs when the model came from buildModel). */
  watchCheckpoint?: boolean;
}

export interface RecommenderServer {
  service: RecommenderService;
  handle: GrpcServerHandle;
  /** Graceful stop: refuse new calls, answer in-flight ones (up to graceMs), drain the batcher, release the model. */
  stop(graceMs?: number): Promise<{ forced: boolean }>;
}

/** Starts a gRPC server with the recommender (and any extra services), health and reflection. */
export async function startRecommenderServer(opts: StartRecommenderOptions): Promise<RecommenderServer> {
  const { config } = opts;
  const log = opts.log ?? logger('serving.recommender');
  const loadModel = opts.loadModel ?? (() => buildModel(config, opts.history, log, opts.metrics));
  const model = opts.model ?? (await loadModel());
  const service = new RecommenderService({ ...opts, model, loadModel, log });
  let handle: GrpcServerHandle;
  try {
    handle = await startGrpcServer({
      host: opts.host ?? config.serving.host,
      port: opts.port ?? config.serving.recommenderPort,
      services: [service.registration(), ...(opts.extraServices ?? [])],
      reflect: [recommenderPackageDefinition(), ...(opts.extraReflect ?? [])],
      tls: config.serving,
      log,
    });
  } catch (e) {
    await service.close();
    throw e;
  }
  const watch = opts.watchCheckpoint ?? (opts.model === undefined && config.serving.reloadPollMs > 0);
  if (watch) {
    const { checkpointStamp } = await import('./gemsRecommender.js');
    const dir = checkpointDirOf(config);
    service.watch(() => checkpointStamp(dir), config.serving.reloadPollMs);
    log.info('watching checkpoint for hot-swap', { dir, pollMs: config.serving.reloadPollMs });
  }
  log.info('recommender serving', { address: handle.address, model: service.modelVersion, kind: service.modelKind, batching: { maxBatchSize: config.serving.maxBatchSize, maxWaitMs: config.serving.maxWaitMs, maxQueue: config.serving.maxQueue } });
  let stopping: Promise<{ forced: boolean }> | null = null;
  const stop = (graceMs = 10_000) =>
    (stopping ??= (async () => {
      const r = await handle.shutdown(graceMs);
      await service.close();
      return r;
    })());
  return { service, handle, stop };
}

// --- client ------------------------------------------------------------------------------------------------------

export interface RecommenderClientOptions {
  /** Deadline for each call unless one is given (default 5 s). */
  deadlineMs?: number;
  tls?: { ca?: string | Buffer; serverNameOverride?: string };
}

export interface RecommendCall {
  userId: number;
  k: number;
  recentEvents?: Partial<WireRecentEvent>[];
  options?: Record<string, string>;
  deadlineMs?: number;
}

/** Promise client for gems.v1.RecommenderService (the main job, tests and benchmarks use it). */
export class RecommenderClient {
  readonly raw: grpc.Client & Record<string, any>;
  private readonly deadlineMs: number;

  constructor(address: string, opts: RecommenderClientOptions = {}) {
    const { Client } = serviceOf(recommenderPackageDefinition(), RECOMMENDER_SERVICE);
    this.raw = new Client(address, clientCredentials(opts), clientOptions(opts)) as grpc.Client & Record<string, any>;
    this.deadlineMs = opts.deadlineMs ?? 5000;
  }

  recommend(c: RecommendCall): Promise<GetRecommendationsResponse> {
    const req = { userId: c.userId, k: c.k, recentEvents: c.recentEvents ?? [], options: c.options ?? {} };
    const deadline = Date.now() + (c.deadlineMs ?? this.deadlineMs);
    return new Promise((resolveCall, reject) => {
      this.raw[METHOD]!(req, new grpc.Metadata(), { deadline }, (err: grpc.ServiceError | null, res: GetRecommendationsResponse) => (err ? reject(err) : resolveCall(res)));
    });
  }

  close(): void {
    this.raw.close();
  }
}
