// Measures the share of the decoder's cross-attention output each stream contributes (the paper's Figure 4 idea),
// per GEMs checkpoint: recommend() with the per-stream mass the model reports at the first code level, averaged over
// the first `users` users of the history store. Variants with one cross-attention over a concatenated memory
// ('concat', 'shared') have no per-stream output to measure; they are recorded with the reason.
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { GemsConfig } from '../config/config.js';
import type { History } from '../data/events.js';
import type { StreamName } from '../model/gems.js';
import { logger, progress } from '../util/log.js';
import { attentionSharePath, type AttentionShare } from './sources.js';

const log = logger('report.attention');

export interface AttentionOptions {
  users: number;
  batchSize: number;
  command: string;
  backend: string;
}

export async function measureAttentionShare(config: GemsConfig, checkpoints: string[], opts: AttentionOptions): Promise<AttentionShare> {
  const { loadGems, recommend } = await import('../model/recommend.js');
  const { loadHistories } = await import('../train/gemsData.js');
  let histories: History[] | null = null;
  const variants: AttentionShare['variants'] = [];
  for (const dir of checkpoints) {
    const loaded = loadGems(dir);
    const cfg = loaded.model.cfg;
    const run = basename(dirname(dir));
    try {
      if (cfg.fusion !== 'sum' && cfg.fusion !== 'gated') {
        variants.push({ checkpoint: dir, run, fusion: cfg.fusion, streams: { ...cfg.streams }, users: 0, share: null, reason: 'one cross-attention over the concatenated streams: no per-stream output to measure' });
        continue;
      }
      histories ??= await loadHistories(config, { maxUsers: opts.users });
      const sums: Partial<Record<StreamName, number>> = {};
      let n = 0;
      const prog = progress(log, `attention share ${run}`, histories.length, 'users');
      for (let i = 0; i < histories.length; i += opts.batchSize) {
        const part = histories.slice(i, i + opts.batchSize);
        for (const r of recommend(loaded, part, 10)) {
          if (Object.keys(r.attentionMass).length === 0) continue;
          n++;
          for (const [s, v] of Object.entries(r.attentionMass)) sums[s as StreamName] = (sums[s as StreamName] ?? 0) + v;
        }
        prog.tick(part.length);
      }
      prog.done();
      const share: Partial<Record<StreamName, number>> = {};
      for (const [s, v] of Object.entries(sums)) share[s as StreamName] = n ? v / n : 0;
      variants.push({ checkpoint: dir, run, fusion: cfg.fusion, streams: { ...cfg.streams }, users: n, share: n ? share : null, reason: n ? undefined : 'the model returned no attention mass' });
    } finally {
      loaded.model.dispose();
    }
  }
  return { file: attentionSharePath(config.dataDir), command: opts.command, createdAt: new Date().toISOString(), backend: opts.backend, seed: config.seed, variants };
}

/** Writes the measurement atomically (a crash never leaves half a file for the report to read). */
export function writeAttentionShare(a: AttentionShare): string {
  mkdirSync(dirname(a.file), { recursive: true });
  const tmp = `${a.file}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(a, null, 2) + '\n');
  renameSync(tmp, a.file);
  return a.file;
}
