// Chooses the TensorFlow.js backend once per process (DESIGN §3 "Compute backend"): tfjs-node-gpu when installed
// and a GPU is present, else tfjs-node when installed, else wasm (SIMD, ships in npm), else the pure-JS cpu backend.
// GEMS_BACKEND=<name> overrides. The choice is logged.
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs';
import { logger } from '../util/log.js';

const log = logger('compute');
const require = createRequire(import.meta.url);
let chosen: Promise<string> | null = null;

function installed(pkg: string): boolean {
  try {
    require.resolve(pkg);
    return true;
  } catch {
    return false;
  }
}

async function tryBackend(name: string): Promise<boolean> {
  try {
    if (name === 'tensorflow' || name === 'gpu') {
      const pkg = name === 'gpu' ? '@tensorflow/tfjs-node-gpu' : '@tensorflow/tfjs-node';
      if (!installed(pkg)) return false;
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

/** Initialises the backend (idempotent) and returns its name. */
export function initBackend(): Promise<string> {
  if (chosen) return chosen;
  chosen = (async () => {
    const override = process.env['GEMS_BACKEND'];
    const order = override ? [override] : ['gpu', 'tensorflow', 'wasm', 'cpu'];
    for (const name of order) {
      if (await tryBackend(name)) {
        await tf.ready();
        log.info('tfjs backend selected', { backend: tf.getBackend(), requested: override ?? 'auto' });
        return tf.getBackend();
      }
    }
    throw new Error(`no TensorFlow.js backend could be initialised (tried ${order.join(', ')})`);
  })();
  return chosen;
}

export { tf };
