// Bulkfree's walk (src/engine/bulkfree.ts): blocks met in several trees are
// walked once (SeenBlocks, exact like a set of data_offs), leaves are marked
// from their slots in place. After a bulkfree of an image with several
// PFSs, a snapshot sharing blocks, deletions and many commits, nothing
// reachable is freed: both fscks are clean and every tree reads back, also
// after the freed space is written again.
import t from 'tap';
import * as path from 'node:path';
import { formatHammer2 } from '../mkfs/newfs';
import { SeenBlocks } from '../src/engine/bulkfree';
import { Hammer2Fs } from '../src/fs';
import { ObjType } from '../src/media';
import { checkHammer2 } from '../fsck/check';
import { haveRef, refFsck, tempDir } from './lib/env';
import { content, mkfile, pfsTree, tick, treeDiff } from './lib/pfstree';

process.env.HAMMER2_QUIET_SHIM = '1';
const cred = { uid: 0, gid: 0 };

t.test('SeenBlocks: the first meeting of a block only, exact for sizes and odd offsets', async (t) => {
  const s = new SeenBlocks();
  t.ok(s.first(1 << 20, 10), 'a 1 KiB block, first');
  t.notOk(s.first(1 << 20, 10), 'again: seen');
  t.ok(s.first(1 << 20, 14), 'the same offset with another size is another block');
  t.notOk(s.first(1 << 20, 14), 'and is seen once');
  t.notOk(s.first(1 << 20, 10), 'the first is still seen');
  t.ok(s.first((1 << 20) + 1024, 10), 'its neighbour KiB');
  t.ok(s.first(5 * 2 ** 40 + 65536, 16), 'far out (5 TiB)');
  t.notOk(s.first(5 * 2 ** 40 + 65536, 16), 'seen');
  t.ok(s.first(3 * 1024 + 64, 10), 'an offset that is not a multiple of 1 KiB');
  t.ok(s.first(3 * 1024, 10), 'does not hide the block at the KiB it lies in');
  t.notOk(s.first(3 * 1024 + 64, 10), 'and is seen');
});

t.test('bulkfree with several PFSs, a snapshot, deletions and many commits: nothing reachable is freed', async (t) => {
  const dir = tempDir(t);
  const img = path.join(dir, 'img');
  // (Sparse, 7 GiB: room for four volume header zones, so older headers' trees count.)
  await formatHammer2({ paths: [img], sizes: [7 * 2 ** 30], labels: ['DATA', 'OTHER'] });
  let h = await Hammer2Fs.open(img, { writable: true, lock: false });
  const p = h.pfs('DATA')!;
  const q = h.pfs('OTHER')!;
  const d = p.create(p.root, Buffer.from('d'), ObjType.DIRECTORY, 0o755, cred, tick());
  for (let i = 0; i < 3000; i++) {
    mkfile(p, i % 3 ? d : p.root, `f${i}`, content(i, i % 5 === 0 ? 70000 : 100 + ((i * 37) % 3000)));
    if (i % 500 === 499) h.flush();
  }
  for (let i = 0; i < 200; i++) mkfile(q, q.root, `o${i}`, content(10000 + i, 5000));
  h.flush();
  h.snapshotPfs(p, 'DATA.snap');
  // Change and delete after the snapshot: the snapshot keeps the old blocks.
  for (let i = 0; i < 3000; i += 7) {
    if (i % 2) p.unlink(i % 3 ? d : p.root, Buffer.from(`f${i}`), tick());
    else p.write(p.resolve(`/${i % 3 ? 'd/' : ''}f${i}`), 0, content(20000 + i, 2000), tick());
    if (i % 700 === 0) h.flush();
  }
  h.flush();
  const want = { data: pfsTree(p), snap: pfsTree(h.pfs('DATA.snap')!), other: pfsTree(q) };
  const before = h.freeBytes();
  const r = h.bulkfree();
  t.ok(r.freed > 0, `freed ${r.freed} bytes`);
  t.equal(r.fixedUp, 0, 'no block in use was marked free');
  t.ok(r.headers >= 2, `older headers' trees scanned too (${r.headers})`);
  t.ok(h.freeBytes() > before, 'free space grew');
  h.close();
  const c = await checkHammer2(img, { lock: false });
  t.equal(c.report.errors, 0, 'our fsck: no errors');
  if (haveRef('fsck_hammer2')) {
    const ref = refFsck(img);
    t.equal(ref.status, 0, `the reference fsck passes: ${ref.out.slice(-300)}`);
  }
  h = await Hammer2Fs.open(img, { writable: true, lock: false });
  t.same(treeDiff(pfsTree(h.pfs('DATA')!), want.data), [], 'DATA reads back');
  t.same(treeDiff(pfsTree(h.pfs('DATA.snap')!), want.snap), [], 'the snapshot reads back');
  t.same(treeDiff(pfsTree(h.pfs('OTHER')!), want.other), [], 'OTHER reads back');
  // Writing into the freed space damages nothing.
  const p2 = h.pfs('DATA')!;
  for (let i = 0; i < 300; i++) mkfile(p2, p2.root, `after${i}`, content(30000 + i, 40000));
  h.flush();
  t.same(treeDiff(pfsTree(h.pfs('DATA.snap')!), want.snap), [], 'the snapshot still reads back after the space is reused');
  h.close();
  t.equal((await checkHammer2(img, { lock: false })).report.errors, 0, 'our fsck: no errors after reuse');
});
