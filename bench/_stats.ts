// Small statistics helpers for benchmarks: medians and percentiles of repeated measurements, peak RSS sampling.

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const idx = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[idx]!;
}

export const median = (v: number[]): number => percentile(v, 50);

/** Samples process RSS every `everyMs` until stopped; returns the peak in MB. */
export function rssSampler(everyMs = 20): { stop(): number } {
  let peak = process.memoryUsage.rss();
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
  }, everyMs);
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
      peak = Math.max(peak, process.memoryUsage.rss());
      return Math.round((peak / 1024 ** 2) * 10) / 10;
    },
  };
}

export const round = (x: number, digits = 3): number => Number(x.toFixed(digits));

/** `--name <positive number>` from a benchmark's arguments, or `fallback` when absent. */
export function argNumber(args: string[], name: string, fallback: number): number {
  const i = args.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const v = Number(args[i + 1]);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${name} must be a positive number, got '${args[i + 1]}'`);
  return v;
}

/** `--name <value>` from a benchmark's arguments, or `fallback` when absent. */
export function argString(args: string[], name: string, fallback: string): string {
  const i = args.indexOf(`--${name}`);
  return i < 0 ? fallback : (args[i + 1] ?? fallback);
}
