// Damaged media: a flipped byte in a data block fails only that file (EIO),
// a damaged newest volume header falls back to an older valid one, and
// images that are not HAMMER2 (or are cut short) are refused with one line.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Hammer2Device } from '../src/engine';
import { Pfs } from '../src/fs';
import { BrefType, encodeVolumeHeader, inodeBlockset, ZONE_BYTES } from '../src/media';
import { scanRange } from '../src/engine';
import { COMPARE_TREE, FIXTURES, fuseUnavailable, haveFixtures, MOUNT_BIN, tempDir, unpackFixture, flipByte } from './lib/env';
import { mount } from './lib/mount';

process.env.HAMMER2_QUIET_SHIM = '1';

/** Physical offset of the first data block of a file. */
async function firstDataBlock(img: string, label: string, file: string): Promise<number> {
  const dev = await Hammer2Device.open(img, { lock: false });
  try {
    const pfs = new Pfs(dev.reader, dev.findPfs(label)!);
    const ip = pfs.resolve(file);
    let off = -1;
    scanRange(dev.reader, inodeBlockset(ip.data), 0n, 0n, (b) => {
      if (b.type === BrefType.DATA) off = Number(b.dataOff & ~0x3fn);
      return true;
    });
    if (off < 0) throw new Error(`${file} has no data block`);
    return off;
  } finally {
    dev.close();
  }
}

if (!haveFixtures()) {
  t.plan(0, `no fixtures at ${FIXTURES}`);
} else {
  for (const [fixture, file] of [
    ['checks-iscsi32', '/sizes/f65536'],
    ['zlib', '/compress/text-1M.txt'],
  ] as const) {
    t.test(`flipped data byte in ${fixture}:${file}`, async (t) => {
      const dir = tempDir(t);
      const img = unpackFixture(fixture, dir);
      const manifest = path.join(FIXTURES, `${fixture}.manifest.json`);
      const entries = JSON.parse(fs.readFileSync(manifest, 'utf8')).entries as { path: string; type: string }[];
      const target = entries.find((e) => e.path === file) ? file : entries.find((e) => e.type === 'file' && e.path.includes('/'))!.path;
      const off = await firstDataBlock(img, 'DATA', target);
      flipByte(img, off + 17);

      const errors: string[] = [];
      const dev = await Hammer2Device.open(img, { lock: false, onCheckError: (m) => errors.push(m) });
      t.teardown(() => dev.close());
      const pfs = new Pfs(dev.reader, dev.findPfs('DATA')!);
      const ip = pfs.resolve(target);
      t.throws(() => pfs.read(ip, 0, 65536), { name: 'MediaError' }, 'read of the damaged block fails');
      t.equal(errors.length, 1, 'the check failure is reported once');
      t.match(errors[0], /check failed .* at 0x/, 'with the block offset');
      // Everything else still reads.
      let others = 0;
      for (const e of entries) {
        if (e.type !== 'file' || e.path === target) continue;
        const o = pfs.resolve(e.path);
        pfs.read(o, 0, Number(o.data.meta.size));
        others++;
      }
      t.ok(others > 3, `${others} other files read cleanly`);

      const why = fuseUnavailable();
      if (why) return t.skip(why);
      const m = await mount(t, `${img}@DATA`, path.join(dir, 'mnt'), ['-o', 'ro']);
      await t.rejects(fs.promises.readFile(path.join(m.mnt, target)), { code: 'EIO' }, 'EIO through FUSE');
      const r = spawnSync('python3', [COMPARE_TREE, manifest, '--pfs', 'DATA', '--root', m.mnt, '--quiet'], { encoding: 'utf8' });
      t.match(r.stdout.trim(), /^\d+ passed, 1 failed$/, 'only the damaged file fails the manifest');
      await m.unmount();
      t.match(m.log(), /check failed/, 'the daemon logged the bad block');
    });
  }

  t.test('damaged newest volume header falls back to the next best', async (t) => {
    const dir = tempDir(t);
    const img = unpackFixture('checks-none', dir);
    // Give the image a second header slot holding a newer copy of the header.
    fs.truncateSync(img, ZONE_BYTES + 65536);
    const raw = Buffer.alloc(65536);
    const fd = fs.openSync(img, 'r+');
    fs.readSync(fd, raw, 0, 65536, 0);
    const dev0 = await Hammer2Device.open(img, { lock: false });
    const hdr = dev0.header;
    dev0.close();
    hdr.mirrorTid += 1n;
    fs.writeSync(fd, encodeVolumeHeader(hdr), 0, 65536, ZONE_BYTES);
    fs.closeSync(fd);

    let dev = await Hammer2Device.open(img, { lock: false });
    t.equal(dev.vols.headerZone, 1, 'the newer header (zone 1) is used');
    dev.close();

    flipByte(img, ZONE_BYTES + 0x210); // inside the sroot blockset sector
    dev = await Hammer2Device.open(img, { lock: false });
    t.equal(dev.vols.headerZone, 0, 'falls back to zone 0');
    t.match(dev.vols.candidates[1], { ok: false, reason: /CRC/ }, 'zone 1 reported bad');
    t.ok(dev.listPfs().some((p) => p.name === 'DATA'), 'the filesystem is intact');
    dev.close();

    const why = fuseUnavailable();
    if (why) return t.skip(why);
    const m = await mount(t, `${img}@DATA`, path.join(dir, 'mnt'), ['-o', 'ro']);
    const r = spawnSync('python3', [COMPARE_TREE, path.join(FIXTURES, 'checks-none.manifest.json'), '--pfs', 'DATA', '--root', m.mnt, '--quiet'], {
      encoding: 'utf8',
    });
    t.match(r.stdout.trim(), /^\d+ passed, 0 failed$/);
    await m.unmount();
  });

  t.test('images that are not HAMMER2 are refused with one clear line', async (t) => {
    const dir = tempDir(t);
    const junk = path.join(dir, 'junk.img');
    fs.writeFileSync(junk, Buffer.alloc(1 << 20, 0x41));
    await t.rejects(Hammer2Device.open(junk, { lock: false }), { name: 'MountError', message: /not a HAMMER2 volume/ });
    const tiny = path.join(dir, 'tiny.img');
    fs.writeFileSync(tiny, Buffer.alloc(100));
    await t.rejects(Hammer2Device.open(tiny, { lock: false }), { name: 'MountError', message: /too small/ });
    // A reference image cut short: the header survives, the volume does not fit.
    const img = unpackFixture('empty', dir);
    fs.truncateSync(img, 64 * 1024 * 1024);
    await t.rejects(Hammer2Device.open(img, { lock: false }), { name: 'MountError', message: /truncated/ });

    const why = fuseUnavailable();
    if (why) return t.skip(why);
    const mnt = path.join(dir, 'mnt');
    fs.mkdirSync(mnt);
    for (const [spec, re] of [
      [junk, /not a HAMMER2 volume/],
      [`${img}`, /truncated/],
      [path.join(dir, 'missing.img'), /no such file/],
    ] as const) {
      const r = spawnSync(process.execPath, [MOUNT_BIN, spec, mnt], { encoding: 'utf8', env: { ...process.env, HAMMER2_QUIET_SHIM: '1' } });
      t.equal(r.status, 1, `${path.basename(spec)} refused`);
      t.match(r.stderr, re);
      t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    }
  });

  t.test('an unknown PFS label lists the ones there are', async (t) => {
    const why = fuseUnavailable();
    if (why) return t.skip(why);
    const dir = tempDir(t);
    const img = unpackFixture('multipfs', dir);
    const mnt = path.join(dir, 'mnt');
    fs.mkdirSync(mnt);
    const r = spawnSync(process.execPath, [MOUNT_BIN, `${img}@NOPE`, mnt], { encoding: 'utf8', env: { ...process.env, HAMMER2_QUIET_SHIM: '1' } });
    t.equal(r.status, 1);
    t.match(r.stderr, /no PFS labelled "NOPE" \(available: .*DATA.*HOME/);
  });
}
