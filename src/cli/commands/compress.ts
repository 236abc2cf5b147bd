// `gems compress [--shard i/n] [--full] [--version V]`: one run of the lifecycle recompression job (jobs/nightly.ts).
// SIGTERM/SIGINT stop it at the next batch boundary with progress checkpointed; SIGKILL loses at most the batch in
// flight, which the next run redoes. Exit code 0 when the run completed, 3 when interrupted, 1 on error.
import { compressOnce, parseShard } from '../../../jobs/nightly.js';
import { flagBool, flagString, UsageError } from '../args.js';
import type { Command } from '../command.js';

export const command: Command = {
  summary: 'compress lifecycle histories into memories (incremental; --full recompresses all)',
  usage: [
    'usage: gems compress [--shard i/n] [--full] [--version V]',
    '  --shard i/n   only users with hash32(user_id) % n == i (run n of these in parallel, e.g. a Kubernetes Indexed Job)',
    '  --full        recompress every user from scratch (otherwise only changed users, folding in new events)',
    '  --version V   compressor version (default: the latest trained, see gems train-compressor)',
  ].join('\n'),
  async run({ config, args, log, out }) {
    let shard;
    try {
      shard = args.flags['shard'] !== undefined ? parseShard(flagString(args, 'shard')) : undefined;
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    const abort = new AbortController();
    const stop = (sig: string) => {
      log.warn(`${sig}: stopping after the current batch`);
      abort.abort();
    };
    const onTerm = () => stop('SIGTERM');
    const onInt = () => stop('SIGINT');
    process.once('SIGTERM', onTerm);
    process.once('SIGINT', onInt);
    try {
      const summary = await compressOnce(config, {
        shard,
        full: flagBool(args, 'full'),
        version: args.flags['version'] !== undefined ? flagString(args, 'version') : undefined,
        signal: abort.signal,
        log,
      });
      out(JSON.stringify(summary));
      return summary.status === 'completed' ? 0 : 3;
    } finally {
      process.off('SIGTERM', onTerm);
      process.off('SIGINT', onInt);
    }
  },
};
