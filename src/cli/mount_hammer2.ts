#!/usr/bin/env node
// mount_hammer2 [-f] [-d] [-o options] special[@LABEL] mountpoint
//
// Mounts one PFS of a HAMMER2 image or device through FUSE, read-write
// unless -o ro. Without -f the daemon detaches once the mount is live; the
// parent reports success or the error. One daemon serves every mounted PFS
// of an image: when the image already has one, the mount is handed to it
// over its control channel (`@LABEL` alone names a label of an image
// already mounted).
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command } from 'commander';
import { allSockets, ControlClient, findSockets } from '../control';
import { absCopyOptions, DAEMON_NODE_FLAGS, ImageDaemon, mountTable, ParsedOptions, parseOptions } from '../daemon';
import { FsError, MediaError } from '../engine';
import { Hammer2Fs } from '../fs';
import { fuseLowLevelUnavailable } from '../fuse/lowlevel';
import { DeviceError, MountError } from '../store';
import { parseDeviceSpec } from './spec';

const prog = 'mount_hammer2';

interface MountOpts {
  foreground: boolean;
  debug: boolean;
  options: string[];
  log?: string;
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

/** The image's daemon, if one is running: further mounts go to it. */
async function findDaemon(devices: string): Promise<ControlClient | null> {
  let socks: string[];
  try {
    socks = findSockets(devices.split(':')[0]);
  } catch {
    return null; // the image does not exist: opening it says so
  }
  for (const s of socks) {
    try {
      return await ControlClient.connect(s);
    } catch {
      /* a socket left by a daemon that died */
    }
  }
  return null;
}

/** `@LABEL`: the one running daemon whose image has that label. */
async function daemonWithLabel(label: string): Promise<{ client: ControlClient; devices: string }> {
  const found: { client: ControlClient; devices: string }[] = [];
  for (const s of allSockets()) {
    let c: ControlClient;
    try {
      c = await ControlClient.connect(s, 2000);
    } catch {
      continue;
    }
    try {
      const pfs = await c.request<{ name: string }[]>('pfs-list');
      const info = await c.request<{ devices: string }>('info');
      if (pfs.some((p) => p.name === label)) {
        found.push({ client: c, devices: info.devices });
        continue;
      }
    } catch {
      /* not answering properly: skip */
    }
    c.close();
  }
  if (found.length === 1) return found[0];
  for (const f of found) f.client.close();
  if (found.length === 0) fail(`@${label}: no mounted HAMMER2 image has a PFS labelled "${label}"`);
  fail(`@${label}: several mounted images have a PFS labelled "${label}" (${found.map((f) => f.devices).join(', ')}); name the image`);
}

/** Hand the mount to the daemon that owns the image; exits. */
async function handOff(client: ControlClient, devices: string, label: string, mnt: string, options: string[]): Promise<never> {
  try {
    const r = await client.request<{ warnings?: string[] }>('mount', { label, mountpoint: mnt, options });
    client.close();
    for (const w of r?.warnings ?? []) process.stderr.write(`${prog}: warning: ${w}\n`);
    process.exit(0);
  } catch (e) {
    client.close();
    fail(`${devices}@${label}: ${(e as Error).message}`);
  }
}

/** Absolute volume paths, so the daemon and the mount table name the image the same way from anywhere. */
function absDevices(devices: string): string {
  return devices
    .split(':')
    .map((d) => path.resolve(d))
    .join(':');
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
  const { devices, label } = target(spec);
  let daemon: ImageDaemon;
  try {
    daemon = await ImageDaemon.open({
      devices,
      writable: !po!.readonly,
      cacheBytes: po!.cacheMiB * 1048576, // (<< 20 overflows at 2 GiB)
      flushSec: po!.flushSec,
      log,
      owner: process.getuid?.() ?? 0,
    });
  } catch (e) {
    if (e instanceof MountError || e instanceof MediaError || e instanceof DeviceError) die(e.message);
    throw e;
  }
  try {
    await daemon!.mount(label, mnt, po!, o.debug);
  } catch (e) {
    daemon!.stop('mount failed');
    await daemon!.done;
    die(e instanceof FsError || e instanceof MediaError ? e.message : `cannot mount on ${mnt}: ${(e as Error).message}`);
  }
  if (notifyFd < 0 && !o.log) {
    process.stderr.write(`${prog}: ${spec} mounted on ${mnt}; Ctrl-C or \`fusermount3 -u ${mnt}\` to unmount\n`);
  }
  // What the user must hear even when the daemon detaches (a copy left out).
  notify(['ok', ...daemon!.warnings.map((w) => `warning ${w}`)].join('\n'));
  process.on('SIGINT', () => daemon.stop('SIGINT'));
  process.on('SIGTERM', () => daemon.stop('SIGTERM'));
  process.on('SIGHUP', () => daemon.stop('SIGHUP'));
  const code = await daemon!.done;
  logStream?.end();
  process.exit(code);
}

/** The image and label a spec names (absolute paths). */
function target(spec: string): { devices: string; label: string } {
  try {
    const { devices, label } = parseDeviceSpec(spec);
    return { devices: absDevices(devices), label };
  } catch (e) {
    fail((e as Error).message);
  }
}

/** Background mode: run ourselves with -f detached (with the daemon's node flags) and wait for its verdict on a pipe. */
function runBackground(argv: string[]): void {
  const child = spawn(process.execPath, [...DAEMON_NODE_FLAGS, process.argv[1], '-f', ...argv], {
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
    if (status.startsWith('ok')) {
      for (const l of status.split('\n')) if (l.startsWith('warning ')) process.stderr.write(`${prog}: warning: ${l.slice(8)}\n`);
      return done(0);
    }
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
      'ro, rw, copy=IMAGE (repeatable), master=IMAGE, copy_retry=SEC, resync_rate=MiB, flush=SEC, dirty=MiB, attr_timeout=SEC, readahead=KiB, cache=MiB, spin=USEC, writeback_cache, writeback_ratio=PCT, allow_other, default_permissions, any libfuse option',
      (v: string, prev: string[]) => [...prev, v],
      [] as string[],
    )
    .option('--log <file>', 'append daemon log lines to this file')
    .showHelpAfterError();
  program.parse(process.argv);
  const [special, node] = program.args;
  const opts = program.opts();
  const o: MountOpts = { foreground: opts.foreground || opts.debug, debug: opts.debug, options: absCopyOptions(opts.options), log: opts.log };
  const mnt = path.resolve(node);
  // A further PFS of an image already mounted goes to the daemon that owns it.
  if (special.startsWith('@')) {
    checkMountpoint(mnt);
    const { client, devices } = await daemonWithLabel(special.slice(1));
    await handOff(client, devices, special.slice(1), mnt, o.options);
  }
  const { devices, label } = target(special);
  try {
    parseOptions(o.options);
  } catch (e) {
    fail((e as Error).message);
  }
  const existing = await findDaemon(devices);
  if (existing) {
    checkMountpoint(mnt);
    await handOff(existing, devices, label, mnt, o.options);
  }
  if (o.foreground || process.env.HAMMER2_NOTIFY_FD) {
    await runForeground(special, mnt, o);
  } else {
    // Fail fast on the obvious before detaching.
    const why = fuseLowLevelUnavailable();
    if (why) fail(why);
    checkMountpoint(mnt);
    let probe: Hammer2Fs;
    try {
      probe = await Hammer2Fs.open(devices, { writable: false, lock: true, cacheBytes: 1 << 20 });
    } catch (e) {
      fail((e as Error).message);
    }
    const names = probe!.dev.listPfs().map((p) => p.name);
    probe!.close();
    if (!names.includes(label)) fail(`${devices}: no PFS labelled "${label}" (available: ${names.join(', ') || 'none'})`);
    runBackground(process.argv.slice(2));
  }
}

main().catch((e) => fail((e as Error)?.message ?? String(e)));
