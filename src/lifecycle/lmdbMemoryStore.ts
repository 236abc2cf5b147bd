// The default memory store: an embedded, memory-mapped lmdb file. Reads are microseconds (no server hop); one
// writer and many readers may share the file across processes (the nightly job writes while `gems serve` reads).
// Values are the self-checking binary encoding of memoryFormat.ts; every read is validated before it is returned.
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { open, type RootDatabase } from 'lmdb';
import type { LifecycleMemory, LifecycleMemoryHeader, MemoryStore } from './memory.js';
import { decodeMemory, encodeMemory, readLayout } from './memoryFormat.js';

export interface LmdbMemoryStoreOptions {
  /** The lmdb data file (its lock file sits beside it). */
  path: string;
  /** Encode vectors with this dtype regardless of the memory's header (config.lifecycle.dtype). */
  dtype?: 'float32' | 'float16';
  /** Upper bound of the memory map in bytes (lmdb grows the file up to it). Default 64 GiB of address space. */
  mapSize?: number;
}

export class LmdbMemoryStore implements MemoryStore {
  readonly kind = 'lmdb' as const;
  private readonly db: RootDatabase<Buffer, number>;
  private closed = false;

  constructor(private readonly options: LmdbMemoryStoreOptions) {
    mkdirSync(dirname(options.path), { recursive: true });
    this.db = open<Buffer, number>({
      path: options.path,
      encoding: 'binary',
      // Values carry their own CRC and are float data that compresses poorly; skip lmdb's LZ4.
      compression: false,
      mapSize: options.mapSize ?? 64 * 1024 ** 3,
    });
  }

  get path(): string {
    return this.options.path;
  }

  private check(userId: number): void {
    if (this.closed) throw new Error(`memory store ${this.options.path} is closed`);
    if (!Number.isSafeInteger(userId)) throw new RangeError(`userId must be a safe integer, got ${userId}`);
  }

  /**
   * getBinaryFast returns lmdb's shared read buffer: overwritten by the next read, and its `length` property is
   * patched to the value's size while the underlying typed array is larger (native copies would read past the
   * value). A `subarray` of exactly the value's bytes fixes the length; callers still copy before the next read.
   */
  private fast(userId: number): Buffer | undefined {
    const raw = this.db.getBinaryFast(userId);
    return raw === undefined ? undefined : raw.subarray(0, raw.length);
  }

  async get(userId: number): Promise<LifecycleMemory | null> {
    this.check(userId);
    // getBinaryFast returns a buffer that the next read overwrites; decodeMemory copies out of it synchronously.
    const raw = this.fast(userId);
    return raw ? decodeMemory(userId, raw) : null;
  }

  async getMany(userIds: number[]): Promise<(LifecycleMemory | null)[]> {
    return userIds.map((id) => {
      this.check(id);
      const raw = this.fast(id);
      return raw ? decodeMemory(id, raw) : null;
    });
  }

  async getEncoded(userId: number): Promise<Buffer | null> {
    return this.getEncodedSync(userId);
  }

  getEncodedSync(userId: number): Buffer | null {
    this.check(userId);
    const raw = this.fast(userId);
    return raw ? Buffer.from(raw) : null;
  }

  async getEncodedMany(userIds: number[]): Promise<(Buffer | null)[]> {
    return userIds.map((id) => {
      this.check(id);
      const raw = this.fast(id);
      return raw ? Buffer.from(raw) : null;
    });
  }

  async getHeader(userId: number): Promise<LifecycleMemoryHeader | null> {
    this.check(userId);
    const raw = this.fast(userId);
    // The whole value is already mapped in memory, so validate it fully (checksum included) — it is cheap here.
    return raw ? readLayout(userId, raw).header : null;
  }

  async getHeaders(userIds: number[]): Promise<(LifecycleMemoryHeader | null)[]> {
    return userIds.map((id) => {
      this.check(id);
      const raw = this.fast(id);
      return raw ? readLayout(id, raw).header : null;
    });
  }

  async putMany(memories: LifecycleMemory[]): Promise<void> {
    if (this.closed) throw new Error(`memory store ${this.options.path} is closed`);
    if (memories.length === 0) return;
    // Encode everything first so a bad memory fails the batch before anything is written.
    const encoded = memories.map((m) => {
      this.check(m.userId);
      return encodeMemory(m, { dtype: this.options.dtype });
    });
    // One lmdb write transaction: the batch is committed (and fsynced) all together or not at all.
    await this.db.transaction(() => {
      for (let i = 0; i < memories.length; i++) this.db.put(memories[i]!.userId, encoded[i]!);
    });
  }

  async *userIds(): AsyncIterable<number> {
    if (this.closed) throw new Error(`memory store ${this.options.path} is closed`);
    for (const key of this.db.getKeys()) yield key;
  }

  async delete(userId: number): Promise<void> {
    this.check(userId);
    await this.db.remove(userId);
  }

  async count(): Promise<number> {
    if (this.closed) throw new Error(`memory store ${this.options.path} is closed`);
    return this.db.getCount();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.db.close();
  }
}
