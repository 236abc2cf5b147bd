// A user's lifecycle memory: M × d vectors produced by the QLA compressor (src/lifecycle/), plus the additive QLA
// state that lets the nightly job fold in new events without rereading the whole history. Stored in a key-value
// memory store (src/lifecycle/openMemoryStore.ts) and served by gems.v1.LifecycleMemoryService.

export interface LifecycleMemoryHeader {
  /** Binary format version of the stored value. */
  formatVersion: number;
  /** Version of the compressor that produced it; a new compressor version forces full recompression. */
  compressorVersion: string;
  /** Number of memory slots (M) and their width (d). */
  slots: number;
  dim: number;
  dtype: 'float32' | 'float16';
  /** Newest event time (epoch ms; or seq for sources without timestamps) folded into the memory. */
  watermark: number;
  /** Number of lifecycle events the memory covers. */
  eventsCovered: number;
  /** Epoch ms when written. */
  createdAt: number;
}

export interface LifecycleMemory {
  userId: number;
  header: LifecycleMemoryHeader;
  /** M × d memory vectors, row-major. */
  vectors: Float32Array;
  /**
   * The additive QLA state (sum over events of φ(k)ᵀv and φ(k)), kept so an update folds in only new events.
   * Optional: a memory written without it can only be recomputed from scratch.
   */
  state?: Float32Array;
}

export interface MemoryStore {
  readonly kind: 'lmdb' | 'redis';
  get(userId: number): Promise<LifecycleMemory | null>;
  getMany(userIds: number[]): Promise<(LifecycleMemory | null)[]>;
  /** Writes atomically (all of a batch or none). */
  putMany(memories: LifecycleMemory[]): Promise<void>;
  /** Headers only (cheap), e.g. for the nightly job's selection. */
  getHeader(userId: number): Promise<LifecycleMemoryHeader | null>;
  /** Headers of many users in one round trip (null = no memory). */
  getHeaders(userIds: number[]): Promise<(LifecycleMemoryHeader | null)[]>;
  /**
   * The stored value as encoded by src/lifecycle/memoryFormat.ts (a private copy), NOT yet validated: the caller
   * validates it (readLayout / decodeMemory). Lets the gRPC service ship the vector bytes without re-encoding.
   */
  getEncoded(userId: number): Promise<Buffer | null>;
  getEncodedMany(userIds: number[]): Promise<(Buffer | null)[]>;
  /** Synchronous getEncoded, offered by embedded stores (lmdb) so the gRPC hot path needs no promise. */
  getEncodedSync?(userId: number): Buffer | null;
  /** Every user id that has a memory, ascending for lmdb (unordered for redis). */
  userIds(): AsyncIterable<number>;
  delete(userId: number): Promise<void>;
  count(): Promise<number>;
  close(): Promise<void>;
}

/** A stored value failed validation (checksum, length, format): it is an error and is never served. */
export class CorruptMemoryError extends Error {
  override name = 'CorruptMemoryError';
  constructor(
    readonly userId: number,
    why: string,
  ) {
    super(`lifecycle memory of user ${userId} is corrupt: ${why}`);
  }
}
