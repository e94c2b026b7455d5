#!/usr/bin/env node
// Crash-test harness: mount an image read-write, run a mixed write workload
// with fsyncs, SIGKILL the daemon at a random moment, then check the image
// and remount it. Every run must come back clean, and every file whose
// fsync returned before the kill must be intact (such files are "sealed":
// the workload never touches them again, so their content is exact).
//
//   node dist/fsck/crash-test.js [--runs N] [--seed S] [--size 4G] [--pfs N] [--copies] [--keep DIR]
//
// --pfs N mounts N PFSs of the image at once (one daemon serves them all),
// runs a workload on each concurrently and takes snapshots of the first
// while it runs: every PFS's sealed files must survive, every snapshot read.
// --copies keeps DATA on a second image too (-o copy=): the kill lands while
// the copy is being filled or while it follows commits; both images must
// pass both fscks, a copy that was in sync must hold every sealed file, and
// the remount must bring the copy level.
//
// Prints one line per run and ends with "N passed, N failed".
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { formatHammer2 } from '../mkfs/newfs';
import { Hammer2Fs } from '../src/fs';
import { ObjType } from '../src/media';

/** The checkout: the nearest directory above this file with a package.json (from src or dist). */
function repoRoot(): string {
  let d = __dirname;
  while (!fs.existsSync(path.join(d, 'package.json')) && path.dirname(d) !== d) d = path.dirname(d);
  return d;
}
const REPO = repoRoot();
const MOUNT = path.join(REPO, 'dist', 'src', 'cli', 'mount_hammer2.js');
const HAMMER2 = path.join(REPO, 'dist', 'src', 'cli', 'hammer2.js');

class Rng {
  constructor(private s: number) {
    if (!this.s) this.s = 1;
  }
  next(): number {
    let x = this.s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.s = x >>> 0;
    return this.s;
  }
  int(n: number): number {
    return this.next() % n;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function mounted(mnt: string): boolean {
  return fs
    .readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[1] === mnt);
}

async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await sleep(20);
  }
  return cond();
}

/** Labels of the PFSs a run with `n` of them mounts. */
const labelsFor = (n: number): string[] => ['DATA', ...Array.from({ length: n - 1 }, (_, i) => `P${i + 1}`)];

function startDaemon(img: string, mnt: string, extra: string[], logFile: string, env: NodeJS.ProcessEnv): ChildProcess {
  return spawn(process.execPath, [MOUNT, '-f', '--log', logFile, ...extra, `${img}@DATA`, mnt], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...env, HAMMER2_QUIET_SHIM: '1' },
  });
}

/** Run a CLI to completion; its exit status and output. */
function runCli(bin: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ status: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...env, HAMMER2_QUIET_SHIM: '1' } });
    let out = '';
    p.stdout!.on('data', (d) => (out += d));
    p.stderr!.on('data', (d) => (out += d));
    p.on('close', (status) => resolve({ status, out }));
  });
}

interface Sealed {
  path: string;
  hash: string;
  size: number;
}

/** The workload: runs until the mount dies; returns the files sealed by a completed fsync. */
async function workload(mnt: string, rng: Rng, sealed: Sealed[]): Promise<string | null> {
  const live: string[] = [];
  let n = 0;
  try {
    for (;;) {
      const op = rng.int(100);
      if (op < 45 || live.length === 0) {
        // New file, written in pieces; half of them fsynced and sealed.
        const dir = path.join(mnt, `d${rng.int(8)}`);
        await fs.promises.mkdir(dir, { recursive: true });
        const p = path.join(dir, `f${n++}`);
        const size = rng.int(4) === 0 ? rng.int(3 << 20) : rng.int(70000);
        const data = Buffer.alloc(size);
        for (let i = 0; i < size; i += 4096) data.writeUInt32LE(rng.next(), i);
        const fh = await fs.promises.open(p, 'w');
        try {
          let off = 0;
          while (off < size) {
            const len = Math.min(size - off, 1 + rng.int(300000));
            await fh.write(data, off, len, off);
            off += len;
          }
          if (rng.int(2) === 0) {
            await fh.sync();
            sealed.push({ path: path.relative(mnt, p), hash: sha(data), size });
          } else {
            live.push(p);
          }
        } finally {
          await fh.close().catch(() => {});
        }
      } else if (op < 65) {
        const p = live[rng.int(live.length)];
        await fs.promises.appendFile(p, Buffer.alloc(1 + rng.int(50000), rng.int(256)));
      } else if (op < 75) {
        const i = rng.int(live.length);
        await fs.promises.unlink(live[i]);
        live.splice(i, 1);
      } else if (op < 85) {
        const i = rng.int(live.length);
        const np = path.join(mnt, `d${rng.int(8)}`, `r${n++}`);
        await fs.promises.rename(live[i], np);
        live[i] = np;
      } else if (op < 92) {
        const p = live[rng.int(live.length)];
        await fs.promises.truncate(p, rng.int(100000));
      } else {
        // A sync of everything: seals nothing by itself (files may still change), but commits.
        const fh = await fs.promises.open(live[rng.int(live.length)], 'r+');
        try {
          await fh.datasync();
        } finally {
          await fh.close().catch(() => {});
        }
      }
    }
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? (e as Error).message;
  }
}

/**
 * Read every file of every PFS (snapshots included) through the engine and
 * check each PFS's sealed files; returns what is wrong.
 */
async function verify(img: string, sealedBy: Map<string, Sealed[]>): Promise<string[]> {
  const problems: string[] = [];
  const h2 = await Hammer2Fs.open(img, { writable: false, lock: false });
  try {
    for (const { name } of h2.dev.listPfs()) {
      const pfs = h2.pfs(name)!;
      // Walk everything: every directory lists, every file reads, every inode resolves.
      const walk = (p: string) => {
        const n = pfs.resolve(p);
        if (n.data.meta.type === ObjType.DIRECTORY) {
          for (const e of pfs.readdir(n)) walk(`${p === '/' ? '' : p}/${e.name.toString()}`);
        } else if (n.data.meta.type === ObjType.REGFILE) {
          pfs.read(n, 0, Number(n.data.meta.size));
        }
      };
      try {
        walk('/');
      } catch (e) {
        problems.push(`@${name}: ${(e as Error).message}`);
      }
    }
    for (const [label, sealed] of sealedBy) {
      const pfs = h2.pfs(label);
      if (!pfs) {
        problems.push(`@${label}: PFS missing`);
        continue;
      }
      for (const s of sealed) {
        try {
          const n = pfs.resolve('/' + s.path);
          const data = pfs.read(n, 0, Number(n.data.meta.size) + 1);
          if (data.length !== s.size || sha(data) !== s.hash) problems.push(`@${label}/${s.path}: fsynced content lost`);
        } catch (e) {
          problems.push(`@${label}/${s.path}: ${(e as Error).message}`);
        }
      }
    }
  } finally {
    h2.close();
  }
  return problems;
}

function fsckCommand(): string[] | null {
  const ours = path.join(REPO, 'dist', 'src', 'cli', 'fsck_hammer2.js');
  if (fs.existsSync(ours)) return [process.execPath, ours, '-q'];
  return null;
}

export interface CrashRunResult {
  ok: boolean;
  detail: string;
}

export interface CrashRunOptions {
  /** PFSs mounted and written at once (default 1); with more, the first is also snapshotted while it runs. */
  pfs?: number;
  /** Keep DATA on a second image too (-o copy=): the kill lands while it is filled or while it follows. */
  copy?: boolean;
}

/** DATA's root tid on an image (what a copy records as its synchronized point). */
async function dataTid(img: string): Promise<bigint> {
  const h = await Hammer2Fs.open(img, { writable: false, lock: false });
  try {
    return h.dev.findPfs('DATA')?.bref.modifyTid ?? -1n;
  } finally {
    h.close();
  }
}

/** Both fscks on one image: null when clean, else what they said. */
function fscks(img: string, details: string[], what: string): string | null {
  const fsck = fsckCommand();
  if (fsck) {
    const r = spawnSync(fsck[0], [...fsck.slice(1), img], { encoding: 'utf8' });
    if (r.status !== 0) return `${what}: fsck exit ${r.status}: ${(r.stdout + r.stderr).trim().split('\n').slice(-5).join(' | ')}`;
    details.push(`${what} fsck clean`);
  }
  // Where the reference fsck is at hand (H2_REF_FSCK=path), it must agree.
  if (process.env.H2_REF_FSCK) {
    const r = spawnSync(process.env.H2_REF_FSCK, ['-q', img], { encoding: 'utf8' });
    if (r.status !== 0) return `${what}: reference fsck exit ${r.status}: ${r.stdout.trim().split('\n').slice(-3).join(' | ')}`;
    details.push(`${what} reference fsck clean`);
  }
  return null;
}

export async function crashRun(run: number, seed: number, dir: string, size: number, o: CrashRunOptions = {}): Promise<CrashRunResult> {
  const rng = new Rng(seed);
  const img = path.join(dir, `crash-${run}.img`);
  const labels = labelsFor(Math.max(1, o.pfs ?? 1));
  const mnts = labels.map((l) => path.join(dir, `mnt-${run}-${l}`));
  const mnt = mnts[0];
  const logFile = path.join(dir, `daemon-${run}.log`);
  // The daemon's control socket (hand-off of the other mounts, snapshots) in the run's directory.
  const env = { ...process.env, HAMMER2_RUNDIR: path.join(dir, 'run') };
  for (const m of mnts) fs.mkdirSync(m, { recursive: true });
  await formatHammer2({ paths: [img], sizes: [size], labels });
  const copyImg = o.copy ? path.join(dir, `crash-${run}-copy.img`) : null;
  if (copyImg) await formatHammer2({ paths: [copyImg], sizes: [size], labels: ['none'] });
  // Every other run attaches the copy later, live (hammer2 copy-add), so
  // that the kill can land while it is being filled with what is already there.
  const late = !!copyImg && run % 2 === 1;
  const copyOpt = copyImg && !late ? `,copy=${copyImg},copy_retry=0.5` : '';
  // A short commit interval makes kills land in every phase of a flush.
  const daemon = startDaemon(img, mnt, ['-o', `flush=1,dirty=8${copyOpt}`], logFile, env);
  let stderr = '';
  daemon.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<void>((r) => daemon.on('exit', () => r()));
  const clearMounts = async () => {
    // auto_unmount clears a dead mount; make sure, whatever happened.
    for (const m of mnts) if (!(await waitFor(() => !mounted(m), 5000))) spawnSync('fusermount3', ['-uz', m]);
  };
  if (!(await waitFor(() => mounted(mnt), 20000))) {
    daemon.kill('SIGKILL');
    return { ok: false, detail: `mount did not come up: ${stderr}` };
  }
  // The other PFSs: handed to the running daemon, as a second mount_hammer2 does.
  for (let i = 1; i < labels.length; i++) {
    const r = await runCli(MOUNT, [`${img}@${labels[i]}`, mnts[i]], env);
    if (r.status !== 0 || !mounted(mnts[i])) {
      daemon.kill('SIGKILL');
      await clearMounts();
      return { ok: false, detail: `mount of @${labels[i]} failed: ${r.out.trim()}` };
    }
  }
  const sealedBy = new Map(labels.map((l) => [l, [] as Sealed[]]));
  const works = labels.map((l, i) => workload(mnts[i], new Rng(seed * 31 + i), sealedBy.get(l)!));
  // Snapshots of the first PFS while everything is being written.
  let snaps = 0;
  let stop = false;
  const snapper =
    labels.length > 1
      ? (async () => {
          while (!stop) {
            await sleep(150 + rng.int(400));
            if (stop) break;
            const r = await runCli(HAMMER2, ['snapshot', mnt, `DATA.snap${snaps}`], env);
            if (r.status === 0) snaps++;
          }
        })()
      : Promise.resolve();
  let copyAdded = '';
  if (late) {
    await sleep(200 + rng.int(800));
    const r = await runCli(HAMMER2, ['-s', mnt, 'copy-add', copyImg!], env);
    copyAdded = r.status === 0 ? 'copy added live' : `copy-add failed: ${r.out.trim()}`;
  }
  await sleep(300 + rng.int(2500));
  daemon.kill('SIGKILL');
  stop = true;
  await exited;
  await Promise.all([...works, snapper]);
  await clearMounts();
  let nsealed = 0;
  for (const s of sealedBy.values()) nsealed += s.length;
  const details: string[] = [labels.length > 1 ? `${labels.length} PFSs, ${snaps} snapshots, ${nsealed} sealed` : `${nsealed} sealed`];
  if (copyAdded) details.push(copyAdded);
  const bad = fscks(img, details, 'primary') ?? (copyImg ? fscks(copyImg, details, 'copy') : null);
  if (bad) return { ok: false, detail: bad };
  const problems = await verify(img, sealedBy);
  if (problems.length) return { ok: false, detail: problems.slice(0, 5).join('; ') };
  // A copy that was in sync at the kill holds every fsynced file too.
  const dataOnly = new Map([['DATA', sealedBy.get('DATA')!]]);
  if (copyImg) {
    const inSync = (await dataTid(copyImg)) === (await dataTid(img));
    details.push(inSync ? 'copy was in sync' : 'copy was behind');
    if (inSync) {
      const p = await verify(copyImg, dataOnly);
      if (p.length) return { ok: false, detail: `copy: ${p.slice(0, 5).join('; ')}` };
    }
  }
  // And the image mounts and takes writes again (with its copy: brought level).
  const again = startDaemon(img, mnt, copyImg ? ['-o', `copy=${copyImg}`] : [], logFile, env);
  const exited2 = new Promise<number | null>((r) => again.on('exit', (c) => r(c)));
  if (!(await waitFor(() => mounted(mnt), 20000))) {
    again.kill('SIGKILL');
    return { ok: false, detail: 'remount failed' };
  }
  await fs.promises.writeFile(path.join(mnt, 'after-crash'), 'ok');
  if (copyImg) {
    let level = false;
    for (let i = 0; i < 300 && !level; i++) {
      const r = await runCli(HAMMER2, ['-s', mnt, 'copy-status', '--json'], env);
      const c = r.status === 0 ? (JSON.parse(r.out).copies as { state: string; tid: string }[]) : [];
      level = c.length === 2 && c.every((x) => x.state === 'in-sync' && x.tid === c[0].tid);
      if (!level) await sleep(100);
    }
    if (!level) {
      again.kill('SIGKILL');
      return { ok: false, detail: 'the copy did not get level after the remount' };
    }
  }
  again.kill('SIGTERM');
  const code = await exited2;
  if (code !== 0) return { ok: false, detail: `remounted daemon exited ${code}` };
  const problems2 = await verify(img, sealedBy);
  if (problems2.length) return { ok: false, detail: `after remount: ${problems2[0]}` };
  if (copyImg) {
    const bad2 = fscks(copyImg, [], 'copy after remount');
    if (bad2) return { ok: false, detail: bad2 };
    const p = await verify(copyImg, dataOnly);
    if (p.length) return { ok: false, detail: `copy after remount: ${p[0]}` };
    details.push('copy level after remount');
    fs.rmSync(copyImg, { force: true });
  }
  details.push('remount ok');
  fs.rmSync(img, { force: true });
  return { ok: true, detail: details.join(', ') };
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const opt = (name: string, def: string) => {
    const i = args.indexOf(name);
    return i >= 0 && args[i + 1] ? args[i + 1] : def;
  };
  const runs = Number(opt('--runs', '10'));
  const seed0 = Number(opt('--seed', String(Date.now() % 100000)));
  const sizeArg = opt('--size', '4G');
  const pfs = Number(opt('--pfs', '1'));
  const copy = args.includes('--copies');
  const size = Number(sizeArg.replace(/[GMK]$/i, '')) * ({ G: 2 ** 30, M: 2 ** 20, K: 1024 }[sizeArg.slice(-1).toUpperCase()] ?? 1);
  const keep = opt('--keep', '');
  const dir = keep || fs.mkdtempSync(path.join(os.tmpdir(), 'h2crash-'));
  let passed = 0;
  let failed = 0;
  try {
    for (let i = 0; i < runs; i++) {
      const seed = seed0 + i;
      let r: CrashRunResult;
      try {
        r = await crashRun(i, seed, dir, size, { pfs, copy });
      } catch (e) {
        r = { ok: false, detail: (e as Error).stack ?? String(e) };
      }
      if (r.ok) passed++;
      else failed++;
      console.log(`run ${i} seed ${seed}: ${r.ok ? 'ok' : 'FAIL'} (${r.detail})`);
    }
  } finally {
    if (!keep) fs.rmSync(dir, { recursive: true, force: true });
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

if (require.main === module) main();
