// Backend choice with native kernels switched off (GEMS_NATIVE_KERNELS=0): the fallback path is taken, reported in
// the log with its reason, and training still works on plain wasm (gather gradient, softmax cross-entropy).
// Also: the addon's install script never fails `npm ci` — when it cannot build, it records why and exits 0.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { initCompute, initBackend, tf } from '../../src/compute/backend.js';
import { activeNativeAddon } from '../../src/compute/nativeKernels.js';
import { softmaxCrossEntropy } from '../../src/compute/ops.js';
import { createReferenceTransformer } from '../../src/compute/referenceTransformer.js';
import { setLogSink } from '../../src/util/log.js';

const nativeDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'native');
const tmp = mkdtempSync(join(tmpdir(), 'gems-native-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('backend with GEMS_NATIVE_KERNELS=0', () => {
  it('takes the plain wasm path and logs why', async () => {
    process.env['GEMS_NATIVE_KERNELS'] = '0';
    delete process.env['GEMS_BACKEND'];
    const lines: string[] = [];
    const prev = setLogSink((l) => lines.push(l));
    const info = await initCompute();
    setLogSink(prev);
    expect(info).toMatchObject({ backend: 'wasm', native: false, path: 'wasm', nativeReason: 'GEMS_NATIVE_KERNELS=0' });
    expect(await initBackend()).toBe('wasm'); // the string form other modules use
    expect(activeNativeAddon()).toBeNull();
    const selected = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l['component'] === 'compute');
    expect(selected).toMatchObject({ level: 'warn', path: 'wasm', native_kernels: false, reason: 'GEMS_NATIVE_KERNELS=0' });
  });

  it('trains a small transformer on plain wasm (gather gradient + softmax cross-entropy)', async () => {
    await initCompute();
    const model = createReferenceTransformer({ layers: 1, d: 16, heads: 2, batch: 4, seqLen: 10, items: 23, learningRate: 1e-2, seed: 3 });
    const { inputs, targets } = model.batch(1);
    const first = model.trainStep(inputs, targets);
    let last = first;
    for (let i = 0; i < 30; i++) last = model.trainStep(inputs, targets);
    expect(last).toBeLessThan(first * 0.8);
    tf.dispose([inputs, targets]);
    model.dispose();
  });

  it('softmaxCrossEntropy on plain wasm equals log-softmax NLL', async () => {
    await initCompute();
    const z = tf.tensor2d([[1, 2, 3], [0, 0, 0]]);
    const y = tf.tensor1d([2, 1], 'int32');
    const got = softmaxCrossEntropy(z, y).arraySync();
    const ls = tf.logSoftmax(z).arraySync();
    expect(got[0]).toBeCloseTo(-ls[0]![2]!, 6);
    expect(got[1]).toBeCloseTo(-ls[1]![1]!, 6);
    tf.dispose([z, y]);
  });
});

describe('native/build.cjs never fails the install', () => {
  const copy = (name: string) => {
    const dir = join(tmp, name);
    for (const f of ['build.cjs', 'index.cjs', 'binding.gyp', 'package.json', 'src']) cpSync(join(nativeDir, f), join(dir, f), { recursive: true });
    return dir;
  };

  it('without a compiler: exits 0, records the reason, and loading reports it', () => {
    const dir = copy('nocompiler');
    const run = spawnSync(process.execPath, ['build.cjs'], { cwd: dir, encoding: 'utf8', env: { ...process.env, CXX: '/nonexistent/c++' } });
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(/NOT built/);
    const status = JSON.parse(readFileSync(join(dir, 'build', 'status.json'), 'utf8')) as { ok: boolean; reason: string };
    expect(status.ok).toBe(false);
    expect(status.reason).toMatch(/no C\+\+ compiler/);
    expect(existsSync(join(dir, 'build', 'Release', 'gems_native.node'))).toBe(false);
    const require = createRequire(import.meta.url);
    expect(() => require(join(dir, 'index.cjs'))).toThrow(/no C\+\+ compiler/);
  });

  it('GEMS_NATIVE_BUILD=0 skips the build and says so', () => {
    const dir = copy('skipped');
    const run = spawnSync(process.execPath, ['build.cjs'], { cwd: dir, encoding: 'utf8', env: { ...process.env, GEMS_NATIVE_BUILD: '0' } });
    expect(run.status).toBe(0);
    expect(JSON.parse(readFileSync(join(dir, 'build', 'status.json'), 'utf8'))).toMatchObject({ ok: false, reason: 'GEMS_NATIVE_BUILD=0' });
  });
});
