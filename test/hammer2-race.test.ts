// Two hammer2 commands racing on one PFS: on an unmounted image the image
// lock lets one in and the other fails at once, naming the holder; on a
// mounted one the daemon runs requests one at a time, so the loser sees the
// winner's change. Either way: a clear message, exit status 1, and nothing
// half done on the image.
import t from 'tap';
import * as path from 'node:path';

process.env.HAMMER2_QUIET_SHIM = '1';

import { Hammer2Device } from '../src/engine';
import { mount } from './lib/mount';
import { newImage, runH2 } from './lib/cli';
import { fuseUnavailable, haveRef, refFsck } from './lib/env';

const run = (args: string[]) => runH2(args);

async function labels(img: string): Promise<string[]> {
  const d = await Hammer2Device.open(img, { lock: false });
  try {
    return d
      .listPfs()
      .map((p) => p.name)
      .sort();
  } finally {
    d.close();
  }
}

const image = (t: Tap.Test) => newImage(t, 256 << 20);

t.test('unmounted image: the lock lets one command in', async (t) => {
  const { img } = await image(t);
  let wins = 0;
  for (let round = 0; round < 4; round++) {
    const rs = await Promise.all([run(['-s', img, 'pfs-create', `A${round}`]), run(['-s', img, 'pfs-create', `B${round}`])]);
    for (const r of rs) {
      if (r.status === 0) {
        wins++;
        t.match(r.out, /^hammer2: pfs_create\([AB]\d\): SUCCESS\n$/);
      } else {
        t.equal(r.status, 1);
        // The holder is named unless it let go between the refusal and the lookup (a loaded machine).
        t.match(r.err, /image is in use by (process \d+ \(.*hammer2.*\)|another process) \(exclusive lock refused\)/, 'the loser is told who holds the image');
      }
    }
  }
  const have = (await labels(img)).filter((l) => l !== 'LOCAL' && l !== 'ROOT');
  t.equal(have.length, wins, 'exactly the winners\' PFSs exist');
  t.ok(wins >= 4, `at least one per round won (${wins})`);
  if (haveRef('fsck_hammer2')) t.equal(refFsck(img).status, 0, 'reference fsck clean');
});

t.test('mounted PFS: the daemon serializes, the loser sees the winner', { skip: fuseUnavailable() ?? false }, async (t) => {
  const { dir, img } = await image(t);
  const mnt = path.join(dir, 'mnt');
  const m = await mount(t, `${img}@ROOT`, mnt);
  // Same label from two commands at once: one creates it, one finds it there.
  let rs = await Promise.all([run(['-s', mnt, 'pfs-create', 'SAME']), run(['-s', mnt, 'pfs-create', 'SAME'])]);
  t.same(rs.map((r) => r.status).sort(), [0, 1]);
  const loser = rs.find((r) => r.status === 1)!;
  t.match(loser.err, /pfs_create\(SAME\): already present/);
  // Same snapshot name twice at once.
  rs = await Promise.all([run(['snapshot', mnt, 'SNAP']), run(['snapshot', mnt, 'SNAP'])]);
  t.same(rs.map((r) => r.status).sort(), [0, 1]);
  t.match(rs.find((r) => r.status === 1)!.err, /SNAP.*(exists|already)/);
  // Deleting and snapshotting one PFS at once: whichever runs first decides, both say so.
  rs = await Promise.all([run(['-s', mnt, 'pfs-delete', 'SAME']), run(['-s', mnt, 'pfs-delete', 'SAME'])]);
  t.same(rs.map((r) => r.status).sort(), [0, 1]);
  await m.unmount();
  t.same(await labels(img), ['LOCAL', 'ROOT', 'SNAP']);
  if (haveRef('fsck_hammer2')) t.equal(refFsck(img).status, 0, 'reference fsck clean');
});
