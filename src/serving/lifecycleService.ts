// gems.v1.LifecycleMemoryService: serves lifecycle memories from the memory store (lmdb or redis) to the inference
// service, and accepts writes from remote compressors. The server ships the stored vector bytes as they are (after
// validating the value's checksum): no decode / re-encode on the hot path. Also the client used by the
// recommender when memories live on another machine (config.serving.memoryRemote).
import * as grpc from '@grpc/grpc-js';
import type * as protoLoader from '@grpc/proto-loader';
import type { GemsConfig } from '../config/config.js';
import { CorruptMemoryError, type LifecycleMemory, type MemoryStore } from '../lifecycle/memory.js';
import { float16BytesToFloat32, float32FromBytes, float32ToBytes, readLayout, type MemoryLayout } from '../lifecycle/memoryFormat.js';
import { logger, type Logger } from '../util/log.js';
import type { ServiceMetrics } from './metrics.js';
import {
  bearerOk,
  callGone,
  deadlinePassed,
  clientCredentials,
  clientOptions,
  loadProtos,
  rpcError,
  serviceOf,
  startGrpcServer,
  statusName,
  type ClientTransportOptions,
  type GrpcServerHandle,
  type ServiceRegistration,
} from './grpc.js';

export const LIFECYCLE_SERVICE = 'gems.v1.LifecycleMemoryService';
/** Default cap on users per BatchGetLifecycleMemory / memories per PutLifecycleMemory. */
export const DEFAULT_MAX_BATCH = 1000;

// --- wire messages (as @grpc/proto-loader decodes them with LOADER_OPTIONS) ----------------------------------------

export type WireDtype = 'DTYPE_UNSPECIFIED' | 'DTYPE_FLOAT32' | 'DTYPE_FLOAT16';
export interface WireMetadata {
  formatVersion: number;
  compressorVersion: string;
  slots: number;
  dim: number;
  dtype: WireDtype;
  watermark: number;
  eventsCovered: number;
  createdAtMs: number;
}
export interface WireMemory {
  userId: number;
  metadata: WireMetadata | null;
  vectors: Buffer;
  state: Buffer;
}
export interface GetRequest {
  userId: number;
  includeState: boolean;
}
export interface GetResponse {
  memory: WireMemory | null;
}
export interface BatchGetRequest {
  userIds: number[];
  includeState: boolean;
}
export interface BatchGetResponse {
  memories: WireMemory[];
  missingUserIds: number[];
  corruptUserIds: number[];
}
export interface PutRequest {
  memories: WireMemory[];
}
export interface PutResponse {
  written: number;
}

let cachedDef: protoLoader.PackageDefinition | undefined;
export function lifecyclePackageDefinition(): protoLoader.PackageDefinition {
  return (cachedDef ??= loadProtos(['gems/v1/lifecycle.proto']));
}

/** A stored value (already validated into `layout`) → the wire message, sharing the value's bytes. */
export function wireFromEncoded(userId: number, raw: Buffer, layout: MemoryLayout, includeState: boolean): WireMemory {
  const h = layout.header;
  return {
    userId,
    metadata: {
      formatVersion: h.formatVersion,
      compressorVersion: h.compressorVersion,
      slots: h.slots,
      dim: h.dim,
      dtype: h.dtype === 'float16' ? 'DTYPE_FLOAT16' : 'DTYPE_FLOAT32',
      watermark: h.watermark,
      eventsCovered: h.eventsCovered,
      createdAtMs: h.createdAt,
    },
    vectors: raw.subarray(layout.vectorsOffset, layout.vectorsOffset + layout.vectorsBytes),
    state: includeState && layout.stateLength > 0 ? raw.subarray(layout.stateOffset, layout.stateOffset + layout.stateLength * 4) : Buffer.alloc(0),
  };
}

/** A memory → the wire message (float32 vectors; the server's store decides the stored dtype). */
export function wireFromMemory(m: LifecycleMemory): WireMemory {
  const h = m.header;
  return {
    userId: m.userId,
    metadata: {
      formatVersion: h.formatVersion,
      compressorVersion: h.compressorVersion,
      slots: h.slots,
      dim: h.dim,
      dtype: 'DTYPE_FLOAT32',
      watermark: h.watermark,
      eventsCovered: h.eventsCovered,
      createdAtMs: h.createdAt,
    },
    vectors: float32ToBytes(m.vectors),
    state: m.state ? float32ToBytes(m.state) : Buffer.alloc(0),
  };
}

/**
 * A wire message → a memory, validating every field; throws InvalidField naming it (`memories[3].vectors: …`).
 */
export class InvalidField extends Error {
  override name = 'InvalidField';
}

export function memoryFromWire(w: WireMemory, where = 'memory'): LifecycleMemory {
  const bad = (field: string, why: string) => new InvalidField(`${where}.${field}: ${why}`);
  if (!Number.isSafeInteger(w.userId) || w.userId <= 0) throw bad('user_id', `must be a positive integer, got ${w.userId}`);
  const md = w.metadata;
  if (!md) throw bad('metadata', 'is required');
  if (!Number.isInteger(md.slots) || md.slots < 1) throw bad('metadata.slots', `must be ≥ 1, got ${md.slots}`);
  if (!Number.isInteger(md.dim) || md.dim < 1) throw bad('metadata.dim', `must be ≥ 1, got ${md.dim}`);
  if (md.dtype !== 'DTYPE_FLOAT32' && md.dtype !== 'DTYPE_FLOAT16') throw bad('metadata.dtype', `must be DTYPE_FLOAT32 or DTYPE_FLOAT16, got ${md.dtype}`);
  const elem = md.dtype === 'DTYPE_FLOAT16' ? 2 : 4;
  const want = md.slots * md.dim * elem;
  if (w.vectors.length !== want) throw bad('vectors', `has ${w.vectors.length} bytes, slots × dim × ${elem} = ${want}`);
  if (w.state.length % 4 !== 0) throw bad('state', `has ${w.state.length} bytes, not a multiple of 4 (float32)`);
  if (!md.compressorVersion) throw bad('metadata.compressor_version', 'is required');
  const memory: LifecycleMemory = {
    userId: w.userId,
    header: {
      formatVersion: md.formatVersion,
      compressorVersion: md.compressorVersion,
      slots: md.slots,
      dim: md.dim,
      dtype: md.dtype === 'DTYPE_FLOAT16' ? 'float16' : 'float32',
      watermark: md.watermark,
      eventsCovered: md.eventsCovered,
      createdAt: md.createdAtMs,
    },
    vectors: md.dtype === 'DTYPE_FLOAT16' ? float16BytesToFloat32(w.vectors) : float32FromBytes(w.vectors),
  };
  if (w.state.length > 0) memory.state = float32FromBytes(w.state);
  return memory;
}

// --- server ------------------------------------------------------------------------------------------------------

export interface LifecycleServiceOptions {
  store: MemoryStore;
  /** Bearer token PutLifecycleMemory requires ('' = no auth). */
  authToken?: string;
  maxBatch?: number;
  metrics?: ServiceMetrics;
  log?: Logger;
}

const validUserId = (id: unknown): id is number => typeof id === 'number' && Number.isSafeInteger(id) && id > 0;

/** The service's handlers, to register on a server (startLifecycleServer does that for you). */
export function lifecycleServiceRegistration(opts: LifecycleServiceOptions): ServiceRegistration {
  const { store, metrics } = opts;
  const log = opts.log ?? logger('serving.lifecycle');
  const maxBatch = opts.maxBatch ?? DEFAULT_MAX_BATCH;
  const authToken = opts.authToken ?? '';
  const { definition } = serviceOf(lifecyclePackageDefinition(), LIFECYCLE_SERVICE);

  /** Finishes a call: answers unless the caller is gone, and records the outcome. */
  function finish<Res>(method: string, t0: number, call: grpc.ServerUnaryCall<any, Res>, cb: grpc.sendUnaryData<Res>, err: grpc.ServiceError | null, res?: Res): void {
    const gone = callGone(call);
    // grpc-js also marks a call cancelled when it answers DEADLINE_EXCEEDED itself, so test the deadline first.
    const code = gone ? (deadlinePassed(call) ? grpc.status.DEADLINE_EXCEEDED : grpc.status.CANCELLED) : err ? err.code : grpc.status.OK;
    metrics?.observe(method, statusName(code), (performance.now() - t0) / 1000);
    // A call whose deadline passed has already been answered DEADLINE_EXCEEDED by grpc-js; answering again is a no-op.
    if (gone) return;
    if (err) cb(err);
    else cb(null, res);
  }

  /** Validates a stored value; a corrupt one is logged and reported, never served. */
  function validate(userId: number, raw: Buffer): MemoryLayout | CorruptMemoryError {
    try {
      return readLayout(userId, raw);
    } catch (e) {
      if (!(e instanceof CorruptMemoryError)) throw e;
      log.error('corrupt lifecycle memory not served', { userId, reason: e.message, store: store.kind });
      return e;
    }
  }

  const internal = (e: unknown) => {
    log.error('memory store failure', { error: (e as Error).message, store: store.kind });
    return rpcError(grpc.status.INTERNAL, `memory store failure: ${(e as Error).message}`);
  };

  const implementation: grpc.UntypedServiceImplementation = {
    GetLifecycleMemory: (call: grpc.ServerUnaryCall<GetRequest, GetResponse>, cb: grpc.sendUnaryData<GetResponse>) => {
      const t0 = performance.now();
      const method = 'GetLifecycleMemory';
      const { userId, includeState } = call.request;
      if (!validUserId(userId)) {
        return finish(method, t0, call, cb, rpcError(grpc.status.INVALID_ARGUMENT, `user_id must be a positive integer, got ${userId}`));
      }
      if (callGone(call)) return finish(method, t0, call, cb, null);
      const answer = (raw: Buffer | null) => {
        if (!raw) {
          metrics?.memoryMisses.inc();
          return finish(method, t0, call, cb, rpcError(grpc.status.NOT_FOUND, `no lifecycle memory for user_id ${userId}`));
        }
        const layout = validate(userId, raw);
        if (layout instanceof CorruptMemoryError) {
          return finish(method, t0, call, cb, rpcError(grpc.status.INTERNAL, `${layout.message}; not served`));
        }
        metrics?.memoryHits.inc();
        finish(method, t0, call, cb, null, { memory: wireFromEncoded(userId, raw, layout, includeState) });
      };
      if (store.getEncodedSync) {
        // Embedded store (lmdb): answer in the same tick, no promise on the hot path.
        let raw: Buffer | null;
        try {
          raw = store.getEncodedSync(userId);
        } catch (e) {
          return finish(method, t0, call, cb, internal(e));
        }
        return answer(raw);
      }
      store.getEncoded(userId).then(answer, (e) => finish(method, t0, call, cb, internal(e)));
    },

    BatchGetLifecycleMemory: (call: grpc.ServerUnaryCall<BatchGetRequest, BatchGetResponse>, cb: grpc.sendUnaryData<BatchGetResponse>) => {
      const t0 = performance.now();
      const method = 'BatchGetLifecycleMemory';
      const { userIds, includeState } = call.request;
      if (userIds.length === 0) return finish(method, t0, call, cb, rpcError(grpc.status.INVALID_ARGUMENT, 'user_ids must not be empty'));
      if (userIds.length > maxBatch) {
        return finish(method, t0, call, cb, rpcError(grpc.status.INVALID_ARGUMENT, `user_ids has ${userIds.length} entries, the limit is ${maxBatch}`));
      }
      const badAt = userIds.findIndex((id) => !validUserId(id));
      if (badAt >= 0) {
        return finish(method, t0, call, cb, rpcError(grpc.status.INVALID_ARGUMENT, `user_ids[${badAt}] must be a positive integer, got ${userIds[badAt]}`));
      }
      if (callGone(call)) return finish(method, t0, call, cb, null);
      store.getEncodedMany(userIds).then(
        (raws) => {
          const res: BatchGetResponse = { memories: [], missingUserIds: [], corruptUserIds: [] };
          for (let i = 0; i < userIds.length; i++) {
            const id = userIds[i]!;
            const raw = raws[i];
            if (!raw) {
              res.missingUserIds.push(id);
              continue;
            }
            const layout = validate(id, raw);
            if (layout instanceof CorruptMemoryError) res.corruptUserIds.push(id);
            else res.memories.push(wireFromEncoded(id, raw, layout, includeState));
          }
          metrics?.memoryHits.inc(res.memories.length);
          metrics?.memoryMisses.inc(res.missingUserIds.length);
          finish(method, t0, call, cb, null, res);
        },
        (e) => finish(method, t0, call, cb, internal(e)),
      );
    },

    PutLifecycleMemory: (call: grpc.ServerUnaryCall<PutRequest, PutResponse>, cb: grpc.sendUnaryData<PutResponse>) => {
      const t0 = performance.now();
      const method = 'PutLifecycleMemory';
      if (!bearerOk(call.metadata, authToken)) {
        log.warn('PutLifecycleMemory refused: missing or wrong bearer token', { peer: call.getPeer() });
        return finish(method, t0, call, cb, rpcError(grpc.status.UNAUTHENTICATED, 'PutLifecycleMemory needs metadata authorization: Bearer <token>'));
      }
      const wire = call.request.memories;
      if (wire.length === 0) return finish(method, t0, call, cb, rpcError(grpc.status.INVALID_ARGUMENT, 'memories must not be empty'));
      if (wire.length > maxBatch) {
        return finish(method, t0, call, cb, rpcError(grpc.status.INVALID_ARGUMENT, `memories has ${wire.length} entries, the limit is ${maxBatch}`));
      }
      let memories: LifecycleMemory[];
      try {
        memories = wire.map((w, i) => memoryFromWire(w, `memories[${i}]`));
      } catch (e) {
        return finish(method, t0, call, cb, rpcError(grpc.status.INVALID_ARGUMENT, (e as Error).message));
      }
      if (callGone(call)) return finish(method, t0, call, cb, null);
      store.putMany(memories).then(
        () => finish(method, t0, call, cb, null, { written: memories.length }),
        (e) => finish(method, t0, call, cb, internal(e)),
      );
    },
  };
  return { name: LIFECYCLE_SERVICE, definition, implementation };
}

export interface StartLifecycleServerOptions extends LifecycleServiceOptions {
  config: GemsConfig;
  /** Overrides config.serving.host / memoryPort (tests pass port 0). */
  host?: string;
  port?: number;
  /** More services on the same server (the benchmark's NoOp). */
  extraServices?: ServiceRegistration[];
  extraReflect?: protoLoader.PackageDefinition[];
}

/** Starts a gRPC server with the lifecycle service, health and reflection (TLS when configured). */
export async function startLifecycleServer(opts: StartLifecycleServerOptions): Promise<GrpcServerHandle> {
  const { config } = opts;
  return startGrpcServer({
    host: opts.host ?? config.serving.host,
    port: opts.port ?? config.serving.memoryPort,
    services: [lifecycleServiceRegistration({ ...opts, authToken: opts.authToken ?? config.serving.authToken }), ...(opts.extraServices ?? [])],
    reflect: [lifecyclePackageDefinition(), ...(opts.extraReflect ?? [])],
    tls: config.serving,
    log: opts.log,
  });
}

// --- client ------------------------------------------------------------------------------------------------------

export interface LifecycleClientOptions extends ClientTransportOptions {
  /** Bearer token sent with PutLifecycleMemory. */
  token?: string;
  /** Deadline for each call unless one is given (default 5 s). */
  deadlineMs?: number;
}

export interface CallOptions {
  deadlineMs?: number;
  includeState?: boolean;
}

/** Promise client for gems.v1.LifecycleMemoryService. */
export class LifecycleMemoryClient {
  /** The generated client, for callers that want raw wire messages (benchmarks). */
  readonly raw: grpc.Client & Record<string, any>;
  private readonly token: string;
  private readonly deadlineMs: number;

  constructor(address: string, opts: LifecycleClientOptions = {}) {
    const { Client } = serviceOf(lifecyclePackageDefinition(), LIFECYCLE_SERVICE);
    this.raw = new Client(address, clientCredentials(opts), clientOptions(opts)) as grpc.Client & Record<string, any>;
    this.token = opts.token ?? '';
    this.deadlineMs = opts.deadlineMs ?? 5000;
  }

  private call<Req, Res>(method: string, req: Req, o: CallOptions, auth = false): Promise<Res> {
    const md = new grpc.Metadata();
    if (auth && this.token) md.set('authorization', `Bearer ${this.token}`);
    const deadline = Date.now() + (o.deadlineMs ?? this.deadlineMs);
    return new Promise((resolveCall, reject) => {
      this.raw[method]!(req, md, { deadline }, (err: grpc.ServiceError | null, res: Res) => (err ? reject(err) : resolveCall(res)));
    });
  }

  /** The user's memory, or null when the server has none (NOT_FOUND). Other statuses reject with the ServiceError. */
  async get(userId: number, o: CallOptions = {}): Promise<LifecycleMemory | null> {
    try {
      const res = await this.call<GetRequest, GetResponse>('GetLifecycleMemory', { userId, includeState: o.includeState ?? false }, o);
      return res.memory ? memoryFromWire(res.memory) : null;
    } catch (e) {
      if ((e as grpc.ServiceError).code === grpc.status.NOT_FOUND) return null;
      throw e;
    }
  }

  /** Memories in request order; null for users without one (and for corrupt ones, which the server does not serve). */
  async getMany(userIds: number[], o: CallOptions = {}): Promise<(LifecycleMemory | null)[]> {
    const res = await this.batchGet(userIds, o);
    const byId = new Map(res.memories.map((w) => [w.userId, w]));
    return userIds.map((id) => {
      const w = byId.get(id);
      return w ? memoryFromWire(w) : null;
    });
  }

  batchGet(userIds: number[], o: CallOptions = {}): Promise<BatchGetResponse> {
    return this.call<BatchGetRequest, BatchGetResponse>('BatchGetLifecycleMemory', { userIds, includeState: o.includeState ?? false }, o);
  }

  async put(memories: LifecycleMemory[], o: CallOptions = {}): Promise<number> {
    const res = await this.call<PutRequest, PutResponse>('PutLifecycleMemory', { memories: memories.map(wireFromMemory) }, o, true);
    return res.written;
  }

  close(): void {
    this.raw.close();
  }
}
