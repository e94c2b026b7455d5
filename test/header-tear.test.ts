// A volume header cut short while written. A commit rewrites the header in
// place, and an image under 2 GiB has only one: a kill inside a buffered
// 64 KiB write could leave its first page new and the rest old, and nothing
// to mount. Headers now go out as one O_DIRECT request; the fault hook
// (HAMMER2_FAULT_HEADER) makes the tear on purpose, and fsck -y mends it.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { formatHammer2 } from '../mkfs/newfs';
import { checkVolumeHeader, encodeVolumeHeader, decodeVolumeHeader, VOLUME_BYTES } from '../src/media';
import { Device } from '../src/store';
import { fuseUnavailable, haveRef, refFsck, REPO, tempDir } from './lib/env';
import { mount } from './lib/mount';

process.env.HAMMER2_QUIET_SHIM = '1';
const FSCK = path.join(REPO, 'dist', 'src', 'cli', 'fsck_hammer2.js');
const fsck = (...args: string[]) => spawnSync(process.execPath, [FSCK, ...args], { encoding: 'utf8' });

t.test('writeWhole writes the header exactly (direct I/O where the host has it)', async (t) => {
  const dir = tempDir(t);
  const img = path.join(dir, 'a.img');
  await formatHammer2({ paths: [img], sizes: [64 << 20] });
  const d = Device.open(img, { writable: true });
  try {
    const hdr = decodeVolumeHeader(d.read(0, VOLUME_BYTES));
    hdr.mirrorTid += 5n;
    const raw = encodeVolumeHeader(hdr);
    d.writeWhole(0, raw);
    t.ok(d.read(0, VOLUME_BYTES).equals(raw), 'reads back as written');
    t.ok(checkVolumeHeader(d.read(0, VOLUME_BYTES)).ok, 'and verifies');
  } finally {
    d.close();
  }
});

t.test('a torn header: both fscks refuse the image, fsck -y mends it, nothing fsynced is lost', async (t) => {
  const why = fuseUnavailable();
  if (why) return t.skip(why);
  const dir = tempDir(t);
  const img = path.join(dir, 'a.img');
  await formatHammer2({ paths: [img], sizes: [1 << 30] });
  const mnt = path.join(dir, 'mnt');
  // The daemon's 4th header write stops after one page, and the daemon dies.
  process.env.HAMMER2_FAULT_HEADER = '4:4096';
  let m;
  try {
    m = await mount(t, `${img}@DATA`, mnt, ['-o', 'flush=60']);
  } finally {
    delete process.env.HAMMER2_FAULT_HEADER;
  }
  const synced: string[] = [];
  for (let i = 0; i < 10; i++) {
    try {
      const fd = fs.openSync(path.join(mnt, `f${i}`), 'w');
      fs.writeSync(fd, `file ${i}`);
      fs.fsyncSync(fd);
      fs.closeSync(fd);
      synced.push(`f${i}`);
    } catch {
      break;
    }
  }
  await m.unmount();
  t.ok(synced.length >= 1 && synced.length < 10, `the daemon died inside a header write after ${synced.length} fsyncs`);
  const before = fsck(img);
  t.equal(before.status, 4, 'our fsck: no valid header');
  t.match(before.stdout, /cut short/, 'and says the header was cut short');
  if (haveRef('fsck_hammer2')) t.not(refFsck(img).status, 0, 'the reference fsck refuses it too');
  const y = fsck('-y', img);
  t.equal(y.status, 1, `fsck -y mends it (exit 1: errors corrected): ${y.stdout.trim().split('\n').slice(-3).join(' | ')}`);
  t.equal(fsck(img).status, 0, 'clean after');
  if (haveRef('fsck_hammer2')) t.equal(refFsck(img).status, 0, 'for the reference too');
  const m2 = await mount(t, `${img}@DATA`, mnt);
  for (const f of synced) t.equal(fs.readFileSync(path.join(mnt, f), 'utf8'), `file ${f.slice(1)}`, `${f} (fsynced) is intact`);
  await m2.unmount();
});
