// Prometheus metrics (prom-client) for the gRPC services, served as text on an HTTP port (/metrics), with a
// liveness endpoint (/healthz). One registry per process.
import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export class ServiceMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: 'gems_grpc_requests_total',
    help: 'gRPC calls by method and status code',
    labelNames: ['method', 'status'] as const,
    registers: [this.registry],
  });
  readonly latency = new Histogram({
    name: 'gems_grpc_request_duration_seconds',
    help: 'gRPC call latency by method and status code',
    labelNames: ['method', 'status'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly batchSize = new Histogram({
    name: 'gems_batch_size',
    help: 'Requests per model execution',
    buckets: [1, 2, 4, 8, 16, 32, 64],
    registers: [this.registry],
  });
  readonly queueDepth = new Gauge({ name: 'gems_queue_depth', help: 'Requests waiting for a batch', registers: [this.registry] });
  readonly memoryHits = new Counter({ name: 'gems_memory_store_hits_total', help: 'Lifecycle memories found', registers: [this.registry] });
  readonly memoryMisses = new Counter({ name: 'gems_memory_store_misses_total', help: 'Lifecycle memories missing', registers: [this.registry] });

  constructor(defaultMetrics = true) {
    if (defaultMetrics) collectDefaultMetrics({ register: this.registry, prefix: 'gems_' });
  }

  /** Records one finished call. `status` is the gRPC status name (OK, INVALID_ARGUMENT, …). */
  observe(method: string, status: string, seconds: number): void {
    this.requests.inc({ method, status });
    this.latency.observe({ method, status }, seconds);
  }

  /** Serves /metrics and /healthz on host:port (port 0 = any free port). */
  async listen(host: string, port: number): Promise<{ server: Server; port: number }> {
    const server = createServer((req, res) => {
      if (req.url === '/metrics') {
        this.registry
          .metrics()
          .then((text) => {
            res.writeHead(200, { 'content-type': this.registry.contentType });
            res.end(text);
          })
          .catch((e: Error) => {
            res.writeHead(500);
            res.end(e.message);
          });
      } else if (req.url === '/healthz') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end('ok\n');
      } else {
        res.writeHead(404);
        res.end();
      }
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    const addr = server.address();
    return { server, port: typeof addr === 'object' && addr ? addr.port : port };
  }
}
