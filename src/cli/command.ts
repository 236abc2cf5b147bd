// The shape of a CLI subcommand. Each lives in src/cli/commands/<name>.ts and exports `command`.
import type { GemsConfig } from '../config/config.js';
import type { Logger } from '../util/log.js';
import type { ParsedArgs } from './args.js';

export interface CommandContext {
  config: GemsConfig;
  args: ParsedArgs;
  log: Logger;
  /** Where results go: stdout (tests pass a collector). */
  out: (line: string) => void;
}

export interface Command {
  summary: string;
  usage: string;
  /** Returns the process exit code (0 when omitted). */
  run(ctx: CommandContext): Promise<number | void>;
}
