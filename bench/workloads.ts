// The workloads, each a short script of steps run against one filesystem.
// Measured steps run in a worker process (bench/worker.ts) or fio; the
// runner adds the daemon's CPU time over each measured step.
import * as path from 'node:path';
import type { Job } from './worker';
import type { Target } from './targets';

export interface Settings {
  quick: boolean;
  reps: number;
  /** bytes of each sequential file and of the random I/O file */
  size: number;
  /** seconds of random I/O */
  runtime: number;
  fsyncs: number;
  files: number;
  /** the tarball extracted and re-archived, and what it holds */
  tarball: string;
  treeSource: string;
  tree: { files: number; dirs: number; symlinks: number; bytes: number };
  imageSize: number;
  useFio: boolean;
  /** 1 MiB chunks checked after each sequential read */
  verifyChunks: number;
  /** extra -o options of the hammer2fs daemons (--mount-opts), for A/B runs of one option */
  mountOpts: string[];
  /** the scale workload: file counts (1 000 files per directory), files in one directory, GiB of the sparse file */
  scale: { files: number[]; oneDir: number; sparseGiB: number };
}

export interface MetricDef {
  key: string;
  label: string;
  better: 'higher' | 'lower';
  /** shown, but no ratio (not a speed: e.g. space used) */
  noRatio?: boolean;
}

export interface Ctx {
  target: Target;
  s: Settings;
  /** Run a worker job; measured steps count towards the daemon's CPU. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  step(label: string, job: Job, measured: boolean): Promise<Record<string, any>>;
  /** Run fio (measured); returns its JSON report. */
  fio(label: string, args: string[], seconds: number): Promise<FioReport>;
  /** Make the filesystem's caches cold (remount + drop caches). */
  cold(): Promise<void>;
  /** Check the filesystem offline and remount it cold (see Target.checkOffline); null without an image. */
  checkOffline(): Promise<{ seconds: number; rss: number } | null>;
  metric(key: string, value: number): void;
  info(key: string, value: unknown): void;
  /** Data bytes moved by measured steps (for CPU seconds per GiB). */
  moved(bytes: number): void;
}

export interface FioReport {
  jobs: { read: FioSide; write: FioSide; job_runtime?: number }[];
  'fio version'?: string;
}
interface FioSide {
  iops: number;
  io_bytes: number;
  /** bytes per second (with group_reporting: all jobs together) */
  bw_bytes?: number;
  clat_ns?: { mean?: number; percentile?: Record<string, number> };
}

export interface Workload {
  name: string;
  title: string;
  describe(s: Settings): string;
  metrics: MetricDef[];
  /** moves enough data for CPU seconds per GiB to mean something */
  dataHeavy: boolean;
  /** only with a flag (--scale), never by default */
  optIn?: boolean;
  /** metrics that depend on the settings are made here, before any run */
  configure?(s: Settings): void;
  run(ctx: Ctx): Promise<void>;
}

const MB = 1e6;
const mib = (n: number) => `${Math.round(n / 1048576)} MiB`;

/** A file count as the scale workload names its tiers: 10k, 1M. */
const tierName = (n: number) => (n >= 1e6 && n % 1e6 === 0 ? `${n / 1e6}M` : n >= 1000 && n % 1000 === 0 ? `${n / 1000}k` : String(n));

export const WORKLOADS: Workload[] = [
  {
    name: 'seqwrite',
    title: 'sequential write',
    describe: (s) =>
      `write one ${mib(s.size)} file of pseudo-random (incompressible) data with 1 MiB write() calls, then fsync and close; ` +
      `time from open to the end of fsync`,
    metrics: [{ key: 'mbps', label: 'write MB/s', better: 'higher' }],
    dataHeavy: true,
    async run(c) {
      const r = await c.step('writing', { op: 'seqwrite', file: path.join(c.target.root, 'seq.dat'), size: c.s.size, kind: 'random', seed: 11 }, true);
      c.metric('mbps', r.bytes / r.seconds / MB);
      c.moved(r.bytes);
    },
  },
  {
    name: 'seqwrite-comp',
    title: 'sequential write, compressible',
    describe: (s) =>
      `as seqwrite, with log-like text lines (LZ4 packs each 64 KiB to about 35 %, which HAMMER2 stores in a 32 KiB block); ` +
      `"stored %" is st_blocks × 512 over the size after fsync`,
    metrics: [
      { key: 'mbps', label: 'write MB/s', better: 'higher' },
      { key: 'stored', label: 'stored %', better: 'lower', noRatio: true },
    ],
    dataHeavy: true,
    async run(c) {
      const r = await c.step('writing', { op: 'seqwrite', file: path.join(c.target.root, 'text.dat'), size: c.s.size, kind: 'text', seed: 12 }, true);
      c.metric('mbps', r.bytes / r.seconds / MB);
      if (r.storedBytes > 0) c.metric('stored', (100 * r.storedBytes) / r.size);
      c.moved(r.bytes);
    },
  },
  {
    name: 'seqread',
    title: 'sequential read, cold',
    describe: (s) =>
      `write a ${mib(s.size)} pseudo-random file (not timed), unmount, drop the kernel's caches, mount again, ` +
      `then read it with 1 MiB read() calls (memfs and local: caches dropped, no remount); ${s.verifyChunks} MiB are verified afterwards`,
    metrics: [{ key: 'mbps', label: 'read MB/s', better: 'higher' }],
    dataHeavy: true,
    async run(c) {
      const file = path.join(c.target.root, 'seq.dat');
      await c.step('preparing', { op: 'seqwrite', file, size: c.s.size, kind: 'random', seed: 13 }, false);
      await c.cold();
      const r = await c.step('reading', { op: 'seqread', file, size: c.s.size, kind: 'random', seed: 13, verify: c.s.verifyChunks }, true);
      c.metric('mbps', r.bytes / r.seconds / MB);
      c.moved(r.bytes);
    },
  },
  {
    name: 'randrw',
    title: 'random 4 KiB read/write',
    describe: (s) =>
      (s.useFio
        ? `fio, one job: rw=randrw rwmixread=50 bs=4k ioengine=psync (buffered; fadvise RANDOM, no readahead) over a ${mib(s.size)} file ` +
          `for ${s.runtime} s (time_based, norandommap, end_fsync=1)`
        : `built-in driver (fio missing or --no-fio): 4 KiB pread/pwrite, half each, uniformly random over a ${mib(s.size)} file for ${s.runtime} s, then fsync (Node cannot fadvise: kernel readahead stays on, so reads cost more than with fio)`) +
      `; the file is written sequentially first (not timed) and caches dropped (memfs/local) or the fs remounted`,
    metrics: [
      { key: 'riops', label: 'read IOPS', better: 'higher' },
      { key: 'wiops', label: 'write IOPS', better: 'higher' },
    ],
    dataHeavy: true,
    async run(c) {
      const file = path.join(c.target.root, 'rand.dat');
      await c.step('preparing', { op: 'seqwrite', file, size: c.s.size, kind: 'random', seed: 14 }, false);
      await c.cold();
      if (c.s.useFio) {
        const rep = await c.fio(
          'random I/O (fio)',
          [
            '--name=randrw',
            `--filename=${file}`,
            '--rw=randrw',
            '--rwmixread=50',
            '--bs=4k',
            `--size=${c.s.size}`,
            `--runtime=${c.s.runtime}`,
            '--time_based',
            '--ioengine=psync',
            '--invalidate=1',
            '--norandommap',
            '--randrepeat=1',
            '--end_fsync=1',
            '--output-format=json',
          ],
          c.s.runtime,
        );
        const j = rep.jobs[0];
        c.metric('riops', j.read.iops);
        c.metric('wiops', j.write.iops);
        c.moved(j.read.io_bytes + j.write.io_bytes);
        const lat = (s: FioSide) => s.clat_ns?.percentile?.['99.000000'];
        c.info('read p99 µs', (lat(j.read) ?? NaN) / 1000);
        c.info('write p99 µs', (lat(j.write) ?? NaN) / 1000);
      } else {
        const r = await c.step('random I/O', { op: 'randrw', file, size: c.s.size, runtime: c.s.runtime, seed: 15 }, true);
        c.metric('riops', r.readIops);
        c.metric('wiops', r.writeIops);
        c.moved(r.bytes);
      }
    },
  },
  {
    name: 'fsync',
    title: 'write + fsync',
    describe: (s) => `${s.fsyncs} × (4 KiB write() appended to one file, then fsync()); latency is per write+fsync pair`,
    metrics: [
      { key: 'ops', label: 'ops/s', better: 'higher' },
      { key: 'p50', label: 'p50 ms', better: 'lower' },
      { key: 'p99', label: 'p99 ms', better: 'lower' },
    ],
    dataHeavy: false,
    async run(c) {
      const r = await c.step('write+fsync', { op: 'fsync', file: path.join(c.target.root, 'fsync.dat'), count: c.s.fsyncs }, true);
      c.metric('ops', r.count / r.seconds);
      c.metric('p50', r.p50 * 1000);
      c.metric('p99', r.p99 * 1000);
      c.moved(r.bytes);
    },
  },
  {
    name: 'meta',
    title: 'metadata, one directory',
    describe: (s) =>
      `in one directory: create ${s.files} empty files (open O_CREAT|O_EXCL + close, then fsync of the directory and syncfs); ` +
      `remount cold, lstat each in a fixed shuffled order; remount cold, readdir the whole directory; ` +
      `unlink each (then fsync of the directory and syncfs)`,
    metrics: [
      { key: 'create', label: 'create /s', better: 'higher' },
      { key: 'stat', label: 'stat (cold) /s', better: 'higher' },
      { key: 'readdir', label: 'readdir (cold) entries/s', better: 'higher' },
      { key: 'unlink', label: 'unlink /s', better: 'higher' },
    ],
    dataHeavy: false,
    async run(c) {
      const dir = path.join(c.target.root, 'many');
      const n = c.s.files;
      const cr = await c.step('create', { op: 'create', dir, count: n }, true);
      c.metric('create', n / cr.seconds);
      await c.cold();
      const st = await c.step('stat', { op: 'stat', dir, count: n }, true);
      c.metric('stat', n / st.seconds);
      await c.cold();
      const rd = await c.step('readdir', { op: 'readdir', dir, count: n }, true);
      c.metric('readdir', n / rd.seconds);
      const ul = await c.step('unlink', { op: 'unlink', dir, count: n }, true);
      c.metric('unlink', n / ul.seconds);
    },
  },
  {
    name: 'tar',
    title: 'source tree with tar',
    describe: (s) =>
      `extract ${path.basename(s.tarball)} (${s.tree.files} files, ${s.tree.dirs} directories, ${s.tree.symlinks} symlinks, ` +
      `${(s.tree.bytes / MB).toFixed(1)} MB; an uncompressed tarball of ${s.treeSource} made with sorted names and fixed owners and times) ` +
      `with tar -xf, then fsync of the top directory and syncfs; the tree is checked (counts and sizes, not timed); remount cold; ` +
      `re-archive it with tar -cf - | wc -c`,
    metrics: [
      { key: 'extract', label: 'extract s', better: 'lower' },
      { key: 'archive', label: 're-archive s', better: 'lower' },
    ],
    dataHeavy: false,
    async run(c) {
      const dir = path.join(c.target.root, 'tree');
      const x = await c.step(
        'tar -x',
        { op: 'exec', cmd: 'sh', args: ['-c', 'mkdir -p "$1" && exec tar -xf "$2" -C "$1"', 'sh', dir, c.s.tarball], syncDir: dir },
        true,
      );
      c.metric('extract', x.seconds);
      const t = (await c.step('checking the tree', { op: 'tree', dir }, false)) as unknown as Settings['tree'];
      const want = c.s.tree;
      if (t.files !== want.files || t.dirs !== want.dirs || t.symlinks !== want.symlinks || t.bytes !== want.bytes) {
        throw new Error(`extracted tree differs: ${JSON.stringify(t)} instead of ${JSON.stringify(want)}`);
      }
      await c.cold();
      const a = await c.step('tar -c', { op: 'exec', cmd: 'sh', args: ['-c', 'tar -cf - -C "$1" . | wc -c', 'sh', dir] }, true);
      c.metric('archive', a.seconds);
      c.moved(2 * want.bytes);
    },
  },
  {
    name: 'parallel',
    title: 'parallel clients',
    describe: (s) =>
      `one client, then four at once: fio rw=randread bs=4k ioengine=psync direct=1 over one ${mib(s.size)} file for ${Math.max(1, Math.round(s.runtime / 2))} s each, ` +
      `numjobs=1 then 4 (cold before each); fio rw=write bs=1M of ${mib(s.size)} into one file, then 4 writers of ${mib(s.size / 4)} into separate files (end_fsync); ` +
      `tar -xf of the tarball into one directory, then 4 extractions at once into separate directories (then fsync and syncfs). ` +
      `Aggregate throughput of all clients (compare ×4 with ×1 of the same filesystem). Needs fio`,
    metrics: [
      { key: 'rr1', label: 'rand read IOPS ×1', better: 'higher' },
      { key: 'rr4', label: 'rand read IOPS ×4', better: 'higher' },
      { key: 'sw1', label: 'seq write MB/s ×1', better: 'higher' },
      { key: 'sw4', label: 'seq write MB/s ×4', better: 'higher' },
      { key: 'tar1', label: 'tar -x files/s ×1', better: 'higher' },
      { key: 'tar4', label: 'tar -x files/s ×4', better: 'higher' },
    ],
    dataHeavy: true,
    async run(c) {
      if (!c.s.useFio) throw new Error('the parallel workload needs fio (installed by bench/install-deps.sh; not with --no-fio)');
      const root = c.target.root;
      const file = path.join(root, 'par.dat');
      await c.step('preparing', { op: 'seqwrite', file, size: c.s.size, kind: 'random', seed: 21 }, false);
      const secs = Math.max(1, Math.round(c.s.runtime / 2));
      const common = ['--ioengine=psync', '--group_reporting', '--output-format=json'];
      for (const jobs of [1, 4]) {
        await c.cold();
        const rep = await c.fio(
          `random reads ×${jobs}`,
          // O_DIRECT: every read reaches the filesystem (with the page cache, later reads hit what earlier ones brought in, four clients four times as fast).
          ['--name=rr', `--filename=${file}`, '--rw=randread', '--bs=4k', `--size=${c.s.size}`, `--runtime=${secs}`, '--time_based', '--direct=1', '--norandommap', '--randrepeat=1', `--numjobs=${jobs}`, ...common],
          secs,
        );
        c.metric(`rr${jobs}`, rep.jobs[0].read.iops);
        c.moved(rep.jobs[0].read.io_bytes);
      }
      for (const jobs of [1, 4]) {
        const rep = await c.fio(
          `sequential writers ×${jobs}`,
          ['--name=sw', `--directory=${root}`, `--filename_format=sw${jobs}.$jobnum`, '--rw=write', '--bs=1M', `--size=${Math.floor(c.s.size / jobs)}`, '--end_fsync=1', `--numjobs=${jobs}`, ...common],
          60,
        );
        const w = rep.jobs[0].write;
        c.metric(`sw${jobs}`, (w.bw_bytes ?? 0) / MB);
        c.moved(w.io_bytes);
      }
      const files = c.s.tree.files + c.s.tree.dirs + c.s.tree.symlinks;
      for (const jobs of [1, 4]) {
        const dir = path.join(root, `tar${jobs}`);
        const x = await c.step(
          `tar -x ×${jobs}`,
          {
            op: 'exec',
            cmd: 'sh',
            args: ['-c', 'p=; i=0; while [ $i -lt "$3" ]; do i=$((i+1)); mkdir -p "$1/$i" && { tar -xf "$2" -C "$1/$i" & p="$p $!"; }; done; for x in $p; do wait $x || exit 1; done', 'sh', dir, c.s.tarball, String(jobs)],
            syncDir: dir,
          },
          true,
        );
        c.metric(`tar${jobs}`, (jobs * files) / x.seconds);
        c.moved(jobs * c.s.tree.bytes);
        for (let i = 1; i <= jobs; i++) {
          const t = (await c.step('checking the trees', { op: 'tree', dir: path.join(dir, String(i)) }, false)) as unknown as Settings['tree'];
          if (t.files !== c.s.tree.files || t.bytes !== c.s.tree.bytes) throw new Error(`extracted tree ${i} of ${jobs} differs: ${JSON.stringify(t)}`);
        }
      }
    },
  },
  {
    name: 'scale',
    title: 'scale',
    optIn: true,
    describe: (s) =>
      `create (open O_CREAT|O_EXCL + close), cold lstat in a shuffled order, cold readdir and unlink of ${s.scale.files.map((n) => n.toLocaleString('en-US')).join(', ')} empty files, ` +
      `1 000 per directory, and of ${s.scale.oneDir.toLocaleString('en-US')} files in one directory (each tier on a fresh filesystem; fsync of the directories and syncfs after create and unlink); ` +
      `the time to mount (daemon start to a live mount) and the time and peak RSS of an offline check (fsck_hammer2, e2fsck -fn) with the largest tier in place; fio random 4 KiB reads for ${Math.max(1, Math.round(s.runtime / 2))} s over a ${s.scale.sparseGiB} GiB sparse file holding one 64 KiB block per GiB`,
    metrics: [],
    dataHeavy: false,
    configure(s) {
      const tiers = [...s.scale.files.map((n) => ({ key: tierName(n), label: `${tierName(n)} files` })), { key: `${tierName(s.scale.oneDir)}dir`, label: `${tierName(s.scale.oneDir)} in one dir` }];
      this.metrics = [
        ...tiers.flatMap((t) => [
          { key: `create${t.key}`, label: `create /s, ${t.label}`, better: 'higher' as const },
          { key: `stat${t.key}`, label: `stat (cold) /s, ${t.label}`, better: 'higher' as const },
          { key: `readdir${t.key}`, label: `readdir (cold) entries/s, ${t.label}`, better: 'higher' as const },
          { key: `unlink${t.key}`, label: `unlink /s, ${t.label}`, better: 'higher' as const },
        ]),
        { key: 'mount', label: `mount s, ${tiers[tiers.length - 2].label}`, better: 'lower' },
        { key: 'fsck', label: `offline check s, ${tiers[tiers.length - 2].label}`, better: 'lower' },
        { key: 'fsckRss', label: `offline check peak RSS MiB, ${tiers[tiers.length - 2].label}`, better: 'lower' },
        { key: 'sparse', label: `rand read IOPS, ${s.scale.sparseGiB} GiB sparse`, better: 'higher' },
      ];
    },
    async run(c) {
      const tiers = [...c.s.scale.files.map((n) => ({ key: tierName(n), n, dirs: Math.max(1, Math.ceil(n / 1000)) })), { key: `${tierName(c.s.scale.oneDir)}dir`, n: c.s.scale.oneDir, dirs: 1 }];
      const largest = tiers.length - 2;
      for (const [i, t] of tiers.entries()) {
        const dir = path.join(c.target.root, `scale-${t.key}`);
        const job = { dir, count: t.n, dirs: t.dirs };
        const cr = await c.step(`create ${t.key}`, { op: 'create', ...job }, true);
        c.metric(`create${t.key}`, t.n / cr.seconds);
        // The largest tier's image is checked offline (its checker's time and memory), which leaves it cold too.
        const checked = i === largest ? await c.checkOffline() : null;
        if (checked) {
          c.metric('fsck', checked.seconds);
          c.metric('fsckRss', checked.rss / 1048576);
        } else {
          await c.cold();
        }
        // The mount alone, not the unmount's final commit before it (memfs and local do not remount).
        if (i === largest && c.target.name !== 'memfs' && c.target.name !== 'local') c.metric('mount', c.target.mountSeconds);
        const st = await c.step(`stat ${t.key}`, { op: 'stat', ...job }, true);
        c.metric(`stat${t.key}`, t.n / st.seconds);
        await c.cold();
        const rd = await c.step(`readdir ${t.key}`, { op: 'readdir', ...job }, true);
        c.metric(`readdir${t.key}`, t.n / rd.seconds);
        const ul = await c.step(`unlink ${t.key}`, { op: 'unlink', ...job }, true);
        c.metric(`unlink${t.key}`, t.n / ul.seconds);
      }
      if (!c.s.useFio) throw new Error('the sparse-file part of the scale workload needs fio');
      const file = path.join(c.target.root, 'sparse.dat');
      const gib = c.s.scale.sparseGiB;
      await c.step(
        'sparse file',
        { op: 'exec', cmd: 'sh', args: ['-c', 'truncate -s "$2G" "$1" && i=0; while [ $i -lt "$2" ]; do dd if=/dev/urandom of="$1" bs=64k count=1 seek=$((i * 16384)) conv=notrunc status=none || exit 1; i=$((i+1)); done', 'sh', file, String(gib)], syncDir: c.target.root },
        false,
      );
      await c.cold();
      const secs = Math.max(1, Math.round(c.s.runtime / 2));
      const rep = await c.fio('sparse random reads', ['--name=sparse', `--filename=${file}`, '--rw=randread', '--bs=4k', `--size=${gib}G`, `--runtime=${secs}`, '--time_based', '--norandommap', '--randrepeat=1', '--ioengine=psync', '--output-format=json'], secs);
      c.metric('sparse', rep.jobs[0].read.iops);
    },
  },
];
