// `npm run bench -- <name> [args]`: runs bench/<name>.ts, which prints its human summary and returns its figures.
// The figures (plus machine facts) are printed as one JSON object on the last line and written to
// bench/results/<name>.json. Benchmarks report medians; variants are compared in the same run as ratios.
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export type Figures = Record<string, number | string | boolean | null | Record<string, unknown> | unknown[]>;
export interface Bench {
  summary: string;
  run(args: string[]): Promise<Figures>;
}

const here = dirname(fileURLToPath(import.meta.url));

async function main(): Promise<void> {
  const [name, ...args] = process.argv.slice(2);
  const available = readdirSync(here)
    .filter((f) => f.endsWith('.ts') && f !== 'run.ts' && !f.startsWith('_'))
    .map((f) => f.slice(0, -3));
  if (!name || !available.includes(name)) {
    console.error(`usage: npm run bench -- <name> [args]\navailable: ${available.join(', ')}`);
    process.exit(2);
  }
  const mod = (await import(pathToFileURL(join(here, `${name}.ts`)).href)) as { bench: Bench };
  console.log(`# bench ${name}: ${mod.bench.summary}`);
  const t0 = performance.now();
  const figures = await mod.bench.run(args);
  const result = {
    bench: name,
    ...figures,
    wall_s: Number(((performance.now() - t0) / 1000).toFixed(2)),
    machine: { node: process.version, cpus: cpus().length, cpu_model: cpus()[0]?.model ?? '', mem_gb: Math.round(totalmem() / 1024 ** 3) },
    at: new Date().toISOString(),
    args,
  };
  mkdirSync(join(here, 'results'), { recursive: true });
  const json = JSON.stringify(result);
  writeFileSync(join(here, 'results', `${name}.json`), JSON.stringify(result, null, 2) + '\n');
  console.log(json);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
