import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, DEFAULT_CONFIG, loadConfig } from '../src/config/config.js';
import { parseArgs } from '../src/cli/args.js';

describe('config', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gems-config-'));

  it('defaults keep all state under one data dir', () => {
    const c = loadConfig({ env: {}, flags: { dataDir: dir } });
    expect(c.dataDir).toBe(dir);
    expect(c.streams.tRecent).toBe(DEFAULT_CONFIG.streams.tRecent);
    expect(c.objectStore.kind).toBe('local');
  });

  it('flags beat env, env beats the config file, the file beats defaults', () => {
    const file = join(dir, 'cfg.json');
    writeFileSync(file, JSON.stringify({ seed: 1, streams: { tRecent: 10, tMid: 100 }, lifecycle: { slots: 8 } }));
    const c = loadConfig({ configFile: file, env: { GEMS_SEED: '2', GEMS_STREAMS__T_RECENT: '20' }, flags: { 'streams.tRecent': '30' } });
    expect(c.seed).toBe(2);
    expect(c.streams.tRecent).toBe(30);
    expect(c.streams.tMid).toBe(100);
    expect(c.lifecycle.slots).toBe(8);
  });

  it('rejects unknown keys, bad types and inconsistent budgets with the key named', () => {
    expect(() => loadConfig({ env: { GEMS_STREAMS__T_NOPE: '1' } })).toThrow(/streams.T_NOPE|t_nope/i);
    expect(() => loadConfig({ env: {}, flags: { seed: 'abc' } })).toThrow(ConfigError);
    expect(() => loadConfig({ env: {}, flags: { 'streams.tMid': '5', 'streams.tRecent': '10' } })).toThrow(/streams.tMid/);
    expect(() => loadConfig({ env: {}, flags: { 'tokenizer.codebookSizes': '8,8' } })).toThrow(/codebookSizes/);
  });

  it('parses CLI config flags apart from command flags', () => {
    const a = parseArgs(['ingest', 'movielens', '--path', 'x', '--data-dir', dir, '--set', 'streams.tMid=64', '--dry']);
    expect(a.command).toBe('ingest');
    expect(a.positional).toEqual(['movielens']);
    expect(a.flags).toEqual({ path: 'x', dry: true });
    expect(a.configFlags).toEqual({ dataDir: dir, 'streams.tMid': '64' });
  });
});
