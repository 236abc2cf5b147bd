// `gems generate lifelong`: synthetic lifelong histories (src/data/generator/) written through the history store,
// with the ground truth of each user's held-out targets in <dataDir>/generated/truth.jsonl.
import { resolve } from 'node:path';
import { flagBool, flagNumber, flagString, UsageError, type ParsedArgs } from '../args.js';
import type { Command } from '../command.js';
import { openHistoryStore } from '../../data/parquetHistoryStore.js';
import { LIFELONG_PRESETS, resolveLifelongOptions, type LifelongOptions } from '../../data/generator/lifelong.js';
import { GENERATOR_VERSION, generatedPaths, readManifest, sameOptions, writeLifelong } from '../../data/generator/write.js';

/** Command flag → generator option. */
const NUMERIC_FLAGS: Record<string, keyof LifelongOptions> = {
  users: 'users',
  scale: 'scale',
  'first-user': 'firstUserId',
  'mean-length': 'meanLength',
  'length-sigma': 'lengthSigma',
  'max-length': 'maxLength',
  'min-length': 'minLength',
  'fixed-length': 'fixedLength',
  items: 'items',
  clusters: 'clusters',
  targets: 'targetsPerUser',
  'dormant-share': 'dormantTargetShare',
  'explore-rate': 'exploreRate',
  'recall-rate': 'recallRate',
};

export function lifelongOptionsFromArgs(args: ParsedArgs, seed: number, tRecent: number, tMid: number): LifelongOptions {
  const overrides: Partial<LifelongOptions> = { seed, tRecent, tMid };
  for (const [flag, key] of Object.entries(NUMERIC_FLAGS)) {
    if (args.flags[flag] !== undefined) (overrides as Record<string, number>)[key] = flagNumber(args, flag);
  }
  const preset = args.flags['preset'] !== undefined ? flagString(args, 'preset') : undefined;
  try {
    return resolveLifelongOptions(preset, overrides);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

export const command: Command = {
  summary: 'generate synthetic lifelong histories (gems generate lifelong --users N --seed S [--scale F])',
  usage: `gems generate lifelong [--preset ${Object.keys(LIFELONG_PRESETS).join('|')}] [--users N] [--seed S] [--scale F]
        [--fixed-length N] [--mean-length N] [--max-length N] [--min-length N] [--length-sigma X]
        [--items N] [--clusters N] [--targets N] [--dormant-share P] [--explore-rate P] [--recall-rate P]
        [--first-user ID] [--batch-events N] [--out-truth FILE] [--force]
  Writes events and items to the history store of --data-dir, the held-out targets' ground truth to
  <dataDir>/generated/truth.jsonl (or --out-truth), users' interests to users.jsonl and a manifest.json.
  Dormancy of targets is measured against streams.tRecent / streams.tMid of the configuration.
  Re-running with the same options adds nothing (duplicates are dropped). A data dir that already holds other
  users in the same id range is refused unless --force. Items 1..--items are (re)written with the catalogue: give a
  generated set a data dir of its own.`,
  async run({ config, args, out, log }) {
    const kind = args.positional[0];
    if (kind !== 'lifelong') throw new UsageError(`gems generate: unknown generator '${kind ?? ''}' (known: lifelong)`);
    const o = lifelongOptionsFromArgs(args, config.seed, config.streams.tRecent, config.streams.tMid);
    const paths = generatedPaths(config.dataDir);
    const truthPath = args.flags['out-truth'] !== undefined ? resolve(flagString(args, 'out-truth')) : paths.truth;
    const batchEvents = flagNumber(args, 'batch-events', 1_000_000);
    if (!(batchEvents >= 1)) throw new UsageError('--batch-events must be ≥ 1');

    const store = await openHistoryStore(config);
    try {
      const previous = readManifest(paths.manifest);
      const sameRun = previous !== null && previous.version === GENERATOR_VERSION && sameOptions(previous.options, o);
      if (!sameRun && !flagBool(args, 'force')) {
        const ids = (await store.stats()).users > 0 ? await store.userIds() : new Int32Array(0);
        const last = o.firstUserId + o.users - 1;
        const clash = ids.find((u) => u >= o.firstUserId && u <= last);
        if (clash !== undefined) {
          throw new UsageError(
            `data dir ${config.dataDir} already holds user ${clash} (generating users ${o.firstUserId}..${last}` +
              `${previous ? ' with options different from its generated/manifest.json' : ''}); ` +
              `use another --data-dir, --first-user, or --force to add to it anyway`,
          );
        }
      }
      const r = await writeLifelong(store, o, { truthPath, usersPath: paths.users, manifestPath: paths.manifest, batchEvents, log });
      out(
        JSON.stringify({
          users: r.users,
          events: r.events,
          added: r.added,
          duplicates: r.duplicates,
          items: r.items,
          targets: r.targets,
          dormant_targets: r.dormantTargets,
          seconds: Number(r.seconds.toFixed(2)),
          events_per_s: r.eventsPerSecond,
          truth: truthPath,
        }),
      );
    } finally {
      await store.close();
    }
    return 0;
  },
};
