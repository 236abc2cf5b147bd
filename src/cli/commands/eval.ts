// `gems eval`: evaluates one or more checkpoints and writes JSON + Markdown under <dataDir>/runs/<name>/.
//   --protocol loo        leave-one-out (ML-1M, HSTU protocol): HR/NDCG@10/50/200, filtered and unfiltered
//   --protocol lifelong   generated set: Recall/NDCG@10/100/500 + HRecall@Level, split dormant/current
import { basename, dirname, join } from 'node:path';
import { existsSync } from 'node:fs';
import { flagBool, flagIdRange, flagList, flagNumber, flagString, UsageError } from '../args.js';
import type { Command } from '../command.js';
import { initBackend } from '../../compute/backend.js';
import { resolvedPaths } from '../../config/config.js';
import { generatedPaths } from '../../data/generator/write.js';
import { evaluateGemsLeaveOneOut, evaluateLifelong, type EvalAttention } from '../../eval/gemsEval.js';
import { evaluateLeaveOneOut, type Split } from '../../eval/leaveOneOut.js';
import { ML1M_REFERENCE, writeReport, type ResultRow } from '../../eval/report.js';
import { loadSequences } from '../../eval/sequences.js';
import { loadGems } from '../../model/recommend.js';
import { INDEXER_SELECTIONS, isIndexerSelection } from '../../model/gems.js';
import { fingerprint, readCheckpoint } from '../../train/checkpoint.js';
import { loadHistories, readTruth } from '../../train/gemsData.js';
import { checkpointLifecycleSummarizer } from '../../train/lifecycleSource.js';
import { loadSasRec, sasrecScorer } from '../../train/sasrecTrainer.js';
import type { History } from '../../data/events.js';
import { inIdRange } from '../../util/idRange.js';

export const command: Command = {
  summary: 'evaluate checkpoints (leave-one-out HR/NDCG filtered+unfiltered, or the lifelong Recall/NDCG/HRecall)',
  usage: `gems eval --checkpoint DIR [--checkpoint DIR …] | --run NAME [--run NAME …]
          [--protocol loo|lifelong] [--split test|valid] [--name REPORT] [--out DIR] [--max-users N] (lifelong: the
          first N users with truth targets) [--user-ids FROM..TO] (only these users, e.g. the held-out ones)
          [--sequences-csv FILE] (sasrec: read sequences from this CSV instead of the history store)
          [--top-k N] (GEMs mid-term indexer top-k; 0 = full attention; default: what serving uses)
          [--indexer-selection shared|request|user|query] (one top-k set per user chosen by the first decoder layer
          at the first level for every layer, as served (default); one per user and layer; one per user and level;
          or each beam its own)
          [--unfiltered] (lifelong: keep the user's seen items in the ranking; default filters them, as serving)
          [--reserve-returns ρ] (return-intent models: share of every list filled by a search for returning interests)
          [--renormalize [true|false]] (GEMs beam: every code level conditioned on the item being admissible, i.e.
          unseen; default serving.renormalize)
  A run name resolves to <dataDir>/checkpoints/<run>/best. Results: <out>/<name>.json and .md
  (default out: <dataDir>/runs/<first run name>).`,
  async run({ config, args, out, log }) {
    const paths = resolvedPaths(config);
    const dirs = [...flagList(args, 'checkpoint'), ...flagList(args, 'run').map((r) => join(paths.checkpoints, r, 'best'))];
    if (dirs.length === 0) throw new UsageError('give --checkpoint DIR or --run NAME');
    for (const d of dirs) if (!existsSync(join(d, 'meta.json'))) throw new UsageError(`${d} is not a checkpoint directory`);
    const split = flagString(args, 'split', 'test') as Split;
    if (split !== 'test' && split !== 'valid') throw new UsageError(`--split must be test or valid`);
    const protocol = flagString(args, 'protocol', existsSync(generatedPaths(config.dataDir).truth) ? 'lifelong' : 'loo');
    const maxUsers = args.flags['max-users'] ? flagNumber(args, 'max-users') : undefined;
    const userRange = flagIdRange(args, 'user-ids');
    const filterSeen = !flagBool(args, 'unfiltered');
    // Mid-term attention of the GEMs rows: --top-k N (0 = full attention; default: what serving uses) and
    // --indexer-selection shared|request|user|query (default shared, as served).
    const attention: EvalAttention = {};
    if (args.flags['top-k'] !== undefined) attention.topK = flagNumber(args, 'top-k');
    // --reserve-returns ρ: a return-intent model's list policy (share of the list for returning interests).
    if (args.flags['reserve-returns'] !== undefined) attention.reserveReturns = flagNumber(args, 'reserve-returns');
    // --renormalize [true|false]: condition every code level on the item being admissible (default: as served).
    attention.renormalize = flagBool(args, 'renormalize', config.serving.renormalize);
    if (args.flags['indexer-selection'] !== undefined) {
      const sel = flagString(args, 'indexer-selection');
      if (!isIndexerSelection(sel)) throw new UsageError(`--indexer-selection must be ${INDEXER_SELECTIONS.join('|')}, got '${sel}'`);
      attention.selection = sel;
    }
    await initBackend();
    const rows: ResultRow[] = [];
    const details: Record<string, unknown> = { checkpoints: dirs, split, protocol, ...(protocol === 'lifelong' ? { filterSeen } : {}) };
    // Lifelong: only the users with truth targets are read (--user-ids FROM..TO: those in the range; --max-users N:
    // the first N of them, by id), so a data dir whose store also holds the training users evaluates the held-out.
    let truth = protocol === 'lifelong' ? readTruth(generatedPaths(config.dataDir).truth) : null;
    let targetUsers: number[] | undefined;
    if (truth) {
      targetUsers = [...new Set(truth.map((t) => t.userId))].filter((u) => inIdRange(u, userRange)).sort((a, b) => a - b).slice(0, maxUsers);
      if (userRange && targetUsers.length === 0) throw new UsageError(`no truth targets for users ${userRange.from}..${userRange.to} in ${generatedPaths(config.dataDir).truth}`);
      const keep = new Set(targetUsers);
      truth = truth.filter((t) => keep.has(t.userId));
    }
    let histories: History[] | null = null;
    const getHistories = async () => (histories ??= await loadHistories(config, targetUsers ? { userIds: targetUsers } : { maxUsers, userRange }));
    for (const dir of dirs) {
      const meta = readCheckpoint(dir).meta;
      const label = flagList(args, 'label')[dirs.indexOf(dir)] ?? `${meta.kind} ${basename(dirname(dir))}`;
      if (meta.kind === 'sasrec') {
        if (protocol !== 'loo') throw new UsageError('the SASRec baseline is evaluated with --protocol loo');
        const seqs = await loadSequences(config, args.flags['sequences-csv'] ? flagString(args, 'sequences-csv') : undefined);
        const { model, indexToItemId } = loadSasRec(dir);
        if (indexToItemId.length !== seqs.indexToItemId.length || indexToItemId.some((id, i) => id !== seqs.indexToItemId[i])) {
          throw new Error(`${dir}: the checkpoint's item vocabulary differs from the evaluation data's (different data set?)`);
        }
        if (fingerprint(seqs.offsets, seqs.items) !== meta.dataFingerprint) log.warn('evaluation data differs from the training data (fingerprint)', { checkpoint: meta.dataFingerprint });
        const res = await evaluateLeaveOneOut(seqs, sasrecScorer(model), { split });
        rows.push({ name: `${label} (filtered)`, metrics: res.filtered }, { name: `${label} (unfiltered)`, metrics: res.unfiltered });
        details[dir] = { seconds: res.seconds, dataFingerprint: meta.dataFingerprint, train: meta.train };
        model.params.dispose();
      } else if (meta.kind === 'gems') {
        // Memory-trained checkpoints: memories computed from the events as of each target (never the stored ones,
        // which have seen the targets), with the compressor the checkpoint carries.
        const loaded = loadGems(dir, checkpointLifecycleSummarizer(dir));
        const hs = await getHistories();
        if (protocol === 'loo') {
          const res = evaluateGemsLeaveOneOut(loaded, hs, split, [10, 50, 200], { batchSize: flagNumber(args, 'batch', 8), ...attention });
          rows.push({ name: `${label} (filtered)`, metrics: res.filtered }, { name: `${label} (unfiltered)`, metrics: res.unfiltered });
          details[dir] = { seconds: res.seconds, modelConfig: meta.modelConfig };
        } else {
          const byUser = new Map(hs.map((h) => [h.userId, h] as const));
          const res = evaluateLifelong(loaded, byUser, truth!, [10, 100, 500], { batchSize: flagNumber(args, 'batch', 8), filterSeen, ...attention });
          rows.push({ name: `${label} all targets`, metrics: res.overall }, { name: `${label} dormant`, metrics: res.dormant }, { name: `${label} current`, metrics: res.current });
          details[dir] = { seconds: res.seconds, modelConfig: meta.modelConfig };
        }
        loaded.model.dispose();
      } else throw new UsageError(`${dir}: unknown model kind '${meta.kind}'`);
      log.info('evaluated', { checkpoint: dir, rows: rows.slice(-3) });
    }
    const allRows = protocol === 'loo' ? [...rows, ...ML1M_REFERENCE] : rows;
    const name = flagString(args, 'name', `eval-${protocol}-${split}`);
    const outDir = flagString(args, 'out', join(paths.runs, basename(dirname(dirs[0]!))));
    const columns = protocol === 'loo' ? ['users', 'HR@10', 'NDCG@10', 'HR@50', 'NDCG@50', 'HR@200', 'NDCG@200'] : undefined;
    const files = writeReport(
      outDir,
      name,
      {
        title: `gems eval (${protocol}, ${split})`,
        command: `gems ${process.argv.slice(2).join(' ')}`,
        protocol:
          protocol === 'loo'
            ? `Leave-one-out (last item = test, second-to-last = validation), ranking over all items; "filtered" removes the items of the input history from the ranking (HSTU default), "unfiltered" keeps them. Published rows: generative-recommenders README (filtered protocol).${attention.renormalize ? ' Filtered beam scores conditioned on an admissible item at every code level (--renormalize).' : ''}`
            : `Generated lifelong set: per truth target, input = the history before it; Recall/NDCG@K over the beam list (beam width = max K)${filterSeen ? ', the user\'s seen items filtered (as serving; the generator\'s targets are unseen items)' : ', seen items NOT filtered (--unfiltered)'}; HRecall@Lℓ@K = share of targets whose first ℓ codes appear among the first K beams. Split by the generator's dormant flag.${attention.reserveReturns ? ` List policy: a share ${attention.reserveReturns} of every list prefix holds the return-intent search's items (--reserve-returns).` : ''}${attention.renormalize ? ' Beam scores conditioned on an admissible (unseen) item at every code level (--renormalize).' : ''}`,
        rows: allRows,
        details,
        createdAt: new Date().toISOString(),
      },
      columns,
    );
    for (const r of allRows) out(JSON.stringify({ model: r.name, ...r.metrics }));
    out(JSON.stringify({ json: files.json, markdown: files.md }));
    return 0;
  },
};
