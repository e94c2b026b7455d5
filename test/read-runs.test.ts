// The multi-block read path: a read covering many data blocks reads blocks
// lying back to back on the media with one pread per run (uncompressed ones
// straight into the reply, compressed ones through a scratch buffer), zeros
// holes, copies parts of blocks at the edges, and still verifies every
// block: a damaged block fails exactly the reads that cover it.
import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { formatHammer2 } from '../mkfs/newfs';
import { MediaError, scanRange } from '../src/engine';
import { Hammer2Fs } from '../src/fs';
import { Hammer2Ops } from '../src/fuse/ops';
import { BrefType, brefComp, inodeBlockset } from '../src/media';
import { tempDir } from './lib/env';

process.env.HAMMER2_QUIET_SHIM = '1';
const root = { uid: 0, gid: 0, pid: 1 };
const B = 65536;
const NBLK = 48;

/** Block i: every 5th compressible text (LZ4), every 7th zeros (a hole), the rest random. */
function content(): Buffer {
  const out = Buffer.alloc(NBLK * B + 1000);
  for (let i = 0; i < NBLK; i++) {
    if (i % 7 === 3) continue;
    const blk = out.subarray(i * B, (i + 1) * B);
    if (i % 5 === 0) blk.write(`block ${i} `.repeat(B / 8).slice(0, B), 'latin1');
    else randomBytes(B).copy(blk);
  }
  randomBytes(1000).copy(out, NBLK * B);
  return out;
}

async function makeImage(t: any): Promise<{ img: string; data: Buffer }> {
  const dir = tempDir(t);
  const img = path.join(dir, 'img');
  await formatHammer2({ paths: [img], sizes: [256 << 20] });
  const h2 = await Hammer2Fs.open(img, { writable: true, lock: false });
  const ops = new Hammer2Ops(h2, h2.pfs('DATA')!);
  const data = content();
  const { entry, fh } = ops.create(root, 1n, Buffer.from('f'), 0o100644, 2);
  for (let off = 0; off < data.length; off += 1 << 20) ops.write(root, entry.ino, data.subarray(off, off + (1 << 20)), off, fh);
  ops.fsync(root, entry.ino, false, fh);
  ops.release(root, entry.ino, fh);
  h2.close();
  return { img, data };
}

/** Physical offset and compression of data block `i` of /f. */
async function blockAt(img: string, i: number): Promise<{ off: number; comp: number }> {
  const h2 = await Hammer2Fs.open(img, { writable: false, lock: false });
  try {
    const n = h2.pfs('DATA')!.resolve('/f');
    let r = { off: -1, comp: -1 };
    scanRange(h2.dev.reader, inodeBlockset(n.data), BigInt(i * B), BigInt(i * B), (b) => {
      if (b.type === BrefType.DATA) r = { off: Number(b.dataOff & ~0x3fn), comp: brefComp(b) & 15 };
      return true;
    });
    return r;
  } finally {
    h2.close();
  }
}

t.test('many-block reads return the data, in few preads', async (t) => {
  const { img, data } = await makeImage(t);
  const h2 = await Hammer2Fs.open(img, { writable: false, lock: false });
  t.teardown(() => h2.close());
  const pfs = h2.pfs('DATA')!;
  const n = pfs.resolve('/f');
  const vols = h2.dev.reader.vols;
  let spans = 0;
  const orig = vols.readSpan.bind(vols);
  vols.readSpan = (...a: Parameters<typeof orig>) => {
    spans++;
    return orig(...a);
  };
  const whole = pfs.read(n, 0, data.length + 5000);
  t.equal(whole.length, data.length, 'short at EOF');
  t.ok(whole.equals(data), 'whole file in one read');
  t.ok(spans > 0 && spans < NBLK / 2, `${NBLK} blocks in ${spans} preads`);
  for (const [pos, len] of [
    [0, 1 << 20],
    [1 << 20, 1 << 20],
    [12345, 1_500_000],
    [3 * B - 1, 2 * B + 2],
    [3 * B, B],
    [3 * B + 100, 4096],
    [5 * B + 7, 100],
    [NBLK * B - 10, 2000],
    [17 * B, 13 * B],
  ]) {
    t.ok(pfs.read(n, pos, len).equals(data.subarray(pos, pos + len)), `read ${pos}+${len}`);
  }
});

t.test('a damaged block fails only the reads that cover it', async (t) => {
  const { img, data } = await makeImage(t);
  const raw = await blockAt(img, 22); // random: stored uncompressed
  const lz = await blockAt(img, 25); // text: compressed
  t.equal(raw.comp, 0, 'block 22 is stored as is');
  t.not(lz.comp, 0, 'block 25 is compressed');
  const fd = fs.openSync(img, 'r+');
  for (const off of [raw.off + 999, lz.off + 7]) {
    const one = Buffer.alloc(1);
    fs.readSync(fd, one, 0, 1, off);
    one[0] ^= 0x41;
    fs.writeSync(fd, one, 0, 1, off);
  }
  fs.closeSync(fd);
  const errors: string[] = [];
  const h2 = await Hammer2Fs.open(img, { writable: false, lock: false, onCheckError: (m: string) => errors.push(m) });
  t.teardown(() => h2.close());
  const pfs = h2.pfs('DATA')!;
  const n = pfs.resolve('/f');
  const ok = (pos: number, len: number) =>
    t.ok(pfs.read(n, pos, len).equals(data.subarray(pos, pos + len)), `${pos}+${len} reads fine`);
  const eio = (pos: number, len: number) =>
    t.throws(() => pfs.read(n, pos, len), MediaError, `${pos}+${len} fails with EIO`);
  ok(0, 22 * B);
  eio(16 * B, 1 << 20);
  eio(22 * B + 4096, 4096);
  eio(21 * B + 1, B);
  ok(23 * B, 2 * B);
  eio(24 * B, 2 * B);
  eio(25 * B + 100, 10);
  ok(26 * B, data.length - 26 * B);
  t.ok(h2.dev.reader.checkErrors >= 5, `${h2.dev.reader.checkErrors} check failures counted`);
  t.match(errors[0], /check failed/, 'and reported');
});
