// Several PFSs of one image mounted at once by one daemon; the hammer2
// command against live mounts through the control channel; snapshots of a
// PFS being written; refusals (mounted PFS, foreign user, dead daemon).
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { runBin } from './lib/cli';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';

process.env.HAMMER2_QUIET_SHIM = '1';

import { mallocStats } from '../src/store';
import { forceUnmount, mount } from './lib/mount';
import { fuseUnavailable, haveFixtures, haveRef, loadManifest, MOUNT_BIN, REPO, refFsck, tempDir, unpackFixture, COMPARE_TREE } from './lib/env';

const H2 = path.join(REPO, 'dist', 'src', 'cli', 'hammer2.js');
const NEWFS = path.join(REPO, 'dist', 'src', 'cli', 'newfs_hammer2.js');
const skip = fuseUnavailable();

const run = runBin;

const isMounted = (mnt: string) => fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === mnt);

async function waitGone(pid: number, ms = 15000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try {
      process.kill(pid, 0);
    } catch {
      return true;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

async function treeHash(root: string): Promise<string> {
  const h = crypto.createHash('sha256');
  const walk = async (d: string, rel: string) => {
    const ents = (await fsp.readdir(d, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1));
    for (const e of ents) {
      const p = path.join(d, e.name);
      const st = await fsp.lstat(p);
      h.update(`${rel}/${e.name} ${st.mode} ${st.size}\n`);
      if (e.isDirectory()) await walk(p, `${rel}/${e.name}`);
      else if (e.isFile()) h.update(await fsp.readFile(p));
    }
  };
  await walk(root, '');
  return h.digest('hex');
}

t.test('multipfs: every PFS mounted at once by one daemon', { skip: skip || (!haveFixtures() && 'no fixtures') }, async (t) => {
  const dir = tempDir(t);
  process.env.HAMMER2_RUNDIR = path.join(dir, 'run');
  const img = unpackFixture('multipfs', dir);
  const man = loadManifest('multipfs');
  const labels = man.pfs.map((p) => p.name).filter((n) => n !== 'LOCAL');
  const mnts = labels.map((l) => path.join(dir, `m-${l}`));
  t.teardown(() => mnts.forEach(forceUnmount));
  const first = await mount(t, `${img}@${labels[0]}`, mnts[0]);
  for (let i = 1; i < labels.length; i++) {
    fs.mkdirSync(mnts[i]);
    const r = await run(MOUNT_BIN, [`${img}@${labels[i]}`, mnts[i]]);
    t.equal(r.status, 0, `second mount of ${labels[i]}: ${r.err}`);
    t.ok(isMounted(mnts[i]));
  }
  // One process holds the image: no other mount_hammer2 was left running.
  const procs = spawnSync('pgrep', ['-f', `mount_hammer2.js.*${path.basename(img)}`], { encoding: 'utf8' }).stdout.trim().split('\n').filter(Boolean);
  t.same(procs, [String(first.proc.pid)], 'a single daemon serves every mount');
  for (const [i, l] of labels.entries()) {
    const c = spawnSync('python3', [COMPARE_TREE, path.join(path.dirname(COMPARE_TREE), '..', 'fixtures', 'multipfs.manifest.json'), '--pfs', l, '--root', mnts[i]], { encoding: 'utf8' });
    t.equal(c.status, 0, `${l} matches the manifest: ${c.stdout.split('\n').slice(-2).join(' ')}`);
  }
  // The same PFS twice, and a mount of an unknown label, are refused.
  fs.mkdirSync(path.join(dir, 'again'));
  let r = await run(MOUNT_BIN, [`${img}@${labels[0]}`, path.join(dir, 'again')]);
  t.equal(r.status, 1);
  t.match(r.err, /already mounted on/);
  r = await run(MOUNT_BIN, [`${img}@NOPE`, path.join(dir, 'again')]);
  t.equal(r.status, 1);
  t.match(r.err, /no PFS labelled "NOPE" \(available: /);
  // Writes to several PFSs at once stay independent.
  await Promise.all(mnts.map((m, i) => fsp.writeFile(path.join(m, 'own.txt'), `pfs ${labels[i]}\n`.repeat(1000 * (i + 1)))));
  for (const [i, m] of mnts.entries()) t.equal(await fsp.readFile(path.join(m, 'own.txt'), 'utf8'), `pfs ${labels[i]}\n`.repeat(1000 * (i + 1)));
  // Unmounting one leaves the others mounted and the daemon running.
  spawnSync('fusermount3', ['-u', mnts[1]]);
  t.notOk(isMounted(mnts[1]));
  t.equal(await fsp.readFile(path.join(mnts[0], 'own.txt'), 'utf8'), `pfs ${labels[0]}\n`.repeat(1000));
  t.equal(first.proc.exitCode, null, 'the daemon still runs');
  // It can be mounted again (handed to the same daemon).
  r = await run(MOUNT_BIN, [`@${labels[1]}`, mnts[1]]);
  t.equal(r.status, 0, `@LABEL remount: ${r.err}`);
  t.equal(await fsp.readFile(path.join(mnts[1], 'own.txt'), 'utf8'), `pfs ${labels[1]}\n`.repeat(2000));
  // The image lock names the daemon holding it.
  const other = await run(path.join(REPO, 'dist', 'src', 'cli', 'fsck_hammer2.js'), ['-y', img]);
  t.not(other.status, 0);
  t.match(other.out + other.err, new RegExp(`in use by process ${first.proc.pid} `));
  for (const m of mnts) spawnSync('fusermount3', ['-u', m]);
  t.ok(await waitGone(first.proc.pid!), 'the daemon exits with its last mount');
  if (haveRef('fsck_hammer2')) t.equal(refFsck(img).status, 0, 'reference fsck clean');
});

t.test('hammer2 against live mounts', { skip }, async (t) => {
  const dir = tempDir(t);
  fs.chmodSync(dir, 0o755); // the foreign user below must reach the mount
  process.env.HAMMER2_RUNDIR = path.join(dir, 'run');
  const img = path.join(dir, 'h.img');
  t.equal(spawnSync(process.execPath, [NEWFS, '-s', '1G', '-L', 'ROOT', '-L', 'HOME', img]).status, 0);
  const a = path.join(dir, 'a');
  const b = path.join(dir, 'b');
  t.teardown(() => [a, b].forEach(forceUnmount));
  const d = await mount(t, `${img}@ROOT`, a);
  fs.mkdirSync(b);
  t.equal((await run(MOUNT_BIN, [`${img}@HOME`, b])).status, 0);

  let r = await run(H2, ['pfs-list', a]);
  t.equal(r.status, 0, r.err);
  t.match(r.out, new RegExp(`^Type {8}ClusterId \\(pfs_clid\\) {17}Label on ${a}\\n`));
  t.match(r.out, /MASTER {6}\S{36} HOME\n/);
  r = await run(H2, ['-s', a, 'pfs-create', 'BUILD']);
  t.equal(r.out, 'hammer2: pfs_create(BUILD): SUCCESS\n', r.err);
  r = await run(H2, ['pfs-delete', 'HOME']);
  t.equal(r.status, 1);
  t.match(r.out, /pfs_delete\(HOME\): PFS "HOME" is mounted on/);

  // A snapshot taken while a writer runs equals the source at that moment.
  await fsp.mkdir(path.join(a, 'tree'));
  for (let i = 0; i < 50; i++) await fsp.writeFile(path.join(a, 'tree', `f${i}`), crypto.randomBytes(1000 + i * 997));
  let stop = false;
  let n = 0;
  const writer = (async () => {
    while (!stop) {
      const f = path.join(a, 'tree', `f${n % 50}`);
      await fsp.writeFile(f, crypto.randomBytes(5000 + (n % 7) * 10000));
      n++;
    }
  })();
  await new Promise((r) => setTimeout(r, 300));
  // Freeze the source long enough to hash it and take the snapshot at the same state.
  stop = true;
  await writer;
  const srcHash = await treeHash(path.join(a, 'tree'));
  r = await run(H2, ['snapshot', a, 'ROOT.snap1']);
  t.equal(r.out, 'created snapshot ROOT.snap1\n', r.err);
  stop = false;
  const writer2 = (async () => {
    while (!stop) {
      await fsp.writeFile(path.join(a, 'tree', `f${n % 50}`), crypto.randomBytes(3000));
      n++;
    }
  })();
  const s = path.join(dir, 's');
  fs.mkdirSync(s);
  t.teardown(() => forceUnmount(s));
  r = await run(MOUNT_BIN, [`${img}@ROOT.snap1`, s]);
  t.equal(r.status, 0, r.err);
  t.equal(await treeHash(path.join(s, 'tree')), srcHash, 'the snapshot equals the source at the moment it was taken');
  r = await run(H2, ['-s', s, 'snapshot']);
  t.match(r.out, /^created snapshot ROOT\.snap1\.\d{8}\.\d{6}\n$/, 'a snapshot of a snapshot');
  stop = true;
  await writer2;
  t.not(await treeHash(path.join(a, 'tree')), srcHash, 'the source went on changing');

  // setcomp/setcheck on live paths; new data inherits, old data still reads.
  await fsp.mkdir(path.join(a, 'z'));
  await fsp.writeFile(path.join(a, 'z', 'before.txt'), 'text '.repeat(50000));
  r = await run(H2, ['setcomp', 'zlib:9', path.join(a, 'z')]);
  t.equal(r.out, `${path.join(a, 'z')}\tcomp_algo=0x93\n`, r.err);
  r = await run(H2, ['-r', 'setcheck', 'sha192', path.join(a, 'z')]);
  t.equal(r.status, 0, r.err);
  t.match(r.out, /before\.txt\tcheck_algo=0x04\n/);
  await fsp.writeFile(path.join(a, 'z', 'after.txt'), 'text '.repeat(50000));
  r = await run(H2, ['stat', path.join(a, 'z'), path.join(a, 'z', 'after.txt')]);
  t.match(r.out, /z +0 +\S+ +\d+ zlib:9 +sha192/);
  t.match(r.out, /after\.txt +0 +\S+ +\d+ zlib:9 +sha192/, 'a new file inherits the directory\'s methods');
  r = await run(H2, ['printinode', path.join(a, 'z', 'after.txt')]);
  t.equal(r.status, 0, r.err);
  t.match(r.out, /^version = 1\npfs_subtype = 0 \(NONE\)\n/);
  t.match(r.out, /\ntype = 2 \(FILE\)\n/);
  t.match(r.out, /\nsize = 250000\n/);
  t.match(r.out, /\ncomp_algo = 147\ncheck_algo = 4\n/);
  t.match(r.out, /\ninum = 0x[0-9a-f]+\n/);
  r = await run(H2, ['-v', 'printinode', path.join(a, 'z')]);
  t.match(r.out, /^([0-9A-F]{2} ){15}[0-9A-F]{2}\n/, '-v: the meta bytes in hex first');
  t.match(r.out, /\ntype = 1 \(DIR\)\n/);
  r = await run(H2, ['printinode', path.join(a, 'nonexistent')]);
  t.equal(r.status, 3);
  r = await run(H2, ['setcomp', 'zlib:3', a]);
  t.equal(r.status, 3);
  t.match(r.err, /Unsupported comp_level 3 for zlib/);

  // Changing requests from a user who does not own the mount are refused; questions are answered.
  r = await run(H2, ['-s', a, 'pfs-create', 'EVIL'], { uid: 65534, cwd: '/' });
  t.equal(r.status, 1);
  t.match(r.err, /uid 65534 may not change this filesystem/);
  r = await run(H2, ['pfs-list', a], { uid: 65534, cwd: '/' });
  t.equal(r.status, 0, `questions are open to everyone: ${r.err}`);
  t.notMatch(r.out, /EVIL/);

  r = await run(H2, ['--json', 'info', a]);
  const info = JSON.parse(r.out)[0];
  t.equal(info.pid, d.proc.pid);
  t.same(info.mounts.map((m: { label: string }) => m.label).sort(), ['HOME', 'ROOT', 'ROOT.snap1']);
  // The daemon says where its memory is.
  t.ok(info.memory.rss > 0 && info.memory.heap > 0 && info.memory.rss >= info.memory.heap, `memory: ${JSON.stringify(info.memory)}`);
  t.ok(info.memory.cache >= 0 && info.memory.pending >= 0);
  // And malloc's own count: in use, and held free between its chunks (glibc).
  const withMalloc = mallocStats() !== null; // (glibc 2.33 and later)
  if (withMalloc) t.ok(info.memory.mallocInUse > 0 && info.memory.mallocFree >= 0, 'malloc in use and free');
  r = await run(H2, ['info', a]);
  t.match(r.out, /memory +[\d.]+ MiB resident: JS heap [\d.]+ MiB, buffers [\d.]+ MiB \(metadata cache [\d.]+ MiB, data awaiting commit [\d.]+ MiB\)/);
  if (withMalloc) t.match(r.out, /malloc +[\d.]+ MiB in use, [\d.]+ MiB free in its arenas/);

  for (const m of [a, b, s]) spawnSync('fusermount3', ['-u', m]);
  t.ok(await waitGone(d.proc.pid!));
  if (haveRef('fsck_hammer2')) {
    const f = refFsck(img);
    t.equal(f.status, 0, `reference fsck clean: ${f.out.slice(-800)}`);
    t.match(refFsck(img, ['-P']).out, /BUILD/);
  }
});

t.test('a killed daemon: clear messages, the image stays consistent', { skip }, async (t) => {
  const dir = tempDir(t);
  process.env.HAMMER2_RUNDIR = path.join(dir, 'run');
  const img = path.join(dir, 'k.img');
  t.equal(spawnSync(process.execPath, [NEWFS, '-s', '1G', '-L', 'A', '-L', 'B', '-L', 'C', img]).status, 0);
  const mnts = ['A', 'B', 'C'].map((l) => path.join(dir, l));
  t.teardown(() => mnts.forEach(forceUnmount));
  const d = await mount(t, `${img}@A`, mnts[0]);
  for (const [i, l] of ['B', 'C'].entries()) {
    fs.mkdirSync(mnts[i + 1]);
    t.equal((await run(MOUNT_BIN, [`${img}@${l}`, mnts[i + 1]])).status, 0);
  }
  // Write and fsync in all three, then kill -9 while more writes are in flight.
  const synced: [string, Buffer][] = [];
  for (const m of mnts) {
    for (let i = 0; i < 5; i++) {
      const p = path.join(m, `s${i}`);
      const data = crypto.randomBytes(20000 + i * 7000);
      const fh = await fsp.open(p, 'w');
      await fh.write(data);
      await fh.sync();
      await fh.close();
      synced.push([path.relative(dir, p), data]);
    }
  }
  const busy = mnts.map((m) => fsp.writeFile(path.join(m, 'unsynced'), crypto.randomBytes(4 << 20)).catch(() => {}));
  await new Promise((r) => setTimeout(r, 30));
  process.kill(d.proc.pid!, 'SIGKILL');
  await Promise.all(busy);
  await waitGone(d.proc.pid!);
  // auto_unmount took the mounts away with the daemon: the path is a plain directory again.
  let r = await run(H2, ['pfs-list', mnts[0]]);
  t.equal(r.status, 1);
  t.match(r.err, /not inside a mounted HAMMER2 filesystem|daemon .*died|does not answer/);
  for (const m of mnts) forceUnmount(m);
  // The socket the daemon left behind does not stop the command from opening the image itself.
  r = await run(H2, ['-s', `${img}@A`, 'pfs-list']);
  t.equal(r.status, 0, r.err);
  t.match(r.out, /A\n.*B\n.*C\n/s);
  const ours = spawnSync(process.execPath, [path.join(REPO, 'dist', 'src', 'cli', 'fsck_hammer2.js'), img], { encoding: 'utf8' });
  t.equal(ours.status, 0, `our fsck clean: ${ours.stdout.slice(-500)}`);
  if (haveRef('fsck_hammer2')) t.equal(refFsck(img).status, 0, 'reference fsck clean');
  // Every fsynced file of every PFS is intact after a remount.
  const again = await mount(t, `${img}@A`, mnts[0]);
  for (const [i, l] of ['B', 'C'].entries()) t.equal((await run(MOUNT_BIN, [`${img}@${l}`, mnts[i + 1]])).status, 0);
  for (const [rel, data] of synced) t.ok((await fsp.readFile(path.join(dir, rel))).equals(data), `${rel} intact`);
  for (const m of mnts) spawnSync('fusermount3', ['-u', m]);
  t.ok(await waitGone(again.proc.pid!));
});

t.test('the mount(8) helper: mount -t fuse.hammer2 and fstab options', { skip }, async (t) => {
  const dir = tempDir(t);
  process.env.HAMMER2_RUNDIR = path.join(dir, 'run');
  const img = path.join(dir, 'f.img');
  t.equal(spawnSync(process.execPath, [NEWFS, '-s', '256M', img]).status, 0);
  const mnt = path.join(dir, 'm');
  fs.mkdirSync(mnt);
  t.teardown(() => forceUnmount(mnt));
  // What mount(8) runs for an fstab line "IMG@DATA MNT fuse.hammer2 defaults,noauto,ro,x-systemd.automount 0 0".
  const r = spawnSync(path.join(REPO, 'scripts', 'mount.fuse.hammer2'), [`${img}@DATA`, mnt, '-o', 'rw,defaults,noauto,ro,x-systemd.automount,dirty=8'], {
    encoding: 'utf8',
    env: { ...process.env, NODE_OPTIONS: '', HAMMER2FS_DIR: REPO },
  });
  t.equal(r.status, 0, r.stderr);
  const line = fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').find((l) => l.split(' ')[1] === mnt) ?? '';
  t.match(line, new RegExp(`^${img}@DATA ${mnt} fuse\\.hammer2 ro,`), 'mounted read-only, named after the image');
  await t.rejects(fsp.writeFile(path.join(mnt, 'x'), 'x'), { code: 'EROFS' });
  t.equal(spawnSync('umount', [mnt]).status, 0, 'umount works');
  t.notOk(isMounted(mnt));
});
