// fsck_hammer2: verdicts on the fixtures and on corrupted copies (agreeing
// with the reference fsck_hammer2 where it is at hand: H2_REF_FSCK, default
// /work/ref/bin/fsck_hammer2), the faults only we find, repair with -y
// (the reference accepts the result), rollback on multi-header images,
// interrupted repairs, exit statuses and output formats.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { checkHammer2, CheckResult } from '../fsck/check';
import { repairHammer2 } from '../fsck/repair';
import { FORGES, mapImage, Mutator, rng } from '../fsck/fuzz';
import { run } from '../src/cli/fsck_hammer2';
import { formatHammer2 } from '../mkfs/newfs';
import { Hammer2Fs } from '../src/fs';
import { initCodecs, ObjType } from '../src/media';
import { FIXTURES, fixtureNames, haveFixtures, REPO, tempDir, unpackFixture, flipByte } from './lib/env';

process.env.HAMMER2_QUIET_SHIM = '1';

const REF = process.env.H2_REF_FSCK ?? '/work/ref/bin/fsck_hammer2';
const haveRef = fs.existsSync(REF);
const CLI = path.join(REPO, 'dist', 'src', 'cli', 'fsck_hammer2.js');

/** Reference verdict: 0 clean, 1 not (null: no reference binary). */
function ref(img: string): number | null {
  if (!haveRef) return null;
  return spawnSync(REF, ['-q', img], { encoding: 'utf8' }).status === 0 ? 0 : 1;
}

/** Run the CLI in-process; returns status and output. */
async function cli(args: string[]): Promise<{ status: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const status = await run(args, { out: (s) => (out += s), err: (s) => (err += s), tty: false });
  return { status, out, err };
}

const codes = (r: CheckResult) => [...r.report.byCode.keys()];
const errorCodes = (r: CheckResult) => [...new Set(r.report.findings.filter((f) => f.severity === 'error').map((f) => f.code))];

function copy(src: string, dst: string): string {
  const r = spawnSync('cp', ['--sparse=always', src, dst]);
  if (r.status !== 0) throw new Error('cp failed');
  return dst;
}

/** A 9 GiB image written by our own writer: several flushes, so the four header zones differ. */
async function writerImage(img: string, flushes: number): Promise<void> {
  await formatHammer2({ paths: [img], sizes: [9 * 2 ** 30] });
  const cred = { uid: 0, gid: 0 };
  for (let f = 0; f < flushes; f++) {
    const h2 = await Hammer2Fs.open(img, { writable: true, lock: false });
    const pfs = h2.pfs('DATA')!;
    const now = 1_700_000_000_000_000n + BigInt(f) * 1_000_000n;
    const d = pfs.create(pfs.root, Buffer.from(`d${f}`), ObjType.DIRECTORY, 0o755, cred, now);
    for (let i = 0; i < 12; i++) {
      const n = pfs.create(d, Buffer.from(`f${i}`), ObjType.REGFILE, 0o644, cred, now);
      const buf = Buffer.alloc(1000 + ((i * 7919 + f * 104729) % 150000));
      for (let j = 0; j + 4 <= buf.length; j += 64) buf.writeUInt32LE((j * 2654435761 + f) >>> 0, j);
      pfs.write(n, 0, buf, now);
    }
    h2.flush();
    h2.close();
  }
}

t.before(async () => {
  await initCodecs();
});

if (!haveFixtures()) {
  t.plan(0, `no fixtures at ${FIXTURES}`);
} else {
  t.test('every fixture is clean, as the reference says', async (t) => {
    const dir = tempDir(t);
    const names = fixtureNames();
    const newfs = fs.existsSync(path.join(FIXTURES, 'newfs'))
      ? fs.readdirSync(path.join(FIXTURES, 'newfs')).filter((f) => f.endsWith('.img.tar.gz'))
      : [];
    const imgs: string[] = [];
    for (const n of names) {
      const d = path.join(dir, n);
      fs.mkdirSync(d);
      imgs.push(unpackFixture(n, d));
    }
    for (const a of newfs) {
      const d = path.join(dir, a);
      fs.mkdirSync(d);
      imgs.push(unpackFixture('', d, path.join('newfs', a)));
    }
    t.ok(imgs.length >= 7, `${imgs.length} images`);
    for (const img of imgs) {
      const r = await cli(['-q', img]);
      t.equal(r.status, 0, `${path.basename(img)}: ${r.out.trim().split('\n').pop()}`);
      if (haveRef) t.equal(ref(img), 0, `${path.basename(img)}: reference agrees`);
      fs.rmSync(img);
    }
  });

  t.test('blockref counts match the reference', { skip: !haveRef && 'no reference fsck' }, async (t) => {
    const dir = tempDir(t);
    const img = unpackFixture('multipfs', dir);
    const counts = (s: string) => s.split('\n').filter((l) => /^\s+(\d+ blockref|[A-Z][A-Za-z.]*$)/.test(l)).map((l) => l.trim());
    for (const args of [[], ['-p']]) {
      const ours = await cli([...args, img]);
      const theirs = spawnSync(REF, ['-q', ...args, img], { encoding: 'utf8' }).stdout;
      t.same(counts(ours.out), counts(theirs), `counts with ${args.join(' ') || 'no options'}`);
    }
    const pl = await cli(['-P', img]);
    const theirs = spawnSync(REF, ['-P', img], { encoding: 'utf8' }).stdout;
    const pfsLines = (s: string) => s.split('\n').filter((l) => /^\s+(MASTER|SNAPSHOT|SLAVE|SOFT)/.test(l)).map((l) => l.trim());
    t.same(pfsLines(pl.out), pfsLines(theirs), '-P lists the PFSs like the reference');
    t.equal(pfsLines(pl.out).length, 4);
  });

  t.test('damaged blocks: same verdict as the reference, and -y repairs', async (t) => {
    const dir = tempDir(t);
    const base = unpackFixture('zlib', dir);
    const blocks = mapImage(base);
    const pick = (kind: string, n = 0) => blocks.filter((b) => b.kind === kind)[n];
    const cases: [string, number][] = [
      ['data block', pick('data', 3).off + 100],
      ['file inode', blocks.filter((b) => b.kind === 'inode')[10].off + 0x60],
      ['indirect block', pick('indirect', 2).off + 8],
      ['freemap leaf', pick('fleaf').off + 0x2040],
      ['long-name dirent block', pick('dirent')?.off ?? pick('data').off],
    ];
    const img = path.join(dir, 'work.img');
    for (const [what, off] of cases) {
      copy(base, img);
      flipByte(img, off);
      const before = await cli(['-q', img]);
      t.equal(before.status, 4, `${what}: not clean (${before.out.split('\n')[0]})`);
      if (haveRef) t.equal(ref(img), 1, `${what}: the reference agrees`);
      const fixed = await cli(['-q', '-y', img]);
      t.equal(fixed.status, 1, `${what}: -y corrects it`);
      const after = await cli(['-q', img]);
      t.equal(after.status, 0, `${what}: clean afterwards`);
      if (haveRef) t.equal(ref(img), 0, `${what}: the reference accepts the repair`);
    }
    // The only volume header of a 2 GiB image: nothing to fall back to.
    copy(base, img);
    const fd = fs.openSync(img, 'r+');
    fs.writeSync(fd, Buffer.from([0x42]), 0, 1, 0x100);
    fs.closeSync(fd);
    const r = await cli(['-q', img]);
    t.equal(r.status, 4, 'lone damaged header: errors');
    t.match(r.out, /no valid volume header|header/, 'says why');
    if (haveRef) t.equal(ref(img), 1, 'reference agrees');
    t.equal((await cli(['-q', '-y', img])).status, 4, '-y cannot repair it');
  });

  t.test('faults the reference does not see', async (t) => {
    const dir = tempDir(t);
    const base = unpackFixture('zlib', dir);
    const img = path.join(dir, 'work.img');
    for (const name of Object.keys(FORGES)) {
      copy(base, img);
      const m = new Mutator(img, mapImage(img));
      const f = FORGES[name](m, rng(3));
      fs.closeSync(m.fd);
      if (!f) {
        t.fail(`${name}: could not forge`);
        continue;
      }
      if (haveRef) t.equal(ref(img), 0, `${name} (${f.what}): the reference passes it`);
      const r = await checkHammer2(img, { lock: false });
      for (const c of f.expect) t.ok(codes(r).includes(c), `${name}: reports ${c} (got ${codes(r).join(', ')})`);
      const rep = await repairHammer2(img, r, { lock: false });
      t.equal(rep.final!.report.errors, 0, `${name}: -y leaves no errors (${errorCodes(rep.final!).join(', ')})`);
      t.equal(rep.final!.report.warnings, 0, `${name}: nor warnings (${codes(rep.final!).join(', ')})`);
      if (haveRef) t.equal(ref(img), 0, `${name}: the reference accepts the repair`);
    }
  });

  t.test('orphans (left by the reference destroy) are reattached in lost+found', async (t) => {
    const dir = tempDir(t);
    const img = unpackFixture('multipfs', dir);
    const r = await checkHammer2(img, { lock: false });
    t.equal(r.report.errors, 0, 'orphans are warnings: the image is clean');
    t.ok(r.report.count('orphan') >= 30, `${r.report.count('orphan')} orphans reported`);
    const c = await cli(['-q', '-y', img]);
    t.equal(c.status, 0, 'no errors to correct');
    t.match(c.out, /reattached \d+ orphans in \/lost\+found/);
    const after = await checkHammer2(img, { lock: false });
    t.equal(after.report.count('orphan'), 0, 'no orphans left');
    t.equal(after.report.warnings, 0, 'no warnings left');
    const h2 = await Hammer2Fs.open(img, { lock: false });
    const names = h2.pfs('HOME')!.readdir(h2.pfs('HOME')!.resolve('/lost+found')).map((e) => e.name.toString());
    h2.close();
    t.ok(names.includes('#1024'), 'named by inode number');
    if (haveRef) t.equal(ref(img), 0, 'reference accepts');
  });
}

t.test('multi-header image written by our writer', async (t) => {
  const dir = tempDir(t);
  const base = path.join(dir, 'w9.img');
  await writerImage(base, 6);
  const r0 = await checkHammer2(base, { lock: false });
  t.equal(r0.report.errors, 0, `our writer's image is clean (${errorCodes(r0).join(', ')})`);
  t.equal(r0.zones.length, 4, 'four header zones');
  if (haveRef) t.equal(ref(base), 0, 'reference agrees');
  const best = r0.zones[r0.bestZone];

  t.test('a damaged newest tree rolls back to the newest header that verifies', async (t) => {
    const img = copy(base, path.join(dir, 'rb.img'));
    const fd = fs.openSync(img, 'r+');
    const b = Buffer.alloc(128);
    fs.readSync(fd, b, 0, 128, best.zone * 2 ** 31 + 0x200);
    const sroot = Number(b.readBigUInt64LE(0x20) & ~0x3fn);
    fs.writeSync(fd, Buffer.from([0xee]), 0, 1, sroot + 0x300);
    fs.closeSync(fd);
    const c = await cli(['-y', img]);
    t.equal(c.status, 1, 'errors corrected');
    const prev = r0.zones.filter((z) => z !== best).sort((a, b) => (a.tid! > b.tid! ? -1 : 1))[0];
    t.match(c.out, new RegExp(`rolling back from zone.${best.zone} .* to zone.${prev.zone} .*transactions 0x${best.tid!.toString(16)}\\.\\.0x${best.tid!.toString(16)} are lost`));
    const after = await checkHammer2(img, { lock: false });
    t.equal(after.report.errors, 0, 'clean');
    t.equal(after.zones[after.bestZone].volumeCounts[0], prev.volumeCounts[0], 'the tree in force is the older one');
    if (haveRef) t.equal(ref(img), 0, 'reference accepts');
  });

  t.test('a damaged header copy is rewritten', async (t) => {
    const img = copy(base, path.join(dir, 'hd.img'));
    const z = (best.zone + 2) % 4;
    const fd = fs.openSync(img, 'r+');
    fs.writeSync(fd, Buffer.from([0x99]), 0, 1, z * 2 ** 31 + 0x40);
    fs.closeSync(fd);
    const r = await checkHammer2(img, { lock: false });
    t.ok(r.report.findings.some((f) => f.code === 'header-invalid' && f.zone === z), `zone ${z} reported`);
    if (haveRef) t.equal(ref(img), 1, 'reference agrees');
    const rep = await repairHammer2(img, r, { lock: false });
    t.equal(rep.final!.report.errors, 0, 'repaired');
    t.ok(rep.final!.zones.every((x) => x.valid), 'every zone valid again');
    t.notOk(rep.rollback, 'no rollback needed');
    if (haveRef) t.equal(ref(img), 0, 'reference accepts');
  });

  t.test('faults in the tree in force of a four-header image', async (t) => {
    for (const name of ['dangling-entry', 'entry-hash', 'dir-iparent', 'used-free', 'pfs-inum']) {
      const img = copy(base, path.join(dir, 'ff.img'));
      const m = new Mutator(img, mapImage(img));
      const f = FORGES[name](m, rng(3));
      fs.closeSync(m.fd);
      if (!f) {
        t.fail(`${name}: could not forge`);
        continue;
      }
      const r = await checkHammer2(img, { lock: false });
      for (const c of f.expect) t.ok(codes(r).includes(c), `${name}: reports ${c}`);
      const rep = await repairHammer2(img, r, { lock: false, windowGiB: 4 });
      t.equal(rep.final!.report.errors, 0, `${name}: repaired (${errorCodes(rep.final!).join(', ')})`);
      if (haveRef) t.equal(ref(img), 0, `${name}: reference accepts`);
    }
  });

  t.test('windowed passes give the single pass answer', async (t) => {
    const img = copy(base, path.join(dir, 'win.img'));
    const m = new Mutator(img, mapImage(img));
    const f = FORGES['used-free'](m, rng(1));
    fs.closeSync(m.fd);
    t.ok(f, 'forged');
    const one = await checkHammer2(img, { lock: false });
    const many = await checkHammer2(img, { lock: false, windowGiB: 1 });
    t.equal(many.passes, 9, 'nine 1 GiB windows');
    t.same(many.freemap, one.freemap, 'same freemap findings');
    t.same(codes(many).sort(), codes(one).sort(), 'same codes');
  });

  t.test('an interrupted repair leaves the image as it was', async (t) => {
    const img = copy(base, path.join(dir, 'int.img'));
    const m = new Mutator(img, mapImage(img));
    FORGES['used-free'](m, rng(2));
    fs.closeSync(m.fd);
    const fd = fs.openSync(img, 'r+');
    fs.writeSync(fd, Buffer.from([0x77]), 0, 1, ((best.zone + 1) % 4) * 2 ** 31 + 0x80);
    fs.closeSync(fd);
    const r = await checkHammer2(img, { lock: false });
    t.ok(r.report.errors > 0);
    await t.rejects(repairHammer2(img, r, { lock: false, failBeforeHeader: true }), /failpoint/);
    const again = await checkHammer2(img, { lock: false });
    t.same(codes(again).sort(), codes(r).sort(), 'same problems as before');
    t.same(again.freemap, r.freemap, 'same freemap state');
    t.same(
      again.zones.map((z) => [z.valid, z.tid, z.volumeCounts[0]]),
      r.zones.map((z) => [z.valid, z.tid, z.volumeCounts[0]]),
      'same headers and trees',
    );
    // Killed at random moments instead: each time as it was, or repaired.
    for (let i = 0; i < 4; i++) {
      const p = spawn(process.execPath, [CLI, '-q', '-y', img], { env: { ...process.env, HAMMER2_QUIET_SHIM: '1' }, stdio: 'ignore' });
      const exited = new Promise((res) => p.on('exit', res));
      await new Promise((res) => setTimeout(res, 300 + i * 400));
      p.kill('SIGKILL');
      await exited;
      const now = await checkHammer2(img, { lock: false });
      const ok = now.report.errors === 0 || codes(now).every((c) => codes(r).includes(c));
      t.ok(ok, `kill ${i}: no new problems (${errorCodes(now).join(', ') || 'clean'})`);
    }
    t.equal((await cli(['-q', '-y', img])).status === 4, false, 'a full -y run then completes');
    t.equal((await cli(['-q', img])).status, 0, 'clean');
    if (haveRef) t.equal(ref(img), 0, 'reference accepts');
  });
});

t.test('command line', async (t) => {
  const dir = tempDir(t);
  t.equal((await cli([path.join(dir, 'missing.img')])).status, 8, 'missing image: operational error');
  const zero = path.join(dir, 'zero.img');
  fs.writeFileSync(zero, Buffer.alloc(1 << 20));
  const z = await cli(['-q', zero]);
  t.equal(z.status, 8, 'not HAMMER2: operational error');
  t.equal((await cli(['-q', '--bogus', zero])).status, 16, 'usage error');
  t.equal((await cli(['-y', '-n', zero])).status, 16, '-y and -n exclude each other');

  const img = path.join(dir, 'n.img');
  await formatHammer2({ paths: [img], sizes: [1 << 30] });
  const j = await cli(['--json', img]);
  t.equal(j.status, 0);
  const o = JSON.parse(j.out);
  t.equal(o.status, 0, 'json: status');
  t.equal(o.clean, true, 'json: clean');
  t.equal(o.zones.length, 1, 'json: zones');
  t.same(
    o.pfs.map((p: { name: string }) => p.name),
    ['DATA', 'LOCAL'],
    'json: PFSs',
  );
  // Without -y nothing is written, even to a damaged image.
  const m = new Mutator(img, mapImage(img));
  m.xor(mapImage(img).find((b) => b.kind === 'inode')!.off + 0x10, 1);
  fs.closeSync(m.fd);
  const st = fs.statSync(img);
  const bad = await cli(['-q', img]);
  t.equal(bad.status, 4, 'damaged');
  const st2 = fs.statSync(img);
  t.equal(st2.mtimeMs, st.mtimeMs, 'not modified without -y');
  const jb = JSON.parse((await cli(['--json', img])).out);
  t.equal(jb.status, 4, 'json: status 4');
  t.ok(jb.findings.some((f: { code: string }) => f.code === 'check'), 'json: findings');
  t.equal((await cli(['-q', '-b', img])).status, 4, '-b');
  t.equal((await cli(['-q', '-l', 'NOPE', '-p', img])).status, 4, 'unknown -l label');
});
