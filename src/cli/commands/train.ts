// `gems train`: trains a model and writes checkpoints under <dataDir>/checkpoints/<run>/{last,best}.
//   --model sasrec   the SASRec-style ID baseline (calibration of the leave-one-out protocol)
//   --model gems     the GEMs generative model (three streams, indexer, SID decoder), three-stage training
import { join } from 'node:path';
import { writeFileSync, mkdirSync } from 'node:fs';
import { flagBool, flagNumber, flagString, UsageError } from '../args.js';
import type { Command } from '../command.js';
import { initBackend } from '../../compute/backend.js';
import { resolvedPaths } from '../../config/config.js';
import { loadSequences } from '../../eval/sequences.js';
import { SASREC_ML1M } from '../../model/sasrec.js';
import { DEFAULT_SASREC_TRAIN, trainSasRec } from '../../train/sasrecTrainer.js';

export const command: Command = {
  summary: 'train a model (--model sasrec|gems), checkpoint every epoch, resume with --resume',
  usage: `gems train --model sasrec|gems [--run NAME] [--resume] [--epochs N] [--patience N] [--max-minutes M]
           [--batch N] [--lr X] [--sequences-csv FILE]   (sasrec: data from the history store unless --sequences-csv)
  gems options: see \`gems train --model gems --help\` (preset, streams, fusion, stages)
  gems data: [--user-ids FROM..TO] (only these users, e.g. the training users of a store that also holds
           held-out ones) [--max-users N]
  gems lifecycle stream: --lifecycle-source memory|chunk-mean|interests (default: memory once \`gems train-compressor\`
           ran: the compressor's memories as of each target, T_mid = streams.tMid) [--compressor-version V];
           interests = one slot per coarse interest (first Semantic-ID code), most frequent first
  gems inputs: [--code-inputs 0|1|2] (events also enter by their first N Semantic-ID codes, tied to the decoder's code embeddings)
           [--lifecycle-codes] (with --lifecycle-source interests: each slot also carries its interest's level-0 code embedding)
           [--lifecycle-in-mid] (implies --lifecycle-codes; slots whose interest occurs in the mid-term stream are marked)
  gems objective: [--return-share q] (share of targets that are the next return of a dormant interest; 0 = next event)
           [--long-range-weight W] [--new-items] (every target an item new to the user, as served lists hold no seen items)
           [--interest-targets] (every target an engaged event of an established interest: skips and exploration are not positives)
           [--return-intent] (with --return-share: return targets get their own decoder intent; served as a reserved
           share of the list, serving.reserveReturns / gems eval --reserve-returns)
           [--return-new-items] (a return target is the returning interest's first new item)
           [--return-share-of-rows] (q is the share of the loss, not the chance of a row that has a return ahead)`,
  async run({ config, args, out, log }) {
    const kind = flagString(args, 'model', 'gems');
    const run = flagString(args, 'run', kind);
    const runDir = join(resolvedPaths(config).checkpoints, run);
    await initBackend();
    if (kind === 'sasrec') {
      const seqs = await loadSequences(config, args.flags['sequences-csv'] ? flagString(args, 'sequences-csv') : undefined);
      log.info('data', { users: seqs.userIds.length, items: seqs.numItems, events: seqs.items.length });
      const tc = {
        ...DEFAULT_SASREC_TRAIN,
        epochs: flagNumber(args, 'epochs', DEFAULT_SASREC_TRAIN.epochs),
        patience: flagNumber(args, 'patience', DEFAULT_SASREC_TRAIN.patience),
        maxMinutes: flagNumber(args, 'max-minutes', DEFAULT_SASREC_TRAIN.maxMinutes),
        batchSize: flagNumber(args, 'batch', DEFAULT_SASREC_TRAIN.batchSize),
        seed: config.seed,
        adam: { ...DEFAULT_SASREC_TRAIN.adam, lr: flagNumber(args, 'lr', DEFAULT_SASREC_TRAIN.adam.lr) },
      };
      const mc = {
        ...SASREC_ML1M,
        numItems: seqs.numItems,
        seed: config.seed,
        d: flagNumber(args, 'dim', SASREC_ML1M.d),
        layers: flagNumber(args, 'layers', SASREC_ML1M.layers),
        maxLen: flagNumber(args, 'max-len', SASREC_ML1M.maxLen),
        dropout: flagNumber(args, 'dropout', SASREC_ML1M.dropout),
      };
      const res = await trainSasRec(seqs, mc, tc, runDir, { resume: flagBool(args, 'resume') });
      mkdirSync(runDir, { recursive: true });
      writeFileSync(join(runDir, 'train-summary.json'), JSON.stringify(res, null, 2));
      out(JSON.stringify({ run, best_epoch: res.bestEpoch, epochs: res.epochsRun, checkpoint: res.checkpointDir, valid: res.valid?.filtered }));
      return 0;
    }
    if (kind === 'gems') {
      const { runGemsTrainCommand } = await import('../../train/gemsCommand.js');
      return runGemsTrainCommand({ config, args, out, log }, runDir);
    }
    throw new UsageError(`--model must be sasrec or gems, got '${kind}'`);
  },
};
