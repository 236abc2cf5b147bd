// `gems jobs`: the long-running process that runs the nightly lifecycle recompression on config.lifecycle.cron
// (time zone config.lifecycle.timezone). `--run-now` also runs it once at start. SIGTERM/SIGINT stop the schedule
// and let a run in progress checkpoint at its next batch boundary.
import { startScheduler } from '../../../jobs/scheduler.js';
import { flagBool } from '../args.js';
import type { Command } from '../command.js';

export const command: Command = {
  summary: 'run the scheduled jobs (nightly lifecycle recompression with node-cron)',
  usage: 'usage: gems jobs [--run-now]   (schedule: --set lifecycle.cron="0 2 * * *" --set lifecycle.timezone=UTC)',
  async run({ config, args, log }) {
    const scheduler = startScheduler(config, { log });
    if (flagBool(args, 'run-now')) void scheduler.runNow();
    await new Promise<void>((resolve) => {
      const stop = (sig: string) => {
        log.info(`${sig}: stopping the scheduler`);
        void scheduler.stop().then(resolve);
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
    });
    return 0;
  },
};
