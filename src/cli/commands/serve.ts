// `gems serve`: runs the gRPC services until SIGINT/SIGTERM, then drains in-flight calls (graceful shutdown).
// By default the lifecycle-memory service and the recommender run together in this process (colocated: the
// recommender reads memories from the same store in process); `--only memory` / `--only recommender` run one.
import { flagBool, flagNumber, flagString, UsageError, type ParsedArgs } from '../args.js';
import type { Command } from '../command.js';
import type { GemsConfig } from '../../config/config.js';
import type { HistoryStore } from '../../data/historyStore.js';
import { openHistoryStore } from '../../data/parquetHistoryStore.js';
import type { MemoryStore } from '../../lifecycle/memory.js';
import { openMemoryStore } from '../../lifecycle/openMemoryStore.js';
import { shutdownOnSignals, type GrpcServerHandle } from '../../serving/grpc.js';
import { LifecycleMemoryClient, startLifecycleServer } from '../../serving/lifecycleService.js';
import { ServiceMetrics } from '../../serving/metrics.js';
import { startRecommenderServer, type MemorySource, type RecommenderServer } from '../../serving/recommenderService.js';
import type { Logger } from '../../util/log.js';

const PARTS = ['memory', 'recommender'] as const;
type Part = (typeof PARTS)[number];

function portFlag(args: ParsedArgs, name: string, fallback: number): number {
  const port = flagNumber(args, name, fallback);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`--${name} must be 0..65535, got ${port}`);
  return port;
}

export const command: Command = {
  summary: 'run the gRPC services (lifecycle memories + recommendations; health, reflection, Prometheus metrics)',
  usage: `usage: gems serve [--only memory|recommender] [--port N] [--memory-port N] [--recommender-port N]
                  [--grace-ms MS] [--read-only]

Default: both services in this process. gems.v1.LifecycleMemoryService on serving.host:serving.memoryPort serves
the memory store lifecycle.memoryStore (lmdb under the data dir, or redis at lifecycle.redisUrl);
gems.v1.RecommenderService on serving.host:serving.recommenderPort answers GetRecommendations from the history
store (DuckDB under the data dir), the lifecycle memories (in process, or through the memory service at
serving.memoryRemote when set) and the GEMs checkpoint serving.checkpoint (default <dataDir>/checkpoints/gems/best;
without one, popular items for everyone). Each server has grpc.health.v1 and reflection; TLS when serving.tlsCert
and serving.tlsKey are set; PutLifecycleMemory needs "authorization: Bearer <serving.authToken>" when a token is set.
Prometheus metrics on serving.metricsPort (/metrics, /healthz; 0 disables). Prints one JSON line
{"service","address",…} per listening service.
Batching: serving.maxBatchSize (1 = off), serving.maxWaitMs, serving.maxQueue (past it: RESOURCE_EXHAUSTED).
Hot-swap: a new checkpoint is picked up within serving.reloadPollMs (0 = off), or at once on SIGHUP; in-flight
requests finish on the old model. SIGINT/SIGTERM: stop accepting calls, let in-flight ones finish (up to
--grace-ms, default 10000), then exit; a second signal forces it.

  --only memory|recommender   run one service (default: both)
  --port N                    the port of the --only service (0 = any free port)
  --memory-port N / --recommender-port N   ports when both run
  --read-only                 open the DuckDB history store read-only (several serving processes may share it;
                              the database must already be migrated)`,

  async run({ config, args, log, out }) {
    const onlyRaw = args.flags['only'] === undefined ? '' : flagString(args, 'only');
    if (onlyRaw && !(PARTS as readonly string[]).includes(onlyRaw)) throw new UsageError(`--only must be one of ${PARTS.join('|')}, got '${onlyRaw}'`);
    const parts: Part[] = onlyRaw ? [onlyRaw as Part] : [...PARTS];
    const single = parts.length === 1 && args.flags['port'] !== undefined;
    const memoryPort = single && parts[0] === 'memory' ? portFlag(args, 'port', config.serving.memoryPort) : portFlag(args, 'memory-port', config.serving.memoryPort);
    const recommenderPort = single && parts[0] === 'recommender' ? portFlag(args, 'port', config.serving.recommenderPort) : portFlag(args, 'recommender-port', config.serving.recommenderPort);
    const graceMs = flagNumber(args, 'grace-ms', 10_000);

    const metrics = new ServiceMetrics();
    const metricsServer = config.serving.metricsPort > 0 ? await metrics.listen(config.serving.host, config.serving.metricsPort) : null;
    if (metricsServer) log.info('metrics listening', { url: `http://${config.serving.host}:${metricsServer.port}/metrics` });

    // Everything opened is closed in reverse order, on failure as on shutdown.
    const closers: (() => Promise<void> | void)[] = [() => void metricsServer?.server.close()];
    const closeAll = async () => {
      for (const c of closers.reverse()) {
        try {
          await c();
        } catch (e) {
          log.error('close failed', { error: (e as Error).message });
        }
      }
    };
    const handles: GrpcServerHandle[] = [];
    let recommender: RecommenderServer | null = null;
    try {
      // The memory store is opened when a service here reads it: the memory service, or a colocated recommender.
      let store: MemoryStore | null = null;
      const needStore = parts.includes('memory') || !config.serving.memoryRemote;
      if (needStore) {
        store = await openMemoryStore(config);
        const s = store;
        closers.push(() => s.close());
      }
      if (parts.includes('memory')) {
        const handle = await startLifecycleServer({ config, store: store!, port: memoryPort, metrics, log: log.child('memory') });
        handles.push(handle);
        out(JSON.stringify({ service: 'gems.v1.LifecycleMemoryService', address: handle.address, tls: handle.tls, store: store!.kind }));
      }
      if (parts.includes('recommender')) {
        recommender = await startRecommender(config, args, { store, metrics, port: recommenderPort, log, closers });
        handles.push(recommender.handle);
        out(
          JSON.stringify({
            service: 'gems.v1.RecommenderService',
            address: recommender.handle.address,
            tls: recommender.handle.tls,
            model: recommender.service.modelKind,
            modelVersion: recommender.service.modelVersion,
            memories: config.serving.memoryRemote ? `remote ${config.serving.memoryRemote}` : store!.kind,
          }),
        );
      }
    } catch (e) {
      await Promise.all(handles.map((h) => h.shutdown(0)));
      await closeAll();
      throw e;
    }

    const onHangup = () => {
      if (!recommender) return;
      log.info('SIGHUP: reloading the model');
      recommender.service.reload().catch(() => undefined); // reload() logs the failure and keeps the old model
    };
    process.on('SIGHUP', onHangup);
    await new Promise<void>((resolveDone) => {
      const unsubscribe = shutdownOnSignals(handles, graceMs, log, async () => {
        unsubscribe();
        process.off('SIGHUP', onHangup);
        // The gRPC servers are down (in-flight calls answered); now drain the batcher and release the model.
        await recommender?.stop(graceMs);
        await closeAll();
        log.info('serve stopped');
        resolveDone();
      });
    });
    return 0;
  },
};

async function startRecommender(
  config: GemsConfig,
  args: ParsedArgs,
  ctx: { store: MemoryStore | null; metrics: ServiceMetrics; port: number; log: Logger; closers: (() => Promise<void> | void)[] },
): Promise<RecommenderServer> {
  const history: HistoryStore = await openHistoryStore(config, { readOnly: flagBool(args, 'read-only') });
  ctx.closers.push(() => history.close());
  let memories: MemorySource | null = ctx.store;
  if (config.serving.memoryRemote) {
    const client = new LifecycleMemoryClient(config.serving.memoryRemote, config.serving.tlsCert ? { tls: { ca: config.serving.tlsCert } } : {});
    ctx.closers.push(() => client.close());
    memories = client;
  }
  const catalogue = await history.items();
  const titles = new Map<number, string>();
  for (let i = 0; i < catalogue.length; i++) if (catalogue.titles[i]) titles.set(catalogue.itemId[i]!, catalogue.titles[i]!);
  return startRecommenderServer({ config, history, memories, titles, metrics: ctx.metrics, port: ctx.port, log: ctx.log.child('recommender') });
}
