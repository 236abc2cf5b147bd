// Loads the native kernels. Throws (with the reason recorded by build.cjs when there is one) if they were not built.
'use strict';
/* eslint-disable @typescript-eslint/no-require-imports -- plain CommonJS: runs at install time, before any build */
const fs = require('node:fs');
const path = require('node:path');

// OpenBLAS reads this when the shared library loads; one thread unless the caller chose otherwise.
if (!process.env.OPENBLAS_NUM_THREADS) process.env.OPENBLAS_NUM_THREADS = process.env.GEMS_BLAS_THREADS || '1';

const binary = path.join(__dirname, 'build', 'Release', 'gems_native.node');
if (!fs.existsSync(binary)) {
  let reason = 'not built';
  try {
    reason = JSON.parse(fs.readFileSync(path.join(__dirname, 'build', 'status.json'), 'utf8')).reason || reason;
  } catch {
    // no status file: the install script never ran (e.g. npm ci --ignore-scripts)
  }
  throw new Error(`gems native kernels unavailable: ${reason} (rebuild with: npm run rebuild -w @gems/native)`);
}
module.exports = require(binary);
