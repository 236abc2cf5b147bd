// `gems report --rerun`: re-measures what can be measured from what exists — `gems eval` for every checkpoint in
// the data dirs, the benchmarks (with the arguments their last result recorded), and the attention share — each
// evaluation and benchmark in its own child process (the same command a reader would type), then the report reads
// the fresh files. Training is not rerun (hours on this machine); the report lists its commands where missing.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { logger } from '../util/log.js';
import { checkpointsOf, type ReportInputs } from './sources.js';

const log = logger('report.rerun');

/** Repository root (src/report/ → ../..). */
export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));

export const BENCHES = ['kernels', 'tokenize', 'history-scan', 'compress', 'memory-rpc', 'serve-latency', 'serve-load', 'train-throughput'];

export interface Step {
  what: 'eval' | 'bench';
  /** As a reader would type it. */
  display: string;
  argv: string[];
  env: Record<string, string>;
}

export function planSteps(opts: { dataDirs: string[]; benches: string[]; inputs: ReportInputs; missingOnly: boolean; evalArgs?: string[] }): Step[] {
  const steps: Step[] = [];
  const tsx = [process.execPath, '--import', 'tsx'];
  for (const dataDir of opts.dataDirs) {
    for (const ck of checkpointsOf(dataDir)) {
      const lifelong = ck.lifelong;
      if (ck.kind !== 'gems' && ck.kind !== 'sasrec') continue;
      const protocol = ck.kind === 'sasrec' || !lifelong ? 'loo' : 'lifelong';
      if (ck.kind === 'sasrec' && lifelong) continue; // `gems eval` scores SASRec with the loo protocol only
      if (opts.missingOnly && opts.inputs.evals.some((e) => e.checkpoint === ck.dir && e.protocol === protocol && e.split === 'test')) continue;
      const args = ['eval', '--run', ck.run, '--protocol', protocol, ...(opts.evalArgs ?? [])];
      steps.push({ what: 'eval', display: `GEMS_DATA_DIR=${dataDir} npm run gems -- ${args.join(' ')}`, argv: [...tsx, join(REPO_ROOT, 'src/cli/main.ts'), ...args], env: { GEMS_DATA_DIR: dataDir } });
    }
  }
  for (const name of opts.benches) {
    if (!existsSync(join(REPO_ROOT, 'bench', `${name}.ts`))) {
      log.warn('benchmark not in the repository, skipped', { bench: name });
      continue;
    }
    const prev = opts.inputs.benches.get(name);
    if (opts.missingOnly && prev) continue;
    const args = Array.isArray(prev?.data['args']) ? (prev.data['args'] as unknown[]).map(String) : [];
    steps.push({ what: 'bench', display: ['npm run bench --', name, ...args].join(' '), argv: [...tsx, join(REPO_ROOT, 'bench/run.ts'), name, ...args], env: {} });
  }
  return steps;
}

/** Runs one step; its output goes to stderr (stdout stays the report command's result lines). */
export function runStep(step: Step): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(step.argv[0]!, step.argv.slice(1), { cwd: REPO_ROOT, env: { ...process.env, ...step.env }, stdio: ['ignore', 2, 2] });
    child.on('error', reject);
    child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
}
