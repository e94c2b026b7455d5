// The inode-based operation layer without FUSE: readdir cookies that resume
// correctly while the directory changes, ownership rules for new inodes,
// and ENOSPC as a clean error that deletion undoes.
import t from 'tap';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { formatHammer2 } from '../mkfs/newfs';
import { Hammer2Fs } from '../src/fs';
import { Hammer2Ops } from '../src/fuse/ops';
import { tempDir } from './lib/env';

process.env.HAMMER2_QUIET_SHIM = '1';
const root = { uid: 0, gid: 0, pid: 1 };
const user = { uid: 1000, gid: 1000, pid: 2 };
const b = (s: string) => Buffer.from(s);

async function fresh(t: any, size: number) {
  const dir = tempDir(t);
  const img = path.join(dir, 'img');
  await formatHammer2({ paths: [img], sizes: [size] });
  const fs = await Hammer2Fs.open(img, { writable: true, lock: false });
  t.teardown(() => fs.close());
  const ops = new Hammer2Ops(fs, fs.pfs('DATA')!);
  return { img, fs, ops };
}

t.test('readdir resumes from cookies, also across changes', async (t) => {
  const { ops, fs } = await fresh(t, 256 << 20);
  const d = ops.mkdir(root, 1n, b('d'), 0o755).ino;
  for (let i = 0; i < 500; i++) ops.mknod(root, d, b(`f${i}`), 0o100644, 0);
  fs.flush();
  for (let i = 500; i < 700; i++) ops.mknod(root, d, b(`f${i}`), 0o100644, 0); // pending, not flushed
  const seen = new Set<string>();
  let off = 0n;
  for (;;) {
    const chunk = ops.readdir(root, d, off, 37);
    if (!chunk.length) break;
    for (const e of chunk) seen.add(e.name.toString());
    off = chunk[chunk.length - 1].next;
  }
  t.equal(seen.size, 702, 'all 700 entries plus . and ..');
  // Removing entries already listed does not make the rest skip or repeat.
  const first = ops.readdir(root, d, 0n, 100);
  for (const e of first.slice(2, 50)) ops.unlink(root, d, e.name);
  const rest: string[] = [];
  off = first[first.length - 1].next;
  for (;;) {
    const chunk = ops.readdir(root, d, off, 50);
    if (!chunk.length) break;
    rest.push(...chunk.map((e) => e.name.toString()));
    off = chunk[chunk.length - 1].next;
  }
  t.equal(rest.length, 702 - 100, 'the remaining entries, each once');
  t.equal(new Set(rest).size, rest.length);
});

t.test('new inodes belong to their creator; setgid directories pass on their group', async (t) => {
  const { ops } = await fresh(t, 256 << 20);
  const f = ops.mknod(user, 1n, b('mine'), 0o100640, 0);
  t.equal(f.attr.uid, 1000);
  t.equal(f.attr.gid, 1000);
  const sg = ops.mkdir(root, 1n, b('sg'), 0o2775);
  ops.setattr(root, sg.ino, { gid: 50 });
  const inner = ops.mkdir(user, sg.ino, b('inner'), 0o755);
  t.equal(inner.attr.gid, 50, 'group from the setgid directory');
  t.ok(inner.attr.mode & 0o2000, 'subdirectory keeps setgid');
  const file = ops.mknod(user, sg.ino, b('file'), 0o100644, 0);
  t.equal(file.attr.gid, 50);
  t.notOk(file.attr.mode & 0o2000, 'files do not become setgid');
});

t.test('ENOSPC is clean and deleting gives the space back', async (t) => {
  const { ops, fs, img } = await fresh(t, 64 << 20);
  const data = randomBytes(1 << 20);
  let written = 0;
  let err: any;
  for (let i = 0; i < 200 && !err; i++) {
    try {
      const { entry, fh } = ops.create(root, 1n, b(`big${i}`), 0o100644, 2);
      for (let k = 0; k < 4; k++) written += ops.write(root, entry.ino, data, k << 20, fh);
      ops.release(root, entry.ino, fh);
    } catch (e) {
      err = e;
    }
  }
  t.match(err, { name: 'FsError', errno: 'ENOSPC' }, `ENOSPC after ${written >> 20} MiB`);
  t.equal(fs.failed, null, 'the filesystem is still healthy');
  fs.flush();
  // Delete everything and write again: bulkfree finds the space.
  for (const e of ops.readdir(root, 1n, 2n, 10000)) ops.unlink(root, 1n, e.name);
  fs.flush();
  const { entry, fh } = ops.create(root, 1n, b('again'), 0o100644, 2);
  for (let k = 0; k < 8; k++) ops.write(root, entry.ino, data, k << 20, fh);
  ops.fsync(root, entry.ino, false, fh);
  t.equal(ops.getattr(root, entry.ino).size, 8 << 20, 'space came back after deleting');
  fs.close();
  const again = await Hammer2Fs.open(img, { writable: false, lock: false });
  const p = again.pfs('DATA')!;
  const n = p.resolve('/again');
  t.ok(p.read(n, 0, 1 << 20).equals(data), 'data intact after remount');
  again.close();
});
