// Faults at the image: the host filesystem under a sparse image fills up.
// The caller gets an error, the daemon keeps serving, media keeps the last
// commit, and once the host has room again the same data commits intact.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { formatHammer2 } from '../mkfs/newfs';
import { Hammer2Fs } from '../src/fs';
import { fuseUnavailable, tempDir } from './lib/env';
import { mount } from './lib/mount';

process.env.HAMMER2_QUIET_SHIM = '1';
const why = fuseUnavailable();
if (why) t.plan(0, why);
else
  t.test('host disk full: clean error, reads go on, retry commits everything', async (t) => {
    const dir = tempDir(t);
    const host = path.join(dir, 'host');
    fs.mkdirSync(host);
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=48m', 'tmpfs', host]);
    if (r.status !== 0) return t.skip(`cannot mount a tmpfs: ${r.stderr}`);
    t.teardown(() => {
      spawnSync('umount', ['-l', host]);
    });
    const img = path.join(host, 'h2.img');
    await formatHammer2({ paths: [img], sizes: [1 << 30] });
    const filler = path.join(host, 'filler');
    fs.writeFileSync(filler, Buffer.alloc(24 << 20, 1));
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

    fs.rmSync(filler);
    await fh.sync();
    await fh.close();
    await m.unmount();
    const h2 = await Hammer2Fs.open(img, { writable: false, lock: false });
    const p = h2.pfs('DATA')!;
    const n = p.resolve('/big');
    t.ok(p.read(n, 0, data.length).equals(data), 'after the retry the data is on media, intact');
    h2.close();
  });
