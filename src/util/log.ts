// Structured logging: JSON lines on stderr (one object per event) unless stderr is a TTY, where lines are
// human-readable. Every long job reports progress through `progress()`, which draws a bar with ETA on a TTY and
// logs a structured `progress` event at most every few seconds otherwise.

export type Level = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

let minLevel: Level = (process.env['GEMS_LOG_LEVEL'] as Level) in ORDER ? (process.env['GEMS_LOG_LEVEL'] as Level) : 'info';
let sink: (line: string) => void = (line) => process.stderr.write(line + '\n');
const pretty = (): boolean => process.stderr.isTTY === true && process.env['GEMS_LOG_FORMAT'] !== 'json';

export function setLogLevel(level: Level): void {
  minLevel = level;
}

/** Redirects log lines (tests capture them). Returns the previous sink. */
export function setLogSink(fn: (line: string) => void): (line: string) => void {
  const prev = sink;
  sink = fn;
  return prev;
}

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(component: string): Logger;
}

export function logger(component: string): Logger {
  const emit = (level: Level, msg: string, fields?: Record<string, unknown>) => {
    if (ORDER[level] < ORDER[minLevel]) return;
    if (pretty()) {
      const extra = fields && Object.keys(fields).length ? ' ' + JSON.stringify(fields) : '';
      sink(`${new Date().toISOString().slice(11, 19)} ${level.padEnd(5)} [${component}] ${msg}${extra}`);
    } else {
      sink(JSON.stringify({ t: new Date().toISOString(), level, component, msg, ...fields }));
    }
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (c) => logger(`${component}.${c}`),
  };
}

export interface Progress {
  /** Adds `n` units of work done (default 1). */
  tick(n?: number, fields?: Record<string, unknown>): void;
  /** Sets the absolute amount done. */
  set(done: number, fields?: Record<string, unknown>): void;
  /** Ends the bar and logs a summary with rate and elapsed time. */
  done(fields?: Record<string, unknown>): void;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** Progress of a job with `total` units (0 = unknown). `unit` names the units in messages ("events", "users"). */
export function progress(log: Logger, task: string, total: number, unit = 'items', intervalMs = 5000): Progress {
  const start = performance.now();
  let doneUnits = 0;
  let lastEmit = 0;
  const tty = process.stderr.isTTY === true && process.env['GEMS_LOG_FORMAT'] !== 'json';
  const render = (final: boolean, fields?: Record<string, unknown>) => {
    const now = performance.now();
    if (!final && now - lastEmit < (tty ? 200 : intervalMs)) return;
    lastEmit = now;
    const elapsed = (now - start) / 1000;
    const rate = doneUnits / Math.max(elapsed, 1e-9);
    const eta = total > 0 && rate > 0 ? (total - doneUnits) / rate : NaN;
    if (tty) {
      const frac = total > 0 ? Math.min(1, doneUnits / total) : 0;
      const bar = total > 0 ? '[' + '#'.repeat(Math.round(frac * 24)).padEnd(24, '.') + '] ' : '';
      const pct = total > 0 ? `${(frac * 100).toFixed(1)}% ` : '';
      process.stderr.write(
        `\r${task} ${bar}${pct}${doneUnits}${total > 0 ? '/' + total : ''} ${unit} ${rate.toFixed(1)}/s ETA ${formatDuration(eta)}   ` +
          (final ? '\n' : ''),
      );
    } else {
      log.info(final ? `${task} done` : `${task} progress`, {
        task,
        done: doneUnits,
        total,
        unit,
        rate_per_s: Number(rate.toFixed(2)),
        elapsed_s: Number(elapsed.toFixed(2)),
        eta_s: Number.isFinite(eta) ? Number(eta.toFixed(1)) : null,
        ...fields,
      });
    }
  };
  return {
    tick(n = 1, fields) {
      doneUnits += n;
      render(false, fields);
    },
    set(d, fields) {
      doneUnits = d;
      render(false, fields);
    },
    done(fields) {
      render(true, fields);
      if (tty) log.info(`${task} done`, { done: doneUnits, unit, elapsed_s: Number(((performance.now() - start) / 1000).toFixed(2)), ...fields });
    },
  };
}
