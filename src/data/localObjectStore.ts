// Object store on a local folder (the default). Writes go to a temp file in the same folder and are renamed into
// place, so a reader sees the old object or the new one, never a torn one.
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import type { ObjectInfo, ObjectStore } from './objectStore.js';

function checkKey(key: string): void {
  if (!key || key.startsWith('/') || key.split('/').some((p) => p === '..' || p === '.')) {
    throw new Error(`invalid object key '${key}'`);
  }
}

export class LocalObjectStore implements ObjectStore {
  readonly kind = 'local' as const;
  constructor(readonly root: string) {}

  private path(key: string): string {
    checkKey(key);
    return join(this.root, ...key.split('/'));
  }

  private async info(key: string, path: string): Promise<ObjectInfo> {
    const st = await fs.stat(path);
    const etag = createHash('sha1').update(`${st.size}:${st.mtimeMs}:${st.ino}`).digest('hex');
    return { key, size: st.size, etag, lastModified: st.mtime };
  }

  async put(key: string, body: Buffer | Uint8Array): Promise<ObjectInfo> {
    const path = this.path(key);
    await fs.mkdir(dirname(path), { recursive: true });
    const tmp = `${path}.tmp-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}`;
    await fs.writeFile(tmp, body);
    await fs.rename(tmp, path);
    return this.info(key, path);
  }

  async putFile(key: string, src: string): Promise<ObjectInfo> {
    const path = this.path(key);
    await fs.mkdir(dirname(path), { recursive: true });
    const tmp = `${path}.tmp-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}`;
    await fs.copyFile(src, tmp);
    await fs.rename(tmp, path);
    return this.info(key, path);
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
        if (ent.isDirectory()) await walk(full);
        else if (ent.isFile() && !ent.name.includes('.tmp-')) {
          const key = relative(this.root, full).split(sep).join('/');
          if (key.startsWith(prefix)) out.push(await this.info(key, full));
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
    await fs.access(p);
    return p;
  }

  uri(key: string): string {
    return `file://${this.path(key)}`;
  }
}
