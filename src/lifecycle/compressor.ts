// The lifecycle compressor = behaviour encoder (eventEncoder.ts) + QLA (qla.ts), with versioned weights on disk:
//   <checkpoints>/compressor-<version>/manifest.json + weights.bin,   <checkpoints>/compressor-latest.json
// The version is a content hash of the shapes and weight bytes, so any retraining yields a new version and the
// nightly job recompresses everyone from scratch (a memory records the version that made it).
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { resolvedPaths, type GemsConfig } from '../config/config.js';
import type { History } from '../data/events.js';
import { Rng } from '../util/random.js';
import { defaultEncoderShape, featurize, initEncoder, inputDim, ItemVocab, type EncoderShape, type EncoderWeights } from './eventEncoder.js';
import { finalizeMemory, initQla, QlaState, ReferenceAccumulator, stateLength, TfAccumulator, type ChunkAccumulator, type QlaWeights } from './qla.js';

export const COMPRESSOR_FORMAT = 1;

export interface CompressorWeights {
  encoder: EncoderWeights;
  qla: QlaWeights;
}

export class CompressorFormatError extends Error {
  override name = 'CompressorFormatError';
}

type Arr = Float32Array | Int32Array;
const ENCODER_ARRAYS = ['itemIds', 'itemEmb', 'authorEmb', 'tagEmb', 'w1', 'b1', 'wkv', 'bkv'] as const;
const QLA_ARRAYS = ['seeds', 'sinkKey', 'sinkValue', 'wo', 'bo', 'slotEmb', 'lnGamma', 'lnBeta'] as const;

interface Manifest {
  format: number;
  version: string;
  encoderShape: EncoderShape;
  qlaShape: { slots: number; keyDim: number; valueDim: number; dim: number };
  arrays: { name: string; dtype: 'float32' | 'int32'; length: number; offset: number }[];
  createdAt: string;
  /** Training report (not part of the version). */
  training?: Record<string, unknown>;
}

function arraysOf(w: CompressorWeights): [string, Arr][] {
  return [
    ...ENCODER_ARRAYS.map((n) => [`encoder.${n}`, w.encoder[n]] as [string, Arr]),
    ...QLA_ARRAYS.map((n) => [`qla.${n}`, w.qla[n]] as [string, Arr]),
  ];
}

function qlaShape(q: QlaWeights) {
  return { slots: q.slots, keyDim: q.keyDim, valueDim: q.valueDim, dim: q.dim };
}

/** Content hash of shapes + weights (16 hex chars). */
export function compressorVersion(w: CompressorWeights): string {
  const h = createHash('sha256');
  h.update(JSON.stringify({ format: COMPRESSOR_FORMAT, encoderShape: w.encoder.shape, qlaShape: qlaShape(w.qla) }));
  for (const [name, a] of arraysOf(w)) {
    h.update(name);
    h.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  }
  return h.digest('hex').slice(0, 16);
}

export function compressorDir(config: GemsConfig, version: string): string {
  return join(resolvedPaths(config).checkpoints, `compressor-${version}`);
}

const latestFile = (config: GemsConfig) => join(resolvedPaths(config).checkpoints, 'compressor-latest.json');

/** Writes the weights (atomically: temp dir then rename) and marks them as the latest; returns the version. */
export function saveCompressor(config: GemsConfig, w: CompressorWeights, training?: Record<string, unknown>): string {
  const version = compressorVersion(w);
  const dir = compressorDir(config, version);
  if (!existsSync(dir)) {
    const tmp = `${dir}.tmp-${process.pid}`;
    mkdirSync(tmp, { recursive: true });
    const arrays: Manifest['arrays'] = [];
    let offset = 0;
    const parts: Uint8Array[] = [];
    for (const [name, a] of arraysOf(w)) {
      arrays.push({ name, dtype: a instanceof Int32Array ? 'int32' : 'float32', length: a.length, offset });
      parts.push(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
      offset += a.byteLength;
    }
    const manifest: Manifest = {
      format: COMPRESSOR_FORMAT,
      version,
      encoderShape: w.encoder.shape,
      qlaShape: qlaShape(w.qla),
      arrays,
      createdAt: new Date().toISOString(),
      ...(training ? { training } : {}),
    };
    writeFileSync(join(tmp, 'weights.bin'), Buffer.concat(parts));
    writeFileSync(join(tmp, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
    renameSync(tmp, dir);
  }
  const latest = latestFile(config);
  writeFileSync(`${latest}.tmp-${process.pid}`, JSON.stringify({ version }) + '\n');
  renameSync(`${latest}.tmp-${process.pid}`, latest);
  return version;
}

/** The latest trained version, or null when none has been trained. */
export function latestCompressorVersion(config: GemsConfig): string | null {
  const f = latestFile(config);
  if (!existsSync(f)) return null;
  const v = (JSON.parse(readFileSync(f, 'utf8')) as { version?: unknown }).version;
  if (typeof v !== 'string' || !/^[0-9a-f]{16}$/.test(v)) throw new CompressorFormatError(`${f}: field 'version' is not a compressor version`);
  return v;
}

/** Loads a version (default: the latest) and checks that its content hash matches its name. */
export function loadCompressorWeights(config: GemsConfig, version?: string): { weights: CompressorWeights; manifest: Manifest } {
  const v = version ?? latestCompressorVersion(config);
  if (!v) throw new CompressorFormatError(`no trained compressor under ${resolvedPaths(config).checkpoints}: run 'gems train-compressor' first`);
  const dir = compressorDir(config, v);
  const mf = join(dir, 'manifest.json');
  if (!existsSync(mf)) throw new CompressorFormatError(`compressor ${v}: ${mf} does not exist`);
  const manifest = JSON.parse(readFileSync(mf, 'utf8')) as Manifest;
  if (manifest.format !== COMPRESSOR_FORMAT) throw new CompressorFormatError(`${mf}: field 'format' is ${manifest.format}, this build reads ${COMPRESSOR_FORMAT}`);
  const bin = readFileSync(join(dir, 'weights.bin'));
  const get = (name: string): Arr => {
    const a = manifest.arrays.find((x) => x.name === name);
    if (!a) throw new CompressorFormatError(`${mf}: array '${name}' missing`);
    const bytes = a.length * 4;
    if (a.offset + bytes > bin.length) throw new CompressorFormatError(`${join(dir, 'weights.bin')}: array '${name}' runs past the end of the file`);
    const copy = new Uint8Array(bytes);
    copy.set(bin.subarray(a.offset, a.offset + bytes));
    return a.dtype === 'int32' ? new Int32Array(copy.buffer) : new Float32Array(copy.buffer);
  };
  const enc = { shape: manifest.encoderShape } as EncoderWeights;
  for (const n of ENCODER_ARRAYS) (enc as unknown as Record<string, Arr>)[n] = get(`encoder.${n}`);
  const qla = { ...manifest.qlaShape } as QlaWeights;
  for (const n of QLA_ARRAYS) (qla as unknown as Record<string, Arr>)[n] = get(`qla.${n}`);
  const weights = { encoder: enc, qla };
  const actual = compressorVersion(weights);
  if (actual !== v) throw new CompressorFormatError(`compressor ${dir}: content hash ${actual} does not match its version ${v} (corrupt weights)`);
  return { weights, manifest };
}

/** Fresh seeded weights for an item vocabulary (sorted unique ids). */
export function initCompressorWeights(config: GemsConfig, itemIds: Int32Array, seed = config.seed): CompressorWeights {
  const rng = new Rng(seed ^ 0x0c0ffee);
  const normal = () => rng.normal();
  const shape = defaultEncoderShape(itemIds.length, config.lifecycle.dim);
  return {
    encoder: initEncoder(shape, itemIds, normal),
    qla: initQla(config.lifecycle.slots, shape.keyDim, shape.valueDim, config.lifecycle.dim, normal),
  };
}

export interface CompressResult {
  /** Additive state after folding in the events (float32, as stored). */
  state: Float32Array;
  /** slots × dim memory vectors. */
  vectors: Float32Array;
  /** Events folded in by this call. */
  folded: number;
}

/** A loaded compressor ready for inference: folds lifecycle events into states chunk by chunk. */
export class Compressor {
  readonly version: string;
  readonly vocab: ItemVocab;
  private readonly acc: ChunkAccumulator;
  private buf: Float32Array;

  constructor(
    readonly weights: CompressorWeights,
    readonly chunkSize: number,
    path: 'tfjs' | 'reference' = 'tfjs',
  ) {
    if (!(Number.isInteger(chunkSize) && chunkSize > 0)) throw new Error(`chunkSize must be a positive integer, got ${chunkSize}`);
    this.version = compressorVersion(weights);
    this.vocab = new ItemVocab(weights.encoder.itemIds);
    this.acc = path === 'tfjs' ? new TfAccumulator(weights.encoder) : new ReferenceAccumulator(weights.encoder);
    this.buf = new Float32Array(chunkSize * inputDim(weights.encoder.shape));
  }

  get stateLength(): number {
    return stateLength(this.weights.qla.keyDim, this.weights.qla.valueDim);
  }

  emptyState(): Float32Array {
    return new Float32Array(this.stateLength);
  }

  /**
   * Folds events [from, lifecycle.length) into `state` (default: the empty state, i.e. full compression) and
   * returns the new state and its memory vectors. Memory use is bounded by chunkSize, not by the history length.
   */
  compress(lifecycle: History, from = 0, state?: Float32Array): CompressResult {
    const q = this.weights.qla;
    const st = state ? QlaState.from(state, q.keyDim, q.valueDim) : new QlaState(q.keyDim, q.valueDim);
    const din = inputDim(this.weights.encoder.shape);
    for (let start = from; start < lifecycle.length; start += this.chunkSize) {
      const end = Math.min(lifecycle.length, start + this.chunkSize);
      featurize(this.weights.encoder, this.vocab, lifecycle, start, end, this.buf);
      for (let i = 0; i < (end - start) * din; i++) {
        if (!Number.isFinite(this.buf[i]!)) throw new Error(`event ${start + Math.floor(i / din)} of user ${lifecycle.userId} has a non-finite feature (column ${i % din})`);
      }
      this.acc.add(this.buf, end - start, st);
    }
    const stored = st.toFloat32();
    return { state: stored, vectors: finalizeMemory(q, stored), folded: Math.max(0, lifecycle.length - from) };
  }

  dispose(): void {
    this.acc.dispose();
  }
}

/** Loads the latest (or a given) version as a ready Compressor. */
export function loadCompressor(config: GemsConfig, version?: string, path: 'tfjs' | 'reference' = 'tfjs'): Compressor {
  return new Compressor(loadCompressorWeights(config, version).weights, config.lifecycle.chunkSize, path);
}
