// memory-rpc: GetLifecycleMemory latency and throughput for 64 × 64 float32 memories (16 KB of vectors), beside a
// no-op gRPC method with the same request and response bytes, in the same run.
//
// Setup: the SERVER runs in a child process (bench/_memoryRpcServer.ts: lmdb store with `--users` memories,
// LifecycleMemoryService + the benchmark-only NoOpMemoryService); the CLIENT runs in this process over one
// HTTP/2 channel. "c1" = one caller, sequential calls (latency); "c64" = 64 callers with one call in flight each
// (throughput). Get variants read random users (seeded). Variants are interleaved over `--rounds` rounds of
// `--seconds` each so drift on a shared machine hits Get and NoOp alike; medians over rounds are reported.
// Wall-clock calls/s depends on whatever else the machine runs, so the server's CPU time per call is measured
// too (process.cpuUsage in the child, around each variant): cpu_ratio_vs_noop is the load-independent figure.
//   npm run bench -- memory-rpc [--seconds 1.5] [--rounds 5] [--users 1000] [--concurrency 64]
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import type { Bench } from './run.js';
import { argNumber, median, percentile, round } from './_stats.js';
import { clientOptions, loadProtos, serviceOf } from '../src/serving/grpc.js';
import { LIFECYCLE_SERVICE, lifecyclePackageDefinition } from '../src/serving/lifecycleService.js';
import { Rng } from '../src/util/random.js';

const here = dirname(fileURLToPath(import.meta.url));


type Unary = (req: unknown, cb: (err: grpc.ServiceError | null, res: any) => void) => void;

interface Variant {
  rps: number;
  p50: number;
  p99: number;
  calls: number;
  /** CPU time per call in the server process and in this (client) process, µs. */
  serverCpuUs: number;
  clientCpuUs: number;
}

/** Runs `concurrency` callers, each with one call in flight, for `seconds`; per-call latencies in µs. */
async function drive(call: Unary, nextReq: () => unknown, concurrency: number, seconds: number): Promise<Variant> {
  const lat: number[] = [];
  const end = performance.now() + seconds * 1000;
  let failure: Error | null = null;
  const worker = async () => {
    while (performance.now() < end && !failure) {
      const t = performance.now();
      await new Promise<void>((res) =>
        call(nextReq(), (err, r) => {
          if (err) failure = err;
          else if (!r?.memory?.vectors?.length) failure = new Error('empty response');
          res();
        }),
      );
      lat.push((performance.now() - t) * 1000);
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsed = (performance.now() - t0) / 1000;
  if (failure) throw failure;
  return { rps: lat.length / elapsed, p50: percentile(lat, 50), p99: percentile(lat, 99), calls: lat.length, serverCpuUs: NaN, clientCpuUs: NaN };
}

export const bench: Bench = {
  summary: 'GetLifecycleMemory (64×64 float32, lmdb) vs a no-op gRPC method with the same bytes: p50/p99 µs, calls/s at 1 and 64 concurrent',
  async run(args) {
    const seconds = argNumber(args, 'seconds', 1.5);
    const rounds = argNumber(args, 'rounds', 5);
    const users = argNumber(args, 'users', 1000);
    const concurrency = argNumber(args, 'concurrency', 64);

    const child = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', join(here, '_memoryRpcServer.ts'), String(users), '64', '64'], {
      stdio: ['pipe', 'pipe', 'inherit'],
      env: { ...process.env, GEMS_LOG_LEVEL: 'warn' },
    });
    const lines = createInterface({ input: child.stdout! });
    const nextLine = () =>
      new Promise<any>((resolve, reject) => {
        const onExit = (code: number | null) => reject(new Error(`benchmark server exited early (code ${code})`));
        child.once('exit', onExit);
        lines.once('line', (line) => {
          child.off('exit', onExit);
          resolve(JSON.parse(line));
        });
      });
    const ready = (await nextLine()) as { address: string; store_read_validate_us: number; value_bytes: number };
    const serverCpuUs = async (): Promise<number> => {
      const answer = nextLine();
      child.stdin!.write('cpu\n');
      return ((await answer) as { cpu_us: number }).cpu_us;
    };
    console.log(`server (child pid ${child.pid}) at ${ready.address}; ${users} users; value ${ready.value_bytes} bytes`);

    const opts = clientOptions({});
    const { Client: LcClient } = serviceOf(lifecyclePackageDefinition(), LIFECYCLE_SERVICE);
    const { Client: NoOpClient } = serviceOf(loadProtos(['memory_noop.proto'], [join(here, 'proto')]), 'gems.bench.v1.NoOpMemoryService');
    const lc = new LcClient(ready.address, grpc.credentials.createInsecure(), opts) as grpc.Client & Record<string, Unary>;
    const noop = new NoOpClient(ready.address, grpc.credentials.createInsecure(), opts) as grpc.Client & Record<string, Unary>;
    const get: Unary = (req, cb) => lc['GetLifecycleMemory']!.call(lc, req, cb);
    const nop: Unary = (req, cb) => noop['NoOp']!.call(noop, req, cb);
    const rng = new Rng(42);
    const randomUser = () => ({ userId: 1 + rng.int(users), includeState: false });

    try {
      // Warm-up: connections, JIT, lmdb pages.
      for (const c of [1, concurrency]) {
        await drive(get, randomUser, c, 1);
        await drive(nop, randomUser, c, 1);
      }

      const results: Record<string, Variant[]> = { get_c1: [], noop_c1: [], get_cN: [], noop_cN: [] };
      for (let r = 0; r < rounds; r++) {
        // Alternate the order each round so neither variant always runs first.
        const order = r % 2 === 0 ? ['get', 'noop'] : ['noop', 'get'];
        for (const c of [1, concurrency]) {
          for (const which of order) {
            const s0 = await serverCpuUs();
            const c0 = process.cpuUsage();
            const v = await drive(which === 'get' ? get : nop, randomUser, c, seconds);
            const c1 = process.cpuUsage(c0);
            v.serverCpuUs = ((await serverCpuUs()) - s0) / v.calls;
            v.clientCpuUs = (c1.user + c1.system) / v.calls;
            results[`${which}_${c === 1 ? 'c1' : 'cN'}`]!.push(v);
            console.log(
              `round ${r + 1} ${which.padEnd(4)} c${c}: ${v.rps.toFixed(0)} calls/s, p50 ${v.p50.toFixed(0)} µs, p99 ${v.p99.toFixed(0)} µs, ` +
                `CPU/call server ${v.serverCpuUs.toFixed(0)} µs client ${v.clientCpuUs.toFixed(0)} µs`,
            );
          }
        }
      }
      const med = (k: string, f: keyof Variant) => median(results[k]!.map((v) => v[f]));
      const figures = {
        get_p50_us: round(med('get_c1', 'p50'), 1),
        get_p99_us: round(med('get_c1', 'p99'), 1),
        get_rps_c1: round(med('get_c1', 'rps'), 0),
        noop_p50_us: round(med('noop_c1', 'p50'), 1),
        noop_p99_us: round(med('noop_c1', 'p99'), 1),
        noop_rps_c1: round(med('noop_c1', 'rps'), 0),
        get_rps_c64: round(med('get_cN', 'rps'), 0),
        noop_rps_c64: round(med('noop_cN', 'rps'), 0),
        get_p50_us_c64: round(med('get_cN', 'p50'), 1),
        get_p99_us_c64: round(med('get_cN', 'p99'), 1),
        ratio_vs_noop: round(med('get_cN', 'rps') / med('noop_cN', 'rps'), 3),
        ratio_vs_noop_c1: round(med('get_c1', 'rps') / med('noop_c1', 'rps'), 3),
        // Load-independent view: server CPU per call. cpu_ratio_vs_noop = NoOp's server CPU per call / Get's.
        server_cpu_us_per_get_c64: round(med('get_cN', 'serverCpuUs'), 1),
        server_cpu_us_per_noop_c64: round(med('noop_cN', 'serverCpuUs'), 1),
        client_cpu_us_per_call_c64: round(med('get_cN', 'clientCpuUs'), 1),
        cpu_ratio_vs_noop: round(med('noop_cN', 'serverCpuUs') / med('get_cN', 'serverCpuUs'), 3),
        load_avg_1m: round(loadavg()[0]!, 2),
        store_read_validate_us: round(ready.store_read_validate_us, 2),
        value_bytes: ready.value_bytes,
        concurrency,
        users,
        seconds_per_variant: seconds,
        rounds,
        setup: 'server in a child process (lmdb store), client in the bench process over one HTTP/2 channel; loopback, plaintext',
      };
      return figures;
    } finally {
      lc.close();
      noop.close();
      child.stdin!.end();
      await new Promise((r) => {
        const t = setTimeout(() => {
          child.kill('SIGKILL');
          r(null);
        }, 5000);
        child.once('exit', () => {
          clearTimeout(t);
          r(null);
        });
      });
    }
  },
};
