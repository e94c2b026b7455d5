#!/usr/bin/env node
// mount_hammer2 [-f] [-d] [-o options] special[@LABEL] mountpoint
//
// Mounts one PFS of a HAMMER2 image or device through FUSE, read-write
// unless -o ro. Without -f the daemon detaches once the mount is live; the
// parent reports success or the error.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command } from 'commander';
import { MediaError } from '../engine';
import { Hammer2Fs, Pfs } from '../fs';
import { EXCLUSIVE_CACHE_TIMEOUT, fuseLowLevelUnavailable } from '../fuse/lowlevel';
import { Hammer2Ops } from '../fuse/ops';
import { hammer2Session } from '../fuse/session';
import { MountError, trimMemory } from '../store';
import { parseDeviceSpec } from './spec';

const prog = 'mount_hammer2';

interface MountOpts {
  foreground: boolean;
  debug: boolean;
  options: string[];
  log?: string;
}

/** Our own -o options, and the ones handed to libfuse. */
interface ParsedOptions {
  readonly: boolean;
  /** Seconds between background flushes of dirty state. */
  flushSec: number;
  /** Flush once this much file data is pending. */
  dirtyBytes: number;
  /** Kernel attribute/entry cache timeouts, seconds. */
  attrTimeout: number;
  /** Microseconds the request loop stays awake after a request. */
  spinUs: number;
  /** Metadata block cache, MiB (file data gets an eighth of it on top). */
  cacheMiB: number;
  /** KiB of kernel readahead for the mount (its bdi's read_ahead_kb); 0 leaves the kernel's default. */
  readaheadKb: number;
  fuse: string[];
}

// Kernel attribute and name cache timeout: see EXCLUSIVE_CACHE_TIMEOUT. The
// one thing a commit changes behind the kernel's back (st_blocks of files
// with pending data) is invalidated explicitly (fuse/session.ts).
const CACHE_TIMEOUT = EXCLUSIVE_CACHE_TIMEOUT;

const OWN = new Set(['ro', 'rw', 'flush', 'dirty', 'attr_timeout', 'entry_timeout', 'spin', 'noallow_other', 'readahead']);

// Kernel readahead of the mount. FUSE starts at 128 KiB, so a sequential
// read arrives as 128 KiB requests (two data blocks each); with more, the
// kernel asks for up to 1 MiB per request (the binding's max_pages) and
// keeps several in flight, so each pread covers a run of blocks.
const DEFAULT_READAHEAD_KB = 4096;

export function parseOptions(list: string[]): ParsedOptions {
  const p: ParsedOptions = {
    readonly: false,
    flushSec: 5,
    dirtyBytes: 32 << 20,
    attrTimeout: CACHE_TIMEOUT,
    spinUs: 50,
    cacheMiB: 16,
    readaheadKb: DEFAULT_READAHEAD_KB,
    fuse: [],
  };
  let allowOther = process.getuid?.() === 0;
  const fuse = new Set<string>(['default_permissions', 'auto_unmount', 'fsname=hammer2', 'subtype=hammer2']);
  for (const o of list.flatMap((s) => s.split(',')).filter(Boolean)) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)(?:=([^,\s]*))?$/.exec(o);
    if (!m) throw new Error(`bad mount option "${o}"`);
    const [, key, val] = m;
    const num = (what: string) => {
      const n = Number(val);
      if (val === undefined || !Number.isFinite(n) || n < 0) throw new Error(`-o ${key}= needs ${what}`);
      return n;
    };
    if (!OWN.has(key)) {
      if (key === 'allow_other') allowOther = true;
      else if (key === 'fsname' || key === 'subtype') {
        for (const f of [...fuse]) if (f.startsWith(key + '=')) fuse.delete(f);
        fuse.add(o);
      } else fuse.add(o);
      continue;
    }
    if (key === 'ro') p.readonly = true;
    else if (key === 'rw') p.readonly = false;
    else if (key === 'flush') p.flushSec = num('seconds');
    else if (key === 'dirty') p.dirtyBytes = num('MiB') * 1024 * 1024;
    else if (key === 'attr_timeout' || key === 'entry_timeout') p.attrTimeout = num('seconds');
    else if (key === 'spin') p.spinUs = Math.min(num('microseconds'), 10000);
    else if (key === 'cache') p.cacheMiB = Math.max(1, Math.min(Math.floor(num('MiB')), 4096));
    else if (key === 'noallow_other') allowOther = false;
    else if (key === 'readahead') p.readaheadKb = Math.min(Math.floor(num('KiB')), 1 << 20);
  }
  if (allowOther) fuse.add('allow_other');
  if (p.readonly) fuse.add('ro');
  p.fuse = [...fuse];
  return p;
}

/**
 * Set the kernel readahead of the FUSE mount at `mnt` (the read_ahead_kb of
 * its backing device info, found through /proc/self/mountinfo: a stat of the
 * mountpoint would be a request to ourselves). Needs root; returns why not.
 */
export function setMountReadahead(mnt: string, kb: number): string | null {
  let mounts: Mount[];
  try {
    mounts = mountTable();
  } catch (e) {
    return `cannot read /proc/self/mountinfo: ${(e as Error).message}`;
  }
  const dev = mounts.filter((m) => m.point === mnt).pop()?.dev; // the last one listed is on top
  if (!dev || !/^\d+:\d+$/.test(dev)) return `${mnt} not found in /proc/self/mountinfo`;
  const file = `/sys/class/bdi/${dev}/read_ahead_kb`;
  try {
    fs.writeFileSync(file, `${kb}\n`);
  } catch (e) {
    return `cannot set ${file}: ${(e as Error).message}`;
  }
  return null;
}

interface Mount {
  /** The mountpoint, unescaped. */
  point: string;
  /** major:minor of the mounted filesystem. */
  dev: string;
}

/** This process's view of the mounts, in mount order (/proc/self/mountinfo). */
function mountTable(): Mount[] {
  const unesc = (f: string) => f.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f.length > 4)
    .map((f) => ({ point: unesc(f[4]), dev: f[2] }));
}

function fail(msg: string): never {
  process.stderr.write(`${prog}: ${msg}\n`);
  process.exit(1);
}

function mountsHave(mnt: string): boolean {
  try {
    return mountTable().some((m) => m.point === mnt);
  } catch {
    return false;
  }
}

/** Refuse a mountpoint that is missing, not a directory, busy, or a dead FUSE endpoint. */
function checkMountpoint(mnt: string): void {
  try {
    const st = fs.statSync(mnt);
    if (!st.isDirectory()) fail(`${mnt}: not a directory`);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOTCONN') {
      fail(
        `${mnt}: stale FUSE mount left by a daemon that died ("Transport endpoint is not connected").\n` +
          `  Clear it with:  fusermount3 -u ${mnt}   (or: umount -l ${mnt})  and mount again.`,
      );
    }
    if (code === 'ENOENT') fail(`${mnt}: mountpoint does not exist`);
    fail(`${mnt}: ${(e as Error).message}`);
  }
  if (mountsHave(mnt)) fail(`${mnt}: something is already mounted there`);
}

async function openPfs(spec: string, writable: boolean, cacheBytes: number): Promise<{ h2: Hammer2Fs; pfs: Pfs }> {
  const { devices, label } = parseDeviceSpec(spec);
  let h2: Hammer2Fs;
  try {
    h2 = await Hammer2Fs.open(devices, { writable, lock: true, cacheBytes });
  } catch (e) {
    if (e instanceof MountError || e instanceof MediaError) fail(e.message);
    throw e;
  }
  let names: string[];
  try {
    names = h2.dev.listPfs().map((p) => p.name);
  } catch (e) {
    fail(`${devices}: cannot read the super-root: ${(e as Error).message}`);
  }
  let pfs: Pfs | undefined;
  try {
    pfs = h2.pfs(label);
  } catch (e) {
    fail(`${devices}@${label}: bad PFS root: ${(e as Error).message}`);
  }
  if (!pfs) fail(`${devices}: no PFS labelled "${label}" (available: ${names.join(', ') || 'none'})`);
  return { h2, pfs };
}

async function runForeground(spec: string, mnt: string, o: MountOpts): Promise<void> {
  const notifyFd = process.env.HAMMER2_NOTIFY_FD ? Number(process.env.HAMMER2_NOTIFY_FD) : -1;
  const logStream = o.log ? fs.createWriteStream(o.log, { flags: 'a' }) : null;
  const log = (m: string) => {
    const line = `${new Date().toISOString()} ${prog}[${process.pid}]: ${m}\n`;
    if (logStream) logStream.write(line);
    else if (notifyFd < 0) process.stderr.write(line);
  };
  const notify = (msg: string) => {
    if (notifyFd < 0) return;
    try {
      fs.writeSync(notifyFd, msg + '\n');
      fs.closeSync(notifyFd);
    } catch {
      /* parent gone */
    }
  };
  const die = (msg: string): never => {
    notify(`error ${msg}`);
    fail(msg);
  };
  let po: ParsedOptions;
  try {
    po = parseOptions(o.options);
  } catch (e) {
    die((e as Error).message);
  }
  const why = fuseLowLevelUnavailable();
  if (why) die(why);
  checkMountpoint(mnt);
  const { h2, pfs } = await openPfs(spec, !po!.readonly, po!.cacheMiB << 20);
  const ops = new Hammer2Ops(h2, pfs, { dirtyLimit: po!.dirtyBytes, log });
  const session = hammer2Session(mnt, ops, {
    options: po!.fuse,
    debug: o.debug,
    log,
    attrTimeout: po!.attrTimeout,
    entryTimeout: po!.attrTimeout,
    spinUs: po!.spinUs,
  });
  let timer: NodeJS.Timeout | null = null;
  // Dirty state reaches media within flushSec seconds even if nobody syncs.
  if (!po!.readonly && po!.flushSec > 0) {
    timer = setInterval(() => {
      try {
        if (!h2.dirty) {
          h2.idleTick();
          return;
        }
        h2.flush();
        h2.maybeReclaim();
      } catch (e) {
        log(`background flush failed: ${(e as Error).message}`);
      }
    }, po!.flushSec * 1000);
  }
  // Block buffers are freed in bursts (after commits, during big reads);
  // hand the freed heap back so RSS follows what is in use, not the peak.
  const trimmer = setInterval(trimMemory, 2000);
  trimmer.unref();
  let finished = false;
  const finish = (code: number) => {
    if (finished) return;
    finished = true;
    clearInterval(trimmer);
    if (timer) clearInterval(timer);
    try {
      ops.destroy();
    } catch (e) {
      log(`final flush failed: ${(e as Error).message}`);
      code = 1;
    }
    h2.close();
    logStream?.end();
    process.exit(code);
  };
  try {
    await session.mount();
  } catch (e) {
    h2.close();
    die(`cannot mount on ${mnt}: ${(e as Error).message}`);
  }
  log(`mounted ${spec} (PFS ${pfs.name}) on ${mnt}, ${po!.readonly ? 'read-only' : 'read-write'}`);
  if (po!.readaheadKb > 0) {
    const why = setMountReadahead(mnt, po!.readaheadKb);
    if (why) log(`readahead left at the kernel's default: ${why}`);
  }
  if (notifyFd < 0 && !o.log) {
    process.stderr.write(`${prog}: ${spec} mounted on ${mnt}; Ctrl-C or \`fusermount3 -u ${mnt}\` to unmount\n`);
  }
  notify('ok');
  const stop = (sig: string) => {
    log(`unmounting ${mnt} (${sig})`);
    session.unmount().catch((e) => log(`unmount: ${(e as Error).message}`));
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGHUP', () => stop('SIGHUP'));
  const end = await session.closed;
  log(`${mnt}: session ended (${end.message})`);
  finish(end.ok ? 0 : 1);
}

/** Background mode: run ourselves with -f detached and wait for its verdict on a pipe. */
function runBackground(argv: string[]): void {
  const child = spawn(process.execPath, [process.argv[1], '-f', ...argv], {
    detached: true,
    stdio: ['ignore', 'ignore', 'pipe', 'pipe'],
    env: { ...process.env, HAMMER2_NOTIFY_FD: '3' },
  });
  let errText = '';
  child.stderr!.on('data', (d) => (errText += d.toString()));
  let status = '';
  const pipe = child.stdio[3] as NodeJS.ReadableStream;
  pipe.on('data', (d) => (status += d.toString()));
  const done = (code: number) => {
    child.unref();
    (child.stderr as unknown as { destroy(): void }).destroy();
    (pipe as unknown as { destroy(): void }).destroy();
    process.exit(code);
  };
  const report = (why: string) =>
    setTimeout(() => {
      process.stderr.write(errText || `${prog}: ${why}\n`);
      done(1);
    }, 50);
  pipe.on('end', () => {
    if (status.startsWith('ok')) return done(0);
    report(status.replace(/^error /, '').trim() || 'daemon exited before mounting');
  });
  child.on('exit', (code) => {
    if (!status) report(`daemon exited (${code}) before mounting`);
  });
}

async function main(): Promise<void> {
  const program = new Command();
  program
    .name(prog)
    .description('Mount a HAMMER2 PFS through FUSE')
    .argument('<special>', 'image or device (several as img1:img2), optionally @LABEL (default @DATA)')
    .argument('<node>', 'mountpoint directory')
    .option('-f, --foreground', 'stay in the foreground', false)
    .option('-d, --debug', 'FUSE debug output (implies -f)', false)
    .option(
      '-o, --options <opts>',
      'ro, rw, flush=SEC, dirty=MiB, attr_timeout=SEC, readahead=KiB, spin=USEC, allow_other, default_permissions, any libfuse option',
      (v: string, prev: string[]) => [...prev, v],
      [] as string[],
    )
    .option('--log <file>', 'append daemon log lines to this file')
    .showHelpAfterError();
  program.parse(process.argv);
  const [special, node] = program.args;
  const opts = program.opts();
  const o: MountOpts = { foreground: opts.foreground || opts.debug, debug: opts.debug, options: opts.options, log: opts.log };
  const mnt = path.resolve(node);
  if (o.foreground || process.env.HAMMER2_NOTIFY_FD) {
    await runForeground(special, mnt, o);
  } else {
    // Fail fast on the obvious before detaching.
    try {
      parseOptions(o.options);
    } catch (e) {
      fail((e as Error).message);
    }
    const why = fuseLowLevelUnavailable();
    if (why) fail(why);
    checkMountpoint(mnt);
    const { h2 } = await openPfs(special, false, 1 << 20);
    h2.close();
    runBackground(process.argv.slice(2));
  }
}

main().catch((e) => fail((e as Error)?.message ?? String(e)));
