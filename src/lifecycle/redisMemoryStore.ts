// Redis memory store: the way to share memories across machines (several `gems serve` replicas, a nightly job on
// another host). Same binary values as lmdb (memoryFormat.ts); batch writes are one MULTI/EXEC so a batch lands
// whole or not at all. Keys: `<prefix>m:<userId>` for values, `<prefix>users` a set of user ids (count, listing).
import { Redis } from 'ioredis';
import type { LifecycleMemory, LifecycleMemoryHeader, MemoryStore } from './memory.js';
import { HEADER_BYTES, decodeMemory, encodeMemory, readHeaderOnly } from './memoryFormat.js';

export interface RedisMemoryStoreOptions {
  /** redis://[user:pass@]host:port[/db] */
  url: string;
  /** Key prefix, so several stores (or tests) can share one server. */
  prefix?: string;
  dtype?: 'float32' | 'float16';
  /** Fail a command after this long when the server is unreachable instead of queueing forever. */
  connectTimeoutMs?: number;
}

/** Header bytes fetched by a header-only read: the fixed header plus room for a typical compressor version. */
const HEADER_FETCH = HEADER_BYTES + 200;

export class RedisMemoryStore implements MemoryStore {
  readonly kind = 'redis' as const;
  private readonly redis: Redis;
  private readonly prefix: string;
  private closed = false;

  private constructor(
    redis: Redis,
    private readonly options: RedisMemoryStoreOptions,
  ) {
    this.redis = redis;
    this.prefix = options.prefix ?? 'gems:lifecycle:';
  }

  /** Connects (and pings) before returning, so a wrong URL fails here with a clear message. */
  static async open(options: RedisMemoryStoreOptions): Promise<RedisMemoryStore> {
    const redis = new Redis(options.url, {
      lazyConnect: true,
      connectTimeout: options.connectTimeoutMs ?? 5000,
      maxRetriesPerRequest: 2,
    });
    // Without a listener ioredis prints unhandled 'error' events; the failure surfaces through connect() instead.
    redis.on('error', () => undefined);
    try {
      await redis.connect();
      await redis.ping();
    } catch (e) {
      redis.disconnect();
      throw new Error(`redis memory store at ${redactUrl(options.url)}: cannot connect (${(e as Error).message})`, { cause: e });
    }
    return new RedisMemoryStore(redis, options);
  }

  private key(userId: number): string {
    if (this.closed) throw new Error('redis memory store is closed');
    if (!Number.isSafeInteger(userId)) throw new RangeError(`userId must be a safe integer, got ${userId}`);
    return `${this.prefix}m:${userId}`;
  }

  private get usersKey(): string {
    return `${this.prefix}users`;
  }

  async get(userId: number): Promise<LifecycleMemory | null> {
    const raw = await this.redis.getBuffer(this.key(userId));
    return raw ? decodeMemory(userId, raw) : null;
  }

  async getMany(userIds: number[]): Promise<(LifecycleMemory | null)[]> {
    const raws = await this.getEncodedMany(userIds);
    return raws.map((raw, i) => (raw ? decodeMemory(userIds[i]!, raw) : null));
  }

  async getEncoded(userId: number): Promise<Buffer | null> {
    return this.redis.getBuffer(this.key(userId));
  }

  async getEncodedMany(userIds: number[]): Promise<(Buffer | null)[]> {
    if (userIds.length === 0) return [];
    return this.redis.mgetBuffer(...userIds.map((id) => this.key(id)));
  }

  async getHeader(userId: number): Promise<LifecycleMemoryHeader | null> {
    return (await this.getHeaders([userId]))[0]!;
  }

  async getHeaders(userIds: number[]): Promise<(LifecycleMemoryHeader | null)[]> {
    if (userIds.length === 0) return [];
    // GETRANGE + STRLEN per user in one pipeline: header bytes only, and the total length to check the header
    // against. The checksum needs the whole value, so it is verified on full reads (get/getMany), not here.
    const pipe = this.redis.pipeline();
    for (const id of userIds) {
      const k = this.key(id);
      pipe.getrangeBuffer(k, 0, HEADER_FETCH - 1);
      pipe.strlen(k);
    }
    const replies = (await pipe.exec()) ?? [];
    const out: (LifecycleMemoryHeader | null)[] = [];
    for (let i = 0; i < userIds.length; i++) {
      const [e1, prefix] = replies[2 * i]!;
      const [e2, len] = replies[2 * i + 1]!;
      if (e1 || e2) throw e1 ?? e2;
      const total = Number(len);
      if (total === 0) {
        out.push(null);
        continue;
      }
      let head = prefix as Buffer;
      const cvLen = head.length >= 22 ? head.readUInt16LE(20) : 0;
      if (HEADER_BYTES + cvLen > head.length && head.length < total) {
        head = await this.redis.getrangeBuffer(this.key(userIds[i]!), 0, HEADER_BYTES + cvLen - 1);
      }
      out.push(readHeaderOnly(userIds[i]!, head, total));
    }
    return out;
  }

  async putMany(memories: LifecycleMemory[]): Promise<void> {
    if (memories.length === 0) return;
    const encoded = memories.map((m) => encodeMemory(m, { dtype: this.options.dtype }));
    const tx = this.redis.multi();
    for (let i = 0; i < memories.length; i++) tx.set(this.key(memories[i]!.userId), encoded[i]!);
    tx.sadd(this.usersKey, ...memories.map((m) => String(m.userId)));
    const replies = await tx.exec();
    if (!replies) throw new Error('redis MULTI for putMany was aborted');
    const failed = replies.find(([err]) => err);
    if (failed) throw failed[0]!;
  }

  async *userIds(): AsyncIterable<number> {
    if (this.closed) throw new Error('redis memory store is closed');
    let cursor = '0';
    do {
      const [next, members] = await this.redis.sscan(this.usersKey, cursor, 'COUNT', 1000);
      cursor = next;
      for (const m of members) yield Number(m);
    } while (cursor !== '0');
  }

  async delete(userId: number): Promise<void> {
    const tx = this.redis.multi();
    tx.del(this.key(userId));
    tx.srem(this.usersKey, String(userId));
    await tx.exec();
  }

  async count(): Promise<number> {
    if (this.closed) throw new Error('redis memory store is closed');
    return this.redis.scard(this.usersKey);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.redis.quit().catch(() => this.redis.disconnect());
  }
}

/** Hides a password in a redis URL before it goes into an error message or a log. */
export function redactUrl(url: string): string {
  return url.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@');
}
