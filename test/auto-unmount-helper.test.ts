// Each mount made with auto_unmount has a fusermount3 helper waiting on a
// socket the daemon holds. A daemon serving several PFSs ends sessions
// while it runs: the helper of an unmounted PFS must go with it, not
// linger until the daemon exits.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { newImage, runH2 } from './lib/cli';
import { fuseUnavailable, MOUNT_BIN } from './lib/env';
import { mount } from './lib/mount';

process.env.HAMMER2_QUIET_SHIM = '1';
const helpers = (mnt: string) => spawnSync('pgrep', ['-f', `fusermount3 .* -- ${mnt}$`], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).length;

t.test('the fusermount3 helper of a PFS unmounted from a running daemon goes away', async (t) => {
  const why = fuseUnavailable();
  if (why) return t.skip(why);
  const A = await newImage(t, 256 << 20, ['DATA']);
  t.equal((await runH2(['-s', A.img, 'pfs-create', 'X'])).status, 0, 'a second PFS');
  const m1 = await mount(t, `${A.img}@DATA`, path.join(A.dir, 'm1'));
  const m2 = path.join(A.dir, 'm2');
  fs.mkdirSync(m2);
  for (let i = 0; i < 3; i++) {
    const r = spawnSync(process.execPath, [MOUNT_BIN, `${A.img}@X`, m2], { encoding: 'utf8', env: { ...process.env } });
    t.equal(r.status, 0, `X mounted through the running daemon (${i + 1}) ${r.stderr}`);
    spawnSync('fusermount3', ['-u', m2]);
  }
  await new Promise((r) => setTimeout(r, 500));
  t.equal(helpers(m2), 0, 'no helper left for the unmounted PFS');
  t.equal(helpers(path.join(A.dir, 'm1')), 1, 'the mounted one keeps its own');
  await m1.unmount();
});
