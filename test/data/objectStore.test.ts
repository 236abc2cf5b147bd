// The ObjectStore contract, run against both implementations (a local folder and S3 on a real s3rver), plus
// LocalObjectStore specifics, the factory, and the ObjectCache's crash-safety and LRU rules on a real folder.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.js';
import { LocalObjectStore } from '../../src/data/localObjectStore.js';
import { ObjectCache } from '../../src/data/objectCache.js';
import type { ObjectStore } from '../../src/data/objectStore.js';
import { openObjectStore } from '../../src/data/openObjectStore.js';
import { S3ObjectStore } from '../../src/data/s3ObjectStore.js';
import { setLogSink } from '../../src/util/log.js';
import { S3RVER_CREDENTIALS, startS3rver, type S3rverHandle } from '../support/s3server.js';

const tempDirs: string[] = [];
const tmp = (name: string): string => {
  const dir = mkdtempSync(join(tmpdir(), `gems-${name}-`));
  tempDirs.push(dir);
  return dir;
};

function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile())
    .map((d) => join(d.parentPath, d.name).slice(dir.length + 1))
    .sort();
}

let server: S3rverHandle;
let s3: S3ObjectStore;
let prevSink: (line: string) => void;

beforeAll(async () => {
  prevSink = setLogSink(() => {});
  server = await startS3rver({ bucket: 'contract' });
  s3 = new S3ObjectStore({
    bucket: 'contract',
    prefix: 'gems/data',
    endpoint: server.endpoint,
    forcePathStyle: true,
    credentials: S3RVER_CREDENTIALS,
    cacheDir: tmp('contract-cache'),
    cacheMaxBytes: 64 * 1024 ** 2,
    listPageSize: 2,
  });
});

afterAll(async () => {
  s3?.close();
  await server?.stop();
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
  setLogSink(prevSink);
});

const impls: [string, () => ObjectStore][] = [
  ['local', () => new LocalObjectStore(tmp('objects'))],
  ['s3', () => s3],
];

describe.each(impls)('ObjectStore contract: %s', (_name, make) => {
  it('put/get/head/list/delete/localPath behave the same', async () => {
    const store = make();
    const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const a = await store.put('events/date=2026-01-01/bucket=03/part-0.parquet', bytes);
    expect(a.size).toBe(256);
    expect(a.etag.length).toBeGreaterThan(0);
    expect((await store.get('events/date=2026-01-01/bucket=03/part-0.parquet')).equals(bytes)).toBe(true);
    await store.put('events/date=2026-01-02/bucket=01/part-0.parquet', Buffer.from('b'));
    await store.put('events/date=2026-02-01/bucket=00/part-0.parquet', Buffer.from('c'));
    await store.put('items/items.parquet', new Uint8Array(0));

    // Listings are in key order, prefixes need not end at a '/'.
    expect((await store.list('events/')).map((o) => o.key)).toEqual([
      'events/date=2026-01-01/bucket=03/part-0.parquet',
      'events/date=2026-01-02/bucket=01/part-0.parquet',
      'events/date=2026-02-01/bucket=00/part-0.parquet',
    ]);
    expect((await store.list('events/date=2026-01')).length).toBe(2);
    expect((await store.list('')).length).toBe(4);
    expect(await store.list('nothing/')).toEqual([]);

    // Overwrite: new content, new etag.
    const before = await store.head('items/items.parquet');
    expect(before?.size).toBe(0);
    const after = await store.put('items/items.parquet', Buffer.from('now with rows'));
    expect(after.etag).not.toBe(before!.etag);
    expect(readFileSync(await store.localPath('items/items.parquet'), 'utf8')).toBe('now with rows');

    // putFile.
    const src = join(tmp('src'), 'f.parquet');
    writeFileSync(src, 'from a file');
    expect((await store.putFile('files/f.parquet', src)).size).toBe(11);
    expect((await store.get('files/f.parquet')).toString()).toBe('from a file');

    await store.delete('files/f.parquet');
    expect(await store.head('files/f.parquet')).toBeNull();
    await expect(store.get('files/f.parquet')).rejects.toThrow();
    await expect(store.localPath('files/f.parquet')).rejects.toThrow(/does not exist/);

    for (const bad of ['', '/abs', '../up', 'a/../b', 'a//b', 'a/./b', 'dir/']) {
      await expect(store.put(bad, Buffer.from('x')), `key '${bad}'`).rejects.toThrow(/invalid object key/);
    }
    expect(store.uri('a b/c.parquet')).toMatch(store.kind === 's3' ? /^s3:\/\/contract\/gems\/data\/a b\/c\.parquet$/ : /^file:\/\/.*\/a%20b\/c\.parquet$/);
  });
});

describe('LocalObjectStore', () => {
  it('hides only its own in-flight temp files from listings, and treats folders as non-objects', async () => {
    const root = tmp('objects');
    const store = new LocalObjectStore(root);
    await store.put('p/a.parquet', Buffer.from('a'));
    await store.put('p/report.tmp-notes.txt', Buffer.from('a real key'));
    writeFileSync(join(root, 'p', 'b.parquet.tmp-123-1700000000000-abc12'), 'half written by a crashed writer');
    expect((await store.list('p/')).map((o) => o.key)).toEqual(['p/a.parquet', 'p/report.tmp-notes.txt']);
    expect(await store.head('p')).toBeNull();
    await expect(store.localPath('p')).rejects.toThrow(/does not exist/);
  });

  it('leaves no temp file behind when a write fails', async () => {
    const root = tmp('objects');
    const store = new LocalObjectStore(root);
    await expect(store.putFile('x/y.parquet', join(root, 'no-such-source'))).rejects.toThrow(/ENOENT/);
    expect(filesUnder(root)).toEqual([]);
    expect(await store.list('')).toEqual([]);
  });

  it('openObjectStore gives a local store under <dataDir>/objects by default', async () => {
    const dataDir = tmp('data');
    const store = openObjectStore(loadConfig({ env: {}, flags: { dataDir } }));
    expect(store).toBeInstanceOf(LocalObjectStore);
    await store.put('k.parquet', Buffer.from('v'));
    expect(await store.localPath('k.parquet')).toBe(join(dataDir, 'objects', 'k.parquet'));
  });
});

describe('ObjectCache', () => {
  const v = (size: number, etag: string) => ({ size, etag });

  it('never keeps a partial or failed fetch, under a valid name or as a temp file', async () => {
    const dir = tmp('cache');
    const cache = new ObjectCache({ dir, maxBytes: 1 << 20, namespace: 'ns' });
    await expect(
      cache.store('k.parquet', async (t) => {
        writeFileSync(t, 'only part');
        throw new Error('connection reset');
      }, 's3://b/k.parquet'),
    ).rejects.toThrow('connection reset');
    await expect(
      cache.store('k.parquet', async (t) => {
        writeFileSync(t, 'short');
        return v(100, 'e1');
      }, 's3://b/k.parquet'),
    ).rejects.toThrow(/caching s3:\/\/b\/k\.parquet: wrote 5 bytes but the object has 100/);
    expect(filesUnder(dir)).toEqual([]);
    expect(await cache.lookup('k.parquet', v(5, 'e1'))).toBeNull();
  });

  it('validates by size and etag; a damaged file is dropped and refetched', async () => {
    const dir = tmp('cache');
    const cache = new ObjectCache({ dir, maxBytes: 1 << 20, namespace: 'ns' });
    const p = await cache.store('k.parquet', async (t) => (writeFileSync(t, 'hello'), v(5, 'e1')), 'u');
    expect(await cache.lookup('k.parquet', v(5, 'e1'))).toBe(p);
    expect(await cache.lookup('k.parquet', v(5, 'e2'))).toBeNull(); // other version
    writeFileSync(p, 'hell'); // damaged behind our back
    expect(await cache.lookup('k.parquet', v(5, 'e1'))).toBeNull();
    expect(existsSync(p)).toBe(false);
    // The same key in another namespace is a different entry.
    const other = new ObjectCache({ dir, maxBytes: 1 << 20, namespace: 'other' });
    const q = await other.store('k.parquet', async (t) => (writeFileSync(t, 'hello'), v(5, 'e1')), 'u');
    expect(q).not.toBe(p);
  });

  it('rebuilds its LRU order from file times after a restart and removes stale temp files', async () => {
    const dir = tmp('cache');
    const first = new ObjectCache({ dir, maxBytes: 1000, namespace: 'ns' });
    const paths: string[] = [];
    for (const [i, k] of ['a', 'b', 'c'].entries()) {
      const p = await first.store(`${k}.bin`, async (t) => (writeFileSync(t, Buffer.alloc(300, i)), v(300, k)), k);
      const t = new Date(Date.UTC(2026, 0, 1, 0, 0, i)); // a oldest … c newest
      utimesSync(p, t, t);
      paths.push(p);
    }
    // A crashed writer's temp file from long ago, and one being written right now by another process.
    const folder = join(dir, 'zz');
    const stale = join(folder, 'deadbeef.tmp-1-1-x');
    const fresh = join(folder, 'deadbeef.tmp-2-2-y');
    writeFileSync(join(dir, 'not-a-folder'), ''); // stray files in the cache root are ignored
    mkdirSync(folder, { recursive: true });
    writeFileSync(stale, 'x');
    writeFileSync(fresh, 'y');
    utimesSync(stale, new Date(0), new Date(0));

    const second = new ObjectCache({ dir, maxBytes: 1000, namespace: 'ns' });
    expect(await second.stats()).toEqual({ files: 3, bytes: 900 });
    expect(existsSync(stale)).toBe(false);
    expect(existsSync(fresh)).toBe(true);
    // Using 'a' makes 'b' the least recently used; a fourth file must push 'b' out.
    expect(await second.lookup('a.bin', v(300, 'a'))).toBe(paths[0]);
    await second.store('d.bin', async (t) => (writeFileSync(t, Buffer.alloc(300, 9)), v(300, 'd')), 'd');
    expect(existsSync(paths[0]!)).toBe(true);
    expect(existsSync(paths[1]!)).toBe(false);
    expect(existsSync(paths[2]!)).toBe(true);
    expect((await second.stats()).bytes).toBe(900);
  });

  it('keeps an object larger than the whole budget (it was just asked for) and evicts everything else', async () => {
    const dir = tmp('cache');
    const cache = new ObjectCache({ dir, maxBytes: 100, namespace: 'ns' });
    const small = await cache.store('s', async (t) => (writeFileSync(t, Buffer.alloc(50)), v(50, 's')), 's');
    const big = await cache.store('b', async (t) => (writeFileSync(t, Buffer.alloc(500)), v(500, 'b')), 'b');
    expect(existsSync(big)).toBe(true);
    expect(existsSync(small)).toBe(false);
  });
});
