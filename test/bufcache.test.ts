// The store's 64 KiB physical buffer cache: small reads share one load per
// buffer, and no write path (direct, queued, header) leaves a stale copy.
import t from 'tap';
import * as path from 'node:path';
import * as fs from 'node:fs';
import { formatHammer2 } from '../mkfs/newfs';
import { PhysBufferCache, VolumeSet } from '../src/store';
import { tempDir } from './lib/env';

t.test('PhysBufferCache: LRU within budget, reads are copies', async (t) => {
  const loads: number[] = [];
  const c = new PhysBufferCache(3 * 65536);
  const load = (base: number, size: number) => {
    loads.push(base);
    return Buffer.alloc(size, Math.floor(base / 65536));
  };
  // A buffer's first read fetches only the block; the second brings the buffer in.
  const warm = (off: number) => {
    c.read(off, 16, 1 << 30, load);
    c.read(off, 16, 1 << 30, load);
  };
  for (const off of [0, 65536 + 5, 2 * 65536]) warm(off);
  t.same(loads, [0, 0, 65536 + 5, 65536, 2 * 65536, 2 * 65536], 'the block first, then its whole buffer');
  const n = loads.length;
  for (const off of [1024, 65536 + 100, 2 * 65536 + 4000, 100]) c.read(off, 16, 1 << 30, load);
  t.equal(loads.length, n, 'neighbours come from the kept buffers');
  warm(3 * 65536); // evicts the least recently used: 65536
  c.read(65536, 16, 1 << 30, load);
  c.read(65536, 16, 1 << 30, load);
  t.same(loads.slice(n), [3 * 65536, 3 * 65536, 65536, 65536], 'least recently used buffer evicted first');
  const a = c.read(0, 8, 1 << 30, load);
  a.fill(9);
  t.equal(c.read(0, 8, 1 << 30, load)[0], 0, 'callers get copies');
  c.read(10 * 65536 + 100, 50, 10 * 65536 + 200, load);
  const e = c.read(10 * 65536 + 100, 50, 10 * 65536 + 200, load);
  t.equal(e.length, 50, 'a buffer is cut at the volume end');
  c.invalidate(65536 * 2 - 1, 2);
  const before = loads.length;
  c.read(2 * 65536, 1, 1 << 30, load);
  t.equal(loads.length, before + 1, 'invalidate drops every buffer the range touches');
});

t.test('PhysBufferCache: scattered reads fetch only their blocks', async (t) => {
  const sizes: number[] = [];
  const c = new PhysBufferCache(4 * 65536);
  const load = (base: number, size: number) => {
    sizes.push(size);
    return Buffer.alloc(size, 7);
  };
  // One 1 KiB block from each of 64 buffers, more than the cache holds: no 64 KiB loads.
  for (let i = 0; i < 64; i++) t.equal(c.read(i * 65536 + 2048, 1024, 1 << 30, load)[5], 7);
  t.ok(sizes.every((x) => x === 1024), 'each read fetched its block alone');
  t.equal(c.read(5 * 65536 + 4096, 1024, 1 << 30, load).length, 1024);
  t.equal(sizes[sizes.length - 1], 65536, 'a second read from a buffer loads it whole');
  t.equal(c.read(5 * 65536 + 8192, 1024, 1 << 30, load).length, 1024);
  t.equal(sizes.length, 65, 'and the next one is served from it');
  c.clear();
  c.read(5 * 65536, 1024, 1 << 30, load);
  t.equal(sizes[sizes.length - 1], 1024, 'clear forgets what was seen');
});

/** The volumes of a new 1 GiB image, open read-write (closed and removed at the end of the test). */
async function freshVolumes(t: Parameters<typeof tempDir>[0]): Promise<VolumeSet> {
  const img = path.join(tempDir(t), 'img');
  await formatHammer2({ paths: [img], sizes: [1 << 30] });
  const vols = VolumeSet.open(img, { writable: true });
  t.teardown(() => vols.close());
  return vols;
}

t.test('VolumeSet: reads after direct, queued and header writes see the new bytes', async (t) => {
  const vols = await freshVolumes(t);
  const off = 64 << 20; // somewhere in free space
  const old = vols.read(off, 1024);
  t.equal(vols.read(off + 4096, 1024).length, 1024);
  const hits = vols.bufCache.hits;
  vols.read(off + 8192, 1024);
  t.equal(vols.bufCache.hits, hits + 1, 'a neighbour comes from the cached buffer');

  // a small read across a buffer boundary (adjacent blocks read as one run)
  vols.write(off + 65536 - 512, Buffer.alloc(1024, 0x5e));
  vols.read(off + 65536 - 4096, 1024); // caches the first buffer
  const across = vols.read(off + 65536 - 512, 1024);
  t.equal(across.length, 1024, 'a read across two buffers is whole');
  t.ok(across.every((x) => x === 0x5e), 'and has both halves');
  t.throws(() => vols.bufCache.read(65536 - 10, 20, 1 << 30, () => Buffer.alloc(65536)), RangeError);

  vols.write(off + 1024, Buffer.alloc(1024, 0xa1));
  t.equal(vols.read(off + 1024, 1024)[0], 0xa1, 'direct write');
  t.same(vols.read(off, 1024), old, 'the rest of the buffer reads as before');

  vols.read(off + 2048, 1024);
  vols.writeQueued(off + 2048, Buffer.alloc(1024, 0xb2));
  t.equal(vols.read(off + 2048, 1024)[0], 0xb2, 'queued write');

  vols.read(off + 65536 - 1024, 1024);
  vols.writeQueued(off + 65536 - 1024, Buffer.alloc(2048, 0xc3)); // spans two buffers
  vols.read(off + 65536, 1024);
  t.equal(vols.read(off + 65536 - 1024, 1024)[0], 0xc3, 'queued write across buffers (first)');
  t.equal(vols.read(off + 65536, 1024)[0], 0xc3, 'queued write across buffers (second)');

  // write-through: a neighbour's write patches the cached buffer, no reload
  const off2 = off + 4 * 65536;
  vols.read(off2, 1024);
  vols.read(off2, 1024); // the second read keeps the buffer
  const m0 = vols.bufCache.misses;
  vols.writeQueued(off2 + 3072, Buffer.alloc(1024, 0xe5));
  vols.write(off2 + 5120, Buffer.alloc(1024, 0xe6));
  t.equal(vols.read(off2 + 3072, 1024)[0], 0xe5, 'queued neighbour write seen');
  t.equal(vols.read(off2 + 5120, 1024)[0], 0xe6, 'direct neighbour write seen');
  t.equal(vols.bufCache.misses, m0, 'both from the cached buffer, patched in place');
  const raw = Buffer.alloc(1024);
  fs.readSync(vols.volumes[0].dev.fd, raw, 0, 1024, off2 + 3072);
  t.equal(raw[0], 0xe5, 'and the media holds the same bytes');
  vols.writeQueued(off2, Buffer.alloc(65536, 0xe7)); // covers the buffer whole: dropped
  t.equal(vols.read(off2 + 100, 10)[0], 0xe7, 'a write covering the buffer whole');
  vols.read(off2 + 1024, 1024);
  vols.writeQueued(off2 + 1024, Buffer.alloc(1024, 0xe8));
  vols.discardWrites();
  t.equal(vols.read(off2 + 1024, 1024)[0], 0xe7, 'discarded writes leave no trace in the cache');

  const hdr = vols.read(0, 1024);
  vols.writeHeader(0, 0, Buffer.concat([Buffer.alloc(1024, 0xd4), Buffer.alloc(65536 - 1024)]));
  t.equal(vols.read(0, 1024)[0], 0xd4, 'header write');
  t.not(hdr[0], 0xd4);
});

t.test('VolumeSet: blocks of 16 KiB and more never load a buffer, but are served from one already cached', async (t) => {
  const vols = await freshVolumes(t);
  const off = 96 << 20;
  vols.write(off + 16384, Buffer.alloc(16384, 0x3c));
  const m0 = vols.bufCache.misses;
  for (let i = 0; i < 3; i++) t.equal(vols.read(off + 16384, 16384)[100], 0x3c, 'a 16 KiB block reads right');
  t.equal(vols.bufCache.misses, m0, 'and loads no buffer');
  vols.read(off, 1024);
  vols.read(off, 1024); // the buffer is kept now
  const h0 = vols.bufCache.hits;
  t.equal(vols.read(off + 16384, 16384)[16383], 0x3c);
  t.equal(vols.bufCache.hits, h0 + 1, 'a cached buffer serves it');
  vols.writeQueued(off + 16384, Buffer.alloc(16384, 0x4d));
  t.equal(vols.read(off + 16384, 16384)[0], 0x4d, 'and sees a queued write');
});
