// The filesystems under test. Each one is set up fresh for every workload run
// (a new image, formatted and mounted; or a new directory), can be made cold
// (unmounted, caches dropped, mounted again) and is torn down afterwards.
// Every daemon, mount and file made here is also registered with `cleanup`,
// which undoes whatever is left even when the run is interrupted.
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { sample } from './procstat';
import { DAEMON_NODE_FLAGS } from '../src/daemon/options';

export const REPO = path.resolve(__dirname, '..', '..');

/** Where the programs the bench starts live: the repository's dist/, or a snapshot of it. */
export const BIN = {
  root: REPO,
  mount: path.join(REPO, 'dist', 'src', 'cli', 'mount_hammer2.js'),
  hammer2: path.join(REPO, 'dist', 'src', 'cli', 'hammer2.js'),
  fsck: path.join(REPO, 'dist', 'src', 'cli', 'fsck_hammer2.js'),
  memfs: path.join(REPO, 'dist', 'bench', 'memfs.js'),
  worker: path.join(REPO, 'dist', 'bench', 'worker.js'),
};

/**
 * Run every daemon, worker and the formatter from a private build of the
 * work tree's sources (tsc --outDir, native shim copied, node_modules linked),
 * so that someone else's `npm run build` during the run (tsc rewrites dist/
 * file by file for many seconds) cannot change or break what is measured.
 * Returns tsc's complaints (type errors do not stop it emitting), or ''.
 */
export function privateBuild(dir: string): string {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const tsc = path.join(REPO, 'node_modules', 'typescript', 'bin', 'tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', path.join(REPO, 'tsconfig.json'), '--outDir', path.join(dir, 'dist'), '--sourceMap', 'false'], {
    encoding: 'utf8',
  });
  if (r.error) throw r.error;
  const rel = path.join('native-shim', 'build', 'Release');
  fs.mkdirSync(path.join(dir, rel), { recursive: true });
  for (const f of fs.readdirSync(path.join(REPO, rel))) {
    if (f.endsWith('.node')) fs.copyFileSync(path.join(REPO, rel, f), path.join(dir, rel, f));
  }
  fs.symlinkSync(path.join(REPO, 'node_modules'), path.join(dir, 'node_modules'));
  BIN.root = dir;
  BIN.mount = path.join(dir, 'dist', 'src', 'cli', 'mount_hammer2.js');
  BIN.hammer2 = path.join(dir, 'dist', 'src', 'cli', 'hammer2.js');
  BIN.fsck = path.join(dir, 'dist', 'src', 'cli', 'fsck_hammer2.js');
  BIN.memfs = path.join(dir, 'dist', 'bench', 'memfs.js');
  BIN.worker = path.join(dir, 'dist', 'bench', 'worker.js');
  return r.status === 0 ? '' : (r.stdout + r.stderr).trim();
}

type Formatter = (o: { paths: string[]; sizes: number[]; labels?: string[] }) => Promise<unknown>;
/** newfs from the same build as the daemons. */
function formatHammer2(o: { paths: string[]; sizes: number[]; labels?: string[] }): Promise<unknown> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const m = require(path.join(BIN.root, 'dist', 'mkfs', 'newfs.js')) as { formatHammer2: Formatter };
  return m.formatHammer2(o);
}

export const FS_NAMES = ['hammer2fs', 'fuse2fs', 'memfs', 'local', 'hammer2fs-copy'] as const;
/** Run when --fs names nothing (hammer2fs-copy only on request: --fs hammer2fs,hammer2fs-copy or --copies). */
export const DEFAULT_FS: readonly FsName[] = ['hammer2fs', 'fuse2fs', 'memfs', 'local'];
export type FsName = (typeof FS_NAMES)[number];

export const FS_DESCRIPTION: Record<FsName, string> = {
  hammer2fs: 'mount_hammer2 on a HAMMER2 image on the local disk (formatted by newfs, default compression and checks)',
  fuse2fs: "Debian's fuse2fs (C, libfuse2) on an ext4 image made by mkfs.ext4 with its defaults, on the local disk",
  memfs: 'bench/memfs.ts: in-memory filesystem on our libfuse3 binding (the ceiling of a Node filesystem on it)',
  local: 'a directory on the local disk, no FUSE (the kernel floor)',
  'hammer2fs-copy': 'mount_hammer2 -o copy=IMAGE: as hammer2fs, with the PFS kept on a second image on the same disk (every commit written twice)',
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- cleanup of everything we made ----

class Cleanup {
  readonly procs = new Set<ChildProcess>();
  readonly mounts = new Set<string>();
  readonly paths = new Set<string>();

  /** Synchronous, safe to call from 'exit' or twice: kill, unmount, remove. */
  now(): void {
    for (const p of this.procs) {
      if (p.exitCode === null && p.signalCode === null && p.pid) {
        try {
          process.kill(-p.pid, 'SIGKILL');
        } catch {
          try {
            p.kill('SIGKILL');
          } catch {
            /* gone */
          }
        }
      }
    }
    this.procs.clear();
    for (const m of this.mounts) forceUnmount(m);
    this.mounts.clear();
    for (const p of this.paths) {
      try {
        fs.rmSync(p, { recursive: true, force: true });
      } catch {
        /* a mount we could not remove: left for the next run's clean-up */
      }
    }
    this.paths.clear();
  }
}
export const cleanup = new Cleanup();

export function mountedAt(mnt: string): boolean {
  try {
    return fs
      .readFileSync('/proc/self/mounts', 'utf8')
      .split('\n')
      .some((l) => l.split(' ')[1] === mnt);
  } catch {
    return false;
  }
}

/** Mountpoints under `dir` (stale ones from an interrupted run). */
export function mountsUnder(dir: string): string[] {
  const pre = dir.endsWith('/') ? dir : dir + '/';
  return fs
    .readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[1])
    .filter((m): m is string => !!m && m.startsWith(pre))
    .map((m) => m.replace(/\\040/g, ' '));
}

export function forceUnmount(mnt: string): void {
  if (!mountedAt(mnt)) return;
  spawnSync('fusermount', ['-uz', mnt], { stdio: 'ignore' });
  if (mountedAt(mnt)) spawnSync('umount', ['-l', mnt], { stdio: 'ignore' });
}

/** Write back and drop the page, dentry and inode caches (needs root). */
export function dropCaches(): boolean {
  spawnSync('sync');
  try {
    fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
    return true;
  } catch {
    return false;
  }
}

// ---- one FUSE daemon ----

class Daemon {
  readonly proc: ChildProcess;
  exited = false;
  exitInfo = '';
  private exitWaiters: (() => void)[] = [];

  constructor(cmd: string, args: string[], readonly logFile: string, env: NodeJS.ProcessEnv = process.env) {
    const fd = fs.openSync(logFile, 'a');
    this.proc = spawn(cmd, args, { detached: true, stdio: ['ignore', fd, fd], env });
    fs.closeSync(fd);
    cleanup.procs.add(this.proc);
    this.proc.on('exit', (code, sig) => {
      this.exited = true;
      this.exitInfo = sig ? `signal ${sig}` : `exit code ${code}`;
      cleanup.procs.delete(this.proc);
      for (const w of this.exitWaiters.splice(0)) w();
    });
    this.proc.on('error', (e) => {
      this.exited = true;
      this.exitInfo = e.message;
      for (const w of this.exitWaiters.splice(0)) w();
    });
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  waitExit(ms: number): Promise<boolean> {
    if (this.exited) return Promise.resolve(true);
    return new Promise((res) => {
      const t = setTimeout(() => res(this.exited), ms);
      this.exitWaiters.push(() => {
        clearTimeout(t);
        res(true);
      });
    });
  }

  log(): string {
    try {
      return fs.readFileSync(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }
}

export interface TargetEnv {
  workdir: string;
  imageSize: number;
  /** hammer2fs only: write a CPU profile of each daemon into this directory */
  profileDir?: string;
  /** hammer2fs only: extra -o options of the daemon */
  mountOpts?: string[];
  /** unique per target instance (file names) */
  seq: number;
}

export abstract class Target {
  abstract readonly name: FsName;
  /** The directory the workload works in (the mountpoint, or a local directory). */
  abstract readonly root: string;
  /** Lines from daemon logs that look like trouble. */
  readonly problems: string[] = [];
  protected daemon: Daemon | null = null;
  private hwm = 0;
  /** Seconds from starting the last daemon to its mount being live. */
  mountSeconds = NaN;

  constructor(protected readonly env: TargetEnv) {}

  abstract setup(): Promise<void>;
  abstract cold(): Promise<void>;
  abstract teardown(): Promise<void>;
  /**
   * Check the filesystem offline with its own checker (daemon stopped,
   * caches dropped) and mount it again, cold: the checker's seconds and
   * peak RSS. Null for targets without an image.
   */
  async checkOffline(): Promise<{ seconds: number; rss: number } | null> {
    return null;
  }

  daemonPid(): number | null {
    return this.daemon && !this.daemon.exited ? this.daemon.pid : null;
  }

  /** Peak resident memory (VmHWM) over every daemon of this target so far. */
  peakRss(): number {
    this.noteHwm();
    return this.hwm;
  }

  noteHwm(): void {
    const pid = this.daemonPid();
    const s = pid ? sample(pid) : null;
    if (s) this.hwm = Math.max(this.hwm, s.hwm);
  }

  /** Why the daemon is not serving, or null. */
  deadDaemon(): string | null {
    if (!this.daemon) return null;
    if (this.daemon.exited) return `daemon exited (${this.daemon.exitInfo}); log:\n${tail(this.daemon.log(), 30)}`;
    return null;
  }

  protected async startDaemon(cmd: string, args: string[], mnt: string, what: string, env?: NodeJS.ProcessEnv): Promise<void> {
    fs.mkdirSync(mnt, { recursive: true });
    const log = path.join(this.env.workdir, 'logs', `${this.name}-${this.env.seq}.log`);
    fs.mkdirSync(path.dirname(log), { recursive: true });
    const d = new Daemon(cmd, args, log, env);
    this.daemon = d;
    cleanup.mounts.add(mnt);
    const t0 = Date.now();
    const deadline = t0 + 60000;
    while (!mountedAt(mnt)) {
      if (d.exited) throw new Error(`${what} exited before mounting (${d.exitInfo}):\n${tail(d.log(), 30)}`);
      if (Date.now() > deadline) throw new Error(`${what}: no mount after 60 s:\n${tail(d.log(), 30)}`);
      await sleep(25);
    }
    this.mountSeconds = (Date.now() - t0) / 1000;
  }

  /** Unmount the way a user would, wait for the daemon to finish (its final flush), scan its log. */
  protected async stopDaemon(mnt: string): Promise<void> {
    const d = this.daemon;
    if (!d) return;
    this.noteHwm();
    if (!d.exited) {
      for (let i = 0; i < 50 && mountedAt(mnt); i++) {
        const r = spawnSync('fusermount', ['-u', mnt], { encoding: 'utf8' });
        if (r.status === 0) break;
        await sleep(200); // busy: a worker that was killed may still hold it
      }
      if (!(await d.waitExit(300000))) {
        this.problems.push(`${this.name}: daemon still running 300 s after unmount; killed`);
        try {
          process.kill(-d.pid, 'SIGKILL');
        } catch {
          /* gone */
        }
        await d.waitExit(10000);
      } else if (d.exitInfo !== 'exit code 0') {
        this.problems.push(`${this.name}: daemon ended with ${d.exitInfo} at unmount`);
      }
    }
    forceUnmount(mnt);
    cleanup.mounts.delete(mnt);
    this.scanLog(d.log());
    this.daemon = null;
  }

  protected scanLog(text: string): void {
    for (const l of text.split('\n')) {
      if (/internal error|EIO|failed|error|panic|corrupt|assert|Writing to the journal/i.test(l) && !/^\s*$/.test(l)) {
        const line = `${this.name}: ${l.trim().slice(0, 300)}`;
        if (!this.problems.includes(line) && this.problems.length < 20) this.problems.push(line);
      }
    }
  }
}

export function tail(text: string, lines: number): string {
  return text.split('\n').slice(-lines).join('\n');
}

function makeSparse(file: string, size: number): void {
  fs.rmSync(file, { force: true });
  const fd = fs.openSync(file, 'w');
  fs.ftruncateSync(fd, size);
  fs.closeSync(fd);
}

/**
 * A filesystem in sparse image files served by a daemon (hammer2fs, fuse2fs):
 * the same life cycle for both, so they are measured under the same setup.
 * Cold means the daemon restarted on its images with the page cache dropped.
 */
abstract class ImageTarget extends Target {
  constructor(
    env: TargetEnv,
    readonly root: string,
    /** every image of the target; the first one is mounted */
    protected readonly images: string[],
  ) {
    super(env);
  }

  /** Put a filesystem on the (sparse, empty) images. */
  protected abstract format(): Promise<void>;
  /** Start the daemon on the images; resolves once the mount is live. */
  protected abstract mount(): Promise<void>;

  async setup(): Promise<void> {
    for (const img of this.images) {
      cleanup.paths.add(img);
      makeSparse(img, this.env.imageSize);
    }
    await this.format();
    await this.mount();
  }

  async cold(): Promise<void> {
    await this.stopDaemon(this.root);
    dropCaches();
    await this.mount();
  }

  /** The checker's command line for the (unmounted) first image: it must exit 0 on a clean filesystem. */
  protected abstract checker(): [string, string[]];

  override async checkOffline(): Promise<{ seconds: number; rss: number }> {
    await this.stopDaemon(this.root);
    dropCaches();
    const [cmd, args] = this.checker();
    const t0 = process.hrtime.bigint();
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-4000)));
    child.stderr.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-4000)));
    let rss = 0;
    const poll = setInterval(() => {
      const s = child.pid ? sample(child.pid) : null;
      if (s) rss = Math.max(rss, s.hwm);
    }, 20);
    const code = await new Promise<number | null>((resolve, reject) => {
      child.on('error', reject);
      child.on('exit', (c) => resolve(c));
    }).finally(() => clearInterval(poll));
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    if (code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${code}:\n${tail(out, 30)}`);
    dropCaches();
    await this.mount();
    return { seconds, rss };
  }

  async teardown(): Promise<void> {
    await this.stopDaemon(this.root);
    for (const img of this.images) {
      fs.rmSync(img, { force: true });
      cleanup.paths.delete(img);
    }
  }
}

class Hammer2Target extends ImageTarget {
  readonly name: 'hammer2fs' | 'hammer2fs-copy';
  /** The copy's image (hammer2fs-copy). */
  private readonly copy: string | null;

  constructor(env: TargetEnv, withCopy = false) {
    const name = withCopy ? 'hammer2fs-copy' : 'hammer2fs';
    const img = path.join(env.workdir, `${name}-${env.seq}.img`);
    const copy = withCopy ? path.join(env.workdir, `${name}-${env.seq}-copy.img`) : null;
    super(env, path.join(env.workdir, `mnt-${name}`), copy ? [img, copy] : [img]);
    this.name = name;
    this.copy = copy;
  }

  protected async format(): Promise<void> {
    await formatHammer2({ paths: [this.images[0]], sizes: [this.env.imageSize] });
    if (this.copy) await formatHammer2({ paths: [this.copy], sizes: [this.env.imageSize], labels: ['none'] });
  }

  override async setup(): Promise<void> {
    await super.setup();
    if (this.copy) await this.waitInSync();
  }

  /** A new copy is filled in the background: measure only once it is level. */
  private async waitInSync(): Promise<void> {
    for (let i = 0; i < 600; i++) {
      const r = spawnSync(process.execPath, [BIN.hammer2, '-s', this.root, 'copy-status', '--json'], { encoding: 'utf8' });
      if (r.status === 0) {
        const c = JSON.parse(r.stdout).copies as { state: string; tid: string }[];
        if (c.every((x) => x.state === 'in-sync' && x.tid === c[0].tid)) return;
      }
      await sleep(100);
    }
    throw new Error('the copy did not get in sync within 60 s');
  }

  protected checker(): [string, string[]] {
    return [process.execPath, [BIN.fsck, '-q', this.images[0]]];
  }

  protected async mount(): Promise<void> {
    const node: string[] = [...DAEMON_NODE_FLAGS];
    if (this.env.profileDir) {
      fs.mkdirSync(this.env.profileDir, { recursive: true });
      node.push('--cpu-prof', `--cpu-prof-dir=${this.env.profileDir}`);
    }
    const copy = this.copy ? ['-o', `copy=${this.copy}`] : [];
    const extra = this.env.mountOpts?.length ? ['-o', this.env.mountOpts.join(',')] : [];
    await this.startDaemon(process.execPath, [...node, BIN.mount, '-f', ...copy, ...extra, this.images[0], this.root], this.root, 'mount_hammer2', {
      ...process.env,
      HAMMER2_QUIET_SHIM: '1',
    });
  }
}

class Fuse2fsTarget extends ImageTarget {
  readonly name = 'fuse2fs' as const;

  constructor(env: TargetEnv) {
    super(env, path.join(env.workdir, 'mnt-fuse2fs'), [path.join(env.workdir, `ext4-${env.seq}.img`)]);
  }

  protected async format(): Promise<void> {
    const r = spawnSync('mkfs.ext4', ['-F', '-q', this.images[0]], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`mkfs.ext4 failed: ${r.stderr || r.error?.message}`);
  }

  protected checker(): [string, string[]] {
    return ['e2fsck', ['-f', '-n', this.images[0]]];
  }

  protected async mount(): Promise<void> {
    await this.startDaemon('fuse2fs', [this.images[0], this.root, '-f'], this.root, 'fuse2fs');
  }

  protected override scanLog(text: string): void {
    // fuse2fs 1.47.0 says this on every read-write mount of an image with a
    // journal (it does not write the journal); not a problem of the run.
    super.scanLog(text.replace(/^.*Writing to the journal is not supported.*$/gm, ''));
  }
}

class MemfsTarget extends Target {
  readonly name = 'memfs' as const;
  readonly root: string;

  constructor(env: TargetEnv) {
    super(env);
    this.root = path.join(env.workdir, 'mnt-memfs');
  }

  async setup(): Promise<void> {
    await this.startDaemon(process.execPath, [BIN.memfs, this.root], this.root, 'memfs');
  }

  /** Nothing survives a remount of memory: cold means the kernel's caches dropped. */
  async cold(): Promise<void> {
    dropCaches();
  }

  async teardown(): Promise<void> {
    await this.stopDaemon(this.root);
  }
}

class LocalTarget extends Target {
  readonly name = 'local' as const;
  readonly root: string;

  constructor(env: TargetEnv) {
    super(env);
    this.root = path.join(env.workdir, `local-${env.seq}`);
  }

  async setup(): Promise<void> {
    cleanup.paths.add(this.root);
    fs.rmSync(this.root, { recursive: true, force: true });
    fs.mkdirSync(this.root, { recursive: true });
  }

  async cold(): Promise<void> {
    dropCaches();
  }

  async teardown(): Promise<void> {
    fs.rmSync(this.root, { recursive: true, force: true });
    cleanup.paths.delete(this.root);
  }
}

export function makeTarget(name: FsName, env: TargetEnv): Target {
  switch (name) {
    case 'hammer2fs':
      return new Hammer2Target(env);
    case 'hammer2fs-copy':
      return new Hammer2Target(env, true);
    case 'fuse2fs':
      return new Fuse2fsTarget(env);
    case 'memfs':
      return new MemfsTarget(env);
    case 'local':
      return new LocalTarget(env);
  }
}
