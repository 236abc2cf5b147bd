// `gems main` end to end on a tiny slice of the shipped ml-latest-small (first 30 users, tiny model, a few training
// steps): real DuckDB history store, real tokenizer, QLA compressor + compression into lmdb, training on those memories, both gRPC services on
// free loopback ports, GetRecommendations over a real gRPC client, graceful shutdown. A second run must reuse the
// finished stages.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../src/cli/main.js';
import { SHIPPED_ML } from '../../src/cli/commands/main.js';
import { setLogSink } from '../../src/util/log.js';

const K = 5;
const TINY = [
  '--max-users', '30', '--t-recent', '16', '--t-mid', '64', '--preset', 'tiny', '--train-minutes', '0.1',
  '--epochs', '1', '--epochs2', '1', '--epochs3', '1', '--compressor-steps', '5', '--eval-users', '10', '-k', String(K),
  '--set', 'tokenizer.iterations=5', '--set', 'tokenizer.codebookSizes=16,16,16',
];

interface Printed {
  users: { userId: number; streams: string; items: { item: number; title: string }[] }[];
  stages: Map<string, string>;
}

/** Reads the user blocks (header + item table) and the summary table from what `gems main` printed. */
function parseOutput(lines: string[]): Printed {
  const users: Printed['users'] = [];
  const stages = new Map<string, string>();
  let inSummary = false;
  for (const line of lines) {
    const head = /^user (\d+): \d+ events; streams used: ([^;]*);/.exec(line);
    if (head) {
      users.push({ userId: Number(head[1]), streams: head[2]!, items: [] });
      continue;
    }
    const row = /^ {2}(\d+)\s+(\d+)\s+(-?[\d.]+)\s+(\[[\d,]*\])?\s*(.*)$/.exec(line);
    if (row && users.length > 0 && !inSummary) users[users.length - 1]!.items.push({ item: Number(row[2]), title: row[5]!.trim() });
    if (line.startsWith('summary (total')) inSummary = true;
    const st = /^(\S[\w +-]*?)\s{2,}(ran|reused|skipped)\s/.exec(line);
    if (inSummary && st) stages.set(st[1]!, st[2]!);
  }
  return { users, stages };
}

describe('gems main (tiny)', () => {
  let root: string;
  let prevSink: (l: string) => void;
  const logs: string[] = [];
  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'gems-main-'));
    prevSink = setLogSink((l) => logs.push(l));
  });
  afterAll(() => {
    setLogSink(prevSink);
    rmSync(root, { recursive: true, force: true });
  });

  async function main(...argv: string[]): Promise<{ code: number; out: string[] }> {
    const out: string[] = [];
    const code = await runCli(['main', '--data-dir', join(root, 'data'), ...argv], (l) => out.push(l));
    return { code, out };
  }

  it('runs every stage, prints k valid distinct recommendations per user, and reuses stages on a rerun', async () => {
    const first = await main(...TINY);
    expect(first.code, logs.filter((l) => l.includes('"error"')).join('\n')).toBe(0);
    const p = parseOutput(first.out);

    // Catalogue of the shipped data: every recommended item must be a real movie, and titles must match it.
    const titles = new Map<number, string>();
    for (const l of readFileSync(join(SHIPPED_ML, 'movies.csv'), 'utf8').split('\n').slice(1)) {
      const m = /^(\d+),("(?:[^"]|"")*"|[^,]*),/.exec(l);
      if (m) titles.set(Number(m[1]), m[2]!.replace(/^"|"$/g, '').replace(/""/g, '"'));
    }
    expect(p.users.length).toBe(3);
    expect(new Set(p.users.map((u) => u.userId)).size).toBe(3);
    for (const u of p.users) {
      expect(u.items.length, `user ${u.userId}`).toBe(K);
      expect(new Set(u.items.map((x) => x.item)).size, `user ${u.userId} distinct`).toBe(K);
      for (const x of u.items) {
        expect(titles.has(x.item), `item ${x.item}`).toBe(true);
        expect(x.title).toBe(titles.get(x.item));
      }
    }
    // The longest of the 30 users has more than T_mid = 64 events: all three streams.
    expect(p.users[0]!.streams).toBe('recent, mid, lifecycle');
    // The model was trained on the compressor's memories, so the service feeds it the stored memory.
    expect(first.out.some((l) => l.includes('the model read the lifecycle stream from memory'))).toBe(true);
    const meta = JSON.parse(readFileSync(join(root, 'data', 'checkpoints', 'gems', 'best', 'meta.json'), 'utf8'));
    expect(meta.train.lifecycleSource).toBe('memory');
    expect(meta.train.compressorVersion).toMatch(/^[0-9a-f]{16}$/);
    for (const s of ['ingest', 'tokenize', 'train', 'train-compressor', 'compress', 'eval', 'serve + ask', 'stop']) expect(p.stages.get(s), s).toBe('ran');
    expect(first.out.some((l) => /^gems gems \(filtered\)\s+10\s/.test(l))).toBe(true);
    expect(JSON.parse(readFileSync(join(root, 'data', 'main', 'state.json'), 'utf8')).stages.train.result.done).toBe(true);

    // Second run: same inputs, so the expensive stages are reused, and the services answer the same way.
    const second = await main(...TINY);
    expect(second.code).toBe(0);
    const q = parseOutput(second.out);
    for (const s of ['data', 'ingest', 'tokenize', 'train', 'train-compressor', 'compress', 'eval']) expect(q.stages.get(s), s).toBe('reused');
    expect(q.stages.get('serve + ask')).toBe('ran');
    expect(q.users.map((u) => u.items.map((x) => x.item))).toEqual(p.users.map((u) => u.items.map((x) => x.item)));

    // A changed budget retrains (the train key changed) but keeps the data and the Semantic IDs.
    const third = await main(...TINY.map((a) => (a === '0.1' ? '0.11' : a)));
    expect(third.code).toBe(0);
    const r = parseOutput(third.out);
    expect(r.stages.get('tokenize')).toBe('reused');
    expect(r.stages.get('train')).toBe('ran');
    expect(r.stages.get('eval')).toBe('ran');
  });

  it('runs on a generated lifelong set (--dataset generated) with the lifelong protocol', async () => {
    const out: string[] = [];
    const argv = ['main', '--data-dir', join(root, 'gen'), '--dataset', 'generated', '--users', '12', '--scale', '0.01', '--t-recent', '16', '--t-mid', '64'];
    argv.push('--model-preset', 'tiny', '--train-minutes', '0.05', '--epochs', '1', '--epochs2', '1', '--epochs3', '1', '--compressor-steps', '3', '--eval-users', '6');
    argv.push('--k', String(K), '--ask-count', '2', '--set', 'tokenizer.iterations=3');
    const code = await runCli(argv, (l) => out.push(l));
    expect(code).toBe(0);
    const p = parseOutput(out);
    expect(p.users.length).toBe(2);
    for (const u of p.users) {
      expect(new Set(u.items.map((x) => x.item)).size).toBe(K);
      for (const x of u.items) expect(x.title).toMatch(/^cluster \d+ item \d+$/); // the generator's catalogue titles
    }
    expect(out.some((l) => l.startsWith('gems gems all targets'))).toBe(true);
  });

  it('refuses bad flags with a usage error (exit 2)', async () => {
    expect((await main('--dataset', 'nope')).code).toBe(2);
    expect((await main('--max-users', '-3')).code).toBe(2);
    expect((await main('--users', '10')).code).toBe(2); // a generator flag without --dataset generated
  });
});
