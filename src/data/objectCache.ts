// A local, size-bounded cache of remote objects, so DuckDB can read S3 objects as files.
//
// Layout: <dir>/<aa>/<keyHash>.<versionHash><ext>, where keyHash = sha256(namespace, key) (aa = its first two hex
// digits) and versionHash = hash of the object's ETag. The version is in the file name, so a cached file is valid
// exactly when a file with the current ETag's name exists and has the current size; no separate metadata file can
// disagree with the data after a crash. Files are written to a temp name in the same folder and renamed into place
// only after their byte count matched, so a crash or a dropped connection never leaves a torn file under a valid name.
// Eviction is least-recently-used by total bytes; a file's mtime is its last use (touched on every hit), so the
// order survives restarts.
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { extname, join } from 'node:path';
import { logger, type Logger } from '../util/log.js';

export interface CachedVersion {
  size: number;
  etag: string;
}

export interface ObjectCacheOptions {
  dir: string;
  maxBytes: number;
  /** Separates stores sharing one folder (for S3: endpoint + bucket + prefix). */
  namespace: string;
  log?: Logger;
}

interface Entry {
  bytes: number;
  lastUsed: number;
}

/** Temp files older than this are leftovers of a crashed process and are removed on the first scan. */
const STALE_TEMP_MS = 60 * 60 * 1000;

const sha = (s: string, n: number): string => createHash('sha256').update(s).digest('hex').slice(0, n);

export class ObjectCache {
  readonly dir: string;
  readonly maxBytes: number;
  private readonly namespace: string;
  private readonly log: Logger;
  private readonly entries = new Map<string, Entry>();
  private totalBytes = 0;
  private loaded: Promise<void> | null = null;

  constructor(opts: ObjectCacheOptions) {
    if (!(opts.maxBytes > 0)) throw new Error(`object cache ${opts.dir}: maxBytes must be > 0, got ${opts.maxBytes}`);
    this.dir = opts.dir;
    this.maxBytes = opts.maxBytes;
    this.namespace = opts.namespace;
    this.log = opts.log ?? logger('objectCache');
  }

  private keyHash(key: string): string {
    return sha(`${this.namespace}\0${key}`, 40);
  }

  private folder(keyHash: string): string {
    return join(this.dir, keyHash.slice(0, 2));
  }

  /** Keep the key's extension (DuckDB and people recognise `.parquet`), when it is a plain one. */
  private static ext(key: string): string {
    const e = extname(key);
    return /^\.[A-Za-z0-9]{1,12}$/.test(e) ? e : '';
  }

  /** The file name a given version of `key` lives under. */
  pathFor(key: string, version: CachedVersion): string {
    const kh = this.keyHash(key);
    return join(this.folder(kh), `${kh}.${sha(version.etag, 16)}${ObjectCache.ext(key)}`);
  }

  /** Scans the folder once per process: builds the LRU index and removes stale temp files. */
  private load(): Promise<void> {
    this.loaded ??= (async () => {
      let subdirs: string[];
      try {
        subdirs = await fs.readdir(this.dir);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw e;
      }
      const now = Date.now();
      for (const sub of subdirs) {
        const folder = join(this.dir, sub);
        let names: string[];
        try {
          names = await fs.readdir(folder);
        } catch {
          continue; // not a folder of ours
        }
        for (const name of names) {
          const path = join(folder, name);
          const st = await fs.stat(path).catch(() => null);
          if (!st?.isFile()) continue;
          if (name.includes('.tmp-')) {
            if (now - st.mtimeMs > STALE_TEMP_MS) await fs.rm(path, { force: true });
            continue;
          }
          this.track(path, st.size, st.mtimeMs);
        }
      }
    })();
    return this.loaded;
  }

  private track(path: string, bytes: number, lastUsed: number): void {
    const old = this.entries.get(path);
    if (old) this.totalBytes -= old.bytes;
    this.entries.set(path, { bytes, lastUsed });
    this.totalBytes += bytes;
  }

  private async drop(path: string): Promise<void> {
    await fs.rm(path, { force: true });
    const old = this.entries.get(path);
    if (old) {
      this.totalBytes -= old.bytes;
      this.entries.delete(path);
    }
  }

  /** The cached file for exactly this version of `key` (and marks it used), or null when absent or damaged. */
  async lookup(key: string, version: CachedVersion): Promise<string | null> {
    await this.load();
    const path = this.pathFor(key, version);
    const st = await fs.stat(path).catch(() => null);
    if (!st) {
      if (this.entries.has(path)) await this.drop(path);
      return null;
    }
    if (st.size !== version.size) {
      // Cannot happen through this class (sizes are checked before the rename); someone touched the file.
      this.log.warn('cached file has the wrong size; refetching', { path, size: st.size, expected: version.size });
      await this.drop(path);
      return null;
    }
    const now = Date.now();
    await fs.utimes(path, new Date(now), new Date(now)).catch(() => undefined);
    this.track(path, st.size, now);
    return path;
  }

  /**
   * Fetches `key` into the cache: `fill(tmpPath)` writes the object to tmpPath and returns the version it wrote.
   * The file is renamed into place only when its size equals the reported size; on any failure the temp file is
   * removed and the error rethrown. Older versions of the key are removed, then the cache is trimmed to maxBytes.
   */
  async store(key: string, fill: (tmpPath: string) => Promise<CachedVersion>, uri: string): Promise<string> {
    await this.load();
    const kh = this.keyHash(key);
    const folder = this.folder(kh);
    await fs.mkdir(folder, { recursive: true });
    const tmp = join(folder, `${kh}.tmp-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}`);
    let path: string;
    let size: number;
    try {
      const version = await fill(tmp);
      const st = await fs.stat(tmp);
      if (st.size !== version.size) {
        throw new Error(`caching ${uri}: wrote ${st.size} bytes but the object has ${version.size}; not caching a partial copy`);
      }
      path = this.pathFor(key, version);
      size = st.size;
      await fs.rename(tmp, path);
    } catch (e) {
      await fs.rm(tmp, { force: true });
      throw e;
    }
    this.track(path, size, Date.now());
    await this.removeOtherVersions(kh, path);
    await this.evict(path);
    return path;
  }

  /** Removes every cached version of `key`. */
  async remove(key: string): Promise<void> {
    await this.load();
    await this.removeOtherVersions(this.keyHash(key), null);
  }

  private async removeOtherVersions(kh: string, keep: string | null): Promise<void> {
    const folder = this.folder(kh);
    const names = await fs.readdir(folder).catch(() => [] as string[]);
    for (const name of names) {
      const path = join(folder, name);
      if (name.startsWith(`${kh}.`) && !name.includes('.tmp-') && path !== keep) await this.drop(path);
    }
  }

  /** Deletes least-recently-used files until the total fits maxBytes; never the file just handed out. */
  private async evict(protect: string): Promise<void> {
    if (this.totalBytes <= this.maxBytes) return;
    const byAge = [...this.entries.entries()].sort((a, b) => a[1].lastUsed - b[1].lastUsed);
    let evicted = 0;
    let freed = 0;
    for (const [path, entry] of byAge) {
      if (this.totalBytes <= this.maxBytes) break;
      if (path === protect) continue;
      await this.drop(path);
      evicted++;
      freed += entry.bytes;
    }
    if (evicted > 0) this.log.debug('evicted cached objects', { evicted, freedBytes: freed, totalBytes: this.totalBytes });
    if (this.totalBytes > this.maxBytes) {
      this.log.warn('object cache is over its size limit: the newest object alone is larger', {
        totalBytes: this.totalBytes,
        maxBytes: this.maxBytes,
      });
    }
  }

  /** Current number of files and bytes this process knows of. */
  async stats(): Promise<{ files: number; bytes: number }> {
    await this.load();
    return { files: this.entries.size, bytes: this.totalBytes };
  }
}
