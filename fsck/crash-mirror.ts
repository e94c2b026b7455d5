// Crash runs of mirroring (npm run crash-test -- --mirror): a master PFS
// written by the fsync workload, followed by a SLAVE on another image,
// either by `hammer2 mirror-stream --keep-synced` or by a loop of
// `mirror-read | mirror-write` processes, with the slave mounted (its
// daemon applies the passes) or not. At a random moment SIGKILL lands on
// any of the stream, the reader, the writer, the master's daemon and the
// slave's daemon. Then:
//  - both images pass our fsck (and the reference's, with H2_REF_FSCK);
//  - every file the master fsynced is intact;
//  - the slave reads exactly as the master did at the slave's synced tid
//    (the master state kept as snapshot DATA.synced, when it holds that tid);
//  - restarted, the stream converges: the mounted slave and master give the
//    same `tar | sha256sum`, both fscks pass again, and with H2_REF_MAKEFS
//    the reference reads the same files from the slave as from the master.
import { ChildProcess, spawn, spawnSync, StdioOptions } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { formatHammer2 } from '../mkfs/newfs';
import { Hammer2Fs } from '../src/fs';
import { PfsType } from '../src/media';
import { syncedTid } from '../src/sync';
import { fscks, HAMMER2, MOUNT, mounted, Rng, Sealed, sleep, startDaemon, verify, waitFor, workload } from './crash-lib';

export interface MirrorCrashResult {
  ok: boolean;
  detail: string;
}

/**
 * How long a process may take to end once signalled. mirror-stream ends
 * after the pass under way, which gives up on a stalled slave after 30 s;
 * anything still there after this is a failure to report, never a wait.
 */
const STOP_MS = 60_000;
/** Child commands run to completion here (tar of a mount, fusermount3, the reference tools). */
const CMD_MS = 300_000;

/** Whether `p` settles within `ms` (its rejection propagates). */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((r) => (timer = setTimeout(() => r(false), ms)));
  try {
    return await Promise.race([p.then(() => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

const running = (p: ChildProcess) => p.exitCode === null && p.signalCode === null;
const exited = (p: ChildProcess) => new Promise<void>((r) => (running(p) ? p.once('exit', () => r()) : r()));

/** What a process that does not end is doing: its state and kernel wait channel, for the message. */
function procState(pid: number | undefined): string {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const wchan = fs.readFileSync(`/proc/${pid}/wchan`, 'utf8');
    return `state ${stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0]}, waiting in ${wchan || '-'}`;
  } catch {
    return 'gone';
  }
}

/** spawnSync with a deadline; throws with `what` if the command does not finish in time. */
function runSync(cmd: string, args: string[], what: string, o: { env?: NodeJS.ProcessEnv; ms?: number } = {}) {
  const ms = o.ms ?? CMD_MS;
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: o.env, timeout: ms, killSignal: 'SIGKILL' });
  if ((r.error as NodeJS.ErrnoException | undefined)?.code === 'ETIMEDOUT') throw new Error(`${what} did not finish within ${ms / 1000} s`);
  return r;
}

/** Synced tid of `label` on `img` (read beside whatever daemon holds it), or null if it is not there. */
async function tidOf(img: string, label: string): Promise<bigint | null> {
  const h = await Hammer2Fs.open(img, { writable: false, lock: false });
  try {
    const e = h.dev.findPfs(label);
    return e ? syncedTid(e.bref, e.inode) : null;
  } finally {
    h.close();
  }
}

/** sha256 of `tar` of a mounted tree, names sorted. */
function tarHash(dir: string): string {
  // timeout(1) ends tar itself (killing the shell would leave it behind, blocked on the mount).
  const s = CMD_MS / 1000;
  const r = runSync('bash', ['-o', 'pipefail', '-c', `timeout -s KILL ${s} tar -C '${dir}' --sort=name -cf - . | sha256sum`], `tar of ${dir}`, { ms: CMD_MS + 10_000 });
  if (r.status === 137) throw new Error(`tar of ${dir} did not finish within ${s} s (a request the mount never answered?)`);
  if (r.status !== 0) throw new Error(`tar of ${dir}: ${r.stderr.trim()}`);
  return r.stdout.split(' ')[0];
}

/** Files the reference makefs reads from PFS `label` of a copy of `img`, by path with their sha256. */
function refFiles(makefs: string, img: string, label: string, dir: string): Map<string, string> {
  const copy = path.join(dir, `ref-${label}.img`);
  const out = path.join(dir, `ref-${label}`);
  fs.rmSync(out, { recursive: true, force: true });
  fs.mkdirSync(out);
  try {
    if (runSync('cp', ['--sparse=always', img, copy], `cp of ${img}`).status !== 0) throw new Error(`cannot copy ${img}`);
    // The reference cannot mount a SLAVE offline: read it as a MASTER (the copy only).
    const up = runSync(process.execPath, [HAMMER2, 'pfs-upgrade', `${copy}@${label}`], 'pfs-upgrade of the copy');
    if (up.status !== 0 && !/already|MASTER/.test(up.stderr)) throw new Error(`pfs-upgrade: ${up.stderr.trim()}`);
    const r = runSync(makefs, ['-t', 'hammer2', '-o', `m=${label}`, '-o', 'R=/', copy, out], `the reference's read of ${label}`);
    if (r.status !== 0) throw new Error(`reference read of ${label} failed: ${(r.stdout + r.stderr).slice(-300)}`);
    const files = new Map<string, string>();
    const walk = (d: string, rel: string) => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        const r2 = rel ? `${rel}/${e.name}` : e.name;
        if (e.isDirectory()) walk(p, r2);
        else if (e.isFile()) files.set(r2, createHash('sha256').update(fs.readFileSync(p)).digest('hex'));
      }
    };
    walk(out, '');
    return files;
  } finally {
    fs.rmSync(copy, { force: true });
    fs.rmSync(out, { recursive: true, force: true });
  }
}

/** The follower: mirror-stream, or a loop of mirror-read | mirror-write pairs; `kill` hits what runs now. */
function follower(pipeMode: boolean, mnt: string, slave: string, slaveImg: string, env: NodeJS.ProcessEnv) {
  const spawnH2 = (args: string[], stdio: StdioOptions) => spawn(process.execPath, [HAMMER2, ...args], { stdio, env: { ...env, HAMMER2_QUIET_SHIM: '1' } });
  let log = '';
  let stop = false;
  let procs: ChildProcess[] = [];
  const passes = { n: 0 };
  const done = (async () => {
    if (!pipeMode) {
      const p = spawnH2(['--keep-synced', 'DATA.synced', 'mirror-stream', mnt, slave], ['ignore', 'pipe', 'pipe']);
      procs = [p];
      p.stdout!.on('data', (d) => {
        log += d;
        passes.n += String(d).split('\n').filter((l) => /transaction/.test(l)).length;
      });
      p.stderr!.on('data', (d) => (log += d));
      await new Promise((r) => p.on('close', r));
      return;
    }
    while (!stop) {
      const since = (await tidOf(slaveImg, 'M')) ?? 0n;
      // Stopped meanwhile: a pair started now would be signalled by nobody.
      if (stop) break;
      // One pipe between the two, as a shell makes it: a writer killed, the
      // reader gets EPIPE. (Relayed through this process, a dead writer left
      // the reader writing synchronously into a pipe nobody drained, for ever;
      // there a SIGTERM handler never runs, and under tap every child has one,
      // signal-exit's, so SIGTERM did not end it and the run hung.)
      const rd = spawnH2(['mirror-read', mnt, String(since)], ['ignore', 'pipe', 'pipe']);
      const wr = spawnH2(['mirror-write', slave], [rd.stdout!, 'pipe', 'pipe']);
      rd.stdout!.destroy();
      procs = [rd, wr];
      rd.stderr!.on('data', (d) => (log += d));
      wr.stderr!.on('data', (d) => (log += d));
      wr.stdout!.resume();
      // 'exit', not 'close': the reader's stdout went to the writer and does not close here.
      const [code] = await Promise.all([new Promise<number | null>((r) => (running(wr) ? wr.once('exit', (c) => r(c)) : r(wr.exitCode))), exited(rd)]);
      if (code === 0) passes.n++;
      else if (!stop) await sleep(200); // the master went away, or a refusal: try again
      await sleep(300);
    }
  })();
  return {
    passes,
    log: () => log,
    /** SIGKILL the reader, the writer, or both (mirror-stream is one process: it dies either way). */
    kill(which: 'reader' | 'writer' | 'both') {
      stop = true;
      const targets = procs.length === 1 ? procs : which === 'reader' ? [procs[0]] : which === 'writer' ? [procs[1]] : procs;
      for (const p of targets) p.kill('SIGKILL');
    },
    /**
     * Stop it (SIGTERM) and wait, within STOP_MS: null once it ended,
     * else which process did not end on SIGTERM (then SIGKILLed).
     */
    async end(): Promise<string | null> {
      stop = true;
      const names = new Map(procs.map((p, i) => [p, procs.length === 1 ? 'mirror-stream' : i === 0 ? 'mirror-read' : 'mirror-write']));
      for (const p of procs) if (running(p)) p.kill('SIGTERM');
      if (await within(done, STOP_MS)) return null;
      const stuck = procs.filter(running).map((p) => `${names.get(p) ?? 'a command'} (pid ${p.pid}, ${procState(p.pid)})`);
      for (const p of procs) if (running(p)) p.kill('SIGKILL');
      if (!(await within(done, 10_000))) throw new Error(`the follower did not end even after SIGKILL: ${stuck.join(', ')}`);
      return `${stuck.join(', ') || 'the follower'} did not end within ${STOP_MS / 1000} s of SIGTERM`;
    },
    /** On the way out of a run that failed: SIGKILL whatever still runs (a stream left running keeps the process alive). */
    async abort(): Promise<void> {
      stop = true;
      for (const p of procs) if (running(p)) p.kill('SIGKILL');
      await within(done.catch(() => {}), 10_000);
    },
  };
}

export async function mirrorCrashRun(run: number, seed: number, dir: string, size: number): Promise<MirrorCrashResult> {
  const rng = new Rng(seed);
  const A = path.join(dir, `mirror-${run}-master.img`);
  const B = path.join(dir, `mirror-${run}-slave.img`);
  const mnt = path.join(dir, `mnt-${run}-master`);
  const smnt = path.join(dir, `mnt-${run}-slave`);
  const snap = path.join(dir, `mnt-${run}-synced`);
  for (const m of [mnt, smnt, snap]) fs.mkdirSync(m, { recursive: true });
  const logFile = path.join(dir, `mirror-${run}.log`);
  const env = { ...process.env, HAMMER2_RUNDIR: path.join(dir, `run-${run}`) };
  await formatHammer2({ paths: [A], sizes: [size], labels: ['DATA'] });
  await formatHammer2({ paths: [B], sizes: [size], labels: ['none'] });
  {
    const a = await Hammer2Fs.open(A, { writable: false });
    const clid = a.dev.findPfs('DATA')!.inode.meta.pfsClid;
    a.close();
    const b = await Hammer2Fs.open(B, { writable: true });
    b.createPfs('M', { type: PfsType.SLAVE, clid });
    b.close();
  }
  const pipeMode = rng.int(2) === 1;
  const slaveMounted = rng.int(3) !== 0;
  const details: string[] = [`${pipeMode ? 'mirror-read | mirror-write' : 'mirror-stream'} into a${slaveMounted ? ' mounted' : 'n unmounted'} slave`];
  const daemons: ChildProcess[] = [];
  const followers: ReturnType<typeof follower>[] = [];
  const clear = async () => {
    for (const d of daemons) if (running(d)) d.kill('SIGKILL');
    // Gone, not only signalled: a daemon still inside a write must not be read beside.
    const stuck: string[] = [];
    for (const d of daemons) if (!(await within(exited(d), STOP_MS))) stuck.push(`pid ${d.pid} (${procState(d.pid)})`);
    for (const m of [snap, smnt, mnt]) if (!(await waitFor(() => !mounted(m), 5000))) runSync('fusermount3', ['-uz', m], `fusermount3 -uz ${m}`, { ms: 30_000 });
    if (stuck.length) throw new Error(`a daemon did not exit within ${STOP_MS / 1000} s of SIGKILL: ${stuck.join(', ')}`);
  };
  const up = async (spec: string, at: string, extra: string[]) => {
    const d = startDaemon(spec, at, extra, logFile, env);
    daemons.push(d);
    let err = '';
    d.stderr!.on('data', (x) => (err += x));
    if (!(await waitFor(() => mounted(at), 20000))) throw new Error(`mount of ${spec} did not come up: ${err.trim()}`);
    return d;
  };
  try {
    const da = await up(`${A}@DATA`, mnt, ['-o', 'flush=1,dirty=8']);
    const db = slaveMounted ? await up(`${B}@M`, smnt, []) : null;
    const sealed: Sealed[] = [];
    const work = workload(mnt, rng, sealed);
    const f = follower(pipeMode, mnt, slaveMounted ? smnt : `${B}@M`, B, env);
    followers.push(f);
    await sleep(500 + rng.int(4000));
    // Who dies: the follower (reader, writer or both), the master's daemon, the slave's.
    const victims = rng.int(6);
    const killed: string[] = [];
    if (victims <= 2 || victims === 5) {
      const which = (['reader', 'writer', 'both'] as const)[rng.int(3)];
      f.kill(which);
      killed.push(pipeMode ? which : 'mirror-stream');
    }
    if (victims === 3 || victims === 5) {
      da.kill('SIGKILL');
      killed.push('master daemon');
    }
    if ((victims === 4 || victims === 5) && db) {
      db.kill('SIGKILL');
      killed.push('slave daemon');
    }
    if (!killed.length) {
      da.kill('SIGKILL');
      killed.push('master daemon');
    }
    details.push(`killed ${killed.join(' + ')} after ${f.passes.n} passes`);
    // Whatever survived stops cleanly: the master (which ends the workload), the follower, the slave.
    if (!killed.includes('master daemon')) {
      da.kill('SIGTERM');
      details.push('master stopped by SIGTERM');
    }
    // The workload ends when the master's mount goes (killed, or unmounted by SIGTERM).
    const workEnded = await within(work, STOP_MS);
    const unstopped = await f.end();
    if (!workEnded) return { ok: false, detail: `the workload still ran ${STOP_MS / 1000} s after the master daemon was stopped (${details.join(', ')})` };
    if (unstopped) return { ok: false, detail: `${unstopped} (${details.join(', ')})` };
    if (db && db.exitCode === null && db.signalCode === null) db.kill('SIGTERM');
    await clear();
    daemons.length = 0;

    const bad = fscks(A, details, 'master') ?? fscks(B, details, 'slave');
    if (bad) return { ok: false, detail: `${bad} (${details.join(', ')})` };
    const lost = await verify(A, new Map([['DATA', sealed]]));
    if (lost.length) return { ok: false, detail: `master: ${lost.slice(0, 3).join('; ')} (${details.join(', ')}; ${sealed.length} sealed)` };
    const probs = await verify(B, new Map());
    if (probs.length) return { ok: false, detail: `slave: ${probs.slice(0, 3).join('; ')}` };

    // The slave as it was left, against the master's state at its tid.
    await up(`${A}@DATA`, mnt, []);
    await up(`${B}@M`, smnt, []);
    const at = (await tidOf(B, 'M'))!;
    const kept = await tidOf(A, 'DATA.synced');
    if (at !== 0n && kept === at) {
      // A second mount of the image: handed to the daemon that holds it.
      const r = runSync(process.execPath, [MOUNT, '-o', 'ro', `${A}@DATA.synced`, snap], 'mount of the synced snapshot', { env: { ...env, HAMMER2_QUIET_SHIM: '1' }, ms: 60_000 });
      if (r.status !== 0 || !mounted(snap)) throw new Error(`mount of the synced snapshot: ${r.stderr.trim()}`);
      const same = tarHash(smnt) === tarHash(snap);
      runSync('fusermount3', ['-u', snap], `fusermount3 -u ${snap}`, { ms: 30_000 });
      if (!same) return { ok: false, detail: `the slave at ${at} does not read as the master's state at ${at}` };
      details.push(`slave consistent at ${at}`);
    } else details.push(at === 0n ? 'slave still empty' : pipeMode ? `slave at ${at}` : `slave at ${at}, its kept state at ${kept ?? 'none'} (killed between)`);

    // Restarted, it converges.
    const g = follower(false, mnt, smnt, B, env);
    followers.push(g);
    const target = await tidOf(A, 'DATA');
    // Converged means the slave at the master's tid and that state kept on the
    // master: the keep follows the slave's commit, and a slave that was level
    // already gets it renewed only once the stream's first pass has looked.
    let level = false;
    let keptNow: bigint | null = null;
    for (let i = 0; i < 600 && !(level && keptNow === target); i++) {
      level = (await tidOf(B, 'M')) === target;
      if (level) keptNow = await tidOf(A, 'DATA.synced');
      if (!(level && keptNow === target)) await sleep(100);
    }
    const unstopped2 = await g.end();
    if (unstopped2) return { ok: false, detail: `the restarted stream: ${unstopped2}` };
    if (!level) return { ok: false, detail: `the restarted stream did not converge: ${g.log().trim().split('\n').slice(-2).join(' | ')}` };
    if (tarHash(smnt) !== tarHash(mnt)) return { ok: false, detail: 'after convergence the slave and master trees differ' };
    // The restarted stream keeps the state the slave holds, whatever the kill left behind.
    if (keptNow !== target) return { ok: false, detail: `after convergence at ${target} the kept snapshot holds ${keptNow ?? 'nothing'} (${details.join(', ')})` };
    details.push('converged');
    for (const d of daemons) d.kill('SIGTERM');
    await clear();
    daemons.length = 0;
    const bad2 = fscks(A, [], 'master after convergence') ?? fscks(B, [], 'slave after convergence');
    if (bad2) return { ok: false, detail: bad2 };
    if (process.env.H2_REF_MAKEFS) {
      const m = refFiles(process.env.H2_REF_MAKEFS, A, 'DATA', dir);
      const s = refFiles(process.env.H2_REF_MAKEFS, B, 'M', dir);
      const differ = [...m].filter(([k, v]) => s.get(k) !== v).length + [...s.keys()].filter((k) => !m.has(k)).length;
      if (differ) return { ok: false, detail: `the reference reads ${differ} files differently from the slave` };
      details.push(`reference reads the slave's ${s.size} files as the master's`);
    }
    fs.rmSync(A, { force: true });
    fs.rmSync(B, { force: true });
    return { ok: true, detail: details.join(', ') };
  } catch (e) {
    return { ok: false, detail: `${(e as Error).message} (${details.join(', ')})` };
  } finally {
    for (const f of followers) await f.abort();
    await clear();
  }
}
