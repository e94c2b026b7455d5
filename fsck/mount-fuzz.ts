// Hostile images against the mount (npm run mount-fuzz; a short run is in
// npm test). Reference-made fixture images are damaged at random: byte
// flips in every kind of block (volume header, freemap, inodes, indirect
// blocks, directory entries, data), forged blockrefs and inodes with their
// check codes re-sealed so the garbage reaches the decoders (huge keybits,
// data offsets past the end, a block that references itself or its parent,
// unknown types, a compression method on raw data, absurd inode sizes, a
// directory entry that makes a cycle). Each damaged image is mounted
// read-only or read-write and walked whole by a separate process, every
// request timed. Passing means:
//  - the daemon never dies and never stops answering (no request takes
//    longer than the limit), and its peak RSS stays under the bound;
//  - a file read whole either matches the manifest or fails with EIO, where
//    the damage cannot pass a check code (flips on images with checks);
//  - an image that cannot be mounted is refused with a message;
//  - a read-write mount, written to, leaves our fsck's verdict no worse.
//
//   node dist/fsck/mount-fuzz.js [--iterations N] [--seed S] [--images basic,zlib,...] [--keep DIR]
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { decodeBlockref, decodeInode, encodeBlockref, encodeInode } from '../src/media';
import { checkHammer2 } from './check';
import { mounted, MOUNT, REPO, waitFor } from './crash-lib';
import { brefsIn, FORGES, mapImage, MapBlock, Mutator, randomFlip, randomForge, rng } from './fuzz';

export interface MountFuzzOptions {
  images: string[];
  iterations: number;
  seed: number;
  dir: string;
  /** A request that takes longer than this is a hang (ms). */
  requestMs?: number;
  /** Daemon peak RSS bound (MiB). */
  rssMiB?: number;
  log?: (line: string) => void;
}

export interface MountFuzzResult {
  runs: number;
  refused: number;
  eio: number;
  peakRssMiB: number;
  slowestMs: number;
  failures: string[];
}

const FIXTURES = path.resolve(REPO, '..', 'shared', 'fixtures');

interface Manifest {
  hammer2: { check?: string };
  entries: { pfs: string; path: string; type: string; size?: number; sha256?: string }[];
}

// ------------------------------------------------------------- forging

const BREF = 128;

/** Forged blockrefs and inodes (check codes re-sealed up to the header). */
const MOUNT_FORGES: Record<string, (m: Mutator, r: () => number) => string | null> = {
  'keybits-huge': (m, r) => editBref(m, r, () => true, (b) => void (b.keybits = 64 + Math.floor(r() * 190))),
  'offset-past-end': (m, r) => editBref(m, r, () => true, (b) => void (b.dataOff = ((BigInt(fs.fstatSync(m.fd).size) * 4n) & ~0x3fn) | (b.dataOff & 0x3fn))),
  'self-reference': (m, r) =>
    editBref(m, r, (x) => m.blocks[x.holder].kind === 'indirect', (b, x) => {
      const h = m.blocks[x.holder];
      b.dataOff = BigInt(h.off) | BigInt(Math.log2(h.bytes));
    }),
  'parent-reference': (m, r) =>
    editBref(m, r, (x) => m.blocks[x.holder].parent >= 0, (b, x) => {
      const p = m.blocks[m.blocks[x.holder].parent];
      b.dataOff = BigInt(p.off) | BigInt(Math.log2(p.bytes));
      b.type = 2; // an indirect block: the walk would go round
    }),
  'unknown-type': (m, r) => editBref(m, r, () => true, (b) => void (b.type = 7 + Math.floor(r() * 200))),
  'comp-on-raw': (m, r) => editBref(m, r, (x) => x.type === 3, (b) => void (b.methods = (b.methods & 0xf0) | (r() < 0.5 ? 2 : 3))),
  'dir-cycle': (m, r) =>
    editBref(m, r, (x) => x.type === 4, (b) => {
      b.embed.writeBigUInt64LE(1n, 0); // the PFS root's inode number
      b.embed[10] = 1; // a directory
    }),
  'size-huge': (m, r) => {
    const inodes = m.blocks.map((b, i) => [b, i] as [MapBlock, number]).filter(([b]) => b.kind === 'inode' && b.zone === m.blocks[0].zone && b.key > 1n);
    if (!inodes.length) return null;
    const [blk, i] = inodes[Math.floor(r() * inodes.length)];
    const ip = decodeInode(m.read(blk.off, 1024));
    ip.meta.size = 1n << BigInt(40 + Math.floor(r() * 23));
    m.write(blk.off, encodeInode(ip));
    m.reseal(i);
    return `inode 0x${blk.key.toString(16)} size ${ip.meta.size}`;
  },
};

function editBref(m: Mutator, r: () => number, pick: (x: ReturnType<typeof brefsIn>[number]) => boolean, edit: (b: ReturnType<typeof decodeBlockref>, x: ReturnType<typeof brefsIn>[number]) => void): string | null {
  const all = brefsIn(m).filter(pick);
  if (!all.length) return null;
  const x = all[Math.floor(r() * all.length)];
  const raw = m.read(x.loc, BREF);
  const b = decodeBlockref(raw, 0);
  edit(b, x);
  encodeBlockref(b, raw, 0);
  m.write(x.loc, raw);
  m.reseal(x.holder);
  return `bref@0x${x.loc.toString(16)} (key 0x${x.key.toString(16)})`;
}

/** Damage the image: 1..3 flips, forges or targeted forges. Whether a check code can still catch it. */
function damage(m: Mutator, r: () => number): { what: string[]; detectable: boolean } {
  const what: string[] = [];
  let detectable = true;
  const n = 1 + Math.floor(r() * 3);
  for (let i = 0; i < n; i++) {
    const k = r();
    let d: string | null;
    if (k < 0.45) {
      const target = (['metadata', 'header', 'data', 'freemap', 'metadata'] as const)[Math.floor(r() * 5)];
      d = randomFlip(m, r, target);
    } else if (k < 0.6) {
      d = randomForge(m, r);
      if (d) detectable = false;
    } else if (k < 0.7) {
      const names = Object.keys(FORGES);
      const name = names[Math.floor(r() * names.length)];
      const f = FORGES[name](m, r);
      d = f ? `${name}: ${f.what}` : null;
      if (d) detectable = false;
    } else {
      const names = Object.keys(MOUNT_FORGES);
      const name = names[Math.floor(r() * names.length)];
      const f = MOUNT_FORGES[name](m, r);
      d = f ? `${name}: ${f}` : null;
      if (d) detectable = false;
    }
    if (d) what.push(d);
  }
  return { what, detectable };
}

// ------------------------------------------------------------- the walker (its own process)

/**
 * Walk a mounted tree: readdir, lstat, readlink, read every file whole (at
 * most `cap` bytes), one JSON line per request with its time. A separate
 * process, so that a request that never returns cannot stop the harness.
 */
async function walker(root: string, cap: number, write: boolean): Promise<void> {
  const out = (o: object) => process.stdout.write(JSON.stringify(o) + '\n');
  const seenDirs = new Set<string>();
  const timed = async <T>(op: string, p: string, f: () => Promise<T>): Promise<T | null> => {
    const t0 = Date.now();
    try {
      const v = await f();
      out({ op, p, ms: Date.now() - t0 });
      return v;
    } catch (e) {
      out({ op, p, ms: Date.now() - t0, err: (e as NodeJS.ErrnoException).code ?? String(e) });
      return null;
    }
  };
  const walk = async (rel: string, depth: number) => {
    const abs = path.join(root, rel);
    const st = await timed('lstat', rel, () => fs.promises.lstat(abs, { bigint: true }));
    if (!st) return;
    if (st.isDirectory()) {
      // A directory met again (a forged cycle) or absurdly deep is not entered twice.
      const id = `${st.ino}`;
      if (seenDirs.has(id) || depth > 64) return;
      seenDirs.add(id);
      const names = await timed('readdir', rel, () => fs.promises.readdir(abs));
      for (const n of names ?? []) await walk(path.join(rel, n), depth + 1);
    } else if (st.isSymbolicLink()) {
      await timed('readlink', rel, () => fs.promises.readlink(abs));
    } else if (st.isFile()) {
      const t0 = Date.now();
      const h = createHash('sha256');
      let fh: fs.promises.FileHandle | null = null;
      try {
        fh = await fs.promises.open(abs, 'r');
        const buf = Buffer.alloc(1 << 20);
        let at = 0;
        for (;;) {
          const c0 = Date.now();
          const { bytesRead } = await fh.read(buf, 0, buf.length, at);
          out({ op: 'read', p: rel, ms: Date.now() - c0, at });
          if (!bytesRead) break;
          h.update(buf.subarray(0, bytesRead));
          at += bytesRead;
          if (at >= cap) break;
        }
        out({ op: 'file', p: rel, ms: Date.now() - t0, sha256: at >= cap ? null : h.digest('hex'), bytes: at });
      } catch (e) {
        out({ op: 'file', p: rel, ms: Date.now() - t0, err: (e as NodeJS.ErrnoException).code ?? String(e) });
      } finally {
        await fh?.close().catch(() => {});
      }
    }
  };
  await walk('.', 0);
  if (write) {
    // A read-write mount is written to: new files, a removal, fsync.
    for (let i = 0; i < 3; i++) await timed('write', `fuzz-new-${i}`, () => fs.promises.writeFile(path.join(root, `fuzz-new-${i}`), Buffer.alloc(70000 + i, i + 1)));
    await timed('unlink', 'fuzz-new-0', () => fs.promises.unlink(path.join(root, 'fuzz-new-0')));
    await timed('fsync', 'fuzz-new-1', async () => {
      const fh = await fs.promises.open(path.join(root, 'fuzz-new-1'), 'r+');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    });
  }
  await timed('statfs-root', '.', () => fs.promises.stat(root));
}

// ------------------------------------------------------------- the harness

/** The daemon's peak RSS in MiB (VmHWM), or 0 when it is gone. */
function peakRss(pid: number): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

async function fsckErrors(img: string): Promise<number> {
  const r = await checkHammer2(img, { lock: false });
  return r.fatal ? Number.MAX_SAFE_INTEGER : r.report.errors;
}

interface Run {
  ok: boolean;
  problems: string[];
  refused: boolean;
  eio: number;
  rss: number;
  slowest: number;
}

async function oneRun(img: string, manifest: Manifest, damageDesc: { what: string[]; detectable: boolean }, rw: boolean, o: Required<Pick<MountFuzzOptions, 'requestMs' | 'rssMiB'>>, dir: string): Promise<Run> {
  const res: Run = { ok: true, problems: [], refused: false, eio: 0, rss: 0, slowest: 0 };
  const fail = (p: string) => {
    res.ok = false;
    res.problems.push(p);
  };
  const mnt = path.join(dir, 'mnt');
  fs.mkdirSync(mnt, { recursive: true });
  const before = rw ? await fsckErrors(img) : 0;
  const env = { ...process.env, HAMMER2_QUIET_SHIM: '1', HAMMER2_RUNDIR: path.join(dir, 'run') };
  const d: ChildProcess = spawn(process.execPath, [MOUNT, '-f', ...(rw ? [] : ['-o', 'ro']), `${img}@DATA`, mnt], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let derr = '';
  d.stdout!.on('data', (x) => (derr += x));
  d.stderr!.on('data', (x) => (derr += x));
  const exited = new Promise<number | null>((r) => d.on('exit', (c) => r(c)));
  let dead = false;
  void exited.then(() => (dead = true));
  const up = await waitFor(() => mounted(mnt) || dead, 30_000);
  if (!up || dead || !mounted(mnt)) {
    if (!dead) {
      d.kill('SIGKILL');
      fail('the mount neither came up nor was refused within 30 s');
    } else if ((await exited) === 0 || !/\S/.test(derr)) fail(`refused without a message (exit ${await exited})`);
    res.refused = true;
    spawnSync('fusermount3', ['-uz', mnt]);
    return res;
  }
  // The walk, in its own process, every request timed.
  // The built walker (this file runs from src under the test runner).
  const w = spawn(process.execPath, [path.join(REPO, 'dist', 'fsck', 'mount-fuzz.js'), '--walk', mnt, String(256 << 20), rw ? 'rw' : 'ro'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const files = new Map<string, { sha256?: string | null; err?: string }>();
  let last = Date.now();
  let buf = '';
  w.stdout!.on('data', (x) => {
    last = Date.now();
    buf += x;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        const j = JSON.parse(line);
        if (j.ms > res.slowest) res.slowest = j.ms;
        if (j.err === 'EIO') res.eio++;
        if (j.op === 'file') files.set(j.p, j);
        if (j.op === 'statfs-root') walkedAll = !j.err;
      } catch {
        /* partial */
      }
    }
  });
  const walked = new Promise<number | null>((r) => w.on('exit', (c) => r(c)));
  let hung = false;
  let walkedAll = false;
  let werr = '';
  w.stderr!.on('data', (x) => (werr += x));
  const timer = setInterval(() => {
    if (Date.now() - last > o.requestMs) {
      hung = true;
      w.kill('SIGKILL');
    }
  }, 200);
  const wcode = await walked;
  clearInterval(timer);
  if (!hung && (wcode !== 0 || !walkedAll)) fail(`the walk did not finish (exit ${wcode}; the mount stopped answering?): ${werr.trim().slice(-300)}`);
  if (hung) fail(`a request took longer than ${o.requestMs} ms (the daemon stopped answering?)`);
  if (dead) fail(`the daemon died during the walk (exit ${await exited}): ${derr.trim().split('\n').slice(-3).join(' | ')}`);
  res.rss = peakRss(d.pid!);
  if (res.rss > o.rssMiB) fail(`daemon peak RSS ${res.rss.toFixed(0)} MiB > ${o.rssMiB}`);
  // Contents: where the damage cannot pass a check code, a file reads right or fails.
  if (damageDesc.detectable && manifest.hammer2.check !== 'none' && manifest.hammer2.check !== 'disabled') {
    for (const e of manifest.entries) {
      if (e.pfs !== 'DATA' || e.type !== 'file' || !e.sha256) continue;
      const got = files.get(path.join('.', e.path));
      if (!got || got.err || got.sha256 === null) continue;
      if (got.sha256 !== e.sha256) fail(`${e.path}: read wrong bytes without an error`);
    }
  }
  d.kill('SIGTERM');
  const code = await Promise.race([exited, new Promise<'hang'>((r) => setTimeout(() => r('hang'), 30_000))]);
  if (code === 'hang') {
    d.kill('SIGKILL');
    fail('the daemon did not stop on SIGTERM within 30 s');
  }
  await waitFor(() => !mounted(mnt), 5000);
  spawnSync('fusermount3', ['-uz', mnt]);
  if (rw) {
    const after = await fsckErrors(img);
    if (after > before) fail(`the read-write mount made it worse: fsck errors ${before === Number.MAX_SAFE_INTEGER ? 'fatal' : before} -> ${after === Number.MAX_SAFE_INTEGER ? 'fatal' : after}`);
  }
  return res;
}

export async function runMountFuzz(opts: MountFuzzOptions): Promise<MountFuzzResult> {
  const o = { requestMs: 15_000, rssMiB: 256, ...opts };
  const log = o.log ?? (() => {});
  const r = rng(o.seed);
  const out: MountFuzzResult = { runs: 0, refused: 0, eio: 0, peakRssMiB: 0, slowestMs: 0, failures: [] };
  fs.mkdirSync(o.dir, { recursive: true });
  const pristine = new Map<string, { img: string; blocks: MapBlock[]; manifest: Manifest }>();
  for (const name of o.images) {
    const at = path.join(o.dir, `pristine-${name}`);
    fs.mkdirSync(at, { recursive: true });
    const x = spawnSync('tar', ['-xSzf', path.join(FIXTURES, `${name}.img.tar.gz`), '-C', at]);
    if (x.status !== 0) throw new Error(`cannot unpack fixture ${name}: ${x.stderr}`);
    const img = path.join(at, `${name}.img`);
    pristine.set(name, { img, blocks: mapImage(img), manifest: JSON.parse(fs.readFileSync(path.join(FIXTURES, `${name}.manifest.json`), 'utf8')) });
  }
  const work = path.join(o.dir, 'work.img');
  for (let i = 0; i < o.iterations; i++) {
    const name = o.images[Math.floor(r() * o.images.length)];
    const p = pristine.get(name)!;
    fs.rmSync(work, { force: true });
    if (spawnSync('cp', ['--sparse=always', p.img, work]).status !== 0) throw new Error('cannot copy the image');
    const m = new Mutator(work, p.blocks);
    let dmg: { what: string[]; detectable: boolean };
    try {
      dmg = damage(m, r);
    } finally {
      fs.closeSync(m.fd); // keep the damage (no restore: this is a copy)
    }
    const rw = r() < 0.5;
    const label = `#${i} ${name} ${rw ? 'rw' : 'ro'}: ${dmg.what.join('; ') || 'no change'}`;
    const run = await oneRun(work, p.manifest, dmg, rw, o, o.dir);
    out.runs++;
    if (run.refused) out.refused++;
    out.eio += run.eio;
    out.peakRssMiB = Math.max(out.peakRssMiB, run.rss);
    out.slowestMs = Math.max(out.slowestMs, run.slowest);
    log(`${label} -> ${run.refused ? 'refused' : `walked, ${run.eio} EIO, slowest ${run.slowest} ms, RSS ${run.rss.toFixed(0)} MiB`}${run.ok ? '' : ` FAIL: ${run.problems.join('; ')}`}`);
    if (!run.ok) {
      out.failures.push(`${label}: ${run.problems.join('; ')}`);
      const keep = path.join(o.dir, `failed-${i}.img`);
      spawnSync('cp', ['--sparse=always', work, keep]);
    }
  }
  fs.rmSync(work, { force: true });
  return out;
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  if (args[0] === '--walk') {
    await walker(args[1], Number(args[2]), args[3] === 'rw');
    return 0;
  }
  const opt = (n: string, d: string) => {
    const i = args.indexOf(n);
    return i >= 0 && args[i + 1] ? args[i + 1] : d;
  };
  if (!fs.existsSync(FIXTURES)) {
    process.stderr.write(`mount-fuzz: the fixtures are not at ${FIXTURES}\n`);
    return 2;
  }
  const keep = opt('--keep', '');
  const dir = keep || fs.mkdtempSync(path.join(os.tmpdir(), 'h2mountfuzz-'));
  const seed = Number(opt('--seed', String(Date.now() % 100000)));
  const res = await runMountFuzz({
    images: opt('--images', 'basic,zlib,checks-none,multipfs').split(','),
    iterations: Number(opt('--iterations', '200')),
    seed,
    dir,
    log: (l) => process.stdout.write(l + '\n'),
  });
  process.stdout.write(
    `seed ${seed}: ${res.runs} damaged images mounted, ${res.refused} refused with a message, ${res.eio} EIO answers, slowest request ${res.slowestMs} ms, daemon peak RSS ${res.peakRssMiB.toFixed(0)} MiB; ${res.failures.length} failed\n`,
  );
  if (!keep && !res.failures.length) fs.rmSync(dir, { recursive: true, force: true });
  else process.stdout.write(`images and failures kept in ${dir}\n`);
  return res.failures.length ? 1 : 0;
}

if (require.main === module) main().then((c) => process.exit(c));
