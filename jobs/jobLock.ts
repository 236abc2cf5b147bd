// A job lock that survives a crashed holder: a lock file created atomically (O_EXCL) holding the holder's pid,
// hostname and a heartbeat refreshed every few seconds. Another process may take the lock over only when it is
// stale: the holder is on this host and its pid is dead, or its heartbeat is older than `staleMs` (a holder on
// another machine sharing the folder, e.g. a Kubernetes volume). Taking over a stale lock goes through a short
// "breaker" file so two contenders cannot both break it.
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

export interface LockHolder {
  pid: number;
  hostname: string;
  token: string;
  startedAt: number;
  heartbeat: number;
  /** Free-form description (run id, shard). */
  what: string;
}

export class LockHeldError extends Error {
  override name = 'LockHeldError';
  constructor(
    readonly path: string,
    readonly holder: LockHolder,
  ) {
    super(
      `lock ${path} is held by pid ${holder.pid} on ${holder.hostname} (${holder.what}; heartbeat ` +
        `${Math.round((Date.now() - holder.heartbeat) / 1000)} s ago): another job is running on this store`,
    );
  }
}

export interface LockOptions {
  staleMs?: number;
  heartbeatMs?: number;
  what?: string;
  /** Other lock files in the same folder that must not be live at the same time (e.g. overlapping shards). */
  conflictsWith?: (otherLockFile: string) => boolean;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readHolder(path: string): LockHolder | null {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as LockHolder;
  } catch {
    // Missing, or caught between create and first write: treat a half-written file by its age.
    return null;
  }
}

/** Whether a lock file's holder is gone. */
export function isStale(path: string, staleMs: number): boolean {
  const h = readHolder(path);
  if (!h) {
    try {
      return Date.now() - statSync(path).mtimeMs > staleMs;
    } catch {
      return true;
    }
  }
  if (h.hostname === hostname() && !pidAlive(h.pid)) return true;
  return Date.now() - h.heartbeat > staleMs;
}

export class JobLock {
  private timer: NodeJS.Timeout | null = null;
  private released = false;

  private constructor(
    readonly path: string,
    private holder: LockHolder,
  ) {}

  static acquire(dir: string, name: string, opts: LockOptions = {}): JobLock {
    const staleMs = opts.staleMs ?? 60_000;
    const heartbeatMs = opts.heartbeatMs ?? Math.max(250, Math.floor(staleMs / 6));
    mkdirSync(dir, { recursive: true });
    const path = join(dir, name);
    if (opts.conflictsWith) {
      for (const f of readdirSync(dir)) {
        if (f === name || !f.endsWith('.lock') || !opts.conflictsWith(f)) continue;
        const other = join(dir, f);
        if (!isStale(other, staleMs)) throw new LockHeldError(other, readHolder(other) ?? unknownHolder());
      }
    }
    const now = Date.now();
    const holder: LockHolder = { pid: process.pid, hostname: hostname(), token: randomBytes(8).toString('hex'), startedAt: now, heartbeat: now, what: opts.what ?? name };
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = openSync(path, 'wx');
        writeSync(fd, JSON.stringify(holder));
        closeSync(fd);
        const lock = new JobLock(path, holder);
        lock.timer = setInterval(() => lock.beat(), heartbeatMs);
        lock.timer.unref();
        return lock;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      if (!isStale(path, staleMs)) throw new LockHeldError(path, readHolder(path) ?? unknownHolder());
      breakStale(path, staleMs);
    }
    throw new LockHeldError(path, readHolder(path) ?? unknownHolder());
  }

  /** Refreshes the heartbeat (atomic replace), unless someone broke our lock meanwhile. */
  beat(): void {
    if (this.released) return;
    const current = readHolder(this.path);
    if (!current || current.token !== this.holder.token) return;
    this.holder = { ...this.holder, heartbeat: Date.now() };
    const tmp = `${this.path}.hb-${this.holder.token}`;
    writeFileSync(tmp, JSON.stringify(this.holder));
    renameSync(tmp, this.path);
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    if (this.timer) clearInterval(this.timer);
    const current = readHolder(this.path);
    if (current && current.token === this.holder.token) unlinkSync(this.path);
  }
}

function unknownHolder(): LockHolder {
  return { pid: -1, hostname: '?', token: '', startedAt: 0, heartbeat: Date.now(), what: 'unreadable lock file' };
}

/** Removes a stale lock under a breaker file, re-checking staleness once we hold the breaker. */
function breakStale(path: string, staleMs: number): void {
  const breaker = `${path}.break`;
  if (existsSync(breaker)) {
    // A breaker left by a contender that crashed mid-break is itself stale after a few seconds.
    try {
      if (Date.now() - statSync(breaker).mtimeMs > 10_000) unlinkSync(breaker);
    } catch {
      /* someone else removed it */
    }
  }
  let fd: number;
  try {
    fd = openSync(breaker, 'wx');
  } catch {
    return; // another contender is breaking it; our next create attempt decides
  }
  try {
    closeSync(fd);
    if (existsSync(path) && isStale(path, staleMs)) unlinkSync(path);
  } finally {
    unlinkSync(breaker);
  }
}
