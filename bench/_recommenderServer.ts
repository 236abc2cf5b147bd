// Child process of bench/serve-load.ts: serves gems.v1.RecommenderService from a prepared data dir (history store
// opened read-only, so several of these could share it) with the model buildModel picks for it (the GEMs
// checkpoint in serving.checkpoint, hybrid with popularity; else popularity alone) and the batching given in the
// config flags. Prints one JSON line {address, model, version}; answers "rss" on stdin with {rss_mb} (after a GC);
// exits when stdin closes, so it never outlives the benchmark.
//   argv: <dataDir> [--set key=value]...
import { createInterface } from 'node:readline';
import { loadConfig } from '../src/config/config.js';
import { openHistoryStore } from '../src/data/parquetHistoryStore.js';
import { startRecommenderServer } from '../src/serving/recommenderService.js';
import { setLogLevel } from '../src/util/log.js';

async function main(): Promise<void> {
  const [dataDir, ...rest] = process.argv.slice(2);
  if (!dataDir) throw new Error('usage: _recommenderServer.ts <dataDir> [--set key=value]...');
  const flags: Record<string, string> = { dataDir };
  for (let i = 0; i < rest.length; i += 2) {
    if (rest[i] !== '--set') throw new Error(`unexpected argument '${rest[i]}'`);
    const [k, v] = rest[i + 1]!.split('=');
    flags[k!] = v!;
  }
  setLogLevel((process.env['GEMS_BENCH_LOG_LEVEL'] as 'debug' | 'info' | 'warn' | undefined) ?? 'warn');
  const config = loadConfig({ flags, env: {} });
  const history = await openHistoryStore(config, { readOnly: true });
  const catalogue = await history.items();
  const titles = new Map<number, string>();
  for (let i = 0; i < catalogue.length; i++) titles.set(catalogue.itemId[i]!, catalogue.titles[i]!);
  const server = await startRecommenderServer({ config, history, memories: null, titles, host: '127.0.0.1', port: 0, watchCheckpoint: false });
  (globalThis as { gc?: () => void }).gc?.();
  process.stdout.write(JSON.stringify({ address: server.handle.address, model: server.service.modelKind, version: server.service.modelVersion }) + '\n');
  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    if (line.trim() === 'rss') {
      (globalThis as { gc?: () => void }).gc?.();
      process.stdout.write(JSON.stringify({ rss_mb: process.memoryUsage.rss() / 1024 ** 2, batches: server.service.batchStats }) + '\n');
    }
  });
  rl.on('close', () => {
    void server
      .stop(5000)
      .then(() => history.close())
      .then(() => process.exit(0));
  });
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
