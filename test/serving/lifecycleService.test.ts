// gems.v1.LifecycleMemoryService end to end: a real gRPC server on a loopback port over a real lmdb store, called
// by a real client. Slow calls (deadline and drain tests) come from GatedStore, a decorator that holds reads of the
// real store until the test opens the gate — the only way to make a microsecond lmdb read last long enough.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type GemsConfig } from '../../src/config/config.js';
import type { LifecycleMemory, MemoryStore } from '../../src/lifecycle/memory.js';
import { LmdbMemoryStore } from '../../src/lifecycle/lmdbMemoryStore.js';
import { encodeMemory } from '../../src/lifecycle/memoryFormat.js';
import { openMemoryStore } from '../../src/lifecycle/openMemoryStore.js';
import { LifecycleMemoryClient, startLifecycleServer, LIFECYCLE_SERVICE } from '../../src/serving/lifecycleService.js';
import { loadProtos, serviceOf, type GrpcServerHandle } from '../../src/serving/grpc.js';
import { ServiceMetrics } from '../../src/serving/metrics.js';
import { setLogSink } from '../../src/util/log.js';
import { Rng } from '../../src/util/random.js';

const tmp = mkdtempSync(join(tmpdir(), 'gems-lcsvc-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function makeMemory(userId: number, seed: number, slots = 64, dim = 64, stateLen = 0): LifecycleMemory {
  const rng = new Rng(seed);
  const vectors = new Float32Array(slots * dim);
  for (let i = 0; i < vectors.length; i++) vectors[i] = rng.normal();
  const m: LifecycleMemory = {
    userId,
    header: { formatVersion: 1, compressorVersion: 'qla-test', slots, dim, dtype: 'float32', watermark: 1000 + userId, eventsCovered: 50 * userId, createdAt: 1_700_000_000_000 },
    vectors,
  };
  if (stateLen) m.state = Float32Array.from({ length: stateLen }, (_, i) => i * 0.5);
  return m;
}

/** Holds getEncoded/getEncodedMany of a real store until open() is called. */
class GatedStore implements MemoryStore {
  readonly kind: 'lmdb' | 'redis';
  private gate: Promise<void> = Promise.resolve();
  private release: () => void = () => undefined;
  entered = 0;
  constructor(private readonly inner: MemoryStore) {
    this.kind = inner.kind;
  }
  close_() {
    this.gate = new Promise((r) => (this.release = r));
  }
  open() {
    this.release();
  }
  async getEncoded(id: number) {
    this.entered++;
    await this.gate;
    return this.inner.getEncoded(id);
  }
  async getEncodedMany(ids: number[]) {
    this.entered++;
    await this.gate;
    return this.inner.getEncodedMany(ids);
  }
  get = (id: number) => this.inner.get(id);
  getMany = (ids: number[]) => this.inner.getMany(ids);
  putMany = (ms: LifecycleMemory[]) => this.inner.putMany(ms);
  getHeader = (id: number) => this.inner.getHeader(id);
  getHeaders = (ids: number[]) => this.inner.getHeaders(ids);
  userIds = () => this.inner.userIds();
  delete = (id: number) => this.inner.delete(id);
  count = () => this.inner.count();
  close = () => this.inner.close();
}

function config(extra: Record<string, string> = {}): GemsConfig {
  return loadConfig({ flags: { dataDir: join(tmp, 'data'), 'serving.authToken': 's3cret', ...extra }, env: {} });
}

const code = (e: unknown) => (e as grpc.ServiceError).code;
const details = (e: unknown) => (e as grpc.ServiceError).details;
async function failure(p: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await p;
  } catch (e) {
    return e as grpc.ServiceError;
  }
  throw new Error('expected the call to fail');
}

describe('LifecycleMemoryService', () => {
  let inner: LmdbMemoryStore;
  let store: GatedStore;
  let handle: GrpcServerHandle;
  let client: LifecycleMemoryClient;
  const metrics = new ServiceMetrics(false);
  const logs: string[] = [];
  let prevSink: (l: string) => void;

  beforeAll(async () => {
    prevSink = setLogSink((l) => logs.push(l));
    inner = new LmdbMemoryStore({ path: join(tmp, 'svc', 'memories.mdb') });
    await inner.putMany([makeMemory(1, 1, 64, 64, 64 * 65), makeMemory(2, 2), makeMemory(3, 3)]);
    // User 4's value is corrupt: written raw, with a flipped byte, behind the store's back.
    const bad = encodeMemory(makeMemory(4, 4));
    bad[300]! ^= 0x40;
    const { open } = await import('lmdb');
    const raw = open<Buffer, number>({ path: join(tmp, 'svc', 'memories.mdb'), encoding: 'binary', compression: false });
    await raw.put(4, bad);
    store = new GatedStore(inner);
    handle = await startLifecycleServer({ config: config(), store, port: 0, metrics });
    client = new LifecycleMemoryClient(handle.address, { token: 's3cret' });
  });
  afterAll(async () => {
    client?.close();
    await handle?.shutdown(1000);
    await inner?.close();
    setLogSink(prevSink);
  });

  it('serves a memory, byte-exact, with metadata and (on request) the QLA state', async () => {
    const m = await client.get(1, { includeState: true });
    const want = makeMemory(1, 1, 64, 64, 64 * 65);
    expect(m!.header).toEqual(want.header);
    expect(Buffer.from(m!.vectors.buffer).equals(Buffer.from(want.vectors.buffer))).toBe(true);
    expect(Array.from(m!.state!)).toEqual(Array.from(want.state!));
    const noState = await client.get(1);
    expect(noState!.state).toBeUndefined();
  });

  it('answers NOT_FOUND for an unknown user', async () => {
    expect(await client.get(999)).toBeNull();
    const e = await failure(new Promise((res, rej) => client.raw['GetLifecycleMemory']!({ userId: 999 }, (err: Error | null, r: unknown) => (err ? rej(err) : res(r)))));
    expect(code(e)).toBe(grpc.status.NOT_FOUND);
    expect(details(e)).toMatch(/user_id 999/);
  });

  it('answers INVALID_ARGUMENT naming the field', async () => {
    for (const bad of [0, -5]) {
      const e = await failure(client.get(bad));
      expect(code(e)).toBe(grpc.status.INVALID_ARGUMENT);
      expect(details(e)).toMatch(/^user_id must be a positive integer/);
    }
    const tooMany = await failure(client.batchGet(Array.from({ length: 1001 }, (_, i) => i + 1)));
    expect(code(tooMany)).toBe(grpc.status.INVALID_ARGUMENT);
    expect(details(tooMany)).toMatch(/user_ids has 1001 entries, the limit is 1000/);
    const badEntry = await failure(client.batchGet([1, 2, -3]));
    expect(details(badEntry)).toMatch(/user_ids\[2\] must be a positive integer/);
    const empty = await failure(client.batchGet([]));
    expect(details(empty)).toMatch(/user_ids must not be empty/);
  });

  it('never serves a corrupt value: INTERNAL, logged; in a batch it is listed as corrupt', async () => {
    logs.length = 0;
    const e = await failure(client.get(4));
    expect(code(e)).toBe(grpc.status.INTERNAL);
    expect(details(e)).toMatch(/user 4 is corrupt: checksum mismatch/);
    expect(logs.some((l) => l.includes('corrupt lifecycle memory not served') && l.includes('"userId":4'))).toBe(true);
    const batch = await client.batchGet([3, 4, 999, 1]);
    expect(batch.memories.map((m) => m.userId)).toEqual([3, 1]);
    expect(batch.corruptUserIds).toEqual([4]);
    expect(batch.missingUserIds).toEqual([999]);
    const many = await client.getMany([3, 4, 999]);
    expect(many.map((m) => m?.userId ?? null)).toEqual([3, null, null]);
  });

  it('PutLifecycleMemory needs the bearer token and validates fields', async () => {
    const m = makeMemory(10, 10, 8, 8);
    const anon = new LifecycleMemoryClient(handle.address);
    const wrong = new LifecycleMemoryClient(handle.address, { token: 'nope' });
    try {
      expect(code(await failure(anon.put([m])))).toBe(grpc.status.UNAUTHENTICATED);
      expect(code(await failure(wrong.put([m])))).toBe(grpc.status.UNAUTHENTICATED);
    } finally {
      anon.close();
      wrong.close();
    }
    expect(await client.get(10)).toBeNull();
    expect(await client.put([m, makeMemory(11, 11, 8, 8)])).toBe(2);
    expect(Array.from((await client.get(10))!.vectors)).toEqual(Array.from(m.vectors));
    // A malformed memory fails the whole batch (atomic) with the field named.
    const e = await failure(
      new Promise((res, rej) =>
        client.raw['PutLifecycleMemory']!(
          { memories: [{ userId: 12, metadata: { compressorVersion: 'x', slots: 8, dim: 8, dtype: 'DTYPE_FLOAT32' }, vectors: Buffer.alloc(10) }] },
          (() => {
            const md = new grpc.Metadata();
            md.set('authorization', 'Bearer s3cret');
            return md;
          })(),
          (err: Error | null, r: unknown) => (err ? rej(err) : res(r)),
        ),
      ),
    );
    expect(code(e)).toBe(grpc.status.INVALID_ARGUMENT);
    expect(details(e)).toBe('memories[0].vectors: has 10 bytes, slots × dim × 4 = 256');
  });

  it('carries a 300-user batch of 64 × 64 memories (4.9 MB, above gRPC’s 4 MB default message limit)', async () => {
    const ms = Array.from({ length: 300 }, (_, i) => makeMemory(10_000 + i, i));
    expect(await client.put(ms)).toBe(300);
    const res = await client.batchGet(ms.map((m) => m.userId));
    expect(res.memories.length).toBe(300);
    expect(res.memories[299]!.vectors.equals(Buffer.from(ms[299]!.vectors.buffer))).toBe(true);
  });

  it('honours deadlines: a call stuck past its deadline ends DEADLINE_EXCEEDED and is not answered late', async () => {
    store.close_();
    const before = store.entered;
    const e = await failure(client.get(2, { deadlineMs: 150 }));
    expect(code(e)).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(store.entered).toBe(before + 1);
    // Give the server's event loop time to see the client's RST / its own deadline (same process; under load the
    // server may have received the call late, so its deadline is later than the client's).
    await new Promise((r) => setTimeout(r, 300));
    store.open();
    // The released handler finishes, sees the caller is gone and records that instead of answering. It is
    // DEADLINE_EXCEEDED, or CANCELLED when the client's RST arrives before the server's own (later) deadline.
    const counted = async () =>
      (await metrics.requests.get()).values
        .filter((v) => v.labels.method === 'GetLifecycleMemory' && (v.labels.status === 'DEADLINE_EXCEEDED' || v.labels.status === 'CANCELLED'))
        .reduce((sum, v) => sum + v.value, 0);
    for (let i = 0; i < 100 && (await counted()) === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(await counted()).toBe(1);
    // The server is fine afterwards.
    expect((await client.get(2))!.userId).toBe(2);
  });

  it('exposes grpc.health.v1 (Check and Watch)', async () => {
    const { Client } = serviceOf(loadProtos(['grpc/health/v1/health.proto']), 'grpc.health.v1.Health');
    const health = new Client(handle.address, grpc.credentials.createInsecure()) as grpc.Client & Record<string, any>;
    const check = (service: string) =>
      new Promise<any>((res, rej) => health['Check']!({ service }, (err: Error | null, r: unknown) => (err ? rej(err) : res(r))));
    expect((await check('')).status).toBe('SERVING');
    expect((await check(LIFECYCLE_SERVICE)).status).toBe('SERVING');
    expect(code(await failure(check('nope.Service')))).toBe(grpc.status.NOT_FOUND);
    const watch = health['Watch']!({ service: LIFECYCLE_SERVICE }) as grpc.ClientReadableStream<{ status: string }>;
    const first = await new Promise<{ status: string }>((res) => watch.once('data', res));
    expect(first.status).toBe('SERVING');
    watch.cancel();
    watch.on('error', () => undefined);
    health.close();
  });

  it('supports server reflection (v1alpha and v1)', async () => {
    const reflectionDir = join(dirname(createRequire(import.meta.url).resolve('@grpc/reflection/package.json')), 'build', 'proto');
    for (const version of ['v1alpha', 'v1']) {
      const def = protoLoader.loadSync(`grpc/reflection/${version}/reflection.proto`, { includeDirs: [reflectionDir], keepCase: true, oneofs: true });
      const { Client } = serviceOf(def, `grpc.reflection.${version}.ServerReflection`);
      const refl = new Client(handle.address, grpc.credentials.createInsecure()) as grpc.Client & Record<string, any>;
      const stream = refl['ServerReflectionInfo']!() as grpc.ClientDuplexStream<any, any>;
      const answers: any[] = [];
      const done = new Promise<void>((res, rej) => {
        stream.on('data', (d) => {
          answers.push(d);
          if (answers.length === 2) stream.end();
        });
        stream.on('end', res);
        stream.on('error', rej);
      });
      stream.write({ list_services: '' });
      stream.write({ file_containing_symbol: LIFECYCLE_SERVICE });
      await done;
      const names = answers[0].list_services_response.service.map((s: { name: string }) => s.name);
      expect(names).toEqual(expect.arrayContaining([LIFECYCLE_SERVICE, 'grpc.health.v1.Health']));
      const files = answers[1].file_descriptor_response.file_descriptor_proto as Buffer[];
      expect(files.length).toBeGreaterThan(0);
      expect(Buffer.concat(files).toString('latin1')).toContain('LifecycleMemoryService');
      refl.close();
    }
  });
});

describe('graceful shutdown', () => {
  it('drains an in-flight call, refuses new ones, and ends health watches', async () => {
    const inner = new LmdbMemoryStore({ path: join(tmp, 'drain', 'memories.mdb') });
    await inner.putMany([makeMemory(1, 1)]);
    const store = new GatedStore(inner);
    const handle = await startLifecycleServer({ config: config(), store, port: 0 });
    const client = new LifecycleMemoryClient(handle.address);
    const { Client } = serviceOf(loadProtos(['grpc/health/v1/health.proto']), 'grpc.health.v1.Health');
    const health = new Client(handle.address, grpc.credentials.createInsecure()) as grpc.Client & Record<string, any>;
    const watch = health['Watch']!({ service: '' }) as grpc.ClientReadableStream<{ status: string }>;
    const statuses: string[] = [];
    const watchEnded = new Promise<void>((res) => {
      watch.on('data', (d) => statuses.push(d.status));
      watch.on('end', res);
      watch.on('error', () => res());
    });
    await new Promise((r) => setTimeout(r, 100));
    try {
      store.close_();
      const slow = client.get(1, { deadlineMs: 10_000 });
      while (store.entered === 0) await new Promise((r) => setTimeout(r, 5));
      const down = handle.shutdown(5000);
      await new Promise((r) => setTimeout(r, 100));
      // New calls are refused while the old one is still running.
      const fresh = new LifecycleMemoryClient(handle.address);
      const refused = await failure(fresh.get(1, { deadlineMs: 2000 }));
      fresh.close();
      expect(code(refused)).toBe(grpc.status.UNAVAILABLE);
      store.open();
      const m = await slow;
      expect(m!.userId).toBe(1);
      expect(await down).toEqual({ forced: false });
      await watchEnded;
      expect(statuses).toEqual(['SERVING', 'NOT_SERVING']);
    } finally {
      client.close();
      health.close();
      await inner.close();
    }
  });

  it('cancels calls still running when the grace period ends', async () => {
    const inner = new LmdbMemoryStore({ path: join(tmp, 'force', 'memories.mdb') });
    await inner.putMany([makeMemory(1, 1)]);
    const store = new GatedStore(inner);
    const handle = await startLifecycleServer({ config: config(), store, port: 0 });
    const client = new LifecycleMemoryClient(handle.address);
    try {
      store.close_();
      const slow = failure(client.get(1, { deadlineMs: 10_000 }));
      while (store.entered === 0) await new Promise((r) => setTimeout(r, 5));
      expect(await handle.shutdown(200)).toEqual({ forced: true });
      expect([grpc.status.CANCELLED, grpc.status.UNAVAILABLE, grpc.status.INTERNAL]).toContain(code(await slow));
    } finally {
      store.open();
      client.close();
      // Let the released handler finish before the store closes under it.
      await new Promise((r) => setTimeout(r, 20));
      await inner.close();
    }
  });
});

describe('gems serve --only memory', () => {
  it('serves the configured store, prints its address, and exits 0 after draining on SIGTERM', async () => {
    const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
    const dataDir = join(tmp, 'serve-cli');
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', join(root, 'src', 'cli', 'main.ts'), 'serve', '--only', 'memory', '--port', '0', '--data-dir', dataDir, '--set', 'serving.metricsPort=0', '--set', 'serving.authToken=tok'],
      { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, GEMS_LOG_FORMAT: 'json' } },
    );
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += String(d)));
    const exited = new Promise<number | null>((res) => child.once('exit', (c) => res(c)));
    try {
      const line = await new Promise<string>((res, rej) => {
        createInterface({ input: child.stdout! }).once('line', res);
        void exited.then((c) => rej(new Error(`serve exited early (${c}): ${stderr}`)));
      });
      const info = JSON.parse(line) as { address: string; store: string };
      expect(info.store).toBe('lmdb');
      const client = new LifecycleMemoryClient(info.address, { token: 'tok' });
      try {
        expect(await client.get(7)).toBeNull();
        expect(await client.put([makeMemory(7, 7, 4, 4)])).toBe(1);
        expect((await client.get(7))!.header.dim).toBe(4);
      } finally {
        client.close();
      }
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(stderr).toContain('serve stopped');
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
    // The memory was written to the configured lmdb file.
    const reopened = await openMemoryStore(loadConfig({ flags: { dataDir }, env: {} }));
    expect((await reopened.get(7))!.userId).toBe(7);
    await reopened.close();
  });
});

const haveOpenssl = spawnSync('openssl', ['version']).status === 0;
describe.skipIf(!haveOpenssl)('TLS', () => {
  it('serves over TLS with a configured cert/key and refuses plaintext clients', async () => {
    const dir = join(tmp, 'tls');
    execFileSync('mkdir', ['-p', dir]);
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=localhost',
      '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
      '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'),
    ], { stdio: 'ignore' });
    const inner = new LmdbMemoryStore({ path: join(dir, 'memories.mdb') });
    await inner.putMany([makeMemory(5, 5, 4, 4)]);
    const handle = await startLifecycleServer({
      config: config({ 'serving.tlsCert': join(dir, 'cert.pem'), 'serving.tlsKey': join(dir, 'key.pem') }),
      store: inner,
      port: 0,
    });
    expect(handle.tls).toBe(true);
    // The cert names localhost; dialling 127.0.0.1 with SNI localhost avoids Node's "IP as ServerName" warning.
    const secure = new LifecycleMemoryClient(handle.address, { tls: { ca: join(dir, 'cert.pem'), serverNameOverride: 'localhost' } });
    const plain = new LifecycleMemoryClient(handle.address);
    try {
      expect((await secure.get(5))!.header.slots).toBe(4);
      expect(code(await failure(plain.get(5, { deadlineMs: 2000 })))).toBe(grpc.status.UNAVAILABLE);
    } finally {
      secure.close();
      plain.close();
      await handle.shutdown(1000);
      await inner.close();
    }
  });

  it('rejects a half TLS configuration naming the missing key', async () => {
    const inner = new LmdbMemoryStore({ path: join(tmp, 'tls2', 'memories.mdb') });
    try {
      await expect(startLifecycleServer({ config: config({ 'serving.tlsCert': '/nonexistent.pem' }), store: inner, port: 0 })).rejects.toThrow(
        /serving.tlsKey: required when serving.tlsCert is set/,
      );
    } finally {
      await inner.close();
    }
  });
});
