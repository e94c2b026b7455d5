// newfs_hammer2: format images, read them back through the engine, and
// compare them field by field with images the reference newfs_hammer2 made
// (../shared/fixtures/newfs; those comparisons skip when it is absent).
import t, { Test } from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

process.env.HAMMER2_QUIET_SHIM = '1';
import { readAt } from './lib/env';

import {
  Blockref,
  BrefType,
  CheckMethod,
  CompMethod,
  decodeInode,
  decodeVolumeHeader,
  checkVolumeHeader,
  dirhash,
  HAMMER2_UUID_STRING,
  inodeBlockset,
  ObjType,
  OPFLAG_PFSROOT,
  PfsType,
  uuidToString,
  VolumeHeader,
  VOLUME_BYTES,
  ZONE_BYTES,
  ZONE_SEG,
  initCodecs,
  xxh64,
  BREF_FLAG_PFSROOT,
} from '../src/media';
import { Hammer2Device } from '../src/engine';
import { Pfs } from '../src/fs';
import {
  computeAreas,
  formatHammer2,
  FormatOptions,
  FormatResult,
  formatSummary,
  minimumSize,
  NewfsError,
  parseSize,
  resolveLabels,
  sizeToStr,
} from '../mkfs/newfs';
import { run as runCli } from '../src/cli/newfs_hammer2';

const ROOT = path.resolve(__dirname, '..');
const FIXTURES = path.resolve(ROOT, '..', 'shared', 'fixtures', 'newfs');
const haveFixtures = fs.existsSync(path.join(FIXTURES, 'newfs-1g.img.tar.gz'));
const MiB = 2 ** 20;
const GiB = 2 ** 30;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'h2newfs-test-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
let seq = 0;
const tmpPath = (name: string): string => path.join(tmp, `${seq++}-${name}`);

/** A sparse file of `size` bytes (like truncate -s). */
function sparse(name: string, size: number): string {
  const p = tmpPath(name);
  const fd = fs.openSync(p, 'w');
  fs.ftruncateSync(fd, size);
  fs.closeSync(fd);
  return p;
}


/** Size, allocation, mtime and a hash of the first 8 MiB and of any header copies: enough to see a format. */
function fingerprint(p: string): string {
  const st = fs.statSync(p, { bigint: true });
  const h = crypto.createHash('sha256');
  h.update(readAt(p, 0, Math.min(Number(st.size), 8 * MiB)));
  for (let z = 1; z < 4 && z * ZONE_BYTES < Number(st.size); z++) h.update(readAt(p, z * ZONE_BYTES, VOLUME_BYTES));
  return `${st.size}/${st.blocks}/${st.mtimeNs}/${h.digest('hex')}`;
}

/** Header copies present: one per 2 GiB zone that starts inside the volume. */
function headers(p: string, volSize: number): { zone: number; raw: Buffer; h: VolumeHeader }[] {
  const out = [];
  for (let z = 0; z < 4 && z * ZONE_BYTES < volSize; z++) {
    const raw = readAt(p, z * ZONE_BYTES, VOLUME_BYTES);
    out.push({ zone: z, raw, h: decodeVolumeHeader(raw) });
  }
  return out;
}

/** Everything in a blockref but its check code (a hash over uuids and times). */
function brefShape(b: Blockref): Record<string, unknown> {
  return {
    type: b.type,
    methods: b.methods,
    copyid: b.copyid,
    keybits: b.keybits,
    vradix: b.vradix,
    flags: b.flags,
    leafCount: b.leafCount,
    key: b.key,
    mirrorTid: b.mirrorTid,
    modifyTid: b.modifyTid,
    dataOff: b.dataOff,
    updateTid: b.updateTid,
    embed: b.embed.toString('hex'),
  };
}

/** The volume header's fields, minus fsid and the CRCs. */
function headerShape(h: VolumeHeader): Record<string, unknown> {
  return {
    magic: h.magic,
    bootBeg: h.bootBeg,
    bootEnd: h.bootEnd,
    auxBeg: h.auxBeg,
    auxEnd: h.auxEnd,
    voluSize: h.voluSize,
    version: h.version,
    flags: h.flags,
    copyid: h.copyid,
    freemapVersion: h.freemapVersion,
    peerType: h.peerType,
    voluId: h.voluId,
    nvolumes: h.nvolumes,
    fstype: uuidToString(h.fstype),
    allocatorSize: h.allocatorSize,
    allocatorFree: h.allocatorFree,
    allocatorBeg: h.allocatorBeg,
    mirrorTid: h.mirrorTid,
    freemapTid: h.freemapTid,
    bulkfreeTid: h.bulkfreeTid,
    totalSize: h.totalSize,
    sroot: h.sroot.map(brefShape),
    freemap: h.freemap.map(brefShape),
    voluLoff: h.voluLoff,
  };
}

/** Raw header bytes with the per-format fields (fsid, CRCs, the sroot check) zeroed. */
function maskHeader(raw: Buffer): Buffer {
  const m = Buffer.from(raw);
  m.fill(0, 0x40, 0x50); // fsid
  m.fill(0, 0x1e0, 0x200); // icrc_sects
  for (let i = 0; i < 4; i++) m.fill(0, 0x200 + i * 128 + 0x40, 0x200 + i * 128 + 0x80); // sroot checks
  m.fill(0, 0xfffc, 0x10000); // icrc_volheader
  return m;
}

/** Raw inode bytes with times, pfs ids and blockset check codes zeroed. */
function maskInode(raw: Buffer): Buffer {
  const m = Buffer.from(raw);
  m.fill(0, 0x10, 0x30); // ctime mtime atime btime
  m.fill(0, 0x90, 0xb0); // pfs_clid pfs_fsid
  for (let i = 0; i < 4; i++) m.fill(0, 0x200 + i * 128 + 0x40, 0x200 + i * 128 + 0x80);
  return m;
}

interface Topology {
  sroot: { bref: Record<string, unknown>; meta: Record<string, unknown>; masked: Buffer };
  pfs: { name: string; bref: Record<string, unknown>; meta: Record<string, unknown>; masked: Buffer }[];
}

function inodeShape(raw: Buffer): Record<string, unknown> {
  const ip = decodeInode(raw);
  const m = ip.meta as unknown as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(m)) {
    if (['ctime', 'mtime', 'atime', 'btime', 'pfsClid', 'pfsFsid'].includes(k)) continue;
    out[k] = Buffer.isBuffer(v) ? v.toString('hex') : v;
  }
  out.filename = ip.filename.toString('utf8');
  out.blockset = inodeBlockset(ip).map(brefShape);
  return out;
}

/** Super-root and PFS inodes as the media holds them, read through the engine. */
async function topology(spec: string): Promise<Topology> {
  const dev = await Hammer2Device.open(spec, { lock: false });
  try {
    const sr = dev.superRoot();
    return {
      sroot: { bref: brefShape(sr.bref), meta: inodeShape(sr.inode.raw), masked: maskInode(sr.inode.raw) },
      pfs: dev.listPfs().map((p) => ({
        name: p.name,
        bref: brefShape(p.bref),
        meta: inodeShape(p.inode.raw),
        masked: maskInode(p.inode.raw),
      })),
    };
  } finally {
    dev.close();
  }
}

/**
 * Open through the engine: every expected PFS present, an empty MASTER
 * directory with the layout newfs gives it, unique ids.
 */
async function checkMount(t: Test, spec: string, r: FormatResult, expect: string[]): Promise<void> {
  const dev = await Hammer2Device.open(spec, { lock: false });
  try {
    t.equal(dev.vols.volumes.length, r.volumes.length, 'all volumes assembled');
    t.equal(dev.vols.totalSize, r.totalSize, 'total size');
    const sr = dev.superRoot();
    t.equal(sr.inode.meta.pfsType, PfsType.SUPROOT, 'super-root is SUPROOT');
    t.equal(sr.inode.meta.mode, 0o700, 'super-root mode 0700');
    t.equal(uuidToString(sr.inode.meta.pfsClid), r.supClid, 'super-root clid');
    t.equal(uuidToString(sr.inode.meta.pfsFsid), r.supFsid, 'super-root fsid');
    t.equal(uuidToString(dev.header.fsid), r.volFsid, 'volume fsid');
    t.equal(uuidToString(dev.header.fstype), HAMMER2_UUID_STRING, 'HAMMER2 fstype');
    const list = dev.listPfs();
    t.same(list.map((p) => p.name).sort(), [...expect].sort(), `PFSs ${expect.join(', ')}`);
    const ids = new Set<string>([r.supClid, r.supFsid, r.volFsid]);
    for (const e of list) {
      const m = e.inode.meta;
      const made = r.pfs.find((p) => p.label === e.name)!;
      t.ok(made, `${e.name} reported by newfs`);
      t.equal(uuidToString(m.pfsClid), made.clid, `${e.name} clid as printed`);
      t.equal(uuidToString(m.pfsFsid), made.fsid, `${e.name} fsid as printed`);
      ids.add(made.clid);
      ids.add(made.fsid);
      t.equal(m.type, ObjType.DIRECTORY, `${e.name} is a directory`);
      t.equal(m.pfsType, PfsType.MASTER, `${e.name} is a MASTER`);
      t.equal(m.opFlags & OPFLAG_PFSROOT, OPFLAG_PFSROOT, `${e.name} PFSROOT`);
      t.equal(m.inum, 1n, `${e.name} root inum 1`);
      t.equal(m.pfsInum, 16n, `${e.name} next inum 16`);
      t.equal(m.mode, 0o755, `${e.name} mode 0755`);
      t.equal(m.compAlgo, e.name.toLowerCase() === 'boot' ? CompMethod.AUTOZERO : CompMethod.LZ4, `${e.name} compression`);
      t.equal(m.checkAlgo, CheckMethod.XXHASH64, `${e.name} check`);
      t.equal(e.bref.key, dirhash(Buffer.from(e.name)), `${e.name} keyed by its name hash`);
      t.equal(e.bref.flags, BREF_FLAG_PFSROOT, `${e.name} bref PFSROOT flag`);
      const pfs = new Pfs(dev.reader, e);
      t.same(pfs.readdir(pfs.root), [], `${e.name} is empty`);
    }
    t.equal(ids.size, 3 + 2 * list.length, 'every fsid/clid is unique');
    t.equal(dev.reader.checkErrors, 0, 'no check errors');
  } finally {
    dev.close();
  }
}

async function format(opts: FormatOptions): Promise<FormatResult> {
  return formatHammer2({ ...opts, warn: () => undefined });
}

t.before(async () => {
  await initCodecs();
});

// ---------------------------------------------------------------------------
t.test('layout arithmetic', async (t) => {
  t.equal(minimumSize(), 24 * MiB, 'reference minimum is 24 MiB');
  t.equal(minimumSize(64 * MiB, 64 * MiB), 136 * MiB, 'minimum grows with the boot/aux areas');
  const a1 = computeAreas(1 * GiB);
  t.same([a1.bootSize, a1.auxSize, a1.reservedSize, a1.freeSize], [32 * MiB, 32 * MiB, 4 * MiB, 1002438656]);
  const a9 = computeAreas(9 * GiB);
  t.same([a9.bootSize, a9.auxSize, a9.reservedSize, a9.freeSize], [64 * MiB, 256 * MiB, 36 * MiB, 9290383360]);
  t.equal(computeAreas(24 * MiB).freeSize, 4 * MiB);
  t.equal(sizeToStr(1002438656), '  0.93GB');
  t.equal(sizeToStr(37748736), ' 36.00MB');
  t.equal(parseSize('8m'), 8 * MiB);
  t.equal(parseSize('1T'), 2 ** 40);
  t.equal(parseSize('0x1000'), 4096);
  t.throws(() => parseSize('1x'), { name: 'NewfsError' });
  t.same(resolveLabels(undefined), ['LOCAL', 'DATA']);
  t.same(resolveLabels(['none']), ['LOCAL']);
  t.same(resolveLabels(['NONE', 'A']), ['LOCAL', 'A']);
  t.same(resolveLabels(['ROOT', 'HOME']), ['LOCAL', 'ROOT', 'HOME']);
  for (const bad of [[''], ['a/b'], ['x@y'], ['.'], ['..'], ['LOCAL'], ['A', 'A'], ['A', 'B', 'C', 'D'], ['L'.repeat(256)]]) {
    t.throws(() => resolveLabels(bad), { name: 'NewfsError' }, `label set ${JSON.stringify(bad).slice(0, 40)} refused`);
  }
  t.same(resolveLabels(['L'.repeat(255)]).length, 2, '255-byte label accepted');
});

// ---------------------------------------------------------------------------
// Field-by-field against the reference's own images.

interface FixtureCase {
  name: string;
  size: number;
  opts: Partial<FormatOptions>;
  pfs: string[];
}

const fixtureCases: FixtureCase[] = [
  { name: 'newfs-24m', size: 24 * MiB, opts: {}, pfs: ['LOCAL', 'DATA'] },
  { name: 'newfs-1g', size: 1 * GiB, opts: {}, pfs: ['LOCAL', 'DATA'] },
  { name: 'newfs-9g', size: 9 * GiB, opts: {}, pfs: ['LOCAL', 'DATA'] },
  { name: 'newfs-labels-1g', size: 1 * GiB, opts: { labels: ['ROOT', 'HOME'] }, pfs: ['LOCAL', 'ROOT', 'HOME'] },
  { name: 'newfs-v1-1g', size: 1 * GiB, opts: { version: 1 }, pfs: ['LOCAL', 'DATA'] },
  { name: 'newfs-bootaux-1g', size: 1 * GiB, opts: { bootSize: 8 * MiB, auxSize: 16 * MiB }, pfs: ['LOCAL', 'DATA'] },
];

t.test('matches the reference newfs fixtures', { skip: haveFixtures ? false : 'no ../shared/fixtures/newfs' }, async (t) => {
  const fxDir = tmpPath('fixtures');
  fs.mkdirSync(fxDir);
  for (const c of fixtureCases) {
    await t.test(c.name, async (t) => {
      execFileSync('tar', ['-xSzf', path.join(FIXTURES, `${c.name}.img.tar.gz`), '-C', fxDir]);
      const ref = path.join(fxDir, `${c.name}.img`);
      t.equal(fs.statSync(ref).size, c.size, 'fixture size');
      const ours = sparse(`${c.name}.img`, c.size);
      const r = await format({ paths: [ours], ...c.opts });

      // Volume headers: the same number, every field equal but fsid and CRCs.
      const rh = headers(ref, c.size);
      const oh = headers(ours, c.size);
      t.equal(oh.length, rh.length, `${rh.length} volume header(s)`);
      for (let i = 0; i < rh.length; i++) {
        t.ok(checkVolumeHeader(oh[i].raw).ok, `header #${i} CRCs valid`);
        t.same(headerShape(oh[i].h), headerShape(rh[i].h), `header #${i} fields`);
        t.ok(maskHeader(oh[i].raw).equals(maskHeader(rh[i].raw)), `header #${i} bytes (masked)`);
        t.ok(oh[i].raw.equals(oh[0].raw), `header #${i} is a copy of #0`);
      }

      // Topology: super-root and PFS inodes (times and ids aside).
      const rt = await topology(ref);
      const ot = await topology(ours);
      t.same(ot.sroot.bref, rt.sroot.bref, 'super-root blockref');
      t.same(ot.sroot.meta, rt.sroot.meta, 'super-root inode fields');
      t.ok(ot.sroot.masked.equals(rt.sroot.masked), 'super-root inode bytes (masked)');
      t.same(
        ot.pfs.map((p) => p.name),
        rt.pfs.map((p) => p.name),
        'PFSs in the same key order',
      );
      for (let i = 0; i < rt.pfs.length; i++) {
        const name = rt.pfs[i].name;
        t.same(ot.pfs[i].bref, rt.pfs[i].bref, `${name} blockref`);
        t.same(ot.pfs[i].meta, rt.pfs[i].meta, `${name} inode fields`);
        t.ok(ot.pfs[i].masked.equals(rt.pfs[i].masked), `${name} inode bytes (masked)`);
      }

      // The 64 KiB buffer holding the inodes and the zone-0 reserved segment.
      const inodeBlock = Number(rh[0].h.auxEnd);
      t.equal(r.allocatorBeg, Number(rh[0].h.allocatorBeg), 'allocator_beg');
      const restLen = inodeBlock + 65536 - r.allocatorBeg;
      t.ok(readAt(ours, r.allocatorBeg, restLen).equals(readAt(ref, r.allocatorBeg, restLen)), 'rest of the inode buffer as the reference');
      t.ok(readAt(ours, VOLUME_BYTES, ZONE_SEG - VOLUME_BYTES).equals(Buffer.alloc(ZONE_SEG - VOLUME_BYTES)), 'reserved segment after header #0 is zero');

      // Summary text as the reference printed it (ids and path aside).
      const mask = (s: string) =>
        s
          .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g, 'UUID')
          .replace(/^Volume \S+ +size/m, 'Volume IMG size');
      t.equal(mask(formatSummary(r)), mask(fs.readFileSync(path.join(FIXTURES, `${c.name}.newfs.txt`), 'utf8')), 'summary');

      await checkMount(t, ours, r, c.pfs);
      fs.rmSync(ref);
      fs.rmSync(ours);
    });
  }
});

// ---------------------------------------------------------------------------
t.test('sizes, versions and labels read back through the engine', async (t) => {
  const cases: { size: number; opts: Partial<FormatOptions>; pfs: string[]; headers: number }[] = [
    { size: 24 * MiB, opts: {}, pfs: ['LOCAL', 'DATA'], headers: 1 },
    { size: 100 * MiB, opts: { version: 1 }, pfs: ['LOCAL', 'DATA'], headers: 1 },
    { size: 1 * GiB, opts: { labels: ['none'] }, pfs: ['LOCAL'], headers: 1 },
    { size: 3 * GiB, opts: { labels: ['A', 'B', 'C'] }, pfs: ['LOCAL', 'A', 'B', 'C'], headers: 2 },
    { size: 9 * GiB, opts: { labels: ['BOOT', 'DATA'] }, pfs: ['LOCAL', 'BOOT', 'DATA'], headers: 4 },
    { size: 17 * GiB, opts: { version: 1, labels: ['ROOT'] }, pfs: ['LOCAL', 'ROOT'], headers: 4 },
  ];
  for (const c of cases) {
    await t.test(`${sizeToStr(c.size).trim()} ${JSON.stringify(c.opts)}`, async (t) => {
      const p = tmpPath('img');
      const r = await format({ paths: [p], sizes: [c.size], ...c.opts });
      t.equal(fs.statSync(p).size, c.size, 'created with the -s size');
      t.equal(r.volumes[0].headers, c.headers, `${c.headers} header(s)`);
      t.equal(r.version, c.opts.version ?? 2);
      t.ok(fs.statSync(p).blocks * 512 <= 1024 * 1024, 'image stays sparse');
      await checkMount(t, p, r, c.pfs);
      fs.rmSync(p);
    });
  }
});

t.test('two volumes form one filesystem', async (t) => {
  const a = sparse('vol0.img', 1 * GiB + 5 * MiB); // non-last volumes are cut to 1 GiB
  const b = sparse('vol1.img', 2 * GiB + 12 * MiB); // the last to 8 MiB
  const r = await format({ paths: [a, b], labels: ['HOME'] });
  t.same(
    r.volumes.map((v) => [v.offset, v.size, v.headers]),
    [
      [0, GiB, 1],
      [GiB, 2 * GiB + 8 * MiB, 2],
    ],
  );
  t.equal(r.totalSize, 3 * GiB + 8 * MiB);
  t.equal(r.reservedSize, 4 * 4 * MiB, 'reserve counts every started GiB of the whole filesystem');
  const h0 = decodeVolumeHeader(readAt(a, 0, VOLUME_BYTES));
  const h1 = decodeVolumeHeader(readAt(b, 0, VOLUME_BYTES));
  t.equal(h1.voluId, 1);
  t.equal(h0.nvolumes, 2);
  t.equal(h1.nvolumes, 2);
  t.same([h0.voluLoff[0], h0.voluLoff[1], h0.voluLoff[2]], [0n, BigInt(GiB), 0xffffffffffffffffn]);
  t.same(h1.voluLoff, h0.voluLoff, 'both volumes carry the volume table');
  t.ok(h1.fsid.equals(h0.fsid), 'one fsid');
  t.equal(h1.allocatorSize, h0.allocatorSize);
  t.equal(h1.allocatorBeg, 0n, 'only the root volume has allocator_beg');
  t.equal(h1.bootEnd, 0n, 'only the root volume has boot/aux areas');
  t.ok(h1.sroot.every((b) => b.type === BrefType.INVALID), 'non-root sroot blockset is INVALID');
  const h1b = decodeVolumeHeader(readAt(b, ZONE_BYTES, VOLUME_BYTES));
  t.ok(h1b.raw.equals(h1.raw), 'second zone of volume 1 holds a copy');
  await checkMount(t, `${a}:${b}`, r, ['LOCAL', 'HOME']);

  await t.rejects(format({ paths: [sparse('v1a.img', GiB), sparse('v1b.img', GiB)], version: 1 }), { name: 'NewfsError', message: /only one volume/ }, 'version 1 is single-volume');
  await t.rejects(format({ paths: [sparse('s0.img', 512 * MiB), sparse('s1.img', GiB)] }), /at least 1 GiB/, 'non-last volume under 1 GiB');
  const c = tmpPath('c0.img');
  const d = tmpPath('c1.img');
  const r2 = await format({ paths: [c, d], sizes: [GiB, 64 * MiB] });
  t.same(
    r2.volumes.map((v) => v.created),
    [true, true],
    'missing volumes created from per-volume -s sizes',
  );
  await checkMount(t, `${c}:${d}`, r2, ['LOCAL', 'DATA']);
});

t.test('-s on existing files caps the filesystem like the reference', async (t) => {
  const p = sparse('cap.img', 2 * GiB);
  const r = await format({ paths: [p], sizes: [100 * MiB] });
  t.equal(r.totalSize, 96 * MiB, 'capped and aligned down to 8 MiB');
  t.equal(fs.statSync(p).size, 2 * GiB, 'file not resized');
  const q = tmpPath('odd.img');
  const r2 = await format({ paths: [q], sizes: [100 * MiB] });
  t.equal(fs.statSync(q).size, 100 * MiB, 'new file has the exact -s size');
  t.equal(r2.totalSize, 96 * MiB);
});

t.test('a 1 TiB sparse image formats like a small one', async (t) => {
  const p = tmpPath('huge.img');
  let r: FormatResult;
  const t0 = process.hrtime.bigint();
  try {
    r = await format({ paths: [p], sizes: [2 ** 40] });
  } catch (e) {
    if (e instanceof NewfsError && /too large|EFBIG|space/.test(e.message)) {
      t.pass(`skipped: the temp filesystem cannot hold a 1 TiB sparse file (${e.message})`);
      return;
    }
    throw e;
  }
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  t.ok(ms < 5000, `formatted in ${ms.toFixed(0)} ms`);
  t.ok(fs.statSync(p).blocks * 512 <= 2 * 1024 * 1024, `${fs.statSync(p).blocks * 512} bytes allocated`);
  t.equal(r.volumes[0].headers, 4);
  t.equal(r.bootSize, 64 * MiB);
  t.equal(r.auxSize, 256 * MiB);
  await checkMount(t, p, r, ['LOCAL', 'DATA']);
  // The same image file again, now existing and sparse: forced reformat also stays cheap.
  const r2 = await format({ paths: [p], force: true });
  t.not(r2.volFsid, r.volFsid, 'new fsid');
  t.ok(fs.statSync(p).blocks * 512 <= 2 * 1024 * 1024, 'still sparse after reformat');
  fs.rmSync(p);
});

// ---------------------------------------------------------------------------
t.test('refusals leave targets untouched', async (t) => {
  const small = sparse('small.img', 16 * MiB);
  fs.writeFileSync(small, Buffer.from('precious data'), { flag: 'r+' });
  const before = fingerprint(small);
  await t.rejects(format({ paths: [small] }), /too small.*24\.00MB/, 'under the minimum');
  t.equal(fingerprint(small), before, 'small image untouched');

  const missing = tmpPath('nope.img');
  await t.rejects(format({ paths: [missing] }), /no such file.*-s/, 'missing file without -s');
  t.notOk(fs.existsSync(missing));
  await t.rejects(format({ paths: [missing], sizes: [16 * MiB] }), /too small/, 'too small -s');
  t.notOk(fs.existsSync(missing), 'nothing created on refusal');
  await t.rejects(format({ paths: [path.join(tmp, 'no-dir', 'x.img')], sizes: [GiB] }), /cannot create/, 'unwritable location');

  const dir = tmpPath('adir');
  fs.mkdirSync(dir);
  await t.rejects(format({ paths: [dir] }), /cannot open .*is a directory/, 'a directory');

  const img = sparse('x.img', GiB);
  await t.rejects(format({ paths: [img], labels: ['bad/label'] }), /invalid label/, 'invalid label');
  await t.rejects(format({ paths: [img], labels: ['LOCAL'] }), /invalid label/, 'LOCAL given');
  await t.rejects(format({ paths: [img], version: 3 }), /version 3/, 'version 3');
  await t.rejects(format({ paths: [img], bootSize: 256 * MiB, auxSize: GiB }), /too large/, 'boot+aux past 1 GiB');
  t.equal(fs.statSync(img).blocks, 0, 'nothing written by refusals');

  const r = await format({ paths: [img] });
  const formatted = fingerprint(img);
  await t.rejects(format({ paths: [img] }), new RegExp(`already holds a HAMMER2 volume .*${r.volFsid}.*-f`), 'existing HAMMER2 refused');
  t.equal(fingerprint(img), formatted, 'existing filesystem untouched');
  // Any surviving header copy counts, not just the first.
  const big = sparse('big.img', 5 * GiB);
  await format({ paths: [big] });
  const fd = fs.openSync(big, 'r+');
  fs.writeSync(fd, Buffer.alloc(VOLUME_BYTES), 0, VOLUME_BYTES, 0);
  fs.closeSync(fd);
  await t.rejects(format({ paths: [big] }), /header #1/, 'backup header detected');
  const r2 = await format({ paths: [img], force: true });
  t.not(r2.volFsid, r.volFsid, '-f reformats');
  await checkMount(t, img, r2, ['LOCAL', 'DATA']);
});

t.test('reformatting smaller than the device erases stale header copies', async (t) => {
  const p = sparse('shrink.img', 5 * GiB);
  await format({ paths: [p] });
  t.equal(readAt(p, 4 * GiB, 8).readBigUInt64LE(0), 0x48414d3205172011n, 'old header #2 present');
  const r = await format({ paths: [p], sizes: [GiB], force: true });
  t.equal(r.volumes[0].headers, 1);
  t.ok(readAt(p, 2 * GiB, VOLUME_BYTES).equals(Buffer.alloc(VOLUME_BYTES)), 'old header #1 erased');
  t.ok(readAt(p, 4 * GiB, VOLUME_BYTES).equals(Buffer.alloc(VOLUME_BYTES)), 'old header #2 erased');
  const dev = await Hammer2Device.open(p, { lock: false });
  t.equal(uuidToString(dev.header.fsid), r.volFsid, 'the new filesystem is the one found');
  dev.close();
});

t.test('forced reformat over old data clears the reserved areas', async (t) => {
  const p = sparse('dirty.img', GiB);
  const junk = Buffer.alloc(MiB, 0xa5);
  const fd = fs.openSync(p, 'r+');
  for (const off of [0, 3 * MiB, 10 * MiB, 60 * MiB, GiB - MiB]) fs.writeSync(fd, junk, 0, junk.length, off);
  fs.closeSync(fd);
  const r = await format({ paths: [p] });
  const zero = (off: number, len: number) => readAt(p, off, len).equals(Buffer.alloc(len));
  t.ok(zero(VOLUME_BYTES, ZONE_SEG - VOLUME_BYTES), 'zone-0 reserve cleared');
  t.ok(zero(ZONE_SEG, r.bootSize + r.auxSize), 'boot and aux cleared');
  t.ok(zero(GiB - 65536, 65536), 'last block cleared');
  t.ok(readAt(p, GiB - MiB, 16).equals(junk.subarray(0, 16)), 'data area not touched');
  await checkMount(t, p, r, ['LOCAL', 'DATA']);
});

// ---------------------------------------------------------------------------
t.test('command line', async (t) => {
  const run = async (...args: string[]) => {
    let stdout = '';
    let stderr = '';
    const status = await runCli(args, { out: (s) => (stdout += s), err: (s) => (stderr += s) });
    return { status, stdout, stderr };
  };
  const p = tmpPath('cli.img');
  const ok = await run('-s', '1g', '-L', 'ROOT', '-L', 'HOME', p);
  t.equal(ok.status, 0, `formats (${ok.stderr.trim()})`);
  t.match(ok.stdout, /^Volume .*size {3}1\.00GB\n-{45}\nversion: {10}2\n/);
  t.match(ok.stdout, /free-size: {8} {2}0\.93GB \(1002438656 bytes\)/);
  t.match(ok.stdout, /PFS "LOCAL"\n {4}clid [0-9a-f-]{36}\n {4}fsid [0-9a-f-]{36}\nPFS "ROOT"\n.*\n.*\nPFS "HOME"/);
  const dev = await Hammer2Device.open(p, { lock: false });
  t.same(dev.listPfs().map((e) => e.name).sort(), ['HOME', 'LOCAL', 'ROOT']);
  t.equal(dev.header.version, 2);
  dev.close();

  const again = await run(p);
  t.equal(again.status, 1, 'refuses an existing HAMMER2 volume');
  t.match(again.stderr, /^newfs_hammer2: .*already holds a HAMMER2 volume.*-f.*\n$/);
  t.equal(again.stdout, '');
  const forced = await run('--force', '-V', '1', '-L', 'none', p);
  t.equal(forced.status, 0, '-f reformats');
  t.match(forced.stdout, /version: {10}1\n/);
  t.notMatch(forced.stdout, /PFS "DATA"/);
  const two = await run('-d', '-s', '1G:24M', tmpPath('m0.img'), tmpPath('m1.img'));
  t.equal(two.status, 0, 'two volumes');
  t.match(two.stdout, /\nvolume1 .* 0x0000000040000000 0x0000000001800000\n$/, 'volume table with -d');

  for (const [args, re] of [
    [['-s', '10M', tmpPath('tiny.img')], /too small/],
    [['-L', 'a/b', '-s', '1G', tmpPath('l.img')], /invalid label/],
    [['-V', '7', '-s', '1G', tmpPath('v.img')], /version 7/],
    [['-b', '3m', '-s', '1G', tmpPath('b.img')], /boot area size/],
    [['-s', '12Q', tmpPath('q.img')], /bad size/],
    [[tmpPath('missing.img')], /no such file/],
    [[], /missing required argument/],
    [['-Z', p], /unknown option/],
  ] as [string[], RegExp][]) {
    const r = await run(...args);
    const what = args.map((a) => path.basename(a)).join(' ') || '(no args)';
    t.equal(r.status, 1, `${what}: exit 1`);
    t.match(r.stderr, re, `${what}: message`);
    t.equal(r.stderr.trim().split('\n').length, 1, `${what}: one line`);
    t.equal(r.stdout, '', `${what}: no summary`);
  }

  // The real process: exit status and streams.
  const cli = path.join(ROOT, 'src', 'cli', 'newfs_hammer2.ts');
  const proc = spawnSync(process.execPath, [...process.execArgv, cli, '-L', 'LOCAL', '-s', '1G', tmpPath('p.img')], {
    encoding: 'utf8',
    env: { ...process.env, HAMMER2_QUIET_SHIM: '1' },
  });
  t.equal(proc.status, 1, 'process exits 1 on a refusal');
  t.match(proc.stderr, /^newfs_hammer2: invalid label 'LOCAL'.*\n$/);
});

// sanity: the check code newfs stores in each bref is xxhash64 of the inode
t.test('blockref check codes verify', async (t) => {
  const p = tmpPath('chk.img');
  await format({ paths: [p], sizes: [GiB] });
  const h = decodeVolumeHeader(readAt(p, 0, VOLUME_BYTES));
  const sr = h.sroot[0];
  const raw = readAt(p, Number(sr.dataOff & ~0x3fn), 1024);
  t.equal(sr.check.readBigUInt64LE(0), xxh64(raw), 'super-root check');
  for (const b of inodeBlockset(decodeInode(raw)).filter((b) => b.type === BrefType.INODE)) {
    t.equal(b.check.readBigUInt64LE(0), xxh64(readAt(p, Number(b.dataOff & ~0x3fn), 1024)), 'PFS inode check');
  }
});
