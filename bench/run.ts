#!/usr/bin/env node
// npm run bench [-- options]: hammer2fs against fuse2fs, an in-memory
// filesystem on our FUSE binding (memfs) and the local disk, in one run on one
// machine. See README.md ("Benchmarks") and `node dist/bench/run.js --help`.
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { Command } from 'commander';
import { ProfileSummary, summarizeProfiles } from './profile';
import { loadavg, sample } from './procstat';
import { resyncBench, resyncLines, ResyncResult } from './resync';
import { mirrorBench, mirrorLines, MirrorBenchResult } from './mirror';
import { GiB, RunRecord, mdTable, summarize, tableRows, targetLines, textTable } from './report';
import { BIN, cleanup, DEFAULT_FS, dropCaches, FS_DESCRIPTION, FS_NAMES, FsName, makeTarget, mountsUnder, forceUnmount, REPO, Target, tail, privateBuild } from './targets';
import type { Job } from './worker';
import { Ctx, FioReport, Settings, WORKLOADS, Workload } from './workloads';

const MiB = 1 << 20;

// ---- options ----

interface Opts {
  quick: boolean;
  reps?: string;
  only: string[];
  fs: string[];
  copies: boolean;
  mirror: boolean;
  size?: string;
  runtime?: string;
  files?: string;
  fsyncs?: string;
  tree?: string;
  imageSize: string;
  mountOpts: string[];
  scale: boolean;
  scaleFiles?: string;
  fio: boolean;
  profile: boolean;
  workdir: string;
  out: string;
  install: boolean;
  stepTimeout: string;
  privateBuild: boolean;
}

const list = (v: string, prev: string[]) => [...prev, ...v.split(',').map((s) => s.trim()).filter(Boolean)];

function parseArgs(): Opts {
  const p = new Command();
  p.name('npm run bench --')
    .description('Benchmark hammer2fs against fuse2fs, an in-memory FUSE filesystem (memfs) and the local disk')
    .option('--quick', 'smoke test: small sizes, 1 repetition', false)
    .option('--reps <n>', 'repetitions of every workload (default 3; 1 with --quick)')
    .option('--only <workloads>', `workloads to run, comma-separated: ${WORKLOADS.map((w) => w.name).join(', ')}`, list, [])
    .option('--fs <names>', `filesystems, comma-separated: ${FS_NAMES.join(', ')} (default: all but hammer2fs-copy)`, list, [])
    .option('--copies', 'also run hammer2fs-copy (the PFS kept on a second image) and report it against hammer2fs', false)
    .option('--mirror', 'also measure mirroring against cp -a and rsync -a on a tree of 100 000 files (5 000 with --quick)', false)
    .option('--size <MiB>', 'size of the sequential and random I/O files (default 1024; 64 with --quick)')
    .option('--runtime <s>', 'seconds of random I/O (default 30; 5 with --quick)')
    .option('--files <n>', 'files in the metadata workload (default 10000; 1000 with --quick)')
    .option('--fsyncs <n>', 'write+fsync pairs (default 1000; 200 with --quick)')
    .option('--tree <dir>', 'source tree to tar (default node_modules; node_modules/@tapjs with --quick)')
    .option('--image-size <GiB>', 'size of the (sparse) hammer2 and ext4 images', '16')
    .option('--scale', 'also run the scale workload (10 000, 100 000 and 1 000 000 files, 200 000 in one directory, a 100 GiB sparse file: hours on a small machine)', false)
    .option('--scale-files <n,n,...,one-dir>', 'file counts of the scale workload, the last one for the single directory (default 10000,100000,1000000,200000; --quick 1000,5000,20000,10000)')
    .option('--mount-opts <options>', 'extra -o options for the hammer2fs daemons (e.g. writeback_cache), to compare one setting', list, [])
    .option('--no-fio', 'use the built-in random I/O driver even if fio is installed')
    .option('--profile', 'CPU-profile the hammer2fs daemon (node --cpu-prof) and print its top self-time functions per workload', false)
    .option('--workdir <dir>', 'where images, mountpoints and temporaries go (on the local disk)', path.join(REPO, 'bench', 'results', 'work.tmp'))
    .option('--out <dir>', 'where the markdown and JSON results go', path.join(REPO, 'bench', 'results'))
    .option('--no-install', 'do not install missing tools (fuse2fs, fio, e2fsprogs) with bench/install-deps.sh')
    .option('--no-private-build', "run the work tree's dist/ as it is instead of a private build (faster; a concurrent rebuild can break the run)")
    .option('--step-timeout <s>', 'give up on one measured step after this many seconds', '3600')
    .showHelpAfterError();
  p.parse(process.argv);
  return p.opts() as Opts;
}

function scaleSettings(v: string | undefined, quick: boolean): Settings['scale'] {
  const counts = (v ?? (quick ? '1000,5000,20000,10000' : '10000,100000,1000000,200000')).split(',').map((x) => num(x.trim(), 0, '--scale-files'));
  if (counts.length < 2) throw new Error('--scale-files: at least one count and the single-directory count');
  return { files: counts.slice(0, -1).map(Math.round), oneDir: Math.round(counts[counts.length - 1]), sparseGiB: quick ? 4 : 100 };
}

function num(v: string | undefined, dflt: number, what: string): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${what}: not a positive number: ${v}`);
  return n;
}

// ---- progress display ----

class Progress {
  private readonly tty = !!process.stderr.isTTY;
  private timer: NodeJS.Timeout | null = null;
  done = 0;
  total = 0;
  head = '';
  sub = '';
  frac: number | null = null;
  private t0 = Date.now();
  private subT0 = Date.now();
  private readonly spin = '⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏';
  private tick = 0;

  start(): void {
    if (this.tty) this.timer = setInterval(() => this.render(), 150);
    this.timer?.unref();
  }
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (this.tty) process.stderr.write('\r\x1b[K');
  }
  begin(head: string): void {
    this.head = head;
    this.sub = 'setting up';
    this.frac = null;
    this.subT0 = Date.now();
    if (!this.tty) process.stderr.write(`[${this.done + 1}/${this.total}] ${head}\n`);
  }
  step(sub: string): void {
    this.sub = sub;
    this.frac = null;
    this.subT0 = Date.now();
  }
  /** A permanent line above the status line. */
  line(s: string): void {
    if (this.tty) process.stderr.write('\r\x1b[K');
    process.stderr.write(s + '\n');
    if (this.tty) this.render();
  }
  private render(): void {
    const el = (ms: number) => `${(ms / 1000).toFixed(1)}s`;
    const pct = this.frac === null ? '' : ` ${Math.round(this.frac * 100)}%`;
    const bar = this.total ? `[${this.done}/${this.total}]` : '';
    const s = `${this.spin[this.tick++ % this.spin.length]} ${bar} ${this.head} · ${this.sub}${pct} ${el(Date.now() - this.subT0)}  (total ${el(Date.now() - this.t0)})`;
    const cols = process.stderr.columns || 120;
    process.stderr.write('\r\x1b[K' + (s.length > cols - 1 ? s.slice(0, cols - 1) : s));
  }
}

// ---- child processes of a step ----

let interrupted = false;
const running = new Set<ChildProcess>();

function killRunning(): void {
  for (const c of running) {
    try {
      if (c.pid) process.kill(-c.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

/** Run a command in its own process group; lines of stdout go to onLine. */
function runChild(cmd: string, args: string[], timeoutS: number, onLine?: (l: string) => void): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    if (interrupted) return reject(new Error('interrupted'));
    const c = spawn(cmd, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(c);
    cleanup.procs.add(c);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-c.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
    }, timeoutS * 1000);
    readline.createInterface({ input: c.stdout! }).on('line', (l) => {
      stdout += l + '\n';
      onLine?.(l);
    });
    c.stderr!.on('data', (d) => (stderr += d));
    c.on('error', (e) => {
      clearTimeout(timer);
      running.delete(c);
      cleanup.procs.delete(c);
      reject(e);
    });
    c.on('close', (code, sig) => {
      clearTimeout(timer);
      running.delete(c);
      cleanup.procs.delete(c);
      if (interrupted) return reject(new Error('interrupted'));
      if (timedOut) return reject(new Error(`timed out after ${timeoutS} s`));
      if (sig) return reject(new Error(`${path.basename(cmd)} killed by ${sig}; stderr: ${stderr.trim().slice(-1000)}`));
      resolve({ code, stdout, stderr });
    });
  });
}

// ---- the tree for the tar workload ----

function walk(dir: string): Settings['tree'] {
  const out = { files: 0, dirs: 0, symlinks: 0, bytes: 0 };
  const go = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) {
        out.dirs++;
        go(p);
      } else if (e.isSymbolicLink()) out.symlinks++;
      else {
        out.files++;
        out.bytes += fs.lstatSync(p).size;
      }
    }
  };
  go(dir);
  return out;
}

function makeTarball(src: string, out: string): void {
  const r = spawnSync(
    'tar',
    ['--sort=name', '--mtime=@946684800', '--owner=0', '--group=0', '--numeric-owner', '--format=gnu', '-cf', out, '-C', src, '.'],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`tar of ${src} failed: ${r.stderr}`);
}

// ---- the machine ----

function sh(cmd: string): string {
  const r = spawnSync('sh', ['-c', cmd], { encoding: 'utf8' });
  return (r.stdout || '').trim();
}

function machine(): Record<string, unknown> {
  const cpu = /model name\s*:\s*(.*)/.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? os.cpus()[0]?.model;
  const dfT = sh(`df -T ${JSON.stringify(REPO)} | tail -1`).split(/\s+/);
  return {
    host: os.hostname(),
    cpu,
    cores: os.cpus().length,
    memoryGiB: +(os.totalmem() / GiB).toFixed(1),
    kernel: os.release(),
    os: sh('. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME"'),
    node: process.version,
    localDisk: { device: dfT[0], type: dfT[1] },
    versions: {
      fuse2fs: sh("dpkg-query -W -f='${Version}' fuse2fs 2>/dev/null"),
      fio: sh('fio --version 2>/dev/null'),
      libfuse3: sh("dpkg-query -W -f='${Version}' libfuse3-3 libfuse3-4 2>/dev/null"),
      libfuse2: sh("dpkg-query -W -f='${Version}' libfuse2 libfuse2t64 2>/dev/null"),
    },
    git: {
      commit: sh(`git -C ${JSON.stringify(REPO)} rev-parse --short HEAD 2>/dev/null`),
      dirtyFiles: Number(sh(`git -C ${JSON.stringify(REPO)} status --porcelain -- src mkfs native-shim 2>/dev/null | wc -l`)) || 0,
    },
  };
}

// ---- tools ----

function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

function ensureTools(fsList: FsName[], wantFio: boolean, install: boolean): void {
  const missing = () => [
    ...(fsList.includes('fuse2fs') && !have('fuse2fs') ? ['fuse2fs'] : []),
    ...(fsList.includes('fuse2fs') && !have('mkfs.ext4') ? ['mkfs.ext4'] : []),
    ...(wantFio && !have('fio') ? ['fio'] : []),
    ...(!have('tar') ? ['tar'] : []),
    ...(!have('fusermount') && !have('fusermount3') ? ['fusermount'] : []),
  ];
  let m = missing();
  if (m.length && install) {
    process.stderr.write(`bench: missing ${m.join(', ')}; running bench/install-deps.sh --system\n`);
    spawnSync('bash', [path.join(REPO, 'bench', 'install-deps.sh'), '--system'], { stdio: 'inherit' });
    m = missing();
  }
  const fatal = m.filter((x) => x !== 'fio');
  if (fatal.length) throw new Error(`missing ${fatal.join(', ')} (install with: bash bench/install-deps.sh)`);
}

// ---- work directory: one run at a time, leftovers of an interrupted run removed ----

function prepareWorkdir(dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  const lock = path.join(dir, 'run.pid');
  // Everything in here is deleted: refuse a directory that is not ours.
  if (!fs.existsSync(lock) && fs.readdirSync(dir).length) throw new Error(`${dir} is not empty and not a bench work directory; give an empty or new --workdir`);
  try {
    const pid = Number(fs.readFileSync(lock, 'utf8'));
    if (pid && pid !== process.pid) {
      let alive = false;
      try {
        process.kill(pid, 0);
        alive = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('bench/run.js');
      } catch {
        /* dead */
      }
      if (alive) throw new Error(`another benchmark (pid ${pid}) is using ${dir}`);
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  // Daemons an interrupted run left behind: by pid, and only if they still serve a mount in here.
  try {
    for (const l of fs.readFileSync(path.join(dir, 'daemons.pid'), 'utf8').split('\n')) {
      const pid = Number(l);
      if (!pid) continue;
      try {
        if (fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir)) process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  } catch {
    /* none */
  }
  for (const m of mountsUnder(dir)) forceUnmount(m);
  for (const e of fs.readdirSync(dir)) fs.rmSync(path.join(dir, e), { recursive: true, force: true });
  fs.writeFileSync(lock, String(process.pid));
}

// ---- one workload on one filesystem ----

interface RunContext {
  settings: Settings;
  workdir: string;
  profileRoot?: string;
  stepTimeout: number;
  progress: Progress;
  seq: number;
}

async function runOne(rc: RunContext, w: Workload, fsName: FsName, rep: number): Promise<RunRecord> {
  const rec: RunRecord = { workload: w.name, fs: fsName, rep, metrics: {}, info: {}, daemon: { cpu: null, peakRss: null, bytes: 0 }, wallSeconds: 0, problems: [] };
  const profileDir = rc.profileRoot && fsName === 'hammer2fs' ? path.join(rc.profileRoot, w.name) : undefined;
  const target: Target = makeTarget(fsName, {
    workdir: rc.workdir,
    imageSize: rc.settings.imageSize,
    seq: rc.seq++,
    profileDir,
    mountOpts: rc.settings.mountOpts,
  });
  const isFuse = fsName !== 'local';
  let cpu = 0;
  const t0 = Date.now();
  const pidFile = path.join(rc.workdir, 'daemons.pid');
  const notePid = () => {
    const pid = target.daemonPid();
    if (pid) fs.appendFileSync(pidFile, `${pid}\n`);
  };

  const windows: [number, number][] = [];
  const nowUs = () => Number(process.hrtime.bigint() / 1000n);
  const measure = async <T>(measured: boolean, fn: () => Promise<T>): Promise<T> => {
    const pid = target.daemonPid();
    const before = pid ? sample(pid) : null;
    const start = nowUs();
    try {
      return await fn();
    } finally {
      const after = pid ? sample(pid) : null;
      if (measured && before && after) cpu += after.cpu - before.cpu;
      if (measured) windows.push([start, nowUs()]);
      target.noteHwm();
    }
  };
  const failed = (label: string, e: unknown): Error => {
    const why = target.deadDaemon();
    return new Error(`${label}: ${(e as Error).message}${why ? `\n${why}` : ''}`);
  };

  const ctx: Ctx = {
    target,
    s: rc.settings,
    step: (label: string, job: Job, measured: boolean) =>
      measure(measured, async () => {
        rc.progress.step(label);
        const r = await runChild(process.execPath, [BIN.worker, JSON.stringify(job)], rc.stepTimeout, (l) => {
          if (l.startsWith('{"p":')) rc.progress.frac = JSON.parse(l).p;
        }).catch((e) => {
          throw failed(label, e);
        });
        const last = r.stdout.trim().split('\n').pop() ?? '';
        let msg: { result?: Record<string, number>; error?: string };
        try {
          msg = JSON.parse(last);
        } catch {
          throw failed(label, new Error(`worker said: ${(r.stdout + r.stderr).trim().slice(-1500) || `nothing (exit ${r.code})`}`));
        }
        if (msg.error || !msg.result) throw failed(label, new Error(msg.error ?? 'no result'));
        return msg.result;
      }),
    fio: (label: string, args: string[], seconds: number) =>
      measure(true, async () => {
        rc.progress.step(label);
        const t = Date.now();
        const tick = setInterval(() => (rc.progress.frac = Math.min(1, (Date.now() - t) / 1000 / seconds)), 250);
        try {
          const r = await runChild('fio', args, rc.stepTimeout).catch((e) => {
            throw failed(label, e);
          });
          if (r.code !== 0) throw failed(label, new Error(`fio exited ${r.code}: ${(r.stderr || r.stdout).trim().slice(-1500)}`));
          const i = r.stdout.indexOf('{');
          try {
            return JSON.parse(r.stdout.slice(i)) as FioReport;
          } catch {
            throw failed(label, new Error(`fio output is not JSON: ${r.stdout.slice(0, 500)}`));
          }
        } finally {
          clearInterval(tick);
        }
      }),
    cold: async () => {
      rc.progress.step(fsName === 'memfs' || fsName === 'local' ? 'dropping caches' : 'remounting cold');
      await target.cold();
      notePid();
    },
    checkOffline: async () => {
      rc.progress.step('offline check');
      const r = await target.checkOffline();
      notePid();
      return r;
    },
    metric: (k, v) => (rec.metrics[k] = v),
    info: (k, v) => (rec.info[k] = v),
    moved: (b) => (rec.daemon.bytes += b),
  };

  try {
    dropCaches();
    rc.progress.step('setting up');
    await target.setup();
    notePid();
    await w.run(ctx);
  } catch (e) {
    rec.error = (e as Error).message;
  } finally {
    rc.progress.step('tearing down');
    try {
      await target.teardown();
    } catch (e) {
      rec.error = (rec.error ? rec.error + '\n' : '') + `teardown: ${(e as Error).message}`;
    }
  }
  rec.wallSeconds = (Date.now() - t0) / 1000;
  if (profileDir && fs.existsSync(profileDir)) {
    // The measured steps, for the profile summary to keep only their samples.
    const wf = path.join(profileDir, 'windows.json');
    let all: [number, number][] = [];
    try {
      all = JSON.parse(fs.readFileSync(wf, 'utf8')) as [number, number][];
    } catch {
      /* first */
    }
    fs.writeFileSync(wf, JSON.stringify([...all, ...windows]));
  }
  if (isFuse) {
    rec.daemon.cpu = cpu;
    const hwm = target.peakRss();
    rec.daemon.peakRss = hwm || null;
  }
  rec.problems = [...target.problems];
  return rec;
}

// ---- output ----

function stamp(): string {
  const d = new Date();
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

function profileText(profiles: Record<string, ProfileSummary>): string {
  const out: string[] = [];
  for (const [w, p] of Object.entries(profiles)) {
    const scope = p.windows ? `in ${p.windows} measured step(s)` : 'whole daemon lifetimes';
    out.push(`${w}: ${p.files} daemon profile(s), ${scope}: busy ${(p.busyMs / 1000).toFixed(1)} s of ${(p.totalMs / 1000).toFixed(1)} s`);
    for (const l of p.top.slice(0, 12)) out.push(`  ${l.pct.toFixed(1).padStart(5)} %  ${l.selfMs.toFixed(0).padStart(7)} ms  ${l.fn}  ${l.where}`);
  }
  return out.join('\n');
}

async function main(): Promise<number> {
  const o = parseArgs();
  const quick = o.quick;
  const workloads = o.only.length
    ? o.only.map((n) => WORKLOADS.find((w) => w.name === n) ?? fail(`unknown workload "${n}" (${WORKLOADS.map((w) => w.name).join(', ')})`))
    : WORKLOADS.filter((w) => !w.optIn || (w.name === 'scale' && o.scale));
  const fsList = (o.fs.length ? o.fs : [...DEFAULT_FS, ...(o.copies ? ['hammer2fs-copy'] : [])]).map((n) => (FS_NAMES.includes(n as FsName) ? (n as FsName) : fail(`unknown filesystem "${n}" (${FS_NAMES.join(', ')})`)));
  if (process.getuid?.() !== 0) fail('the benchmark needs root (FUSE mounts of images, dropping caches)');
  if (!fs.existsSync('/dev/fuse')) fail('no /dev/fuse');
  for (const bin of [BIN.worker, BIN.mount, BIN.memfs]) if (!fs.existsSync(bin)) fail(`${bin} missing: run npm run build`);

  ensureTools(fsList, o.fio, o.install);
  const useFio = o.fio && have('fio');
  const treeSource = path.resolve(REPO, o.tree ?? (quick ? 'node_modules/@tapjs' : 'node_modules'));
  const settings: Settings = {
    quick,
    reps: Math.round(num(o.reps, quick ? 1 : 3, '--reps')),
    size: Math.round(num(o.size, quick ? 64 : 1024, '--size')) * MiB,
    runtime: num(o.runtime, quick ? 5 : 30, '--runtime'),
    fsyncs: Math.round(num(o.fsyncs, quick ? 200 : 1000, '--fsyncs')),
    files: Math.round(num(o.files, quick ? 1000 : 10000, '--files')),
    tarball: '',
    treeSource: path.relative(REPO, treeSource) || treeSource,
    tree: { files: 0, dirs: 0, symlinks: 0, bytes: 0 },
    imageSize: Math.round(num(o.imageSize, 16, '--image-size') * GiB),
    useFio,
    verifyChunks: 16,
    mountOpts: o.mountOpts,
    scale: scaleSettings(o.scaleFiles, quick),
  };
  for (const w of workloads) w.configure?.(settings);
  const workdir = path.resolve(o.workdir);
  const outDir = path.resolve(o.out);
  const runId = stamp() + (quick ? '-quick' : '');
  const profileRoot = o.profile ? path.join(outDir, 'profiles', runId) : undefined;

  const progress = new Progress();
  let secondSignal = false;
  const onSignal = (sig: string) => {
    if (interrupted) {
      if (!secondSignal) {
        secondSignal = true;
        progress.stop();
        process.stderr.write(`bench: ${sig} again: killing everything now\n`);
        cleanup.now();
        process.exit(130);
      }
      return;
    }
    interrupted = true;
    progress.line(`bench: ${sig}: stopping, unmounting and removing everything (again to force)`);
    killRunning();
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGHUP', () => onSignal('SIGHUP'));
  process.on('exit', () => cleanup.now());

  prepareWorkdir(workdir);
  // Ours from here on: removed at the end whatever happens.
  cleanup.paths.add(workdir);
  if (o.privateBuild) {
    process.stderr.write('bench: building hammer2fs privately (tsc into the work directory)\n');
    const complaints = privateBuild(path.join(workdir, 'build'));
    if (complaints) process.stderr.write(`bench: tsc complained (the build is used anyway):\n${tail(complaints, 10)}\n`);
    for (const bin of [BIN.worker, BIN.mount, BIN.memfs]) if (!fs.existsSync(bin)) fail(`private build: ${bin} missing`);
  }
  if (!dropCaches()) process.stderr.write('bench: cannot drop caches: "cold" figures are not cold\n');

  const meta = { runId, started: new Date().toISOString(), machine: machine(), loadStart: loadavg() };
  const load = meta.loadStart[0] ?? 0;
  if (load > os.cpus().length * 0.5) {
    process.stderr.write(`bench: load average ${load} on ${os.cpus().length} CPUs: other work is running; absolute figures will be unreliable (ratios less so)\n`);
  }

  if (workloads.some((w) => w.name === 'tar' || w.name === 'parallel')) {
    if (!fs.existsSync(treeSource)) fail(`tree ${treeSource} missing`);
    settings.tree = walk(treeSource);
    settings.tarball = path.join(workdir, `tree-${path.basename(treeSource)}.tar`);
    makeTarball(treeSource, settings.tarball);
  }

  process.stderr.write(
    `bench: ${workloads.map((w) => w.name).join(', ')} on ${fsList.join(', ')}; ${settings.reps} repetition(s); ` +
      `${settings.size / MiB} MiB files${useFio ? ', fio' : ', built-in random I/O'}${o.profile ? ', profiling hammer2fs' : ''}${settings.mountOpts.length ? `, hammer2fs -o ${settings.mountOpts.join(',')}` : ''}\n`,
  );
  const rc: RunContext = { settings, workdir, profileRoot, stepTimeout: num(o.stepTimeout, 3600, '--step-timeout'), progress, seq: 1 };
  const runs: RunRecord[] = [];
  progress.total = settings.reps * workloads.length * fsList.length;
  progress.start();
  outer: for (let rep = 1; rep <= settings.reps; rep++) {
    for (const w of workloads) {
      // Rotate the order each repetition so that no filesystem always goes first.
      const order = fsList.map((_, i) => fsList[(i + rep - 1) % fsList.length]);
      for (const f of order) {
        if (interrupted) break outer;
        progress.begin(`rep ${rep}/${settings.reps} · ${w.name} · ${f}`);
        const r = await runOne(rc, w, f, rep);
        progress.done++;
        if (interrupted && r.error) break outer;
        runs.push(r);
        const m = Object.entries(r.metrics)
          .map(([k, v]) => `${w.metrics.find((d) => d.key === k)?.label ?? k} ${v.toPrecision(4)}`)
          .join(', ');
        const d =
          r.daemon.cpu !== null ? `; daemon ${r.daemon.cpu.toFixed(2)} s CPU, ${r.daemon.peakRss ? (r.daemon.peakRss / MiB).toFixed(0) : '?'} MiB peak` : '';
        progress.line(
          `  rep ${rep} ${w.name.padEnd(13)} ${f.padEnd(9)} ${r.error ? `FAILED: ${r.error.split('\n')[0]}` : m + d} (${r.wallSeconds.toFixed(1)} s)`,
        );
        if (r.error) progress.line(tail(r.error, 12).replace(/^/gm, '      '));
        for (const p of r.problems) progress.line(`      ! ${p}`);
      }
    }
  }
  progress.stop();

  // Copies: the cost of a resynchronization against the size of the change (fs layer, no FUSE).
  let resync: ResyncResult | null = null;
  let resyncError: string | null = null;
  if (o.copies && !interrupted) {
    try {
      resync = await resyncBench(quick ? 256 : 2048, path.join(workdir, 'resync'), (m) => process.stderr.write(`${m}\n`));
    } catch (e) {
      resyncError = (e as Error).message;
    }
  }
  const resyncText = resync ? resyncLines(resync) : resyncError ? [`resync measurement failed: ${resyncError}`] : [];

  // Mirroring: a pass against cp -a / rsync -a between mounts, full and after a 1 % change.
  let mirror: MirrorBenchResult | null = null;
  let mirrorError: string | null = null;
  if (o.mirror && !interrupted) {
    try {
      mirror = await mirrorBench({ files: quick ? 5000 : 100000, reps: quick ? 1 : 3, sizeMiB: quick ? 256 : 2048, dir: path.join(workdir, 'mirror') }, (m) => process.stderr.write(`${m}\n`));
    } catch (e) {
      mirrorError = (e as Error).message;
    }
  }
  resyncText.push(...(mirror ? mirrorLines(mirror) : mirrorError ? [`mirror measurement failed: ${mirrorError}`] : []));

  const rows = summarize(workloads, fsList, runs);
  const table = tableRows(rows, fsList);
  const targets = targetLines(rows, runs);
  const profiles: Record<string, ProfileSummary> = {};
  if (profileRoot) {
    for (const w of workloads) {
      const p = summarizeProfiles(path.join(profileRoot, w.name));
      if (p) profiles[w.name] = p;
    }
  }
  const problems = [...new Set(runs.flatMap((r) => r.problems))];
  const failures = runs.filter((r) => r.error).map((r) => ({ workload: r.workload, fs: r.fs, rep: r.rep, error: r.error! }));
  const ended = { ended: new Date().toISOString(), loadEnd: loadavg(), interrupted };

  // Terminal
  const legend =
    'median ±spread (max−min over median) of the repetitions. "h2 vs X" = how many times better hammer2fs is than X ' +
    '(its rate over X\'s, or X\'s time/latency/memory/CPU over its own): > 1 is better; ✓/✗ = the targets of issue 13 ' +
    '(bench/report.ts TARGETS: randrw ≥ 1× fuse2fs and CPU ≤ 3×; fsync ≥ 0.8×, p99 ≤ 2×; seqwrite ≥ 2× fuse2fs and ≥ 0.5× memfs; ' +
    'seqread ≥ 0.8× memfs; tar and four parallel clients ≥ 2× fuse2fs; metadata ≥ 2× fuse2fs).';
  process.stdout.write(`\n${textTable(table)}\n\n${legend}\n`);
  if (targets.length) process.stdout.write(`\n${targets.map((t) => `• ${t}`).join('\n')}\n`);
  if (resyncText.length) process.stdout.write(`\n${resyncText.map((t) => `• ${t}`).join('\n')}\n`);
  if (Object.keys(profiles).length) process.stdout.write(`\nWhere the hammer2fs daemon spends its CPU (self time; profiles in ${path.relative(process.cwd(), profileRoot!)}):\n${profileText(profiles)}\n`);
  if (failures.length) process.stdout.write(`\nFailures:\n${failures.map((f) => `  ${f.workload} on ${f.fs} (rep ${f.rep}): ${f.error.split('\n')[0]}`).join('\n')}\n`);
  if (problems.length) process.stdout.write(`\nDaemon log lines worth a look:\n${problems.map((p) => `  ${p}`).join('\n')}\n`);

  // Files
  fs.mkdirSync(outDir, { recursive: true });
  const base = path.join(outDir, `bench-${runId}`);
  const json = {
    ...meta,
    ...ended,
    settings: { ...settings, tarball: path.basename(settings.tarball) },
    filesystems: Object.fromEntries(fsList.map((f) => [f, FS_DESCRIPTION[f]])),
    workloads: workloads.map((w) => ({ name: w.name, title: w.title, description: w.describe(settings), metrics: w.metrics })),
    summary: rows.map((r) => ({ workload: r.workload, metric: r.metric.key, label: r.metric.label, better: r.metric.better, cells: r.cells, vsFuse2fs: r.vsFuse2fs ?? null, vsMemfs: r.vsMemfs ?? null, pairedVsFuse2fs: r.pairedVsFuse2fs, pairedVsMemfs: r.pairedVsMemfs, errors: r.errors })),
    targets,
    resync,
    mirror,
    runs,
    failures,
    problems,
    profiles,
  };
  fs.writeFileSync(base + '.json', JSON.stringify(json, null, 1) + '\n');
  const m = meta.machine as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  const md = [
    `# hammer2fs benchmark ${runId}`,
    '',
    `Machine: ${m.cpu}, ${m.cores} CPUs, ${m.memoryGiB} GiB, ${m.os}, Linux ${m.kernel}, Node ${m.node}; local disk ${m.localDisk.device} (${m.localDisk.type}). ` +
      `hammer2fs at ${m.git.commit}${m.git.dirtyFiles ? ` with ${m.git.dirtyFiles} changed files` : ''}; fuse2fs ${m.versions.fuse2fs}; ${m.versions.fio || 'no fio'}. ` +
      `Load average ${meta.loadStart.join(' ')} at the start, ${ended.loadEnd.join(' ')} at the end.${interrupted ? ' **Interrupted.**' : ''}`,
    '',
    `${settings.reps} repetition(s)${quick ? ' (--quick)' : ''}${settings.mountOpts.length ? `; hammer2fs mounted with -o ${settings.mountOpts.join(',')}` : ''}; ${legend}`,
    '',
    mdTable(table),
    '',
    ...(targets.length ? ['Targets (issue 13):', '', ...targets.map((t) => `- ${t}`), ''] : []),
    ...(resyncText.length ? ['Copies and mirroring:', '', ...resyncText.map((t) => `- ${t}`), ''] : []),
    '## Filesystems',
    '',
    ...fsList.map((f) => `- **${f}**: ${FS_DESCRIPTION[f]}`),
    '',
    '## Workloads',
    '',
    ...workloads.map((w) => `- **${w.name}** (${w.title}): ${w.describe(settings)}`),
    '- **daemon**: CPU = utime + stime of the FUSE daemon (/proc/PID/stat) over the measured steps; per GiB of data those steps moved. ' +
      'Peak RSS = the largest VmHWM (/proc/PID/status) of the daemons of the workload run (it includes preparing and remounts).',
    '',
    ...(Object.keys(profiles).length ? ['## hammer2fs daemon profile (self time)', '', '```', profileText(profiles), '```', ''] : []),
    ...(failures.length ? ['## Failures', '', ...failures.map((f) => `- ${f.workload} on ${f.fs}, rep ${f.rep}:\n\n  \`\`\`\n${f.error.replace(/^/gm, '  ')}\n  \`\`\``), ''] : []),
    ...(problems.length ? ['## Daemon log lines worth a look', '', ...problems.map((p) => `- \`${p.replace(/`/g, "'")}\``), ''] : []),
  ].join('\n');
  fs.writeFileSync(base + '.md', md + '\n');
  process.stdout.write(`\nResults: ${path.relative(process.cwd(), base)}.md and .json\n`);
  return interrupted ? 130 : failures.length ? 1 : 0;
}

function fail(msg: string): never {
  throw new Error(msg);
}

main()
  .then((code) => {
    cleanup.now();
    process.exit(code);
  })
  .catch((e) => {
    process.stderr.write(`\nbench: ${(e as Error).message}\n`);
    cleanup.now();
    process.exit(1);
  });
