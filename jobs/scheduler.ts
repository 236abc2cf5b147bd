// The long-running scheduler behind `gems jobs`: runs the lifecycle recompression (jobs/nightly.ts) on the cron
// schedule config.lifecycle.cron (default '0 2 * * *') in config.lifecycle.timezone. Runs never overlap in this
// process (noOverlap) nor across processes (the job's lock file); a run that fails is logged and the schedule goes on.
import cron from 'node-cron';
import type { GemsConfig } from '../src/config/config.js';
import { logger, type Logger } from '../src/util/log.js';
import { LockHeldError } from './jobLock.js';
import { compressOnce, type CompressOnceOptions, type RunSummary } from './nightly.js';

export interface Scheduler {
  /** Next scheduled run. */
  nextRun(): Date | null;
  /** Runs the job now (as the schedule would). */
  runNow(): Promise<RunSummary | null>;
  /** Stops scheduling and waits for a run in progress to stop at its next batch boundary. */
  stop(): Promise<void>;
}

export function startScheduler(
  config: GemsConfig,
  opts: { log?: Logger; job?: (signal: AbortSignal) => Promise<RunSummary>; compress?: CompressOnceOptions } = {},
): Scheduler {
  const log = opts.log ?? logger('jobs');
  const { cron: expr, timezone } = config.lifecycle;
  if (!cron.validate(expr)) throw new Error(`invalid config lifecycle.cron: '${expr}' is not a cron expression`);
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: timezone });
  } catch {
    throw new Error(`invalid config lifecycle.timezone: '${timezone}' is not an IANA time zone`);
  }
  const abort = new AbortController();
  let running: Promise<RunSummary | null> | null = null;
  const job = opts.job ?? ((signal: AbortSignal) => compressOnce(config, { ...opts.compress, signal, log }));

  const runOnce = (): Promise<RunSummary | null> => {
    if (running) {
      log.warn('previous compression run still in progress; skipping this trigger');
      return running;
    }
    running = (async () => {
      try {
        log.info('scheduled compression run starting');
        return await job(abort.signal);
      } catch (e) {
        if (e instanceof LockHeldError) log.warn('compression skipped: another job holds the lock', { error: e.message });
        else log.error('compression run failed', { error: (e as Error).message, stack: (e as Error).stack });
        return null;
      } finally {
        running = null;
      }
    })();
    return running;
  };

  const task = cron.schedule(expr, () => runOnce(), { timezone, name: 'lifecycle-compression', noOverlap: true });
  log.info('scheduler started', { cron: expr, timezone, next_run: task.getNextRun()?.toISOString() ?? null });
  return {
    nextRun: () => task.getNextRun(),
    runNow: runOnce,
    async stop() {
      await task.stop();
      await task.destroy();
      abort.abort();
      if (running) await running;
    },
  };
}
