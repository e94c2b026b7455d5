// The synchronizer at the engine/fs level (no FUSE, no daemon): a PFS on
// one image brought level with another image's node of the same cluster —
// a full first pass, incremental passes whose cost follows the change,
// deletions, passes cut into budgeted steps, and damaged target branches
// replaced from the source. Every result is compared file by file, and
// both images go through our fsck and, where built, the reference's.
import t from 'tap';
import * as fs from 'node:fs';
import { Hammer2Fs } from '../src/fs';
import { Blockref, BrefType, inodeBlockset, ObjType, CompMethod, CheckMethod } from '../src/media';
import { syncPfs, SyncCursor, SyncStats, emptyStats, syncedTid } from '../src/sync';
import { newImage } from './lib/cli';
import { content, imageTree, mkfile, openRw, pfsTree, tick, treeDiff, twoNodes, fsckBoth } from './lib/pfstree';

process.env.HAMMER2_QUIET_SHIM = '1';
const cred = { uid: 0, gid: 0 };

/** One pass (or all its budgeted steps) from label on `src` into the same label on `dst`. */
function sync(src: Hammer2Fs, dst: Hammer2Fs, label: string, opts: { budget?: number; full?: boolean } = {}): { stats: SyncStats; steps: number } {
  const stats = emptyStats();
  let from: SyncCursor | undefined;
  let steps = 0;
  do {
    const s = src.dev.findPfs(label)!;
    const d = dst.dev.findPfs(label)!;
    const since = opts.full ? 0n : syncedTid(d.bref, d.inode);
    let next: SyncCursor | null = null;
    dst.commitPfsRoot(
      label,
      (w) => {
        const r = syncPfs({ reader: src.dev.reader }, s.inode, { reader: dst.dev.reader, writer: w }, d.inode, {
          since,
          from,
          budgetBytes: opts.budget,
          stats,
        });
        next = r.next;
        // Until a pass completes the copy is still only as current as before.
        return { root: r.root, modifyTid: r.next ? since : s.bref.modifyTid };
      },
      { minTid: s.bref.modifyTid },
    );
    from = next ?? undefined;
    steps++;
  } while (from);
  return { stats, steps };
}

t.test('full, incremental and budgeted passes; deletions; healing', async (t) => {
  const { A, B, a, b } = await twoNodes(t, 256 << 20);

  // A tree with every kind of item: embedded, multi-block, compressible and
  // zero-filled files, a long name, a symlink, a hardlink, nested dirs, and
  // enough files in one directory to need indirect blocks.
  const p = a.pfs('DATA')!;
  const root = p.root;
  mkfile(p, root, 'tiny', Buffer.from('hello'));
  mkfile(p, root, 'big', content(1, 3 << 20));
  mkfile(p, root, 'text', content(2, 700 << 10, true));
  mkfile(p, root, 'zeros', Buffer.alloc(300 << 10));
  mkfile(p, root, 'x'.repeat(200), content(3, 5000));
  p.symlink(root, Buffer.from('link'), Buffer.from('big'), cred, tick());
  const d1 = p.create(root, Buffer.from('d1'), ObjType.DIRECTORY, 0o755, cred, tick());
  const d2 = p.create(d1, Buffer.from('d2'), ObjType.DIRECTORY, 0o700, cred, tick());
  const hl = mkfile(p, d2, 'hl', content(4, 70000));
  p.link(hl, root, Buffer.from('hl2'), tick());
  const many = p.create(root, Buffer.from('many'), ObjType.DIRECTORY, 0o755, cred, tick());
  for (let i = 0; i < 400; i++) mkfile(p, many, `f${i}`, content(100 + i, (i * 37) % 3000));
  a.flush();

  const s1 = sync(a, b, 'DATA');
  t.same(treeDiff(pfsTree(a.pfs('DATA')!), await imageTree(B.img, 'DATA')), [], 'first pass: trees identical');
  t.ok(s1.stats.leavesCopied > 400, `first pass copied ${s1.stats.leavesCopied} leaves`);
  t.equal(b.dev.findPfs('DATA')!.bref.modifyTid, a.dev.findPfs('DATA')!.bref.modifyTid, 'the copy records the tid it is synchronized to');
  t.same(b.dev.findPfs('DATA')!.inode.meta.pfsClid, a.dev.findPfs('DATA')!.inode.meta.pfsClid, 'the copy keeps the cluster id');

  // Nothing changed: a pass reads almost nothing.
  const s0 = sync(a, b, 'DATA');
  t.equal(s0.stats.leavesCopied, 0, 'an in-sync pass copies nothing');
  t.ok(s0.stats.srcBlocksRead <= 1, `an in-sync pass reads ${s0.stats.srcBlocksRead} source blocks`);

  // A small change: one block of the big file, one new file, one removal, a rename, a chmod.
  const big = p.resolve('/big');
  p.write(big, 1 << 20, content(9, 100), tick());
  mkfile(p, d2, 'new', content(5, 10));
  p.unlink(many, Buffer.from('f7'), tick());
  p.rename(root, Buffer.from('text'), d1, Buffer.from('text-moved'), tick());
  p.setattr(p.resolve('/tiny'), { mode: 0o600 }, tick());
  a.flush();
  const s2 = sync(a, b, 'DATA');
  t.same(treeDiff(pfsTree(a.pfs('DATA')!), await imageTree(B.img, 'DATA')), [], 'incremental pass: trees identical');
  t.ok(s2.stats.leavesCopied < 30, `incremental pass copied ${s2.stats.leavesCopied} leaves`);
  t.ok(s2.stats.srcBlocksRead < s1.stats.srcBlocksRead / 5, `incremental pass read ${s2.stats.srcBlocksRead} source blocks against ${s1.stats.srcBlocksRead} for the full one`);
  t.ok(s2.stats.leavesDeleted >= 2, `deletions carried over (${s2.stats.leavesDeleted})`);

  // Removing many files and a directory tree.
  for (let i = 0; i < 300; i++) p.unlink(many, Buffer.from(`f${i + 50}`), tick());
  p.unlink(d2, Buffer.from('new'), tick());
  a.flush();
  sync(a, b, 'DATA');
  t.same(treeDiff(pfsTree(a.pfs('DATA')!), await imageTree(B.img, 'DATA')), [], 'mass removal carried over');

  // Budgeted steps: a large change copied 256 KiB at a time, each step its own commit.
  for (let i = 0; i < 40; i++) mkfile(p, many, `g${i}`, content(500 + i, 64 << 10));
  p.write(big, 0, content(10, 2 << 20), tick());
  a.flush();
  const s3 = sync(a, b, "DATA", { budget: 256 << 10 });
  t.ok(s3.steps > 5, `budgeted pass took ${s3.steps} steps`);
  t.same(treeDiff(pfsTree(a.pfs('DATA')!), await imageTree(B.img, 'DATA')), [], 'budgeted pass: trees identical');

  await fsckBoth(t, A.img, 'source');
  b.flush();
  await fsckBoth(t, B.img, 'copy');

  // Damage the copy: an inode block and an indirect block of the big
  // directory. A full pass (the scrub) replaces both from the source.
  const bt = await Hammer2Fs.open(B.img, { lock: false });
  const bp = bt.pfs('DATA')!;
  const bigInode = bp.resolve('/big').bref!;
  let indirect: Blockref | null = null;
  for (const x of inodeBlockset(bp.resolve('/many').data)) if (x.type === BrefType.INDIRECT) indirect = x;
  bt.close();
  t.ok(indirect, 'the copy has an indirect block under /many');
  const fd = fs.openSync(B.img, 'r+');
  for (const x of [bigInode, indirect!]) {
    const off = Number(x.dataOff & ~0x3fn) + 100;
    const one = Buffer.alloc(1);
    fs.readSync(fd, one, 0, 1, off);
    one[0] ^= 0xff;
    fs.writeSync(fd, one, 0, 1, off);
  }
  fs.closeSync(fd);
  b.close();
  const b2 = await openRw(B.img);
  t.teardown(() => b2.close());
  const s4 = sync(a, b2, 'DATA', { full: true });
  t.ok(s4.stats.healed >= 2, `full pass replaced ${s4.stats.healed} damaged target branches`);
  t.same(treeDiff(pfsTree(a.pfs('DATA')!), await imageTree(B.img, 'DATA')), [], 'after healing: trees identical');
  b2.flush();
  await fsckBoth(t, B.img, 'healed copy');
});

t.test('a copy is level with a source written by many commits and snapshots', async (t) => {
  const { A, B, a, b } = await twoNodes(t, 128 << 20);
  const p = a.pfs('DATA')!;
  // Change methods per file too: the copy must keep them.
  const z = mkfile(p, p.root, 'zlib', content(7, 200000, true));
  p.setMethods(z, { comp: CompMethod.ZLIB | (6 << 4), check: CheckMethod.SHA192 });
  a.flush();
  for (let round = 0; round < 6; round++) {
    for (let i = 0; i < 20; i++) {
      const name = Buffer.from(`r${round}-${i}`);
      mkfile(p, p.root, name.toString(), content(round * 100 + i, (i * 4099) % 200000));
      if (round > 0 && i % 3 === 0) p.unlink(p.root, Buffer.from(`r${round - 1}-${i}`), tick());
    }
    a.flush();
    if (round === 2) a.snapshotPfs(p, 'snap');
    if (round % 2 === 1) sync(a, b, 'DATA');
  }
  sync(a, b, 'DATA');
  t.same(treeDiff(pfsTree(a.pfs('DATA')!), await imageTree(B.img, 'DATA')), [], 'trees identical');
  const zc = (await Hammer2Fs.open(B.img, { lock: false }));
  const zn = zc.pfs('DATA')!.resolve('/zlib');
  t.equal(zn.data.meta.checkAlgo, CheckMethod.SHA192, 'per-inode check method kept');
  zc.close();
  b.flush();
  await fsckBoth(t, B.img, 'copy');
});
