// Mirroring against copying tools (issue 12). A master PFS of FILES small
// files (in directories of 1 000) is mounted, and so are the targets on a
// second image. Measured, with the caches dropped before every step:
//  - a first full copy: one mirroring pass (hammer2 mirror-read MASTER |
//    hammer2 mirror-write SLAVE, both mounted) against `cp -a` and
//    `rsync -a` of the same tree from mount to mount, each into an empty PFS
//    (the slaves on one image, the copying tools' targets on another: each
//    image has its own daemon, so neither tool's writes are committed, nor
//    its tables cached, by the daemon the other tool is timed on);
//  - an incremental pass after 1 % of the files changed (rewritten, a few
//    added and removed) against `rsync -a` bringing its copy up to date.
// Each repeated REPS times (a new 1 % each time); medians and spreads.
// Then, at the fs layer (no FUSE), the blocks a pass reads for a 1 % change
// of a PFS of SIZE MiB against those of a full copy.
//
//   node dist/bench/mirror.js [--files N] [--reps N] [--full-reps N] [--size MiB] [--dir DIR]
//   (--full-reps 0: only the incremental passes, after untimed first copies)
//   (npm run bench -- --mirror runs it too)
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { FreemapAllocator } from '../src/engine';
import { Hammer2Fs } from '../src/fs';
import { ObjType, PBUFSIZE, PfsType } from '../src/media';
import { mirrorCopy } from '../src/mirror';
import { formatHammer2 } from '../mkfs/newfs';
import { DAEMON_NODE_FLAGS } from '../src/daemon/options';
import { sample } from './procstat';
import { BIN, dropCaches, forceUnmount, mountedAt } from './targets';

export interface Spread {
  median: number;
  spread: number;
  samples: number[];
}

export interface MirrorBenchResult {
  files: number;
  treeMiB: number;
  reps: number;
  /** Null when only the incremental passes were measured (--full-reps 0). */
  full: { mirror: Spread; cp: Spread; rsync: Spread } | null;
  incremental: { changedFiles: number; mirror: Spread; rsync: Spread; cpu?: { master: Spread; slave: Spread } };
  blocks: { sizeMiB: number; changedMiB: number; full: number; incremental: number } | null;
}

const H2 = () => path.join(path.dirname(BIN.mount), 'hammer2.js');
const now = () => BigInt(Date.now()) * 1000n;

function spread(samples: number[]): Spread {
  const s = [...samples].sort((a, b) => a - b);
  const median = s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  return { median, spread: median > 0 ? (s[s.length - 1] - s[0]) / median : 0, samples };
}

/** Seconds a shell command takes (it must succeed). */
function timed(cmd: string, env: NodeJS.ProcessEnv): number {
  dropCaches();
  const t0 = process.hrtime.bigint();
  const r = spawnSync('bash', ['-o', 'pipefail', '-c', cmd], { encoding: 'utf8', maxBuffer: 64 << 20, env });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${cmd.slice(0, 200)}: exit ${r.status}: ${(r.stderr || '').trim().slice(-500)}`);
  return s;
}

const sizeOf = (i: number) => 200 + ((i * 7919) % 3900);

async function openRw(img: string): Promise<Hammer2Fs> {
  return Hammer2Fs.open(img, { writable: true, lock: true, allocator: (d) => new FreemapAllocator(d.vols, d.reader, d.header) });
}

/** Mirroring and copying tools on a tree of `files` small files, between mounts. */
async function treeBench(files: number, reps: number, dir: string, log: (s: string) => void, fullReps = reps) {
  const A = path.join(dir, 'mirror-master.img');
  const B = path.join(dir, 'mirror-slaves.img');
  const C = path.join(dir, 'mirror-copies.img');
  const treeBytes = Array.from({ length: files }, (_, i) => sizeOf(i)).reduce((a, b) => a + b, 0);
  // Room for the master's tree on one image, a slave per repetition on the
  // second and two copies per repetition on the third (sparse files).
  const per = Math.max(256 << 20, files * 8192 + (64 << 20));
  const sized = (n: number) => Math.ceil((per * n) / (8 << 20)) * (8 << 20);
  await formatHammer2({ paths: [A], sizes: [sized(2)] });
  await formatHammer2({ paths: [B], sizes: [sized(reps + 1)], labels: ['none'] });
  await formatHammer2({ paths: [C], sizes: [sized(2 * reps + 1)], labels: ['none'] });
  log(`mirror: writing ${files} files (${(treeBytes / 1048576).toFixed(0)} MiB) on the master`);
  const a = await openRw(A);
  const clid = a.dev.findPfs('DATA')!.inode.meta.pfsClid;
  try {
    const p = a.pfs('DATA')!;
    const cred = { uid: 0, gid: 0 };
    const pool = randomBytes(1 << 20);
    let d = p.root;
    for (let i = 0; i < files; i++) {
      if (i % 1000 === 0) d = p.create(p.root, Buffer.from(`d${i / 1000}`), ObjType.DIRECTORY, 0o755, cred, now());
      const n = p.create(d, Buffer.from(`f${i}`), ObjType.REGFILE, 0o644, cred, now());
      const off = (i * 4099) % (pool.length - 4096);
      p.write(n, 0, pool.subarray(off, off + sizeOf(i)), now());
      if (p.pendingBytes > 64 << 20) a.flush();
    }
    a.flush();
  } finally {
    a.close();
  }
  const b = await openRw(B);
  try {
    for (let r = 0; r < reps; r++) b.createPfs(`M${r}`, { type: PfsType.SLAVE, clid });
  } finally {
    b.close();
  }
  const c = await openRw(C);
  try {
    for (let r = 0; r < reps; r++) for (const l of [`CP${r}`, `RS${r}`]) c.createPfs(l, {});
  } finally {
    c.close();
  }

  const env = { ...process.env, HAMMER2_RUNDIR: path.join(dir, 'run'), HAMMER2_QUIET_SHIM: '1' };
  const daemons: ChildProcess[] = [];
  const mnts: string[] = [];
  const mountAt = async (spec: string, label: string): Promise<string> => {
    const mnt = path.join(dir, `mnt-${label}`);
    fs.mkdirSync(mnt, { recursive: true });
    mnts.push(mnt);
    if (!daemons.some((x) => (x as unknown as { spec: string }).spec === spec.split('@')[0])) {
      // With the flags mount_hammer2 gives a daemon it starts in the background.
      const c = spawn(process.execPath, [...DAEMON_NODE_FLAGS, BIN.mount, '-f', spec, mnt], { stdio: 'ignore', env });
      (c as unknown as { spec: string }).spec = spec.split('@')[0];
      daemons.push(c);
    } else {
      const r = spawnSync(process.execPath, [BIN.mount, spec, mnt], { encoding: 'utf8', env });
      if (r.status !== 0) throw new Error(`mount ${spec}: ${r.stderr}`);
    }
    for (let i = 0; i < 400 && !mountedAt(mnt); i++) await new Promise((r) => setTimeout(r, 50));
    if (!mountedAt(mnt)) throw new Error(`mount ${spec} did not come up`);
    return mnt;
  };
  try {
    const master = await mountAt(`${A}@DATA`, 'DATA');
    const m: string[] = [];
    const cp: string[] = [];
    const rs: string[] = [];
    for (let r = 0; r < reps; r++) {
      m.push(await mountAt(`${B}@M${r}`, `M${r}`));
      cp.push(await mountAt(`${C}@CP${r}`, `CP${r}`));
      rs.push(await mountAt(`${C}@RS${r}`, `RS${r}`));
    }
    const h2 = `${JSON.stringify(process.execPath)} ${JSON.stringify(H2())}`;
    const full = { mirror: [] as number[], cp: [] as number[], rsync: [] as number[] };
    for (let r = 0; r < fullReps; r++) {
      log(`mirror: full copies, repetition ${r + 1} of ${fullReps}`);
      full.mirror.push(timed(`${h2} mirror-read ${master} | ${h2} mirror-write ${m[r]} >/dev/null`, env));
      full.cp.push(timed(`cp -a ${master}/. ${cp[r]}/`, env));
      full.rsync.push(timed(`rsync -a ${master}/ ${rs[r]}/`, env));
    }
    if (fullReps === 0) {
      // Only the incremental passes are measured: the first copies are made untimed.
      log('mirror: first copies (not measured)');
      timed(`${h2} mirror-read ${master} | ${h2} mirror-write ${m[0]} >/dev/null`, env);
      timed(`rsync -a ${master}/ ${rs[0]}/`, env);
    }
    const inc = { mirror: [] as number[], rsync: [] as number[] };
    // CPU seconds each daemon spends on a pass: steadier than its wall time on a shared machine.
    const cpu = { master: [] as number[], slave: [] as number[] };
    const cpuOf = (d: ChildProcess) => (d.pid ? (sample(d.pid)?.cpu ?? NaN) : NaN);
    const changed = Math.max(1, Math.round(files / 100));
    const tidOf = (mnt: string, label: string): string => {
      const out = spawnSync(process.execPath, [H2(), 'pfs-list', mnt, '--json'], { encoding: 'utf8', env }).stdout;
      return JSON.parse(out)[0].pfs.find((x: { name: string }) => x.name === label).tid;
    };
    for (let r = 0; r < reps; r++) {
      log(`mirror: 1 % changed (${changed} files), repetition ${r + 1} of ${reps}`);
      for (let k = 0; k < changed; k++) {
        const i = (k * 7919 + r * 104729) % files;
        const f = path.join(master, `d${Math.floor(i / 1000)}`, `f${i}`);
        if (k % 20 === 0) fs.rmSync(f, { force: true });
        else if (k % 20 === 1) fs.writeFileSync(path.join(master, `d${Math.floor(i / 1000)}`, `new${r}-${k}`), randomBytes(sizeOf(k)));
        else fs.writeFileSync(f, randomBytes(sizeOf(i + r + 1)));
      }
      // Commit the change on the master before either tool runs: sync(1)
      // does not reach a FUSE daemon, and the pin would otherwise charge the
      // pass with the master's own commit of its writes (which its flush
      // timer makes within seconds anyway, and which rsync never waits for).
      const fd = fs.openSync(path.join(master, 'd0'), 'r');
      try {
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      const since = tidOf(m[0], 'M0');
      const [ma, sl] = [cpuOf(daemons[0]), cpuOf(daemons[1])];
      inc.mirror.push(timed(`${h2} mirror-read ${master} ${since} | ${h2} mirror-write ${m[0]} >/dev/null`, env));
      cpu.master.push(cpuOf(daemons[0]) - ma);
      cpu.slave.push(cpuOf(daemons[1]) - sl);
      inc.rsync.push(timed(`rsync -a --delete ${master}/ ${rs[0]}/`, env));
    }
    const cmp = spawnSync('diff', ['-r', '-q', master, m[0]], { encoding: 'utf8' });
    if (cmp.status !== 0) throw new Error(`the slave differs from the master: ${cmp.stdout.slice(0, 500)}`);
    return {
      files,
      treeMiB: treeBytes / 1048576,
      reps,
      full: fullReps ? { mirror: spread(full.mirror), cp: spread(full.cp), rsync: spread(full.rsync) } : null,
      incremental: { changedFiles: changed, mirror: spread(inc.mirror), rsync: spread(inc.rsync), cpu: { master: spread(cpu.master), slave: spread(cpu.slave) } },
    };
  } finally {
    for (const mnt of mnts.reverse()) spawnSync('fusermount3', ['-u', mnt], { stdio: 'ignore' });
    for (const d of daemons) await new Promise((r) => (d.exitCode !== null ? r(null) : d.once('exit', r)));
    for (const mnt of mnts) forceUnmount(mnt);
    for (const img of [A, B, C]) fs.rmSync(img, { force: true });
  }
}

/** Master blocks a pass reads: a full copy of `sizeMiB`, then after 1 % of its blocks changed (fs layer). */
async function blocksBench(sizeMiB: number, dir: string, log: (s: string) => void) {
  const A = path.join(dir, 'blocks-master.img');
  const B = path.join(dir, 'blocks-slave.img');
  const imgSize = Math.ceil((sizeMiB * 1.6 + 256) / 8) * 8 * 1024 * 1024;
  await formatHammer2({ paths: [A], sizes: [imgSize] });
  await formatHammer2({ paths: [B], sizes: [imgSize], labels: ['none'] });
  const a = await openRw(A);
  const b = await openRw(B);
  try {
    const p = a.pfs('DATA')!;
    b.createPfs('M', { type: PfsType.SLAVE, clid: a.dev.findPfs('DATA')!.inode.meta.pfsClid });
    const fileMiB = 8;
    const nfiles = Math.max(1, Math.round(sizeMiB / fileMiB));
    log(`mirror: writing ${nfiles} files of ${fileMiB} MiB`);
    const files = [];
    for (let i = 0; i < nfiles; i++) {
      const n = p.create(p.root, Buffer.from(`f${i}`), ObjType.REGFILE, 0o644, { uid: 0, gid: 0 }, now());
      for (let off = 0; off < fileMiB << 20; off += 1 << 20) p.write(n, off, randomBytes(1 << 20), now());
      files.push(n);
      if (p.pendingBytes > 64 << 20) a.flush();
    }
    a.flush();
    const full = mirrorCopy(a, 'DATA', b, 'M').read.blocksRead;
    const blocksPerFile = (fileMiB << 20) / PBUFSIZE;
    const change = Math.max(1, Math.round((nfiles * blocksPerFile) / 100));
    for (let k = 0; k < change; k++) {
      p.write(files[(k * 7919) % nfiles], ((k * 104729) % blocksPerFile) * PBUFSIZE, randomBytes(PBUFSIZE), now());
      if (k % 500 === 499) a.flush();
    }
    a.flush();
    const incremental = mirrorCopy(a, 'DATA', b, 'M').read.blocksRead;
    return { sizeMiB, changedMiB: (change * PBUFSIZE) / 1048576, full, incremental };
  } finally {
    a.close();
    b.close();
    fs.rmSync(A, { force: true });
    fs.rmSync(B, { force: true });
  }
}

export async function mirrorBench(o: { files: number; reps: number; fullReps?: number; sizeMiB: number; dir: string }, log: (s: string) => void = () => {}): Promise<MirrorBenchResult> {
  fs.mkdirSync(o.dir, { recursive: true });
  const t = await treeBench(o.files, o.reps, o.dir, log, o.fullReps ?? o.reps);
  const blocks = o.sizeMiB > 0 ? await blocksBench(o.sizeMiB, o.dir, log) : null;
  return { ...t, blocks };
}

export function mirrorLines(r: MirrorBenchResult): string[] {
  const s = (x: Spread) => `${x.median.toFixed(2)} s ±${(x.spread * 100).toFixed(0)} %`;
  const rate = (x: Spread) => `${(r.files / x.median).toFixed(0)} files/s, ${(r.treeMiB / x.median).toFixed(1)} MiB/s`;
  const f = r.full;
  const i = r.incremental;
  const out = [`mirroring a tree of ${r.files} files (${r.treeMiB.toFixed(0)} MiB) between two mounts, median of ${r.reps}:`];
  if (f)
    out.push(
      `  first full copy: mirror-read | mirror-write ${s(f.mirror)} (${rate(f.mirror)}); cp -a ${s(f.cp)} (${rate(f.cp)}); rsync -a ${s(f.rsync)} (${rate(f.rsync)})` +
        ` = ${(f.cp.median / f.mirror.median).toFixed(1)}× cp, ${(f.rsync.median / f.mirror.median).toFixed(1)}× rsync`,
    );
  out.push(
    `  after ${i.changedFiles} files (1 %) changed: incremental pass ${s(i.mirror)}; rsync -a --delete ${s(i.rsync)} = ${(i.rsync.median / i.mirror.median).toFixed(1)}× faster than rsync (target ≥ 10×)`,
  );
  if (i.cpu) out.push(`    CPU of a pass: master's daemon ${s(i.cpu.master)}, slave's daemon ${s(i.cpu.slave)}`);
  if (r.blocks) {
    const b = r.blocks;
    out.push(`  blocks read by a pass of a ${b.sizeMiB} MiB PFS: full ${b.full}; after ${b.changedMiB.toFixed(1)} MiB (1 %) changed ${b.incremental} (${((b.incremental / b.full) * 100).toFixed(2)} % of the full pass)`);
  }
  return out;
}

if (require.main === module) {
  const args = process.argv.slice(2);
  const opt = (name: string, dflt: string) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : dflt;
  };
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write('node dist/bench/mirror.js [--files N] [--reps N] [--full-reps N] [--size MiB] [--dir DIR]\n  (defaults: 100000 files, 3 repetitions, full copies measured as often, 2048 MiB; --full-reps 0: only incremental passes; --size 0: no block count)\n');
    process.exit(0);
  }
  // The temporary directory only when --dir is not given (it was made, and left empty, either way).
  const dir = args.includes('--dir') ? opt('--dir', '') : fs.mkdtempSync(path.join(os.tmpdir(), 'h2mirrorbench-'));
  mirrorBench({ files: Number(opt('--files', '100000')), reps: Number(opt('--reps', '3')), fullReps: args.includes('--full-reps') ? Number(opt('--full-reps', '3')) : undefined, sizeMiB: Number(opt('--size', '2048')), dir }, (s) => process.stderr.write(s + '\n'))
    .then((r) => {
      process.stdout.write(mirrorLines(r).join('\n') + '\n');
      process.stdout.write(JSON.stringify(r) + '\n');
    })
    .catch((e) => {
      process.stderr.write(`mirror bench failed: ${(e as Error).stack}\n`);
      process.exit(1);
    });
}
