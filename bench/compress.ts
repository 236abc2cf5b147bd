// compress (issue 4): lifecycle recompression throughput on the generated 100 users × 100,000 events set.
//   full_events_per_s          `gems compress --full` end to end (history scan + compression + memory writes)
//   incremental_events_per_s   lifecycle events folded per second by the next run after appending 1% new events
//   peak_rss_mb                peak RSS of this process over both runs
//   flops_ratio                the compressor's achieved FLOP/s (compute only, one 100k-event lifecycle) ÷ the
//                              backend's matMul FLOP/s measured in the same run (512×512×512)
// Also: the end-to-end FLOP/s ratio, the incremental run's wall-time speed-up over the full run, and the max relative
// difference between incrementally updated and fully recompressed memories.
// The data set is the history-scan benchmark's (copied from .data/bench-history-scan when it is there and complete,
// otherwise generated), kept in --data-dir (default .data/bench-compress); appended events are removed by re-copying.
//   npm run bench -- compress [--data-dir DIR] [--users 100] [--events 100000] [--append 0.01]
import { cpSync, existsSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { initBackend, tf } from '../src/compute/backend.js';
import { loadConfig, resolvedPaths, type GemsConfig } from '../src/config/config.js';
import { cutStreams, type EventColumns } from '../src/data/events.js';
import { resolveLifelongOptions } from '../src/data/generator/lifelong.js';
import { generatedPaths, readManifest, sameOptions, writeLifelong } from '../src/data/generator/write.js';
import { openHistoryStore } from '../src/data/parquetHistoryStore.js';
import { Compressor, initCompressorWeights, saveCompressor } from '../src/lifecycle/compressor.js';
import { openMemoryStore } from '../src/lifecycle/openMemoryStore.js';
import { flopsPerEvent } from '../src/lifecycle/qla.js';
import { logger } from '../src/util/log.js';
import { Rng } from '../src/util/random.js';
import { compressOnce, jobDir } from '../jobs/nightly.js';
import { median, round, rssSampler } from './_stats.js';
import type { Bench, Figures } from './run.js';

function argValue(args: string[], name: string, fallback: string): string {
  const i = args.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < args.length) return args[i + 1]!;
  const eq = args.find((a) => a.startsWith(`--${name}=`));
  return eq ? eq.slice(name.length + 3) : fallback;
}

async function storeEvents(config: GemsConfig): Promise<number> {
  if (!existsSync(resolvedPaths(config).duckdb)) return -1;
  const store = await openHistoryStore(config);
  try {
    return (await store.stats()).events;
  } finally {
    await store.close();
  }
}

/** The 100 × 100k set in dataDir, pristine (no appended events). */
async function prepareData(dataDir: string, users: number, events: number): Promise<GemsConfig> {
  const config = loadConfig({ flags: { dataDir }, env: {} });
  const o = resolveLifelongOptions('bench100k', { users, fixedLength: events, tRecent: config.streams.tRecent, tMid: config.streams.tMid });
  const expected = users * events;
  const ok = (dir: string, cfg: GemsConfig) => {
    const m = readManifest(generatedPaths(dir).manifest);
    return m !== null && sameOptions(m.options, o) ? storeEvents(cfg).then((n) => n === expected) : Promise.resolve(false);
  };
  if (await ok(dataDir, config)) {
    console.log(`# reusing ${dataDir}`);
  } else {
    rmSync(dataDir, { recursive: true, force: true });
    const shared = resolve('.data/bench-history-scan');
    if (await ok(shared, loadConfig({ flags: { dataDir: shared }, env: {} }))) {
      console.log(`# copying the history-scan data set from ${shared}`);
      for (const part of ['gems.duckdb', 'objects', 'generated']) cpSync(join(shared, part), join(dataDir, part), { recursive: true });
    } else {
      console.log(`# generating ${users} users × ${events} events into ${dataDir}`);
      const store = await openHistoryStore(config);
      try {
        const p = generatedPaths(dataDir);
        await writeLifelong(store, o, { truthPath: p.truth, usersPath: p.users, manifestPath: p.manifest });
      } finally {
        await store.close();
      }
    }
  }
  // Fresh job state: no memories, checkpoints, locks or compressor versions from earlier runs.
  for (const dir of [resolvedPaths(config).memories, jobDir(config), resolvedPaths(config).checkpoints]) rmSync(dir, { recursive: true, force: true });
  return config;
}

/** Backend matMul FLOP/s on 512×512×512 (2-D, non-transposed: wasm's fast path), median of 5. */
function matMulFlops(): number {
  const n = 512;
  const a = tf.randomNormal([n, n]);
  const b = tf.randomNormal([n, n]);
  tf.matMul(a, b).dataSync();
  const times: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t0 = performance.now();
    const c = tf.matMul(a, b);
    c.dataSync();
    times.push((performance.now() - t0) / 1000);
    c.dispose();
  }
  a.dispose();
  b.dispose();
  return (2 * n * n * n) / median(times);
}

export const bench: Bench = {
  summary: 'lifecycle compression: full and incremental events/s, peak RSS, achieved FLOP/s vs backend matMul',
  async run(args: string[]): Promise<Figures> {
    const dataDir = resolve(argValue(args, 'data-dir', '.data/bench-compress'));
    const users = Number(argValue(args, 'users', '100'));
    const events = Number(argValue(args, 'events', '100000'));
    const appendShare = Number(argValue(args, 'append', '0.01'));
    const backend = await initBackend();
    const config = await prepareData(dataDir, users, events);
    const quiet = logger('bench.compress');

    // An untrained compressor over the store's item vocabulary: throughput does not depend on the weights' values.
    const store0 = await openHistoryStore(config);
    const itemIds = Int32Array.from(Array.from((await store0.items()).itemId).sort((x, y) => x - y));
    const sampleUser = (await store0.userIds())[0]!;
    const sample = cutStreams(await store0.userHistory(sampleUser), config.streams.tRecent, config.streams.tMid).lifecycle;
    await store0.close();
    const weights = initCompressorWeights(config, itemIds);
    const version = saveCompressor(config, weights);
    const perEvent = flopsPerEvent(weights.encoder);

    // Compute only: one user's whole lifecycle through the compressor, vs the backend's matMul.
    const matmul = matMulFlops();
    const comp = new Compressor(weights, config.lifecycle.chunkSize);
    const reference = new Compressor(weights, config.lifecycle.chunkSize, 'reference');
    comp.compress(sample);
    const ct: number[] = [];
    for (let r = 0; r < 3; r++) {
      const t0 = performance.now();
      comp.compress(sample);
      ct.push((performance.now() - t0) / 1000);
    }
    const computeFlops = (sample.length * perEvent) / median(ct);
    const refN = Math.min(sample.length, 20_000);
    const tr = performance.now();
    reference.compress({ ...sample, length: refN });
    const referenceFlops = (refN * perEvent) / ((performance.now() - tr) / 1000);
    console.log(`# backend ${backend}: matMul ${(matmul / 1e9).toFixed(2)} GFLOP/s; compressor ${(computeFlops / 1e9).toFixed(2)} GFLOP/s (tfjs path), ${(referenceFlops / 1e9).toFixed(2)} GFLOP/s (plain TS reference)`);

    const rss = rssSampler();
    const full = await compressOnce(config, { full: true, log: quiet });
    console.log(`# full: ${full.users} users, ${full.events} events in ${full.seconds} s (${full.eventsPerSecond} events/s)`);

    // Append 1% new events per user (replays of the user's own recent items, later in time), as a day of ingest.
    const store = await openHistoryStore(config);
    const rng = new Rng(99);
    const perUser = Math.max(1, Math.round(events * appendShare));
    const ids = await store.userIds();
    const cols: EventColumns = {
      length: ids.length * perUser,
      userId: new Int32Array(ids.length * perUser),
      itemId: new Int32Array(ids.length * perUser),
      ts: new Float64Array(ids.length * perUser),
      seq: new Int32Array(ids.length * perUser),
      authorId: new Int32Array(ids.length * perUser),
      tagOffsets: new Int32Array(ids.length * perUser + 1),
      tagIds: new Int32Array(0),
      playMs: new Float32Array(ids.length * perUser),
      durationMs: new Float32Array(ids.length * perUser),
      labels: new Uint8Array(ids.length * perUser),
      source: 'bench-compress-append',
    };
    for (let u = 0; u < ids.length; u++) {
      const h = await store.userHistory(ids[u]!);
      let t = h.ts[h.length - 1]!;
      for (let j = 0; j < perUser; j++) {
        const r = u * perUser + j;
        const src = h.length - 1 - rng.int(Math.min(h.length, 2000));
        t += 1000 + rng.int(120_000);
        cols.userId[r] = ids[u]!;
        cols.itemId[r] = h.itemId[src]!;
        cols.ts[r] = t;
        cols.seq[r] = h.seq[h.length - 1]! + 1 + j;
        cols.authorId[r] = h.authorId[src]!;
        cols.playMs[r] = h.playMs[src]!;
        cols.durationMs[r] = h.durationMs[src]!;
        cols.labels[r] = h.labels[src]!;
      }
    }
    await store.append(cols);
    await store.close();

    const inc = await compressOnce(config, { log: quiet });
    const peak = rss.stop();
    console.log(`# incremental: ${inc.usersIncremental} users, ${inc.events} new lifecycle events in ${inc.seconds} s (${inc.eventsPerSecond} events/s)`);

    // Exactness at scale: incrementally updated memories vs recompressing the grown lifecycle from scratch.
    const check = await openHistoryStore(config);
    const mem = await openMemoryStore(config);
    let maxRel = 0;
    for (const u of ids.slice(0, 5)) {
      const life = cutStreams(await check.userHistory(u), config.streams.tRecent, config.streams.tMid).lifecycle;
      const want = comp.compress(life).vectors;
      const got = (await mem.get(u))!.vectors;
      let scale = 0;
      let diff = 0;
      for (let i = 0; i < want.length; i++) {
        scale = Math.max(scale, Math.abs(want[i]!));
        diff = Math.max(diff, Math.abs(want[i]! - got[i]!));
      }
      maxRel = Math.max(maxRel, diff / scale);
    }
    await mem.close();
    await check.close();
    comp.dispose();

    const e2eFlops = (full.events * perEvent) / full.seconds;
    return {
      backend,
      compressor_version: version,
      users,
      events_per_user: events,
      lifecycle_events: full.events,
      full_seconds: full.seconds,
      full_events_per_s: round(full.eventsPerSecond, 0),
      appended_events: cols.length,
      incremental_users: inc.usersIncremental,
      incremental_events: inc.events,
      incremental_seconds: inc.seconds,
      incremental_events_per_s: round(inc.eventsPerSecond, 0),
      incremental_speedup_wall: round(full.seconds / inc.seconds, 2),
      incremental_max_rel_diff: Number(maxRel.toExponential(2)),
      peak_rss_mb: peak,
      flops_per_event: perEvent,
      matmul_gflops: round(matmul / 1e9, 2),
      compressor_gflops: round(computeFlops / 1e9, 2),
      reference_ts_gflops: round(referenceFlops / 1e9, 2),
      end_to_end_gflops: round(e2eFlops / 1e9, 2),
      flops_ratio: round(computeFlops / matmul, 3),
      flops_ratio_end_to_end: round(e2eFlops / matmul, 3),
      chunk_size: config.lifecycle.chunkSize,
      batch_size: config.lifecycle.batchSize,
    };
  },
};
