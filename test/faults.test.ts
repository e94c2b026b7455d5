// Faults at the image: the host filesystem under a sparse image fills up.
// The caller gets an error, the daemon keeps serving, media keeps the last
// commit, and once the host has room again the same data commits intact.
import t, { Test } from 'tap';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { formatHammer2 } from '../mkfs/newfs';
import { Hammer2Fs } from '../src/fs';
import { nativeShim } from '../src/store';
import { fuseUnavailable, haveRef, refFsck, smallHost, tempDir } from './lib/env';
import { mount } from './lib/mount';

process.env.HAMMER2_QUIET_SHIM = '1';

/** A 1 GiB sparse image on a 48 MiB host of which a filler takes 24 MiB; null (skipped) without a tmpfs. */
async function fullHost(t: Test): Promise<{ dir: string; img: string; filler: string } | null> {
  const dir = tempDir(t);
  const h = smallHost(t, dir, 48);
  if ('why' in h) {
    t.skip(h.why);
    return null;
  }
  const img = path.join(h.host, 'h2.img');
  await formatHammer2({ paths: [img], sizes: [1 << 30] });
  const filler = path.join(h.host, 'filler');
  fs.writeFileSync(filler, Buffer.alloc(24 << 20, 1));
  return { dir, img, filler };
}

/** Room again on the host: fsync (the retry), unmount, and the image opened read-only. */
async function makeRoomAndReopen(filler: string, fh: fs.promises.FileHandle, m: { unmount(): Promise<void> }, img: string) {
  fs.rmSync(filler);
  await fh.sync();
  await fh.close();
  await m.unmount();
  const h2 = await Hammer2Fs.open(img, { writable: false, lock: false });
  return { h2, p: h2.pfs('DATA')! };
}

const why = fuseUnavailable();
if (why) t.plan(0, why);
else {
  t.test('host disk full: clean error, reads go on, retry commits everything', async (t) => {
    const f = await fullHost(t);
    if (!f) return;
    const { dir, img, filler } = f;
    const mnt = path.join(dir, 'mnt');
    // No timer and a dirty limit above the file: the fault surfaces at fsync.
    const m = await mount(t, img, mnt, ['-o', 'flush=0,dirty=128']);
    fs.writeFileSync(path.join(mnt, 'before'), 'committed before the fault');
    const fh0 = await fs.promises.open(path.join(mnt, 'before'), 'r+');
    await fh0.sync();
    await fh0.close();

    const data = randomBytes(40 << 20);
    const fh = await fs.promises.open(path.join(mnt, 'big'), 'w');
    await fh.write(data, 0, data.length, 0);
    await t.rejects(fh.sync(), { code: /ENOSPC|EIO/ }, 'fsync reports the full host disk');
    t.equal(fs.readFileSync(path.join(mnt, 'before'), 'utf8'), 'committed before the fault', 'reads still work');
    t.ok((await fs.promises.readFile(path.join(mnt, 'big'))).equals(data), 'pending data is still readable');

    const { h2, p } = await makeRoomAndReopen(filler, fh, m, img);
    const n = p.resolve('/big');
    t.ok(p.read(n, 0, data.length).equals(data), 'after the retry the data is on media, intact');
    h2.close();
  });

  // Commits at the dirty limit are written on the shim's I/O thread
  // (Hammer2Fs.flushBehind): the failure reaches the next write that needs
  // a commit, and nothing accepted is lost.
  t.test('host disk full under commits written behind: errors, nothing lost, retry commits all', { skip: !nativeShim()?.ioStart && 'no I/O thread in the shim' }, async (t) => {
    const f = await fullHost(t);
    if (!f) return;
    const { dir, img, filler } = f;
    const mnt = path.join(dir, 'mnt');
    // A dirty limit of 4 MiB: commits start behind every few writes.
    const m = await mount(t, img, mnt, ['-o', 'flush=0,dirty=4']);
    // Incompressible: LZ4 would otherwise store each MiB in a few KiB.
    const chunks = Array.from({ length: 48 }, () => randomBytes(1 << 20));
    const fh = await fs.promises.open(path.join(mnt, 'big'), 'w');
    let accepted = 0;
    let err: NodeJS.ErrnoException | null = null;
    for (let i = 0; i < chunks.length; i++) {
      try {
        await fh.write(chunks[i], 0, chunks[i].length, i << 20);
        accepted++;
      } catch (e) {
        err = e as NodeJS.ErrnoException;
        break;
      }
    }
    t.ok(err, `a write failed once the host was full (after ${accepted} MiB)`);
    t.match(err?.code, /ENOSPC|EIO/);
    const want = Buffer.concat(chunks.slice(0, accepted));
    t.ok((await fs.promises.readFile(path.join(mnt, 'big'))).subarray(0, want.length).equals(want), 'everything accepted reads back');
    // Changes that need no commit go on meanwhile (the failed one is retried by the next commit, not by every request).
    fs.mkdirSync(path.join(mnt, 'made-meanwhile'));
    const { h2, p } = await makeRoomAndReopen(filler, fh, m, img);
    t.ok(p.read(p.resolve('/big'), 0, want.length).equals(want), 'after the retry every accepted byte is on media');
    t.ok(p.lookup(p.root, Buffer.from('made-meanwhile')), 'the directory made meanwhile too');
    h2.close();
    if (haveRef('fsck_hammer2')) t.equal(refFsck(img).status, 0, 'reference fsck_hammer2 passes');
  });
}
