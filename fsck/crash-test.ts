#!/usr/bin/env node
// Crash-test harness: mount an image read-write, run a mixed write workload
// with fsyncs, SIGKILL the daemon at a random moment, then check the image
// and remount it. Every run must come back clean, and every file whose
// fsync returned before the kill must be intact (such files are "sealed":
// the workload never touches them again, so their content is exact).
//
//   node dist/fsck/crash-test.js [--runs N] [--seed S] [--size 4G] [--pfs N] [--copies | --mirror]
//                                [--loaded] [--workload fsync|tar|rename|links] [--keep DIR]
//
// --pfs N mounts N PFSs of the image at once (one daemon serves them all),
// runs a workload on each concurrently and takes snapshots of the first
// while it runs: every PFS's sealed files must survive, every snapshot read.
// --copies keeps DATA on a second image too (-o copy=): the kill lands while
// the copy is being filled or while it follows commits; both images must
// pass both fscks, a copy that was in sync must hold every sealed file, and
// the remount must bring the copy level.
// --mirror runs mirroring instead (crash-mirror.ts): a master followed by a
// slave on another image, SIGKILL on the stream, its reader or writer, or
// either daemon; both images clean, the slave consistent at its tid, and
// the restarted stream converges.
//
// --loaded runs beside a CPU hog per CPU and a writer syncing 256 MiB at a
// time on the same disk; each run picks a workload (the fsync writer, a tar
// extraction made durable, a rename-heavy or a hardlink-heavy loop) and an
// image of 1 or 3 GiB (one header zone, or two), and one in eight tears a
// volume header on purpose (HAMMER2_FAULT_HEADER), which fsck -y must mend.
// Failed runs keep their images, logs and both fscks' output.
//
// Prints one line per run and ends with "N passed, N failed".
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { formatHammer2 } from '../mkfs/newfs';
import { Hammer2Fs } from '../src/fs';
import { mirrorCrashRun } from './crash-mirror';
import { linkWorkload, renameWorkload, tarWorkload } from './crash-workloads';
import { fscks, HAMMER2, MOUNT, mounted, REPO, Rng, runCli, sha, Sealed, sleep, startDaemon, verify, waitFor, workload } from './crash-lib';

/** Labels of the PFSs a run with `n` of them mounts. */
const labelsFor = (n: number): string[] => ['DATA', ...Array.from({ length: n - 1 }, (_, i) => `P${i + 1}`)];

export interface CrashRunResult {
  ok: boolean;
  detail: string;
}

export type WorkloadName = 'fsync' | 'tar' | 'rename' | 'links';

/** A tree to extract in the tar workload: its tarball and its files' hashes. */
export interface TarSource {
  tarball: string;
  files: Map<string, { hash: string; size: number }>;
}

export interface CrashRunOptions {
  /** Which workload (default fsync: the mixed writer with fsyncs). */
  workload?: WorkloadName;
  tar?: TarSource;
  /** HAMMER2_FAULT_HEADER for the daemon: its Nth header write stops after BYTES bytes, then it is killed. */
  headerFault?: string;
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
  const daemon = startDaemon(`${img}@DATA`, mnt, ['-o', `flush=1,dirty=8${copyOpt}`], logFile, o.headerFault ? { ...env, HAMMER2_FAULT_HEADER: o.headerFault } : env);
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
  const works = labels.map((l, i) => {
    const r = new Rng(seed * 31 + i);
    const sealed = sealedBy.get(l)!;
    switch (o.workload ?? 'fsync') {
      case 'tar':
        return tarWorkload(mnts[i], r, sealed, o.tar!.tarball, o.tar!.files);
      case 'rename':
        return renameWorkload(mnts[i], r, sealed);
      case 'links':
        return linkWorkload(mnts[i], r, sealed);
      default:
        return workload(mnts[i], r, sealed);
    }
  });
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
  if (o.headerFault) {
    // First without -y: if the fault was reached, the torn header must be the
    // only thing our fsck finds (a repair must not hide other damage). Then
    // -y must mend it, and both fscks must pass below.
    const fsckJs = path.join(path.dirname(MOUNT), 'fsck_hammer2.js');
    const n = spawnSync(process.execPath, [fsckJs, img], { encoding: 'utf8' });
    if (n.status !== 0) {
      const errors = n.stdout.split('\n').filter((l) => /^ERROR/.test(l));
      if (!errors.length || errors.some((l) => !/cut short/.test(l))) return { ok: false, detail: `after a torn header, fsck finds more: ${errors.slice(0, 3).join(' | ') || n.stdout.trim().split('\n').pop()}` };
      const y = spawnSync(process.execPath, [fsckJs, '-y', img], { encoding: 'utf8' });
      details.push(`torn header, fsck -y: ${y.stdout.trim().split('\n').pop()}`);
    } else details.push('header fault not reached');
  }
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
  const again = startDaemon(`${img}@DATA`, mnt, copyImg ? ['-o', `copy=${copyImg}`] : [], logFile, env);
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

/** The tar workload's tree: this checkout's src and test directories. */
export function tarSource(dir: string): TarSource {
  const tarball = path.join(dir, 'source.tar');
  const r = spawnSync('tar', ['-cf', tarball, '-C', REPO, 'src', 'test'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`tar of the source tree failed: ${r.stderr}`);
  const files = new Map<string, { hash: string; size: number }>();
  const walk = (rel: string) => {
    for (const e of fs.readdirSync(path.join(REPO, rel), { withFileTypes: true })) {
      const p = path.join(rel, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) {
        const b = fs.readFileSync(path.join(REPO, p));
        files.set(p, { hash: sha(b), size: b.length });
      }
    }
  };
  walk('src');
  walk('test');
  return { tarball, files };
}

/**
 * Competing load for --loaded: a CPU hog per CPU, and a writer on the same
 * disk that writes and syncs 256 MiB again and again. Stopped by the returned function.
 */
function startLoad(dir: string): () => void {
  const hogs: ChildProcess[] = [];
  for (let i = 0; i < os.cpus().length; i++) hogs.push(spawn('sh', ['-c', 'while :; do :; done'], { stdio: 'ignore', detached: true }));
  const f = path.join(dir, 'io-hog');
  hogs.push(spawn('sh', ['-c', `while :; do dd if=/dev/zero of='${f}' bs=1M count=256 conv=fdatasync status=none; rm -f '${f}'; done`], { stdio: 'ignore', detached: true }));
  return () => {
    for (const h of hogs) {
      try {
        process.kill(-h.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    fs.rmSync(f, { force: true });
  };
}

/** A failed run's images and logs, with both fscks' full output, kept for a look. */
function keepFailure(dir: string, run: number, into: string): string {
  const out = path.join(into, `run-${run}`);
  fs.mkdirSync(out, { recursive: true });
  for (const f of fs.readdirSync(dir)) {
    if (!new RegExp(`-${run}(\\.|-)`).test(f) || !fs.statSync(path.join(dir, f)).isFile()) continue;
    spawnSync('cp', ['--sparse=always', path.join(dir, f), out]);
    if (f.endsWith('.img')) {
      const ours = spawnSync(process.execPath, [path.join(path.dirname(MOUNT), 'fsck_hammer2.js'), '-v', path.join(dir, f)], { encoding: 'utf8' });
      fs.writeFileSync(path.join(out, `${f}.fsck.txt`), ours.stdout + ours.stderr);
      if (process.env.H2_REF_FSCK) {
        const ref = spawnSync(process.env.H2_REF_FSCK, [path.join(dir, f)], { encoding: 'utf8' });
        fs.writeFileSync(path.join(out, `${f}.ref-fsck.txt`), ref.stdout + ref.stderr);
      }
    }
  }
  return out;
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
  const mirror = args.includes('--mirror');
  const size = Number(sizeArg.replace(/[GMK]$/i, '')) * ({ G: 2 ** 30, M: 2 ** 20, K: 1024 }[sizeArg.slice(-1).toUpperCase()] ?? 1);
  const keep = opt('--keep', '');
  const loaded = args.includes('--loaded');
  const only = opt('--workload', '') as WorkloadName | '';
  const dir = keep || fs.mkdtempSync(path.join(os.tmpdir(), 'h2crash-'));
  const kept = path.join(os.tmpdir(), `h2crash-failures-${process.pid}`);
  const workloads: WorkloadName[] = only ? [only] : loaded ? ['fsync', 'tar', 'rename', 'links'] : ['fsync'];
  const tar = workloads.includes('tar') ? tarSource(dir) : undefined;
  const stopLoad = loaded ? startLoad(dir) : () => {};
  // Ctrl-C or SIGTERM: finish the run under way, then the tally; a second one stops at once.
  // Either way the load goes (its processes are detached: nobody else would stop them).
  let stopping = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (stopping) {
      stopLoad();
      process.exit(128 + (sig === 'SIGINT' ? 2 : 15));
    }
    stopping = true;
    console.log(`${sig}: stopping after the run under way (again to stop at once)`);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let passed = 0;
  let failed = 0;
  const tally = new Map<string, [number, number]>();
  try {
    for (let i = 0; i < runs && !stopping; i++) {
      const seed = seed0 + i;
      const rng = new Rng(seed * 7 + 1);
      // Loaded runs vary: the workload, the image on either side of 2 GiB (one header zone, or two), and now and then a torn header.
      const w = workloads[rng.int(workloads.length)];
      const sz = loaded ? [2 ** 30, 3 * 2 ** 30][rng.int(2)] : size;
      const headerFault = loaded && rng.int(8) === 0 ? `${2 + rng.int(30)}:${4096 * (1 + rng.int(15))}` : undefined;
      const what = mirror ? 'mirror' : `${w} ${sz >= 2 ** 31 ? '3G' : '1G'}${headerFault ? ' torn-header' : ''}`;
      let r: CrashRunResult;
      try {
        r = mirror ? await mirrorCrashRun(i, seed, dir, size) : await crashRun(i, seed, dir, sz, { pfs, copy, workload: w, tar, headerFault });
      } catch (e) {
        r = { ok: false, detail: (e as Error).stack ?? String(e) };
      }
      const t = tally.get(what) ?? [0, 0];
      t[r.ok ? 0 : 1]++;
      tally.set(what, t);
      if (r.ok) passed++;
      else {
        failed++;
        if (!keep) r.detail += `; kept in ${keepFailure(dir, i, kept)}`;
      }
      console.log(`run ${i} seed ${seed}${loaded || only ? ` [${what}]` : ''}: ${r.ok ? 'ok' : 'FAIL'} (${r.detail})`);
    }
  } finally {
    stopLoad();
    if (!keep) fs.rmSync(dir, { recursive: true, force: true });
  }
  if (tally.size > 1) for (const [k, [ok, bad]] of [...tally].sort()) console.log(`  ${k}: ${ok} passed, ${bad} failed`);
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

if (require.main === module) main();
