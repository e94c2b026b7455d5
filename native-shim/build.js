#!/usr/bin/env node
// Build the native pieces. N-API addons need only Node's headers and a C
// compiler, so compile directly when the headers are installed (they are on
// Debian's and the official Node builds, and need no network); fall back to
// node-gyp otherwise. Failures are not fatal:
//   hammer2_shim.node - flock and block device sizes; without it image files
//                       work unlocked (said at run time).
//   fuse_ll.node      - our libfuse3 low-level binding (src/fuse/lowlevel.ts);
//                       needs libfuse3-dev. Without it the low-level sessions
//                       report themselves unavailable; nothing else breaks.
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
  // Build beside and rename: a running daemon has the old file mapped.
  const tmp = `${out}.tmp-${process.pid}`;
  r = run(cc, ['-O2', '-Wall', '-pthread', '-shared', '-fPIC', `-I${inc}`, '-o', tmp, path.join(dir, 'hammer2_shim.c')], dir);
  if (r.ok && fs.existsSync(tmp)) fs.renameSync(tmp, out);
  else fs.rmSync(tmp, { force: true });
} else {
  r = run(process.execPath, [require.resolve('node-gyp/bin/node-gyp.js', { paths: [path.dirname(process.execPath) + '/../lib/node_modules/npm'] }), 'rebuild'], dir);
}
if (r.ok && fs.existsSync(out)) {
  console.log(`native-shim: built ${path.relative(process.cwd(), out)}`);
} else {
  process.stderr.write(r.text + '\n');
  process.stderr.write('native-shim: build failed; image files still work, without locking (see the message above)\n');
}

// ---- fuse_ll.node: libfuse3 low-level binding ----
function buildFuseLL() {
  const llOut = path.join(outDir, 'fuse_ll.node');
  const fail = (why) => {
    // An older fuse_ll.node, if any, is kept: lowlevel.ts refuses one whose ABI differs.
    const kept = fs.existsSync(llOut) ? ' (the previous build is kept)' : '';
    process.stderr.write(`native-shim: fuse_ll.node not built${kept}: ${why}\n` +
      'native-shim: without it mount_hammer2 cannot mount (install libfuse3-dev and pkg-config, ' +
      'or run scripts/ensure-deps.sh, then `node native-shim/build.js`); the other tools work\n');
  };
  if (!inc) return fail('Node headers (node_api.h) not found');
  let cflags = ['-I/usr/include/fuse3'];
  let libs = ['-lfuse3', '-lpthread'];
  const pc = run('pkg-config', ['fuse3', '--cflags', '--libs'], dir);
  if (pc.ok) {
    const words = pc.text.trim().split(/\s+/).filter(Boolean);
    cflags = words.filter((w) => !w.startsWith('-l') && !w.startsWith('-L'));
    libs = words.filter((w) => w.startsWith('-l') || w.startsWith('-L'));
  } else if (!fs.existsSync('/usr/include/fuse3/fuse_lowlevel.h')) {
    return fail('libfuse3 development files not found (pkg-config fuse3 failed and no /usr/include/fuse3)');
  }
  fs.mkdirSync(outDir, { recursive: true });
  const cc = process.env.CC || 'cc';
  const tmp = `${llOut}.tmp-${process.pid}`;
  const b = run(cc, ['-O2', '-Wall', '-shared', '-fPIC', `-I${inc}`, ...cflags, '-o', tmp, path.join(dir, 'fuse_ll.c'), ...libs], dir);
  if (!b.ok || !fs.existsSync(tmp)) {
    fs.rmSync(tmp, { force: true });
    process.stderr.write(b.text + '\n');
    return fail('compiling fuse_ll.c failed (see above)');
  }
  fs.renameSync(tmp, llOut);
  console.log(`native-shim: built ${path.relative(process.cwd(), llOut)}`);
}
buildFuseLL();
