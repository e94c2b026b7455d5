// Removed inodes that nobody holds open leave memory at once (only their
// numbers wait for the next flush), whether they reached media or not, and
// are gone by number before and after that flush.
import t from 'tap';
import * as path from 'node:path';
import { formatHammer2 } from '../mkfs/newfs';
import { FsError } from '../src/engine';
import { Hammer2Fs } from '../src/fs';
import { ObjType } from '../src/media';
import { tempDir } from './lib/env';

process.env.HAMMER2_QUIET_SHIM = '1';
const cred = { uid: 0, gid: 0 };
const now = 1_700_000_000_000_000n;

t.test('rm of committed and uncommitted inodes', async (t) => {
  const img = path.join(tempDir(t), 'img');
  await formatHammer2({ paths: [img], sizes: [1 << 30] });
  let h2 = await Hammer2Fs.open(img, { writable: true, lock: false });
  let pfs = h2.pfs('DATA')!;
  const old = pfs.create(pfs.root, Buffer.from('old'), ObjType.REGFILE, 0o644, cred, now);
  pfs.write(old, 0, Buffer.alloc(70000, 1), now);
  h2.flush();
  const fresh = pfs.create(pfs.root, Buffer.from('fresh'), ObjType.REGFILE, 0o644, cred, now);
  pfs.write(fresh, 0, Buffer.alloc(70000, 2), now);
  const pendingBefore = pfs.pendingBytes;
  pfs.unlink(pfs.root, Buffer.from('old'), now);
  pfs.unlink(pfs.root, Buffer.from('fresh'), now);
  t.notOk(pfs.live.has(old.inum) || pfs.live.has(fresh.inum), 'neither is held in memory');
  t.ok(pfs.pendingBytes < pendingBefore, 'the unwritten data is dropped from the pending count');
  for (const n of [old, fresh]) t.throws(() => pfs.getInode(n.inum), FsError, `inode ${n.inum} is gone before the flush`);
  h2.flush();
  for (const n of [old, fresh]) t.throws(() => pfs.getInode(n.inum), `... and after it (no index entry left)`);
  h2.close();
  h2 = await Hammer2Fs.open(img, { writable: true, lock: false });
  pfs = h2.pfs('DATA')!;
  t.equal(pfs.lookup(pfs.root, Buffer.from('old')), null);
  t.equal(pfs.lookup(pfs.root, Buffer.from('fresh')), null);
  for (const n of [old, fresh]) t.throws(() => pfs.getInode(n.inum), `inode ${n.inum} is not in the index after a remount`);
  h2.close();
});
