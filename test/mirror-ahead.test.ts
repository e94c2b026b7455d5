// A mounted slave's daemon parses a stream as it arrives and reads ahead
// what applying it will read of the slave (src/mirror: mirrorWriteAhead,
// StreamFeeder, PassTables). Here in-process: the parser fed in arbitrary
// pieces sees what the blocking parser sees; the apply after a read-ahead
// reads nothing more of the slave; a read-ahead of another state of the
// slave, or of a corrupted stream, changes nothing about the result.
import t from 'tap';
import { BufferSource, mirrorRead, mirrorWrite, mirrorWriteAhead, StreamFeeder, StreamParser, WriteAhead } from '../src/mirror';
import { ObjType } from '../src/media';
import { openMasterAndSlave } from './lib/mirror';
import { content, fsckBoth, imageTree, mkfile, pfsTree, tick, treeDiff } from './lib/pfstree';

process.env.HAMMER2_QUIET_SHIM = '1';
const cred = { uid: 0, gid: 0 };

/** Pieces of `buf` of pseudo-random sizes from 1 byte to 100 KiB. */
function pieces(buf: Buffer, seed: number): Buffer[] {
  const out: Buffer[] = [];
  let x = seed;
  for (let at = 0; at < buf.length; ) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    const n = x % 7 === 0 ? 1 + (x % 13) : 1 + (x % 100000);
    out.push(buf.subarray(at, at + n));
    at += n;
  }
  return out;
}

/** Until the read-ahead has caught up with what was pushed (its slices run from setImmediate). */
async function drained(ahead: WriteAhead): Promise<void> {
  while (ahead.backlog > 0) await new Promise((r) => setImmediate(r));
}

t.test('read-ahead of a slave while its stream arrives; the apply then reads nothing more', async (t) => {
  const { B, a, b, p } = await openMasterAndSlave(t, 'S');
  // Enough inodes for an inode index of several levels, in a few directories.
  const dirs = [0, 1, 2, 3].map((i) => p.create(p.root, Buffer.from(`d${i}`), ObjType.DIRECTORY, 0o755, cred, tick()));
  for (let i = 0; i < 3000; i++) mkfile(p, dirs[i % 4], `f${i}`, content(i, 100 + ((i * 131) % 3000)));
  a.flush();
  const read = (since: bigint) => {
    const parts: Buffer[] = [];
    mirrorRead(a, 'DATA', since, (x) => parts.push(Buffer.from(x)));
    return Buffer.concat(parts);
  };
  mirrorWrite(b, 'S', new BufferSource(read(0n)));
  const change = (round: number) => {
    for (let k = 0; k < 60; k++) {
      const i = (k * 997 + round * 31) % 3000;
      const d = dirs[i % 4];
      if (k % 10 === 0) p.unlink(d, Buffer.from(`f${i}`), tick());
      else if (k % 10 === 1) mkfile(p, d, `new${round}-${k}`, content(k + round, 2000));
      else p.write(p.resolve(`/d${i % 4}/f${i}`), 0, content(i + round + 7, 50), tick());
    }
    a.flush();
  };

  // The parser fed in pieces yields what the blocking parser yields, record for record.
  change(1);
  const s1 = read(b.dev.findPfs('S')!.bref.modifyTid);
  const want: string[] = [];
  const sp = new StreamParser(new BufferSource(s1));
  sp.header();
  for (let r = sp.next(); r; r = sp.next()) want.push(`${r.type}:${r.payload.toString('hex')}`);
  for (const seed of [1, 2, 3]) {
    const got: string[] = [];
    const f = new StreamFeeder((type, payload) => got.push(`${type}:${payload.toString('hex')}`));
    for (const x of pieces(s1, seed)) f.push(x);
    t.ok(f.ended, `pieces (seed ${seed}): the END record came`);
    t.same(got, want, `pieces (seed ${seed}): the same ${want.length} records`);
  }
  const bad = Buffer.from(s1);
  bad[Math.floor(bad.length / 2)] ^= 1;
  t.throws(() => {
    const f = new StreamFeeder(() => {});
    for (const x of pieces(bad, 4)) f.push(x);
  }, /fails its check|bad record|record of/, 'a corrupted stream fed in pieces is refused');

  // Read ahead, then apply: every slave table and inode the apply asks for was read already.
  const ahead = mirrorWriteAhead(b, 'S');
  for (const x of pieces(s1, 5)) ahead.push(x);
  await drained(ahead);
  ahead.stop();
  const misses = ahead.tables.misses;
  t.ok(misses > 3, `the read-ahead read the slave's tables (${misses})`);
  mirrorWrite(b, 'S', new BufferSource(s1), { ahead });
  t.equal(ahead.tables.misses, misses, `the apply read nothing the read-ahead had not (${ahead.tables.hits} hits)`);
  t.same(treeDiff(pfsTree(p), await imageTree(B.img, 'S')), [], 'slave identical after the pass');

  // A read-ahead made before another pass changed the slave: its tables are
  // of the old state, found by no bref of the new one; the result is exact.
  change(2);
  const s2 = read(b.dev.findPfs('S')!.bref.modifyTid);
  const stale = mirrorWriteAhead(b, 'S');
  for (const x of pieces(s2, 6)) stale.push(x);
  await drained(stale);
  mirrorWrite(b, 'S', new BufferSource(s2));
  change(3);
  const s3 = read(b.dev.findPfs('S')!.bref.modifyTid);
  mirrorWrite(b, 'S', new BufferSource(s3), { ahead: stale });
  t.same(treeDiff(pfsTree(p), await imageTree(B.img, 'S')), [], 'stale read-ahead: slave identical');

  // A read-ahead of a corrupted stream stops quietly; the apply refuses the stream itself.
  change(4);
  const s4 = read(b.dev.findPfs('S')!.bref.modifyTid);
  const broken = Buffer.from(s4);
  broken[Math.floor(broken.length * 0.7)] ^= 0x10;
  const ahead4 = mirrorWriteAhead(b, 'S');
  for (const x of pieces(broken, 7)) ahead4.push(x);
  await drained(ahead4);
  const tid = b.dev.findPfs('S')!.bref.modifyTid;
  t.throws(() => mirrorWrite(b, 'S', new BufferSource(broken), { ahead: ahead4 }), /fails its check|bad record|counts/, 'the corrupted stream is refused');
  t.equal(b.dev.findPfs('S')!.bref.modifyTid, tid, 'the slave is as it was');
  mirrorWrite(b, 'S', new BufferSource(s4), { ahead: ahead4 });
  t.same(treeDiff(pfsTree(p), await imageTree(B.img, 'S')), [], 'then the good stream: slave identical');

  // finish(): the read-ahead keeps the stream parsed, and the apply runs from its records.
  change(5);
  const s5 = read(b.dev.findPfs('S')!.bref.modifyTid);
  const sp5 = new StreamParser(new BufferSource(s5));
  const h5 = sp5.header();
  const want5: string[] = [];
  for (let r = sp5.next(); r; r = sp5.next()) want5.push(`${r.type}:${r.payload.toString('hex')}`);
  const ahead5 = mirrorWriteAhead(b, 'S');
  const ps = pieces(s5, 8);
  // Only part of it read ahead before the end: finish() parses the rest.
  for (const x of ps.slice(0, ps.length >> 1)) ahead5.push(x);
  await drained(ahead5);
  for (const x of ps.slice(ps.length >> 1)) ahead5.push(x);
  const kept = ahead5.finish();
  t.ok(kept, 'the whole stream was kept');
  t.same(kept!.header, h5, 'its header');
  t.same(
    kept!.records.map((r) => `${r.type}:${r.payload.toString('hex')}`),
    want5,
    `its ${want5.length} records, END included`,
  );
  mirrorWrite(b, 'S', kept!, { ahead: ahead5 });
  t.same(treeDiff(pfsTree(p), await imageTree(B.img, 'S')), [], 'applied from the kept records: slave identical');

  // Nothing is kept from a stream that goes on after END, is cut short, is corrupted, or is over the budget.
  change(6);
  const s6 = read(b.dev.findPfs('S')!.bref.modifyTid);
  const finished = (bytes: Buffer, keep?: number) => {
    const x = mirrorWriteAhead(b, 'S', keep);
    for (const piece of pieces(bytes, 9)) x.push(piece);
    return x.finish();
  };
  t.equal(finished(Buffer.concat([s6, Buffer.from('more')])), null, 'bytes after END: nothing kept');
  t.equal(finished(s6.subarray(0, s6.length - 3)), null, 'truncated: nothing kept');
  const bad6 = Buffer.from(s6);
  bad6[Math.floor(bad6.length / 3)] ^= 4;
  t.equal(finished(bad6), null, 'corrupted: nothing kept');
  t.equal(finished(s6, 1000), null, 'over the budget: nothing kept');
  t.throws(() => mirrorWrite(b, 'S', new BufferSource(Buffer.concat([s6, Buffer.from('more')]))), /after the END/, 'and the spool path refuses bytes after END');
  t.ok(finished(s6), 'the stream itself is kept');
  mirrorWrite(b, 'S', finished(s6)!);
  t.same(treeDiff(pfsTree(p), await imageTree(B.img, 'S')), [], 'slave identical');
  b.flush();
  await fsckBoth(t, B.img, 'slave image');
});
