// Object store on S3 (or any S3-compatible server) through @aws-sdk/client-s3.
// - Keys are relative to `prefix` (a folder inside the bucket).
// - Credentials: explicit ones when given, otherwise the SDK's standard chain (env, shared config/SSO, web
//   identity, container/instance metadata).
// - Every request is retried by our own strategy: exponential backoff with jitter on throttling (SlowDown, 429),
//   5xx and network errors, at most `maxAttempts` attempts; client errors (4xx) fail at once. A download that
//   breaks mid-body (after the SDK handed us the response) is restarted by the same rule.
// - Objects above `multipartThresholdBytes` go up as multipart uploads (lib-storage `Upload`), whose parts are
//   retried one by one.
// - DuckDB needs files: `localPath` fetches into an ObjectCache validated by size + ETag (see objectCache.ts).
import { createReadStream, createWriteStream, promises as fs } from 'node:fs';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { logger, type Logger } from '../util/log.js';
import { ObjectCache, type CachedVersion } from './objectCache.js';
import type { ObjectInfo, ObjectStore } from './objectStore.js';

export interface S3ObjectStoreOptions {
  bucket: string;
  /** Folder inside the bucket that holds every key of this store ('' = bucket root). */
  prefix?: string;
  /** Custom endpoint (MinIO, Ceph, s3rver); empty = AWS. */
  endpoint?: string;
  region?: string;
  forcePathStyle?: boolean;
  /** Explicit credentials; when absent the SDK's default credential chain is used. */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Attempts per request, including the first (≥ 1). */
  maxAttempts?: number;
  /** Backoff base: retry n waits about base·2^(n-1) (×5 for throttling), with jitter, capped at retryMaxDelayMs. */
  retryBaseDelayMs?: number;
  retryMaxDelayMs?: number;
  multipartThresholdBytes?: number;
  /** Multipart part size; raised to S3's 5 MiB minimum and so that an upload needs at most 10,000 parts. */
  partSizeBytes?: number;
  /** Parts uploaded concurrently. */
  uploadConcurrency?: number;
  /** Keys per ListObjectsV2 page (S3's maximum is 1000). */
  listPageSize?: number;
  connectTimeoutMs?: number;
  /** A connection idle this long (e.g. a server that stalls mid-body) is dropped and the request fails/retries. */
  idleTimeoutMs?: number;
  cacheDir: string;
  cacheMaxBytes: number;
  log?: Logger;
}

/** An object-store failure, naming the object (s3://…) and carrying the SDK error as `cause`. */
export class ObjectStoreError extends Error {
  override name = 'ObjectStoreError';
  constructor(
    message: string,
    readonly uri: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

const MIN_PART = 5 * 1024 ** 2;
/** Failures of our own disk while saving a download: fetching again would not help. */
const LOCAL_WRITE_ERRORS = new Set(['ENOSPC', 'EDQUOT', 'EACCES', 'EPERM', 'EROFS', 'EMFILE', 'ENFILE', 'ENOENT', 'EISDIR']);
const MAX_PARTS = 10_000;

/**
 * Delay before retry number `retry` (1 = first retry): "equal jitter" exponential backoff, i.e. uniform in
 * [d/2, d) with d = min(cap, base·2^(retry-1)). The random half spreads clients that failed together; the fixed
 * half guarantees the server actually gets a pause.
 */
export function backoffDelayMs(retry: number, baseMs: number, capMs: number, random: () => number = Math.random): number {
  const d = Math.min(capMs, baseMs * 2 ** Math.max(0, retry - 1));
  return Math.round(d / 2 + random() * (d / 2));
}

interface Token {
  getRetryCount(): number;
  getRetryDelay(): number;
}
const token = (retryCount: number, delay: number): Token => ({ getRetryCount: () => retryCount, getRetryDelay: () => delay });

type ErrorType = 'TRANSIENT' | 'THROTTLING' | 'SERVER_ERROR' | 'CLIENT_ERROR';

/**
 * Retry strategy plugged into the SDK's retry middleware (which classifies the error, re-signs and resends the
 * request, and sleeps for the delay we return). Throttling, 5xx and network errors are retried; client errors not.
 */
class BackoffRetryStrategy {
  readonly mode = 'gems-backoff';
  constructor(
    private readonly maxAttempts: number,
    private readonly baseMs: number,
    private readonly capMs: number,
    private readonly log: Logger,
  ) {}

  async acquireInitialRetryToken(_scope: string): Promise<Token> {
    return token(0, 0);
  }

  async refreshRetryTokenForRetry(prev: Token, info: { errorType: ErrorType; error?: unknown; retryAfterHint?: Date }): Promise<Token> {
    const attemptsMade = prev.getRetryCount() + 1;
    if (info.errorType === 'CLIENT_ERROR' || attemptsMade >= this.maxAttempts) {
      throw new Error('not retrying'); // the middleware rethrows the request's own error
    }
    const retry = attemptsMade;
    const base = info.errorType === 'THROTTLING' ? this.baseMs * 5 : this.baseMs;
    let delay = backoffDelayMs(retry, base, this.capMs);
    if (info.retryAfterHint) delay = Math.min(this.capMs, Math.max(delay, info.retryAfterHint.getTime() - Date.now()));
    this.log.warn('S3 request failed; retrying', {
      attempt: attemptsMade,
      maxAttempts: this.maxAttempts,
      delayMs: delay,
      errorType: info.errorType,
      error: describeError(info.error),
    });
    return token(retry, delay);
  }

  recordSuccess(_token: Token): void {}
}

/** "SlowDown: Please reduce your request rate. (HTTP 503, 3 attempts)" */
export function describeError(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  const meta = (e as { $metadata?: { httpStatusCode?: number; attempts?: number } }).$metadata;
  const code = (e as NodeJS.ErrnoException).code;
  const parts: string[] = [];
  if (meta?.httpStatusCode) parts.push(`HTTP ${meta.httpStatusCode}`);
  if (meta?.attempts && meta.attempts > 1) parts.push(`${meta.attempts} attempts`);
  // A proxy or load balancer answering with HTML instead of an S3 error document makes the SDK report a parse error.
  const unparsable = meta?.httpStatusCode !== undefined && /deserialization error|parse error/i.test(e.message);
  const msg = unparsable
    ? 'unexpected response (not an S3 error document)'
    : e.message && e.message !== e.name
      ? `${e.name}: ${e.message}`
      : e.name;
  return `${msg}${code && !msg.includes(code) ? ` [${code}]` : ''}${parts.length ? ` (${parts.join(', ')})` : ''}`;
}

function checkKey(key: string): void {
  if (!key || key.startsWith('/') || key.split('/').some((p) => p === '..' || p === '.' || p === '')) {
    throw new Error(`invalid object key '${key}'`);
  }
}

const unquote = (etag: string | undefined): string => (etag ?? '').replace(/^"(.*)"$/, '$1');

const isNotFound = (e: unknown): boolean =>
  (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404 ||
  (e as Error).name === 'NotFound' ||
  (e as Error).name === 'NoSuchKey';

export class S3ObjectStore implements ObjectStore {
  readonly kind = 's3' as const;
  readonly bucket: string;
  /** '' or a folder ending in '/'. */
  readonly prefix: string;
  readonly cache: ObjectCache;
  private readonly client: S3Client;
  private readonly maxAttempts: number;
  private readonly retryBaseDelayMs: number;
  private readonly retryMaxDelayMs: number;
  private readonly multipartThreshold: number;
  private readonly partSize: number;
  private readonly uploadConcurrency: number;
  private readonly listPageSize: number;
  private readonly log: Logger;
  /** One fetch per key at a time within this process. */
  private readonly inflight = new Map<string, Promise<string>>();

  constructor(opts: S3ObjectStoreOptions) {
    if (!opts.bucket) throw new Error('S3 object store: bucket is required');
    this.bucket = opts.bucket;
    const p = (opts.prefix ?? '').replace(/^\/+/, '');
    this.prefix = p === '' || p.endsWith('/') ? p : `${p}/`;
    this.maxAttempts = Math.max(1, Math.floor(opts.maxAttempts ?? 5));
    this.retryBaseDelayMs = opts.retryBaseDelayMs ?? 100;
    this.retryMaxDelayMs = opts.retryMaxDelayMs ?? 20_000;
    this.multipartThreshold = opts.multipartThresholdBytes ?? 16 * 1024 ** 2;
    this.partSize = Math.max(MIN_PART, opts.partSizeBytes ?? 8 * 1024 ** 2);
    this.uploadConcurrency = Math.max(1, opts.uploadConcurrency ?? 4);
    this.listPageSize = Math.min(1000, Math.max(1, opts.listPageSize ?? 1000));
    this.log = opts.log ?? logger('s3');
    this.client = new S3Client({
      region: opts.region || 'us-east-1',
      ...(opts.endpoint ? { endpoint: opts.endpoint } : {}),
      forcePathStyle: opts.forcePathStyle ?? false,
      ...(opts.credentials ? { credentials: opts.credentials } : {}),
      maxAttempts: this.maxAttempts,
      retryStrategy: new BackoffRetryStrategy(this.maxAttempts, this.retryBaseDelayMs, this.retryMaxDelayMs, this.log),
      requestHandler: {
        connectionTimeout: opts.connectTimeoutMs ?? 10_000,
        socketTimeout: opts.idleTimeoutMs ?? 60_000,
      },
    });
    this.cache = new ObjectCache({
      dir: opts.cacheDir,
      maxBytes: opts.cacheMaxBytes,
      namespace: `${opts.endpoint ?? 'aws'}|${this.bucket}|${this.prefix}`,
      log: this.log.child('cache'),
    });
  }

  uri(key: string): string {
    return `s3://${this.bucket}/${this.prefix}${key}`;
  }

  private fullKey(key: string): string {
    checkKey(key);
    return this.prefix + key;
  }

  /** Runs one SDK call (already retried by the strategy) and turns its failure into an error naming the object. */
  private async call<T>(op: string, key: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      const uri = this.uri(key);
      throw new ObjectStoreError(`S3 ${op} ${uri} failed: ${describeError(e)}`, uri, { cause: e });
    }
  }

  async put(key: string, body: Buffer | Uint8Array): Promise<ObjectInfo> {
    const Key = this.fullKey(key);
    const buf = Buffer.isBuffer(body) ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    if (buf.length > this.multipartThreshold) {
      await this.multipart(key, Key, buf, buf.length);
    } else {
      await this.call('PutObject', key, () => this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key, Body: buf })));
    }
    return this.headOrThrow(key, 'after upload');
  }

  async putFile(key: string, path: string): Promise<ObjectInfo> {
    const Key = this.fullKey(key);
    const { size } = await fs.stat(path);
    if (size > this.multipartThreshold) {
      // lib-storage cuts the stream into Buffer parts, so each part can be resent on retry.
      await this.multipart(key, Key, createReadStream(path), size);
    } else {
      // Small: read it whole, so a retry can resend the body (a stream body cannot be replayed).
      const body = await fs.readFile(path);
      await this.call('PutObject', key, () => this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key, Body: body })));
    }
    const info = await this.headOrThrow(key, 'after upload');
    if (info.size !== size) {
      throw new ObjectStoreError(`S3 upload of ${path} to ${this.uri(key)}: stored ${info.size} bytes, file has ${size}`, this.uri(key));
    }
    return info;
  }

  private async multipart(key: string, Key: string, body: Buffer | Readable, size: number): Promise<void> {
    const partSize = Math.max(this.partSize, Math.ceil(size / MAX_PARTS));
    const started = performance.now();
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.bucket, Key, Body: body },
      partSize,
      queueSize: this.uploadConcurrency,
      leavePartsOnError: false, // abort the multipart upload on failure: no orphaned parts billed
    });
    await this.call('multipart upload', key, () => upload.done());
    this.log.debug('multipart upload done', {
      uri: this.uri(key),
      bytes: size,
      parts: Math.ceil(size / partSize),
      ms: Math.round(performance.now() - started),
    });
  }

  async get(key: string): Promise<Buffer> {
    let chunks: Buffer[] = [];
    await this.download(key, async (body) => {
      chunks = [];
      let n = 0;
      for await (const chunk of body) {
        chunks.push(chunk as Buffer);
        n += (chunk as Buffer).length;
      }
      return n;
    });
    return Buffer.concat(chunks);
  }

  async head(key: string): Promise<ObjectInfo | null> {
    const Key = this.fullKey(key);
    try {
      const res = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key }));
      return { key, size: res.ContentLength ?? 0, etag: unquote(res.ETag), lastModified: res.LastModified ?? new Date(0) };
    } catch (e) {
      if (isNotFound(e)) return null;
      const uri = this.uri(key);
      throw new ObjectStoreError(`S3 HeadObject ${uri} failed: ${describeError(e)}`, uri, { cause: e });
    }
  }

  private async headOrThrow(key: string, when: string): Promise<ObjectInfo> {
    const info = await this.head(key);
    if (!info) throw new ObjectStoreError(`S3 object ${this.uri(key)} not found ${when}`, this.uri(key));
    return info;
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    let ContinuationToken: string | undefined;
    do {
      const res = await this.call('ListObjectsV2', prefix, () =>
        this.client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix + prefix, MaxKeys: this.listPageSize, ContinuationToken }),
        ),
      );
      for (const o of res.Contents ?? []) {
        if (!o.Key) continue;
        out.push({ key: o.Key.slice(this.prefix.length), size: o.Size ?? 0, etag: unquote(o.ETag), lastModified: o.LastModified ?? new Date(0) });
      }
      ContinuationToken = res.IsTruncated ? res.NextContinuationToken : undefined;
      if (res.IsTruncated && !ContinuationToken) {
        throw new ObjectStoreError(`S3 ListObjectsV2 ${this.uri(prefix)}: truncated page without a continuation token`, this.uri(prefix));
      }
    } while (ContinuationToken);
    // Same order as the local store (JS string order), whatever order the server used.
    out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    return out;
  }

  async delete(key: string): Promise<void> {
    const Key = this.fullKey(key);
    await this.call('DeleteObject', key, () => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key })));
    await this.cache.remove(key);
  }

  /**
   * GETs the object and hands its body to `consume`. A body that breaks off (connection reset, server gone,
   * fewer bytes than Content-Length) is fetched again from the start, up to maxAttempts in all; the request
   * itself is retried by the SDK strategy. `consume` returns the number of bytes it took. Returns the version read.
   */
  private async download(key: string, consume: (body: Readable) => Promise<number>): Promise<CachedVersion> {
    const Key = this.fullKey(key);
    const uri = this.uri(key);
    let brokeOff: unknown = null;
    for (let attempt = 1; ; attempt++) {
      const res = await this.call('GetObject', key, () => this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key }))).catch(
        (e: unknown) => {
          if (brokeOff && e instanceof ObjectStoreError) e.message += `; the previous attempt broke off mid-body: ${describeError(brokeOff)}`;
          throw e;
        },
      );
      const size = res.ContentLength;
      const etag = unquote(res.ETag);
      if (size === undefined || !etag) {
        (res.Body as Readable | undefined)?.destroy();
        throw new ObjectStoreError(`S3 GetObject ${uri}: response has no Content-Length or ETag`, uri);
      }
      try {
        const received = await consume(res.Body as Readable);
        if (received !== size) throw new Error(`body ended after ${received} of ${size} bytes`);
        return { size, etag };
      } catch (e) {
        (res.Body as Readable).destroy();
        const code = (e as NodeJS.ErrnoException).code ?? '';
        if (LOCAL_WRITE_ERRORS.has(code)) {
          throw new ObjectStoreError(`S3 GetObject ${uri}: writing the local copy failed: ${describeError(e)}`, uri, { cause: e });
        }
        brokeOff = e;
        if (attempt >= this.maxAttempts) {
          throw new ObjectStoreError(`S3 GetObject ${uri}: download broke off after ${attempt} attempt(s): ${describeError(e)}`, uri, {
            cause: e,
          });
        }
        const delay = backoffDelayMs(attempt, this.retryBaseDelayMs, this.retryMaxDelayMs);
        this.log.warn('S3 download broke off; retrying', { uri, attempt, delayMs: delay, error: describeError(e) });
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  /**
   * A cached local copy of the object, validated against a HEAD (size + ETag). Callers that just listed the
   * objects may pass the listed `known` info to skip the HEAD; the file then holds that version or a newer one.
   */
  async localPath(key: string, known?: ObjectInfo): Promise<string> {
    checkKey(key);
    const running = this.inflight.get(key);
    if (running) return running;
    const job = (async () => {
      const info = known?.etag ? known : await this.head(key);
      if (!info) throw new ObjectStoreError(`S3 object ${this.uri(key)} does not exist`, this.uri(key));
      const hit = await this.cache.lookup(key, info);
      if (hit) return hit;
      const started = performance.now();
      const path = await this.cache.store(
        key,
        (tmp) => this.download(key, async (body) => {
          await pipeline(body, createWriteStream(tmp));
          return (await fs.stat(tmp)).size;
        }),
        this.uri(key),
      );
      this.log.debug('fetched into cache', { uri: this.uri(key), bytes: info.size, ms: Math.round(performance.now() - started) });
      return path;
    })().finally(() => this.inflight.delete(key));
    this.inflight.set(key, job);
    return job;
  }

  /** Closes pooled connections (lets the process exit promptly). */
  close(): void {
    this.client.destroy();
  }
}
