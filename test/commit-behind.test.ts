// Commits written behind the JS thread (Hammer2Fs.flushBehind,
// VolumeSet.commitBehind): the shim's I/O thread writes the blocks, syncs,
// writes the volume header and syncs again, while memory already holds the
// committed state. Reads see the commit's blocks before the media does; a
// write the thread could not do is done again at settle(), and if that
// fails too the commit is kept (nothing lost) until a later try succeeds
// (with a full host disk under a mount: test/faults.test.ts).
import t from 'tap';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { FreemapAllocator } from '../src/engine';
import { Hammer2Fs } from '../src/fs';
import { ObjType, ZONE_BYTES } from '../src/media';
import { nativeShim, VolumeSet } from '../src/store';
import { formatHammer2 } from '../mkfs/newfs';
import { haveRef, readAt, REPO, refFsck, refRead, tempDir } from './lib/env';

process.env.HAMMER2_QUIET_SHIM = '1';
const MiB = 2 ** 20;
const cred = { uid: 0, gid: 0 };
const now = 1_700_000_000_000_000n;
const shim = nativeShim();
const noThread = !shim?.ioStart ? 'the native shim (with ioStart) is not built' : false;

function bytes(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 13 + seed * 101 + (i >> 11)) & 255;
  return b;
}

t.test('ioStart: steps in order, errors reported, bad steps refused', { skip: noThread }, async (t) => {
  const dir = tempDir(t, 'h2io-');
  const f = path.join(dir, 'f');
  fs.writeFileSync(f, Buffer.alloc(1 * MiB));
  const fd = fs.openSync(f, 'r+');
  t.teardown(() => fs.closeSync(fd));
  const a = Buffer.alloc(4096, 1);
  const b = Buffer.alloc(8192, 2);
  const job = shim!.ioStart!([[0, fd, 4096, [a, b]], [1, fd], [2, fd, 65536, [Buffer.alloc(4096, 3)]], [1, fd]])!;
  t.equal(shim!.ioWait!(job), 0);
  t.ok(shim!.ioDone!(job));
  t.ok(readAt(f, 4096, 12288).equals(Buffer.concat([a, b])), 'buffers written back to back');
  t.ok(readAt(f, 65536, 4096).equals(Buffer.alloc(4096, 3)), 'aligned write');
  // A descriptor that cannot be written: the job stops there with its errno.
  const ro = fs.openSync(f, 'r');
  t.teardown(() => fs.closeSync(ro));
  const bad = shim!.ioStart!([[0, ro, 0, [Buffer.alloc(512, 9)]], [0, fd, 0, [Buffer.alloc(512, 7)]]])!;
  t.equal(shim!.ioWait!(bad), -9, 'EBADF');
  t.ok(readAt(f, 0, 512).equals(Buffer.alloc(512)), 'nothing after the failed step ran');
  t.throws(() => shim!.ioStart!([[5, fd] as never]), /ioStart/);
  t.throws(() => shim!.ioStart!([[0, fd, 0, []] as never]), /ioStart/);
  t.throws(() => shim!.ioWait!({}), /ioWait/);
});

t.test('VolumeSet.commitBehind: reads see the commit, a failed write is done again', { skip: noThread }, async (t) => {
  const dir = tempDir(t, 'h2cb-');
  const img = path.join(dir, 'a.img');
  await formatHammer2({ paths: [img], sizes: [3 * 2 ** 30] }); // sparse; a second header zone at 2 GiB
  const vs = VolumeSet.open(img, { writable: true });
  t.teardown(() => vs.close());
  const at = 64 * MiB;
  const blocks = [0, 1, 2, 3].map((i) => bytes(65536, i));
  // A block written at once (as the freemap's are), then changed in place by its owner.
  vs.recordWrites(true);
  const leafAt = 96 * MiB;
  const leaf = bytes(4096, 9);
  const leafWant = Buffer.from(leaf);
  vs.write(leafAt, leaf);
  leaf.fill(0xee);
  blocks.forEach((b, i) => vs.writeQueued(at + i * 65536, b));
  const raw = readAt(img, 0, 65536); // the header as it is: the test only watches where it goes
  // The thread's descriptor refuses writes: its job fails at the first step.
  const dev = vs.volumes[0].dev as unknown as { fd: number };
  const good = dev.fd;
  const ro = fs.openSync(img, 'r');
  t.teardown(() => fs.closeSync(ro));
  Object.defineProperty(dev, 'fd', { value: ro, configurable: true, writable: true });
  const io = vs.commitBehind(1, raw)!;
  vs.recordWrites(false);
  t.ok(io, 'started');
  t.equal(vs.commitBehind(2, raw), null, 'one at a time');
  while (io.state() === 'running') await new Promise((r) => setTimeout(r, 5));
  t.equal(io.state(), 'failed');
  t.notOk(readAt(img, at, 65536).equals(blocks[0]), 'the media does not hold the block');
  // Reads see the commit's bytes anyway, whole, in part, and spanning blocks.
  t.ok(vs.read(at + 65536, 65536).equals(blocks[1]), 'read of a whole block');
  t.ok(vs.read(at + 2 * 65536 + 1000, 3000).equals(blocks[2].subarray(1000, 4000)), 'read inside a block');
  const span = Buffer.alloc(65536 * 2);
  vs.readSpan(at + 32768, span.length, span);
  t.ok(span.equals(Buffer.concat(blocks).subarray(32768, 32768 + span.length)), 'readSpan across blocks');
  // Still refused at settle: the commit is kept and the error thrown.
  t.throws(() => io.finish(), { code: 'EBADF' });
  t.equal(vs.behind, io, 'kept for the next try');
  t.ok(vs.read(at, 65536).equals(blocks[0]), 'still readable');
  // A failed sync may have dropped any page written since the last good one: the retry writes the leaf again too.
  const w = fs.openSync(img, 'r+');
  fs.writeSync(w, Buffer.alloc(4096, 0x11), 0, 4096, leafAt);
  fs.closeSync(w);
  t.ok(vs.read(leafAt, 4096).equals(leafWant), 'reads see that block as the commit wrote it meanwhile');
  Object.defineProperty(dev, 'fd', { value: good, configurable: true, writable: true });
  io.finish();
  t.equal(io.state(), 'ok');
  t.ok(readAt(img, leafAt, 4096).equals(leafWant), 'the block written straight away is written again too, as it was');
  t.equal(vs.behind, null);
  blocks.forEach((b, i) => t.ok(readAt(img, at + i * 65536, 65536).equals(b), `block ${i} on media after the retry`));
  t.ok(readAt(img, ZONE_BYTES, 65536).equals(raw), 'header written into zone 1');
});

t.test('flushBehind: state in memory at once, on media after settle, fsck-clean', { skip: noThread }, async (t) => {
  const dir = tempDir(t, 'h2fb-');
  const img = path.join(dir, 'a.img');
  await formatHammer2({ paths: [img], sizes: [512 * MiB] });
  const open = () => Hammer2Fs.open(img, { writable: true, lock: false, allocator: (d) => new FreemapAllocator(d.vols, d.reader, d.header) });
  let h2 = await open();
  let pfs = h2.pfs('DATA')!;
  const want = new Map<string, Buffer>();
  const seen: bigint[] = [];
  h2.commitListeners.add((tid) => seen.push(tid));
  for (let round = 0; round < 6; round++) {
    const d = bytes(3 * MiB + round * 12345, round);
    const f = pfs.create(pfs.root, Buffer.from(`f${round}`), ObjType.REGFILE, 0o644, cred, now);
    pfs.write(f, 0, d, now);
    want.set(`f${round}`, d);
    // Overwrite part of the previous round's file: its blocks may still be in flight.
    if (round > 0) {
      const prev = pfs.resolve(`/f${round - 1}`);
      const patch = bytes(100_000, 50 + round);
      pfs.write(prev, 70_000, patch, now);
      const old = want.get(`f${round - 1}`)!;
      patch.copy(old, 70_000);
    }
    const tid = h2.nextTid;
    h2.flushBehind();
    t.notOk(h2.dirty, `round ${round}: nothing pending once started`);
    t.equal(h2.dev.header.mirrorTid, tid, 'the header in memory is the new one');
    for (const [name, d] of want) t.ok(pfs.read(pfs.resolve(`/${name}`), 0, d.length).equals(d), `round ${round}: ${name} reads back`);
    if (round === 3) {
      // Bulkfree settles first: it must not take the in-flight commit's blocks for free.
      h2.bulkfree();
    }
  }
  h2.settle();
  t.same(seen.length >= 6, true, 'listeners ran for each commit');
  h2.close();
  if (haveRef('fsck_hammer2')) t.equal(refFsck(img).status, 0, 'reference fsck_hammer2 passes');
  h2 = await open();
  pfs = h2.pfs('DATA')!;
  for (const [name, d] of want) t.ok(pfs.read(pfs.resolve(`/${name}`), 0, d.length).equals(d), `${name} intact after remount`);
  h2.close();
  if (haveRef('makefs')) {
    const out = refRead(img, 'DATA', dir);
    for (const [name, d] of want) t.ok(fs.readFileSync(path.join(out, name)).equals(d), `makefs reads ${name} back`);
  }
});

t.test('SIGKILL while a commit is written behind: the old or the new state, never a mix', { skip: noThread }, async (t) => {
  const dir = tempDir(t, 'h2fk-');
  const img = path.join(dir, 'a.img');
  await formatHammer2({ paths: [img], sizes: [512 * MiB] });
  const h2 = await Hammer2Fs.open(img, { writable: true, lock: false, allocator: (d) => new FreemapAllocator(d.vols, d.reader, d.header) });
  const pfs = h2.pfs('DATA')!;
  const f = pfs.create(pfs.root, Buffer.from('base'), ObjType.REGFILE, 0o644, cred, now);
  pfs.write(f, 0, bytes(1 * MiB, 1), now);
  h2.flush();
  h2.close();
  const child = `
    const { Hammer2Fs } = require(${JSON.stringify(path.join(REPO, 'dist', 'src', 'fs'))});
    const { FreemapAllocator } = require(${JSON.stringify(path.join(REPO, 'dist', 'src', 'engine'))});
    (async () => {
      const h2 = await Hammer2Fs.open(process.argv[1], { writable: true, lock: false, allocator: (d) => new FreemapAllocator(d.vols, d.reader, d.header) });
      const pfs = h2.pfs('DATA');
      const b = require('node:crypto').randomBytes(24 << 20);
      require('node:fs').writeFileSync(process.argv[3], b);
      const f = pfs.create(pfs.root, Buffer.from(process.argv[2]), ${ObjType.REGFILE}, 0o644, { uid: 0, gid: 0 }, 1n);
      pfs.write(f, 0, b, 1n);
      h2.flushBehind();
      // Killed at some point of the thread's writes, syncs and header write (or after them).
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Number(process.argv[4]));
      process.kill(process.pid, 'SIGKILL');
    })();`;
  let made = 0;
  for (const [i, delay] of [0, 10, 40, 150, 1500].entries()) {
    const name = `new${i}`;
    const saved = path.join(dir, `${name}.bin`);
    const r = spawnSync(process.execPath, ['-e', child, img, name, saved, String(delay)], { encoding: 'utf8', env: { ...process.env, HAMMER2_QUIET_SHIM: '1' } });
    t.equal(r.signal, 'SIGKILL', `child ${i} killed after ${delay} ms (${r.stderr.slice(0, 300)})`);
    const h = await Hammer2Fs.open(img, { writable: false, lock: false });
    const p = h.pfs('DATA')!;
    t.ok(p.read(p.resolve('/base'), 0, MiB).equals(bytes(MiB, 1)), 'the committed file is intact');
    const e = p.lookup(p.root, Buffer.from(name));
    if (e) {
      made++;
      const want = fs.readFileSync(saved);
      t.ok(p.read(p.getInode(e.inum), 0, want.length).equals(want), `${name}: the new state, whole`);
    } else t.pass(`${name}: the old state`);
    h.close();
    if (haveRef('fsck_hammer2')) t.equal(refFsck(img).status, 0, 'reference fsck_hammer2 passes');
  }
  t.comment(`${made} of 5 commits were on media at the kill`);
});

t.test('the metadata cache gives room to what waits for a commit and to the commit in flight, and takes it back', { skip: noThread }, async (t) => {
  const dir = tempDir(t, 'h2room-');
  const img = path.join(dir, 'a.img');
  await formatHammer2({ paths: [img], sizes: [512 * MiB] });
  const h2 = await Hammer2Fs.open(img, { writable: true, lock: false, cacheBytes: 32 * MiB, allocator: (d) => new FreemapAllocator(d.vols, d.reader, d.header) });
  t.teardown(() => h2.close());
  const pfs = h2.pfs('DATA')!;
  const budget = () => h2.dev.reader.cacheStats.budget;
  t.equal(budget(), 32 * MiB, 'the whole budget while nothing waits');
  const f = pfs.create(pfs.root, Buffer.from('f'), ObjType.REGFILE, 0o644, cred, now);
  // Incompressible: the commit in flight then holds as much as was written.
  const a = crypto.randomBytes(6 * MiB);
  const b = crypto.randomBytes(30 * MiB);
  pfs.write(f, 0, Buffer.from(a), now);
  h2.makeRoom();
  t.equal(budget(), 26 * MiB, 'gives up what the data waiting takes');
  pfs.write(f, 6 * MiB, Buffer.from(b), now);
  h2.makeRoom();
  t.equal(budget(), 8 * MiB, 'never below a quarter');
  h2.flushBehind();
  t.ok(budget() <= 8 * MiB, 'the commit in flight holds the blocks');
  h2.settle();
  t.equal(budget(), 32 * MiB, 'all of it back once the commit is on media');
  t.ok(pfs.read(f, 6 * MiB - 10, 20).equals(Buffer.concat([a.subarray(-10), b.subarray(0, 10)])), 'data reads back');
});
