// Sealing ahead (engine/writer.ts sealAhead, the shim's seal thread): what
// a commit stores for a whole data block whose zero test, compression and
// check were worked out on the shim's thread must be exactly what it would
// have worked out itself, and a block whose bytes change after it was
// sealed must be stored as it is now.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { BlockWriter, CompHeuristic, FreemapAllocator, sealAhead, unseal } from '../src/engine';
import { Hammer2Fs } from '../src/fs';
import { accel } from '../src/media/accel';
import { Blockref, CheckMethod, CompMethod, decodeData, initCodecs, ObjType, verifyCheck } from '../src/media';
import { formatHammer2 } from '../mkfs/newfs';
import * as path from 'node:path';
import { tempDir } from './lib/env';

process.env.HAMMER2_QUIET_SHIM = '1';
const B = 65536;
const noShim = accel?.sealStart ? false : 'the native shim has no seal thread';

/** A BlockWriter over memory: what it would write, by offset. */
function memWriter(): { w: BlockWriter; media: Map<number, Uint8Array> } {
  const media = new Map<number, Uint8Array>();
  let next = 0;
  const vols = { writeQueued: (off: number, b: Uint8Array) => media.set(off, Buffer.from(b)) };
  const reader = { invalidate: () => {}, seed: () => {} };
  const alloc = { alloc: (bytes: number) => ((next += B), next - B + (B - bytes)), freeBytes: () => 1e12 };
  return { w: new BlockWriter(vols as never, reader as never, alloc as never), media };
}

function stored(media: Map<number, Uint8Array>, b: Blockref | null): Buffer | null {
  if (!b) return null;
  return Buffer.from(media.get(Number(b.dataOff & ~63n))!);
}

function text(n: number): Buffer {
  const s = Array.from({ length: 2000 }, (_, i) => `line ${i} of a log, status ${i % 7}\n`).join('');
  return Buffer.from(s.repeat(Math.ceil(n / s.length)).slice(0, n));
}

t.before(() => initCodecs());

/** Seal `blocks` and wait until the thread has done them all, so that what is compared is the thread's work. */
async function sealAndWait(blocks: [Buffer, bigint][], comp: number, check: number, heur?: CompHeuristic): Promise<void> {
  const jobs: object[] = [];
  const start = accel!.sealStart!;
  // Catch the jobs sealAhead starts, to wait on them.
  (accel as { sealStart: typeof start }).sealStart = (...a) => {
    const j = start(...a);
    if (j) jobs.push(j);
    return j;
  };
  try {
    for (const [blk, lbase] of blocks) sealAhead(blk, lbase, comp, check, heur);
  } finally {
    (accel as { sealStart: typeof start }).sealStart = start;
  }
  const deadline = Date.now() + 30_000;
  while (jobs.some((j) => accel!.sealPending!(j))) {
    if (Date.now() > deadline) throw new Error('the seal thread did not finish');
    await new Promise((r) => setTimeout(r, 2));
  }
}

t.test('a sealed block is stored exactly as an unsealed one', { skip: noShim }, async (t) => {
  const blocks: [string, Buffer][] = [
    ['zeros', Buffer.alloc(B)],
    ['text', text(B)],
    ['random', randomBytes(B)],
    ['half compressible', Buffer.concat([randomBytes(30000), Buffer.alloc(B - 30000, 3)])],
    ['zero but the last byte', Buffer.concat([Buffer.alloc(B - 1), Buffer.from([1])])],
  ];
  const comps = [CompMethod.NONE, CompMethod.AUTOZERO, CompMethod.LZ4, CompMethod.LZ4 | (5 << 4)];
  const checks = [CheckMethod.NONE, CheckMethod.DISABLED, CheckMethod.ISCSI32, CheckMethod.XXHASH64];
  let compared = 0;
  for (const [name, data] of blocks) {
    for (const comp of comps) {
      for (const check of checks) {
        const a = memWriter();
        const b = memWriter();
        const blk = Buffer.from(data);
        await sealAndWait([[blk, 0n]], comp, check, { n: 0 });
        const ra = a.w.writeData(0n, blk, comp, check, { n: 0 });
        const rb = b.w.writeData(0n, Buffer.from(data), comp, check, { n: 0 });
        const what = `${name}, comp ${comp}, check ${check}`;
        t.equal(ra === null, rb === null, `${what}: hole or not`);
        if (ra && rb) {
          t.equal(ra.methods, rb.methods, `${what}: methods`);
          t.ok(ra.check.equals(rb.check), `${what}: check field`);
          t.equal(ra.dataOff & 63n, rb.dataOff & 63n, `${what}: physical size`);
          const sa = stored(a.media, ra)!;
          t.ok(sa.equals(stored(b.media, rb)!), `${what}: stored bytes`);
          t.ok(verifyCheck(check, ra.check, sa), `${what}: the check verifies`);
          const back = Buffer.alloc(B);
          decodeData(ra.methods & 15, sa, back);
          t.ok(back.equals(data), `${what}: decodes to the block`);
        }
        compared++;
      }
    }
  }
  t.equal(compared, blocks.length * comps.length * checks.length);
});

t.test('the compression heuristic backs off on incompressible data and comes back', { skip: noShim }, async (t) => {
  const a = memWriter();
  const b = memWriter();
  const ha: CompHeuristic = { n: 0 };
  const start = accel!.sealStart!;
  let tries = 0;
  (accel as { sealStart: typeof start }).sealStart = (blk, zero, lz4, check) => ((tries += lz4 ? 1 : 0), start(blk, zero, lz4, check));
  t.teardown(() => void ((accel as { sealStart: typeof start }).sealStart = start));
  /** Block `i` of the file: sealed, then written by the commit. */
  const sealed = async (i: number, data: Buffer) => {
    const lbase = BigInt(i) * BigInt(B);
    const blk = Buffer.from(data);
    await sealAndWait([[blk, lbase]], CompMethod.LZ4, CheckMethod.XXHASH64, ha);
    return { lbase, r: a.w.writeData(lbase, blk, CompMethod.LZ4, CheckMethod.XXHASH64, ha)! };
  };
  // Incompressible blocks: stored as the commit would, and after 8 of them
  // only every 8th is tried (past the count's wrap at 128 too).
  for (let i = 0; i < 260; i++) {
    const data = randomBytes(B);
    const { lbase, r: ra } = await sealed(i, data);
    const rb = b.w.writeData(lbase, Buffer.from(data), CompMethod.LZ4, CheckMethod.XXHASH64, { n: 0 })!;
    if (ra.methods !== rb.methods || !ra.check.equals(rb.check)) t.fail(`block ${i}: stored differently`);
    if (i >= 8 && ha.n < 8) t.fail(`block ${i}: the heuristic did not back off (${ha.n})`);
  }
  t.ok(tries <= 8 + Math.ceil(252 / 8), `${tries} of 260 incompressible blocks tried`);
  // Compressible data: found within 8 blocks, then every block is tried and compressed.
  let first = -1;
  for (let i = 260; i < 280; i++) {
    const data = text(B);
    const { r } = await sealed(i, data);
    const back = Buffer.alloc(B);
    decodeData(r.methods & 15, stored(a.media, r)!, back);
    if (!back.equals(data)) t.fail(`block ${i} does not decode`);
    if ((r.methods & 15) === CompMethod.LZ4 && first < 0) first = i;
    if (first >= 0 && (r.methods & 15) !== CompMethod.LZ4) t.fail(`block ${i} not compressed after ${first}`);
  }
  t.ok(first >= 260 && first < 268, `compressible data found at block ${first}`);
  t.equal(ha.n, 0, 'and the heuristic reset');
});

t.test('a block changed after it was sealed is stored as it is now', { skip: noShim }, async (t) => {
  const a = memWriter();
  const blk = text(B);
  await sealAndWait([[blk, 0n]], CompMethod.LZ4, CheckMethod.XXHASH64);
  unseal(blk);
  blk.write('changed after sealing', 1000);
  const r = a.w.writeData(0n, blk, CompMethod.LZ4, CheckMethod.XXHASH64, { n: 0 })!;
  const back = Buffer.alloc(B);
  const s = stored(a.media, r)!;
  t.ok(verifyCheck(CheckMethod.XXHASH64, r.check, s), 'the check is of the new bytes');
  decodeData(r.methods & 15, s, back);
  t.ok(back.equals(blk), 'the new bytes are stored');
  // Methods changed after sealing (setcomp, setcheck): the seal is not used.
  const blk2 = text(B);
  await sealAndWait([[blk2, 0n]], CompMethod.LZ4, CheckMethod.XXHASH64);
  const r2 = a.w.writeData(0n, blk2, CompMethod.NONE, CheckMethod.SHA192, { n: 0 })!;
  t.equal(r2.methods, (CheckMethod.SHA192 << 4) | CompMethod.NONE, 'the methods asked for at the commit');
  t.ok(verifyCheck(CheckMethod.SHA192, r2.check, stored(a.media, r2)!), 'a sha192 check');
});

t.test('a seal job is taken once; unused ones are dropped', { skip: noShim }, async (t) => {
  const job = accel!.sealStart!(text(B), true, true, 3);
  const out = Buffer.alloc(8);
  t.type(accel!.sealResult!(job, out), Buffer);
  t.throws(() => accel!.sealResult!(job, out), /already taken/);
  t.throws(() => accel!.sealStart!(text(B), true, true, 4 as never), /sealStart/);
  t.throws(() => accel!.sealResult!({}, out), /sealResult/, 'only its own jobs');
  t.throws(() => accel!.sealCancel!(Buffer.alloc(8)), /sealCancel/);
  // A cancelled job gives nothing.
  const c = accel!.sealStart!(text(B), true, true, 3)!;
  accel!.sealCancel!(c);
  t.throws(() => accel!.sealResult!(c, out), /already taken/);
});

t.test('blocks of finished jobs are not kept alive by the jobs', { skip: noShim }, async (t) => {
  // In a process of its own, to collect garbage on demand: 2,000 jobs whose
  // results nobody takes (a block overwritten before its commit) stay
  // referenced; once the thread is done and the jobs drained, their
  // 125 MiB of blocks must be collectable. Jobs nobody holds are collected
  // too, queued or not, without crashing.
  const shim = require.resolve('../native-shim/build/Release/hammer2_shim.node');
  const script = `
    const m = require(${JSON.stringify(shim)});
    const jobs = [];
    for (let i = 0; i < 2000; i++) jobs.push(m.sealStart(Buffer.alloc(65536, i & 255), true, true, 3));
    const out = Buffer.alloc(8);
    m.sealResult(jobs[1999], out);
    for (let i = 0; i < 2000; i++) m.sealStart(Buffer.alloc(65536, 1), true, true, 3); // dropped at once
    // The thread may still be busy with the dropped ones on a loaded machine: look again until it is done.
    const deadline = Date.now() + 30000;
    const look = () => {
      m.sealDrain();
      gc();
      const held = process.memoryUsage().arrayBuffers;
      if (held < 32 * 2 ** 20 || Date.now() > deadline) console.log(JSON.stringify({ held, alive: jobs.length }));
      else setTimeout(look, 100);
    };
    setTimeout(look, 100);
  `;
  const r = spawnSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8', timeout: 60_000 });
  t.equal(r.status, 0, r.stderr);
  const o = JSON.parse(r.stdout.trim());
  t.equal(o.alive, 2000, 'the jobs are still held');
  t.ok(o.held < 32 * 2 ** 20, `their blocks are not: ${Math.round(o.held / 2 ** 20)} MiB held`);
});

t.test('writes into sealed blocks, truncation and setcomp before a commit read back through the checks', async (t) => {
  const dir = tempDir(t, 'h2seal-');
  const img = path.join(dir, 'a.img');
  await formatHammer2({ paths: [img], sizes: [256 * 2 ** 20] });
  const open = (writable: boolean) =>
    Hammer2Fs.open(img, { writable, lock: false, allocator: writable ? (d) => new FreemapAllocator(d.vols, d.reader, d.header) : undefined });
  let h2 = await open(true);
  let pfs = h2.pfs('DATA')!;
  const cred = { uid: 0, gid: 0 };
  const now = 1_700_000_000_000_000n;
  const want = new Map<string, Buffer>();
  const file = (name: string, data: Buffer) => {
    const f = pfs.create(pfs.root, Buffer.from(name), ObjType.REGFILE, 0o644, cred, now);
    pfs.write(f, 0, Buffer.from(data), now);
    return f;
  };
  // Count the seals the commit takes.
  const result = accel?.sealResult;
  let used = 0;
  if (result) {
    (accel as { sealResult: typeof result }).sealResult = (...x) => (used++, result(...x));
    t.teardown(() => void ((accel as { sealResult: typeof result }).sealResult = result));
  }
  // Whole blocks adopted (and sealed), then changed in place before the
  // commit, after the thread is done with them (a change it did not see).
  const a = Buffer.concat([text(8 * B), randomBytes(8 * B)]);
  const fa = file('a', a);
  await new Promise((r) => setTimeout(r, 300));
  const patch = Buffer.from('patched inside a sealed block');
  pfs.write(fa, 3 * B + 100, patch, now);
  patch.copy(a, 3 * B + 100);
  pfs.write(fa, 12 * B - 5, patch, now);
  patch.copy(a, 12 * B - 5);
  want.set('a', a);
  // Cut into a sealed block: the block at EOF is shorter and its tail zero.
  const b = text(6 * B);
  const fb = file('b', b);
  pfs.truncate(fb, BigInt(4 * B + 1000), now);
  pfs.truncate(fb, BigInt(5 * B), now);
  want.set('b', Buffer.concat([b.subarray(0, 4 * B + 1000), Buffer.alloc(B - 1000)]));
  // Methods changed after the blocks were sealed.
  const c = text(4 * B);
  const fc = file('c', c);
  pfs.setMethods(fc, { comp: CompMethod.ZLIB | (6 << 4), check: CheckMethod.SHA192 });
  want.set('c', c);
  // Holes punched with edges inside sealed blocks.
  const e = Buffer.concat([text(2 * B), randomBytes(2 * B)]);
  const fe = file('e', e);
  await new Promise((r) => setTimeout(r, 100));
  pfs.zeroRange(fe, 100n, BigInt(2 * B + 50), now);
  e.fill(0, 100, 2 * B + 50);
  want.set('e', e);
  // Whole zero blocks become holes.
  const d = Buffer.concat([Buffer.alloc(2 * B), text(B)]);
  file('d', d);
  want.set('d', d);
  h2.flush();
  if (result) t.ok(used >= 20, `the commit took ${used} sealed blocks`);
  h2.close();
  h2 = await open(false);
  pfs = h2.pfs('DATA')!;
  for (const [name, data] of want) {
    const n = pfs.resolve(name);
    t.ok(pfs.read(n, 0, data.length + 10).equals(data), `${name} reads back through its checks`);
  }
  h2.close();
});
