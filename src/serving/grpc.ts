// Shared gRPC plumbing for every gems service: proto loading, server creation (message size limits, TLS),
// the standard grpc.health.v1 service, server reflection, graceful shutdown, status helpers and client channels.
// A service file (lifecycleService.ts, the recommender) only supplies its handlers.
import { existsSync, readFileSync } from 'node:fs';
import { timingSafeEqual, createHash } from 'node:crypto';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import type { GemsConfig } from '../config/config.js';
import { logger, type Logger } from '../util/log.js';

/** 64 MiB: a 1,000-user batch of 64 × 64 float32 memories with QLA state is ~33 MB. */
export const DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/** Finds the repository's proto/ folder from here (works from src/ under tsx and from dist/src/ when built). */
export function protoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, 'proto');
    if (existsSync(join(candidate, 'gems', 'v1', 'lifecycle.proto'))) return candidate;
    dir = dirname(dir);
  }
  throw new Error(`cannot find the proto/ folder above ${fileURLToPath(import.meta.url)}`);
}

/**
 * Loader options every gems service uses: camelCase fields, int64 as JS numbers (ids and epoch ms fit in 2^53),
 * enums as their names, defaults filled in, bytes as Buffers.
 */
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** Loads .proto files (paths relative to an include dir; proto/ is always included). */
export function loadProtos(files: string[], includeDirs: string[] = []): protoLoader.PackageDefinition {
  return protoLoader.loadSync(files, { ...LOADER_OPTIONS, includeDirs: [...includeDirs, protoRoot()] });
}

/** The service definition and client constructor for a fully qualified service name, e.g. `gems.v1.Foo`. */
export function serviceOf(def: protoLoader.PackageDefinition, fullName: string): { definition: grpc.ServiceDefinition; Client: grpc.ServiceClientConstructor } {
  const obj = grpc.loadPackageDefinition(def);
  let node: any = obj;
  for (const part of fullName.split('.')) node = node?.[part];
  if (typeof node !== 'function' || !node.service) throw new Error(`service ${fullName} is not in the loaded protos`);
  return { definition: node.service as grpc.ServiceDefinition, Client: node as grpc.ServiceClientConstructor };
}

// --- status helpers ----------------------------------------------------------------------------------------------

/** An error a handler passes to its callback: the client sees `code` and `details`. */
export function rpcError(code: grpc.status, details: string): grpc.ServiceError {
  return Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });
}

export const statusName = (code: grpc.status): string => grpc.status[code] ?? String(code);

/** True when the caller gave up or its deadline passed: the handler should stop and not answer. */
export function callGone(call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>): boolean {
  return call.cancelled || deadlinePassed(call);
}

/** True when the call had a deadline and it has passed. */
export function deadlinePassed(call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>): boolean {
  const deadline = call.getDeadline();
  const ms = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(ms) && ms > 0 && Date.now() >= ms;
}

/** Constant-time check of `authorization: Bearer <token>` metadata. An empty expected token allows everyone. */
export function bearerOk(metadata: grpc.Metadata, expected: string): boolean {
  if (!expected) return true;
  const got = metadata.get('authorization')[0];
  if (typeof got !== 'string' || !got.startsWith('Bearer ')) return false;
  // Hash both sides so lengths match and the comparison leaks nothing about the token.
  const a = createHash('sha256').update(got.slice(7)).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

// --- TLS -------------------------------------------------------------------------------------------------------

/** A PEM given inline (starts with -----BEGIN) or as a file path. */
function readPem(value: string, key: string): Buffer {
  if (value.trimStart().startsWith('-----BEGIN')) return Buffer.from(value);
  if (!existsSync(value)) throw new Error(`config ${key}: file ${resolve(value)} does not exist`);
  return readFileSync(value);
}

/** TLS when both serving.tlsCert and serving.tlsKey are set; plaintext when neither; an error when only one is. */
export function serverCredentials(serving: Pick<GemsConfig['serving'], 'tlsCert' | 'tlsKey'>): grpc.ServerCredentials {
  const { tlsCert, tlsKey } = serving;
  if (!tlsCert && !tlsKey) return grpc.ServerCredentials.createInsecure();
  if (!tlsCert || !tlsKey) throw new Error(`config serving.${tlsCert ? 'tlsKey' : 'tlsCert'}: required when serving.${tlsCert ? 'tlsCert' : 'tlsKey'} is set`);
  return grpc.ServerCredentials.createSsl(null, [{ cert_chain: readPem(tlsCert, 'serving.tlsCert'), private_key: readPem(tlsKey, 'serving.tlsKey') }], false);
}

export interface ClientTransportOptions {
  /** Use TLS; `ca` (PEM or path) verifies a self-signed/private CA, else the system roots. */
  tls?: { ca?: string | Buffer; serverNameOverride?: string };
  maxMessageBytes?: number;
}

export function clientCredentials(opts: ClientTransportOptions): grpc.ChannelCredentials {
  if (!opts.tls) return grpc.credentials.createInsecure();
  const ca = opts.tls.ca === undefined ? null : Buffer.isBuffer(opts.tls.ca) ? opts.tls.ca : readPem(opts.tls.ca, 'tls ca');
  return grpc.credentials.createSsl(ca);
}

export function clientOptions(opts: ClientTransportOptions): grpc.ChannelOptions {
  const max = opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  const o: grpc.ChannelOptions = { 'grpc.max_receive_message_length': max, 'grpc.max_send_message_length': max };
  if (opts.tls?.serverNameOverride) o['grpc.ssl_target_name_override'] = opts.tls.serverNameOverride;
  return o;
}

// --- health (grpc.health.v1) ---------------------------------------------------------------------------------------

export type ServingStatus = 'UNKNOWN' | 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN';
type HealthReq = { service: string };
type HealthRes = { status: ServingStatus };

/**
 * The standard health service. The overall server is the empty service name. Check answers NOT_FOUND for an
 * unknown service (as the spec says); Watch streams the current status and every change until the caller leaves
 * or the server shuts down.
 */
export class HealthService {
  private readonly statuses = new Map<string, ServingStatus>();
  private readonly watchers = new Map<string, Set<grpc.ServerWritableStream<HealthReq, HealthRes>>>();

  set(service: string, status: ServingStatus): void {
    this.statuses.set(service, status);
    for (const call of this.watchers.get(service) ?? []) call.write({ status });
  }

  /** Sets every registered service (and the server) at once, e.g. NOT_SERVING when shutdown starts. */
  setAll(status: ServingStatus): void {
    for (const name of [...this.statuses.keys()]) this.set(name, status);
  }

  get(service: string): ServingStatus | undefined {
    return this.statuses.get(service);
  }

  /** Ends every open Watch stream (they would otherwise hold a graceful shutdown open forever). */
  endWatches(): void {
    for (const set of this.watchers.values()) for (const call of set) call.end();
    this.watchers.clear();
  }

  addToServer(server: grpc.Server): void {
    const { definition } = serviceOf(loadProtos(['grpc/health/v1/health.proto']), 'grpc.health.v1.Health');
    server.addService(definition, {
      Check: (call: grpc.ServerUnaryCall<HealthReq, HealthRes>, cb: grpc.sendUnaryData<HealthRes>) => {
        const status = this.statuses.get(call.request.service);
        if (status === undefined) cb(rpcError(grpc.status.NOT_FOUND, `unknown service '${call.request.service}'`));
        else cb(null, { status });
      },
      Watch: (call: grpc.ServerWritableStream<HealthReq, HealthRes>) => {
        const name = call.request.service;
        call.write({ status: this.statuses.get(name) ?? 'SERVICE_UNKNOWN' });
        let set = this.watchers.get(name);
        if (!set) this.watchers.set(name, (set = new Set()));
        set.add(call);
        call.on('cancelled', () => set!.delete(call));
      },
    });
  }
}

// --- server ------------------------------------------------------------------------------------------------------

export interface ServiceRegistration {
  /** Fully qualified name, e.g. gems.v1.LifecycleMemoryService (also the health-check name). */
  name: string;
  definition: grpc.ServiceDefinition;
  implementation: grpc.UntypedServiceImplementation;
}

export interface StartServerOptions {
  host: string;
  /** 0 = any free port. */
  port: number;
  services: ServiceRegistration[];
  /** Package definitions to describe through server reflection (health is added automatically). */
  reflect: protoLoader.PackageDefinition[];
  tls?: Pick<GemsConfig['serving'], 'tlsCert' | 'tlsKey'>;
  maxMessageBytes?: number;
  log?: Logger;
}

export interface GrpcServerHandle {
  server: grpc.Server;
  health: HealthService;
  host: string;
  port: number;
  /** host:port to dial. */
  address: string;
  tls: boolean;
  /**
   * Graceful shutdown: health goes NOT_SERVING, new calls are refused, in-flight calls run to completion for up to
   * `graceMs`, after which the remaining ones are cancelled. Resolves when the server is down.
   */
  shutdown(graceMs?: number): Promise<{ forced: boolean }>;
}

export async function startGrpcServer(opts: StartServerOptions): Promise<GrpcServerHandle> {
  const log = opts.log ?? logger('grpc');
  const max = opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  const server = new grpc.Server({
    'grpc.max_receive_message_length': max,
    'grpc.max_send_message_length': max,
  });
  const health = new HealthService();
  health.addToServer(server);
  for (const s of opts.services) {
    server.addService(s.definition, s.implementation);
    health.set(s.name, 'SERVING');
  }
  health.set('', 'SERVING');

  const healthDef = loadProtos(['grpc/health/v1/health.proto']);
  const merged: protoLoader.PackageDefinition = Object.assign({}, healthDef, ...opts.reflect);
  new ReflectionService(merged).addToServer(server);

  const creds = serverCredentials(opts.tls ?? { tlsCert: '', tlsKey: '' });
  const tls = Boolean(opts.tls?.tlsCert);
  const port = await new Promise<number>((resolveBind, reject) => {
    server.bindAsync(`${opts.host}:${opts.port}`, creds, (err, bound) => (err ? reject(new Error(`cannot listen on ${opts.host}:${opts.port}: ${err.message}`, { cause: err })) : resolveBind(bound)));
  });
  const hostForDial = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  log.info('gRPC server listening', { address: `${hostForDial}:${port}`, tls, services: opts.services.map((s) => s.name) });

  let shuttingDown: Promise<{ forced: boolean }> | undefined;
  const shutdown = (graceMs = 10_000): Promise<{ forced: boolean }> => {
    shuttingDown ??= new Promise((resolveDown) => {
      health.setAll('NOT_SERVING');
      health.endWatches();
      let done = false;
      const timer = setTimeout(() => {
        if (done) return;
        done = true;
        log.warn('graceful shutdown timed out; cancelling remaining calls', { graceMs });
        server.forceShutdown();
        resolveDown({ forced: true });
      }, graceMs);
      timer.unref();
      server.tryShutdown(() => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        log.info('gRPC server stopped', { address: `${hostForDial}:${port}` });
        resolveDown({ forced: false });
      });
    });
    return shuttingDown;
  };

  return { server, health, host: opts.host, port, address: `${hostForDial}:${port}`, tls, shutdown };
}

/** Stops the server on SIGINT/SIGTERM with a graceful drain; a second signal forces it. Returns an unsubscribe. */
export function shutdownOnSignals(handles: GrpcServerHandle[], graceMs: number, log: Logger, onDone?: () => Promise<void> | void): () => void {
  let count = 0;
  const handler = (signal: NodeJS.Signals) => {
    count++;
    if (count > 1) {
      log.warn('second signal: forcing shutdown', { signal });
      for (const h of handles) h.server.forceShutdown();
      return;
    }
    log.info('shutting down: draining in-flight calls', { signal, graceMs });
    Promise.all(handles.map((h) => h.shutdown(graceMs)))
      .then(async () => {
        await onDone?.();
      })
      .catch((e: Error) => log.error('shutdown failed', { error: e.message }));
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return () => {
    process.off('SIGINT', handler);
    process.off('SIGTERM', handler);
  };
}
