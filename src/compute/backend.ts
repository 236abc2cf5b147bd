// Chooses the TensorFlow.js backend once per process (DESIGN §3 "Compute backend", issue 7):
//   tfjs-node-gpu (installed and a GPU present) → tfjs-node (installed) → wasm + native kernels → wasm → cpu.
// GEMS_BACKEND=<gpu|tensorflow|wasm|cpu> forces one backend (aliases: tfjs-node-gpu, tfjs-node, node).
// GEMS_NATIVE_KERNELS=0 keeps the wasm backend plain. The choice, and why native kernels are or are not used, is logged.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs';
import { logger } from '../util/log.js';
import { installNativeKernels, loadNativeAddon, registerJsKernels } from './nativeKernels.js';

const log = logger('compute');
const require = createRequire(import.meta.url);

export interface ComputeInfo {
  /** tfjs backend name: 'tensorflow' | 'wasm' | 'cpu' | … */
  backend: string;
  /** True when the native (OpenBLAS) kernels are registered into the wasm backend. */
  native: boolean;
  /** 'wasm+native', 'wasm', 'tensorflow', 'cpu', …: the path in the order above. */
  path: string;
  /** Why native kernels are not in use (or 'loaded'). */
  nativeReason: string;
  /** BLAS description when native, e.g. "OpenBLAS 0.3.21 … (1 thread)". */
  blas?: string;
}

let chosen: Promise<ComputeInfo> | null = null;

const ALIASES: Record<string, string> = {
  'tfjs-node-gpu': 'gpu', 'tfjs-node': 'tensorflow', node: 'tensorflow', 'wasm+native': 'wasm', 'wasm-native': 'wasm',
};

function installed(pkg: string): boolean {
  try {
    require.resolve(pkg);
    return true;
  } catch {
    return false;
  }
}

function gpuPresent(): boolean {
  return existsSync('/dev/nvidiactl') || existsSync('/proc/driver/nvidia/version');
}

async function tryBackend(name: string, forced: boolean): Promise<boolean> {
  try {
    if (name === 'tensorflow' || name === 'gpu') {
      const pkg = name === 'gpu' ? '@tensorflow/tfjs-node-gpu' : '@tensorflow/tfjs-node';
      if (!installed(pkg)) return false;
      if (name === 'gpu' && !forced && !gpuPresent()) return false;
      await import(pkg);
      return await tf.setBackend('tensorflow');
    }
    if (name === 'wasm') {
      await import('@tensorflow/tfjs-backend-wasm');
      return await tf.setBackend('wasm');
    }
    return await tf.setBackend(name);
  } catch (e) {
    log.warn('backend unavailable', { backend: name, error: (e as Error).message });
    return false;
  }
}

function setUpWasm(): Pick<ComputeInfo, 'native' | 'nativeReason' | 'blas'> {
  // JS kernels go in either way: UnsortedSegmentSum (tfjs-backend-wasm lacks it; tf.gather's gradient needs it) and
  // an Identity that shares memory instead of copying every tensor a gradient saves.
  registerJsKernels();
  if (process.env['GEMS_NATIVE_KERNELS'] === '0') return { native: false, nativeReason: 'GEMS_NATIVE_KERNELS=0' };
  const { addon, reason } = loadNativeAddon();
  if (!addon) return { native: false, nativeReason: reason };
  try {
    installNativeKernels(addon);
    const info = addon.info();
    return { native: true, nativeReason: 'loaded', blas: `${info.config} (${info.threads} thread${info.threads === 1 ? '' : 's'})` };
  } catch (e) {
    return { native: false, nativeReason: `registering native kernels failed: ${(e as Error).message}` };
  }
}

/** Initialises the backend (idempotent) and describes the compute path taken. */
export function initCompute(): Promise<ComputeInfo> {
  if (chosen) return chosen;
  chosen = (async () => {
    const raw = process.env['GEMS_BACKEND']?.trim();
    const override = raw ? (ALIASES[raw] ?? raw) : undefined;
    const order = override ? [override] : ['gpu', 'tensorflow', 'wasm', 'cpu'];
    for (const name of order) {
      if (!(await tryBackend(name, override !== undefined))) continue;
      await tf.ready();
      const backend = tf.getBackend();
      let info: ComputeInfo = { backend, native: false, path: backend, nativeReason: 'not a wasm backend' };
      if (backend === 'wasm') {
        const w = setUpWasm();
        info = { backend, ...w, path: w.native ? 'wasm+native' : 'wasm' };
      }
      const fields = { backend, path: info.path, requested: raw ?? 'auto', native_kernels: info.native,
        ...(info.blas ? { blas: info.blas } : {}) };
      if (backend === 'wasm' && !info.native) {
        log.warn('tfjs backend selected without native kernels (training is several times slower)',
          { ...fields, reason: info.nativeReason });
      } else {
        log.info('tfjs backend selected', fields);
      }
      return info;
    }
    throw new Error(`no TensorFlow.js backend could be initialised (tried ${order.join(', ')})`);
  })();
  return chosen;
}

/** Initialises the backend (idempotent) and returns its name ('wasm' with or without native kernels). */
export async function initBackend(): Promise<string> {
  return (await initCompute()).backend;
}

export { tf };

/**
 * A variable holding a copy of `values`. tf.variable shares the source tensor's data and keeps its own reference,
 * so the source is disposed here: left alive, it would keep the data allocated after the variable is disposed (a
 * hot-swapped model would leak its weights).
 */
export function variableFrom(values: Float32Array, shape: number[], trainable: boolean, name?: string): tf.Variable {
  const source = tf.tensor(values, shape);
  const v = tf.variable(source, trainable, name);
  source.dispose();
  return v;
}
