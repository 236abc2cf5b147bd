// `gems report`: the evaluation report (report/index.md + charts as SVG/PNG + chart data as CSV/JSON) from the
// results the other commands wrote; with --rerun it first re-measures them (evaluations, benchmarks, attention).
import { isAbsolute, join, resolve } from 'node:path';
import { flagBool, flagList, flagNumber, flagString, UsageError } from '../args.js';
import type { Command } from '../command.js';
import { initBackend } from '../../compute/backend.js';
import { measureAttentionShare, writeAttentionShare } from '../../report/attention.js';
import { generateReport } from '../../report/generate.js';
import { BENCHES, planSteps, REPO_ROOT, runStep } from '../../report/rerun.js';
import { checkpointsOf, collectInputs } from '../../report/sources.js';

const PARTS = ['eval', 'bench', 'attention'];

export const command: Command = {
  summary: 'write the evaluation report (report/index.md + charts) from cached results; --rerun re-measures them first',
  usage: `gems report [--out DIR] [--rerun | --rerun-missing] [--only eval,bench,attention] [--bench NAME …]
             [--also DATA_DIR …] [--bench-dir DIR] [--attention-users N] [--eval-max-users N]
  Reads: <dataDir>/runs/**.json (gems eval), <dataDir>/checkpoints/<run>/train-summary.json (gems train),
         bench/results/<name>.json (npm run bench), <dataDir>/runs/report/attention-share.json.
  --rerun          re-run \`gems eval\` for every checkpoint, the benchmarks (with the arguments of their last
                   result) and the attention-share measurement, then write the report (training is not rerun)
  --rerun-missing  the same, only for results that do not exist yet
  --eval-max-users N   rerun evaluations on the first N users only (quick look; the command is recorded)
  --also DIR       another data dir to read (e.g. the ML-1M one beside the generated lifelong one)
  Default out: ./report`,
  async run({ config, args, out, log }) {
    const outDir = resolve(flagString(args, 'out', 'report'));
    const dataDirs = [config.dataDir, ...flagList(args, 'also').map((d) => resolve(d))];
    const benchDirFlag = flagString(args, 'bench-dir', join(REPO_ROOT, 'bench', 'results'));
    const benchDir = isAbsolute(benchDirFlag) ? benchDirFlag : resolve(benchDirFlag);
    const rerun = flagBool(args, 'rerun');
    const missingOnly = flagBool(args, 'rerun-missing');
    const only = flagList(args, 'only').flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean);
    for (const p of only) if (!PARTS.includes(p)) throw new UsageError(`--only: unknown part '${p}' (${PARTS.join(', ')})`);
    const parts = new Set(only.length ? only : PARTS);
    const benches = flagList(args, 'bench').flatMap((s) => s.split(','));
    for (const b of benches) if (!BENCHES.includes(b)) log.warn('benchmark not among the report\'s known ones; running it anyway', { bench: b });
    const backend = await initBackend();
    const commandLine = `gems ${process.argv.slice(2).join(' ')}`.trim();

    if (rerun || missingOnly) {
      let inputs = collectInputs({ dataDirs, benchDir });
      const evalArgs = args.flags['eval-max-users'] ? ['--max-users', String(flagNumber(args, 'eval-max-users'))] : [];
      const steps = planSteps({ dataDirs, benches: benches.length ? benches : BENCHES, inputs, missingOnly, evalArgs }).filter((s) => parts.has(s.what));
      const failed: string[] = [];
      for (const [i, step] of steps.entries()) {
        log.info('rerun', { step: i + 1, of: steps.length, command: step.display });
        const code = await runStep(step);
        if (code !== 0) {
          failed.push(step.display);
          log.error('rerun step failed; the report keeps the previous result (if any)', { command: step.display, exit: code });
        }
      }
      if (parts.has('attention')) {
        inputs = collectInputs({ dataDirs, benchDir });
        for (const dataDir of dataDirs) {
          const gems = checkpointsOf(dataDir).filter((c) => c.kind === 'gems');
          const have = inputs.attention && inputs.attention.file.startsWith(dataDir);
          if (gems.length === 0 || (missingOnly && have)) continue;
          const a = await measureAttentionShare(
            { ...config, dataDir },
            gems.map((c) => c.dir),
            { users: flagNumber(args, 'attention-users', 64), batchSize: 8, command: `gems report --rerun --only attention --attention-users ${flagNumber(args, 'attention-users', 64)}`, backend },
          );
          log.info('attention share written', { file: writeAttentionShare(a) });
        }
      }
      if (failed.length) out(JSON.stringify({ failed }));
    }

    const inputs = collectInputs({ dataDirs, benchDir });
    for (const s of inputs.skipped) log.warn('input skipped', s);
    const res = await generateReport(inputs, { outDir, command: commandLine, seed: config.seed, backend });
    out(JSON.stringify({ report: res.index, charts: res.charts.length, not_measured: res.missing }));
    return 0;
  },
};
