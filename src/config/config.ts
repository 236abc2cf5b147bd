// One typed configuration for every stage. Sources, strongest first: CLI flags > env GEMS_* > config file > defaults.
// Env and flags address nested keys with dots/double underscores: `--set streams.tRecent=64`,
// `GEMS_STREAMS__T_RECENT=64`; the common ones have short forms (`--data-dir`, `GEMS_DATA_DIR`).
import { readFileSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

export interface GemsConfig {
  /** All local state lives here: the DuckDB file, the object-store folder, caches, checkpoints, memories. */
  dataDir: string;
  seed: number;
  logLevel: 'debug' | 'info' | 'warn' | 'error';
  objectStore: {
    kind: 'local' | 's3';
    /** Local folder for kind=local; empty = `<dataDir>/objects`. */
    root: string;
    endpoint: string;
    region: string;
    bucket: string;
    prefix: string;
    forcePathStyle: boolean;
    /** Local cache of objects fetched from S3 (DuckDB reads files); empty = `<dataDir>/cache`. */
    cacheDir: string;
    cacheMaxBytes: number;
    maxAttempts: number;
    multipartThresholdBytes: number;
  };
  history: {
    /** DuckDB file; empty = `<dataDir>/gems.duckdb`. */
    duckdbPath: string;
    /** Number of user buckets in the partition layout (hash(user_id) % userBuckets). */
    userBuckets: number;
    /** Rows per Parquet row group in event partitions (smaller: finer pruning for one-user reads). */
    rowGroupSize: number;
    /** Events per DuckDB query in a full scan (bounds the scan's memory; one larger user is read whole). */
    scanBatchEvents: number;
  };
  streams: {
    tRecent: number;
    tMid: number;
  };
  tokenizer: {
    levels: number;
    /** Per level; 0 = chosen from the catalogue size (src/tokenizer/quantize.ts defaultCodebookSizes). */
    codebookSizes: number[];
    embeddingDim: number;
    balanced: boolean;
    iterations: number;
    /** Dimensions of the embedding given to content (tags, author); the rest are collaborative. */
    contentDim: number;
    /** Share of an item's squared embedding norm given to content when it also has history (0..1). */
    contentWeight: number;
    /** Co-occurrence window (positions) for the collaborative embedding. */
    window: number;
    /** k-means assignment engine: js | tf | auto (tf for large catalogues, measured in bench/tokenize.ts). */
    engine: string;
    /** Items sharing a prefix take distinct last-level codes where possible (see src/tokenizer/quantize.ts). */
    uniqueLastLevel: boolean;
  };
  lifecycle: {
    slots: number;
    dim: number;
    chunkSize: number;
    memoryStore: 'lmdb' | 'redis';
    redisUrl: string;
    dtype: 'float32' | 'float16';
    cron: string;
    timezone: string;
    batchSize: number;
  };
  serving: {
    host: string;
    memoryPort: number;
    recommenderPort: number;
    metricsPort: number;
    memoryRemote: string;
    authToken: string;
    tlsCert: string;
    tlsKey: string;
    maxBatchSize: number;
    maxWaitMs: number;
    maxQueue: number;
    maxK: number;
    /** GEMs checkpoint directory the recommender serves; empty = `<dataDir>/checkpoints/gems/best` when present, else popularity only. */
    checkpoint: string;
    /** Poll the checkpoint's meta.json this often and hot-swap when it changes (0 = only on SIGHUP / reload()). */
    reloadPollMs: number;
    /** Users with fewer input events (and no usable memory) get the cold-start popularity answer. */
    coldStartMinEvents: number;
    /**
     * Checkpoints trained with a return intent (gems train --return-intent): share of every list filled by the
     * search for returning dormant interests (beam.ts reserveReturns); other checkpoints ignore it. 0 = off.
     */
    reserveReturns: number;
    /**
     * Beam search conditions every Semantic-ID level on the item being admissible (not seen, not excluded):
     * BeamOptions.renormalize. Right where a user's next item is a new one from an interest they return to (the
     * generated lifelong set: Recall@100 0.206 → 0.320 recent-only); wrong for ML-1M (HR@10 0.2917 → 0.2687).
     * Choose it on validation data.
     */
    renormalize: boolean;
  };
}

export const DEFAULT_CONFIG: GemsConfig = {
  dataDir: '.data',
  seed: 42,
  logLevel: 'info',
  objectStore: {
    kind: 'local',
    root: '',
    endpoint: '',
    region: 'us-east-1',
    bucket: 'gems',
    prefix: '',
    forcePathStyle: true,
    cacheDir: '',
    cacheMaxBytes: 8 * 1024 ** 3,
    maxAttempts: 5,
    multipartThresholdBytes: 16 * 1024 ** 2,
  },
  history: { duckdbPath: '', userBuckets: 64, rowGroupSize: 32_768, scanBatchEvents: 1_000_000 },
  streams: { tRecent: 256, tMid: 1024 },
  tokenizer: {
    levels: 3,
    codebookSizes: [0, 0, 0],
    embeddingDim: 64,
    // Balanced codes measured better on ML-1M (64³: collisions 0.5% vs 5.8%, perplexity 64/64/62 vs 57/49/44).
    balanced: true,
    iterations: 25,
    contentDim: 16,
    contentWeight: 0.25,
    window: 20,
    engine: 'auto',
    uniqueLastLevel: true,
  },
  lifecycle: {
    slots: 64,
    dim: 64,
    chunkSize: 4096,
    memoryStore: 'lmdb',
    redisUrl: 'redis://127.0.0.1:6379',
    dtype: 'float32',
    cron: '0 2 * * *',
    timezone: 'UTC',
    batchSize: 64,
  },
  serving: {
    host: '127.0.0.1',
    memoryPort: 50061,
    recommenderPort: 50062,
    metricsPort: 9464,
    memoryRemote: '',
    authToken: '',
    tlsCert: '',
    tlsKey: '',
    maxBatchSize: 16,
    maxWaitMs: 5,
    maxQueue: 256,
    maxK: 500,
    checkpoint: '',
    reloadPollMs: 5000,
    coldStartMinEvents: 3,
    reserveReturns: 0,
    renormalize: false,
  },
};

export class ConfigError extends Error {
  override name = 'ConfigError';
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** `t_recent` / `T_RECENT` / `tRecent` → `tRecent`. */
function camel(key: string): string {
  return key.toLowerCase().replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** Sets `path` (dot-separated, keys matched case-insensitively against the defaults) to a raw string/JSON value. */
function setPath(target: Record<string, any>, template: Record<string, any>, path: string[], raw: unknown, origin: string): void {
  let obj = target;
  let tmpl = template;
  for (let i = 0; i < path.length; i++) {
    const wanted = camel(path[i]!);
    const key = Object.keys(tmpl).find((k) => k.toLowerCase() === wanted.toLowerCase());
    if (key === undefined) throw new ConfigError(`${origin}: unknown config key '${path.slice(0, i + 1).join('.')}'`);
    if (i === path.length - 1) {
      obj[key] = coerce(raw, tmpl[key], `${origin}: ${path.join('.')}`);
      return;
    }
    if (typeof tmpl[key] !== 'object' || Array.isArray(tmpl[key])) {
      throw new ConfigError(`${origin}: '${path.slice(0, i + 1).join('.')}' is not a section`);
    }
    obj = obj[key];
    tmpl = tmpl[key];
  }
}

function coerce(raw: unknown, like: unknown, where: string): unknown {
  if (typeof like === 'number') {
    const n = typeof raw === 'number' ? raw : Number(raw);
    if (!Number.isFinite(n)) throw new ConfigError(`${where}: expected a number, got '${String(raw)}'`);
    return n;
  }
  if (typeof like === 'boolean') {
    if (typeof raw === 'boolean') return raw;
    if (raw === 'true' || raw === '1') return true;
    if (raw === 'false' || raw === '0') return false;
    throw new ConfigError(`${where}: expected true/false, got '${String(raw)}'`);
  }
  if (Array.isArray(like)) {
    const arr = Array.isArray(raw) ? raw : String(raw).split(',').map((s) => s.trim());
    return arr.map((v) => coerce(v, like[0] ?? '', where));
  }
  if (typeof like === 'string') {
    if (typeof raw !== 'string' && typeof raw !== 'number') throw new ConfigError(`${where}: expected a string`);
    return String(raw);
  }
  if (typeof like === 'object' && like !== null) {
    throw new ConfigError(`${where}: is a section, set its keys instead`);
  }
  return raw;
}

function mergeFile(cfg: Record<string, any>, tmpl: Record<string, any>, data: Record<string, Json>, prefix: string[], origin: string): void {
  for (const [k, v] of Object.entries(data)) {
    const path = [...prefix, k];
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      const key = Object.keys(tmpl).find((t) => t.toLowerCase() === camel(k).toLowerCase());
      if (key === undefined || typeof tmpl[key] !== 'object') throw new ConfigError(`${origin}: unknown config section '${path.join('.')}'`);
      mergeFile(cfg[key], tmpl[key], v, [], `${origin}`);
    } else {
      setPath(cfg, tmpl, [k], v, origin);
    }
  }
}

export interface ConfigSources {
  /** Flag overrides as dotted paths: { 'streams.tRecent': '64', dataDir: '/x' }. */
  flags?: Record<string, string>;
  env?: NodeJS.ProcessEnv;
  /** Explicit config file; otherwise `GEMS_CONFIG`, otherwise `<dataDir>/gems.config.json` when present. */
  configFile?: string;
}

const ENV_SHORTCUTS: Record<string, string> = {
  GEMS_DATA_DIR: 'dataDir',
  GEMS_SEED: 'seed',
  GEMS_LOG_LEVEL: 'logLevel',
};

/** Builds the effective configuration and validates it; throws ConfigError naming the bad key. */
export function loadConfig(sources: ConfigSources = {}): GemsConfig {
  const env = sources.env ?? process.env;
  const flags = sources.flags ?? {};
  const cfg = structuredClone(DEFAULT_CONFIG) as unknown as Record<string, any>;
  const tmpl = DEFAULT_CONFIG as unknown as Record<string, any>;

  // The data dir decides where the default config file lives, so resolve it first from the strongest source.
  const dataDirHint = flags['dataDir'] ?? env['GEMS_DATA_DIR'] ?? DEFAULT_CONFIG.dataDir;
  const file = sources.configFile ?? flags['config'] ?? env['GEMS_CONFIG'] ?? join(dataDirHint, 'gems.config.json');
  if (existsSync(file)) {
    let data: Record<string, Json>;
    try {
      data = JSON.parse(readFileSync(file, 'utf8')) as Record<string, Json>;
    } catch (e) {
      throw new ConfigError(`config file ${file}: not valid JSON (${(e as Error).message})`);
    }
    mergeFile(cfg, tmpl, data, [], `config file ${file}`);
  } else if (sources.configFile ?? flags['config'] ?? env['GEMS_CONFIG']) {
    throw new ConfigError(`config file ${file} does not exist`);
  }

  for (const [name, value] of Object.entries(env)) {
    if (value === undefined || !name.startsWith('GEMS_')) continue;
    if (ENV_SHORTCUTS[name]) {
      setPath(cfg, tmpl, ENV_SHORTCUTS[name]!.split('.'), value, `env ${name}`);
    } else if (name.includes('__')) {
      setPath(cfg, tmpl, name.slice(5).split('__'), value, `env ${name}`);
    }
  }
  for (const [path, value] of Object.entries(flags)) {
    if (path === 'config') continue;
    setPath(cfg, tmpl, path.split('.'), value, `flag --${path}`);
  }
  const out = cfg as unknown as GemsConfig;
  out.dataDir = resolve(out.dataDir);
  validateConfig(out);
  return out;
}

export function validateConfig(c: GemsConfig): void {
  const fail = (key: string, why: string) => {
    throw new ConfigError(`invalid config ${key}: ${why}`);
  };
  if (!['debug', 'info', 'warn', 'error'].includes(c.logLevel)) fail('logLevel', `'${c.logLevel}' is not debug|info|warn|error`);
  if (!['local', 's3'].includes(c.objectStore.kind)) fail('objectStore.kind', `'${c.objectStore.kind}' is not local|s3`);
  if (c.objectStore.kind === 's3' && !c.objectStore.bucket) fail('objectStore.bucket', 'required for kind=s3');
  if (c.objectStore.endpoint && !/^https?:\/\/[^/]/.test(c.objectStore.endpoint)) fail('objectStore.endpoint', `'${c.objectStore.endpoint}' must be an http:// or https:// URL`);
  if (!Number.isInteger(c.objectStore.maxAttempts) || c.objectStore.maxAttempts < 1) fail('objectStore.maxAttempts', 'must be an integer ≥ 1');
  if (!(c.objectStore.cacheMaxBytes > 0)) fail('objectStore.cacheMaxBytes', 'must be > 0');
  if (!(c.objectStore.multipartThresholdBytes >= 0)) fail('objectStore.multipartThresholdBytes', 'must be ≥ 0');
  if (!Number.isInteger(c.history.userBuckets) || c.history.userBuckets < 1) fail('history.userBuckets', 'must be a positive integer');
  if (!Number.isInteger(c.history.rowGroupSize) || c.history.rowGroupSize < 1024) fail('history.rowGroupSize', 'must be an integer ≥ 1024');
  if (!Number.isInteger(c.history.scanBatchEvents) || c.history.scanBatchEvents < 1) fail('history.scanBatchEvents', 'must be a positive integer');
  if (!Number.isInteger(c.streams.tRecent) || c.streams.tRecent < 1) fail('streams.tRecent', 'must be a positive integer');
  if (!Number.isInteger(c.streams.tMid) || c.streams.tMid <= c.streams.tRecent) fail('streams.tMid', `must be an integer > streams.tRecent (${c.streams.tRecent})`);
  if (c.tokenizer.codebookSizes.length !== c.tokenizer.levels) fail('tokenizer.codebookSizes', `needs ${c.tokenizer.levels} entries (tokenizer.levels)`);
  if (c.tokenizer.codebookSizes.some((k) => !Number.isInteger(k) || k === 1 || k < 0)) fail('tokenizer.codebookSizes', 'entries must be integers ≥ 2 (0 = chosen from the catalogue size)');
  if (!Number.isInteger(c.tokenizer.embeddingDim) || c.tokenizer.embeddingDim < 2) fail('tokenizer.embeddingDim', 'must be an integer ≥ 2');
  if (!Number.isInteger(c.tokenizer.contentDim) || c.tokenizer.contentDim < 0 || c.tokenizer.contentDim > c.tokenizer.embeddingDim) fail('tokenizer.contentDim', `must be an integer in [0, tokenizer.embeddingDim]`);
  if (!(c.tokenizer.contentWeight >= 0 && c.tokenizer.contentWeight <= 1)) fail('tokenizer.contentWeight', 'must be in [0, 1]');
  if (!Number.isInteger(c.tokenizer.window) || c.tokenizer.window < 1) fail('tokenizer.window', 'must be a positive integer');
  if (!['js', 'tf', 'auto'].includes(c.tokenizer.engine)) fail('tokenizer.engine', `'${c.tokenizer.engine}' is not js|tf|auto`);
  if (!['lmdb', 'redis'].includes(c.lifecycle.memoryStore)) fail('lifecycle.memoryStore', `'${c.lifecycle.memoryStore}' is not lmdb|redis`);
  if (!['float32', 'float16'].includes(c.lifecycle.dtype)) fail('lifecycle.dtype', `'${c.lifecycle.dtype}' is not float32|float16`);
  if (c.serving.maxK < 1) fail('serving.maxK', 'must be ≥ 1');
  if (!Number.isInteger(c.serving.maxBatchSize) || c.serving.maxBatchSize < 1) fail('serving.maxBatchSize', 'must be an integer ≥ 1 (1 = batching off)');
  if (!(c.serving.maxWaitMs >= 0)) fail('serving.maxWaitMs', 'must be ≥ 0');
  if (!Number.isInteger(c.serving.maxQueue) || c.serving.maxQueue < 1) fail('serving.maxQueue', 'must be an integer ≥ 1');
  if (!(c.serving.reloadPollMs >= 0)) fail('serving.reloadPollMs', 'must be ≥ 0 (0 = no polling)');
  if (!Number.isInteger(c.serving.coldStartMinEvents) || c.serving.coldStartMinEvents < 0) fail('serving.coldStartMinEvents', 'must be an integer ≥ 0');
  if (!(c.serving.reserveReturns >= 0 && c.serving.reserveReturns < 1)) fail('serving.reserveReturns', 'must be in [0, 1)');
}

/** Paths derived from the data dir when not set explicitly. */
export function resolvedPaths(c: GemsConfig) {
  return {
    duckdb: c.history.duckdbPath || join(c.dataDir, 'gems.duckdb'),
    objects: c.objectStore.root || join(c.dataDir, 'objects'),
    cache: c.objectStore.cacheDir || join(c.dataDir, 'cache'),
    checkpoints: join(c.dataDir, 'checkpoints'),
    memories: join(c.dataDir, 'memories'),
    runs: join(c.dataDir, 'runs'),
  };
}
