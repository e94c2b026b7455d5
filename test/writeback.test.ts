// -o writeback_cache: the kernel holds written pages and sends them later.
// What must still hold: fsync's guarantee across kill -9 of the daemon,
// partial writes through a write-only handle (the kernel reads the rest of
// the page first), the times the kernel owns (kept to the microsecond across
// a remount), a snapshot that includes writes still held by the kernel, and
// ENOSPC and EROFS reported by close or fsync. Both fscks pass at the end.
// Not covered: the kernel sending a file's times before its pages (background
// writeback may; the write handler then leaves the times alone), which no
// test here can bring about on demand.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';

process.env.HAMMER2_QUIET_SHIM = '1';

import { mount } from './lib/mount';
import { newImage, runH2 } from './lib/cli';
import { fuseUnavailable, MOUNT_BIN } from './lib/env';
import { fsckBoth } from './lib/pfstree';
import { mountTable } from '../src/daemon';

const skip = fuseUnavailable() ?? false;
const WB = ['-o', 'writeback_cache'];
const code = (p: Promise<unknown>): Promise<string | null> =>
  p.then(
    () => null,
    (e: NodeJS.ErrnoException) => e.code ?? 'error',
  );

t.test('data, times and snapshots under the writeback cache', { skip }, async (t) => {
  const { dir, img } = await newImage(t, 512 << 20);
  const mnt = path.join(dir, 'mnt');
  let m = await mount(t, `${img}@ROOT`, mnt, WB);

  // Random small writes, then fsync: they survive kill -9 of the daemon.
  const want = crypto.randomBytes(3 << 20);
  await fsp.writeFile(path.join(mnt, 'rand'), want);
  const fh = await fsp.open(path.join(mnt, 'rand'), 'r+');
  const rng = crypto.createHash('sha256');
  for (let i = 0; i < 2000; i++) {
    const h = rng.copy().update(String(i)).digest();
    const off = h.readUInt32LE(0) % (want.length - 4096);
    const len = 1 + (h.readUInt16LE(4) % 4096);
    const piece = crypto.randomBytes(len);
    piece.copy(want, off);
    await fh.write(piece, 0, len, off);
  }
  await fh.sync();
  m.proc.kill('SIGKILL');
  await new Promise((r) => m.proc.once('exit', r));
  await m.unmount();
  m = await mount(t, `${img}@ROOT`, mnt, WB);
  t.ok((await fsp.readFile(path.join(mnt, 'rand'))).equals(want), '2000 random writes, fsync, kill -9: every byte back');

  // A partial page written through a write-only handle: the kernel reads the rest first
  // (after a remount, so the page is not cached).
  fs.writeFileSync(path.join(mnt, 'wo'), 'abcdefghijklmnopqrstuvwxyz');
  await m.unmount();
  m = await mount(t, `${img}@ROOT`, mnt, WB);
  const wo = await fsp.open(path.join(mnt, 'wo'), fs.constants.O_WRONLY);
  await wo.write('XYZ', 10);
  await wo.close();
  t.equal(await fsp.readFile(path.join(mnt, 'wo'), 'utf8'), 'abcdefghijXYZnopqrstuvwxyz', 'write-only handle: the rest of the page kept');

  // Times: set explicitly after writes, and the kernel's own after a write.
  const fixed = path.join(mnt, 'fixed');
  await fsp.writeFile(fixed, 'x'.repeat(10000));
  // touch, not fs.utimes: a double cannot carry these microseconds exactly.
  t.equal(spawnSync('touch', ['-a', '-d', '@1600000000.123456', fixed]).status, 0);
  t.equal(spawnSync('touch', ['-m', '-d', '@1700000000.654321', fixed]).status, 0);
  const touched = path.join(mnt, 'touched');
  const th = await fsp.open(touched, 'w');
  await th.write('some data');
  await th.close();
  const before = await fsp.stat(touched, { bigint: true });
  t.ok(Math.abs(Number(before.mtimeNs / 1_000_000n) - Date.now()) < 60_000, 'a write sets a current mtime');
  await m.unmount();
  m = await mount(t, `${img}@ROOT`, mnt, WB);
  const st = await fsp.stat(fixed, { bigint: true });
  t.equal(st.mtimeNs, 1_700_000_000_654_321_000n, 'utimes after the writes wins, to the microsecond');
  t.equal(st.atimeNs, 1_600_000_000_123_456_000n, 'atime too');
  const after = await fsp.stat(touched, { bigint: true });
  t.equal(after.mtimeNs, before.mtimeNs, 'mtime after remount is the one stat showed');
  t.equal(after.size, 9n);

  // A snapshot holds writes the kernel still held (file open, no fsync).
  const open = await fsp.open(path.join(mnt, 'held'), 'w');
  const held = crypto.randomBytes(200_000);
  await open.write(held);
  const r = await runH2(['snapshot', mnt, 'ROOT.snap']);
  t.equal(r.status, 0, r.err);
  await open.close();
  await m.unmount();
  const s = path.join(dir, 'snap');
  const ms = await mount(t, `${img}@ROOT.snap`, s, ['-o', 'ro']);
  t.ok((await fsp.readFile(path.join(s, 'held'))).equals(held), 'the snapshot has the bytes written before it');
  await ms.unmount();
  await fsckBoth(t, img, 'after the writeback mounts');
});

t.test('refused writes are reported by close and fsync', { skip }, async (t) => {
  const { dir, img } = await newImage(t, 256 << 20, ['ROOT']);
  const mnt = path.join(dir, 'mnt');
  const m = await mount(t, `${img}@ROOT`, mnt, WB);
  // More than the filesystem holds: some write, or the close, fails with ENOSPC.
  const chunk = crypto.randomBytes(1 << 20);
  const fh = await fsp.open(path.join(mnt, 'big'), 'w');
  let err: string | null = null;
  for (let i = 0; i < 400 && !err; i++) err = await code(fh.write(chunk));
  err ??= await code(fh.close());
  if (err !== null) await fh.close().catch(() => {});
  t.equal(err, 'ENOSPC', 'ENOSPC reported');
  await fsp.rm(path.join(mnt, 'big'));
  await fsp.writeFile(path.join(mnt, 'small'), 'small\n');
  t.equal(await fsp.readFile(path.join(mnt, 'small'), 'utf8'), 'small\n', 'space back after the removal');

  // Emergency mode refuses the pages at writeback: fsync says so.
  const h = await fsp.open(path.join(mnt, 'small'), 'r+');
  let r = await runH2(['emergency-mode-enable', mnt]);
  t.equal(r.status, 0, r.err);
  t.equal(await code(h.write('changed', 0)), null, 'the write goes to the page cache');
  t.equal(await code(h.sync()), 'EROFS', 'fsync reports the refused pages');
  await h.close().catch(() => {});
  r = await runH2(['emergency-mode-disable', mnt]);
  t.equal(r.status, 0, r.err);
  await m.unmount();
  const m2 = await mount(t, `${img}@ROOT`, mnt, WB);
  t.equal(await fsp.readFile(path.join(mnt, 'small'), 'utf8'), 'small\n', 'the refused write is not on the media');
  await m2.unmount();
  await fsckBoth(t, img, 'after the refusals');
});

t.test('without the writeback cache, writes through mmap set mtime and ctime', { skip }, async (t) => {
  const { dir, img } = await newImage(t, 256 << 20, ['ROOT']);
  const mnt = path.join(dir, 'mnt');
  const m = await mount(t, `${img}@ROOT`, mnt);
  const f = path.join(mnt, 'mapped');
  await fsp.writeFile(f, Buffer.alloc(8192, 1));
  t.equal(spawnSync('touch', ['-d', '@1500000000', f]).status, 0);
  const py = `import mmap, os\nfd = os.open(${JSON.stringify(f)}, os.O_RDWR)\nm = mmap.mmap(fd, 8192)\nm[100:105] = b'hello'\nm.flush()\nm.close()\nos.fsync(fd)\nos.close(fd)`;
  const r = spawnSync('python3', ['-c', py], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  const st = await fsp.stat(f);
  t.ok(st.mtimeMs > 1_600_000_000_000, `mtime moved (${st.mtime.toISOString()})`);
  t.ok(st.ctimeMs > 1_600_000_000_000, 'ctime moved');
  t.equal((await fsp.readFile(f)).subarray(100, 105).toString(), 'hello');
  await m.unmount();
  // What the daemon stored, not what the kernel kept in its attribute cache.
  const m2 = await mount(t, `${img}@ROOT`, mnt);
  const st2 = await fsp.stat(f);
  t.ok(st2.mtimeMs > 1_600_000_000_000, `mtime stored (${st2.mtime.toISOString()})`);
  t.equal((await fsp.readFile(f)).subarray(100, 105).toString(), 'hello', 'data stored');
  await m2.unmount();
});

t.test('writeback_ratio: the share of dirty memory the kernel may hold for the mount', { skip }, async (t) => {
  const { dir, img } = await newImage(t, 256 << 20);
  const mnt = path.join(dir, 'mnt');
  const maxRatio = () => {
    const dev = mountTable()
      .filter((x) => x.point === mnt)
      .pop()?.dev;
    return fs.readFileSync(`/sys/class/bdi/${dev}/max_ratio`, 'utf8').trim();
  };
  // The daemon sets it once the kernel's INIT told it the cache is on, a
  // moment after the mount shows: wait for the value (a few seconds at most).
  const settled = async (want: string) => {
    for (let i = 0; i < 100 && maxRatio() !== want; i++) await new Promise((r) => setTimeout(r, 50));
    return maxRatio();
  };
  const root = process.getuid?.() === 0;
  let m = await mount(t, `${img}@ROOT`, mnt, WB);
  if (root) t.equal(await settled('40'), '40', 'writeback_cache alone: 40 % (FUSE starts at 1 %)');
  await m.unmount();
  m = await mount(t, `${img}@ROOT`, mnt, ['-o', 'writeback_cache,writeback_ratio=7']);
  if (root) t.equal(await settled('7'), '7', 'writeback_ratio=7');
  await m.unmount();
  m = await mount(t, `${img}@ROOT`, mnt);
  if (root) {
    await new Promise((r) => setTimeout(r, 500));
    t.equal(maxRatio(), '1', 'without the writeback cache the kernel default stays');
  }
  await m.unmount();
  const bad = spawnSync(process.execPath, [MOUNT_BIN, '-o', 'writeback_cache,writeback_ratio=150', img, mnt], { encoding: 'utf8' });
  t.not(bad.status, 0, 'writeback_ratio=150 refused');
  t.match(bad.stderr, /writeback_ratio= needs a whole percentage/);
});
