// `gems ingest` and `gems stats` through the CLI entry point (runCli), on a temp data dir.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../src/cli/main.js';
import { setLogSink } from '../../src/util/log.js';

describe('gems ingest / gems stats', () => {
  let root: string;
  const logs: string[] = [];
  let prevSink: (l: string) => void;
  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'gems-cli-ingest-'));
    prevSink = setLogSink((l) => logs.push(l));
  });
  afterAll(() => {
    setLogSink(prevSink);
    rmSync(root, { recursive: true, force: true });
  });

  async function cli(...argv: string[]): Promise<{ code: number; out: string[] }> {
    const out: string[] = [];
    const code = await runCli(argv, (l) => out.push(l));
    return { code, out };
  }

  it('stats on an empty data dir, ingest movielens, stats --json, re-ingest adds nothing', async () => {
    const data = join(root, 'data');
    const empty = await cli('stats', '--json', '--data-dir', data);
    expect(empty.code).toBe(0);
    expect(JSON.parse(empty.out[0]!)).toMatchObject({ users: 0, events: 0, items: 0 });

    const ml = join(root, 'ml');
    mkdirSync(ml);
    writeFileSync(join(ml, 'ratings.csv'), 'userId,movieId,rating,timestamp\n1,10,4.0,10\n1,20,2.0,5\n2,10,3.5,7\n2,30,5,8\n2,40,1,9\n');
    writeFileSync(join(ml, 'movies.csv'), 'movieId,title,genres\n10,"Ten, The (1990)",Drama|Comedy\n20,Twenty,Drama\n30,Thirty,(no genres listed)\n');
    const ing = await cli('ingest', 'movielens', '--path', ml, '--data-dir', data);
    expect(ing.code).toBe(0);
    const res = JSON.parse(ing.out[0]!) as { added: number; items: number };
    expect(res.added).toBe(5);
    expect(res.items).toBe(3);

    const st = await cli('stats', '--json', '--data-dir', data);
    const s = JSON.parse(st.out[0]!) as Record<string, unknown>;
    expect(s).toMatchObject({ users: 2, items: 4, catalogItems: 3, events: 5, historyLength: { min: 2, mean: 2.5, max: 3 } });

    const again = await cli('ingest', 'movielens', '--path', ml, '--data-dir', data);
    expect(JSON.parse(again.out[0]!).added).toBe(0);
    const human = await cli('stats', '--data-dir', data);
    expect(human.out.join('\n')).toMatch(/events\s+5/);
  });

  it('a malformed row exits non-zero with file:line and field; --skip-bad-rows loads the rest', async () => {
    const data = join(root, 'data2');
    const f = join(root, 'events.csv');
    writeFileSync(f, 'u,i,t\n1,5,1000\n1,x,2000\n2,6,3000\n');
    const bad = await cli('ingest', 'csv', '--path', f, '--map', 'user_id=u,item_id=i,ts=t', '--data-dir', data);
    expect(bad.code).toBe(1);
    expect(logs.some((l) => l.includes(`${f}:3: field 'i': 'x' is not an integer`))).toBe(true);
    const rejects = join(root, 'rejects.tsv');
    const ok = await cli('ingest', 'csv', '--path', f, '--map', 'user_id=u,item_id=i,ts=t', '--skip-bad-rows', rejects, '--data-dir', data);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.out[0]!)).toMatchObject({ added: 2, rejected: 1 });
    expect(readFileSync(rejects, 'utf8')).toContain('\t3\ti\t');
    const usage = await cli('ingest', 'csv', '--path', f, '--map', 'user_id=u', '--data-dir', data);
    expect(usage.code).toBe(2);
  });
});
