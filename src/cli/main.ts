// `gems` — one CLI for every stage. Subcommands live in src/cli/commands/<name>.ts and are loaded on demand, so a
// command that needs TensorFlow.js does not slow down one that only reads DuckDB.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ConfigError, loadConfig } from '../config/config.js';
import { logger, setLogLevel } from '../util/log.js';
import { parseArgs, UsageError } from './args.js';
import type { Command } from './command.js';

/** Commands in the order `gems help` lists them. */
export const COMMANDS = [
  'main',
  'stats',
  'ingest',
  'generate',
  'tokenize',
  'train',
  'eval',
  'recommend',
  'train-compressor',
  'compress',
  'jobs',
  'serve',
  'report',
] as const;

const here = dirname(fileURLToPath(import.meta.url));

export async function loadCommand(name: string): Promise<Command | null> {
  for (const ext of ['.ts', '.js']) {
    const file = join(here, 'commands', name + ext);
    if (existsSync(file)) return ((await import(pathToFileURL(file).href)) as { command: Command }).command;
  }
  return null;
}

async function help(out: (s: string) => void): Promise<void> {
  out('usage: gems <command> [options]   (global: --data-dir DIR, --config FILE, --seed N, --log-level L, --set key=value)\n');
  for (const name of COMMANDS) {
    const cmd = await loadCommand(name);
    if (cmd) out(`  ${name.padEnd(18)} ${cmd.summary}`);
  }
}

export async function runCli(argv: string[], out: (line: string) => void = (l) => process.stdout.write(l + '\n')): Promise<number> {
  const log = logger('cli');
  try {
    const args = parseArgs(argv);
    if (!args.command || args.command === 'help' || args.flags['help']) {
      const cmd = args.command && args.command !== 'help' ? await loadCommand(args.command) : null;
      if (cmd) out(cmd.usage);
      else await help(out);
      return 0;
    }
    const cmd = (COMMANDS as readonly string[]).includes(args.command) ? await loadCommand(args.command) : null;
    if (!cmd) throw new UsageError(`unknown command '${args.command}' (see gems help)`);
    const config = loadConfig({ flags: args.configFlags });
    setLogLevel(config.logLevel);
    const code = await cmd.run({ config, args, log: logger(args.command), out });
    return code ?? 0;
  } catch (e) {
    if (e instanceof UsageError || e instanceof ConfigError) {
      log.error((e as Error).message);
      return 2;
    }
    log.error((e as Error).message, { stack: (e as Error).stack });
    return 1;
  }
}

const invokedDirectly = process.argv[1] && pathToFileURL(process.argv[1]).href === import.meta.url;
const viaBin = process.argv[1]?.endsWith(join('bin', 'gems.js')) || process.argv[1]?.endsWith('/gems');
if (invokedDirectly || viaBin) {
  runCli(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
