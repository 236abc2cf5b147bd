// history-scan (issue 2): on the generated 100 users × 100,000 events set,
//   (a) ms to read one user's full history into typed arrays (userHistory): median and p99, goal ≤ 30 ms median;
//   (b) full-scan throughput of scanHistories in events/s, goal ≥ 3,000,000/s;
//   (c) peak RSS during the full scan (and RSS along the scan, to show it does not grow with users).
// The data set is generated once into --data-dir (default .data/bench-history-scan) and reused while its
// generated/manifest.json matches the options and the store holds all its events.
//   npm run bench -- history-scan [--data-dir DIR] [--users 100] [--events 100000] [--reads 60]
import { existsSync, rmSync } from 'node:fs';
import { loadavg } from 'node:os';
import { resolve } from 'node:path';
import { loadConfig } from '../src/config/config.js';
import { openHistoryStore } from '../src/data/parquetHistoryStore.js';
import { resolveLifelongOptions } from '../src/data/generator/lifelong.js';
import { GENERATOR_VERSION, generatedPaths, readManifest, sameOptions, writeLifelong } from '../src/data/generator/write.js';
import { Rng } from '../src/util/random.js';
import { median, percentile, round, rssSampler } from './_stats.js';
import type { Bench, Figures } from './run.js';

function argValue(args: string[], name: string, fallback: string): string {
  const i = args.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < args.length) return args[i + 1]!;
  const eq = args.find((a) => a.startsWith(`--${name}=`));
  return eq ? eq.slice(name.length + 3) : fallback;
}

const mb = (bytes: number) => round(bytes / 1024 ** 2, 1);

export const bench: Bench = {
  summary: 'history store: one-user full-history read latency, full-scan throughput and peak RSS on 100 × 100k events',
  async run(args: string[]): Promise<Figures> {
    const dataDir = resolve(argValue(args, 'data-dir', '.data/bench-history-scan'));
    const users = Number(argValue(args, 'users', '100'));
    const events = Number(argValue(args, 'events', '100000'));
    const reads = Number(argValue(args, 'reads', '60'));
    const config = loadConfig({ flags: { dataDir }, env: {} });
    const o = resolveLifelongOptions('bench100k', { users, fixedLength: events, tRecent: config.streams.tRecent, tMid: config.streams.tMid });
    const paths = generatedPaths(dataDir);
    const expected = users * events;

    // Reuse the generated set when it is complete and made with the same options.
    let generated: { seconds: number; eventsPerSecond: number } | null = null;
    const manifest = readManifest(paths.manifest);
    let reuse = manifest !== null && manifest.version === GENERATOR_VERSION && sameOptions(manifest.options, o);
    if (reuse) {
      try {
        const store = await openHistoryStore(config);
        try {
          reuse = (await store.stats()).events === expected;
        } finally {
          await store.close();
        }
      } catch (e) {
        // e.g. a data dir written by an older store layout/migration: rebuild it.
        console.log(`# cannot reuse ${dataDir}: ${(e as Error).message}`);
        reuse = false;
      }
    }
    if (!reuse) {
      if (existsSync(dataDir)) {
        console.log(`# ${dataDir} holds another or an incomplete data set: regenerating`);
        rmSync(dataDir, { recursive: true, force: true });
      }
      console.log(`# generating ${users} users × ${events} events into ${dataDir}`);
      const store = await openHistoryStore(config);
      try {
        const r = await writeLifelong(store, o, { truthPath: paths.truth, usersPath: paths.users, manifestPath: paths.manifest });
        generated = { seconds: r.seconds, eventsPerSecond: r.eventsPerSecond };
        console.log(`# generated ${r.events} events in ${r.seconds.toFixed(1)} s (${r.eventsPerSecond} events/s incl. store writes)`);
      } finally {
        await store.close();
      }
    } else {
      console.log(`# reusing ${dataDir} (${expected} events)`);
    }

    const store = await openHistoryStore(config);
    try {
      const ids = await store.userIds();
      if (ids.length !== users) throw new Error(`history-scan: store has ${ids.length} users, expected ${users}`);

      // (a) one user's full history, random users, after a short warm-up (first query plans, file metadata).
      const rng = new Rng(1234);
      for (let w = 0; w < 3; w++) await store.userHistory(ids[rng.int(ids.length)]!);
      const readMs: number[] = [];
      for (let k = 0; k < reads; k++) {
        const u = ids[rng.int(ids.length)]!;
        const t0 = performance.now();
        const h = await store.userHistory(u);
        readMs.push(performance.now() - t0);
        if (h.length !== events) throw new Error(`history-scan: user ${u} has ${h.length} events, expected ${events}`);
      }
      console.log(`user read: p50 ${median(readMs).toFixed(1)} ms, p99 ${percentile(readMs, 99).toFixed(1)} ms (${reads} reads of ${events} events)`);

      // (b, c) full scan with RSS sampling.
      global.gc?.();
      const rssBefore = process.memoryUsage.rss();
      const sampler = rssSampler(10);
      const rssAlong: number[] = [];
      let scanned = 0;
      let scannedUsers = 0;
      let checksum = 0;
      let prevUser = -Infinity;
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      for await (const h of store.scanHistories()) {
        if (h.userId <= prevUser) throw new Error(`history-scan: scan not in ascending user order (${prevUser} then ${h.userId})`);
        prevUser = h.userId;
        scanned += h.length;
        scannedUsers++;
        checksum = (checksum + h.itemId[h.length - 1]! + (h.ts[0]! % 1000)) % 1_000_003; // touch the columns
        if (scannedUsers % Math.max(1, Math.floor(users / 5)) === 0) rssAlong.push(mb(process.memoryUsage.rss()));
      }
      const scanS = (performance.now() - t0) / 1000;
      const cpu = process.cpuUsage(cpu0);
      // CPU seconds of all the process's threads (JS + DuckDB): comparable when other jobs share the cores.
      const scanCpuS = (cpu.user + cpu.system) / 1e6;
      const peak = sampler.stop();
      if (scanned !== expected) throw new Error(`history-scan: scanned ${scanned} events, expected ${expected}`);
      const perS = Math.round(scanned / scanS);
      console.log(`full scan: ${scanned} events of ${scannedUsers} users in ${scanS.toFixed(2)} s (${scanCpuS.toFixed(2)} CPU s) = ${perS} events/s; peak RSS ${peak} MB (before ${mb(rssBefore)} MB; along the scan ${rssAlong.join(', ')} MB)`);

      return {
        user_read_ms_p50: round(median(readMs), 2),
        user_read_ms_p99: round(percentile(readMs, 99), 2),
        user_read_ms_mean: round(readMs.reduce((s, x) => s + x, 0) / readMs.length, 2),
        scan_events_per_s: perS,
        scan_seconds: round(scanS, 2),
        scan_cpu_seconds: round(scanCpuS, 2),
        scan_events_per_cpu_s: Math.round(scanned / Math.max(scanCpuS, 1e-9)),
        scan_peak_rss_mb: peak,
        scan_rss_before_mb: mb(rssBefore),
        scan_rss_along_mb: rssAlong,
        users,
        events_per_user: events,
        reads,
        reused_data: reuse,
        generate_seconds: generated ? round(generated.seconds, 1) : null,
        generate_events_per_s: generated ? generated.eventsPerSecond : null,
        checksum,
        load_avg_1m: round(loadavg()[0]!, 2),
        goals: { user_read_ms_p50: 30, scan_events_per_s: 3_000_000 },
      };
    } finally {
      await store.close();
    }
  },
};
