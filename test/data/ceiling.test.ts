// The generator's own ranking of its targets (src/data/generator/ceiling.ts): its distribution is the one the
// targets are drawn from (observed recall matches the recall it predicts; every drawn item has mass), the two views
// differ only in returns, and `gems generate ceiling` reads a data dir of several generator runs.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildCatalogue } from '../../src/data/generator/catalogue.js';
import { evaluateCeiling, rankOf, targetDistribution, type CeilingResult, type CeilingView, type FocusView } from '../../src/data/generator/ceiling.js';
import { generateUser, resolveLifelongOptions, type LifelongOptions } from '../../src/data/generator/lifelong.js';
import { runCli } from '../../src/cli/main.js';
import { setLogSink } from '../../src/util/log.js';

const base = { users: 150, scale: 0.1, tRecent: 64, tMid: 256, seed: 11 };
const opts = resolveLifelongOptions(undefined, { ...base, dormantTargetShare: 0.5 });
const cat = buildCatalogue(opts);

function targets(o: LifelongOptions) {
  const out = [];
  for (let u = 0; u < o.users; u++) {
    const g = generateUser(cat, o, o.firstUserId + u);
    for (const t of g.truth) out.push({ g, t });
  }
  return out;
}
const drawn = targets(opts);

const tmpDirs: string[] = [];
afterAll(() => {
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});

describe('targetDistribution', () => {
  it('is a probability distribution that gives every drawn target item mass, in both views', () => {
    for (const [view, focus] of [['full', 'exact'], ['blind', 'exact'], ['full', 'observed'], ['blind', 'observed']] as [CeilingView, FocusView][]) {
      for (const { g, t } of drawn) {
        const d = targetDistribution(cat, opts, g, t, view, focus);
        let sum = 0;
        for (const p of d.values()) sum += p;
        expect(sum).toBeCloseTo(1, 9);
        if (view === 'full' && focus === 'exact') expect(d.get(t.item_id) ?? 0).toBeGreaterThan(0);
      }
    }
  });

  it('predicts its own recall: the observed Recall@K of the full view is within 4 standard errors of Σ top-K mass', () => {
    for (const k of [10, 50]) {
      let expected = 0;
      let hits = 0;
      for (const { g, t } of drawn) {
        const d = targetDistribution(cat, opts, g, t, 'full');
        const top = [...d.entries()].sort((a, b) => b[1] - a[1] || a[0] - b[0]).slice(0, k);
        expected += top.reduce((s, [, p]) => s + p, 0);
        if (rankOf(d, t.item_id) < k) hits++;
      }
      const n = drawn.length;
      const p = expected / n;
      const se = Math.sqrt((p * (1 - p)) / n);
      expect(Math.abs(hits / n - p)).toBeLessThan(4 * se);
    }
  });

  it('the two views are the same without returns, and the full view ranks returning targets higher', () => {
    const noReturns = resolveLifelongOptions(undefined, { ...base, users: 40, dormantTargetShare: 0 });
    for (const { g, t } of targets(noReturns)) {
      expect([...targetDistribution(cat, noReturns, g, t, 'full')].sort()).toEqual([...targetDistribution(cat, noReturns, g, t, 'blind')].sort());
    }
    const returns = drawn.filter(({ t }) => t.intent === 'return');
    expect(returns.length).toBeGreaterThan(30);
    const meanLog = (view: CeilingView) => returns.reduce((s, { g, t }) => s + Math.log(targetDistribution(cat, opts, g, t, view).get(t.item_id) ?? 1e-12), 0) / returns.length;
    expect(meanLog('full')).toBeGreaterThan(meanLog('blind') + 1);
  });

  it('evaluateCeiling splits by the dormant flag, ranks several views in one pass and regenerates each user from the options that wrote it', () => {
    const truth = drawn.map(({ t }) => t);
    const [r, blind, observed] = evaluateCeiling(() => cat, () => opts, truth, [{ view: 'full' }, { view: 'blind' }, { view: 'full', focus: 'observed' }], { ks: [10, 100] }) as [CeilingResult, CeilingResult, CeilingResult];
    const dormant = truth.filter((t) => t.dormant).length;
    expect(r.overall['targets']).toBe(truth.length);
    expect(r.dormant['targets']).toBe(dormant);
    expect(r.current['targets']).toBe(truth.length - dormant);
    expect(r.dormant['Recall@100']!).toBeGreaterThan(blind.dormant['Recall@100']!);
    // Knowing the session's focus only from its events costs current targets, not returns.
    expect(observed.current['Recall@10']!).toBeLessThan(r.current['Recall@10']!);
    expect(() => evaluateCeiling(() => cat, () => { throw new Error('no generator run wrote user 1'); }, truth.slice(0, 1), [{ view: 'full' }])).toThrow(/user 1/);
    // A truth file the options do not regenerate (other options, another generator) is refused, not ranked.
    const other = resolveLifelongOptions(undefined, { ...base, seed: 12 });
    expect(() => evaluateCeiling(() => buildCatalogue(other), () => other, truth.slice(0, 1), [{ view: 'full' }])).toThrow(/user 1: regenerating gives target .* the truth file has item/);
  });
});

describe('gems generate ceiling', () => {
  it('reports both views for the users of a range, across generator runs; bad ranges and missing data are usage errors', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'gems-ceiling-'));
    tmpDirs.push(dataDir);
    const logs: string[] = [];
    const prevSink = setLogSink((l) => logs.push(l));
    const gen = (...extra: string[]) =>
      runCli(['generate', 'lifelong', '--users', '6', '--scale', '0.02', '--items', '1000', '--clusters', '50', '--seed', '9', '--data-dir', dataDir, ...extra], () => {});
    try {
      const lines: string[] = [];
      expect(await runCli(['generate', 'ceiling', '--data-dir', dataDir], (l) => lines.push(l))).toBe(2);
      expect(logs.join('\n')).toMatch(/manifest\.json does not exist/);
      expect(await gen()).toBe(0);
      expect(await gen('--first-user', '7', '--users', '3', '--dormant-share', '1')).toBe(0);
      expect(await runCli(['generate', 'ceiling', '--user-ids', '7..', '--data-dir', dataDir], (l) => lines.push(l))).toBe(0);
      const rows = lines.slice(0, -1).map((l) => JSON.parse(l) as { model: string; targets: number; 'Recall@100': number });
      expect(rows.map((r) => r.model)).toEqual(
        ['exact', 'observed'].flatMap((focus) =>
          ['full history', 'blind to the lifecycle part'].flatMap((view) => ['all targets', 'dormant', 'current'].map((split) => `generator ranking, ${view}, ${focus} focus: ${split}`)),
        ),
      );
      expect(rows[0]!.targets).toBe(3);
      const files = JSON.parse(lines.at(-1)!) as { json: string };
      expect(files.json).toBe(join(dataDir, 'runs', 'generator-ceiling', 'ceiling.json'));
      const report = JSON.parse(readFileSync(files.json, 'utf8')) as { details: { users: number } };
      expect(report.details.users).toBe(3);
      expect(await runCli(['generate', 'ceiling', '--user-ids', '100..', '--data-dir', dataDir], () => {})).toBe(2);
      expect(logs.join('\n')).toMatch(/no truth targets for users 100\.\./);
      // Data of another generator version cannot be regenerated: refused before ranking anything.
      const manifestPath = join(dataDir, 'generated', 'manifest.json');
      writeFileSync(manifestPath, JSON.stringify({ ...JSON.parse(readFileSync(manifestPath, 'utf8')), version: 99 }));
      expect(await runCli(['generate', 'ceiling', '--data-dir', dataDir], () => {})).toBe(2);
      expect(logs.join('\n')).toMatch(/written by generator version 99, this is version 1/);
    } finally {
      setLogSink(prevSink);
    }
  });
});
