#!/usr/bin/env node
// Build the native shim. N-API addons need only Node's headers and a C
// compiler, so compile directly when the headers are installed (they are on
// Debian's and the official Node builds, and need no network); fall back to
// node-gyp otherwise. A failure is not fatal: hammer2fs works on image files
// without the shim (no image locking) and says so at run time.
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const dir = __dirname;
const outDir = path.join(dir, 'build', 'Release');
const out = path.join(outDir, 'hammer2_shim.node');

const headerDirs = [
  process.env.npm_config_nodedir && path.join(process.env.npm_config_nodedir, 'include', 'node'),
  path.join(path.dirname(process.execPath), '..', 'include', 'node'),
  '/usr/include/node',
  '/usr/local/include/node',
].filter(Boolean);
const inc = headerDirs.find((d) => fs.existsSync(path.join(d, 'node_api.h')));

function run(cmd, args, cwd) {
  const r = spawnSync(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  return { ok: r.status === 0, text: `${r.stdout || ''}${r.stderr || ''}${r.error ? r.error.message : ''}` };
}

let r;
if (inc) {
  fs.mkdirSync(outDir, { recursive: true });
  const cc = process.env.CC || 'cc';
  r = run(cc, ['-O2', '-Wall', '-shared', '-fPIC', `-I${inc}`, '-o', out, path.join(dir, 'hammer2_shim.c')], dir);
} else {
  r = run(process.execPath, [require.resolve('node-gyp/bin/node-gyp.js', { paths: [path.dirname(process.execPath) + '/../lib/node_modules/npm'] }), 'rebuild'], dir);
}
if (r.ok && fs.existsSync(out)) {
  console.log(`native-shim: built ${path.relative(process.cwd(), out)}`);
} else {
  process.stderr.write(r.text + '\n');
  process.stderr.write('native-shim: build failed; image files still work, without locking (see the message above)\n');
}
