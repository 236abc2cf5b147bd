// Object store on a local folder (the default). Writes go to a temp file in the same folder and are renamed into
// place, so a reader sees the old object or the new one, never a torn one.
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { ObjectInfo, ObjectStore } from './objectStore.js';

function checkKey(key: string): void {
  // Empty segments ('a//b', 'a/') would map to another key's file after path normalisation.
  if (!key || key.startsWith('/') || key.split('/').some((p) => p === '..' || p === '.' || p === '')) {
    throw new Error(`invalid object key '${key}'`);
  }
}

/** Names of in-flight writes (see put/putFile); only these are hidden from list(), not any key containing '.tmp-'. */
const TEMP_SUFFIX = /\.tmp-\d+-\d+-[a-z0-9]+$/;
const tempName = (path: string): string => `${path}.tmp-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}`;

export class LocalObjectStore implements ObjectStore {
  readonly kind = 'local' as const;
  constructor(readonly root: string) {}

  private path(key: string): string {
    checkKey(key);
    return join(this.root, ...key.split('/'));
  }

  private async info(key: string, path: string): Promise<ObjectInfo> {
    const st = await fs.stat(path);
    if (!st.isFile()) throw Object.assign(new Error(`${this.uri(key)} is not an object (a folder?)`), { code: 'ENOENT' });
    const etag = createHash('sha1').update(`${st.size}:${st.mtimeMs}:${st.ino}`).digest('hex');
    return { key, size: st.size, etag, lastModified: st.mtime };
  }

  /** Writes through a temp file that is flushed to disk, then renamed: a crash leaves the old object or the new one. */
  private async writeAtomically(key: string, write: (tmp: string) => Promise<void>): Promise<ObjectInfo> {
    const path = this.path(key);
    await fs.mkdir(dirname(path), { recursive: true });
    const tmp = tempName(path);
    try {
      await write(tmp);
      const fh = await fs.open(tmp, 'r+');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
      await fs.rename(tmp, path);
    } catch (e) {
      await fs.rm(tmp, { force: true });
      throw e;
    }
    return this.info(key, path);
  }

  async put(key: string, body: Buffer | Uint8Array): Promise<ObjectInfo> {
    return this.writeAtomically(key, (tmp) => fs.writeFile(tmp, body));
  }

  async putFile(key: string, src: string): Promise<ObjectInfo> {
    return this.writeAtomically(key, (tmp) => fs.copyFile(src, tmp));
  }

  async get(key: string): Promise<Buffer> {
    return fs.readFile(this.path(key));
  }

  async head(key: string): Promise<ObjectInfo | null> {
    try {
      return await this.info(key, this.path(key));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    const walk = async (dir: string): Promise<void> => {
      let entries;
      try {
        entries = await fs.readdir(dir, { withFileTypes: true });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw e;
      }
      for (const ent of entries) {
        const full = join(dir, ent.name);
        const key = relative(this.root, full).split(sep).join('/');
        if (ent.isDirectory()) {
          // Only descend where keys can still start with the prefix.
          if (prefix.startsWith(`${key}/`) || key.startsWith(prefix)) await walk(full);
        } else if (ent.isFile() && !TEMP_SUFFIX.test(ent.name) && key.startsWith(prefix)) {
          const info = await this.info(key, full).catch((e: NodeJS.ErrnoException) => {
            if (e.code === 'ENOENT') return null; // deleted while we listed
            throw e;
          });
          if (info) out.push(info);
        }
      }
    };
    await walk(this.root);
    out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    return out;
  }

  async delete(key: string): Promise<void> {
    await fs.rm(this.path(key), { force: true });
  }

  async localPath(key: string): Promise<string> {
    const p = this.path(key);
    if (!(await this.head(key))) throw new Error(`object ${this.uri(key)} does not exist`);
    return p;
  }

  uri(key: string): string {
    return pathToFileURL(this.path(key)).href;
  }
}
