// `gems generate lifelong`: synthetic lifelong histories (src/data/generator/) written through the history store,
// with the ground truth of each user's held-out targets in <dataDir>/generated/truth.jsonl.
// `gems generate ceiling`: the generator's own ranking of those targets (src/data/generator/ceiling.ts).
import { join, resolve } from 'node:path';
import { flagBool, flagIdRange, flagNumber, flagString, UsageError, type ParsedArgs } from '../args.js';
import type { Command } from '../command.js';
import { openHistoryStore } from '../../data/parquetHistoryStore.js';
import { LIFELONG_PRESETS, resolveLifelongOptions, type LifelongOptions } from '../../data/generator/lifelong.js';
import { GENERATOR_VERSION, generatedPaths, readManifest, readTruth, sameOptions, userRangeOf, writeLifelong } from '../../data/generator/write.js';
import { buildCatalogue, type Catalogue } from '../../data/generator/catalogue.js';
import { CEILING_VIEWS, evaluateCeiling, FOCUS_VIEWS } from '../../data/generator/ceiling.js';
import { resolvedPaths, type GemsConfig } from '../../config/config.js';
import { writeReport, type ResultRow } from '../../eval/report.js';
import { inIdRange } from '../../util/idRange.js';
import { progress, type Logger } from '../../util/log.js';

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
  summary: 'generate synthetic lifelong histories (gems generate lifelong --users N --seed S [--scale F]); gems generate ceiling',
  usage: `gems generate lifelong [--preset ${Object.keys(LIFELONG_PRESETS).join('|')}] [--users N] [--seed S] [--scale F]
        [--fixed-length N] [--mean-length N] [--max-length N] [--min-length N] [--length-sigma X]
        [--items N] [--clusters N] [--targets N] [--dormant-share P] [--explore-rate P] [--recall-rate P]
        [--first-user ID] [--batch-events N] [--out-truth FILE] [--force]
  Writes events and items to the history store of --data-dir, the held-out targets' ground truth to
  <dataDir>/generated/truth.jsonl (or --out-truth), users' interests to users.jsonl and a manifest.json.
  Dormancy of targets is measured against streams.tRecent / streams.tMid of the configuration.
  Re-running with the same options adds nothing (duplicates are dropped). A data dir that already holds other
  users in the same id range is refused unless --force. Items 1..--items are (re)written with the catalogue: give a
  generated set a data dir of its own.
gems generate ceiling [--user-ids FROM..TO] [--name REPORT] [--out DIR]
  Recall/NDCG@10/100/500 of the generator's own ranking of the truth targets (items by the probability it drew
  them with), split dormant/current, in two views: "full" knows the user's interests (what the whole history
  shows), "blind" guesses returning interests from global popularity (what a model without the lifecycle part
  can know); each with the session's focus "exact" (the generator's draw) or "observed" (from the last session's
  events). Users are regenerated from generated/manifest.json. Report: <out>/<name>.json and .md (default
  <dataDir>/runs/generator-ceiling/ceiling).`,
  async run({ config, args, out, log }) {
    const kind = args.positional[0];
    if (kind === 'ceiling') return ceiling(config, args, out, log);
    if (kind !== 'lifelong') throw new UsageError(`gems generate: unknown generator '${kind ?? ''}' (known: lifelong, ceiling)`);
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

async function ceiling(config: GemsConfig, args: ParsedArgs, out: (line: string) => void, log: Logger): Promise<number> {
  const paths = generatedPaths(config.dataDir);
  const manifest = readManifest(paths.manifest);
  if (!manifest) throw new UsageError(`${paths.manifest} does not exist: run \`gems generate lifelong\` first`);
  if (manifest.version !== GENERATOR_VERSION) throw new UsageError(`${paths.manifest}: written by generator version ${manifest.version}, this is version ${GENERATOR_VERSION}: its users cannot be regenerated`);
  // The latest run first: a user regenerated by a later run has that run's options.
  const runs = [manifest.options, ...(manifest.earlier_runs ?? []).map((r) => r.options)];
  const optionsOf = (userId: number) => {
    const o = runs.find((r) => inIdRange(userId, userRangeOf(r)));
    if (!o) throw new Error(`${paths.manifest}: no generator run wrote user ${userId}`);
    return o;
  };
  const catalogues = new Map<string, Catalogue>();
  const catOf = (o: LifelongOptions) => {
    const key = JSON.stringify([o.seed, o.items, o.clusters, o.itemZipf, o.clusterZipf]);
    let cat = catalogues.get(key);
    if (!cat) catalogues.set(key, (cat = buildCatalogue(o)));
    return cat;
  };
  const range = flagIdRange(args, 'user-ids');
  const truth = readTruth(paths.truth).filter((t) => inIdRange(t.user_id, range));
  if (truth.length === 0) throw new UsageError(`no truth targets${range ? ` for users ${range.from}..${range.to}` : ''} in ${paths.truth}`);
  const users = new Set(truth.map((t) => t.user_id)).size;
  const rankings = FOCUS_VIEWS.flatMap((focus) => CEILING_VIEWS.map((view) => ({ view, focus })));
  const prog = progress(log, 'generator ceiling', users, 'users');
  const results = evaluateCeiling(catOf, optionsOf, truth, rankings, { onUser: () => prog.tick() });
  prog.done();
  const rows: ResultRow[] = rankings.flatMap(({ view, focus }, i) => {
    const r = results[i]!;
    const label = `generator ranking, ${view === 'full' ? 'full history' : 'blind to the lifecycle part'}, ${focus} focus`;
    return [
      { name: `${label}: all targets`, metrics: r.overall },
      { name: `${label}: dormant`, metrics: r.dormant },
      { name: `${label}: current`, metrics: r.current },
    ];
  });
  const name = flagString(args, 'name', 'ceiling');
  const outDir = flagString(args, 'out', join(resolvedPaths(config).runs, 'generator-ceiling'));
  const files = writeReport(outDir, name, {
    title: 'gems generate ceiling',
    command: `gems ${process.argv.slice(2).join(' ')}`,
    protocol:
      'Per truth target, items ranked by the probability the generator drew the target with (src/data/generator/ceiling.ts): "full" knows the interests the whole history shows; "blind" guesses returning interests from global cluster popularity; the current session\'s focus is the generator\'s draw ("exact", which no model sees) or what the last session\'s events show ("observed"). Recall/NDCG@K of that ranking, split by the generator\'s dormant flag.',
    rows,
    details: { users, targets: truth.length, range: range ?? null },
    createdAt: new Date().toISOString(),
  });
  for (const r of rows) out(JSON.stringify({ model: r.name, ...r.metrics }));
  out(JSON.stringify({ json: files.json, markdown: files.md }));
  return 0;
}
