// hammer2 growfs: an unmounted image grown to a size, a live mount grown
// into an image file extended under it, and every refusal. Each image is
// checked by our fsck and, where at hand, the reference fsck, and read back
// through the reference makefs.
import t from 'tap';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';

process.env.HAMMER2_QUIET_SHIM = '1';

import { run as hammer2 } from '../src/cli/hammer2';
import { checkHammer2 } from '../fsck/check';
import { VolumeSet } from '../src/store';
import { decodeVolumeHeader, encodeVolumeHeader, VOLUME_BYTES, ZONE_BYTES } from '../src/media';
import { mount } from './lib/mount';
import { h2, newImage, runH2 } from './lib/cli';
import { fileHashes, fuseUnavailable, haveRef, refFsck, refRead } from './lib/env';

const MiB = 1 << 20;
const GiB = 1 << 30;
const cli = h2;
const run = (args: string[]) => runH2(args);

function header(img: string) {
  const vs = VolumeSet.open(img, { writable: false, lock: false });
  try {
    return { ...vs.header, zone: vs.headerZone };
  } finally {
    vs.close();
  }
}

async function clean(t: Tap.Test, img: string, what: string): Promise<void> {
  const r = await checkHammer2(img, { lock: false });
  const codes = [...r.report.byCode.keys()];
  t.equal(r.report.errors, 0, `our fsck: no errors ${what} (${codes.join(', ')})`);
  t.notOk(r.report.byCode.has('allocator-free'), `our fsck: allocator_free agrees with the freemap ${what}`);
  if (haveRef('fsck_hammer2')) {
    const f = refFsck(img);
    t.equal(f.status, 0, `reference fsck clean ${what}`, { out: f.out.slice(-1500) });
  }
}

t.test('an unmounted image: --size, +SIZE, no change, refusals', async (t) => {
  const { dir, img } = await newImage(t, 1100 * MiB);
  const h0 = header(img);
  t.equal(h0.voluSize, BigInt(1096 * MiB), 'newfs rounds down to 8 MiB');

  let r = await cli(['--size', '3G', 'growfs', img]);
  t.equal(r.status, 0, r.err);
  t.equal(r.out, `${img} grown to 00000000c0000000\n`, 'the reference\'s line');
  t.equal(fs.statSync(img).size, 3 * GiB, 'the image file was extended');
  const h1 = header(img);
  t.equal(h1.voluSize, BigInt(3 * GiB));
  t.equal(h1.allocatorSize - h0.allocatorSize, BigInt(3 * GiB - 1096 * MiB), 'allocator_size grows by the growth');
  t.equal(h1.allocatorFree - h0.allocatorFree, BigInt(3 * GiB - 1096 * MiB), 'and so does allocator_free');
  t.equal(h1.mirrorTid, h0.mirrorTid + 1n, 'one transaction');
  await clean(t, img, 'after growing offline');

  r = await cli(['growfs', img]);
  t.equal(r.out, `${img} no size change - 00000000c0000000\n`);
  t.equal(r.status, 0);

  r = await cli(['--size', '+100M', 'growfs', img]);
  t.equal(r.status, 0, r.err);
  t.equal(r.out, `${img} grown to 00000000c6000000\n`, '+SIZE grows by that much, rounded to 8 MiB');

  let bar = '';
  t.equal(await hammer2(['--size', '+8M', 'growfs', img], { out: () => {}, err: (s) => (bar += s), tty: true }), 0);
  t.match(bar, /\r\x1b\[Kgrowfs: \[[#.]{20}\] +\d+% commit/, 'a terminal sees a progress bar');
  t.ok(bar.endsWith('\r\x1b[K'), 'and it is cleared at the end');
  bar = '';
  t.equal(await hammer2(['bulkfree', img], { out: () => {}, err: (s) => (bar += s), tty: true }), 0);
  t.match(bar, /\r\x1b\[Kbulkfree: \[#{20}\] 100% scan/, 'bulkfree too');

  r = await cli(['growfs', '--size', '+8M', img]);
  t.equal(r.out, `${img} grown to 00000000c7000000\n`, '--size after the directive works too');

  r = await cli(['--size', '2G', 'growfs', img]);
  t.equal(r.status, 1, 'shrinking is refused');
  t.match(r.err, /^grow .* failed: .*would shrink/);
  r = await cli(['--size', 'lots', 'growfs', img]);
  t.equal(r.status, 1);
  t.match(r.err, /--size: cannot read "lots"/);
  r = await cli(['growfs', path.join(dir, 'nonexistent')]);
  t.equal(r.status, 1);
  t.match(r.err, /^grow .*nonexistent failed: /);
  t.equal(header(img).voluSize, BigInt(3 * GiB + 112 * MiB), 'refusals changed nothing');
  await clean(t, img, 'after the refusals');
});

t.test('a live mount grows into its extended image file', { skip: fuseUnavailable() ?? false }, async (t) => {
  const { dir, img } = await newImage(t, 1100 * MiB);
  const mnt = path.join(dir, 'mnt');
  const m = await mount(t, `${img}@ROOT`, mnt);
  const chunk = crypto.randomBytes(MiB);
  const fill = async (name: string, mib: number) => {
    const fh = await fsp.open(path.join(mnt, name), 'w');
    try {
      for (let i = 0; i < mib; i++) {
        chunk.writeUInt32LE(i, 0);
        await fh.write(chunk);
      }
    } catch (e) {
      await fh.close().catch(() => {});
      throw e;
    }
    // A close reports the error of pages still to be written (with -o writeback_cache, every one).
    await fh.close();
  };
  await fill('before', 700);
  // More than what is left: a write (or, for pages the kernel still held, the close) fails with ENOSPC.
  const tooMuch = await fill('big', 800).then(
    () => null,
    (e: NodeJS.ErrnoException) => e.code,
  );
  t.equal(tooMuch, 'ENOSPC', 'the small filesystem is full');
  await fsp.rm(path.join(mnt, 'big'));

  // A stale header where the new space will be, newer than ours and covering it:
  // without growfs clearing that slot, the next open would take it.
  const raw = Buffer.alloc(VOLUME_BYTES);
  const fd = fs.openSync(img, 'r+');
  fs.readSync(fd, raw, 0, VOLUME_BYTES, 0);
  const fake = decodeVolumeHeader(raw);
  fake.mirrorTid += 1000n;
  fake.voluSize = BigInt(3 * GiB);
  fs.writeSync(fd, encodeVolumeHeader(fake), 0, VOLUME_BYTES, ZONE_BYTES);
  fs.ftruncateSync(fd, 3 * GiB);
  fs.closeSync(fd);

  let r = await run(['growfs', mnt]);
  t.equal(r.status, 0, r.err);
  t.equal(r.out, `${mnt} grown to 00000000c0000000\n`);
  const st = await fsp.statfs(mnt);
  t.ok(st.blocks * st.bsize > 2.9 * GiB, `df sees the new size (${st.blocks * st.bsize})`);
  await fill('big', 800);
  t.pass('800 MiB more fit after growfs');
  r = await run(['growfs', mnt]);
  t.equal(r.out, `${mnt} no size change - 00000000c0000000\n`);
  const want = new Map<string, string>();
  for (const n of ['before', 'big']) want.set(n, crypto.createHash('sha256').update(await fsp.readFile(path.join(mnt, n))).digest('hex'));
  await m.unmount();

  const h = header(img);
  t.equal(h.voluSize, BigInt(3 * GiB), 'the grown header is the one in force');
  t.ok(h.mirrorTid < fake.mirrorTid, 'the stale header was cleared, not chosen');
  await clean(t, img, 'after growing live');
  if (haveRef('makefs')) t.same(fileHashes(refRead(img, 'ROOT', dir)), want, 'the reference reads back every file');
});

t.test('a read-only mount refuses', { skip: fuseUnavailable() ?? false }, async (t) => {
  const { dir, img } = await newImage(t, 300 * MiB);
  fs.truncateSync(img, 600 * MiB);
  const mnt = path.join(dir, 'mnt');
  const m = await mount(t, `${img}@ROOT`, mnt, ['-o', 'ro']);
  const r = await run(['growfs', mnt]);
  t.equal(r.status, 1);
  t.match(r.err, /^grow .* failed: .*read-only/i);
  await m.unmount();
  t.equal(header(img).voluSize, BigInt(296 * MiB), 'nothing changed');
});
