// Chooses the object store the configuration asks for: a local folder (default, `<dataDir>/objects`) or S3 with a
// local cache (`<dataDir>/cache`). S3 credentials come from the SDK's standard chain (AWS_ACCESS_KEY_ID /
// AWS_SECRET_ACCESS_KEY, AWS_PROFILE, SSO, instance roles); `overrides` lets tests and tools pass explicit ones.
import { resolvedPaths, type GemsConfig } from '../config/config.js';
import { LocalObjectStore } from './localObjectStore.js';
import type { ObjectStore } from './objectStore.js';
import { S3ObjectStore, type S3ObjectStoreOptions } from './s3ObjectStore.js';

export function s3OptionsFromConfig(config: GemsConfig): S3ObjectStoreOptions {
  const o = config.objectStore;
  return {
    bucket: o.bucket,
    prefix: o.prefix,
    endpoint: o.endpoint,
    region: o.region,
    forcePathStyle: o.forcePathStyle,
    maxAttempts: o.maxAttempts,
    multipartThresholdBytes: o.multipartThresholdBytes,
    cacheDir: resolvedPaths(config).cache,
    cacheMaxBytes: o.cacheMaxBytes,
  };
}

export function openObjectStore(config: GemsConfig, overrides: Partial<S3ObjectStoreOptions> = {}): ObjectStore {
  if (config.objectStore.kind === 'local') return new LocalObjectStore(resolvedPaths(config).objects);
  return new S3ObjectStore({ ...s3OptionsFromConfig(config), ...overrides });
}
