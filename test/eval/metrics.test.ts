import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { evaluateLeaveOneOut, splitOf } from '../../src/eval/leaveOneOut.js';
import { hierarchicalHit, RankAccumulator, rankInList, targetRank } from '../../src/eval/metrics.js';
import { writeReport } from '../../src/eval/report.js';
import { packSequences, sequencesFromCsv } from '../../src/eval/sequences.js';

describe('ranking metrics', () => {
  it('ranks a target among all items, with and without the history filter', () => {
    // index:             0     1    2    3    4    5
    const s = Float32Array.from([99, 0.9, 0.5, 0.7, 0.1, 0.8]);
    expect(targetRank(s, 2)).toBe(3); // 0.9, 0.7, 0.8 are higher; padding column 0 ignored
    expect(targetRank(s, 2, [1, 5])).toBe(1); // the seen items 1 and 5 are filtered out
    expect(targetRank(s, 2, [2, 2, 1])).toBe(2); // the target itself is never filtered; duplicates count once
    expect(targetRank(Float32Array.from([0, 1, 1, 1]), 1)).toBe(1); // ties count half
  });

  it('HR/NDCG@K follow their definitions', () => {
    const acc = new RankAccumulator([1, 10]);
    [0, 3, 20, Infinity].forEach((r) => acc.add(r));
    const r = acc.result();
    expect(r['HR@1']).toBe(0.25);
    expect(r['HR@10']).toBe(0.5);
    expect(r['NDCG@10']).toBeCloseTo((1 + 1 / Math.log2(5)) / 4, 10);
    expect(rankInList([5, 7, 9], 9)).toBe(2);
    expect(rankInList([5, 7, 9], 4)).toBe(Infinity);
    const beams = Int32Array.from([1, 2, 3, 1, 4, 0]);
    expect(hierarchicalHit(beams, 3, 2, [1, 4, 9], 2)).toBe(1);
    expect(hierarchicalHit(beams, 3, 1, [1, 4, 9], 2)).toBe(0);
    expect(hierarchicalHit(beams, 3, 2, [1, 4, 9], 3)).toBe(0);
  });

  it('leave-one-out splits never put the target into the input, and an oracle scorer gets HR@1 = 1', async () => {
    const seqs = packSequences([1, 2], [Int32Array.from([10, 11, 12, 13]), Int32Array.from([12, 10, 11])]);
    const t = splitOf(seqs, 0, 'test');
    expect(Array.from(t.input)).toEqual([1, 2, 3]);
    expect(t.target).toBe(4);
    const v = splitOf(seqs, 1, 'valid');
    expect(Array.from(v.input)).toEqual([3]);
    expect(v.target).toBe(1);
    const res = await evaluateLeaveOneOut(
      seqs,
      (inputs) =>
        inputs.map((inp) => {
          const s = new Float32Array(seqs.numItems + 1);
          // Oracle for this fixture: score the next item of the user whose input matches.
          const u = inp.length === 3 ? 0 : 1;
          s[splitOf(seqs, u, 'test').target] = 1;
          return s;
        }),
      { split: 'test', ks: [1], quiet: true },
    );
    expect(res.filtered['HR@1']).toBe(1);
    expect(res.unfiltered['NDCG@1']).toBe(1);
  });

  it('reads the sequences CSV layout and reports bad rows by line', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gems-eval-'));
    try {
      const f = join(dir, 'seq.csv');
      writeFileSync(f, 'user_id,seq,item_id\n2,1,30\n1,1,20\n1,0,10\n2,0,20\n');
      const s = await sequencesFromCsv(f);
      expect(Array.from(s.userIds)).toEqual([1, 2]);
      expect(Array.from(s.items)).toEqual([1, 2, 2, 3]);
      expect(Array.from(s.indexToItemId)).toEqual([-1, 10, 20, 30]);
      writeFileSync(f, 'user_id,seq,item_id\n1,0,x\n');
      await expect(sequencesFromCsv(f)).rejects.toThrow(/seq\.csv:2/);
      const files = writeReport(dir, 'r', { title: 't', command: 'c', protocol: 'p', rows: [{ name: 'm', metrics: { 'HR@10': 0.25 } }], details: {}, createdAt: 'now' });
      expect(readFileSync(files.md, 'utf8')).toContain('| m | 0.2500 |');
      expect(JSON.parse(readFileSync(files.json, 'utf8')).rows[0].metrics['HR@10']).toBe(0.25);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
