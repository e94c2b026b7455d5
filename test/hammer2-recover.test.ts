// hammer2 recover / recover-relaxed / recover-file: files copied out of the
// reference fixtures by a raw media scan, checked against the manifests —
// whole trees, single files by relative and absolute path, files that exist
// only in a snapshot or were deleted, damaged copies (zeroed data, inode and
// directory blocks found with our own media layer), strict vs relaxed check
// handling, two volumes, bad input. Where the reference `hammer2` binary is
// built (H2_REF_HAMMER2, default /work/ref/bin/hammer2) the same recoveries
// are run with it and the messages and the trees written are compared.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { directives } from '../src/cli/hammer2/recover';
import { DirectiveError, Hammer2Ctx } from '../src/cli/hammer2/context';
import { FreemapAllocator, Hammer2Device, scanRange } from '../src/engine';
import { Hammer2Fs, Pfs } from '../src/fs';
import { brefBytes, brefOffset, BrefType, inodeBlockset, KEY_MAX, ObjType, OPFLAG_DIRECTDATA } from '../src/media';
import { formatHammer2 } from '../mkfs/newfs';
import { FIXTURES, haveFixtures, loadManifest, Manifest, tempDir, unpackFixture, flipByte } from './lib/env';

process.env.HAMMER2_QUIET_SHIM = '1';
const REF_HAMMER2 = process.env.H2_REF_HAMMER2 ?? '/work/ref/bin/hammer2';

interface Run {
  status: number;
  out: string;
  err: string;
}

/** Run a directive in-process, as the hammer2 command would (a DirectiveError is "hammer2: msg", its status). */
async function recover(directive: string, ...args: string[]): Promise<Run> {
  let out = '';
  let err = '';
  const ctx: Hammer2Ctx = {
    io: { out: (s) => (out += s), err: (s) => (err += s), tty: false },
    recurse: false,
    verbose: 0,
    quiet: 0,
    json: false,
  };
  let status: number;
  try {
    status = await directives[directive](ctx, args);
  } catch (e) {
    if (!(e instanceof DirectiveError)) throw e;
    err += `hammer2: ${e.message}\n`;
    status = e.status;
  }
  return { status, out, err };
}

interface Ent {
  type: 'file' | 'dir' | 'symlink' | 'fifo' | 'other';
  mode: number;
  size: number;
  mtime: number;
  nlink: number;
  ino: number;
  sha256?: string;
  target?: string;
}

/** Everything under `root` (not root itself), by "/relative/path". */
function listTree(root: string): Map<string, Ent> {
  const out = new Map<string, Ent>();
  const walk = (dir: string, rel: string) => {
    for (const name of fs.readdirSync(dir).sort()) {
      const p = path.join(dir, name);
      const r = `${rel}/${name}`;
      const st = fs.lstatSync(p);
      const type = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFIFO() ? 'fifo' : 'other';
      const e: Ent = { type, mode: st.mode & 0o7777, size: st.size, mtime: Math.floor(st.mtimeMs / 1000), nlink: st.nlink, ino: st.ino };
      if (type === 'file') e.sha256 = crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex');
      if (type === 'symlink') e.target = fs.readlinkSync(p);
      out.set(r, e);
      if (type === 'dir') walk(p, r);
    }
  };
  walk(root, '');
  return out;
}

const VERSIONED = /^(.*)\.(\d{5})(\.corrupted)?$/;

interface Recovered extends Ent {
  /** The name as written (with its version suffix). */
  as: string;
  version: number;
  corrupted: boolean;
}

/**
 * A recovered tree by image path: directories as they are, anything else
 * with its .NNNNN (and .corrupted) suffix taken off. Several versions of
 * one path are all kept.
 */
function byImagePath(tree: Map<string, Ent>): Map<string, Recovered[]> {
  const out = new Map<string, Recovered[]>();
  for (const [p, e] of tree) {
    let key = p;
    let version = 0;
    let corrupted = false;
    if (e.type !== 'dir') {
      const m = VERSIONED.exec(p);
      if (!m) throw new Error(`recovered ${p} has no version suffix`);
      key = m[1];
      version = Number(m[2]);
      corrupted = !!m[3];
    }
    const list = out.get(key) ?? [];
    list.push({ ...e, as: p, version, corrupted });
    out.set(key, list);
  }
  return out;
}

/** The recovered versions of a manifest path (names too long for their suffix come back shortened). */
function findVersions(rec: Map<string, Recovered[]>, p: string): Recovered[] | undefined {
  const hit = rec.get(p);
  if (hit) return hit;
  const dir = path.posix.dirname(p);
  for (const [k, v] of rec) {
    if (path.posix.dirname(k) === dir && p.startsWith(k) && Buffer.byteLength(path.posix.basename(k)) >= 240) return v;
  }
  return undefined;
}

/** What differs between a recovered object and its manifest entry (empty: identical). */
function differences(e: Manifest['entries'][number] & Record<string, unknown>, r: Ent): string[] {
  const d: string[] = [];
  if (r.type !== e.type) return [`type ${r.type}, manifest ${e.type}`];
  if (e.type !== 'symlink' && r.mode.toString(8).padStart(4, '0') !== e.mode) d.push(`mode ${r.mode.toString(8)}, manifest ${e.mode}`);
  if (r.mtime !== e.mtime) d.push(`mtime ${r.mtime}, manifest ${e.mtime}`);
  if (e.nlink !== undefined && r.nlink !== e.nlink) d.push(`nlink ${r.nlink}, manifest ${e.nlink}`);
  if (e.type === 'file' && (r.size !== e.size || r.sha256 !== e.sha256)) d.push('contents differ');
  if (e.type === 'symlink' && r.target !== e.target) d.push(`target ${r.target}`);
  return d;
}

/**
 * Check every entry of one PFS in the manifest against the recovered tree:
 * exactly one version, identical. Returns the manifest paths that came
 * back otherwise (missing, several versions, different), with why.
 */
function compareWithManifest(rec: Map<string, Recovered[]>, man: Manifest, pfs: string): Map<string, string> {
  const bad = new Map<string, string>();
  for (const e of man.entries) {
    if (e.pfs !== pfs || e.path === '/') continue;
    const v = findVersions(rec, e.path);
    if (!v) bad.set(e.path, 'missing');
    else if (v.length !== 1 || v[0].corrupted) bad.set(e.path, `recovered as ${v.map((x) => x.as).join(', ')}`);
    else {
      const d = differences(e as never, v[0]);
      if (d.length) bad.set(e.path, d.join('; '));
    }
  }
  return bad;
}

/** Paths recovered that the manifest does not have for `pfs`. */
function extras(rec: Map<string, Recovered[]>, man: Manifest, pfs: string): string[] {
  const known = man.entries.filter((e) => e.pfs === pfs).map((e) => e.path);
  return [...rec.keys()].filter((k) => !known.some((p) => p === k || (p.startsWith(k) && Buffer.byteLength(path.posix.basename(k)) >= 240)));
}

/** The name of the directory in the manifest whose name starts with `prefix`. */
const dirName = (man: Manifest, prefix: string): string =>
  path.posix.basename(man.entries.find((e) => e.type === 'dir' && path.posix.basename(e.path).startsWith(prefix))!.path);

const manifestEntry = (man: Manifest, pfs: string, p: string) => man.entries.find((e) => e.pfs === pfs && e.path === p)!;

/** The reference's summary lines, as both print them (no progress: -q for the reference, no TTY for ours). */
const SUMMARY = /^MEDIA PASS\n\nInodes=\d+, Invalid_brefs=\d+, Invalid_hits=\d+\nRESTORATION PASS\n\nCLEANUP\nTopoBRef stats: count=\d+ dups=\d+\nTopoInode stats: count=\d+ dups=\d+\n$/;

/** Media offsets of a file's inode and of its data blocks (and indirect blocks), through our own engine. */
async function locate(img: string, label: string, file: string): Promise<{ inode: number; data: number[]; indirect: { off: number; bytes: number }[] }> {
  const dev = await Hammer2Device.open(img, { lock: false });
  try {
    const pfs = new Pfs(dev.reader, dev.findPfs(label)!);
    const n = pfs.resolve(file);
    const data: number[] = [];
    const set = inodeBlockset(n.data);
    const indirect = set.filter((b) => b.type === BrefType.INDIRECT).map((b) => ({ off: Number(brefOffset(b)), bytes: brefBytes(b) }));
    if (n.data.meta.type === ObjType.REGFILE && !(n.data.meta.opFlags & OPFLAG_DIRECTDATA)) {
      scanRange(dev.reader, set, 0n, KEY_MAX, (b) => {
        data.push(Number(brefOffset(b)));
      });
    }
    return { inode: Number(brefOffset(n.bref!)), data, indirect };
  } finally {
    dev.close();
  }
}

function zero(img: string, pos: number, len: number): void {
  const fd = fs.openSync(img, 'r+');
  fs.writeSync(fd, Buffer.alloc(len), 0, len, pos);
  fs.closeSync(fd);
}

const fresh = (dir: string, name: string): string => {
  const d = path.join(dir, name);
  fs.mkdirSync(d);
  return d;
};

t.test('bad input: a clear message and exit status 1', async (t) => {
  const dir = tempDir(t);
  const dest = fresh(dir, 'out');
  const junk = path.join(dir, 'junk.img');
  fs.writeFileSync(junk, Buffer.alloc(1 << 20, 0x41));
  const cases: [string[], RegExp][] = [
    [[path.join(dir, 'none.img'), 'x', dest], /^hammer2: .*none\.img: no such file\n$/],
    [[junk, 'x', dest], /^hammer2: .*junk\.img: not a HAMMER2 volume/],
    [[junk, 'x', path.join(dir, 'nodir')], /^hammer2: .*nodir: no such directory\n$/],
    [[junk, 'x', junk], /^hammer2: .*junk\.img: not a directory\n$/],
    [[junk, 'x'], /^hammer2: recover device \[\/\]path destdir\n$/],
  ];
  for (const [args, msg] of cases) {
    const r = await recover('recover', ...args);
    t.equal(r.status, 1, `status 1 for ${args.join(' ')}`);
    t.match(r.err, msg);
    t.equal(r.out, '', 'nothing on stdout');
  }
  t.same(fs.readdirSync(dest), [], 'nothing written');
});

if (!haveFixtures()) {
  t.test('fixtures', async (t) => t.skip(`no fixtures at ${FIXTURES}`));
} else {
  t.test('basic: the whole DATA tree comes back', async (t) => {
    const dir = tempDir(t);
    const img = unpackFixture('basic', dir);
    const man = loadManifest('basic');
    const dest = fresh(dir, 'all');
    const r = await recover('recover', img, '/', dest);
    t.equal(r.status, 0);
    t.match(r.out, SUMMARY, 'the reference summary on stdout');
    t.match(r.out, /^Inodes=3114, Invalid_brefs=3, Invalid_hits=1$/m, 'every inode of the image found (as the reference counts them)');
    const rec = byImagePath(listTree(dest));
    // LOCAL is empty, so "/" (every PFS root, merged) is DATA.
    t.same(Object.fromEntries(compareWithManifest(rec, man, 'DATA')), {}, 'every entry once, identical: contents, modes, mtimes, links, targets');
    t.same(extras(rec, man, 'DATA'), [], 'nothing else');
    const links = ['/hardlinks/orig.bin', '/hardlinks/second.bin', '/other/third.bin'].map((p) => rec.get(p)![0]);
    t.ok(links.every((l) => l.ino === links[0].ino && l.nlink === 3), 'hard links are restored as hard links');
    t.equal(rec.get('/special/fifo')![0].type, 'fifo', 'the FIFO is a FIFO');
    t.equal((r.err.match(/name shortened to fit its suffix/g) ?? []).length, 2, 'the two 255-byte names are shortened for their suffix, and said so');
    t.notMatch(r.err, /problem/, 'no problem reported');
  });

  t.test('basic: one file, by name, relative path and absolute path', async (t) => {
    const dir = tempDir(t);
    const img = unpackFixture('basic', dir);
    const want = manifestEntry(loadManifest('basic'), 'DATA', '/sizes/size-65537');
    for (const [directive, p, at] of [
      ['recover', 'size-65537', '/size-65537.00001'],
      ['recover-file', 'size-65537', '/size-65537.00001'],
      ['recover', 'sizes/size-65537', '/sizes/size-65537.00001'],
      ['recover', '/sizes/size-65537', '/sizes/size-65537.00001'],
      ['recover-file', '//sizes//size-65537', '/sizes/size-65537.00001'],
    ]) {
      const dest = fresh(dir, `one-${directive}-${p.replace(/\//g, '_')}`);
      const r = await recover(directive, img, p, dest);
      t.equal(r.status, 0, `${directive} ${p}`);
      const tree = listTree(dest);
      t.same([...tree.keys()].filter((k) => tree.get(k)!.type !== 'dir'), [at], `only ${at}`);
      t.same(differences(want as never, tree.get(at)!), [], 'identical to the manifest');
    }

    const deep = fresh(dir, 'deep');
    t.equal((await recover('recover', img, dirName(loadManifest('basic'), 'level11-'), deep)).status, 0);
    const tree = byImagePath(listTree(deep));
    t.same([...tree.keys()].filter((k) => k.endsWith('.txt')).length, 3, 'a directory by name brings its subtree');

    const none = fresh(dir, 'none');
    let r = await recover('recover', img, '/size-65537', none);
    t.equal(r.status, 1, 'anchored at the PFS roots, /size-65537 is not there');
    t.match(r.err, /^hammer2: \/size-65537: not found on the media\n$/m);
    r = await recover('recover-file', img, '/deep', none);
    t.equal(r.status, 1, 'recover-file does not take a directory');
    t.same(fs.readdirSync(none), [], 'nothing written');
  });

  t.test('multipfs: files only in the snapshot, and files deleted from DATA', async (t) => {
    const dir = tempDir(t);
    const img = unpackFixture('multipfs', dir);
    const man = loadManifest('multipfs');
    const gone = man.entries.filter((e) => e.pfs === 'DATA.snap' && e.type === 'file' && !man.entries.some((x) => x.pfs === 'DATA' && x.path === e.path));
    t.same(gone.map((e) => e.path).sort(), ['/docs/draft.txt', '/old/cache.bin', '/old/report-2018.txt'], 'the manifest: destroyed in DATA, kept in DATA.snap');
    for (const p of ['/old', '/docs/draft.txt']) {
      const dest = fresh(dir, p.replace(/\//g, '_'));
      const r = await recover('recover', img, p, dest);
      t.equal(r.status, 0, p);
      const rec = byImagePath(listTree(dest));
      for (const e of gone.filter((g) => g.path.startsWith(p))) {
        const v = rec.get(e.path);
        t.equal(v?.length, 1, `${e.path} recovered once`);
        if (v) t.same(differences(e as never, v[0]), [], `${e.path} identical to DATA.snap's`);
      }
    }
    // Every PFS root and every older copy of one, merged: all of DATA.snap and HOME.
    const dest = fresh(dir, 'all');
    const r = await recover('recover', img, '/', dest);
    t.equal(r.status, 0);
    const rec = byImagePath(listTree(dest));
    for (const pfs of ['DATA.snap', 'HOME']) {
      const bad = compareWithManifest(rec, man, pfs);
      // Directories merged from several PFSs keep the last copy's times.
      for (const [p, why] of bad) if (/^mtime [^;]*$/.test(why) && manifestEntry(man, pfs, p).type === 'dir') bad.delete(p);
      t.same(Object.fromEntries(bad), {}, `all of ${pfs}`);
    }
    t.same(extras(rec, man, 'DATA.snap').filter((p) => !man.entries.some((e) => e.pfs === 'HOME' && e.path === p)), [], 'nothing else');
  });

  t.test('damaged image: what is damaged is reported, the rest comes back exactly', async (t) => {
    const dir = tempDir(t);
    const img = unpackFixture('basic', dir);
    const man = loadManifest('basic');
    const big = await locate(img, 'DATA', '/sizes/size-1048576');
    const small = await locate(img, 'DATA', '/sizes/size-65536');
    const bigdir = await locate(img, 'DATA', '/bigdir');
    t.ok(big.data.length === 16 && bigdir.indirect.length > 0, 'offsets found with our media layer');
    zero(img, big.data[1], 65536); // the file's second 64 KiB
    zero(img, small.inode, 1024); // an inode
    zero(img, bigdir.indirect[0].off, bigdir.indirect[0].bytes); // part of a large directory

    const dest = fresh(dir, 'all');
    const r = await recover('recover', img, '/', dest);
    t.equal(r.status, 0, 'what can be recovered is');
    const rec = byImagePath(listTree(dest));
    const bad = compareWithManifest(rec, man, 'DATA');
    const lost = [...bad.keys()].filter((p) => p.startsWith('/bigdir/'));
    t.ok(lost.length > 0 && lost.every((p) => bad.get(p) === 'missing'), `${lost.length} entries of /bigdir lost with its indirect block`);
    t.match(r.err, /^hammer2: .*\/all\/bigdir: entries lost: check failed \(xxhash64\) for indirect block at/m, 'and reported');
    for (const p of lost) bad.delete(p);
    t.match(bad.get('/sizes/size-1048576'), /recovered as \/sizes\/size-1048576\.00001\.corrupted/);
    t.equal(bad.get('/sizes/size-65536'), 'missing');
    bad.delete('/sizes/size-1048576');
    bad.delete('/sizes/size-65536');
    t.same(Object.fromEntries(bad), {}, 'everything else is identical');
    t.same(extras(rec, man, 'DATA'), [], 'nothing else');

    const f = rec.get('/sizes/size-1048576')![0];
    t.equal(f.size, 1048576, 'the damaged file keeps its size');
    t.equal(f.mode, 0o600, 'and mode 0600 (it is not the file)');
    const got = fs.readFileSync(path.join(dest, f.as));
    t.ok(got.subarray(65536, 131072).every((x) => x === 0), 'the bad block is a hole');
    t.match(r.err, /^hammer2: .*size-1048576\.00001\.corrupted: incomplete: check failed \(xxhash64\) for data block at 0x[0-9a-f]+ key 0x0*10000$/m);
    t.match(r.err, /^hammer2: .*\/all\/sizes\/size-65536: no valid copy of inode \d+ found$/m);
    t.match(r.err, /^hammer2: 3 problems reported; the rest is in /m);

    // Relaxed mode trusts blocks without a check code, not blocks failing theirs.
    const relaxed = fresh(dir, 'relaxed');
    const rr = await recover('recover-relaxed', img, 'size-1048576', relaxed);
    t.equal(rr.status, 0);
    t.same([...listTree(relaxed).keys()], ['/size-1048576.00001.corrupted'], 'recover-relaxed: still incomplete');
  });

  t.test('strict and relaxed: blocks without a check code', async (t) => {
    const dir = tempDir(t);
    // checks-disabled: every block, inodes included, has check "disabled".
    let img = unpackFixture('checks-disabled', dir);
    let man = loadManifest('checks-disabled');
    let dest = fresh(dir, 'disabled-strict');
    let r = await recover('recover', img, '/', dest);
    t.equal(r.status, 0, 'the PFS roots are found (taken on sight)');
    t.match(r.err, /^hammer2: .*: no valid copy of inode \d+ found$/m, 'but not the inodes under them');
    t.match(r.err, /^hammer2: \d+ inodes without a check code skipped \(strict mode\); recover-relaxed takes them$/m, 'and why');
    t.same(fs.readdirSync(dest), [], 'nothing written');
    r = await recover('recover', img, 'size-65537', dest);
    t.equal(r.status, 1);
    t.match(r.err, /^hammer2: size-65537: not found on the media \(\d+ inodes without a check code skipped \(strict mode\); recover-relaxed takes them\)$/m);
    dest = fresh(dir, 'disabled-relaxed');
    r = await recover('recover-relaxed', img, '/', dest);
    t.equal(r.status, 0);
    let rec = byImagePath(listTree(dest));
    t.same(Object.fromEntries(compareWithManifest(rec, man, 'DATA')), {}, 'recover-relaxed: the whole tree, identical');

    // checks-none: inodes are found, their data blocks carry no check.
    fs.rmSync(img);
    img = unpackFixture('checks-none', dir);
    man = loadManifest('checks-none');
    const { data } = await locate(img, 'DATA', '/sizes/size-65537');
    flipByte(img, data[0] + 100);
    dest = fresh(dir, 'none-strict');
    r = await recover('recover', img, '/sizes', dest);
    t.equal(r.status, 0);
    rec = byImagePath(listTree(dest));
    // Up to 512 bytes, data lives in the inode; beyond, in blocks without a check.
    const files = [...rec.values()].flat().filter((e) => e.type === 'file');
    t.ok(files.length > 5 && files.every((e) => e.corrupted === e.size > 512), 'strict: every file with data blocks is incomplete');
    t.match(r.err, /size-65537\.00001\.corrupted: incomplete: data block 0x[0-9a-f]+ key 0x0+ has no check code \(strict mode\)/);
    dest = fresh(dir, 'none-relaxed');
    r = await recover('recover-relaxed', img, '/sizes', dest);
    t.equal(r.status, 0);
    rec = byImagePath(listTree(dest));
    const bad = compareWithManifest(rec, man, 'DATA');
    t.equal(bad.get('/sizes/size-65537'), 'contents differ', 'relaxed: the flipped byte cannot be noticed');
    t.notOk([...bad.keys()].some((p) => p.startsWith('/sizes/') && p !== '/sizes/size-65537'), 'the other files are identical');
    t.notMatch(r.err, /size-65537/, 'and nothing is reported');
  });

  t.test('two volumes: DEVPATH img1:img2', async (t) => {
    const dir = tempDir(t);
    const a = path.join(dir, 'vol0.img');
    const b = path.join(dir, 'vol1.img');
    fs.writeFileSync(a, '');
    fs.truncateSync(a, 2 ** 30);
    fs.writeFileSync(b, '');
    fs.truncateSync(b, 64 * 2 ** 20);
    await formatHammer2({ paths: [a, b] });
    const h2 = await Hammer2Fs.open(`${a}:${b}`, {
      writable: true,
      lock: false,
      allocator: (d) => new FreemapAllocator(d.vols, d.reader, d.header),
    });
    const pfs = h2.pfs('DATA')!;
    const cred = { uid: 0, gid: 0 };
    const now = 1_600_000_000_000_000n;
    const sub = pfs.create(pfs.root, Buffer.from('sub'), ObjType.DIRECTORY, 0o750, cred, now);
    const blob = crypto.randomBytes(300_000);
    pfs.write(pfs.create(sub, Buffer.from('blob'), ObjType.REGFILE, 0o640, cred, now), 0, blob, now);
    h2.flush();
    h2.close();

    const dest = fresh(dir, 'out');
    const r = await recover('recover', `${a}:${b}`, '/sub/blob', dest);
    t.equal(r.status, 0);
    const got = path.join(dest, 'sub', 'blob.00001');
    t.ok(fs.readFileSync(got).equals(blob), 'the file comes back');
    t.equal(fs.statSync(got).mode & 0o7777, 0o640);
    const one = await recover('recover', a, '/sub/blob', dest);
    t.equal(one.status, 1, 'one volume of two is refused');
    t.match(one.err, /filesystem has 2 volume\(s\), 1 given/);
  });

  const refWhy = fs.existsSync(REF_HAMMER2) ? null : `no reference hammer2 at ${REF_HAMMER2}`;
  t.test('the reference hammer2 recover writes the same', { skip: refWhy ?? false }, async (t) => {
    const dir = tempDir(t);
    const imgs: Record<string, string> = {};
    for (const n of ['basic', 'multipfs', 'checks-none', 'checks-disabled', 'zlib']) imgs[n] = unpackFixture(n, fresh(dir, n));
    // A damaged copy of basic: a data block of a file, a file's inode.
    const damaged = path.join(dir, 'damaged.img');
    spawnSync('cp', ['--sparse=always', imgs.basic, damaged]);
    zero(damaged, (await locate(damaged, 'DATA', '/hardlinks/orig.bin')).data[1], 8192);
    zero(damaged, (await locate(damaged, 'DATA', '/modes/dir-1777/inside')).inode, 1024);
    imgs.damaged = damaged;

    // Relative paths below the PFS roots: the reference never reads PFS roots
    // (see recover.ts), so it finds neither "/..." nor names right under a root.
    const cases: [string, string, string][] = [
      ['basic', 'recover', 'size-65537'],
      ['basic', 'recover', 'ümläut-dir'],
      ['basic', 'recover', dirName(loadManifest('basic'), 'level10-')],
      ['basic', 'recover-file', 'at-level-03.txt'],
      ['basic', 'recover', 'dir-1777'],
      ['damaged', 'recover', 'orig.bin'],
      ['damaged', 'recover-relaxed', 'orig.bin'],
      ['damaged', 'recover', 'dir-1777'],
      ['multipfs', 'recover', 'draft.txt'],
      ['multipfs', 'recover', 'cache.bin'],
      ['multipfs', 'recover', 'photos'],
      ['checks-none', 'recover', 'text-1M.txt'],
      ['checks-none', 'recover-relaxed', 'text-1M.txt'],
      ['checks-disabled', 'recover-relaxed', 'size-65537'],
      ['zlib', 'recover', 'stamped-4M.txt'],
    ];
    // What the two print differently: the reference's volume-check debug line,
    // and the topology counts (ours include the PFS roots' directories).
    const comparable = (s: string) =>
      s
        .split('\n')
        .filter((l) => !l.startsWith('checkvolu '))
        .map((l) => l.replace(/^(Topo\w+ stats): .*/, '$1'))
        .join('\n');
    for (const [img, directive, p] of cases) {
      const theirs = fresh(dir, `ref-${img}-${directive}-${p.slice(0, 20)}`);
      const ours = fresh(dir, `ours-${img}-${directive}-${p.slice(0, 20)}`);
      const ref = spawnSync(REF_HAMMER2, ['-q', directive, imgs[img], p, theirs], { encoding: 'utf8' });
      const r = await recover(directive, imgs[img], p, ours);
      t.equal(ref.status, 0, `reference: ${img} ${directive} ${p}`);
      t.equal(r.status, 0, `ours: ${img} ${directive} ${p}`);
      t.equal(comparable(r.out), comparable(ref.stdout), 'the same summary (inode, invalid-blockref and hit counts)');
      const a = listTree(theirs);
      const b = listTree(ours);
      t.ok(a.size > 0, `the reference recovered ${a.size} entries`);
      const strip = (m: Map<string, Ent>) => [...m].map(([k, e]) => ({ ...e, ino: 0, path: k }));
      t.same(strip(b), strip(a), 'the same tree: names, versions, contents, modes, times, links');
    }

    // Where the reference finds nothing and we find everything: absolute paths.
    const theirs = fresh(dir, 'ref-abs');
    const ours = fresh(dir, 'ours-abs');
    spawnSync(REF_HAMMER2, ['-q', 'recover', imgs.multipfs, '/old', theirs]);
    await recover('recover', imgs.multipfs, '/old', ours);
    t.same(fs.readdirSync(theirs), [], 'the reference recovers nothing under an absolute path');
    t.same(fs.readdirSync(path.join(ours, 'old')).sort(), ['cache.bin.00001', 'report-2018.txt.00001'], 'we recover /old');
  });
}
