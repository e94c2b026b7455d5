// A mounted master's daemon streams a pass itself (src/mirror: the walk in
// batches, mirrorReadBatches, written by pumpSliced into the command's
// FIFO in slices). In process: the batches are the stream mirrorRead
// writes; the pump keeps to a full reader, a bandwidth limit, and reports a
// failing walk or a reader gone. Through a daemon: the stream of `hammer2
// mirror-read MOUNT` applies; a reader that goes away mid-stream leaves
// the daemon serving with nothing pinned, and the next pass goes through.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import t from 'tap';
import { ObjType } from '../src/media';
import { mirrorRead, mirrorReadBatches, mirrorWrite, BufferSource, pumpSliced } from '../src/mirror';
import { H2_BIN, runH2 } from './lib/cli';
import { fuseUnavailable } from './lib/env';
import { mountedMasterAndSlave, openMasterAndSlave } from './lib/mirror';
import { content, imageTree, mkfile, pfsTid, tick, treeDiff } from './lib/pfstree';

process.env.HAMMER2_QUIET_SHIM = '1';
const cred = { uid: 0, gid: 0 };

async function masterWithFiles(t: Parameters<typeof openMasterAndSlave>[0], n: number) {
  const o = await openMasterAndSlave(t, 'S');
  const d = o.p.create(o.p.root, Buffer.from('d'), ObjType.DIRECTORY, 0o755, cred, tick());
  for (let i = 0; i < n; i++) mkfile(o.p, d, `f${i}`, content(i, 100 + ((i * 131) % 5000)));
  o.a.flush();
  return o;
}

const batchesOf = (a: Awaited<ReturnType<typeof masterWithFiles>>['a'], since: bigint) => {
  const e = a.dev.findPfs('DATA')!;
  return mirrorReadBatches(a.dev.reader, e.inode, e.bref.modifyTid, 'DATA', since);
};

t.test('the batches are the stream mirrorRead writes, and apply', async (t) => {
  const { a, b, p } = await masterWithFiles(t, 800);
  // A large file: its table of 64 KiB blocks must not come out as one batch.
  mkfile(p, p.root, 'big', content(99, 12 << 20));
  a.flush();
  const whole: Buffer[] = [];
  const r = mirrorRead(a, 'DATA', 0n, (x) => whole.push(Buffer.from(x)));
  const s = batchesOf(a, 0n);
  const got: Buffer[] = [];
  let batches = 0;
  let largest = 0;
  for (const batch of s.batches) {
    batches++;
    got.push(...batch);
    largest = Math.max(largest, batch.reduce((n, x) => n + x.length, 0));
  }
  t.ok(largest <= (1 << 20) + 70000, `no batch over ~1 MiB (largest ${largest} bytes)`);
  t.ok(Buffer.concat(got).equals(Buffer.concat(whole)), 'byte for byte');
  t.ok(batches > 3, `in ${batches} batches`);
  t.same(s.stats, r.stats, 'the same counts');
  const w = mirrorWrite(b, 'S', new BufferSource(Buffer.concat(got)));
  t.equal(w.header.to, r.header.to, 'applied');
  t.throws(() => batchesOf(a, r.header.to + 5n), /before/, 'a since after the state is refused at once');
});

/** A writable that takes `chunk` bytes every `ms` (a slow reader), with a small buffer. */
function slowSink(ms: number): { sink: Writable; got: Buffer[] } {
  const got: Buffer[] = [];
  const sink = new Writable({
    highWaterMark: 16 << 10,
    write(c: Buffer, _e, cb) {
      got.push(Buffer.from(c));
      setTimeout(cb, ms);
    },
  });
  return { sink, got };
}

t.test('pumpSliced: waits for a slow reader, keeps the event loop turning, ends the stream', async (t) => {
  const { a } = await masterWithFiles(t, 1500);
  const whole: Buffer[] = [];
  mirrorRead(a, 'DATA', 0n, (x) => whole.push(Buffer.from(x)));
  const { sink, got } = slowSink(2);
  let ticks = 0;
  const ticker = setInterval(() => ticks++, 1);
  const bytes = await pumpSliced(batchesOf(a, 0n).batches, sink, { sliceMs: 2 });
  clearInterval(ticker);
  t.equal(bytes, Buffer.concat(whole).length, 'every byte counted');
  t.ok(Buffer.concat(got).equals(Buffer.concat(whole)), 'every byte arrived, in order');
  t.ok(sink.writableFinished, 'ended');
  t.ok(ticks > 5, `timers ran meanwhile (${ticks})`);
});

t.test('pumpSliced: a bandwidth limit', async (t) => {
  const { a } = await masterWithFiles(t, 300);
  const sink = new PassThrough();
  sink.resume();
  const t0 = Date.now();
  const bytes = await pumpSliced(batchesOf(a, 0n).batches, sink, { bandwidth: 2 << 20 });
  const ms = Date.now() - t0;
  t.ok(ms >= ((bytes / (2 << 20)) * 1000) * 0.8, `${bytes} bytes at 2 MiB/s took ${ms} ms`);
});

t.test('pumpSliced: a walk that fails, a reader that fails or stalls', async (t) => {
  const { a } = await masterWithFiles(t, 300);
  function* failing(): Generator<Buffer[], void, undefined> {
    yield [Buffer.from('start')];
    throw new Error('bad block');
  }
  await t.rejects(pumpSliced(failing(), new PassThrough().resume()), /bad block/, 'the walk error comes out');
  const broken = new Writable({
    highWaterMark: 1024,
    write(_c, _e, cb) {
      cb(Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }));
    },
  });
  await t.rejects(pumpSliced(batchesOf(a, 0n).batches, broken), /EPIPE/, 'a reader gone');
  const stuck = new Writable({ highWaterMark: 1024, write() {} });
  await t.rejects(pumpSliced(batchesOf(a, 0n).batches, stuck, { stallMs: 200 }), /took nothing in/, 'a reader that takes nothing');
});

t.test('through a daemon: mirror-read MOUNT streams from the daemon; a reader gone mid-stream leaves it serving', async (t) => {
  const why = fuseUnavailable();
  if (why) return t.skip(why);
  const { A, B, mnt, m } = await mountedMasterAndSlave(t, []);
  for (let i = 0; i < 300; i++) fs.writeFileSync(path.join(mnt, `f${i}`), content(i, 30000 + i));
  const h2 = `${process.execPath} ${H2_BIN}`;
  const env = { ...process.env, NODE_OPTIONS: '' };
  const sh = (cmd: string) =>
    new Promise<{ status: number | null; out: string; err: string }>((res) => {
      const p = spawn('bash', ['-o', 'pipefail', '-c', cmd], { env });
      let out = '';
      let err = '';
      p.stdout.on('data', (d) => (out += d));
      p.stderr.on('data', (d) => (err += d));
      p.on('close', (status) => res({ status, out, err }));
    });
  // A reader whose output goes away after 100 KiB of a ~9 MiB stream.
  const cut = await sh(`${h2} mirror-read ${mnt} | head -c 100000 > /dev/null`);
  t.not(cut.status, 0, 'the cut reader fails');
  t.match(cut.err, /went away|broken pipe/i, `saying why: ${cut.err.trim()}`);
  const st = await runH2(['info', mnt]);
  t.equal(st.status, 0, 'the daemon still answers');
  // Nothing pinned is left: a pass now, with the daemon's own stream, applies.
  const x = await sh(`${h2} -v mirror-read ${mnt} | ${h2} mirror-write ${B.img}@M`);
  t.equal(x.status, 0, `a full pass: ${x.out.trim()} ${x.err.trim()}`);
  t.match(x.err, /records/, 'the reader says what it sent (-v)');
  for (let i = 0; i < 20; i++) fs.writeFileSync(path.join(mnt, `f${i * 7}`), content(5000 + i, 1000));
  fs.rmSync(path.join(mnt, 'f1'));
  const y = await sh(`${h2} mirror-read ${mnt} ${await pfsTid(B.img, 'M')} | ${h2} mirror-write ${B.img}@M`);
  t.equal(y.status, 0, `an incremental pass: ${y.out.trim()} ${y.err.trim()}`);
  t.match(m.log(), /mirror-read of DATA: transaction \d+ -> \d+/, 'the daemon streamed the passes itself');
  await m.unmount();
  t.same(treeDiff(await imageTree(A.img, 'DATA'), await imageTree(B.img, 'M')), [], 'the slave holds the master');
  t.notMatch(m.log(), /uncaught|TypeError|RangeError/, 'nothing unexpected in the daemon log');
});
