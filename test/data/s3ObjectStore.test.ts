// S3ObjectStore against a real S3-compatible server (s3rver in a child process on 127.0.0.1) and, for faults, a
// real HTTP proxy in front of it that injects error statuses and cuts or stalls response bodies. No SDK mocks.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.js';
import { openObjectStore } from '../../src/data/openObjectStore.js';
import { backoffDelayMs, ObjectStoreError, S3ObjectStore, type S3ObjectStoreOptions } from '../../src/data/s3ObjectStore.js';
import { setLogSink } from '../../src/util/log.js';
import { S3RVER_CREDENTIALS, startFaultProxy, startS3rver, type FaultProxy, type S3rverHandle } from '../support/s3server.js';

const MiB = 1024 ** 2;

/** Deterministic bytes for a seed (content differs between seeds at every position). */
function pattern(size: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x & 255;
  }
  return b;
}

const tempDirs: string[] = [];
const tmp = (name: string): string => {
  const dir = mkdtempSync(join(tmpdir(), `gems-${name}-`));
  tempDirs.push(dir);
  return dir;
};

/** Every file under a folder (recursive), relative names. */
function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile())
    .map((d) => join(d.parentPath, d.name).slice(dir.length + 1));
}

let server: S3rverHandle;
let proxy: FaultProxy;
const stores: S3ObjectStore[] = [];
const logLines: string[] = [];
let prevSink: (line: string) => void;
let nextPrefix = 0;

/** A store on its own prefix and its own cache folder, talking through the fault proxy. */
function makeStore(opts: Partial<S3ObjectStoreOptions> = {}): S3ObjectStore {
  const store = new S3ObjectStore({
    bucket: server.bucket,
    prefix: `t${nextPrefix++}/`,
    endpoint: proxy.endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: S3RVER_CREDENTIALS,
    maxAttempts: 4,
    retryBaseDelayMs: 10,
    retryMaxDelayMs: 200,
    multipartThresholdBytes: 5 * MiB,
    cacheDir: tmp('s3cache'),
    cacheMaxBytes: 1024 * MiB,
    ...opts,
  });
  stores.push(store);
  return store;
}

const since = (from: number) => proxy.requests.slice(from);

beforeAll(async () => {
  prevSink = setLogSink((line) => logLines.push(line));
  server = await startS3rver({ bucket: 'gems-test' });
  proxy = await startFaultProxy(server.endpoint);
});

afterEach(() => {
  proxy.failNext(0);
});

afterAll(async () => {
  for (const s of stores) s.close();
  await proxy?.close();
  await server?.stop();
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
  setLogSink(prevSink);
});

describe('S3ObjectStore on s3rver', () => {
  it('round-trips put/get/head/list/delete with keys relative to the prefix', async () => {
    const s = makeStore();
    const other = makeStore();
    const a = await s.put('events/date=2026-01-01/b=00/part-0.parquet', Buffer.from('alpha'));
    expect(a).toMatchObject({ key: 'events/date=2026-01-01/b=00/part-0.parquet', size: 5 });
    expect(a.etag).toMatch(/^[0-9a-f]{32}$/);
    await s.put('events/date=2026-01-02/b=01/part-0.parquet', new Uint8Array([1, 2, 3]));
    await s.put('items/items.parquet', Buffer.alloc(0));
    await other.put('events/elsewhere.parquet', Buffer.from('x'));

    expect((await s.get('events/date=2026-01-01/b=00/part-0.parquet')).toString()).toBe('alpha');
    expect([...(await s.get('events/date=2026-01-02/b=01/part-0.parquet'))]).toEqual([1, 2, 3]);
    expect((await s.get('items/items.parquet')).length).toBe(0);
    expect(await s.head('events/date=2026-01-01/b=00/part-0.parquet')).toMatchObject({ size: 5, etag: a.etag });
    expect(await s.head('nope.parquet')).toBeNull();

    expect((await s.list('events/')).map((o) => o.key)).toEqual([
      'events/date=2026-01-01/b=00/part-0.parquet',
      'events/date=2026-01-02/b=01/part-0.parquet',
    ]);
    expect((await s.list('')).length).toBe(3);
    expect((await other.list('')).map((o) => o.key)).toEqual(['events/elsewhere.parquet']);

    await s.delete('items/items.parquet');
    await s.delete('items/items.parquet'); // deleting twice is fine, as on S3
    expect(await s.head('items/items.parquet')).toBeNull();
    expect(s.uri('a/b.parquet')).toBe(`s3://gems-test/${s.prefix}a/b.parquet`);

    await expect(s.get('missing.parquet')).rejects.toThrow(new RegExp(`s3://gems-test/${s.prefix}missing\\.parquet.*NoSuchKey`));
    await expect(s.localPath('missing.parquet')).rejects.toThrow(/does not exist/);
    expect(() => s.uri('x')).not.toThrow();
    await expect(s.put('../escape', Buffer.from('x'))).rejects.toThrow(/invalid object key/);
  });

  it('pages through ListObjectsV2 (continuation tokens need s3rver under --openssl-legacy-provider)', async () => {
    const s = makeStore({ listPageSize: 7 });
    const keys = Array.from({ length: 50 }, (_, i) => `p/${String(i).padStart(3, '0')}.parquet`);
    for (let i = 0; i < keys.length; i += 10) await Promise.all(keys.slice(i, i + 10).map((k) => s.put(k, Buffer.from(k))));
    await s.put('q/other.parquet', Buffer.from('q'));
    const from = proxy.requests.length;
    const listed = await s.list('p/');
    expect(listed.map((o) => o.key)).toEqual(keys);
    const listCalls = since(from).filter((r) => r.url.includes('list-type=2'));
    expect(listCalls.length).toBe(Math.ceil(50 / 7));
    expect(listCalls.slice(1).every((r) => r.url.includes('continuation-token=') && r.status === 200)).toBe(true);

    // A page in the middle that fails is retried and the listing is still complete.
    proxy.failNext(1, 500, 'InternalError', /continuation-token=/);
    const from2 = proxy.requests.length;
    expect((await s.list('p/')).length).toBe(50);
    const injected = since(from2).filter((r) => r.injected);
    expect(injected.length).toBe(1);
    expect(injected[0]!.url).toContain('continuation-token=');
  });

  it('uploads above the threshold as multipart (putFile and put), below it as one PUT', async () => {
    const s = makeStore({ multipartThresholdBytes: 5 * MiB, partSizeBytes: 5 * MiB });
    const dir = tmp('s3src');
    const big = pattern(12 * MiB + 123, 1);
    writeFileSync(join(dir, 'big.parquet'), big);
    const from = proxy.requests.length;
    const info = await s.putFile('big/big.parquet', join(dir, 'big.parquet'));
    expect(info.size).toBe(big.length);
    const reqs = since(from);
    expect(reqs.some((r) => r.method === 'POST' && r.url.includes('?uploads'))).toBe(true);
    const parts = reqs.filter((r) => r.method === 'PUT' && r.url.includes('partNumber='));
    expect(parts.length).toBe(3); // 5 + 5 + 2 MiB
    expect(reqs.some((r) => r.method === 'POST' && r.url.includes('uploadId=') && !r.url.includes('partNumber'))).toBe(true);
    expect((await s.get('big/big.parquet')).equals(big)).toBe(true);

    const from2 = proxy.requests.length;
    const bigBuf = pattern(6 * MiB, 2);
    await s.put('big/buf.parquet', bigBuf);
    expect(since(from2).filter((r) => r.url.includes('partNumber=')).length).toBe(2);
    expect((await s.get('big/buf.parquet')).equals(bigBuf)).toBe(true);

    const from3 = proxy.requests.length;
    writeFileSync(join(dir, 'small.parquet'), pattern(MiB, 3));
    await s.putFile('small.parquet', join(dir, 'small.parquet'));
    expect(since(from3).filter((r) => r.method === 'PUT').map((r) => r.url)).toEqual([`/gems-test/${s.prefix}small.parquet?x-id=PutObject`]);

    // A part that fails with 503 is retried on its own; the upload completes.
    const from4 = proxy.requests.length;
    const retried = pattern(11 * MiB, 4);
    writeFileSync(join(dir, 'retried.parquet'), retried);
    proxy.failNext(1, 503, 'SlowDown', /partNumber=2&/);
    await s.putFile('big/retried.parquet', join(dir, 'retried.parquet'));
    const part2 = since(from4).filter((r) => /partNumber=2&/.test(r.url));
    expect(part2.map((r) => r.status)).toEqual([503, 200]);
    expect(since(from4).filter((r) => /partNumber=1&/.test(r.url)).length).toBe(1);
    expect((await s.get('big/retried.parquet')).equals(retried)).toBe(true);
  });

  it('localPath caches by size + ETag: reuses an unchanged object, refetches a changed one', async () => {
    const s = makeStore();
    const v1 = pattern(2 * MiB, 10);
    await s.put('c/part.parquet', v1);
    const from = proxy.requests.length;
    const p1 = await s.localPath('c/part.parquet');
    expect(p1.endsWith('.parquet')).toBe(true);
    expect(readFileSync(p1).equals(v1)).toBe(true);
    expect(since(from).filter((r) => r.method === 'GET').length).toBe(1);

    const from2 = proxy.requests.length;
    expect(await s.localPath('c/part.parquet')).toBe(p1);
    const again = since(from2);
    expect(again.map((r) => r.method)).toEqual(['HEAD']); // validated by HEAD only, no download

    // Same size, different content: only the ETag tells them apart.
    const v2 = pattern(2 * MiB, 11);
    await s.put('c/part.parquet', v2);
    const from3 = proxy.requests.length;
    const p2 = await s.localPath('c/part.parquet');
    expect(p2).not.toBe(p1);
    expect(readFileSync(p2).equals(v2)).toBe(true);
    expect(since(from3).filter((r) => r.method === 'GET').length).toBe(1);
    expect(existsSync(p1)).toBe(false); // the old version is gone from the cache
    expect(filesUnder(s.cache.dir).length).toBe(1);

    // Concurrent callers share one download.
    const v3 = pattern(3 * MiB, 12);
    await s.put('c/part.parquet', v3);
    const from4 = proxy.requests.length;
    const paths = await Promise.all([s.localPath('c/part.parquet'), s.localPath('c/part.parquet'), s.localPath('c/part.parquet')]);
    expect(new Set(paths).size).toBe(1);
    expect(since(from4).filter((r) => r.method === 'GET').length).toBe(1);

    // A new store on the same cache folder (a restarted process) reuses the file.
    const s2 = makeStore({ cacheDir: s.cache.dir, prefix: s.prefix });
    const from5 = proxy.requests.length;
    expect(await s2.localPath('c/part.parquet')).toBe(paths[0]);
    expect(since(from5).filter((r) => r.method === 'GET').length).toBe(0);

    // With the info from a listing, no HEAD is needed.
    const [listed] = await s.list('c/');
    const from6 = proxy.requests.length;
    expect(await s.localPath('c/part.parquet', listed)).toBe(paths[0]);
    expect(since(from6)).toEqual([]);

    // delete() drops the cached copy.
    await s.delete('c/part.parquet');
    expect(filesUnder(s.cache.dir)).toEqual([]);
  });

  it('evicts least-recently-used files when the cache exceeds its byte budget', async () => {
    const s = makeStore({ cacheMaxBytes: Math.floor(2.5 * MiB) });
    for (const k of ['a', 'b', 'c']) await s.put(`e/${k}.parquet`, pattern(MiB, k.charCodeAt(0)));
    const pa = await s.localPath('e/a.parquet');
    await new Promise((r) => setTimeout(r, 15)); // distinct use times
    const pb = await s.localPath('e/b.parquet');
    await new Promise((r) => setTimeout(r, 15));
    expect(await s.localPath('e/a.parquet')).toBe(pa); // a is now more recent than b
    await new Promise((r) => setTimeout(r, 15));
    const pc = await s.localPath('e/c.parquet');
    expect(existsSync(pa)).toBe(true);
    expect(existsSync(pb)).toBe(false);
    expect(existsSync(pc)).toBe(true);
    expect((await s.cache.stats()).bytes).toBeLessThanOrEqual(2.5 * MiB);
    // b comes back on demand.
    expect(readFileSync(await s.localPath('e/b.parquet')).equals(pattern(MiB, 'b'.charCodeAt(0)))).toBe(true);
    expect(filesUnder(s.cache.dir).length).toBe(2);
  });

  it('retries throttling and 5xx answers with backoff, and gives up with a clear error after maxAttempts', async () => {
    const s = makeStore({ maxAttempts: 4, retryBaseDelayMs: 20, retryMaxDelayMs: 1000 });
    logLines.length = 0;
    proxy.failNext(2, 503, 'SlowDown');
    const from = proxy.requests.length;
    const t0 = performance.now();
    await s.put('r/a.parquet', Buffer.from('after throttling'));
    const elapsed = performance.now() - t0;
    const putReqs = since(from).filter((r) => r.method === 'PUT');
    expect(putReqs.map((r) => r.status)).toEqual([503, 503, 200]);
    // Throttling backoff: retry 1 waits ≥ 50 ms, retry 2 ≥ 100 ms (base 20 ms × 5, equal jitter).
    expect(elapsed).toBeGreaterThanOrEqual(150);
    expect(logLines.filter((l) => l.includes('retrying')).length).toBe(2);

    proxy.failNext(1, 500, 'InternalError');
    expect((await s.get('r/a.parquet')).toString()).toBe('after throttling');
    proxy.failNext(1, 429, 'TooManyRequests');
    expect(await s.head('r/a.parquet')).not.toBeNull();

    proxy.failNext(100, 503, 'SlowDown');
    const from2 = proxy.requests.length;
    const err = await s.get('r/a.parquet').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ObjectStoreError);
    expect(String(err)).toMatch(new RegExp(`s3://gems-test/${s.prefix}r/a\\.parquet`));
    expect(String(err)).toMatch(/SlowDown.*HTTP 503.*4 attempts/);
    expect(since(from2).length).toBe(4);

    // Client errors are not retried.
    proxy.failNext(100, 403, 'AccessDenied');
    const from3 = proxy.requests.length;
    await expect(s.get('r/a.parquet')).rejects.toThrow(/AccessDenied.*HTTP 403/);
    expect(since(from3).length).toBe(1);
    proxy.failNext(0);
  });

  it('restarts a download whose body is cut mid-read, and caches only the complete file', async () => {
    const s = makeStore({ maxAttempts: 3 });
    const body = pattern(4 * MiB, 20);
    await s.put('m/cut.parquet', body);
    proxy.cutNextGetAfter(MiB);
    const from = proxy.requests.length;
    const p = await s.localPath('m/cut.parquet');
    expect(readFileSync(p).equals(body)).toBe(true);
    expect(since(from).filter((r) => r.method === 'GET').length).toBe(2);
    expect(filesUnder(s.cache.dir)).toHaveLength(1);

    proxy.cutNextGetAfter(MiB);
    expect((await s.get('m/cut.parquet')).equals(body)).toBe(true);
  });

  it('fails with a clear error and leaves no file in the cache when the server stalls mid-body', async () => {
    const s = makeStore({ maxAttempts: 1, idleTimeoutMs: 400 });
    await s.put('m/stall.parquet', pattern(3 * MiB, 21));
    const stalled = proxy.stallNextGetAfter(MiB);
    const t0 = performance.now();
    const err = await s.localPath('m/stall.parquet').catch((e: unknown) => e);
    await stalled;
    expect(err).toBeInstanceOf(ObjectStoreError);
    expect(String(err)).toContain(`s3://gems-test/${s.prefix}m/stall.parquet`);
    expect(performance.now() - t0).toBeLessThan(10_000);
    expect(filesUnder(s.cache.dir)).toEqual([]);
  });

  it('fails with a clear error and leaves no file in the cache when the server dies mid-read', async () => {
    // Its own server: this test kills it.
    const doomed = await startS3rver({ bucket: 'doomed' });
    const front = await startFaultProxy(doomed.endpoint);
    try {
      const cacheDir = tmp('s3cache');
      const s = new S3ObjectStore({
        bucket: 'doomed',
        endpoint: front.endpoint,
        forcePathStyle: true,
        credentials: S3RVER_CREDENTIALS,
        maxAttempts: 2,
        retryBaseDelayMs: 10,
        cacheDir,
        cacheMaxBytes: 1024 * MiB,
      });
      stores.push(s);
      const good = pattern(MiB, 30);
      await s.put('ok.parquet', good);
      const okPath = await s.localPath('ok.parquet');
      await s.put('big.parquet', pattern(48 * MiB, 31));
      const midway = front.slowNextGetAfter(2 * MiB, 8 * MiB);
      const t0 = performance.now();
      const pending = s.localPath('big.parquet').catch((e: unknown) => e);
      await midway;
      await doomed.kill(); // the server process vanishes with most of the body unsent
      const err = await pending;
      expect(performance.now() - t0).toBeLessThan(10_000);
      expect(err).toBeInstanceOf(ObjectStoreError);
      expect(String(err)).toContain('s3://doomed/big.parquet');
      // The earlier, complete file is intact; nothing partial (no temp file either) was left.
      expect(filesUnder(cacheDir)).toEqual([okPath.slice(cacheDir.length + 1)]);
      expect(readFileSync(okPath).equals(good)).toBe(true);
    } finally {
      await front.close();
      await doomed.stop();
    }
  });

  it('reports an unreachable endpoint clearly after retrying', async () => {
    // A port that was free a moment ago: nothing listens there.
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const endpoint = `http://127.0.0.1:${(probe.address() as net.AddressInfo).port}`;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const s = makeStore({ endpoint, maxAttempts: 3, retryBaseDelayMs: 5 });
    const t0 = performance.now();
    const err = await s.localPath('x.parquet').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ObjectStoreError);
    expect(String(err)).toMatch(new RegExp(`s3://gems-test/${s.prefix}x\\.parquet.*ECONNREFUSED`));
    expect(performance.now() - t0).toBeLessThan(5_000);
    await expect(s.put('x.parquet', Buffer.from('x'))).rejects.toThrow(/PutObject s3:\/\/gems-test\/.*ECONNREFUSED/);
    expect(filesUnder(s.cache.dir)).toEqual([]);
  });

  it('openObjectStore builds an S3 store from config, with credentials from the standard AWS chain (env)', async () => {
    const saved = { id: process.env['AWS_ACCESS_KEY_ID'], secret: process.env['AWS_SECRET_ACCESS_KEY'] };
    process.env['AWS_ACCESS_KEY_ID'] = S3RVER_CREDENTIALS.accessKeyId;
    process.env['AWS_SECRET_ACCESS_KEY'] = S3RVER_CREDENTIALS.secretAccessKey;
    try {
      const dataDir = tmp('s3data');
      const config = loadConfig({
        env: {},
        flags: {
          dataDir,
          'objectStore.kind': 's3',
          'objectStore.endpoint': server.endpoint,
          'objectStore.bucket': server.bucket,
          'objectStore.prefix': 'from-config',
          'objectStore.forcePathStyle': 'true',
        },
      });
      const store = openObjectStore(config);
      expect(store).toBeInstanceOf(S3ObjectStore);
      stores.push(store as S3ObjectStore);
      await store.put('a.parquet', Buffer.from('configured'));
      expect(store.uri('a.parquet')).toBe('s3://gems-test/from-config/a.parquet');
      const p = await store.localPath('a.parquet');
      expect(p.startsWith(join(dataDir, 'cache'))).toBe(true);
      expect(readFileSync(p, 'utf8')).toBe('configured');
    } finally {
      if (saved.id === undefined) delete process.env['AWS_ACCESS_KEY_ID'];
      else process.env['AWS_ACCESS_KEY_ID'] = saved.id;
      if (saved.secret === undefined) delete process.env['AWS_SECRET_ACCESS_KEY'];
      else process.env['AWS_SECRET_ACCESS_KEY'] = saved.secret;
    }
  });

  it('backoff grows exponentially with jitter and respects the cap', () => {
    const lo = () => 0;
    const hi = () => 0.999999;
    expect([1, 2, 3, 4].map((r) => backoffDelayMs(r, 100, 10_000, lo))).toEqual([50, 100, 200, 400]);
    expect([1, 2, 3, 4].map((r) => backoffDelayMs(r, 100, 10_000, hi))).toEqual([100, 200, 400, 800]);
    expect(backoffDelayMs(30, 100, 1000, hi)).toBe(1000);
  });
});
