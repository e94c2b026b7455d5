// Mirroring at the fs layer (no FUSE): a master PFS streamed into a SLAVE
// PFS of its cluster on another image, fully then incrementally; streams
// that are corrupted, truncated, foreign, or start past the slave are
// refused and leave the slave as it was. The slave passes both fscks and
// reads back exactly through the reference.
import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FsError } from '../src/engine';
import { BufferSource, mirrorCopy, mirrorRead, mirrorWrite } from '../src/mirror';
import { PfsType, ObjType } from '../src/media';
import { checkHammer2 } from '../fsck';
import { spawn, spawnSync } from 'node:child_process';
import { H2_BIN, newImage, runH2 } from './lib/cli';
import { fileHashes, fuseUnavailable, haveRef, refRead, tempDir } from './lib/env';
import { mount } from './lib/mount';
import { ControlClient, findSockets } from '../src/control';
import { mountedMasterAndSlave, openMasterAndSlave, slaveHoldsMaster } from './lib/mirror';
import { content, imageTree, mkfile, openRw, pfsTree, tick, treeDiff, fsckBoth, pfsTid } from './lib/pfstree';

process.env.HAMMER2_QUIET_SHIM = '1';
const cred = { uid: 0, gid: 0 };

/** A master image with `n` files of `bytes` each, and a second image holding its empty SLAVE "M"; neither open. */
async function filledMasterAndSlave(t: any, size: number, n: number, bytes: number) {
  const A = await newImage(t, size, ['DATA']);
  const B = await newImage(t, size, ['none']);
  const a = await openRw(A.img);
  const p = a.pfs('DATA')!;
  for (let i = 0; i < n; i++) mkfile(p, p.root, `f${i}`, content(i, bytes));
  a.flush();
  const clid = a.dev.findPfs('DATA')!.inode.meta.pfsClid;
  a.close();
  const b = await openRw(B.img);
  b.createPfs('M', { type: PfsType.SLAVE, clid });
  b.close();
  return { A, B };
}

t.test('full and incremental streams into a slave; bad streams refused', async (t) => {
  const { A, B, a, b, clid, p } = await openMasterAndSlave(t, 'SLAVE1');
  const dir = p.create(p.root, Buffer.from('dir'), ObjType.DIRECTORY, 0o755, cred, tick());
  for (let i = 0; i < 200; i++) mkfile(p, dir, `f${i}`, content(i, (i * 977) % 40000));
  mkfile(p, p.root, 'big', content(99, 3 << 20));
  mkfile(p, p.root, 'tiny', Buffer.from('embedded'));
  p.symlink(p.root, Buffer.from('link'), Buffer.from('dir/f1'), cred, tick());
  a.flush();

  const read = (since: bigint) => {
    const parts: Buffer[] = [];
    const r = mirrorRead(a, 'DATA', since, (x) => parts.push(Buffer.from(x)));
    return { buf: Buffer.concat(parts), ...r };
  };
  const full = read(0n);
  const w1 = mirrorWrite(b, 'SLAVE1', new BufferSource(full.buf));
  t.equal(w1.from, 0n, 'the slave started empty');
  t.same(treeDiff(pfsTree(p), await imageTree(B.img, 'SLAVE1')), [], 'full stream: slave identical');
  t.equal(b.dev.findPfs('SLAVE1')!.bref.modifyTid, a.dev.findPfs('DATA')!.bref.modifyTid, 'slave at the master tid');

  // A change of a few files: the stream follows the change.
  p.write(p.resolve('/big'), 100000, Buffer.from('changed'), tick());
  p.unlink(dir, Buffer.from('f5'), tick());
  p.rename(p.root, Buffer.from('tiny'), dir, Buffer.from('tiny-moved'), tick());
  mkfile(p, p.root, 'new', content(5, 70000));
  a.flush();
  const since = b.dev.findPfs('SLAVE1')!.bref.modifyTid;
  const inc = read(since);
  t.ok(inc.buf.length < full.buf.length / 5, `incremental stream ${inc.buf.length} bytes against ${full.buf.length} for the full one`);
  t.ok(inc.stats.blocksRead < full.stats.blocksRead / 5, `${inc.stats.blocksRead} master blocks read against ${full.stats.blocksRead}`);

  // Refusals, each leaving the slave as it was.
  const before = await imageTree(B.img, 'SLAVE1');
  const tidBefore = b.dev.findPfs('SLAVE1')!.bref.modifyTid;
  const refuse = async (buf: Buffer, re: RegExp, what: string) => {
    let msg = '';
    try {
      mirrorWrite(b, 'SLAVE1', new BufferSource(buf));
    } catch (e) {
      msg = (e as Error).message;
    }
    t.match(msg, re, `${what} refused: ${msg}`);
    t.equal(b.dev.findPfs('SLAVE1')!.bref.modifyTid, tidBefore, `${what}: slave tid unchanged`);
    t.same(treeDiff(before, await imageTree(B.img, 'SLAVE1')), [], `${what}: slave unchanged`);
  };
  const flipped = Buffer.from(inc.buf);
  flipped[Math.floor(flipped.length * 0.6)] ^= 0x40;
  await refuse(flipped, /fails its check|bad record|counts/, 'a corrupted stream');
  await refuse(inc.buf.subarray(0, inc.buf.length - 20), /truncated|ends before/, 'a truncated stream');
  await refuse(Buffer.from('not a stream at all'), /not a HAMMER2 mirror stream/, 'a foreign file');
  const ahead = read(a.dev.findPfs('DATA')!.bref.modifyTid);
  await refuse(ahead.buf, /starts at transaction .* slave holds/, 'a stream that starts past the slave');
  // Another cluster's stream.
  const C = await newImage(t, 128 << 20, ['DATA']);
  const c = await openRw(C.img);
  const other: Buffer[] = [];
  mirrorRead(c, 'DATA', 0n, (x) => other.push(Buffer.from(x)));
  c.close();
  await refuse(Buffer.concat(other), /belongs to cluster/, "another cluster's stream");
  // Into a MASTER.
  let msg = '';
  try {
    mirrorWrite(a, 'DATA', new BufferSource(inc.buf));
  } catch (e) {
    msg = (e as Error).message;
  }
  t.match(msg, /is a MASTER: mirroring goes into a SLAVE/, 'a master is not written by a stream');

  // The good incremental stream.
  const w2 = mirrorWrite(b, 'SLAVE1', new BufferSource(inc.buf));
  t.ok(w2.stats.deleted >= 1, `deletions carried (${w2.stats.deleted})`);
  t.same(treeDiff(pfsTree(p), await imageTree(B.img, 'SLAVE1')), [], 'incremental stream: slave identical');
  // Applying the same stream twice is refused? No: the slave is at `to` and the stream starts before: applying again is harmless.
  // mirror-copy: no stream in between.
  for (let i = 0; i < 30; i++) p.unlink(dir, Buffer.from(`f${i + 100}`), tick());
  a.flush();
  const cp = mirrorCopy(a, 'DATA', b, 'SLAVE1');
  t.ok(cp.read.records > 0, `mirror-copy: ${cp.read.records} records`);
  t.same(treeDiff(pfsTree(p), await imageTree(B.img, 'SLAVE1')), [], 'mirror-copy: slave identical');
  b.flush();
  await fsckBoth(t, B.img, 'slave image');
  if (haveRef('makefs')) {
    // The reference makefs cannot mount a SLAVE offline (its cluster code
    // waits for a synchronizer it does not have): read a copy of the image
    // whose slave was upgraded to MASTER.
    const copyDir = tempDir(t);
    const upImg = path.join(copyDir, 'up.img');
    fs.copyFileSync(B.img, upImg);
    const up = await openRw(upImg);
    up.setPfsType('SLAVE1', PfsType.MASTER);
    up.close();
    const got = fileHashes(refRead(upImg, 'SLAVE1', copyDir));
    const want = [...pfsTree(p)].filter(([, v]) => v.startsWith(`${ObjType.REGFILE} `));
    t.equal(got.size, want.length, `the reference reads ${got.size} files from the slave`);
    t.same(want.filter(([k, v]) => got.get(k.slice(1)) !== v.split(' ').pop()).map(([k]) => k), [], 'each as the master holds it');
  }
  void FsError;
});

t.test('hammer2 mirror-read | hammer2 mirror-write through a pipe; mirror-copy; pfs-upgrade/downgrade', async (t) => {
  const A = await newImage(t, 256 << 20, ['DATA']);
  const B = await newImage(t, 256 << 20, ['none']);
  const a = await openRw(A.img);
  const p = a.pfs('DATA')!;
  for (let i = 0; i < 50; i++) mkfile(p, p.root, `f${i}`, content(i, 30000 + i));
  a.flush();
  a.close();
  const clid = (await runH2(['-s', `${A.img}@DATA`, 'pfs-clid', 'DATA'])).out.trim();
  let r = await runH2(['-s', B.img, '-t', 'SLAVE', '-u', clid, 'pfs-create', 'MIRROR']);
  t.equal(r.status, 0, `slave made: ${r.out}${r.err}`);
  const pipe = (cmd: string) => spawnSync('bash', ['-o', 'pipefail', '-c', cmd], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } });
  const h2 = `${process.execPath} ${H2_BIN}`;
  let x = pipe(`${h2} mirror-read ${A.img}@DATA | ${h2} mirror-write ${B.img}@MIRROR`);
  t.equal(x.status, 0, `first pass through a pipe: ${x.stdout}${x.stderr}`);
  t.match(x.stdout, /MIRROR: transaction 0 -> \d+/, 'mirror-write says what it did');
  t.same(treeDiff(await imageTree(A.img, 'DATA'), await imageTree(B.img, 'MIRROR')), [], 'slave identical');
  // An incremental pass needs the slave's tid: a stream from 0 is applied again harmlessly, one past it is refused.
  const a2 = await openRw(A.img);
  const p2 = a2.pfs('DATA')!;
  p2.unlink(p2.root, Buffer.from('f3'), tick());
  mkfile(p2, p2.root, 'later', content(77, 5000));
  a2.flush();
  a2.close();
  x = pipe(`${h2} mirror-read ${A.img}@DATA 999999 | ${h2} mirror-write ${B.img}@MIRROR`);
  t.not(x.status, 0, 'a stream from past the master refused');
  r = await runH2(['mirror-copy', `${A.img}@DATA`, `${B.img}@MIRROR`]);
  t.equal(r.status, 0, `mirror-copy: ${r.out}${r.err}`);
  t.same(treeDiff(await imageTree(A.img, 'DATA'), await imageTree(B.img, 'MIRROR')), [], 'slave identical after mirror-copy');
  r = await runH2(['mirror-copy', `${A.img}@DATA`, `${A.img}@DATA`]);
  t.equal(r.status, 1, 'mirroring into a MASTER is refused');
  t.match(r.err, /is a MASTER/);
  r = await runH2(['pfs-upgrade', `${B.img}@MIRROR`]);
  t.equal(r.status, 0, 'pfs-upgrade');
  r = await runH2(['mirror-copy', `${A.img}@DATA`, `${B.img}@MIRROR`]);
  t.equal(r.status, 1, 'an upgraded slave takes no more streams');
  r = await runH2(['pfs-downgrade', `${B.img}@MIRROR`]);
  t.equal(r.status, 0, 'pfs-downgrade');
  r = await runH2(['mirror-copy', `${A.img}@DATA`, `${B.img}@MIRROR`]);
  t.equal(r.status, 0, 'downgraded: streams again');
  await fsckBoth(t, B.img, 'slave image');
});

t.test('a mounted SLAVE is read-only to users until pfs-upgrade', async (t) => {
  const why = fuseUnavailable();
  if (why) return t.skip(why);
  const A = await newImage(t, 256 << 20, ['DATA']);
  const a = await openRw(A.img);
  const p = a.pfs('DATA')!;
  mkfile(p, p.root, 'hello', Buffer.from('from the master'));
  a.createPfs('SL', { type: PfsType.SLAVE, clid: a.dev.findPfs('DATA')!.inode.meta.pfsClid });
  a.flush();
  a.close();
  let r = await runH2(['mirror-copy', `${A.img}@DATA`, `${A.img}@SL`]);
  t.equal(r.status, 0, `mirror-copy into a slave on the same image: ${r.out}${r.err}`);
  r = await runH2(['pfs-status', A.img]);
  t.match(r.out, /SL\s+SLAVE\s+\S+\s+tid (\d+)\s+synchronized to \1, 0 behind DATA/, `pfs-status: ${r.out}`);
  const mnt = path.join(A.dir, 'mnt');
  let m = await mount(t, `${A.img}@SL`, mnt);
  t.equal(fs.readFileSync(path.join(mnt, 'hello'), 'utf8'), 'from the master', 'the slave reads');
  t.throws(() => fs.writeFileSync(path.join(mnt, 'x'), 'x'), { code: 'EROFS' }, 'writes get EROFS');
  await m.unmount();
  r = await runH2(['pfs-upgrade', `${A.img}@SL`]);
  t.equal(r.status, 0, 'upgraded');
  m = await mount(t, `${A.img}@SL`, mnt);
  fs.writeFileSync(path.join(mnt, 'x'), 'now a master');
  await m.unmount();
  t.ok((await imageTree(A.img, 'SL')).has('/x'), 'an upgraded slave takes writes');
});

t.test('mirror-read of a mounted master being written, with bulkfree running', async (t) => {
  const why = fuseUnavailable();
  if (why) return t.skip(why);
  const { A, B, mnt, m } = await mountedMasterAndSlave(t, []);
  for (let i = 0; i < 40; i++) fs.writeFileSync(path.join(mnt, `base${i}`), content(i, 100000));
  let stop = false;
  const writer = (async () => {
    for (let i = 0; !stop; i++) {
      await fs.promises.writeFile(path.join(mnt, `w${i % 30}`), content(1000 + i, 20000 + (i % 7) * 10000));
      if (i % 5 === 0) await fs.promises.rm(path.join(mnt, `w${(i + 11) % 30}`), { force: true });
    }
  })();
  const h2 = `${process.execPath} ${H2_BIN}`;
  const pipe = (cmd: string) =>
    new Promise<{ status: number | null; out: string }>((res) => {
      const p = spawn('bash', ['-o', 'pipefail', '-c', cmd], { env: { ...process.env, NODE_OPTIONS: '' } });
      let out = '';
      p.stdout.on('data', (d) => (out += d));
      p.stderr.on('data', (d) => (out += d));
      p.on('close', (status) => res({ status, out }));
    });
  const slaveTid = () => pfsTid(B.img, 'M');
  for (let pass = 0; pass < 3; pass++) {
    const since = pass === 0 ? 0n : await slaveTid();
    const bf = runH2(['bulkfree', mnt]);
    const x = await pipe(`${h2} mirror-read ${mnt} ${since} | ${h2} mirror-write ${B.img}@M`);
    t.equal(x.status, 0, `pass ${pass} while the master is written: ${x.out.trim()}`);
    const bfr = await bf;
    t.equal(bfr.status, 0, `bulkfree ran beside it: ${bfr.out}${bfr.err}`);
    const rc = await checkHammer2(B.img, { lock: false });
    t.equal(rc.report.errors, 0, `pass ${pass}: slave image clean`);
  }
  stop = true;
  await writer;
  const x = await pipe(`${h2} mirror-read ${mnt} ${await slaveTid()} | ${h2} mirror-write ${B.img}@M`);
  t.equal(x.status, 0, `last pass: ${x.out.trim()}`);
  await m.unmount();
  await slaveHoldsMaster(t, A.img, B.img, 'M', 'the slave holds the master exactly');
});

t.test('mirror-stream follows a mounted master until killed, and picks up after SIGKILL', async (t) => {
  const why = fuseUnavailable();
  if (why) return t.skip(why);
  const { A, B, mnt, m } = await mountedMasterAndSlave(t, ['-o', 'flush=1']);
  const start = () => {
    const p = spawn(process.execPath, [H2_BIN, '-b', '50m', 'mirror-stream', mnt, `${B.img}@M`], { env: { ...process.env, NODE_OPTIONS: '' } });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    const done = new Promise<number | null>((r) => p.on('exit', (c) => r(c)));
    return { p, out: () => out, done };
  };
  let s = start();
  t.teardown(() => s.p.kill('SIGKILL'));
  let stop = false;
  const writer = (async () => {
    for (let i = 0; !stop; i++) {
      await fs.promises.writeFile(path.join(mnt, `f${i % 40}`), content(i, 10000 + (i % 9) * 7000));
      if (i % 6 === 0) await fs.promises.rm(path.join(mnt, `f${(i + 17) % 40}`), { force: true });
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  // Until passes were made (a loaded machine may take its time), then the kill.
  await new Promise((r) => setTimeout(r, 1500));
  for (let i = 0; i < 300 && !/M: transaction \d+ -> \d+/.test(s.out()); i++) await new Promise((r) => setTimeout(r, 100));
  s.p.kill('SIGKILL');
  await s.done;
  t.match(s.out(), /M: transaction \d+ -> \d+/, 'passes were made before the kill');
  const rc = await checkHammer2(B.img, { lock: false });
  t.equal(rc.report.errors, 0, 'the slave is clean after SIGKILL of mirror-stream');
  s = start();
  await new Promise((r) => setTimeout(r, 1500));
  stop = true;
  await writer;
  // The master commits what is left (fsync), and the stream catches up within its poll.
  // (a file of its own: the writer may have removed any of its files)
  const fh = await fs.promises.open(path.join(mnt, 'last'), 'w');
  await fh.write('the last commit');
  await fh.sync();
  await fh.close();
  // Wait (bounded) until the slave holds the master's committed tid.
  const masterTid = async () => BigInt(JSON.parse((await runH2(['pfs-status', mnt, '--json'])).out)[0].pfs.find((x: { name: string }) => x.name === 'DATA').tid);
  const slaveAt = () => pfsTid(B.img, 'M');
  const target = await masterTid();
  for (let i = 0; i < 300 && (await slaveAt()) !== target; i++) await new Promise((r) => setTimeout(r, 200));
  t.equal(await slaveAt(), target, 'the stream reached the master tid');
  s.p.kill('SIGTERM');
  t.equal(await s.done, 0, 'mirror-stream ends cleanly on SIGTERM');
  await m.unmount();
  t.same(treeDiff(await imageTree(A.img, 'DATA'), await imageTree(B.img, 'M')), [], 'the slave caught up with the master');
  await fsckBoth(t, B.img, 'slave');
});

t.test('SIGKILL of mirror-write in the middle of a stream leaves the slave as it was', async (t) => {
  const { A, B } = await filledMasterAndSlave(t, 512 << 20, 60, 1 << 20);
  const before = await imageTree(B.img, 'M');
  // The writer dies while the stream is still coming.
  const w = spawn(process.execPath, [H2_BIN, 'mirror-write', `${B.img}@M`], { env: { ...process.env, NODE_OPTIONS: '' }, stdio: ['pipe', 'ignore', 'ignore'] });
  const rd = spawn(process.execPath, [H2_BIN, 'mirror-read', `${A.img}@DATA`], { env: { ...process.env, NODE_OPTIONS: '' }, stdio: ['ignore', 'pipe', 'ignore'] });
  rd.stdout.pipe(w.stdin);
  w.stdin.on('error', () => {});
  await new Promise((r) => setTimeout(r, 400));
  w.kill('SIGKILL');
  rd.kill('SIGKILL');
  await new Promise((r) => w.on('exit', r));
  const rc = await checkHammer2(B.img, { lock: false });
  t.equal(rc.report.errors, 0, 'the slave image is clean');
  const after = await imageTree(B.img, 'M');
  const complete = treeDiff(await imageTree(A.img, 'DATA'), after).length === 0;
  t.ok(complete || treeDiff(before, after).length === 0, `the slave is as it was${complete ? ' (or, here, the stream had completed)' : ''}`);
  // And the next pass completes.
  const r = await runH2(['mirror-copy', `${A.img}@DATA`, `${B.img}@M`]);
  t.equal(r.status, 0, `the next pass goes through: ${r.out}${r.err}`);
  t.same(treeDiff(await imageTree(A.img, 'DATA'), await imageTree(B.img, 'M')), [], 'identical');
});

t.test('mirror-write into a mounted slave: the daemon applies the stream and the mount shows it', async (t) => {
  const why = fuseUnavailable();
  if (why) return t.skip(why);
  const { A, B } = await filledMasterAndSlave(t, 256 << 20, 20, 20000);
  const mnt = path.join(B.dir, 'slave');
  const m = await mount(t, `${B.img}@M`, mnt);
  t.same(fs.readdirSync(mnt), [], 'the slave starts empty');
  const pipe = (cmd: string) => spawnSync('bash', ['-o', 'pipefail', '-c', cmd], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } });
  const h2 = `${process.execPath} ${H2_BIN}`;
  let x = pipe(`${h2} mirror-read ${A.img}@DATA | ${h2} mirror-write ${mnt}`);
  t.equal(x.status, 0, `into the mounted slave: ${x.stdout}${x.stderr}`);
  t.equal(fs.readdirSync(mnt).length, 20, 'the mount shows the files');
  t.ok(fs.readFileSync(path.join(mnt, 'f3')).equals(content(3, 20000)), 'with their contents');
  // A second pass changes and removes files the kernel has seen.
  const a2 = await openRw(A.img);
  const p2 = a2.pfs('DATA')!;
  p2.unlink(p2.root, Buffer.from('f3'), tick());
  p2.write(p2.resolve('/f4'), 0, Buffer.from('CHANGED'), tick());
  a2.flush();
  a2.close();
  const slaveTid = JSON.parse((await runH2(['pfs-status', `${B.img}@M`, '--json'])).out)[0].pfs.find((x: { name: string }) => x.name === 'M').tid;
  const old = pipe(`${h2} mirror-read ${A.img}@DATA > ${path.join(B.dir, 'old.stream')}`);
  t.equal(old.status, 0, 'a stream kept for later');
  x = pipe(`${h2} mirror-read ${A.img}@DATA ${slaveTid} | ${h2} mirror-write ${B.img}@M`);
  t.equal(x.status, 0, `incremental into the mounted slave by IMAGE@LABEL: ${x.stdout}${x.stderr}`);
  t.notOk(fs.existsSync(path.join(mnt, 'f3')), 'a removed file is gone from the mount');
  t.equal(fs.readFileSync(path.join(mnt, 'f4')).subarray(0, 7).toString(), 'CHANGED', 'a changed file reads new');
  // A stream refused while more bytes keep coming (here: trailing bytes after END): no hang.
  x = spawnSync('bash', ['-o', 'pipefail', '-c', `cat ${path.join(B.dir, 'old.stream')} ${path.join(B.dir, 'old.stream')} | ${h2} mirror-write ${mnt}`], {
    encoding: 'utf8',
    timeout: 60000,
    env: { ...process.env, NODE_OPTIONS: '' },
  });
  t.not(x.status, 0, `refused: ${x.stderr.trim()}`);
  t.notOk(x.error, 'without hanging');
  // A bad stream through the daemon: refused, the mount unchanged.
  x = pipe(`echo garbage | ${h2} mirror-write ${mnt}`);
  t.equal(x.status, 1, 'garbage refused');
  t.match(x.stderr, /not a HAMMER2 mirror stream/, 'with the reason');
  t.equal(fs.readdirSync(mnt).length, 19, 'the mount is as it was');
  await m.unmount();
  t.same(treeDiff(await imageTree(A.img, 'DATA'), await imageTree(B.img, 'M')), [], 'the slave holds the master');
  await fsckBoth(t, B.img, 'slave');
});

t.test('mirror-write through a daemon whose sender died before opening the FIFO: refused, no hang', async (t) => {
  const why = fuseUnavailable();
  if (why) return t.skip(why);
  const { A, B } = await filledMasterAndSlave(t, 256 << 20, 3, 5000);
  const mnt = path.join(B.dir, 'slave');
  process.env.HAMMER2_FIFO_WAIT_MS = '1500';
  t.teardown(() => delete process.env.HAMMER2_FIFO_WAIT_MS);
  const m = await mount(t, `${B.img}@M`, mnt);
  // What a command killed between its request and opening its end leaves: a FIFO nobody writes.
  const fifo = path.join(B.dir, 'stream');
  t.equal(spawnSync('mkfifo', [fifo]).status, 0);
  const [sock] = findSockets(B.img);
  const c = await ControlClient.connect(sock);
  t.teardown(() => c.close());
  const t0 = Date.now();
  await t.rejects(c.request('mirror-write', { label: 'M', fifo }), /no stream came/, 'refused, saying why');
  t.ok(Date.now() - t0 < 20000, `after the wait (${Date.now() - t0} ms)`);
  t.same(fs.readdirSync(mnt), [], 'the slave is as it was');
  const h2 = `${process.execPath} ${H2_BIN}`;
  const x = spawnSync('bash', ['-o', 'pipefail', '-c', `${h2} mirror-read ${A.img}@DATA | ${h2} mirror-write ${mnt}`], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } });
  t.equal(x.status, 0, `the daemon takes the next stream: ${x.stderr}`);
  t.equal(fs.readdirSync(mnt).length, 3);
  await m.unmount();
});
