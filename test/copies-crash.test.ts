// SIGKILL with copies: during a resynchronization and during fsync'ed
// writes. Afterwards both images pass both fscks, every file whose fsync
// returned is on the primary and on the copy that was in sync, and the
// next mount brings the copy level again.
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Hammer2Fs } from '../src/fs';
import { ObjType } from '../src/media';
import { newImage, runH2 } from './lib/cli';
import { forceUnmount, mount } from './lib/mount';
import { fuseUnavailable } from './lib/env';
import { imageTree, treeDiff, fsckBoth } from './lib/pfstree';

process.env.HAMMER2_QUIET_SHIM = '1';

async function copyStates(mnt: string): Promise<{ state: string; tid: string }[]> {
  const r = await runH2(['-s', mnt, 'copy-status', '--json']);
  return r.status === 0 ? JSON.parse(r.out).copies : [];
}

async function waitInSync(mnt: string, ms = 60000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const s = await copyStates(mnt);
    if (s.length > 1 && s.every((c) => c.state === 'in-sync' && c.tid === s[0].tid)) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

/** The content of `file` in PFS DATA of an unmounted image, or null. */
async function readFile(img: string, file: string): Promise<Buffer | null> {
  const h = await Hammer2Fs.open(img, { lock: false });
  try {
    const p = h.pfs('DATA')!;
    const n = p.resolve(file);
    if (n.data.meta.type !== ObjType.REGFILE) return null;
    return p.read(n, 0, Number(n.data.meta.size));
  } catch {
    return null;
  } finally {
    h.close();
  }
}

const why = fuseUnavailable();
if (why) t.plan(0, why);
else
  t.test('SIGKILL during resync and during fsynced writes', async (t) => {
    const A = await newImage(t, 512 << 20, ['DATA']);
    const B = await newImage(t, 512 << 20, ['none']);
    const mnt = path.join(A.dir, 'mnt');
    let m = await mount(t, `${A.img}@DATA`, mnt);
    for (let i = 0; i < 24; i++) fs.writeFileSync(path.join(mnt, `big${i}`), randomBytes(2 << 20));
    await m.unmount();

    // Killed while the copy is being filled (48 MiB at 8 MiB a step).
    m = await mount(t, `${A.img}@DATA`, mnt, ['-o', `copy=${B.img}`]);
    await new Promise((r) => setTimeout(r, 150));
    m.proc.kill('SIGKILL');
    await new Promise((r) => m.proc.once('exit', r));
    forceUnmount(mnt);
    await fsckBoth(t, A.img, 'primary after a kill mid-resync');
    await fsckBoth(t, B.img, 'copy after a kill mid-resync');

    // The next mount resumes and converges.
    m = await mount(t, `${A.img}@DATA`, mnt, ['-o', `copy=${B.img}`]);
    t.ok(await waitInSync(mnt), 'the copy converges after the restart');

    // Killed during fsynced writes with the copy in sync.
    const synced = new Map<string, string>();
    let stop = false;
    const writer = (async () => {
      for (let i = 0; !stop; i++) {
        const name = `w${i}`;
        const data = randomBytes(1000 + ((i * 7919) % 200000));
        try {
          const fh = await fs.promises.open(path.join(mnt, name), 'w');
          await fh.write(data);
          await fh.sync();
          await fh.close();
          synced.set(name, createHash('sha256').update(data).digest('hex'));
        } catch {
          return;
        }
      }
    })();
    await new Promise((r) => setTimeout(r, 1500));
    m.proc.kill('SIGKILL');
    stop = true;
    await new Promise((r) => m.proc.once('exit', r));
    forceUnmount(mnt);
    await writer;
    t.ok(synced.size > 3, `${synced.size} files fsynced before the kill`);
    await fsckBoth(t, A.img, 'primary after a kill mid-write');
    await fsckBoth(t, B.img, 'copy after a kill mid-write');
    let lostA = 0;
    let lostB = 0;
    for (const [name, h] of synced) {
      const a = await readFile(A.img, `/${name}`);
      const b = await readFile(B.img, `/${name}`);
      if (!a || createHash('sha256').update(a).digest('hex') !== h) lostA++;
      if (!b || createHash('sha256').update(b).digest('hex') !== h) lostB++;
    }
    t.equal(lostA, 0, 'every fsynced file is on the primary');
    t.equal(lostB, 0, 'every fsynced file is on the copy');

    m = await mount(t, `${A.img}@DATA`, mnt, ['-o', `copy=${B.img}`]);
    t.ok(await waitInSync(mnt), 'in sync again after the restart');
    await m.unmount();
    t.same(treeDiff(await imageTree(A.img, 'DATA'), await imageTree(B.img, 'DATA')), [], 'copy identical to the primary');
    await fsckBoth(t, B.img, 'copy at the end');
  });
