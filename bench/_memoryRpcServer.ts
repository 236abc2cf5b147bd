// Child process of bench/memory-rpc.ts: fills an lmdb memory store with `users` 64 × 64 float32 memories, serves
// gems.v1.LifecycleMemoryService plus the benchmark-only gems.bench.v1.NoOpMemoryService (same request/response
// types, answers a precomputed response without touching the store), prints one JSON line with the address, and
// runs until stdin closes (so it never outlives the benchmark). A line "cpu" on stdin is answered with this
// process's CPU time.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import type * as grpc from '@grpc/grpc-js';
import { loadConfig } from '../src/config/config.js';
import type { LifecycleMemory } from '../src/lifecycle/memory.js';
import { LmdbMemoryStore } from '../src/lifecycle/lmdbMemoryStore.js';
import { readLayout } from '../src/lifecycle/memoryFormat.js';
import { loadProtos, serviceOf } from '../src/serving/grpc.js';
import { startLifecycleServer, wireFromEncoded, type GetRequest, type GetResponse } from '../src/serving/lifecycleService.js';
import { Rng } from '../src/util/random.js';

const here = dirname(fileURLToPath(import.meta.url));

async function main(): Promise<void> {
  const users = Number(process.argv[2] ?? 1000);
  const slots = Number(process.argv[3] ?? 64);
  const dim = Number(process.argv[4] ?? 64);
  const dir = mkdtempSync(join(tmpdir(), 'gems-bench-memrpc-'));
  const store = new LmdbMemoryStore({ path: join(dir, 'memories.mdb') });
  const rng = new Rng(7);
  const batch: LifecycleMemory[] = [];
  for (let u = 1; u <= users; u++) {
    const vectors = new Float32Array(slots * dim);
    for (let i = 0; i < vectors.length; i++) vectors[i] = rng.normal();
    batch.push({
      userId: u,
      header: { formatVersion: 1, compressorVersion: 'bench', slots, dim, dtype: 'float32', watermark: u, eventsCovered: 1000, createdAt: Date.now() },
      vectors,
    });
    if (batch.length === 256 || u === users) await store.putMany(batch.splice(0));
  }

  // Direct store read + checksum validation, no gRPC: what the Get handler adds over NoOp.
  const reads = 20_000;
  const t0 = performance.now();
  for (let i = 0; i < reads; i++) {
    const id = 1 + (i % users);
    const raw = (await store.getEncoded(id))!;
    readLayout(id, raw);
  }
  const storeReadUs = ((performance.now() - t0) * 1000) / reads;

  const raw1 = (await store.getEncoded(1))!;
  const canned: GetResponse = { memory: wireFromEncoded(1, raw1, readLayout(1, raw1), false) };
  const noopDef = loadProtos(['memory_noop.proto'], [join(here, 'proto')]);
  const { definition } = serviceOf(noopDef, 'gems.bench.v1.NoOpMemoryService');
  const config = loadConfig({ flags: { dataDir: dir }, env: {} });
  const handle = await startLifecycleServer({
    config,
    store,
    host: '127.0.0.1',
    port: 0,
    extraServices: [
      {
        name: 'gems.bench.v1.NoOpMemoryService',
        definition,
        implementation: {
          NoOp: (_call: grpc.ServerUnaryCall<GetRequest, GetResponse>, cb: grpc.sendUnaryData<GetResponse>) => cb(null, canned),
        },
      },
    ],
    extraReflect: [noopDef],
  });
  // Collect the fill's garbage now (the parent starts us with --expose-gc) rather than during the first variant.
  (globalThis as { gc?: () => void }).gc?.();
  process.stdout.write(JSON.stringify({ address: handle.address, pid: process.pid, store_read_validate_us: storeReadUs, value_bytes: raw1.length }) + '\n');

  const stop = async () => {
    await handle.shutdown(2000);
    await store.close();
    rmSync(dir, { recursive: true, force: true });
    process.exit(0);
  };
  // The parent asks for this process's CPU time ("cpu" line) around each variant: CPU µs per call is robust to
  // other load on a shared machine, where wall-clock calls/s is not.
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    if (line.trim() === 'cpu') {
      const u = process.cpuUsage();
      process.stdout.write(JSON.stringify({ cpu_us: u.user + u.system }) + '\n');
    }
  });
  lines.on('close', () => void stop());
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
