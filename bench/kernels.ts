// `npm run bench -- kernels [--steps-plain N] [--steps-native N] [--batch B]` (issue 7): in one process, plain wasm vs
// wasm + native kernels on (1) matMul GFLOP/s at 256³ and 1024³, (2) the reference transformer training step
// (2 layers, d=64, 4 heads, batch 64 × 200, softmax over 3,707 items, Adam) in steps/s, and (3) the BLAS's own
// sgemm rate called directly from the addon, the yardstick for "native matmul ≥ 50% of the BLAS".
import { loadavg } from 'node:os';
import type { Bench, Figures } from './run.js';
import { median, round } from './_stats.js';
import { initCompute, tf } from '../src/compute/backend.js';
import { activeNativeAddon, installNativeKernels, uninstallNativeKernels } from '../src/compute/nativeKernels.js';
import { createReferenceTransformer } from '../src/compute/referenceTransformer.js';

function flag(args: string[], name: string, fallback: number): number {
  const i = args.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const v = Number(args[i + 1]);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${name} needs a positive number, got ${args[i + 1]}`);
  return v;
}

/** Median GFLOP/s of tf.matMul on n×n×n (one warm-up call, then `reps` timed calls, each read back). */
function matmulGflops(n: number, reps: number, transposeB = false): number {
  const a = tf.randomNormal([n, n]);
  const b = tf.randomNormal([n, n]);
  const times: number[] = [];
  for (let i = 0; i <= reps; i++) {
    const t0 = performance.now();
    const c = tf.matMul(a, b, false, transposeB);
    c.dataSync();
    const dt = performance.now() - t0;
    c.dispose();
    if (i > 0) times.push(dt);
  }
  tf.dispose([a, b]);
  return (2 * n ** 3) / (median(times) / 1000) / 1e9;
}

interface StepFigures {
  steps_per_s: number;
  step_ms: number;
  /** Steps per second of process CPU time: robust when other processes share the cores (2 cores, ~8 users here). */
  steps_per_cpu_s: number;
  loss: number;
}

function trainStepsPerSecond(steps: number, batch: number): StepFigures {
  const model = createReferenceTransformer({ batch });
  const { inputs, targets } = model.batch(1);
  model.trainStep(inputs, targets); // warm-up: compiles nothing, but allocates the wasm heap to its working size
  const times: number[] = [];
  const cpuTimes: number[] = [];
  let loss = NaN;
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    loss = model.trainStep(inputs, targets);
    const cpu = process.cpuUsage(c0);
    times.push(performance.now() - t0);
    cpuTimes.push((cpu.user + cpu.system) / 1000);
    console.log(`  step ${i + 1}/${steps}: ${times[i]!.toFixed(0)} ms wall, ${cpuTimes[i]!.toFixed(0)} ms CPU, loss ${loss.toFixed(4)}`);
  }
  tf.dispose([inputs, targets]);
  model.dispose();
  const ms = median(times);
  return { steps_per_s: 1000 / ms, step_ms: ms, steps_per_cpu_s: 1000 / median(cpuTimes), loss };
}

export const bench: Bench = {
  summary: 'plain wasm vs wasm + native kernels: matMul GFLOP/s, reference transformer steps/s, BLAS direct rate',
  async run(args) {
    const stepsPlain = flag(args, 'steps-plain', 3);
    const stepsNative = flag(args, 'steps-native', 5);
    const batch = flag(args, 'batch', 64);
    const info = await initCompute();
    const addon = activeNativeAddon();
    if (info.backend !== 'wasm') throw new Error(`kernels bench needs the wasm backend, got ${info.backend} (unset GEMS_BACKEND)`);
    const sizes = [256, 1024];
    const detail: Record<string, Record<string, number | null>> = {};
    const figures: Figures = { path: info.path, native_reason: info.nativeReason, blas: info.blas ?? null, batch };

    // Plain wasm first (kernels uninstalled), then native, in the same process.
    if (addon) uninstallNativeKernels();
    for (const n of sizes) {
      detail[n] = {
        plain: round(matmulGflops(n, n <= 256 ? 20 : 3), 2),
        plain_transposed_b: round(matmulGflops(n, n <= 256 ? 5 : 1, true), 2),
      };
      console.log(`matmul ${n}³ plain: ${detail[n]!['plain']} GFLOP/s (transposed B: ${detail[n]!['plain_transposed_b']})`);
    }
    console.log(`train step plain wasm (batch ${batch}×200):`);
    const plain = trainStepsPerSecond(stepsPlain, batch);

    let native: StepFigures | null = null;
    if (addon) {
      installNativeKernels(addon);
      for (const n of sizes) {
        const reps = n <= 256 ? 50 : 10;
        const blas = (2 * n ** 3) / addon.blasBench(n, n, n, reps) / 1e9;
        detail[n] = {
          ...detail[n],
          native: round(matmulGflops(n, reps), 2),
          native_transposed_b: round(matmulGflops(n, reps, true), 2),
          blas_direct: round(blas, 2),
        };
        detail[n]!['native_vs_blas'] = round(detail[n]!['native']! / blas, 3);
        console.log(`matmul ${n}³ native: ${detail[n]!['native']} GFLOP/s, BLAS direct ${detail[n]!['blas_direct']} GFLOP/s`);
      }
      console.log(`train step wasm+native (batch ${batch}×200):`);
      native = trainStepsPerSecond(stepsNative, batch);
    } else {
      console.log(`native kernels unavailable (${info.nativeReason}): native figures are null`);
    }

    return {
      ...figures,
      matmul_gflops_plain: detail[1024]!['plain']!,
      matmul_gflops_native: detail[1024]!['native'] ?? null,
      blas_direct_gflops: detail[1024]!['blas_direct'] ?? null,
      native_vs_blas: detail[1024]!['native_vs_blas'] ?? null,
      matmul: detail,
      train_steps_plain: round(plain.steps_per_s, 3),
      train_steps_native: native ? round(native.steps_per_s, 3) : null,
      train_speedup: native ? round(native.steps_per_s / plain.steps_per_s, 2) : null,
      train_step_ms: { plain: round(plain.step_ms, 1), native: native ? round(native.step_ms, 1) : null },
      train_steps_per_cpu_s: { plain: round(plain.steps_per_cpu_s, 3), native: native ? round(native.steps_per_cpu_s, 3) : null },
      train_speedup_cpu: native ? round(native.steps_per_cpu_s / plain.steps_per_cpu_s, 2) : null,
      load_average_1m: round(loadavg()[0]!, 2),
      train_loss_last: { plain: round(plain.loss, 5), native: native ? round(native.loss, 5) : null },
      steps: { plain: stepsPlain, native: stepsNative },
    };
  },
};
