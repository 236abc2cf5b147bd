// `gems recommend --user U -k K`: loads a checkpoint, reads the user's history from the store as of now, and prints
// the recommended items (with titles where the store has them), their scores and Semantic IDs, and each stream's
// share of the decoder's cross-attention output.
import { join } from 'node:path';
import { flagBool, flagNumber, flagString, UsageError } from '../args.js';
import type { Command } from '../command.js';
import { initBackend } from '../../compute/backend.js';
import { resolvedPaths } from '../../config/config.js';
import { openHistoryStore } from '../../data/parquetHistoryStore.js';
import { loadGems, recommend, servedReturnShare } from '../../model/recommend.js';
import { readCheckpoint } from '../../train/checkpoint.js';
import { checkpointLifecycleSummarizer } from '../../train/lifecycleSource.js';
import { loadSasRec } from '../../train/sasrecTrainer.js';

export const command: Command = {
  summary: 'recommend items for a user from a trained checkpoint (titles, scores, SIDs, stream attention)',
  usage: `gems recommend --user U [-k K | --k K] [--run NAME | --checkpoint DIR] [--beam N] [--exclude-seen] [--renormalize [true|false]] [--json]
  Default checkpoint: <dataDir>/checkpoints/gems/best.`,
  async run({ config, args, out }) {
    const user = flagNumber(args, 'user');
    // `-k K` (single dash) reaches us as two positionals; `--k K` as a flag.
    const dashK = args.positional.indexOf('-k');
    const k = dashK >= 0 ? Number(args.positional[dashK + 1]) : flagNumber(args, 'k', 10);
    if (!Number.isInteger(k) || k < 1 || k > config.serving.maxK) throw new UsageError(`-k must be an integer in 1..${config.serving.maxK}`);
    const dir = args.flags['checkpoint'] ? flagString(args, 'checkpoint') : join(resolvedPaths(config).checkpoints, flagString(args, 'run', 'gems'), 'best');
    await initBackend();
    const store = await openHistoryStore(config, { readOnly: true });
    try {
      const history = await store.userHistory(user);
      if (history.length === 0) throw new UsageError(`user ${user} has no history in ${config.dataDir}`);
      const cat = await store.items();
      const titles = new Map<number, string>();
      for (let i = 0; i < cat.length; i++) titles.set(cat.itemId[i]!, cat.titles[i]!);
      const kind = readCheckpoint(dir).meta.kind;
      let rows: { item: number; score: number; sid?: number[] }[];
      let mass: Record<string, number> = {};
      if (kind === 'gems') {
        const loaded = loadGems(dir, checkpointLifecycleSummarizer(dir));
        const [r] = recommend(loaded, [history], k, {
          beam: flagNumber(args, 'beam', k),
          excludeSeen: flagBool(args, 'exclude-seen'),
          reserveReturns: servedReturnShare(loaded, config.serving.reserveReturns),
          renormalize: flagBool(args, 'renormalize', config.serving.renormalize),
        });
        const W = loaded.model.W;
        rows = Array.from(r!.items, (item, i) => ({ item, score: r!.scores[i]!, sid: Array.from(r!.sids.subarray(i * W, i * W + W)) }));
        mass = r!.attentionMass as Record<string, number>;
      } else if (kind === 'sasrec') {
        const { model, indexToItemId } = loadSasRec(dir);
        const index = new Map<number, number>();
        indexToItemId.forEach((id, i) => i > 0 && index.set(id, i));
        const L = model.cfg.maxLen;
        const seq = new Int32Array(L);
        const idx = Array.from(history.itemId, (id) => index.get(id) ?? 0).filter((x) => x > 0);
        seq.set(idx.slice(-L), L - Math.min(L, idx.length));
        const scores = model.scoreLast(seq, 1);
        const seen = new Set(idx);
        const order = Array.from({ length: scores.length - 1 }, (_, i) => i + 1)
          .filter((i) => !flagBool(args, 'exclude-seen') || !seen.has(i))
          .sort((a, b) => scores[b]! - scores[a]!)
          .slice(0, k);
        rows = order.map((i) => ({ item: indexToItemId[i]!, score: scores[i]! }));
      } else throw new UsageError(`${dir}: unknown model kind '${kind}'`);
      if (flagBool(args, 'json')) {
        out(JSON.stringify({ user, checkpoint: dir, history: history.length, items: rows.map((r) => ({ ...r, title: titles.get(r.item) ?? null })), attentionMass: mass }));
      } else {
        out(`user ${user}: ${history.length} events; checkpoint ${dir}`);
        if (Object.keys(mass).length) out(`stream attention: ${Object.entries(mass).map(([s, m]) => `${s} ${(m * 100).toFixed(1)}%`).join(', ')}`);
        rows.forEach((r, i) => out(`${String(i + 1).padStart(3)}. ${String(r.item).padStart(7)}  ${r.score.toFixed(3).padStart(8)}  ${r.sid ? `[${r.sid.join(',')}]`.padEnd(16) : ''} ${titles.get(r.item) ?? ''}`));
      }
      return 0;
    } finally {
      await store.close();
    }
  },
};
