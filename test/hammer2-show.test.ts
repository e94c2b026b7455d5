// hammer2 show / freemap / volhdr / hash / dhash, and printinode's
// formatter, against the reference: the dumps stored beside the newfs
// fixtures (../shared/fixtures/newfs), known hashes, and, where the reference
// binary is built (H2_REF_HAMMER2, default /work/ref/bin/hammer2), its live
// output on every fixture, on images our newfs makes and our mount writes,
// and on a damaged copy of a fixture. Output must match byte for byte.
import t, { Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cFixed, directives } from '../src/cli/hammer2/show';
import { formatInode, time64ToStr } from '../src/cli/hammer2/printinode';
import { Hammer2Ctx, UsageError } from '../src/cli/hammer2/context';
import { run as newfs } from '../src/cli/newfs_hammer2';
import { Hammer2Device } from '../src/engine';
import { decodeInode, INODE_BYTES, uuidFromString } from '../src/media';
import { FIXTURES, flipByte, fuseUnavailable, haveFixtures, tempDir, unpackFixture } from './lib/env';
import { mount } from './lib/mount';

process.env.HAMMER2_QUIET_SHIM = '1';
// The show knobs a caller's environment may hold would change both sides' dumps, not the stored ones.
for (const k of Object.keys(process.env)) if (k.startsWith('HAMMER2_SHOW_')) delete process.env[k];
// The stored dumps were made in UTC; the live comparisons run both sides in another zone.
process.env.TZ = 'UTC';

const REF = process.env.H2_REF_HAMMER2 ?? '/work/ref/bin/hammer2';
const haveRef = fs.existsSync(REF);
const LIVE_TZ = 'America/New_York';

interface Flags {
  verbose?: number;
  quiet?: number;
}

/** Run a directive in-process, in `cwd` (paths print as given). */
async function h2(directive: string, args: string[], flags: Flags = {}, cwd?: string): Promise<{ status: number; out: string }> {
  let out = '';
  // Counts as the command folds -v and -q: never both above zero.
  const ctx: Hammer2Ctx = {
    io: { out: (s) => (out += s), err: () => {} },
    recurse: false,
    verbose: flags.verbose ?? 0,
    quiet: flags.quiet ?? 0,
    json: false,
  };
  const back = process.cwd();
  if (cwd) process.chdir(cwd);
  try {
    return { status: await directives[directive](ctx, args), out };
  } finally {
    process.chdir(back);
  }
}

const flagArgs = (f: Flags): string[] => [...Array(f.verbose ?? 0).fill('-v'), ...Array(f.quiet ?? 0).fill('-q')];

/**
 * The reference's output, without the "checkvolu header N size/size" lines
 * its volume setup prints (a debugging printf of the OpenBSD port, absent
 * from DragonFly's hammer2 and from the stored dumps).
 */
function ref(args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): string {
  const r = spawnSync(REF, args, { cwd, env: { ...process.env, ...env }, maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`${REF} ${args.join(' ')}: status ${r.status}: ${r.stderr}`);
  return r.stdout
    .toString('utf8')
    .split('\n')
    .filter((l) => !l.startsWith('checkvolu header '))
    .join('\n');
}

/** Equal texts, or a failure showing the first line that differs (dumps run to megabytes). */
function sameText(t: Test, ours: string, want: string, what: string): void {
  if (ours === want) {
    t.pass(`${what} (${want.split('\n').length - 1} lines)`);
    return;
  }
  const a = ours.split('\n');
  const b = want.split('\n');
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  t.fail(`${what}: first difference at line ${i + 1}`, { found: a.slice(i, i + 3), wanted: b.slice(i, i + 3) });
}

t.test('printf helpers', async (t) => {
  // glibc rounds exact ties to even; toFixed would round them up.
  t.equal(cFixed(0.0625, 3), '0.062');
  t.equal(cFixed(0.1875, 3), '0.188');
  t.equal(cFixed(2.5, 0), '2');
  t.equal(cFixed(1 / 3, 2, 6), '  0.33');
  t.equal(cFixed(0, 3, 6), ' 0.000');
  t.equal(cFixed(1024, 2, 6), '1024.00');
  t.equal(time64ToStr(0n), '01-Jan-1970 00:00:00');
  t.equal(time64ToStr(951782400n * 1000000n + 999999n), '29-Feb-2000 00:00:00');
  // Past Date's range (garbage in a corrupt inode): the calendar still counts.
  t.equal(time64ToStr(2n ** 64n - 1n), '19-Jan-586524 08:01:49');
});

t.test('hash and dhash: values the reference printed', async (t) => {
  const names = ['', 'a', 'file.txt', 'ünïcødé-名前'];
  const hash = await h2('hash', names);
  t.equal(hash.status, 0);
  t.equal(
    hash.out,
    '8000000000008000 \nc1d0433082e08000 a\n891c9abd13cd8000 file.txt\nd6c19cd950698000 ünïcødé-名前\n',
  );
  const dhash = await h2('dhash', names);
  t.equal(dhash.status, 0);
  t.equal(
    dhash.out,
    'a85f7f8931b8cf1e \n398bcef90c5a3696 a\nb42f1c5a8e1c4c61 file.txt\nc8f9a09eb5bcbfe0 ünïcødé-名前\n',
  );
  t.equal((await h2('hash', [])).out, '', 'no names, no output');
  for (const [d, args] of [
    ['show', []],
    ['volhdr', ['a', 'b']],
  ] as const) {
    const e = await h2(d, [...args]).catch((e: unknown) => e);
    t.ok(e instanceof UsageError, `${d} with ${args.length} arguments is a usage error`);
    t.equal((e as Error).message, `${d}: requires device path`);
  }
});

t.test('formatInode: print_inode.c layout', async (t) => {
  const raw = Buffer.alloc(INODE_BYTES);
  raw.writeUInt16LE(1, 0); // version
  raw[3] = 1; // pfs_subtype SNAPSHOT
  raw.writeUInt32LE(0x20, 4); // uflags
  raw.writeUInt32LE(12, 8);
  raw.writeUInt32LE(34, 0xc);
  for (const o of [0x10, 0x18, 0x20, 0x28]) raw.writeBigUInt64LE(1000000000n * 1000000n + 5n, o);
  uuidFromString('00000000-0000-0000-0000-0000000003e8').copy(raw, 0x30);
  raw[0x50] = 5; // CDEV
  raw[0x51] = 0x02;
  raw.writeUInt16LE(0x0100, 0x52);
  raw.writeUInt32LE(0o20644, 0x54);
  raw.writeBigUInt64LE(0x1234n, 0x58);
  raw.writeBigUInt64LE(0n, 0x60);
  raw.writeBigUInt64LE(3n, 0x68);
  raw.writeBigUInt64LE(0x10n, 0x70);
  raw.writeBigUInt64LE(0x8000abcd00008000n, 0x78);
  raw.writeUInt16LE(4, 0x80);
  raw[0x83] = 0x32; // zlib, level 3
  raw[0x85] = 3;
  raw[0x87] = 7; // not a PFS type
  raw.writeBigUInt64LE(0xffffffffffffffffn, 0xe0);
  raw.write('cdev', 0x100);
  const text = formatInode(decodeInode(raw));
  t.equal(
    text,
    [
      'version = 1',
      'pfs_subtype = 1 (SNAPSHOT)',
      'uflags = 0x20',
      'rmajor = 12',
      'rminor = 34',
      'ctime = 09-Sep-2001 01:46:40',
      'mtime = 09-Sep-2001 01:46:40',
      'atime = 09-Sep-2001 01:46:40',
      'btime = 09-Sep-2001 01:46:40',
      'uid = 00000000-0000-0000-0000-0000000003e8',
      'gid = 00000000-0000-0000-0000-000000000000',
      'type = 5 (CDEV)',
      'op_flags = 0x2',
      'cap_flags = 0x100',
      'mode = 020644',
      'inum = 0x1234',
      'size = 0',
      'nlinks = 3',
      'iparent = 0x10',
      'name_key = 0x8000abcd00008000',
      'name_len = 4',
      'ncopies = 0',
      'comp_algo = 50',
      'check_algo = 3',
      'pfs_nmasters = 0',
      'pfs_type = 7 (ILLEGAL)',
      'pfs_inum = 0x0',
      'pfs_clid = 00000000-0000-0000-0000-000000000000',
      'pfs_fsid = 00000000-0000-0000-0000-000000000000',
      'data_quota = 0x0',
      'inode_quota = 0x0',
      'pfs_lsnap_tid = 0x0',
      'decrypt_check = 0xffffffffffffffff',
      '',
    ].join('\n'),
  );
  // -v: the 256 meta bytes first, 16 per line, then an empty line.
  const v = formatInode(decodeInode(raw), 1).split('\n');
  t.equal(v[0], '01 00 00 01 20 00 00 00 0C 00 00 00 22 00 00 00');
  t.equal(v[14], 'FF FF FF FF FF FF FF FF 00 00 00 00 00 00 00 00'); // decrypt_check at 0xe0
  t.equal(v[15], '00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00');
  t.equal(v[16], '');
  t.equal(v.slice(17).join('\n'), text);
});

const noFixtures = !haveFixtures() && '../shared/fixtures is absent';
const noRef = !haveRef && `no reference hammer2 at ${REF} (set H2_REF_HAMMER2)`;

t.test('against the stored reference dumps (newfs fixtures)', { skip: noFixtures }, async (t) => {
  const dir = path.join(FIXTURES, 'newfs');
  const names = fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.show.txt'))
    .map((f) => f.slice(0, -'.show.txt'.length));
  t.ok(names.length >= 6, `${names.length} fixtures with dumps`);
  const tmp = tempDir(t, 'h2show-');
  for (const name of names) {
    const d = path.join(tmp, name);
    fs.mkdirSync(d);
    const img = path.basename(unpackFixture(name, d, `newfs/${name}.img.tar.gz`));
    for (const mode of ['show', 'volhdr']) {
      const want = fs.readFileSync(path.join(dir, `${name}.${mode}.txt`), 'utf8');
      t.match(want, /^Volume 0 header 0: mirror_tid=/m, `${name}.${mode}.txt is a dump`);
      const r = await h2(mode, [img], {}, d);
      t.equal(r.status, 0);
      sameText(t, r.out, want, `${name} ${mode}`);
    }
  }

  // printinode renders the DATA PFS root as the reference's show did.
  const img = path.join(tmp, 'newfs-1g', 'newfs-1g.img');
  const dev = await Hammer2Device.open(img, { lock: false });
  t.teardown(() => dev.close());
  const text = formatInode(dev.findPfs('DATA')!.inode);
  const dump = fs.readFileSync(path.join(dir, 'newfs-1g.show.txt'), 'utf8');
  const data = dump.slice(dump.indexOf('filename "DATA"'));
  const field = (name: string) => new RegExp(`^ *${name} +(.*)$`, 'm').exec(data)![1];
  t.match(text, `\nctime = ${field('ctime')}\n`);
  t.match(text, `\npfs_clid = ${field('pfs_clid')}\n`);
  t.match(text, `\npfs_fsid = ${field('pfs_fsid')}\n`);
  t.match(text, `\nname_key = 0x${BigInt(field('name_key')).toString(16)}\n`);
  t.match(text, `\nmode = 0${field('mode').trim()}\n`);
  t.match(text, '\ntype = 1 (DIR)\n');
  t.match(text, '\npfs_type = 6 (MASTER)\n');
});

/** Our show/freemap/volhdr output against the reference binary's for `spec`, with each set of flags. */
async function compareLive(t: Test, spec: string, cwd: string, flagSets: Flags[], env: NodeJS.ProcessEnv = {}): Promise<void> {
  const saved = { ...process.env };
  Object.assign(process.env, env);
  try {
    for (const f of flagSets) {
      for (const mode of ['show', 'freemap', 'volhdr']) {
        const args = [...flagArgs(f), mode, spec];
        const want = ref(args, cwd, env);
        t.match(want, /Volume 0 header 0: mirror_tid=/, `reference ${args.join(' ')} dumped`);
        const r = await h2(mode, [spec], f, cwd);
        t.equal(r.status, 0);
        sameText(t, r.out, want, `${args.join(' ')}${Object.keys(env).length ? ` (${JSON.stringify(env)})` : ''}`);
      }
    }
  } finally {
    for (const k of Object.keys(env)) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  }
}

t.test('against the reference binary', { skip: noRef }, async (t) => {
  process.env.TZ = LIVE_TZ;
  t.teardown(() => {
    process.env.TZ = 'UTC';
  });
  const tmp = tempDir(t, 'h2show-live-');
  const plain: Flags[] = [{}];
  const all: Flags[] = [{}, { verbose: 1 }, { quiet: 1 }];

  t.test('hash and dhash', async (t) => {
    const names = ['', 'a', 'Z', 'x'.repeat(255), 'ünïcødé-名前', 'a.b-c_d~e', '...', 'y'.repeat(1100), ' sp ace '];
    for (const d of ['hash', 'dhash']) {
      const want = ref([d, ...names], tmp);
      t.equal(want.split('\n').length, names.length + 1);
      sameText(t, (await h2(d, names)).out, want, d);
    }
  });

  t.test('fixtures', { skip: noFixtures }, async (t) => {
    const archives = [
      ...fs.readdirSync(FIXTURES).filter((f) => f.endsWith('.img.tar.gz')),
      ...fs
        .readdirSync(path.join(FIXTURES, 'newfs'))
        .filter((f) => f.endsWith('.img.tar.gz'))
        .map((f) => `newfs/${f}`),
    ];
    t.ok(archives.length >= 13, `${archives.length} fixture images`);
    const deep = new Set(['basic', 'multipfs', 'zlib', 'checks-iscsi32', 'checks-none']);
    for (const a of archives) {
      const name = path.basename(a, '.img.tar.gz');
      const d = path.join(tmp, name);
      fs.mkdirSync(d);
      const img = path.basename(unpackFixture(name, d, a));
      await compareLive(t, img, d, deep.has(name) ? all : plain);
      if (name === 'newfs-9g' || name === 'multipfs') await compareLive(t, img, d, [{ verbose: 3 }]);
      if (name === 'multipfs') {
        await compareLive(t, img, d, [{}, { quiet: 1 }], { HAMMER2_SHOW_TAB: '4', HAMMER2_SHOW_DEPTH: '0x3' });
        await compareLive(t, img, d, [{}], { HAMMER2_SHOW_MIN_MODIFY_TID: '0x30', HAMMER2_SHOW_ALL_VOLUME_HEADERS: '1' });
        await compareLive(t, img, d, [{}], { HAMMER2_SHOW_TAB: '9', HAMMER2_SHOW_DEPTH: '-2', HAMMER2_SHOW_MIN_MIRROR_TID: 'zz' });
      }
      if (name !== 'multipfs') fs.rmSync(d, { recursive: true }); // multipfs is damaged below
    }
  });

  t.test('a damaged image: failed checks, bad sizes, unreadable blocks', { skip: noFixtures }, async (t) => {
    const d = path.join(tmp, 'multipfs');
    const img = path.join(d, 'multipfs.img');
    damage(t, img, (await h2('show', [img])).out, (await h2('freemap', [img])).out);
    // What the damage must show, or the comparison below proves little.
    const v = (await h2('show', [img], { verbose: 1 })).out;
    for (const s of ['(bad block size 2147483648)', '(media read failed)', 'meth=sha192|', 'meth=disabled|unknown(7):default']) {
      t.ok(v.includes(s), `damaged dump shows ${s}`);
    }
    t.match(v, /\(xxhash64 xxhash64\|\S+ [0-9a-f]{16}\/[0-9a-f]{16} failed\) \{/, 'a failed inode or indirect block');
    t.match((await h2('freemap', [img])).out, /\(fcrc freemap\|none:default [0-9a-f]{8}\/[0-9a-f]{8} failed\) \{/);
    await compareLive(t, 'multipfs.img', d, all);
  });

  t.test('images our newfs makes and our mount writes', async (t) => {
    const d = path.join(tmp, 'ours');
    fs.mkdirSync(d);
    const quietIo = { out: () => {}, err: () => {} };
    t.equal(await newfs(['-s', '1G', path.join(d, 'one.img')], quietIo), 0);
    t.equal(await newfs(['-s', '1G:512M', path.join(d, 'v0.img'), path.join(d, 'v1.img')], quietIo), 0);
    await compareLive(t, 'one.img', d, all);
    await compareLive(t, 'v0.img:v1.img', d, plain);
    await compareLive(t, 'v1.img:v0.img', d, plain);

    const why = fuseUnavailable();
    if (why) {
      t.comment(`not written through a mount: ${why}`);
      return;
    }
    const mnt = path.join(tmp, 'mnt');
    const m = await mount(t, path.join(d, 'one.img'), mnt);
    // Another process fills the mount (the daemon never serves its own test process).
    const fill = spawnSync(
      'sh',
      [
        '-ec',
        `mkdir -p d1/d2 many
         i=0; while [ $i -lt 600 ]; do echo "file $i" > many/f$i; i=$((i+1)); done
         head -c 3000000 /dev/urandom > rand.bin
         yes hello | head -c 2000000 > text.txt
         echo tiny > tiny; ln -s tiny link; ln tiny hard; mkfifo fifo; mknod cdev c 12 34
         touch "$(printf 'n%.0s' $(seq 1 200))" "ünïcødé-名前"
         dd if=/dev/zero of=zeros bs=64k count=10 2>/dev/null
         truncate -s 100M sparse; echo x >> sparse; sync`,
      ],
      { cwd: mnt, encoding: 'utf8' },
    );
    t.equal(fill.status, 0, fill.stderr);
    await m.unmount();
    await compareLive(t, 'one.img', d, all);
  });
});

/**
 * Damage a copy of the multipfs fixture, finding the blocks through our own
 * (already compared) dumps: a data block's bytes, an inode outside the
 * subtree below, and in an indirect block holding five 64 KiB data blocks:
 * a size radix past 64 KiB, an offset past the media, a sha192 check that
 * holds, the disabled check, unknown check and compression methods; and a freemap
 * leaf's bytes. (Blocks straddling 64 KiB buffers are left alone: the
 * reference checks those over stale buffer bytes.)
 */
function damage(t: Test, img: string, show: string, freemap: string): void {
  const entries = [...show.matchAll(/^( *)(\w+)\.(\d+) +([0-9a-f]{16}) /gm)].map((m) => ({
    indent: m[1].length,
    type: m[2],
    off: BigInt('0x' + m[4]),
    at: m.index!,
  }));
  const subtreeEnd = (i: number) => {
    let j = i + 1;
    while (j < entries.length && entries[j].indent > entries[i].indent) j++;
    return j;
  };
  const ind = entries.findIndex((e, i) => {
    if (e.type !== 'indirect') return false;
    const kids = entries.slice(i + 1, subtreeEnd(i));
    return kids.length >= 5 && kids.slice(0, 5).every((k) => k.type === 'data' && (k.off & 0x3fn) === 16n);
  });
  t.ok(ind >= 0, 'an indirect block of 64 KiB data blocks');
  const inode = entries.findIndex((e, i) => e.type === 'inode' && subtreeEnd(i) > i + 1 && (i > ind || subtreeEnd(i) <= ind));
  t.ok(inode >= 0, 'an inode with children elsewhere');
  const data = entries.findIndex((e, i) => e.type === 'data' && (i < ind || i >= subtreeEnd(ind)));
  t.ok(data >= 0, 'a data block elsewhere');
  const leaf = /^ *freemap_leaf\.\d+ +([0-9a-f]{16}) /m.exec(freemap);
  t.ok(leaf, 'a freemap leaf');

  const at = (b: bigint) => Number(b & ~0x3fn);
  flipByte(img, at(entries[data].off) + 100);
  flipByte(img, at(entries[inode].off) + 0xf0); // reserved meta byte: the fields print as before
  flipByte(img, at(BigInt('0x' + leaf![1])) + 64 * 128 + 0x08); // a bmap's reserved word
  const fd = fs.openSync(img, 'r+');
  try {
    const base = at(entries[ind].off);
    const bref = Buffer.alloc(5 * 128);
    fs.readSync(fd, bref, 0, bref.length, base);
    bref.writeBigUInt64LE((bref.readBigUInt64LE(0x20) & ~0x3fn) | 0x1fn, 0x20);
    bref.writeBigUInt64LE(0x7f00000000000010n, 128 + 0x20);
    // Child 2 under sha192, with the code of its block.
    const c2 = bref.readBigUInt64LE(256 + 0x20);
    const blk = Buffer.alloc(65536);
    fs.readSync(fd, blk, 0, blk.length, at(c2));
    const sha = createHash('sha256').update(blk).digest();
    for (let i = 16; i < 24; i++) sha[i] ^= sha[i + 8];
    bref[256 + 1] = 0x40 | (bref[256 + 1] & 15);
    bref.fill(0, 256 + 0x40, 256 + 0x80);
    sha.copy(bref, 256 + 0x40, 0, 24);
    bref[384 + 1] = 0x17; // check disabled, compression 7 (no such method)
    bref[512 + 1] = 0x90 | (bref[512 + 1] & 15); // check 9 (none such: nothing printed)
    fs.writeSync(fd, bref, 0, bref.length, base);
  } finally {
    fs.closeSync(fd);
  }
}
