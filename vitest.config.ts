import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['dist/**', 'node_modules/**'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Tests start real servers on loopback ports and share 2 cores; forks keep native addons (DuckDB, lmdb) isolated.
    reporters: ['default', './test/support/summaryReporter.ts'],
    pool: 'forks',
    fileParallelism: true,
    maxWorkers: 2,
  },
});
