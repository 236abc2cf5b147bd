#!/usr/bin/env node
// Builds the optional native kernels with node-gyp during `npm ci` / `npm install`.
// It never fails the install: when the BLAS headers, a compiler or the Node headers are missing it records why in
// build/status.json and exits 0; at run time src/compute falls back to plain wasm and logs that reason.
// GEMS_NATIVE_BUILD=0 skips the build. GEMS_BLAS_INCLUDE_DIR adds a directory to search for cblas.h.
'use strict';
/* eslint-disable @typescript-eslint/no-require-imports -- plain CommonJS: runs at install time, before any build */
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const here = __dirname;
const buildDir = path.join(here, 'build');
const statusFile = path.join(buildDir, 'status.json');
const binary = path.join(buildDir, 'Release', 'gems_native.node');

function finish(ok, reason) {
  fs.mkdirSync(buildDir, { recursive: true });
  if (!ok) fs.rmSync(binary, { force: true }); // a stale binary must not outlive a failed rebuild
  fs.writeFileSync(statusFile, JSON.stringify({ ok, reason, at: new Date().toISOString() }, null, 2) + '\n');
  const line = ok ? `gems native kernels built: ${binary}` : `gems native kernels NOT built (${reason}); tfjs will use plain wasm`;
  console.log(line);
  process.exit(0);
}

if (process.env.GEMS_NATIVE_BUILD === '0') finish(false, 'GEMS_NATIVE_BUILD=0');

// A one-line preprocessor probe gives a clear reason when the BLAS headers are absent, instead of a compiler dump.
const cxx = process.env.CXX || 'c++';
const includeArgs = process.env.GEMS_BLAS_INCLUDE_DIR ? ['-I', process.env.GEMS_BLAS_INCLUDE_DIR] : [];
const probe = spawnSync(cxx, [...includeArgs, '-E', '-x', 'c++', '-'], { input: '#include <cblas.h>\n', encoding: 'utf8' });
if (probe.error) finish(false, `no C++ compiler (${cxx}: ${probe.error.message})`);
if (probe.status !== 0) finish(false, 'cblas.h not found: install OpenBLAS headers (Debian: apt-get install libopenblas-dev)');

// node-gyp: the copy npm passes to lifecycle scripts, else the one bundled with npm next to this node binary.
const candidates = [
  process.env.npm_config_node_gyp,
  path.resolve(path.dirname(process.execPath), '../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js'),
].filter(Boolean);
let gyp = candidates.find((p) => fs.existsSync(p));
if (!gyp) {
  try {
    gyp = require.resolve('node-gyp/bin/node-gyp.js');
  } catch {
    finish(false, 'node-gyp not found (it ships with npm)');
  }
}

// Offline machines cannot download Node headers: use the ones installed beside this node binary when present.
const args = [gyp, 'rebuild'];
const localHeaders = path.resolve(path.dirname(process.execPath), '..');
if (!process.env.npm_config_nodedir && fs.existsSync(path.join(localHeaders, 'include', 'node', 'node_api.h'))) {
  args.push(`--nodedir=${localHeaders}`);
}
const run = spawnSync(process.execPath, args, { cwd: here, stdio: ['ignore', 'inherit', 'inherit'] });
if (run.status !== 0 || !fs.existsSync(binary)) finish(false, `node-gyp rebuild failed (exit ${run.status})`);

// Load it once in a child so a binary that cannot link (e.g. libopenblas.so missing at run time) is reported now.
const check = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(binary)}).info()`], { encoding: 'utf8' });
if (check.status !== 0) finish(false, `built but cannot load: ${(check.stderr || '').trim().split('\n')[0]}`);
finish(true, 'built');
