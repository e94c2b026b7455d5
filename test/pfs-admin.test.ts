// The hammer2 command and PFS management on unmounted images: pfs-create,
// snapshot, pfs-delete, setcomp/setcheck, bulkfree, and every refusal; each
// image left behind checked by the reference fsck and read back through the
// reference makefs where those are at hand (H2_REF_BIN).
import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';

process.env.HAMMER2_QUIET_SHIM = '1';

import { run as newfs } from '../src/cli/newfs_hammer2';
import { Hammer2Fs, Pfs } from '../src/fs';
import { BrefType, CheckMethod, CompMethod, decCheck, decComp, ObjType, PfsType, PFSSUBTYPE_SNAPSHOT, uuidToString } from '../src/media';
import { scanRange } from '../src/engine';
import { h2 } from './lib/cli';
import { fileHashes, haveFixtures, haveRef, loadManifest, refFsck, refRead, tempDir, unpackFixture } from './lib/env';

const quiet = { out: () => {}, err: () => {} };

const cli = h2;

const cred = { uid: 0, gid: 0 };
const now = () => BigInt(Date.now()) * 1000n;

/** Write `files` (name -> content) into the root of `pfs`. */
function writeFiles(pfs: Pfs, files: Record<string, Buffer>): void {
  for (const [name, data] of Object.entries(files)) {
    let e = pfs.lookup(pfs.root, Buffer.from(name));
    const n = e ? pfs.getInode(e.inum) : pfs.create(pfs.root, Buffer.from(name), ObjType.REGFILE, 0o644, cred, now());
    pfs.truncate(n, 0n, now());
    pfs.write(n, 0, data, now());
  }
}

function readFile(pfs: Pfs, name: string): Buffer | null {
  const e = pfs.lookup(pfs.root, Buffer.from(name));
  if (!e) return null;
  const n = pfs.getInode(e.inum);
  return pfs.read(n, 0, Number(n.data.meta.size));
}

function refClean(t: Tap.Test, img: string): void {
  if (!haveRef('fsck_hammer2')) return;
  const r = refFsck(img);
  t.equal(r.status, 0, `reference fsck clean on ${path.basename(img)}`, { out: r.out.slice(-1500) });
}

const rnd = (n: number, seed: number) => {
  const b = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
};

t.test('pfs-create, snapshot and pfs-delete on an unmounted image', async (t) => {
  const dir = tempDir(t);
  const img = path.join(dir, 'a.img');
  t.equal(await newfs(['-s', '1G', img], quiet), 0);
  const before = { 'big.bin': rnd(300000, 1), 'small.txt': Buffer.from('before the snapshot\n') };
  {
    const h2 = await Hammer2Fs.open(img, { writable: true });
    writeFiles(h2.pfs('DATA')!, before);
    h2.flush();
    h2.close();
  }
  let r = await cli(['-s', `${img}@DATA`, 'pfs-create', 'HOME']);
  t.equal(r.status, 0, r.err);
  t.equal(r.out, 'hammer2: pfs_create(HOME): SUCCESS\n');
  r = await cli(['-s', `${img}@DATA`, 'pfs-create', 'HOME']);
  t.equal(r.status, 1, 'duplicate label refused');
  t.match(r.err, /pfs_create\(HOME\): already present/);

  r = await cli(['snapshot', `${img}@DATA`, 'DATA.s1']);
  t.equal(r.status, 0, r.err);
  t.equal(r.out, 'created snapshot DATA.s1\n');
  r = await cli(['snapshot', `${img}@DATA`]);
  t.equal(r.status, 0, r.err);
  const auto = /^created snapshot (DATA\.\d{8}\.\d{6})\n$/.exec(r.out);
  t.ok(auto, `auto-named snapshot: ${r.out}`);

  // Change the source after the snapshot: the snapshot keeps the old state.
  const after = { 'big.bin': rnd(200000, 2), 'new.txt': Buffer.from('after\n') };
  {
    const h2 = await Hammer2Fs.open(img, { writable: true });
    writeFiles(h2.pfs('DATA')!, after);
    h2.flush();
    const snap = h2.pfs('DATA.s1')!;
    t.same(readFile(snap, 'big.bin'), before['big.bin'], 'snapshot keeps the old contents');
    t.equal(readFile(snap, 'new.txt'), null, 'snapshot does not see later files');
    t.same(readFile(h2.pfs('DATA')!, 'big.bin'), after['big.bin']);
    const e = h2.dev.findPfs('DATA.s1')!;
    t.equal(e.inode.meta.pfsType, PfsType.MASTER);
    t.equal(e.inode.meta.pfsSubtype, PFSSUBTYPE_SNAPSHOT);
    t.not(uuidToString(e.inode.meta.pfsClid), uuidToString(h2.dev.findPfs('DATA')!.inode.meta.pfsClid), 'a snapshot gets its own cluster id');
    t.ok(h2.dev.findPfs('DATA')!.inode.meta.pfsLsnapTid > 0n, 'the source records the snapshot tid');
    // A snapshot is writable: write into it, the source is unaffected.
    writeFiles(snap, { 'snap-only.txt': Buffer.from('written in the snapshot\n') });
    h2.flush();
    t.equal(readFile(h2.pfs('DATA')!, 'snap-only.txt'), null);
    h2.close();
  }

  r = await cli(['-s', `${img}@DATA`, '--json', 'pfs-list']);
  t.equal(r.status, 0, r.err);
  const list = JSON.parse(r.out)[0].pfs as { name: string; type: string }[];
  t.same(
    list.map((p) => `${p.name}:${p.type}`),
    ['DATA:MASTER', `${auto![1]}:SNAPSHOT`, 'DATA.s1:SNAPSHOT', 'HOME:MASTER', 'LOCAL:MASTER'],
  );
  r = await cli(['-s', `${img}@DATA`, 'pfs-list']);
  t.match(r.out, /^Type {8}ClusterId \(pfs_clid\) {17}Label on .*a\.img@DATA\nMASTER {6}[0-9a-f-]{36} DATA\n/);

  refClean(t, img);
  if (haveRef('fsck_hammer2')) {
    const p = refFsck(img, ['-P']);
    for (const name of ['DATA', 'DATA.s1', 'HOME', auto![1]]) t.match(p.out, new RegExp(`\\b${name.replace(/\./g, '\\.')}\\n`), `reference lists ${name}`);
  }
  if (haveRef('makefs')) {
    const snapRead = fileHashes(refRead(img, 'DATA.s1', dir));
    t.equal(snapRead.get('big.bin'), require('node:crypto').createHash('sha256').update(before['big.bin']).digest('hex'), 'reference reads the snapshot\'s old data');
    t.ok(snapRead.has('snap-only.txt') && !snapRead.has('new.txt'));
    const dataRead = fileHashes(refRead(img, 'DATA', dir));
    t.ok(dataRead.has('new.txt') && !dataRead.has('snap-only.txt'), 'reference reads the source as changed');
  }

  // Delete the snapshots; bulkfree returns what only they held.
  r = await cli(['-s', `${img}@DATA`, 'pfs-delete', 'DATA.s1', auto![1]]);
  t.equal(r.status, 0, r.err + r.out);
  t.equal(r.out, `hammer2: pfs_delete(DATA.s1): SUCCESS\nhammer2: pfs_delete(${auto![1]}): SUCCESS\n`);
  r = await cli(['--json', 'bulkfree', `${img}@DATA`]);
  t.equal(r.status, 0, r.err);
  const bf = JSON.parse(r.out);
  t.ok(bf.freed >= 300000, `bulkfree freed the snapshot-only blocks (${bf.freed} bytes)`);
  refClean(t, img);
  {
    const h2 = await Hammer2Fs.open(img, { writable: false });
    t.same(readFile(h2.pfs('DATA')!, 'big.bin'), after['big.bin'], 'the source is intact after deleting its snapshots and bulkfree');
    h2.close();
  }
});

t.test('refusals: nothing on the image changes', async (t) => {
  const dir = tempDir(t);
  const img = path.join(dir, 'b.img');
  t.equal(await newfs(['-s', '256M', img], quiet), 0);
  const snapshotOf = () => fs.readFileSync(img).subarray(0, 64 << 20);
  const orig = snapshotOf();
  const cases: [string[], number, RegExp][] = [
    [['-s', `${img}@DATA`, 'pfs-create', 'x'.repeat(256)], 1, /256 bytes long, the format allows 255/],
    [['-s', `${img}@DATA`, 'pfs-create', 'a/b'], 1, /contains '\/'/],
    [['-s', `${img}@DATA`, 'pfs-create', 'DATA'], 1, /already present/],
    [['-s', `${img}@DATA`, '-u', 'not-a-uuid', 'pfs-create', 'X'], 1, /pfs_create\(X\): badly formed uuid/],
    [['-s', `${img}@DATA`, 'pfs-delete', 'LOCAL'], 1, /LOCAL PFS/],
    [['-s', `${img}@DATA`, 'pfs-delete', 'DATA'], 1, /last PFS/],
    [['-s', `${img}@DATA`, 'pfs-delete', 'NOPE'], 1, /no PFS labelled "NOPE"/],
    [['-s', `${img}@NOPE`, 'snapshot'], 1, /no PFS labelled "NOPE"/],
    [['-t', 'BOGUS', 'pfs-create', 'X'], 1, /Unrecognized node type/],
    [['setcomp', 'lz5', dir], 3, /Unknown compression type: lz5/],
    [['setcomp', 'lz4:9', dir], 3, /Unsupported comp_level 9 for lz4/],
    [['setcomp', 'zlib:5', dir], 3, /Unsupported comp_level 5 for zlib/],
    [['setcheck', 'md5', dir], 3, /Unknown check code type: md5/],
    [['snapshot', dir], 1, /not inside a mounted HAMMER2 filesystem/],
    [['-s', path.join(dir, 'missing.img@DATA'), 'pfs-list'], 1, /no such file/],
    [['frobnicate'], 1, /Unrecognized command: frobnicate/],
    [[], 1, /Missing command/],
  ];
  for (const [args, status, re] of cases) {
    const r = await cli(args);
    t.equal(r.status, status, `${args.join(' ').slice(0, 60)}: status`);
    t.match(r.out + r.err, re, `${args.join(' ').slice(0, 60)}: message`);
  }
  t.ok(snapshotOf().equals(orig), 'the image is byte-for-byte unchanged');
  refClean(t, img);
});

t.test('pfs-create -u CLID makes a SLAVE of that cluster; -t sets the type', async (t) => {
  const dir = tempDir(t);
  const img = path.join(dir, 'c.img');
  t.equal(await newfs(['-s', '256M', img], quiet), 0);
  const clid = (await cli(['-s', `${img}@DATA`, 'pfs-clid', 'DATA'])).out.trim();
  t.match(clid, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  let r = await cli(['-s', `${img}@DATA`, '-u', clid, 'pfs-create', 'COPY']);
  t.equal(r.status, 0, r.err);
  r = await cli(['-s', `${img}@DATA`, '-t', 'cache', 'pfs-create', 'CACHED']);
  t.equal(r.status, 0, r.err);
  const list = JSON.parse((await cli(['-s', `${img}@DATA`, '--json', 'pfs-list'])).out)[0].pfs as { name: string; type: string; clid: string }[];
  t.match(list.find((p) => p.name === 'COPY'), { type: 'SLAVE', clid });
  t.match(list.find((p) => p.name === 'CACHED'), { type: 'CACHE' });
  t.not(list.find((p) => p.name === 'CACHED')!.clid, clid);
  t.equal((await cli(['-s', `${img}@DATA`, 'pfs-fsid', 'COPY'])).out.trim().length, 36);
  refClean(t, img);
});

t.test('every check and compression method, set per directory, reads back', async (t) => {
  const dir = tempDir(t);
  const img = path.join(dir, 'm.img');
  t.equal(await newfs(['-s', '512M', img], quiet), 0);
  const checks = [CheckMethod.NONE, CheckMethod.DISABLED, CheckMethod.ISCSI32, CheckMethod.XXHASH64, CheckMethod.SHA192];
  const comps = [CompMethod.NONE, CompMethod.AUTOZERO, CompMethod.LZ4, CompMethod.ZLIB, CompMethod.ZLIB | (9 << 4), CompMethod.ZLIB | (6 << 4)];
  const content = (i: number) => Buffer.concat([Buffer.from('compressible text '.repeat(4000 + i)), Buffer.alloc(70000), rnd(50000, i + 7)]);
  const expect = new Map<string, Buffer>();
  {
    const h2 = await Hammer2Fs.open(img, { writable: true });
    const pfs = h2.pfs('DATA')!;
    // An older file written before any change keeps its methods.
    writeFiles(pfs, { 'old.bin': content(99) });
    h2.flush();
    let i = 0;
    for (const check of checks) {
      for (const comp of comps) {
        const name = `d-${check}-${comp}`;
        const d = pfs.create(pfs.root, Buffer.from(name), ObjType.DIRECTORY, 0o755, cred, now());
        pfs.setMethods(d, { comp, check });
        const f = pfs.create(d, Buffer.from('f'), ObjType.REGFILE, 0o644, cred, now());
        const data = content(i++);
        pfs.write(f, 0, data, now());
        expect.set(`${name}/f`, data);
      }
    }
    pfs.setMethods(pfs.root, { comp: CompMethod.ZLIB, check: CheckMethod.ISCSI32 });
    h2.flush();
    h2.close();
  }
  const h2 = await Hammer2Fs.open(img, { writable: false });
  const pfs = h2.pfs('DATA')!;
  for (const [p, data] of expect) {
    const [dn] = p.split('/');
    const d = pfs.getInode(pfs.lookup(pfs.root, Buffer.from(dn))!.inum);
    const f = pfs.getInode(pfs.lookup(d, Buffer.from('f'))!.inum);
    t.ok(pfs.read(f, 0, data.length).equals(data), `${p} reads back`);
    const [, check, comp] = dn.split('-').map(Number);
    const seen = new Set<string>();
    scanRange(h2.dev.reader, pfs.committedFileSet(f), 0n, 0xffffffffffffffffn, (b) => {
      if (b.type === BrefType.DATA) seen.add(`${decCheck(b.methods)}/${decComp(b.methods)}`);
    });
    t.ok(seen.has(`${check}/0`) || [...seen].every((s) => s.startsWith(`${check}/`)), `${p}: data blocks carry check ${check} (${[...seen]})`);
    // Compressible blocks are compressed with the directory's algorithm (zero blocks are holes unless NONE).
    if ((comp & 15) >= CompMethod.LZ4) t.ok(seen.has(`${check}/${comp & 15}`), `${p}: compressed with ${comp & 15}`);
  }
  const old = pfs.getInode(pfs.lookup(pfs.root, Buffer.from('old.bin'))!.inum);
  t.equal(old.data.meta.compAlgo, CompMethod.LZ4, 'a file written before keeps its methods');
  t.equal(pfs.root.data.meta.checkAlgo, CheckMethod.ISCSI32);
  h2.close();
  refClean(t, img);
  // The reference makefs cannot verify sha192 (it asserts), so it reads each other directory alone.
  if (haveRef('makefs')) {
    for (const [p, data] of expect) {
      if (p.startsWith(`d-${CheckMethod.SHA192}-`)) continue;
      const got = fileHashes(refRead(img, 'DATA', dir, '/' + p.split('/')[0]));
      t.equal(got.get(p) ?? got.get('f'), require('node:crypto').createHash('sha256').update(data).digest('hex'), `reference reads ${p}`);
    }
  }
});

t.test('the multipfs fixture: listed, snapshots deleted, space returned', { skip: !haveFixtures() && 'no ../shared fixtures' }, async (t) => {
  const dir = tempDir(t);
  const img = unpackFixture('multipfs', dir);
  const man = loadManifest('multipfs') as unknown as { pfs: { name: string; type: string; clid: string }[] };
  const r = await cli(['-s', img, '--json', 'pfs-list']);
  t.equal(r.status, 0, r.err);
  const list = JSON.parse(r.out)[0].pfs as { name: string; type: string; clid: string }[];
  t.same(
    list.map((p) => `${p.name} ${p.type} ${p.clid}`).sort(),
    man.pfs.map((p) => `${p.name} ${p.type} ${p.clid}`).sort(),
    'pfs-list agrees with the manifest (names, types, cluster ids)',
  );
  t.equal((await cli(['-s', img, 'pfs-delete', 'DATA.snap'])).status, 0);
  t.equal((await cli(['bulkfree', img])).status, 0);
  refClean(t, img);
  if (haveRef('makefs')) {
    const data = fileHashes(refRead(img, 'DATA', dir));
    const want = (man as unknown as { entries: { pfs: string; path: string; type: string; sha256?: string }[] }).entries.filter((e) => e.pfs === 'DATA' && e.type === 'file');
    for (const e of want) t.equal(data.get(e.path.slice(1)), e.sha256, `DATA${e.path} intact after deleting the snapshot`);
  }
});
