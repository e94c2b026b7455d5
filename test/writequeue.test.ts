// Queued writes (VolumeSet.writeQueued): adjacent blocks merge into one
// pwritev per run, runs split at volume boundaries, reads and sync see
// everything queued, a failed commit's queue is dropped.
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { formatHammer2 } from '../mkfs/newfs';
import { VolumeSet } from '../src/store';

const GiB = 2 ** 30;

t.test('runs cross no volume boundary and read back', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'h2wq-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const a = path.join(dir, 'a.img');
  const b = path.join(dir, 'b.img');
  await formatHammer2({ paths: [a, b], sizes: [GiB, GiB] });
  const vs = VolumeSet.open(`${a}:${b}`, { writable: true });
  t.equal(vs.volumes.length, 2);
  const edge = vs.volumes[1].offset;
  const blocks: Buffer[] = [];
  const start = edge - 4 * 65536;
  for (let i = 0; i < 8; i++) {
    const blk = Buffer.alloc(65536, i + 1);
    blocks.push(blk);
    vs.writeQueued(start + i * 65536, blk);
  }
  // A read flushes the queue first.
  t.ok(vs.read(start + 65536, 65536).equals(blocks[1]), 'read sees a queued block');
  for (let i = 0; i < 8; i++) vs.writeQueued(start + i * 65536, Buffer.alloc(65536, 0x80 + i));
  vs.sync();
  for (let i = 0; i < 8; i++) t.ok(vs.read(start + i * 65536, 65536).equals(Buffer.alloc(65536, 0x80 + i)), `block ${i} after sync`);
  // The bytes landed on the right devices.
  const fa = fs.openSync(a, 'r');
  const fb = fs.openSync(b, 'r');
  const x = Buffer.alloc(65536);
  fs.readSync(fa, x, 0, 65536, vs.volumes[0].size - 65536);
  t.ok(x.equals(Buffer.alloc(65536, 0x83)), 'last block of volume 0');
  fs.readSync(fb, x, 0, 65536, 0);
  t.ok(x.equals(Buffer.alloc(65536, 0x84)), 'first block of volume 1');
  fs.closeSync(fa);
  fs.closeSync(fb);
  // Discarded writes never reach media.
  vs.writeQueued(start, Buffer.alloc(65536, 0xee));
  vs.discardWrites();
  vs.sync();
  t.ok(vs.read(start, 65536).equals(Buffer.alloc(65536, 0x80)), 'discarded write dropped');
  // Many small adjacent writes (more than IOV_MAX) in one run.
  for (let i = 0; i < 2000; i++) vs.writeQueued(4 * 2 ** 20 + i * 1024, Buffer.alloc(1024, i & 255));
  vs.sync();
  for (const i of [0, 1023, 1024, 1999]) t.ok(vs.read(4 * 2 ** 20 + i * 1024, 1024).equals(Buffer.alloc(1024, i & 255)), `small block ${i}`);
  vs.close();
});

t.test('a read flushes the queue only when it touches a queued block', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'h2wq-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const a = path.join(dir, 'a.img');
  await formatHammer2({ paths: [a], sizes: [GiB] });
  const vs = VolumeSet.open(a, { writable: true });
  t.teardown(() => vs.close());
  const onMedia = (loff: number, len: number): Buffer => {
    const fd = fs.openSync(a, 'r');
    const x = Buffer.alloc(len);
    fs.readSync(fd, x, 0, len, loff);
    fs.closeSync(fd);
    return x;
  };
  const at = 64 * 2 ** 20 + 16384; // the second 16 KiB of a 64 KiB buffer
  // A first read of a buffer fetches only the block; the second loads the whole buffer (bufcache.ts).
  vs.read(at - 16384, 1024);
  vs.writeQueued(at, Buffer.alloc(16384, 0x5a));
  // Far away: the queue stays (one pwritev at the commit, not one per read).
  vs.read(128 * 2 ** 20, 1024);
  vs.readSpan(256 * 2 ** 20, 65536, Buffer.alloc(65536));
  t.notOk(onMedia(at, 16384).equals(Buffer.alloc(16384, 0x5a)), 'an unrelated read left the queue alone');
  // A small block sharing the 64 KiB buffer, read a second time: the whole buffer is loaded, only after the queue is out.
  t.ok(vs.read(at - 16384, 1024).equals(onMedia(at - 16384, 1024)), 'neighbour read');
  t.ok(onMedia(at, 16384).equals(Buffer.alloc(16384, 0x5a)), 'a read of the same buffer flushed it');
  t.ok(vs.read(at, 1024).equals(Buffer.alloc(1024, 0x5a)), 'the cached buffer holds the queued bytes');
  // An exact overlap through readSpan flushes too.
  vs.writeQueued(at, Buffer.alloc(16384, 0x6b));
  const out = Buffer.alloc(16384);
  vs.readSpan(at, 16384, out);
  t.ok(out.equals(Buffer.alloc(16384, 0x6b)), 'readSpan sees a queued block');
});
