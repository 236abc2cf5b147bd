// `gems train-compressor`: trains the lifecycle compressor on the history store's lifecycle segments with the
// reconstruction loss (src/lifecycle/trainCompressor.ts), reports it against the mean-embedding baseline, and saves
// the weights as a new compressor version (the next `gems compress` then recompresses every user).
import { initBackend } from '../../compute/backend.js';
import { openHistoryStore } from '../../data/parquetHistoryStore.js';
import { saveCompressor } from '../../lifecycle/compressor.js';
import { DEFAULT_TRAIN_OPTIONS, trainCompressor } from '../../lifecycle/trainCompressor.js';
import { flagNumber } from '../args.js';
import type { Command } from '../command.js';

const d = DEFAULT_TRAIN_OPTIONS;
export const command: Command = {
  summary: 'train the lifecycle (QLA) compressor with a reconstruction loss; saves a new compressor version',
  usage: [
    'usage: gems train-compressor [--steps N] [--batch-users N] [--events-per-user L] [--targets N] [--negatives N] [--lr X]',
    `  defaults: --steps ${d.steps} --batch-users ${d.batchUsers} --events-per-user ${d.eventsPerUser} --targets ${d.targetsPerUser} ` +
      `--negatives ${d.negatives} --lr ${d.learningRate} --eval-users ${d.evalUsers} --recall-k ${d.recallK}`,
  ].join('\n'),
  async run({ config, args, log, out }) {
    await initBackend();
    const store = await openHistoryStore(config, { readOnly: true });
    try {
      const { weights, report } = await trainCompressor(config, store, log, {
        steps: flagNumber(args, 'steps', d.steps),
        batchUsers: flagNumber(args, 'batch-users', d.batchUsers),
        eventsPerUser: flagNumber(args, 'events-per-user', d.eventsPerUser),
        targetsPerUser: flagNumber(args, 'targets', d.targetsPerUser),
        negatives: flagNumber(args, 'negatives', d.negatives),
        learningRate: flagNumber(args, 'lr', d.learningRate),
        evalUsers: flagNumber(args, 'eval-users', d.evalUsers),
        recallK: flagNumber(args, 'recall-k', d.recallK),
        seed: config.seed,
      });
      const version = saveCompressor(config, weights, report as unknown as Record<string, unknown>);
      // The version is a hash of weights + shapes only; the compute path is logged because another path (plain wasm vs
      // wasm+native, other matMul kernels) rounds differently and so yields another version for the same seed.
      log.info('compressor saved', { version, seed: report.seed, compute: report.compute });
      const e = report.eval;
      out(`compressor ${version}: trained ${report.steps} steps on ${report.trainUsers} users, ${report.items} items (${report.seconds} s; seed ${report.seed}, ${report.compute})`);
      out(`held-out reconstruction over ${e.compressor.users} users / ${e.compressor.events} lifecycle events (full catalogue):`);
      out(`  QLA memory (${config.lifecycle.slots} slots)   NLL ${e.compressor.nll}   recall@${e.k} ${e.compressor.recallAtK}`);
      out(`  mean-embedding baseline   NLL ${e.baseline.nll}   recall@${e.k} ${e.baseline.recallAtK}`);
      out(`  item popularity           NLL ${e.popularity.nll}   recall@${e.k} ${e.popularity.recallAtK}`);
      out(`  uniform                   NLL ${e.uniformNll}`);
      out(JSON.stringify({ version, ...report, lossCurve: undefined }));
    } finally {
      await store.close();
    }
  },
};
