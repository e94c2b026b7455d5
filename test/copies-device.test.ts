// A copy on a block device (a loop device) that starts failing: the kernel
// refuses its writes (blockdev --setro: EPERM on every write, a real device
// error, not a hook). The mount goes on, fsync returns, the copy is failed
// with the reason; when the device accepts writes again the copy is retried,
// resynchronized and in sync; both nodes pass both fscks and hold the same
// tree. Also: an image truncated under a copy is found damaged by scrub and
// repaired, and a copy whose device cannot be read at mount leaves the mount
// degraded, not refused.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { scanRange } from '../src/engine';
import { Hammer2Fs } from '../src/fs';
import { BrefType, inodeBlockset, KEY_MAX } from '../src/media';
import { newImage, runH2 } from './lib/cli';
import { fuseUnavailable } from './lib/env';
import { mount, mountRefusal } from './lib/mount';
import { imageTree, treeDiff, fsckBoth } from './lib/pfstree';

process.env.HAMMER2_QUIET_SHIM = '1';

async function states(mnt: string): Promise<{ state: string; tid: string; error?: string; writeErrors: number }[]> {
  const r = await runH2(['-s', mnt, 'copy-status', '--json']);
  return r.status === 0 ? JSON.parse(r.out).copies : [];
}

async function until(pred: () => Promise<boolean>, ms = 60000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await pred()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

const inSync = async (mnt: string) => {
  const s = await states(mnt);
  return s.length > 1 && s.every((c) => c.state === 'in-sync' && c.tid === s[0].tid);
};

const why = fuseUnavailable() ?? (process.getuid?.() === 0 ? null : 'loop devices need root');
if (why) t.plan(0, why);
else
  t.test('a copy on a loop device whose writes start failing, then recover', async (t) => {
    const A = await newImage(t, 256 << 20, ['DATA']);
    const B = await newImage(t, 256 << 20, ['none']);
    const lo = spawnSync('losetup', ['--find', '--show', B.img], { encoding: 'utf8' });
    if (lo.status !== 0) return t.skip(`no loop device: ${lo.stderr}`);
    const dev = lo.stdout.trim();
    t.teardown(() => {
      spawnSync('blockdev', ['--setrw', dev]);
      spawnSync('losetup', ['-d', dev]);
    });
    const mnt = path.join(A.dir, 'mnt');
    const m = await mount(t, `${A.img}@DATA`, mnt, ['-o', `copy=${dev},copy_retry=0.5`]);
    for (let i = 0; i < 10; i++) fs.writeFileSync(path.join(mnt, `a${i}`), randomBytes(100000));
    t.ok(await until(() => inSync(mnt)), 'the copy on the block device is in sync');

    t.equal(spawnSync('blockdev', ['--setro', dev]).status, 0, 'the device refuses writes from now on');
    for (let i = 0; i < 10; i++) fs.writeFileSync(path.join(mnt, `b${i}`), randomBytes(100000));
    const fd = fs.openSync(path.join(mnt, 'b0'), 'r+');
    fs.fsyncSync(fd); // must not fail: the primary takes it
    fs.closeSync(fd);
    let s = await states(mnt);
    t.equal(s[1].state, 'failed', 'the copy failed');
    t.ok(s[1].writeErrors >= 1, 'with a write error counted');
    t.match(s[1].error ?? '', /EPERM|not permitted/i, `and the reason: ${s[1].error}`);
    for (let i = 0; i < 10; i++) fs.writeFileSync(path.join(mnt, `c${i}`), randomBytes(50000));

    t.equal(spawnSync('blockdev', ['--setrw', dev]).status, 0, 'the device takes writes again');
    t.ok(await until(() => inSync(mnt)), 'the copy is retried, resynchronized and in sync');
    s = await states(mnt);
    await m.unmount();
    t.match(m.log(), /copy \/dev\/loop\d+: failed/, 'the state change is logged');
    t.same(treeDiff(await imageTree(A.img, 'DATA'), await imageTree(dev, 'DATA')), [], 'the device holds the same tree');
    await fsckBoth(t, A.img, 'primary');
    await fsckBoth(t, dev, 'copy on the loop device');
  });

t.test('a copy that lost a stretch of its image: scrub repairs it; an unreadable one is refused, a missing one left out', async (t) => {
  const w = fuseUnavailable();
  if (w) return t.skip(w);
  const A = await newImage(t, 256 << 20, ['DATA']);
  const B = await newImage(t, 256 << 20, ['none']);
  const mnt = path.join(A.dir, 'mnt');
  let m = await mount(t, `${A.img}@DATA`, mnt, ['-o', `copy=${B.img}`]);
  for (let i = 0; i < 30; i++) fs.writeFileSync(path.join(mnt, `f${i}`), randomBytes(200000));
  t.ok(await until(() => inSync(mnt)), 'in sync');
  await m.unmount();
  // The stretch of the copy's image holding the data of f5..f25 is lost (a hole punched through it).
  const h = await Hammer2Fs.open(B.img, { lock: false });
  const offs: number[] = [];
  const p = h.pfs('DATA')!;
  for (let i = 5; i <= 25; i++) {
    scanRange(h.dev.reader, inodeBlockset(p.resolve(`/f${i}`).data), 0n, KEY_MAX, (b) => {
      if (b.type === BrefType.DATA) offs.push(Number(b.dataOff & ~0x3fn));
    });
  }
  h.close();
  const lo = Math.min(...offs);
  const hi = Math.max(...offs) + 65536;
  t.equal(spawnSync('fallocate', ['-p', '-o', String(lo), '-l', String(hi - lo), B.img]).status, 0, `${hi - lo} bytes of the copy punched out`);
  m = await mount(t, `${A.img}@DATA`, mnt, ['-o', `copy=${B.img}`]);
  t.ok(await until(() => inSync(mnt)), 'the copy looks in sync (its tree is intact)');
  const r = await runH2(['-s', mnt, 'scrub', '--json']);
  const nodes = JSON.parse(r.out).nodes as { damaged: number; repaired: number }[];
  t.ok(nodes[1].damaged >= 21 && nodes[1].repaired >= 21, `scrub found ${nodes[1].damaged} damaged items on the copy and repaired ${nodes[1].repaired}`);
  t.equal(nodes[0].damaged, 0, 'none on the primary');
  await m.unmount();
  t.same(treeDiff(await imageTree(A.img, 'DATA'), await imageTree(B.img, 'DATA')), [], 'the copy holds the tree again');
  await fsckBoth(t, B.img, 'repaired copy');

  // A copy image that is gone: the mount goes on without it (offline).
  fs.renameSync(B.img, `${B.img}.away`);
  m = await mount(t, `${A.img}@DATA`, mnt, ['-o', `copy=${B.img}`]);
  t.equal((await states(mnt))[1].state, 'offline', 'a missing copy is offline, the mount serves');
  await m.unmount();
  fs.renameSync(`${B.img}.away`, B.img);
  // One whose header is gone is no HAMMER2 image any more: refused with the reason.
  fs.writeFileSync(B.img, Buffer.alloc(65536), { flag: 'r+' });
  const refused = await mountRefusal(t, `${A.img}@DATA`, mnt, ['-o', `copy=${B.img}`]);
  t.match(refused, /cannot be used as a copy.*not a HAMMER2/s, 'an image that is not HAMMER2 (any more) is refused with the reason');
});
