// A checkpoint is one directory the serving process can load on its own:
//   meta.json      format, model kind + config, tokenizer version, data fingerprint, training state, manifests
//   weights.bin    all parameters, float32 little-endian, in manifest order (names sorted)
//   optimizer.bin  Adam moments (resume after a kill); absent in export-only checkpoints
//   <name>.i32 / <name>.f32   extra arrays the model needs (item vocabulary, SID codes, …)
// Writes go to a temp directory that is renamed into place, so a kill mid-write leaves the previous checkpoint.
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { ParamManifestEntry, ParamStore } from '../model/params.js';
import type { Adam } from './optim.js';

export const CHECKPOINT_FORMAT = 1;

export interface CheckpointMeta {
  format: number;
  kind: string;
  modelConfig: Record<string, unknown>;
  tokenizerVersion: string | null;
  dataFingerprint: string;
  /** Training progress (epoch, stage, best validation, early-stopping counters, …). */
  train: Record<string, unknown>;
  params: ParamManifestEntry[];
  optimizer: { step: number; names: string[]; sizes: number[] } | null;
  arrays: { name: string; dtype: 'int32' | 'float32'; length: number }[];
  createdAt: string;
}

export interface SaveCheckpointInput {
  kind: string;
  modelConfig: object;
  tokenizerVersion: string | null;
  dataFingerprint: string;
  train: Record<string, unknown>;
  params: ParamStore;
  optimizer?: Adam;
  arrays?: Record<string, Int32Array | Float32Array>;
}

function bytes(a: Float32Array | Int32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

export function saveCheckpoint(dir: string, input: SaveCheckpointInput): CheckpointMeta {
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  const { manifest, blob } = input.params.serialize();
  writeFileSync(join(tmp, 'weights.bin'), bytes(blob));
  let optimizer: CheckpointMeta['optimizer'] = null;
  if (input.optimizer) {
    const s = input.optimizer.serialize();
    optimizer = { step: s.step, names: s.names, sizes: s.sizes };
    writeFileSync(join(tmp, 'optimizer.bin'), bytes(s.blob));
  }
  const arrays: CheckpointMeta['arrays'] = [];
  for (const [name, arr] of Object.entries(input.arrays ?? {})) {
    if (!/^[a-zA-Z0-9_-]+$/.test(name)) throw new Error(`checkpoint array name '${name}' must be alphanumeric`);
    const dtype = arr instanceof Int32Array ? 'int32' : 'float32';
    writeFileSync(join(tmp, `${name}.${dtype === 'int32' ? 'i32' : 'f32'}`), bytes(arr));
    arrays.push({ name, dtype, length: arr.length });
  }
  const meta: CheckpointMeta = {
    format: CHECKPOINT_FORMAT,
    kind: input.kind,
    modelConfig: input.modelConfig as Record<string, unknown>,
    tokenizerVersion: input.tokenizerVersion,
    dataFingerprint: input.dataFingerprint,
    train: input.train,
    params: manifest,
    optimizer,
    arrays,
    createdAt: new Date().toISOString(),
  };
  writeFileSync(join(tmp, 'meta.json'), JSON.stringify(meta, null, 1));
  mkdirSync(dirname(dir), { recursive: true });
  const old = `${dir}.old-${process.pid}`;
  if (existsSync(dir)) renameSync(dir, old);
  renameSync(tmp, dir);
  rmSync(old, { recursive: true, force: true });
  return meta;
}

export interface LoadedCheckpoint {
  dir: string;
  meta: CheckpointMeta;
  weights: Float32Array;
  optimizerBlob: Float32Array | null;
  arrays: Record<string, Int32Array | Float32Array>;
}

function readFloat32(file: string): Float32Array {
  const b = readFileSync(file);
  if (b.byteLength % 4 !== 0) throw new Error(`${file}: size ${b.byteLength} is not a multiple of 4`);
  const out = new Float32Array(b.byteLength / 4);
  new Uint8Array(out.buffer).set(b);
  return out;
}

export function readCheckpoint(dir: string): LoadedCheckpoint {
  const metaFile = join(dir, 'meta.json');
  if (!existsSync(metaFile)) throw new Error(`${dir} is not a checkpoint (no meta.json)`);
  let meta: CheckpointMeta;
  try {
    meta = JSON.parse(readFileSync(metaFile, 'utf8')) as CheckpointMeta;
  } catch (e) {
    throw new Error(`${metaFile}: invalid JSON (${(e as Error).message})`, { cause: e });
  }
  if (meta.format !== CHECKPOINT_FORMAT) throw new Error(`${metaFile}: format ${meta.format}, this build reads ${CHECKPOINT_FORMAT}`);
  const weights = readFloat32(join(dir, 'weights.bin'));
  const expected = meta.params.reduce((s, p) => Math.max(s, p.offset + p.shape.reduce((a, b) => a * b, 1)), 0);
  if (weights.length !== expected) throw new Error(`${join(dir, 'weights.bin')}: ${weights.length} floats, manifest needs ${expected}`);
  const optFile = join(dir, 'optimizer.bin');
  const optimizerBlob = meta.optimizer && existsSync(optFile) ? readFloat32(optFile) : null;
  const arrays: Record<string, Int32Array | Float32Array> = {};
  for (const a of meta.arrays) {
    const f = join(dir, `${a.name}.${a.dtype === 'int32' ? 'i32' : 'f32'}`);
    const raw = readFloat32(f);
    const arr = a.dtype === 'int32' ? new Int32Array(raw.buffer) : raw;
    if (arr.length !== a.length) throw new Error(`${f}: ${arr.length} values, meta.json says ${a.length}`);
    arrays[a.name] = arr;
  }
  return { dir, meta, weights, optimizerBlob, arrays };
}

/** Loads weights (and optimizer moments when given) into live objects. */
export function restoreInto(ck: LoadedCheckpoint, params: ParamStore, optimizer?: Adam): void {
  params.load(ck.meta.params, ck.weights, join(ck.dir, 'weights.bin'));
  if (optimizer && ck.meta.optimizer && ck.optimizerBlob) optimizer.load(ck.meta.optimizer, ck.optimizerBlob);
}

export function isCheckpoint(dir: string): boolean {
  return existsSync(join(dir, 'meta.json'));
}

/** Removes stale temp directories left by a killed writer next to `dir`. */
export function cleanStaleTemps(dir: string): void {
  const parent = dirname(dir);
  if (!existsSync(parent)) return;
  const base = dir.slice(parent.length + 1);
  for (const f of readdirSync(parent)) if (f.startsWith(`${base}.tmp-`) || f.startsWith(`${base}.old-`)) rmSync(join(parent, f), { recursive: true, force: true });
}

/** A short fingerprint of the training data (FNV-1a over the sequences), stored with every checkpoint. */
export function fingerprint(...arrays: (Int32Array | Float32Array)[]): string {
  let h = 2166136261;
  for (const a of arrays) {
    const u8 = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    for (let i = 0; i < u8.length; i++) h = Math.imul(h ^ u8[i]!, 16777619);
    h = Math.imul(h ^ a.length, 16777619);
  }
  return (h >>> 0).toString(16).padStart(8, '0');
}
