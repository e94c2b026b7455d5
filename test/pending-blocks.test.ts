// A small file's pending block 0 is kept short (Pfs.blockFor): its data
// holds a power of two of at least 1 KiB until the commit, not 64 KiB.
// Every path that meets a short block (reads past its end, growth by writes
// and by truncation, holes, whole-block writes over it, a commit that pads
// it) gives the file's bytes, here and through the reference tools.
import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FreemapAllocator } from '../src/engine';
import { Hammer2Fs } from '../src/fs';
import { ObjType } from '../src/media';
import { formatHammer2 } from '../mkfs/newfs';
import { fileHashes, haveRef, refFsck, refRead, tempDir } from './lib/env';
import { createHash } from 'node:crypto';

process.env.HAMMER2_QUIET_SHIM = '1';
const B = 65536;
const cred = { uid: 0, gid: 0 };
const now = 1_700_000_000_000_000n;

function bytes(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7 + (i >> 9)) & 255;
  return b;
}

t.test('short pending blocks: accounting, growth, reads, commit', async (t) => {
  const dir = tempDir(t, 'h2pend-');
  const img = path.join(dir, 'a.img');
  await formatHammer2({ paths: [img], sizes: [256 * 2 ** 20] });
  const open = () => Hammer2Fs.open(img, { writable: true, lock: false, allocator: (d) => new FreemapAllocator(d.vols, d.reader, d.header) });
  let h2 = await open();
  let pfs = h2.pfs('DATA')!;
  const want = new Map<string, Buffer>();
  const put = (name: string, data: Buffer) => want.set(name, Buffer.from(data));
  const mk = (name: string) => pfs.create(pfs.root, Buffer.from(name), ObjType.REGFILE, 0o644, cred, now);

  // 100 small files of 600..3000 bytes: 1 KiB to 4 KiB each is held, not 64 KiB
  // (the dirty limit still counts 64 KiB a block).
  const before = pfs.pendingBytes;
  let held = 0;
  for (let i = 0; i < 100; i++) {
    const d = bytes(600 + i * 24, i);
    const f = mk(`small${i}`);
    pfs.write(f, 0, d, now);
    put(`small${i}`, d);
    held += f.blocks!.get(0n)!.length;
  }
  t.ok(held <= 100 * 4096, `100 small files hold ${held} bytes pending`);
  t.ok(held >= 100 * 1024);
  t.equal(pfs.pendingBytes - before, 100 * B, 'counted as 64 KiB each for the dirty limit');

  // A file grown a little at a time: each write past a short block's end grows it.
  const g = mk('grown');
  let gd = Buffer.alloc(0);
  for (const n of [100, 700, 1500, 5000, 20000, 70000, 140000]) {
    const d = bytes(n - gd.length, n);
    pfs.write(g, gd.length, d, now);
    gd = Buffer.concat([gd, d]);
    // Read back before any commit, including ranges past a short block's end (zeros, within EOF).
    if (!pfs.read(g, 0, n + 10).equals(gd)) t.fail(`grown to ${n}: read back before the commit`);
  }
  put('grown', gd);

  // A short block the file then grows over by truncation (sparse): the commit pads it.
  const s = mk('sparse-after');
  const sd = bytes(3000, 9);
  pfs.write(s, 0, sd, now);
  pfs.truncate(s, BigInt(3 * B + 5), now);
  const sExp = Buffer.concat([sd, Buffer.alloc(3 * B + 5 - 3000)]);
  t.ok(pfs.read(s, 0, 4 * B).equals(sExp), 'zeros past a short block read back as zeros');
  put('sparse-after', sExp);

  // ... and by a write in a later block (the short block is then a whole 64 KiB block below EOF).
  const w = mk('write-after');
  const wd = bytes(2000, 3);
  pfs.write(w, 0, wd, now);
  const tail = bytes(100, 4);
  pfs.write(w, 2 * B + 7, tail, now);
  const wExp = Buffer.concat([wd, Buffer.alloc(2 * B + 7 - 2000), tail]);
  put('write-after', wExp);

  // A whole-block write over a short one, and a hole punched over another.
  const o = mk('overwritten');
  pfs.write(o, 0, bytes(1500, 5), now);
  const whole = bytes(B, 6);
  pfs.write(o, 0, whole, now);
  put('overwritten', whole);
  const z = mk('zeroed');
  const zd = bytes(5000, 7);
  pfs.write(z, 0, zd, now);
  pfs.zeroRange(z, 1000n, 2000n, now);
  zd.fill(0, 1000, 2000);
  put('zeroed', zd);

  // Shrink into a short block, then grow again by a write past its end.
  const k = mk('shrunk');
  const kd = bytes(9000, 8);
  pfs.write(k, 0, kd, now);
  pfs.truncate(k, 1200n, now);
  const more = bytes(3000, 10);
  pfs.write(k, 5000, more, now);
  put('shrunk', Buffer.concat([kd.subarray(0, 1200), Buffer.alloc(5000 - 1200), more]));

  // fallocate's zeroing over a short block the file has grown past (by truncate, by a later write).
  const z1 = mk('zero-grown-by-truncate');
  pfs.write(z1, 0, bytes(600, 11), now);
  pfs.truncate(z1, 4096n, now);
  pfs.zeroRange(z1, 0n, 4096n, now);
  put('zero-grown-by-truncate', Buffer.alloc(4096));
  const z2 = mk('punch-grown-by-write');
  const z2d = Buffer.concat([bytes(600, 12), Buffer.alloc(70000 - 600), Buffer.from([5])]);
  pfs.write(z2, 0, z2d.subarray(0, 600), now);
  pfs.write(z2, 70000, Buffer.from([5]), now);
  pfs.zeroRange(z2, 500n, 5000n, now);
  z2d.fill(0, 500, 5000);
  put('punch-grown-by-write', z2d);
  // Truncated down to a point past a short block's end.
  const tr = mk('truncated-past-short');
  pfs.write(tr, 0, bytes(600, 13), now);
  pfs.write(tr, 70000, Buffer.from([6]), now);
  pfs.truncate(tr, 5000n, now);
  put('truncated-past-short', Buffer.concat([bytes(600, 13), Buffer.alloc(5000 - 600)]));

  // Everything reads back before the commit too, also into a reused, dirty buffer.
  for (const [name, data] of want) {
    const n = pfs.resolve(name);
    if (!pfs.read(n, 0, data.length + 10).equals(data)) t.fail(`${name}: read before the commit`);
    const into = Buffer.alloc(data.length + 200000, 0xee);
    if (!pfs.readInto(n, 0, data.length, into).equals(data)) t.fail(`${name}: readInto a dirty buffer before the commit`);
  }
  t.ok(pfs.attr(pfs.resolve('small3')).blocks >= 2, 'st_blocks counts pending data');

  h2.flush();
  t.equal(pfs.pendingBytes, 0, 'nothing held after the commit');

  // Committed files changed again: the pending block is read from media, short where EOF is.
  const c = pfs.resolve('small5');
  const cd = Buffer.from(want.get('small5')!);
  pfs.write(c, 10, Buffer.from('changed'), now);
  Buffer.from('changed').copy(cd, 10);
  put('small5', cd);
  t.equal(c.blocks!.get(0n)!.length, 1024, 'a committed 720-byte file changed holds 1 KiB');
  // A committed short block grown past its size before the next commit.
  const c2 = pfs.resolve('small7');
  const c2d = Buffer.concat([want.get('small7')!, bytes(3000, 14)]);
  pfs.write(c2, want.get('small7')!.length, bytes(3000, 14), now);
  put('small7', c2d);
  // A committed embedded file (512 bytes or less) grown by a write and by truncation.
  const e1 = mk('embedded-then-written');
  const e2 = mk('embedded-then-truncated');
  pfs.write(e1, 0, bytes(300, 15), now);
  pfs.write(e2, 0, bytes(400, 16), now);
  h2.flush();
  pfs.write(e1, 300, bytes(2000, 17), now);
  put('embedded-then-written', Buffer.concat([bytes(300, 15), bytes(2000, 17)]));
  pfs.truncate(e2, 9000n, now);
  pfs.write(e2, 8000, Buffer.from('tail'), now);
  put('embedded-then-truncated', Buffer.concat([bytes(400, 16), Buffer.alloc(8000 - 400), Buffer.from('tail'), Buffer.alloc(996)]));
  // A committed 64 KiB+ file cut back to a block boundary, then written a little.
  const big = mk('cut-then-written');
  const bigd = bytes(3 * B, 18);
  pfs.write(big, 0, bigd, now);
  h2.flush();
  pfs.truncate(big, BigInt(B), now);
  pfs.write(big, B + 10, Buffer.from('after'), now);
  put('cut-then-written', Buffer.concat([bigd.subarray(0, B), Buffer.alloc(10), Buffer.from('after')]));
  const shrinkCommitted = pfs.resolve('grown');
  pfs.truncate(shrinkCommitted, 70000n, now);
  put('grown', gd.subarray(0, 70000));
  h2.flush();
  h2.close();

  h2 = await open();
  pfs = h2.pfs('DATA')!;
  for (const [name, data] of want) {
    if (!pfs.read(pfs.resolve(name), 0, data.length + 100).equals(data)) t.fail(`${name} after remount`);
  }
  t.pass('every file reads back after remount');
  h2.close();

  if (haveRef('fsck_hammer2')) {
    const r = refFsck(img);
    t.equal(r.status, 0, `reference fsck_hammer2: ${r.out.slice(-400)}`);
  }
  if (haveRef('makefs')) {
    const out = refRead(img, 'DATA', dir);
    const got = fileHashes(out);
    for (const [name, data] of want) {
      t.equal(got.get(name), createHash('sha256').update(data).digest('hex'), `${name} through the reference makefs`);
    }
    fs.rmSync(out, { recursive: true, force: true });
  }
});
