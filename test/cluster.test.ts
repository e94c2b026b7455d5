// Copies at the cluster layer (no FUSE, no daemon): a PFS on a primary
// image with a copy on another. The copy is filled by resynchronization,
// follows every commit, serves reads where the primary's blocks are
// damaged (data, inode, directory blocks) while the primary is repaired
// from it, and leaves the in-sync set when its host fills up, to rejoin
// once there is room again.
import t from 'tap';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PfsCluster, relation } from '../src/cluster';
import { syncedTid, SyncCursor, syncPfs } from '../src/sync';
import { Hammer2Fs, Pfs } from '../src/fs';
import { BrefType, inodeBlockset, ObjType } from '../src/media';
import { formatHammer2 } from '../mkfs/newfs';
import { newImage } from './lib/cli';
import { flipByte, haveRef, refRead, fileHashes, smallHost, tempDir } from './lib/env';
import { content, imageTree, mkfile, openRw, pfsTree, tick, treeDiff, twoNodes, fsckBoth } from './lib/pfstree';

process.env.HAMMER2_QUIET_SHIM = '1';
const cred = { uid: 0, gid: 0 };

/** A cluster of `p` (on image `aImg`, open as `a`) with a copy on `bImg`, level; closed with `a` at teardown. */
async function inSyncCluster(t: any, a: Hammer2Fs, p: Pfs, aImg: string, bImg: string): Promise<PfsCluster> {
  a.flush();
  const c = new PfsCluster(a, p, aImg, { log: () => {} });
  t.teardown(() => {
    c.close();
    a.close();
  });
  await c.add(bImg);
  await settle(t, c);
  return c;
}

async function settle(t: any, c: PfsCluster, ms = 20000): Promise<void> {
  const end = Date.now() + ms;
  while (!c.settled && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  t.ok(c.settled, 'copies settled');
}

/** Flip one byte inside the block a bref points at (on media, behind every cache). */
const damage = (img: string, dataOff: bigint, at = 100): void => flipByte(img, Number(dataOff & ~0x3fn) + at);

t.test('a copy is filled, follows commits, and repairs the primary', async (t) => {
  const A = await newImage(t, 256 << 20, ['DATA']);
  const B = await newImage(t, 256 << 20, ['none']);
  const logs: string[] = [];
  const a = await openRw(A.img);
  const p = a.pfs('DATA')!;
  const root = p.root;
  const many = p.create(root, Buffer.from('many'), ObjType.DIRECTORY, 0o755, cred, tick());
  for (let i = 0; i < 300; i++) mkfile(p, many, `f${i}`, content(i, 1000 + i * 13));
  mkfile(p, root, 'big', content(1000, 4 << 20));
  a.flush();
  const c = new PfsCluster(a, p, A.img, { log: (m) => logs.push(m), stepBytes: 512 << 10 });
  let closed = false;
  const shut = () => {
    if (closed) return;
    closed = true;
    c.close();
    a.close();
  };
  t.teardown(shut);
  const st = await c.add(B.img);
  t.equal(st.state, 'resyncing', 'an empty copy starts resynchronizing');
  // Writes go on while the copy fills.
  for (let i = 0; i < 20; i++) mkfile(p, root, `during${i}`, content(2000 + i, 50000));
  a.flush();
  await settle(t, c);
  const s = c.status();
  t.equal(s[1].state, 'in-sync', 'the copy is in sync');
  t.equal(s[1].tid, s[0].tid, 'at the primary transaction');
  t.ok(s[1].resync.passes >= 1 && s[1].resync.blocksWritten > 50, `resync wrote ${s[1].resync.blocksWritten} blocks in ${s[1].resync.passes} passes`);
  t.same(treeDiff(pfsTree(p), await imageTree(B.img, 'DATA')), [], 'copy identical after resync');

  // In sync: every commit reaches the copy before flush returns.
  const big = p.resolve('/big');
  p.write(big, 70000, Buffer.from('changed while in sync'), tick());
  p.unlink(many, Buffer.from('f3'), tick());
  a.flush();
  t.equal(c.status()[1].tid, c.status()[0].tid, 'copy follows the commit');
  t.same(treeDiff(pfsTree(p), await imageTree(B.img, 'DATA')), [], 'copy identical after a commit');

  // Damage the primary: a data block of /big, the inode of /many/f10 and an
  // indirect block of /many's directory. Reads see no error.
  const want = pfsTree(p);
  const bigRef = inodeBlockset(p.resolve('/big').data).find((b) => b.type !== BrefType.EMPTY)!;
  let dataRef = bigRef;
  if (bigRef.type === BrefType.INDIRECT) dataRef = a.dev.reader.readBlockrefs(bigRef).find((b) => b.type === BrefType.DATA)!;
  damage(A.img, dataRef.dataOff);
  const f10 = p.resolve('/many/f10').bref!;
  damage(A.img, f10.dataOff);
  const dirInd = inodeBlockset(p.resolve('/many').data).find((b) => b.type === BrefType.INDIRECT)!;
  t.ok(dirInd, '/many has an indirect block');
  damage(A.img, dirInd.dataOff, 300);
  a.dev.reader.clearCache();
  a.dev.vols.bufCache.clear();
  // A fresh PFS object: nothing cached above the block layer either.
  const p2 = p;
  (p2 as any).clean.clear();
  t.same(treeDiff(want, pfsTree(p2)), [], 'reads of damaged items see no error and the right data');
  t.ok(c.status()[0].readErrors > 0, `primary read errors counted (${c.status()[0].readErrors})`);
  await new Promise((r) => setImmediate(r));
  await settle(t, c);
  t.ok(logs.some((l) => /repaired/.test(l)), 'the repair is logged');
  // The repair is on media: a fresh read of the primary needs no copy.
  a.dev.reader.clearCache();
  a.dev.vols.bufCache.clear();
  (p as any).clean.clear();
  const errs0 = c.status()[0].readErrors;
  t.same(treeDiff(want, pfsTree(p)), [], 'primary reads right after the repair');
  t.equal(c.status()[0].readErrors, errs0, 'and without falling back on the copy');
  a.flush();
  shut();
  await fsckBoth(t, A.img, 'repaired primary');
  await fsckBoth(t, B.img, 'copy');
  if (haveRef('makefs')) {
    // Every regular file of the copy, read by the reference, has the primary's contents.
    const got = fileHashes(refRead(B.img, 'DATA', tempDir(t)));
    const files = [...want].filter(([, v]) => v.startsWith(`${ObjType.REGFILE} `));
    const bad = files.filter(([k, v]) => got.get(k.slice(1)) !== v.split(' ').pop());
    t.equal(got.size, files.length, `the reference reads ${got.size} files from the copy`);
    t.same(bad.map(([k]) => k), [], 'each exactly as the primary holds it');
  }
});

t.test('a copy whose host fills up leaves the in-sync set and rejoins', async (t) => {
  const dir = tempDir(t);
  const h = smallHost(t, dir, 40);
  if ('why' in h) return t.skip(h.why);
  const { host } = h;
  const A = await newImage(t, 256 << 20, ['DATA']);
  const bImg = path.join(host, 'copy.img');
  await formatHammer2({ paths: [bImg], sizes: [256 << 20], labels: ['none'] });
  const logs: string[] = [];
  const a = await openRw(A.img);
  const p = a.pfs('DATA')!;
  const c = new PfsCluster(a, p, A.img, { log: (m) => logs.push(m), retrySec: 0.2 });
  t.teardown(() => {
    c.close();
    a.close();
  });
  await c.add(bImg);
  await settle(t, c);
  t.equal(c.status()[1].state, 'in-sync', 'copy in sync');
  // Fill the host: the copy's next commits cannot be written.
  const filler = path.join(host, 'filler');
  fs.writeFileSync(filler, Buffer.alloc(0));
  try {
    fs.writeFileSync(filler, Buffer.alloc(40 << 20, 1));
  } catch {
    // Filled up to the last byte: that is the point.
  }
  for (let i = 0; i < 10; i++) mkfile(p, p.root, `f${i}`, content(i, 1 << 20));
  a.flush();
  const s = c.status()[1];
  t.equal(s.state, 'failed', 'the copy failed');
  t.ok(s.writeErrors >= 1, 'write error counted');
  t.match(s.error ?? '', /ENOSPC|space/i, `the reason is given: ${s.error}`);
  // The primary goes on.
  for (let i = 10; i < 15; i++) mkfile(p, p.root, `f${i}`, content(i, 100000));
  a.flush();
  fs.unlinkSync(filler);
  const end = Date.now() + 20000;
  while (c.status()[1].state !== 'in-sync' && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
  t.equal(c.status()[1].state, 'in-sync', 'the copy rejoined after resynchronizing');
  t.same(treeDiff(pfsTree(p), await imageTree(bImg, 'DATA')), [], 'copy identical');
  await fsckBoth(t, bImg, 'copy after its host filled up');
});

t.test('how a copy stands to the primary (tids and last shared tids)', async (t) => {
  const n = (tid: number, ver: number) => ({ tid: BigInt(tid), ver: BigInt(ver) });
  t.equal(relation(n(10, 10), n(0, 0)), 'behind', 'an empty copy');
  t.equal(relation(n(10, 10), n(10, 10)), 'same', 'in sync');
  t.equal(relation(n(10, 0), n(10, 10)), 'same', 'the copy was filled up to the primary state');
  t.equal(relation(n(12, 12), n(10, 10)), 'behind', 'the copy was away');
  t.equal(relation(n(12, 10), n(10, 10)), 'behind', 'the primary went on alone');
  t.equal(relation(n(10, 10), n(14, 10)), 'ahead', 'the copy went on alone');
  t.equal(relation(n(12, 10), n(14, 10)), 'diverged', 'both went on alone');
  t.equal(relation(n(12, 12), n(11, 10)), 'diverged', 'the copy wrote alone, the primary shared later commits elsewhere');
  t.equal(relation(n(12, 10), n(12, 10)), 'diverged', 'same tid reached apart');
  t.equal(relation(n(11, 11), n(14, 10)), 'diverged', "the primary's last commit never reached the copy, which went on alone");
});

t.test('scrub: every block of both nodes verified, damage repaired from the other node', async (t) => {
  const A = await newImage(t, 256 << 20, ['DATA']);
  const B = await newImage(t, 256 << 20, ['none']);
  const a = await openRw(A.img);
  const p = a.pfs('DATA')!;
  const many = p.create(p.root, Buffer.from('many'), ObjType.DIRECTORY, 0o755, { uid: 0, gid: 0 }, tick());
  for (let i = 0; i < 200; i++) mkfile(p, many, `f${i}`, content(i, 3000));
  mkfile(p, p.root, 'big', content(7, 40 << 20));
  const c = await inSyncCluster(t, a, p, A.img, B.img);
  const want = pfsTree(p);
  // Damage: on the copy, a data block, an inode and the directory's blocktable;
  // on the primary, a blocktable of the big file.
  const bv = await Hammer2Fs.open(B.img, { lock: false });
  const bp = bv.pfs('DATA')!;
  const bData = inodeBlockset(bp.resolve('/many/f3').data).find((x) => x.type === BrefType.DATA)!;
  const bInode = bp.resolve('/many/f9').bref!;
  const bInd = inodeBlockset(bp.resolve('/many').data).find((x) => x.type === BrefType.INDIRECT)!;
  bv.close();
  for (const x of [bData, bInode, bInd]) damage(B.img, x.dataOff);
  const aInd = inodeBlockset(p.resolve('/big').data).find((x) => x.type === BrefType.INDIRECT)!;
  t.ok(aInd && bInd, 'blocktables to damage');
  damage(A.img, aInd.dataOff, 200);
  const r1 = await c.scrub();
  t.ok(r1[0].damaged >= 1 && r1[0].repaired >= 1, `primary: ${r1[0].damaged} damaged, ${r1[0].repaired} repaired, ${r1[0].blocks} blocks`);
  t.ok(r1[1].damaged >= 3 && r1[1].repaired >= 3, `copy: ${r1[1].damaged} damaged, ${r1[1].repaired} repaired, ${r1[1].blocks} blocks`);
  const r2 = await c.scrub();
  t.same(r2.map((n) => n.damaged), [0, 0], 'a second scrub finds nothing');
  t.same(treeDiff(want, pfsTree(p)), [], 'the primary holds the same tree');
  a.flush();
  t.same(treeDiff(want, await imageTree(B.img, 'DATA')), [], 'the copy too');
  c.close();
  a.close();
  await fsckBoth(t, A.img, 'primary after scrub');
  await fsckBoth(t, B.img, 'copy after scrub');
});

t.test('stopping at any moment of a multi-step resync leaves the nodes "behind" or "same", never diverged', async (t) => {
  const A = await newImage(t, 256 << 20, ['DATA']);
  const B = await newImage(t, 256 << 20, ['none']);
  const a = await openRw(A.img);
  t.teardown(() => a.close());
  const p = a.pfs('DATA')!;
  for (let i = 0; i < 40; i++) mkfile(p, p.root, `f${i}`, content(i, 200000));
  a.flush();
  const tidsOf = async (img: string) => {
    const h = await Hammer2Fs.open(img, { lock: false });
    try {
      const e = h.dev.findPfs('DATA')!;
      return { tid: e.bref.modifyTid, ver: e.bref.updateTid, empty: inodeBlockset(e.inode).every((b) => b.type === BrefType.EMPTY) };
    } finally {
      h.close();
    }
  };
  let seen = 0;
  for (let round = 0; round < 6; round++) {
    const c = new PfsCluster(a, p, A.img, { log: () => {}, stepBytes: 256 << 10 });
    await c.add(B.img);
    // Writes land while the passes run, so they take several steps and
    // repeat; stop right after a pass completed with the copy still behind
    // (the moment a multi-step pass records where it began), or after a while.
    for (let k = 0; k < 200; k++) {
      mkfile(p, p.root, `r${round}-${k}`, content(1000 + round * 10 + k, 150000));
      a.flush();
      await new Promise((r) => setTimeout(r, 1));
      const st = c.status()[1];
      if (st.resync.passes >= 1 + (round % 3) && st.state === 'resyncing') break;
      if (st.state === 'in-sync' && k > 20) break;
    }
    const passes = c.status()[1].resync.passes;
    c.close();
    const P = await tidsOf(A.img);
    const C = await tidsOf(B.img);
    const rel = relation({ tid: P.tid, ver: P.ver }, { tid: C.empty ? 0n : C.tid, ver: C.ver });
    t.not(rel, 'diverged', `round ${round} (${passes} passes done): primary ${P.tid}/${P.ver}, copy ${C.tid}/${C.ver} -> ${rel}`);
    if (rel === 'same') {
      seen++;
      t.same(treeDiff(pfsTree(p), await imageTree(B.img, 'DATA')), [], 'and "same" means identical');
    }
  }
  // Finally let it converge.
  const c = new PfsCluster(a, p, A.img, { log: () => {} });
  await c.add(B.img);
  await settle(t, c);
  c.close();
  t.same(treeDiff(pfsTree(p), await imageTree(B.img, 'DATA')), [], 'converged');
  t.ok(seen >= 0, `${seen} rounds stopped in sync`);
});

t.test('a damaged copy blocktable met by a budgeted incremental pass is replaced whole', async (t) => {
  const { A, B, a, b } = await twoNodes(t, 256 << 20);
  const p = a.pfs('DATA')!;
  for (let i = 0; i < 400; i++) mkfile(p, p.root, `f${i}`, content(i, 20000));
  a.flush();
  const passOnce = (budget?: number) => {
    let from: SyncCursor | undefined;
    do {
      const s = a.dev.findPfs('DATA')!;
      const d = b.dev.findPfs('DATA')!;
      const since = syncedTid(d.bref, d.inode);
      let next: SyncCursor | null = null;
      b.commitPfsRoot('DATA', (w) => {
        const r = syncPfs({ reader: a.dev.reader }, s.inode, { reader: b.dev.reader, writer: w }, d.inode, { since, from, budgetBytes: budget });
        next = r.next;
        return r.next ? { root: r.root, modifyTid: since } : { root: r.root, modifyTid: s.bref.modifyTid, updateTid: s.bref.modifyTid };
      });
      from = next ?? undefined;
    } while (from);
  };
  passOnce();
  // Damage the copy's index blocktable holding inode 200's key, then change that file on the source.
  const victim = p.resolve('/f200');
  const bi = inodeBlockset(b.dev.findPfs('DATA')!.inode).find((x) => x.type === BrefType.INDIRECT && x.key <= victim.inum && victim.inum < x.key + (1n << BigInt(x.keybits)));
  t.ok(bi, 'the copy has an index blocktable over that inode');
  damage(B.img, bi!.dataOff, 500);
  b.dropCaches();
  p.write(victim, 0, content(9999, 100), tick());
  a.flush();
  passOnce(32 << 10);
  t.same(treeDiff(pfsTree(p), await imageTree(B.img, 'DATA')), [], 'every file is on the copy after the budgeted pass');
  b.flush();
  await fsckBoth(t, B.img, 'copy');
});

t.test('a damaged blocktable of the primary root directory is repaired from the copy', async (t) => {
  const A = await newImage(t, 256 << 20, ['DATA']);
  const B = await newImage(t, 256 << 20, ['none']);
  const a = await openRw(A.img);
  const p = a.pfs('DATA')!;
  for (let i = 0; i < 300; i++) mkfile(p, p.root, `name-${i}`, content(i, 100));
  const c = await inSyncCluster(t, a, p, A.img, B.img);
  const want = pfsTree(p);
  // A blocktable of the root's tree at the directory-hash keys.
  const ind = inodeBlockset(a.dev.findPfs('DATA')!.inode).find((x) => x.type === BrefType.INDIRECT && x.key >= 1n << 63n);
  t.ok(ind, 'the root directory has a blocktable of entries');
  damage(A.img, ind!.dataOff, 700);
  a.dropCaches();
  (p as any).clean.clear();
  t.same(treeDiff(want, pfsTree(p)), [], 'the root directory lists and resolves through the damage');
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setTimeout(r, 50));
  a.dropCaches();
  (p as any).clean.clear();
  const before = c.status()[0].readErrors;
  t.same(treeDiff(want, pfsTree(p)), [], 'after the repair too');
  t.equal(c.status()[0].readErrors, before, 'without the copy any more');
  a.flush();
  c.close();
  await fsckBoth(t, A.img, 'repaired primary');
});
