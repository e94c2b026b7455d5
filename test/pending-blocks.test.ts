// Pending blocks at EOF are kept short (Pfs.blockFor): a small file's data
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

  h2.flush();
  t.equal(pfs.pendingBytes, 0, 'nothing held after the commit');

  // Committed files changed again: the pending block is read from media, short where EOF is.
  const c = pfs.resolve('small5');
  const cd = Buffer.from(want.get('small5')!);
  pfs.write(c, 10, Buffer.from('changed'), now);
  Buffer.from('changed').copy(cd, 10);
  put('small5', cd);
  t.equal(c.blocks!.get(0n)!.length, 1024, 'a committed 720-byte file changed holds 1 KiB');
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
