// What the crash harnesses share (crash-test.ts, crash-mirror.ts): daemons
// and commands run as processes, the fsync workload whose sealed files
// must survive a kill, and the checks every run ends with.
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Hammer2Fs } from '../src/fs';
import { ObjType } from '../src/media';

/** The checkout: the nearest directory above this file with a package.json (from src or dist). */
export function repoRoot(): string {
  let d = __dirname;
  while (!fs.existsSync(path.join(d, 'package.json')) && path.dirname(d) !== d) d = path.dirname(d);
  return d;
}
export const REPO = repoRoot();
export const MOUNT = path.join(REPO, 'dist', 'src', 'cli', 'mount_hammer2.js');
export const HAMMER2 = path.join(REPO, 'dist', 'src', 'cli', 'hammer2.js');

export class Rng {
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

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

export function mounted(mnt: string): boolean {
  return fs
    .readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[1] === mnt);
}

export async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await sleep(20);
  }
  return cond();
}

/** A mount_hammer2 daemon in the foreground for `spec` (IMAGE@LABEL) at `mnt`. */
export function startDaemon(spec: string, mnt: string, extra: string[], logFile: string, env: NodeJS.ProcessEnv): ChildProcess {
  return spawn(process.execPath, [MOUNT, '-f', '--log', logFile, ...extra, spec, mnt], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...env, HAMMER2_QUIET_SHIM: '1' },
  });
}

/** Run a CLI to completion; its exit status and output. */
export function runCli(bin: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ status: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...env, HAMMER2_QUIET_SHIM: '1' } });
    let out = '';
    p.stdout!.on('data', (d) => (out += d));
    p.stderr!.on('data', (d) => (out += d));
    p.on('close', (status) => resolve({ status, out }));
  });
}

export interface Sealed {
  path: string;
  hash: string;
  size: number;
}

/** The workload: runs until the mount dies; returns the files sealed by a completed fsync. */
export async function workload(mnt: string, rng: Rng, sealed: Sealed[]): Promise<string | null> {
  const live: string[] = [];
  let n = 0;
  // A daemon stopped cleanly (SIGTERM) unmounts under the workload, whose
  // next files would land in the directory below: only files on the mount count.
  const dev = fs.statSync(mnt).dev;
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
            if ((await fh.stat()).dev !== dev) return 'unmounted';
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
export async function verify(img: string, sealedBy: Map<string, Sealed[]>): Promise<string[]> {
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

export function fsckCommand(): string[] | null {
  const ours = path.join(REPO, 'dist', 'src', 'cli', 'fsck_hammer2.js');
  if (fs.existsSync(ours)) return [process.execPath, ours, '-q'];
  return null;
}

/** How long one fsck may take (a 4 GiB image under load takes well under a minute). */
const FSCK_MS = 600_000;

/** Both fscks on one image: null when clean, else what they said. */
export function fscks(img: string, details: string[], what: string): string | null {
  // Both always run, and a verdict says how it ended: a status, or the signal
  // that ended it (a reference fsck killed under load is not a rejection of
  // the image), with the tail of everything it printed (its diagnostics go
  // to stderr).
  // An fsck that does not finish is a verdict too (one that loops must fail the run, not hang it).
  const verdict = (r: ReturnType<typeof spawnSync>) =>
    (r.error as NodeJS.ErrnoException | undefined)?.code === 'ETIMEDOUT'
      ? `did not finish within ${FSCK_MS / 1000} s`
      : r.error
        ? `could not run (${r.error.message})`
        : r.signal
          ? `killed by ${r.signal}`
          : `exit ${r.status}: ${`${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n').slice(-4).join(' | ')}`;
  const bad: string[] = [];
  let oursClean: boolean | null = null;
  const fsck = fsckCommand();
  if (fsck) {
    const r = spawnSync(fsck[0], [...fsck.slice(1), img], { encoding: 'utf8', timeout: FSCK_MS, killSignal: 'SIGKILL' });
    oursClean = r.status === 0;
    if (oursClean) details.push(`${what} fsck clean`);
    else bad.push(`fsck ${verdict(r)}`);
  }
  // Where the reference fsck is at hand (H2_REF_FSCK=path), it must agree.
  if (process.env.H2_REF_FSCK) {
    const r = spawnSync(process.env.H2_REF_FSCK, ['-q', img], { encoding: 'utf8', timeout: FSCK_MS, killSignal: 'SIGKILL' });
    if (r.status === 0) details.push(`${what} reference fsck clean`);
    else bad.push(`reference fsck ${verdict(r)}${oursClean ? ' (OURS SAID CLEAN: the verdicts disagree)' : ''}`);
  }
  return bad.length ? `${what}: ${bad.join('; ')}` : null;
}

