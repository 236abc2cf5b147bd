// Argument parsing for the `gems` CLI: `gems <command> [positionals] [--flag value | --flag=value | --switch]`.
// Config-level flags (--data-dir, --seed, --log-level, --config, --set key=value) become config overrides; the rest
// are left for the command.
import type { IdRange } from '../util/idRange.js';

export interface ParsedArgs {
  command: string;
  positional: string[];
  /** Command flags; a repeated flag collects its values in an array. */
  flags: Record<string, string | true | string[]>;
  /** Config overrides as dotted paths (see src/config/config.ts). */
  configFlags: Record<string, string>;
}

const CONFIG_FLAGS: Record<string, string> = { 'data-dir': 'dataDir', seed: 'seed', 'log-level': 'logLevel', config: 'config' };

export class UsageError extends Error {
  override name = 'UsageError';
}

export function parseArgs(argv: string[]): ParsedArgs {
  const out: ParsedArgs = { command: '', positional: [], flags: {}, configFlags: {} };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      const name = eq >= 0 ? a.slice(2, eq) : a.slice(2);
      let value: string | true;
      if (eq >= 0) value = a.slice(eq + 1);
      else if (i + 1 < argv.length && !argv[i + 1]!.startsWith('--')) value = argv[++i]!;
      else value = true;
      if (CONFIG_FLAGS[name]) {
        if (value === true) throw new UsageError(`--${name} needs a value`);
        out.configFlags[CONFIG_FLAGS[name]!] = value;
      } else if (name === 'set') {
        if (value === true || !value.includes('=')) throw new UsageError(`--set needs key=value`);
        const k = value.slice(0, value.indexOf('='));
        out.configFlags[k] = value.slice(value.indexOf('=') + 1);
      } else {
        const prev = out.flags[name];
        if (prev === undefined) out.flags[name] = value;
        else out.flags[name] = [...(Array.isArray(prev) ? prev : [String(prev)]), String(value)];
      }
    } else if (!out.command) out.command = a;
    else out.positional.push(a);
  }
  return out;
}

/** Typed accessors for command flags, with clear errors. */
export function flagString(args: ParsedArgs, name: string, fallback?: string): string {
  const v = args.flags[name];
  if (v === undefined) {
    if (fallback !== undefined) return fallback;
    throw new UsageError(`missing --${name}`);
  }
  if (v === true) throw new UsageError(`--${name} needs a value`);
  return Array.isArray(v) ? v[v.length - 1]! : v;
}

export function flagNumber(args: ParsedArgs, name: string, fallback?: number): number {
  const v = args.flags[name];
  if (v === undefined) {
    if (fallback !== undefined) return fallback;
    throw new UsageError(`missing --${name}`);
  }
  const n = Number(Array.isArray(v) ? v[v.length - 1] : v);
  if (v === true || !Number.isFinite(n)) throw new UsageError(`--${name} must be a number`);
  return n;
}

/** A boolean flag: `--name`, `--name true|1` (anything else is false); absent = `dflt`. */
export function flagBool(args: ParsedArgs, name: string, dflt = false): boolean {
  const v = args.flags[name];
  if (v === undefined) return dflt;
  return v === true || v === 'true' || v === '1';
}

export function flagList(args: ParsedArgs, name: string): string[] {
  const v = args.flags[name];
  if (v === undefined) return [];
  if (v === true) throw new UsageError(`--${name} needs a value`);
  return Array.isArray(v) ? v : [v];
}

/** An inclusive id range `--name FROM..TO` (`FROM..` and `..TO` leave one end open); undefined when absent. */
export function flagIdRange(args: ParsedArgs, name: string): IdRange | undefined {
  if (args.flags[name] === undefined) return undefined;
  const v = flagString(args, name);
  const m = /^(\d*)\.\.(\d*)$/.exec(v.trim());
  if (!m || (m[1] === '' && m[2] === '')) throw new UsageError(`--${name} must be FROM..TO (user ids, either end may be left open), got '${v}'`);
  const range = { from: m[1] === '' ? 0 : Number(m[1]), to: m[2] === '' ? Number.MAX_SAFE_INTEGER : Number(m[2]) };
  if (range.from > range.to) throw new UsageError(`--${name}: ${range.from} is after ${range.to}`);
  return range;
}
