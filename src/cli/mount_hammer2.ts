#!/usr/bin/env node
// mount_hammer2 [-f] [-d] [-o options] image[@LABEL] mountpoint
//
// Mounts one PFS of a HAMMER2 image through FUSE. Without -f the daemon
// detaches once the mount is live; the parent reports success or the error.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command } from 'commander';
import { Hammer2Device, MediaError } from '../engine';
import { Pfs } from '../fs';
import { Hammer2Fuse, readOnlyOps } from '../fuse/adapter';
import { MountError } from '../store';
import { parseDeviceSpec } from './spec';

const prog = 'mount_hammer2';

interface MountOpts {
  foreground: boolean;
  debug: boolean;
  options: string[];
  log?: string;
}

/** Split -o lists into fuse-native settings and raw extra options. */
function fuseOptions(list: string[], debug: boolean): { native: Record<string, unknown>; extra: string[]; rw: boolean } {
  const native: Record<string, unknown> = { autoUnmount: true, fsname: 'hammer2', subtype: 'hammer2' };
  const extra: string[] = ['use_ino', 'ro'];
  let rw = false;
  for (const o of list.flatMap((s) => s.split(',')).filter(Boolean)) {
    if (o === 'ro') continue;
    else if (o === 'rw') rw = true;
    else if (o === 'allow_other') native.allowOther = true;
    else if (o === 'allow_root') native.allowRoot = true;
    else if (o === 'default_permissions') native.defaultPermissions = true;
    else if (/^[A-Za-z_][A-Za-z0-9_]*(=[^,\s]*)?$/.test(o)) extra.push(o);
    else throw new Error(`bad mount option "${o}"`);
  }
  if (debug) native.debug = true;
  return { native, extra, rw };
}

function fail(msg: string): never {
  process.stderr.write(`${prog}: ${msg}\n`);
  process.exit(1);
}

/** Refuse a mountpoint that is missing, not a directory, or a dead FUSE endpoint. */
function checkMountpoint(mnt: string): void {
  try {
    const st = fs.statSync(mnt);
    if (!st.isDirectory()) fail(`${mnt}: not a directory`);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOTCONN') {
      fail(
        `${mnt}: stale FUSE mount left by a daemon that died ("Transport endpoint is not connected").\n` +
          `  Clear it with:  fusermount -u ${mnt}   (or: umount -l ${mnt})  and mount again.`,
      );
    }
    if (code === 'ENOENT') fail(`${mnt}: mountpoint does not exist`);
    fail(`${mnt}: ${(e as Error).message}`);
  }
  const mounted = fs
    .readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[1] === mnt.replace(/ /g, '\\040'));
  if (mounted) fail(`${mnt}: something is already mounted there`);
}

function isMounted(mnt: string): boolean {
  try {
    const enc = mnt.replace(/\\/g, '\\134').replace(/ /g, '\\040');
    return fs
      .readFileSync('/proc/self/mounts', 'utf8')
      .split('\n')
      .some((l) => l.split(' ')[1] === enc);
  } catch {
    return false;
  }
}

async function openPfs(spec: string, log: (m: string) => void): Promise<{ dev: Hammer2Device; pfs: Pfs }> {
  const { devices, label } = parseDeviceSpec(spec);
  let dev: Hammer2Device;
  try {
    dev = await Hammer2Device.open(devices, { writable: false, onCheckError: log });
  } catch (e) {
    if (e instanceof MountError || e instanceof MediaError) fail(e.message);
    throw e;
  }
  let entries;
  try {
    entries = dev.listPfs();
  } catch (e) {
    fail(`${devices}: cannot read the super-root: ${(e as Error).message}`);
  }
  const entry = entries.find((p) => p.name === label);
  if (!entry) {
    fail(`${devices}: no PFS labelled "${label}" (available: ${entries.map((p) => p.name).join(', ') || 'none'})`);
  }
  try {
    return { dev, pfs: new Pfs(dev.reader, entry) };
  } catch (e) {
    fail(`${devices}@${label}: bad PFS root: ${(e as Error).message}`);
  }
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
    if (notifyFd >= 0) {
      try {
        fs.writeSync(notifyFd, msg + '\n');
        fs.closeSync(notifyFd);
      } catch {
        /* parent gone */
      }
    }
  };
  let parsed;
  try {
    parsed = fuseOptions(o.options, o.debug);
  } catch (e) {
    notify(`error ${(e as Error).message}`);
    fail((e as Error).message);
  }
  if (parsed.rw) log('read-write mounts are not available yet: mounting read-only (writes fail with EROFS)');
  checkMountpoint(mnt);
  const { dev, pfs } = await openPfs(spec, log);
  const h = dev.header;
  const ops = readOnlyOps(pfs, {
    log,
    space: () => ({
      total: Number(h.allocatorSize),
      free: Number(h.allocatorFree),
      files: Number(pfs.entry.bref.embed.readBigUInt64LE(8)),
    }),
  });
  const fuse = new Hammer2Fuse(mnt, ops, parsed.native, parsed.extra) as any;
  let closing = false;
  const shutdown = (why: string, code = 0) => {
    if (closing) return;
    closing = true;
    log(`unmounting ${mnt} (${why})`);
    fuse.unmount((err: Error | null) => {
      if (err && isMounted(mnt)) log(`unmount failed: ${err.message}`);
      dev.close();
      logStream?.end();
      process.exit(code);
    });
  };
  fuse.mount((err: Error | null) => {
    if (err) {
      const msg = `cannot mount on ${mnt}: ${err.message}`;
      notify(`error ${msg}`);
      dev.close();
      fail(msg);
    }
    log(`mounted ${spec} (PFS ${pfs.name}) on ${mnt}, read-only`);
    if (notifyFd < 0 && !o.log) {
      process.stderr.write(`${prog}: ${spec} mounted on ${mnt}; Ctrl-C or \`fusermount -u ${mnt}\` to unmount\n`);
    }
    notify('ok');
    process.on('SIGINT', () => shutdown('SIGINT'));
    process.on('SIGTERM', () => shutdown('SIGTERM'));
    process.on('SIGHUP', () => shutdown('SIGHUP'));
    // An external `fusermount -u` ends the FUSE loop without telling us: watch for it.
    const t = setInterval(() => {
      if (!isMounted(mnt)) {
        clearInterval(t);
        log(`${mnt} was unmounted`);
        closing = true;
        dev.close();
        logStream?.end();
        process.exit(0);
      }
    }, 1000);
  });
}

/** Background mode: run ourselves with -f detached and wait for its verdict on a pipe. */
function runBackground(argv: string[], o: MountOpts): void {
  const args = [process.argv[1], '-f', ...argv];
  const child = spawn(process.execPath, args, {
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
    (child.stderr as any)?.destroy();
    (pipe as any).destroy?.();
    process.exit(code);
  };
  pipe.on('end', () => {
    if (status.startsWith('ok')) return done(0);
    // The child wrote its own message to stderr before exiting.
    setTimeout(() => {
      process.stderr.write(errText || `${prog}: ${status.replace(/^error /, '') || 'daemon exited before mounting'}\n`);
      done(1);
    }, 50);
  });
  child.on('exit', (code) => {
    if (!status) {
      setTimeout(() => {
        process.stderr.write(errText || `${prog}: daemon exited (${code}) before mounting\n`);
        done(1);
      }, 50);
    }
  });
  void o;
}

async function main(): Promise<void> {
  const program = new Command();
  program
    .name(prog)
    .description('Mount a HAMMER2 PFS through FUSE (read-only for now)')
    .argument('<special>', 'image or device (several as img1:img2), optionally @LABEL (default @DATA)')
    .argument('<node>', 'mountpoint directory')
    .option('-f, --foreground', 'stay in the foreground', false)
    .option('-d, --debug', 'FUSE debug output (implies -f)', false)
    .option('-o, --options <opts>', 'mount options: ro, allow_other, default_permissions, ...', (v: string, prev: string[]) => [...prev, v], [] as string[])
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
      fuseOptions(o.options, o.debug);
    } catch (e) {
      fail((e as Error).message);
    }
    checkMountpoint(mnt);
    const { dev } = await openPfs(special, () => {});
    dev.close();
    runBackground(process.argv.slice(2), o);
  }
}

main().catch((e) => fail((e as Error)?.message ?? String(e)));
