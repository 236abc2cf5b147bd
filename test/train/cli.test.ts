import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli } from '../../src/cli/main.js';
import { ringHistories } from '../model/fixture.js';

const dir = mkdtempSync(join(tmpdir(), 'gems-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('gems train / eval (SASRec baseline, sequences CSV)', () => {
  it('trains with checkpoints, resumes, and writes JSON + Markdown results with filtered and unfiltered rows', async () => {
    const csv = join(dir, 'sequences.csv');
    const lines = ['user_id,seq,item_id'];
    for (const h of ringHistories(20, 16)) h.itemId.forEach((it, i) => lines.push(`${h.userId},${i},${it}`));
    writeFileSync(csv, lines.join('\n') + '\n');
    const out: string[] = [];
    const common = ['--data-dir', dir, '--sequences-csv', csv];
    expect(await runCli(['train', '--model', 'sasrec', '--run', 's', '--epochs', '2', '--dim', '16', '--max-len', '8', '--batch', '8', ...common], (l) => out.push(l))).toBe(0);
    const ck = join(dir, 'checkpoints', 's');
    expect(existsSync(join(ck, 'best', 'meta.json'))).toBe(true);
    expect(existsSync(join(ck, 'last', 'optimizer.bin'))).toBe(true);
    // Resume with a larger budget continues at epoch 3.
    expect(await runCli(['train', '--model', 'sasrec', '--run', 's', '--epochs', '3', '--dim', '16', '--max-len', '8', '--batch', '8', '--resume', ...common], (l) => out.push(l))).toBe(0);
    const state = JSON.parse(readFileSync(join(ck, 'last', 'meta.json'), 'utf8')).train;
    expect(state.epoch).toBe(3);
    out.length = 0;
    expect(await runCli(['eval', '--run', 's', '--protocol', 'loo', ...common], (l) => out.push(l))).toBe(0);
    const rows = out.map((l) => JSON.parse(l));
    expect(rows.find((r) => r.model.endsWith('(filtered)'))['HR@10']).toBeGreaterThanOrEqual(0);
    expect(rows.find((r) => r.model.endsWith('(unfiltered)'))).toBeDefined();
    const files = rows[rows.length - 1];
    expect(readFileSync(files.markdown, 'utf8')).toContain('| SASRec (published) | ');
    expect(await runCli(['eval', '--run', 'missing', ...common], () => {})).toBe(2);
  });
});
