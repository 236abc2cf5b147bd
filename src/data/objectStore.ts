// The object store holding event partitions (Parquet). Two implementations behind this interface: a local
// folder (default, src/data/localObjectStore.ts) and S3 (src/data/s3ObjectStore.ts). DuckDB reads local files, so
// every store can hand out a local path for an object (`localPath`): the folder itself, or a validated cache.

export interface ObjectInfo {
  key: string;
  size: number;
  /** Content tag: S3 ETag, or for local files a hash of size + mtime. */
  etag: string;
  lastModified: Date;
}

export interface ObjectStore {
  readonly kind: 'local' | 's3';
  /** Writes an object atomically (readers never see a partial object). */
  put(key: string, body: Buffer | Uint8Array): Promise<ObjectInfo>;
  /** Uploads a local file (multipart for large files on S3). */
  putFile(key: string, path: string): Promise<ObjectInfo>;
  get(key: string): Promise<Buffer>;
  head(key: string): Promise<ObjectInfo | null>;
  /** All objects under a prefix, in key order (pages through large listings). */
  list(prefix: string): Promise<ObjectInfo[]>;
  delete(key: string): Promise<void>;
  /** A local file path with the object's current content, for DuckDB to read. */
  localPath(key: string): Promise<string>;
  /** URI for logs and error messages (file:///… or s3://bucket/prefix/…). */
  uri(key: string): string;
}
