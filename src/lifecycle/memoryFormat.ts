// Binary value codec of a lifecycle memory, shared by every memory-store backend and by the gRPC service.
//
// Layout (little-endian), fixed 56-byte header, then variable parts, then a CRC-32 trailer:
//   0  magic "GMEM"            4  formatVersion u16        6  dtype u8 (1 float32, 2 float16)   7  flags u8 (1 = has state)
//   8  slots u32              12  dim u32                 16  stateLength u32 (float32 count)
//  20  compressorVersion byte length u16                  22  reserved u16 (0)
//  24  watermark f64          32  eventsCovered f64       40  createdAt f64                     48  userId f64
//  56  compressorVersion UTF-8, zero-padded to a multiple of 8
//      vectors: slots × dim × (4 | 2) bytes, padded to a multiple of 4
//      state: stateLength × 4 bytes (always float32: the incremental update must stay exact)
//  end-4  CRC-32 (IEEE, as zlib) of every byte before it
// The user id is inside the value so a value stored under the wrong key is caught, not served to the wrong user.
import * as zlib from 'node:zlib';
import { endianness } from 'node:os';
import { CorruptMemoryError, type LifecycleMemory, type LifecycleMemoryHeader } from './memory.js';

export const MEMORY_FORMAT_VERSION = 1;
export const HEADER_BYTES = 56;
const MAGIC = 0x4d454d47; // "GMEM" read as little-endian u32
const DTYPE_CODE = { float32: 1, float16: 2 } as const;
const FLAG_STATE = 1;
/** Upper bounds that keep a corrupt length field from making us allocate gigabytes. */
const MAX_SLOTS_X_DIM = 1 << 24;
const MAX_STATE = 1 << 26;

const LITTLE_ENDIAN_HOST = endianness() === 'LE';

// ---------------------------------------------------------------------------------------------------------------
// CRC-32: node:zlib has a native crc32 since Node 20.15; keep a table fallback for older 20.x.

let crcTable: Uint32Array | undefined;
function crc32Table(data: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (let i = 0; i < data.length; i++) crc = crcTable[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

const zlibCrc32 = (zlib as unknown as { crc32?: (data: Uint8Array, value?: number) => number }).crc32;
export const crc32: (data: Uint8Array) => number = typeof zlibCrc32 === 'function' ? (d) => zlibCrc32(d) >>> 0 : crc32Table;
/** The table implementation, exported so a test can check the native one against it. */
export const crc32Reference = crc32Table;

// ---------------------------------------------------------------------------------------------------------------
// float16 (IEEE binary16) conversion, round-to-nearest-even. Node 20 has no Float16Array.

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

export function float32ToHalf(v: number): number {
  f32Scratch[0] = v;
  const x = u32Scratch[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // Inf / NaN
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow → Inf
  if (e <= 0) {
    if (e < -10) return sign; // below half the smallest subnormal → ±0
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // A carry out of the mantissa correctly bumps the exponent (up to Inf).
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  return sign | half;
}

let halfTable: Float32Array | undefined;
function halfToFloatTable(): Float32Array {
  if (halfTable) return halfTable;
  halfTable = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >>> 10) & 0x1f;
    const mant = h & 0x3ff;
    let v: number;
    if (exp === 0) v = mant * 2 ** -24;
    else if (exp === 0x1f) v = mant ? NaN : Infinity;
    else v = (1 + mant / 1024) * 2 ** (exp - 15);
    halfTable[h] = sign * v;
  }
  return halfTable;
}

export function halfToFloat32(h: number): number {
  return halfToFloatTable()[h & 0xffff]!;
}

// ---------------------------------------------------------------------------------------------------------------

const pad = (n: number, to: number) => Math.ceil(n / to) * to;

/** Byte offsets of the parts of an encoded value (all relative to the value's first byte). */
export interface MemoryLayout {
  header: LifecycleMemoryHeader;
  userId: number;
  vectorsOffset: number;
  vectorsBytes: number;
  stateOffset: number;
  /** Number of float32 values in the state (0 = none). */
  stateLength: number;
}

export interface EncodeOptions {
  /** Overrides header.dtype (e.g. the store's configured dtype). */
  dtype?: 'float32' | 'float16';
}

/** Encodes a memory into one self-checking binary value. Throws on inconsistent input (names the field). */
export function encodeMemory(memory: LifecycleMemory, options: EncodeOptions = {}): Buffer {
  const h = memory.header;
  const dtype = options.dtype ?? h.dtype;
  const where = `lifecycle memory of user ${memory.userId}`;
  if (!Number.isSafeInteger(memory.userId)) throw new RangeError(`${where}: userId must be a safe integer`);
  if (!Number.isInteger(h.slots) || h.slots < 1) throw new RangeError(`${where}: header.slots must be a positive integer`);
  if (!Number.isInteger(h.dim) || h.dim < 1) throw new RangeError(`${where}: header.dim must be a positive integer`);
  if (h.slots * h.dim > MAX_SLOTS_X_DIM) throw new RangeError(`${where}: slots × dim exceeds ${MAX_SLOTS_X_DIM}`);
  if (memory.vectors.length !== h.slots * h.dim) {
    throw new RangeError(`${where}: vectors has ${memory.vectors.length} values, header says ${h.slots} × ${h.dim}`);
  }
  if (!(dtype in DTYPE_CODE)) throw new RangeError(`${where}: dtype '${String(dtype)}' is not float32|float16`);
  const state = memory.state;
  if (state && state.length > MAX_STATE) throw new RangeError(`${where}: state longer than ${MAX_STATE}`);
  const cv = Buffer.from(h.compressorVersion, 'utf8');
  if (cv.length > 0xffff) throw new RangeError(`${where}: compressorVersion longer than 65535 bytes`);

  const n = h.slots * h.dim;
  const elem = dtype === 'float16' ? 2 : 4;
  const vectorsOffset = HEADER_BYTES + pad(cv.length, 8);
  const vectorsBytes = n * elem;
  const stateOffset = vectorsOffset + pad(vectorsBytes, 4);
  const stateLength = state?.length ?? 0;
  const total = stateOffset + stateLength * 4 + 4;

  const buf = Buffer.alloc(total);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  dv.setUint32(0, MAGIC, true);
  dv.setUint16(4, MEMORY_FORMAT_VERSION, true);
  dv.setUint8(6, DTYPE_CODE[dtype]);
  dv.setUint8(7, stateLength > 0 ? FLAG_STATE : 0);
  dv.setUint32(8, h.slots, true);
  dv.setUint32(12, h.dim, true);
  dv.setUint32(16, stateLength, true);
  dv.setUint16(20, cv.length, true);
  dv.setFloat64(24, h.watermark, true);
  dv.setFloat64(32, h.eventsCovered, true);
  dv.setFloat64(40, h.createdAt, true);
  dv.setFloat64(48, memory.userId, true);
  cv.copy(buf, HEADER_BYTES);

  if (dtype === 'float32') writeFloat32(buf, vectorsOffset, memory.vectors);
  else for (let i = 0; i < n; i++) dv.setUint16(vectorsOffset + 2 * i, float32ToHalf(memory.vectors[i]!), true);
  if (state && stateLength > 0) writeFloat32(buf, stateOffset, state);
  dv.setUint32(total - 4, crc32(buf.subarray(0, total - 4)), true);
  return buf;
}

function writeFloat32(buf: Buffer, offset: number, values: Float32Array): void {
  if (LITTLE_ENDIAN_HOST) {
    buf.set(new Uint8Array(values.buffer, values.byteOffset, values.byteLength), offset);
  } else {
    for (let i = 0; i < values.length; i++) buf.writeFloatLE(values[i]!, offset + 4 * i);
  }
}

function readFloat32(buf: Uint8Array, offset: number, count: number): Float32Array {
  const out = new Float32Array(count);
  if (LITTLE_ENDIAN_HOST) {
    // Copies (never views): the source may be a reused buffer (lmdb getBinaryFast) and may be unaligned.
    new Uint8Array(out.buffer).set(buf.subarray(offset, offset + count * 4));
  } else {
    const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    for (let i = 0; i < count; i++) out[i] = dv.getFloat32(offset + 4 * i, true);
  }
  return out;
}

/**
 * Checks the fixed header and the lengths it implies against `totalLength` (the whole value's size), without the
 * checksum. `buf` must hold at least the header and the compressor version.
 */
function parseHeader(userId: number, buf: Uint8Array, totalLength: number | undefined): MemoryLayout {
  const corrupt = (why: string) => new CorruptMemoryError(userId, why);
  if (buf.length < HEADER_BYTES) throw corrupt(`value has ${buf.length} bytes, shorter than the ${HEADER_BYTES}-byte header`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (dv.getUint32(0, true) !== MAGIC) throw corrupt('bad magic (not a GMEM value)');
  const formatVersion = dv.getUint16(4, true);
  if (formatVersion !== MEMORY_FORMAT_VERSION) throw corrupt(`unsupported format version ${formatVersion} (this build reads ${MEMORY_FORMAT_VERSION})`);
  const dtypeCode = dv.getUint8(6);
  const dtype = dtypeCode === 1 ? 'float32' : dtypeCode === 2 ? 'float16' : null;
  if (!dtype) throw corrupt(`unknown dtype code ${dtypeCode}`);
  const hasState = (dv.getUint8(7) & FLAG_STATE) !== 0;
  const slots = dv.getUint32(8, true);
  const dim = dv.getUint32(12, true);
  const stateLength = dv.getUint32(16, true);
  const cvLen = dv.getUint16(20, true);
  if (slots < 1 || dim < 1 || slots * dim > MAX_SLOTS_X_DIM) throw corrupt(`implausible shape ${slots} × ${dim}`);
  if (stateLength > MAX_STATE) throw corrupt(`implausible state length ${stateLength}`);
  if (hasState !== stateLength > 0) throw corrupt(`state flag (${hasState}) disagrees with state length ${stateLength}`);
  if (buf.length < HEADER_BYTES + cvLen) throw corrupt(`value too short for its ${cvLen}-byte compressor version`);
  const elem = dtype === 'float16' ? 2 : 4;
  const vectorsOffset = HEADER_BYTES + pad(cvLen, 8);
  const vectorsBytes = slots * dim * elem;
  const stateOffset = vectorsOffset + pad(vectorsBytes, 4);
  const expected = stateOffset + stateLength * 4 + 4;
  if (totalLength !== undefined && totalLength !== expected) throw corrupt(`value has ${totalLength} bytes, its header implies ${expected}`);
  const storedUser = dv.getFloat64(48, true);
  if (storedUser !== userId) throw corrupt(`value belongs to user ${storedUser}`);
  const header: LifecycleMemoryHeader = {
    formatVersion,
    compressorVersion: Buffer.from(buf.buffer, buf.byteOffset + HEADER_BYTES, cvLen).toString('utf8'),
    slots,
    dim,
    dtype,
    watermark: dv.getFloat64(24, true),
    eventsCovered: dv.getFloat64(32, true),
    createdAt: dv.getFloat64(40, true),
  };
  return { header, userId, vectorsOffset, vectorsBytes, stateOffset, stateLength };
}

/**
 * Parses and validates a whole encoded value: header, part lengths and CRC. Throws CorruptMemoryError naming what is
 * wrong. `userId` is the key the value was stored under.
 */
export function readLayout(userId: number, buf: Uint8Array): MemoryLayout {
  if (buf.length < HEADER_BYTES + 4) {
    throw new CorruptMemoryError(userId, `value has ${buf.length} bytes, shorter than the ${HEADER_BYTES + 4}-byte minimum`);
  }
  const layout = parseHeader(userId, buf, buf.length);
  const stored = new DataView(buf.buffer, buf.byteOffset, buf.byteLength).getUint32(buf.length - 4, true);
  const actual = crc32(buf.subarray(0, buf.length - 4));
  if (stored !== actual) throw new CorruptMemoryError(userId, `checksum mismatch (stored ${stored.toString(16)}, computed ${actual.toString(16)})`);
  return layout;
}

/**
 * Reads only the header from a value's first bytes, for cheap selection scans. No checksum (the rest may be
 * absent): lengths are checked against `totalLength` when given. Full reads always verify the checksum.
 */
export function readHeaderOnly(userId: number, prefix: Uint8Array, totalLength?: number): LifecycleMemoryHeader {
  return parseHeader(userId, prefix, totalLength).header;
}

/** Decodes and validates an encoded value into a memory with float32 vectors (float16 is widened). Copies. */
export function decodeMemory(userId: number, buf: Uint8Array): LifecycleMemory {
  const layout = readLayout(userId, buf);
  const n = layout.header.slots * layout.header.dim;
  let vectors: Float32Array;
  if (layout.header.dtype === 'float32') {
    vectors = readFloat32(buf, layout.vectorsOffset, n);
  } else {
    const table = halfToFloatTable();
    vectors = new Float32Array(n);
    const off = layout.vectorsOffset;
    for (let i = 0; i < n; i++) vectors[i] = table[buf[off + 2 * i]! | (buf[off + 2 * i + 1]! << 8)]!;
  }
  const memory: LifecycleMemory = { userId, header: layout.header, vectors };
  if (layout.stateLength > 0) memory.state = readFloat32(buf, layout.stateOffset, layout.stateLength);
  return memory;
}

/** Little-endian float32 bytes → Float32Array (copy). Exposed for the gRPC client. */
export function float32FromBytes(bytes: Uint8Array): Float32Array {
  if (bytes.length % 4 !== 0) throw new RangeError(`float32 byte length ${bytes.length} is not a multiple of 4`);
  return readFloat32(bytes, 0, bytes.length / 4);
}

/** Little-endian float16 bytes → Float32Array. */
export function float16BytesToFloat32(bytes: Uint8Array): Float32Array {
  if (bytes.length % 2 !== 0) throw new RangeError(`float16 byte length ${bytes.length} is not a multiple of 2`);
  const table = halfToFloatTable();
  const out = new Float32Array(bytes.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = table[bytes[2 * i]! | (bytes[2 * i + 1]! << 8)]!;
  return out;
}

/** Float32Array → little-endian float32 bytes (a Buffer view when the host is little-endian, else a copy). */
export function float32ToBytes(values: Float32Array): Buffer {
  if (LITTLE_ENDIAN_HOST) return Buffer.from(values.buffer, values.byteOffset, values.byteLength);
  const out = Buffer.alloc(values.length * 4);
  for (let i = 0; i < values.length; i++) out.writeFloatLE(values[i]!, 4 * i);
  return out;
}
