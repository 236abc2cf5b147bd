// Real S3-compatible servers for tests: s3rver in a child process on 127.0.0.1 (random port, temp dir), and a small
// HTTP proxy that sits in front of it and injects faults (error statuses, connections cut or stalled mid-body).
// Both are real servers on loopback; nothing in the AWS SDK is mocked.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, promises as fs } from 'node:fs';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const S3RVER_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } as const;

export interface S3rverHandle {
  endpoint: string;
  port: number;
  bucket: string;
  /** s3rver's storage folder. */
  directory: string;
  /** Graceful stop (SIGTERM) and removal of the storage folder. Safe to call twice. */
  stop(): Promise<void>;
  /** Simulates the server vanishing: SIGKILL, resolves once the process is gone. */
  kill(): Promise<void>;
}

const SCRIPT = fileURLToPath(new URL('./s3rverProcess.mjs', import.meta.url));

function waitExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** Starts s3rver under `node --openssl-legacy-provider` (ListObjectsV2 paging needs it) with `bucket` created. */
export async function startS3rver(opts: { bucket?: string } = {}): Promise<S3rverHandle> {
  const bucket = opts.bucket ?? 'gems';
  const directory = mkdtempSync(join(tmpdir(), 'gems-s3rver-'));
  const child = spawn(process.execPath, ['--openssl-legacy-provider', SCRIPT, directory, bucket], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`s3rver did not start within 30 s; stderr: ${stderr}`)), 30_000);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        try {
          resolve((JSON.parse(out.slice(0, nl)) as { port: number }).port);
        } catch {
          reject(new Error(`s3rver printed an unexpected first line '${out.slice(0, nl)}'`));
        }
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`s3rver exited during start (code ${code}, signal ${signal}); stderr: ${stderr}`));
    });
  });
  const endpoint = `http://127.0.0.1:${port}`;
  let stopped = false;
  return {
    endpoint,
    port,
    bucket,
    directory,
    async kill() {
      child.kill('SIGKILL');
      await waitExit(child);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await waitExit(child);
        clearTimeout(timer);
      }
      await fs.rm(directory, { recursive: true, force: true });
    },
  };
}

export interface ProxiedRequest {
  method: string;
  url: string;
  /** Status the client saw (0 when the connection was cut before headers). */
  status: number;
  injected: boolean;
}

export interface FaultProxy {
  endpoint: string;
  /** Every request the proxy received, in order. */
  readonly requests: ProxiedRequest[];
  /**
   * Answers the next `n` requests (only those whose `METHOD url` matches `match`, when given) itself with `status`
   * and an S3 error body carrying `code`.
   */
  failNext(n: number, status?: number, code?: string, match?: RegExp): void;
  /** The next GET that returns a body: forward its headers and the first `bytes` body bytes, then cut the connection. */
  cutNextGetAfter(bytes: number): void;
  /**
   * The next GET that returns a body: forward headers and the first `bytes` bytes, then hold the rest (the
   * connection stays open). The promise resolves once the stall point is reached. If the upstream server then dies,
   * the client's connection is cut, as a real proxy would.
   */
  stallNextGetAfter(bytes: number): Promise<void>;
  /**
   * The next GET that returns a body: forward the first `bytes` at full speed, the rest at `bytesPerSecond`
   * (the upstream is back-pressured, so a server killed now really dies with part of the body unsent). The
   * promise resolves once `bytes` were forwarded.
   */
  slowNextGetAfter(bytes: number, bytesPerSecond: number): Promise<void>;
  close(): Promise<void>;
}

/** An HTTP proxy on 127.0.0.1 (random port) forwarding to `upstream` (http://host:port), with fault injection. */
export async function startFaultProxy(upstream: string): Promise<FaultProxy> {
  const target = new URL(upstream);
  const requests: ProxiedRequest[] = [];
  const sockets = new Set<Socket>();
  let failures: { left: number; status: number; code: string; match?: RegExp } = { left: 0, status: 503, code: 'SlowDown' };
  let bodyFault: { kind: 'cut' | 'stall' | 'slow'; bytes: number; rate?: number; reached?: () => void } | null = null;

  const server = http.createServer((req, res) => {
    const record: ProxiedRequest = { method: req.method ?? '', url: req.url ?? '', status: 0, injected: false };
    requests.push(record);
    if (failures.left > 0 && (!failures.match || failures.match.test(`${record.method} ${record.url}`))) {
      failures.left--;
      record.status = failures.status;
      record.injected = true;
      // Drain the request body before answering so the client sees the status, not a reset.
      req.resume();
      req.on('end', () => {
        const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${failures.code}</Code><Message>injected by test proxy</Message><RequestId>proxy</RequestId></Error>`;
        res.writeHead(failures.status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      });
      return;
    }
    const upReq = http.request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
      (upRes) => {
        record.status = upRes.statusCode ?? 0;
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        const fault = req.method === 'GET' && upRes.statusCode === 200 && bodyFault ? bodyFault : null;
        if (fault) bodyFault = null;
        if (!fault) {
          upRes.pipe(res);
        } else {
          let sent = 0;
          upRes.on('data', (chunk: Buffer) => {
            if (fault.kind === 'slow' && sent >= fault.bytes) {
              // Past the fast part: forward at the given rate, pausing the upstream in between.
              sent += chunk.length;
              res.write(chunk);
              upRes.pause();
              setTimeout(() => upRes.resume(), (chunk.length / fault.rate!) * 1000);
              return;
            }
            if (sent >= fault.bytes) return;
            const room = fault.bytes - sent;
            if (chunk.length < room) {
              sent += chunk.length;
              res.write(chunk);
              return;
            }
            res.write(chunk.subarray(0, room));
            sent = fault.bytes;
            if (fault.kind === 'cut') {
              upRes.destroy();
              // Let the written bytes reach the client before the reset, so it fails mid-body.
              setTimeout(() => res.destroy(), 20);
            } else if (fault.kind === 'slow') {
              res.write(chunk.subarray(room));
              sent += chunk.length - room;
              fault.reached?.();
            } else {
              upRes.pause();
              fault.reached?.();
            }
          });
        }
        // The upstream vanished before the body was complete: cut the client too (and the other way round).
        upRes.on('close', () => {
          if (!upRes.complete) res.destroy();
        });
        res.on('close', () => {
          if (!upRes.complete) upRes.destroy();
        });
      },
    );
    upReq.on('error', () => {
      if (!res.headersSent) {
        record.status = 502;
        res.writeHead(502, { 'content-type': 'text/plain' });
        res.end('upstream unreachable');
      } else {
        res.destroy();
      }
    });
    req.pipe(upReq);
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    requests,
    failNext(n, status = 503, code = 'SlowDown', match) {
      failures = { left: n, status, code, match };
    },
    cutNextGetAfter(bytes) {
      bodyFault = { kind: 'cut', bytes };
    },
    stallNextGetAfter(bytes) {
      return new Promise<void>((resolve) => {
        bodyFault = { kind: 'stall', bytes, reached: resolve };
      });
    },
    slowNextGetAfter(bytes, bytesPerSecond) {
      return new Promise<void>((resolve) => {
        bodyFault = { kind: 'slow', bytes, rate: bytesPerSecond, reached: resolve };
      });
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
