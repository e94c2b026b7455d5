// mirror-read, mirror-write, mirror-copy, pfs-upgrade, pfs-downgrade: a PFS
// streamed to a SLAVE PFS of its cluster by transaction id (src/mirror), on
// unmounted images named IMAGE@LABEL. The stream goes to stdout and comes
// from stdin, so any pipe carries it: hammer2 mirror-read a.img@DATA | ssh
// host hammer2 mirror-write b.img@COPY.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import type { BlockReader, Hammer2Device } from '../../engine';
import type { Hammer2Fs } from '../../fs';
import { BrefType, PfsType } from '../../media/constants';
import type { InodeData } from '../../media';
import type { ControlError } from '../../control/protocol';
import { ownPipe, pipeRefused } from '../../control/pipe';
import { findSockets } from '../../control/paths';
import { hammer2MountOf } from '../../daemon/options';
import { errnoName, nativeShim } from '../../store/native';
import { parseDeviceSpec } from '../spec';
import { Directive, DirectiveError, Hammer2Ctx, UsageError } from './context';
import { openTarget, Target } from './target';

/**
 * The filesystem and mirroring code, loaded when a pass opens or walks an
 * image: mirror-write into a mounted slave only relays its standard input
 * to the daemon, and loading them cost that process ~0.1 s of CPU per pass.
 */
async function lib() {
  const [engine, fsl, media, mirror, sync] = await Promise.all([import('../../engine'), import('../../fs'), import('../../media'), import('../../mirror'), import('../../sync')]);
  return { ...engine, ...fsl, ...media, ...mirror, ...sync };
}

const sleep = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/**
 * A writer blocked on a FIFO nobody drains (the daemon at the other end
 * died, or stopped reading to refuse the stream) gives up after this long
 * without progress, rather than hanging.
 */
const STALL_MS = 30_000;

const stallGuard = () => ({ last: Date.now() });

function writeAll(fd: number, b: Buffer, stall?: { last: number }): void {
  let at = 0;
  // Time spent walking the master between records is not a stall.
  if (stall) stall.last = Date.now();
  while (at < b.length) {
    try {
      at += fs.writeSync(fd, b, at, b.length - at);
      if (stall) stall.last = Date.now();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN') {
        if (stall && Date.now() - stall.last > STALL_MS) throw new DirectiveError('the daemon stopped taking the stream in');
        sleep(2);
        continue;
      }
      if ((e as NodeJS.ErrnoException).code === 'EPIPE') throw new DirectiveError('the reader of the stream went away (broken pipe)');
      throw e;
    }
  }
}

/**
 * Records gathered into writes of about 256 KiB: a pass of a 1 % change is
 * some 15 000 records of a few hundred bytes, and one write(2) each cost
 * the reader more than its walk's reads (and the far end one wakeup each).
 * `flush` writes what is left; the stream's END record is the last push.
 * `throttle` (the -b limit) is charged for every record pushed.
 */
function batchedWriter(write: (b: Buffer) => void, throttle?: (bytes: number) => void, limit = 256 << 10): { push(b: Buffer): void; flush(): void } {
  let parts: Buffer[] = [];
  let bytes = 0;
  const flush = () => {
    if (!parts.length) return;
    const b = parts.length === 1 ? parts[0] : Buffer.concat(parts, bytes);
    parts = [];
    bytes = 0;
    write(b);
  };
  return {
    push: (b) => {
      throttle?.(b.length);
      parts.push(b);
      bytes += b.length;
      if (bytes >= limit) flush();
    },
    flush,
  };
}

/** IMAGE@LABEL of an unmounted image (a mounted PFS is refused with what to do). */
function imageSpec(spec: string, what: string): { devices: string; label: string } {
  const at = spec.lastIndexOf('@');
  if (at <= 0) {
    if (fs.existsSync(spec) && hammer2MountOf(path.resolve(spec))) {
      throw new DirectiveError(`${spec}: ${what} takes unmounted images (IMAGE@LABEL); mirror-read reads a mounted master and mirror-write writes into a mounted slave`);
    }
    if (fs.existsSync(spec)) throw new DirectiveError(`${spec} is not a mounted HAMMER2 PFS: name a mountpoint, or an unmounted PFS as IMAGE@LABEL`);
    throw new UsageError(`${what}: name the PFS as IMAGE@LABEL`);
  }
  const { devices, label } = parseDeviceSpec(spec);
  for (const v of devices.split(':')) {
    if (!fs.existsSync(v)) throw new DirectiveError(`${v}: no such file or device`);
    if (fs.statSync(v).isDirectory()) throw new DirectiveError(`${v} is a directory: ${what} takes the image of an unmounted PFS as IMAGE@LABEL`);
  }
  return { devices: devices.split(':').map((d) => path.resolve(d)).join(':'), label };
}

async function open(devices: string, writable: boolean): Promise<Hammer2Fs> {
  const L = await lib();
  try {
    return await L.Hammer2Fs.open(devices, {
      writable,
      lock: true,
      ...(writable ? { allocator: (d: Hammer2Device) => new L.FreemapAllocator(d.vols, d.reader, d.header) } : {}),
    });
  } catch (e) {
    throw new DirectiveError((e as Error).message);
  }
}

const tidArg = (s: string | undefined): bigint => {
  if (s === undefined) return 0n;
  if (!/^(0x[0-9a-f]+|\d+)$/i.test(s)) throw new UsageError(`bad transaction id "${s}"`);
  return BigInt(s);
};

const setType =
  (type: number, name: string): Directive =>
  async (ctx, args) => {
    const spec = args[0] && args[0].includes('@') ? args[0] : ctx.sel && args[0] ? `${ctx.sel}@${args[0]}` : undefined;
    if (!spec || args.length !== 1) throw new UsageError(`${name}: expected IMAGE@LABEL (or -s IMAGE LABEL)`);
    const { devices, label } = imageSpec(spec, name);
    const h = await open(devices, true);
    try {
      h.setPfsType(label, type);
    } catch (e) {
      throw new DirectiveError((e as Error).message);
    } finally {
      h.close();
    }
    ctx.io.out(`${label}: now a ${type === PfsType.MASTER ? 'MASTER' : 'SLAVE'}\n`);
    return 0;
  };

/** What a daemon answers once it has streamed a pass ('mirror-read'). */
interface DaemonRead {
  label: string;
  to: string;
  records: number;
  bytes: number;
  blocksRead: number;
  /** Written into the command's own pipe (absent from older daemons). */
  direct?: boolean;
}

/**
 * A pass streamed by the daemon that serves the master ('mirror-read'):
 * it walks the state from its own caches, in slices between its other
 * requests, into a FIFO of ours, whose chunks go to `sink` as they come.
 * The FIFO's read end is open before the daemon is asked (so that its
 * non-blocking open for writing finds a reader) and is read only once the
 * daemon says it opened the other end (before that, a read would take the
 * FIFO for ended). A sink that throws (its reader went away) closes our
 * end: the daemon's next write fails and it stops; the sink's error is
 * what is reported.
 */
async function daemonStream(t: Target, args: Record<string, unknown>, sink: (chunk: Buffer) => void): Promise<DaemonRead> {
  return withFifo(async (fifo) => {
    const fd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    let from: net.Socket | null = null;
    let relayed: Promise<void> = Promise.resolve();
    let broken: Error | null = null;
    const relay = () => {
      if (from) return;
      const sock = new net.Socket({ fd, readable: true, writable: false });
      from = sock;
      relayed = new Promise<void>((res, rej) => {
        sock.on('data', (c: Buffer) => {
          if (broken) return;
          try {
            sink(c);
          } catch (e) {
            broken = e as Error;
            sock.destroy();
            res();
          }
        });
        sock.on('end', () => res());
        sock.on('close', () => res());
        sock.on('error', rej);
      });
      // Awaited below, unless the daemon's answer fails first.
      relayed.catch(() => {});
    };
    try {
      let r: DaemonRead;
      try {
        r = await t.request<DaemonRead>('mirror-read', { ...args, fifo }, relay);
      } catch (e) {
        if (broken) throw broken;
        // A daemon older than this op: the caller reads the pinned state itself.
        if (!from && (e as ControlError).code === 'EOPNOTSUPP') throw e;
        throw new DirectiveError(`mirror-read of ${String(args.label ?? '')}: ${(e as Error).message}`);
      }
      relay();
      await relayed;
      if (broken) throw broken;
      return r;
    } finally {
      if (from) (from as net.Socket).destroy();
      else fs.closeSync(fd);
    }
  });
}

/**
 * mirror-read of a mounted master (`where`, or the target `opened` for it
 * already): its daemon commits what is pending, pins that state and streams
 * it into our standard output when that is a pipe, else through a FIFO
 * that this process relays (daemonStream); either way this process loads
 * no filesystem code.
 */
async function readMounted(ctx: Hammer2Ctx, where: string, since: bigint, opened?: Target): Promise<number> {
  const t = opened ?? (await openTarget(where, { write: true }));
  try {
    // (A mountpoint, or IMAGE@LABEL of an image a daemon holds.)
    if (!t.viaDaemon || !t.label) throw new DirectiveError(`${where}: not a mounted HAMMER2 PFS`);
    // A pipe to the next command holds 1 MiB, not 64 KiB: fewer wakeups on both sides (not a pipe: no-op).
    nativeShim()?.pipeSize?.(1, 1 << 20);
    const args = { label: t.label, since: since.toString(), bandwidth: ctx.bandwidth ?? 0 };
    let r: DaemonRead | null;
    try {
      r = await viaOwnPipe<DaemonRead>(t, 'mirror-read', args, 1);
    } catch (e) {
      if ((e as ControlError).code === 'EOPNOTSUPP') throw e;
      throw new DirectiveError(`mirror-read of ${t.label}: ${(e as Error).message}`);
    }
    r ??= await daemonStream(t, args, (c) => writeAll(1, c));
    if (ctx.verbose > 0) ctx.io.err(`mirror-read: ${r.label} from ${since} to ${r.to}: ${r.records} records, ${r.bytes} bytes${r.direct ? ', written by the daemon into the pipe' : ''}\n`);
    return 0;
  } catch (e) {
    if ((e as ControlError).code !== 'EOPNOTSUPP') throw e;
  } finally {
    await t.close();
  }
  return readPinned(ctx, where, since);
}

/** mirror-read through a daemon started before its 'mirror-read' existed: it pins the state, this process walks it from the image. */
async function readPinned(ctx: Hammer2Ctx, where: string, since: bigint): Promise<number> {
  const ms = await masterState(where, null, false);
  try {
    const L = await lib();
    const out = batchedWriter((b) => writeAll(1, b), ctx.bandwidth ? throttleTo(ctx.bandwidth) : undefined);
    const r = L.mirrorReadRoot(await ms.reader(), ms.root, ms.tid, ms.label, since, out.push);
    out.flush();
    if (ctx.verbose > 0) ctx.io.err(`mirror-read: ${ms.label} from ${since} to ${r.header.to}: ${r.stats.records} records, ${r.stats.bytes} bytes\n`);
  } catch (e) {
    if (e instanceof DirectiveError) throw e;
    throw new DirectiveError((e as Error).message);
  } finally {
    await ms.release();
  }
  return 0;
}

const slaveTidOf = async (sh: Hammer2Fs, label: string): Promise<bigint> => {
  const e = sh.dev.findPfs(label);
  return e ? (await lib()).syncedTid(e.bref, e.inode) : 0n;
};

/** A committed master state to read a pass from, and how to keep it as a snapshot once the slave holds it. */
interface MasterState {
  /** Reads the state in this process (a daemon-held master's image is opened, beside the daemon, on first use). */
  reader(): Promise<BlockReader>;
  /**
   * Only for a master a daemon serves: the daemon streams this very state
   * since `since` itself, from its caches, chunk by chunk into `sink`.
   */
  stream?(since: bigint, bandwidth: number, sink: (chunk: Buffer) => void): Promise<{ blocksRead: number }>;
  root: InodeData;
  tid: bigint;
  label: string;
  keep(name: string): Promise<void>;
  /** The tid snapshot `name` holds, or null when there is none. */
  keptTid(name: string): Promise<bigint | null>;
  release(): Promise<void>;
}

/**
 * The master's committed state now: pinned by the daemon that serves it
 * (bulkfree keeps it while we read it from the image), or read from an
 * unmounted image (opened writable only when it will keep a snapshot).
 */
async function masterState(spec: string, label: string | null, forKeep: boolean): Promise<MasterState> {
  const d = await daemonFor(spec);
  if (d) {
    let pin: { id: string; bref: string; inode: string; devices: string };
    try {
      pin = await d.t.request<{ id: string; bref: string; inode: string; devices: string }>('mirror-pin', { label: d.label });
    } catch (e) {
      await d.t.close();
      throw e;
    }
    let dev: Hammer2Device | null = null;
    let L: Awaited<ReturnType<typeof lib>>;
    try {
      L = await lib();
    } catch (e) {
      await d.t.request('mirror-unpin', { id: pin.id }).catch(() => {});
      await d.t.close();
      throw e;
    }
    return {
      reader: async () => (dev ??= await L.Hammer2Device.open(pin.devices, { writable: false, lock: false })).reader,
      stream: async (since, bandwidth, sink) => ({ blocksRead: (await daemonStream(d.t, { label: d.label, pin: pin.id, since: since.toString(), bandwidth }, sink)).blocksRead }),
      root: L.decodeInode(Buffer.from(pin.inode, 'base64')),
      tid: L.decodeBlockref(Buffer.from(pin.bref, 'base64'), 0).modifyTid,
      label: d.label,
      keep: async (name) => void (await d.t.request('mirror-keep', { id: pin.id, name })),
      keptTid: async (name) => {
        try {
          return BigInt((await d.t.request<{ tid: string }>('pfs-tid', { label: name })).tid);
        } catch {
          return null;
        }
      },
      release: async () => {
        dev?.close();
        await d.t.request('mirror-unpin', { id: pin.id }).catch(() => {});
        await d.t.close();
      },
    };
  }
  const m = imageSpec(spec, 'mirror-stream');
  const mh = await open(m.devices, forKeep);
  const e = mh.dev.findPfs(m.label);
  if (!e) {
    mh.close();
    throw new DirectiveError(`${spec}: no PFS labelled "${m.label}"`);
  }
  return {
    reader: async () => mh.dev.reader,
    root: e.inode,
    tid: e.bref.modifyTid,
    label: label ?? m.label,
    keep: async (name) => mh.keepSnapshot(name, e.inode, e.bref.modifyTid),
    keptTid: async (name) => mh.dev.findPfs(name)?.bref.modifyTid ?? null,
    release: async () => mh.close(),
  };
}

/** A bandwidth limit: sleeps whenever more than `bw` bytes per second went through. */
function throttleTo(bw: number): (bytes: number) => void {
  const t0 = Date.now();
  let sent = 0;
  return (bytes) => {
    sent += bytes;
    const ahead = (sent / bw) * 1000 - (Date.now() - t0);
    if (ahead > 5) sleep(Math.ceil(ahead));
  };
}

interface PassResult {
  label: string;
  from: bigint;
  to: bigint;
  blocksRead: number;
  written: number;
  deleted: number;
}

/**
 * One mirror-stream pass: the master's committed state into the slave,
 * which is held by a daemon (mounted: the stream goes to it) or an
 * unmounted image (written here). Null when the slave already holds that
 * state. With `keep`, the state sent is kept as snapshot `keep` on the
 * master once the slave has committed it.
 */
async function streamPass(ctx: Hammer2Ctx, masterSpec: string, slaveSpec: string, keep: string | undefined): Promise<PassResult | null> {
  const sd = await daemonFor(slaveSpec);
  const s = sd ? null : imageSpec(slaveSpec, 'mirror-stream');
  let sh: Hammer2Fs | null = null;
  let ms: MasterState | null = null;
  try {
    let since: bigint;
    if (sd) since = BigInt((await sd.t.request<{ synced: string }>('pfs-tid', { label: sd.label })).synced);
    else {
      sh = await open(s!.devices, true);
      since = await slaveTidOf(sh, s!.label);
    }
    ms = await masterState(masterSpec, null, keep !== undefined);
    const L = await lib();
    // Nothing new: an empty master and an empty slave are level too.
    const masterAt = L.inodeBlockset(ms.root).every((b) => b.type === BrefType.EMPTY) ? 0n : ms.tid;
    if (masterAt === since) {
      // A stream killed between the slave's commit and the keep left the snapshot behind: renew it.
      if (keep !== undefined && since !== 0n && (await ms.keptTid(keep)) !== ms.tid) await ms.keep(keep).catch(() => {});
      return null;
    }
    // The limit holds within each pass: idle time between passes is no credit.
    const throttle = ctx.bandwidth ? throttleTo(ctx.bandwidth) : undefined;
    let r: PassResult;
    if (sh) {
      const w = L.mirrorCopyFrom(await ms.reader(), ms.root, ms.tid, ms.label, sh, s!.label, throttle);
      r = { label: s!.label, from: w.from, to: w.header.to, blocksRead: w.read.blocksRead, written: w.stats.leaves, deleted: w.stats.deleted };
    } else {
      const m = ms;
      let blocksRead = 0;
      const w = await streamToDaemon(sd!.t, sd!.label, async (fd, answered) => {
        const stall = stallGuard();
        // Both ends held by daemons: the master's streams its pinned state
        // itself, from its caches, and this process only passes it on (until
        // the slave's daemon answers: then our end of its FIFO is closed).
        if (m.stream) {
          try {
            const sink = (c: Buffer) => {
              if (answered.aborted) throw new DirectiveError("the slave's daemon answered before the stream ended");
              writeAll(fd, c, stall);
            };
            blocksRead = (await m.stream(since, ctx.bandwidth ?? 0, sink)).blocksRead;
            return;
          } catch (e) {
            // A master daemon older than its 'mirror-read': walk the pinned state here.
            if ((e as ControlError).code !== 'EOPNOTSUPP') throw e;
          }
        }
        const out = batchedWriter((b) => writeAll(fd, b, stall), throttle);
        blocksRead = L.mirrorReadRoot(await m.reader(), m.root, m.tid, m.label, since, out.push).stats.blocksRead;
        out.flush();
      });
      r = { label: sd!.label, from: BigInt(w.from), to: BigInt(w.to), blocksRead, written: w.leaves, deleted: w.deleted };
    }
    if (keep !== undefined) {
      try {
        await ms.keep(keep);
      } catch (e) {
        ctx.io.err(`hammer2: mirror-stream: the synced state was not kept as snapshot "${keep}": ${(e as Error).message}\n`);
      }
    }
    return r;
  } finally {
    sh?.close();
    await ms?.release();
    await sd?.t.close();
  }
}

/**
 * A slave on another host, as hammer(8) names one: [user@]host:SLAVE (SLAVE
 * a mounted path or IMAGE@LABEL there). Not a local multi-volume spec
 * (vol1:vol2@LABEL): the part before the colon must not be a local path.
 */
export function remoteSpec(spec: string): { host: string; slave: string } | null {
  const m = /^((?:[^/:@\s]+@)?[^/:@\s]+):(.+)$/.exec(spec);
  if (!m || fs.existsSync(m[1])) return null;
  return { host: m[1], slave: m[2] };
}

/** The command that runs hammer2 on another host: $HAMMER2_RSH (default ssh), the host, hammer2. */
function remoteCommand(host: string, args: string[]): string[] {
  const rsh = (process.env.HAMMER2_RSH || 'ssh').split(/\s+/).filter(Boolean);
  return [...rsh, host, 'hammer2', ...args.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`))];
}

function runRemote(host: string, args: string[]): { status: number | null; out: string; err: string } {
  const [cmd, ...rest] = remoteCommand(host, args);
  const r = spawnSync(cmd, rest, { encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, out: r.stdout ?? '', err: (r.stderr ?? '') + (r.error ? r.error.message : '') };
}

/**
 * One pass into a slave on another host: hammer2 mirror-read MASTER SINCE,
 * piped (by us) into hammer2 mirror-write SLAVE run there; SINCE is what
 * mirror-tid there answers.
 */
async function remotePass(ctx: Hammer2Ctx, masterSpec: string, host: string, slave: string, known: { at: bigint | null }): Promise<PassResult | null> {
  // The far end is asked only when the master moved past what was last sent (one ssh a second would be a lot).
  if (known.at !== null) {
    const ms0 = await masterState(masterSpec, null, false);
    const t0 = ms0.tid;
    await ms0.release();
    if (t0 === known.at) return null;
  }
  const q = runRemote(host, ['mirror-tid', slave]);
  if (q.status !== 0 || !/^\d+$/.test(q.out.trim())) throw new DirectiveError(`${host}:${slave}: mirror-tid failed: ${(q.err || q.out).trim()}`);
  const since = BigInt(q.out.trim());
  const ms = await masterState(masterSpec, null, false);
  let tid: bigint;
  try {
    tid = ms.tid;
  } finally {
    await ms.release();
  }
  if (tid === since) {
    known.at = since;
    return null;
  }
  const rd = spawn(process.execPath, [path.join(__dirname, '..', 'hammer2.js'), ...(ctx.bandwidth ? ['-b', String(ctx.bandwidth)] : []), 'mirror-read', masterSpec, String(since)], { stdio: ['ignore', 'pipe', 'pipe'] });
  const [cmd, ...rest] = remoteCommand(host, ['mirror-write', slave]);
  const wr = spawn(cmd, rest, { stdio: [rd.stdout!, 'pipe', 'pipe'] });
  // Our copy of the pipe's read end goes: if the far end dies, the reader gets EPIPE instead of blocking.
  rd.stdout!.destroy();
  let spawnError = '';
  rd.on('error', (e) => (spawnError ||= `mirror-read: ${e.message}`));
  wr.on('error', (e) => (spawnError ||= `${cmd}: ${e.message}`));
  wr.on('exit', (c) => c !== 0 && rd.kill('SIGTERM'));
  let rerr = '';
  let out = '';
  let werr = '';
  rd.stderr!.on('data', (d) => (rerr += d));
  wr.stdout!.on('data', (d) => (out += d));
  wr.stderr!.on('data', (d) => (werr += d));
  // The reader's 'exit', not 'close': its stdout went to the writer, and never closes here.
  const ended = (p: ReturnType<typeof spawn>) =>
    new Promise<number | null>((r) => {
      if (p.exitCode !== null || p.signalCode !== null) return r(p.exitCode);
      p.once('exit', (c) => r(c));
      p.once('error', () => r(-1));
    });
  const [rc, wc] = await Promise.all([ended(rd), ended(wr)]);
  // Its output, for a moment after it exits (an ssh control master may hold the pipes open).
  await Promise.race([new Promise((r) => (wr.stdout!.readableEnded ? r(null) : wr.stdout!.once('end', r))), new Promise((r) => setTimeout(r, 2000))]);
  if (spawnError) throw new DirectiveError(`${host}:${slave}: ${spawnError}`);
  if (wc !== 0 || rc !== 0) throw new DirectiveError(`${host}:${slave}: ${(werr || rerr || `exit ${wc}`).trim()}`);
  const m = /^(.*): transaction (\d+) -> (\d+): \d+ inodes, (\d+) blocks and entries written, (\d+) removed/m.exec(out);
  if (!m) throw new DirectiveError(`${host}:${slave}: unexpected answer: ${out.trim()}`);
  known.at = BigInt(m[3]);
  return { label: `${host}:${m[1]}`, from: BigInt(m[2]), to: BigInt(m[3]), blocksRead: NaN, written: Number(m[4]), deleted: Number(m[5]) };
}

/**
 * mirror-stream: follow the master's commits into the slave until killed.
 * Each pass is one commit of the slave, so killing it at any moment leaves
 * the slave at its last pass; started again, it goes on from there. Either
 * end may be mounted or not, and may be mounted or unmounted between passes.
 */
const mirrorStream: Directive = async (ctx, args) => {
  if (args.length !== 2) throw new UsageError('mirror-stream: expected MASTER SLAVE (each a mounted path or IMAGE@LABEL)');
  const remote = remoteSpec(args[1]);
  // A mounted end is also known by its IMAGE@LABEL, which the passes fall
  // back to when it is unmounted while the stream runs (and use through
  // its daemon again when it is mounted anew).
  const ends = (remote ? [args[0]] : args).map((a) => {
    if (a.includes('@')) return { spec: a, image: a };
    const m = fs.existsSync(a) ? hammer2MountOf(path.resolve(a)) : undefined;
    if (!m) throw new UsageError(`mirror-stream: ${a} is neither a mounted HAMMER2 PFS nor IMAGE@LABEL`);
    return { spec: a, image: m.source };
  });
  const now = (e: { spec: string; image: string }) => (e.spec === e.image || (fs.existsSync(e.spec) && hammer2MountOf(path.resolve(e.spec))) ? e.spec : e.image);
  if (remote && ctx.keepSynced !== undefined) throw new DirectiveError('mirror-stream: --keep-synced needs the slave on this host (the far end cannot tell this one when it has committed)');
  const known = { at: null as bigint | null };
  let stop = false;
  let wake: (() => void) | null = null;
  const end = () => {
    stop = true;
    wake?.();
  };
  process.once('SIGINT', end);
  process.once('SIGTERM', end);
  try {
    // A first pass that fails is an error to fix (wrong cluster, no such
    // PFS): the command ends. Once passes went through, a failure is taken
    // as passing (an image busy for a moment, a daemon restarted, the
    // network): it is reported and the pass tried again, less often.
    let worked = false;
    let failures = 0;
    while (!stop) {
      let r: PassResult | null = null;
      try {
        r = remote ? await remotePass(ctx, now(ends[0]), remote.host, remote.slave, known) : await streamPass(ctx, now(ends[0]), now(ends[1]), ctx.keepSynced);
        worked = true;
        failures = 0;
      } catch (e) {
        // Interrupted in the middle of a pass (Ctrl-C reaches the remote shell too): the slave stays at its last pass.
        if (stop) break;
        const why = (e as Error).message.replace(/^mirror-stream: /, '');
        if (!worked) throw new DirectiveError(`mirror-stream: pass refused, the slave stays where it was: ${why}`);
        failures++;
        ctx.io.err(`hammer2: mirror-stream: pass failed, the slave stays where it was; trying again: ${why}\n`);
      }
      if (r && (r.from !== r.to || r.written || r.deleted)) {
        const read = Number.isNaN(r.blocksRead) ? '' : `${r.blocksRead} master blocks read, `;
        ctx.io.out(`${r.label}: transaction ${r.from} -> ${r.to}: ${read}${r.written} blocks and entries written, ${r.deleted} removed\n`);
      }
      if (stop) break;
      await new Promise<void>((res) => {
        wake = res;
        setTimeout(res, Math.min(30_000, 1000 * 2 ** Math.min(failures, 5)));
      });
    }
  } finally {
    process.off('SIGINT', end);
    process.off('SIGTERM', end);
  }
  return 0;
};

/** The daemon holding the image of a mounted path or IMAGE@LABEL, if one does. */
async function daemonFor(spec: string): Promise<{ t: Target; label: string } | null> {
  const isPath = !spec.includes('@');
  if (isPath && !(fs.existsSync(spec) && hammer2MountOf(path.resolve(spec)))) return null;
  if (!isPath) {
    const { devices } = parseDeviceSpec(spec);
    if (!devices.split(':').every((d) => fs.existsSync(d))) return null;
    // No daemon's socket for the image: nothing to ask (and the image is not opened here only to find that out).
    if (!findSockets(path.resolve(devices.split(':')[0])).length) return null;
  }
  let t: Target;
  try {
    t = await openTarget(spec, { write: false });
  } catch {
    return null;
  }
  if (!t.viaDaemon || !t.label) {
    await t.close();
    return null;
  }
  return { t, label: t.label };
}

interface DaemonWrite {
  from: string;
  to: string;
  inodes: number;
  leaves: number;
  deleted: number;
}

/**
 * A FIFO, private to this command, through which a stream goes to or comes
 * from a daemon; removed afterwards. (FIFOs of commands that were killed
 * before they could remove theirs go first.)
 */
async function withFifo<T>(fn: (fifo: string) => Promise<T>): Promise<T> {
  for (const e of fs.readdirSync(os.tmpdir())) {
    const m = /^h2mirror-(\d+)-/.exec(e);
    if (!m) continue;
    try {
      process.kill(Number(m[1]), 0);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') fs.rmSync(path.join(os.tmpdir(), e), { recursive: true, force: true });
    }
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `h2mirror-${process.pid}-`));
  const fifo = path.join(dir, 'stream');
  try {
    // The shim's mkfifo(2); mkfifo(1) where the shim predates it.
    const r = nativeShim()?.mkfifo?.(fifo, 0o600);
    if (r !== undefined && r < 0) {
      throw new DirectiveError(`cannot make a FIFO in ${dir}: ${errnoName(-r, `errno ${-r}`)}`);
    }
    if (r === undefined) {
      const mk = spawnSync('mkfifo', ['-m', '600', fifo]);
      if (mk.status !== 0) throw new DirectiveError(`cannot make a FIFO in ${dir}: ${mk.stderr?.toString().trim() || mk.error?.message}`);
    }
    return await fn(fifo);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * A stream into a PFS of an image a daemon holds (a mounted slave): it goes
 * to the daemon through a FIFO, opened read-write and non-blocking here
 * first so that neither side blocks on opening it; `feed` writes the
 * stream into it, and our end closing is the end of the stream.
 */
async function streamToDaemon(t: Target, label: string, feed: (fd: number, answered: AbortSignal) => void | Promise<void>): Promise<DaemonWrite> {
  return withFifo(async (fifo) => {
    const answered = new AbortController();
    let fd = -1;
    const close = () => {
      if (fd >= 0) fs.closeSync(fd);
      fd = -1;
    };
    const reply = t.request<DaemonWrite>('mirror-write', { label, fifo }).finally(() => answered.abort());
    reply.catch(() => {});
    // The write end is opened once the daemon holds the read end (until then
    // a non-blocking open fails with ENXIO): bytes written into a FIFO that
    // no reader has open yet would be lost when we close it.
    const opened = (async () => {
      const t0 = Date.now();
      for (;;) {
        try {
          fd = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
          return;
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'ENXIO') throw e;
        }
        if (answered.signal.aborted) throw new DirectiveError('the daemon answered before it took the stream');
        if (Date.now() - t0 > STALL_MS) throw new DirectiveError('the daemon did not open the stream');
        await new Promise((res) => setTimeout(res, 5));
      }
    })();
    const fed = (async () => {
      try {
        await opened;
        await feed(fd, answered.signal);
      } finally {
        close();
      }
    })();
    try {
      const r = await Promise.race([reply, fed.then(() => reply)]);
      return r;
    } catch (e) {
      // A feed that gave up may only be the symptom: the daemon's own answer says why.
      let why = (e as Error).message;
      const answer = await Promise.race([reply.then(() => null, (x: Error) => x.message), new Promise<null>((res) => setTimeout(() => res(null), 2000))]);
      if (answer) why = answer;
      throw new DirectiveError(`${label}: stream refused, the slave is unchanged: ${why}`);
    } finally {
      close();
      await fed.catch(() => {});
    }
  });
}

/**
 * Ask the daemon for `op` with our descriptor `fd` when it is a pipe the
 * daemon may open itself (control/pipe.ts): its answer; null when `fd` is
 * no such pipe or the daemon refused it, and the caller relays instead.
 * Any other failure is thrown.
 */
async function viaOwnPipe<T>(t: Target, op: string, args: Record<string, unknown>, fd: number): Promise<T | null> {
  const pipe = ownPipe(fd);
  if (!pipe) return null;
  try {
    return await t.request<T>(op, { ...args, pipe });
  } catch (e) {
    if (pipeRefused(e)) return null;
    throw e;
  }
}

/** Copy standard input into the daemon's FIFO `fd` until it ends or the daemon has answered. */
async function relayStdin(fd: number, answered: AbortSignal): Promise<void> {
  const inp = fs.createReadStream('', { fd: 0, autoClose: false, highWaterMark: 1 << 20 });
  // The daemon has read what it will once it answers: stop feeding it, even if standard input goes on.
  answered.addEventListener('abort', () => inp.destroy());
  const done = () => answered.aborted;
  try {
    for await (const chunk of inp as AsyncIterable<Buffer>) {
      let at = 0;
      while (at < chunk.length && !done()) {
        try {
          at += fs.writeSync(fd, chunk, at, chunk.length - at);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
          await new Promise((res) => setTimeout(res, 2));
        }
      }
      if (done()) break;
    }
  } finally {
    inp.destroy();
  }
}

/** mirror-write into a PFS a daemon holds: it reads standard input (a pipe), or we feed it standard input until it answers. */
async function writeThroughDaemon(ctx: Hammer2Ctx, t: Target, label: string): Promise<number> {
  try {
    nativeShim()?.pipeSize?.(0, 1 << 20); // as readMounted does for its standard output
    let direct: DaemonWrite | null;
    try {
      direct = await viaOwnPipe<DaemonWrite>(t, 'mirror-write', { label }, 0);
    } catch (e) {
      throw new DirectiveError(`${label}: stream refused, the slave is unchanged: ${(e as Error).message}`);
    }
    const r = direct ?? (await streamToDaemon(t, label, relayStdin));
    if (ctx.verbose > 0 && direct) ctx.io.err(`mirror-write: ${label}: the daemon read the stream from the pipe\n`);
    ctx.io.out(`${label}: transaction ${r.from} -> ${r.to}: ${r.inodes} inodes, ${r.leaves} blocks and entries written, ${r.deleted} removed\n`);
    return 0;
  } finally {
    await t.close();
  }
}

export const directives: Record<string, Directive> = {
  'mirror-stream': mirrorStream,
  // The transaction id a slave is synchronized to (0: it holds nothing yet),
  // for scripts: hammer2 mirror-read /a $(ssh host hammer2 mirror-tid /b) | ...
  'mirror-tid': async (ctx, args) => {
    if (args.length !== 1) throw new UsageError('mirror-tid: expected SLAVE (a mounted path or IMAGE@LABEL)');
    const held = await daemonFor(args[0]);
    if (held) {
      try {
        ctx.io.out(`${(await held.t.request<{ synced: string }>('pfs-tid', { label: held.label })).synced}\n`);
      } finally {
        await held.t.close();
      }
      return 0;
    }
    const { devices, label } = imageSpec(args[0], 'mirror-tid');
    // Read without the lock: a pass writing the image meanwhile must not be refused for it.
    let h: Hammer2Fs;
    try {
      h = await (await lib()).Hammer2Fs.open(devices, { writable: false, lock: false });
    } catch (e) {
      throw new DirectiveError((e as Error).message);
    }
    try {
      if (!h.dev.findPfs(label)) throw new DirectiveError(`${args[0]}: no PFS labelled "${label}"`);
      ctx.io.out(`${await slaveTidOf(h, label)}\n`);
    } finally {
      h.close();
    }
    return 0;
  },
  'mirror-read': async (ctx, args) => {
    if (args.length < 1 || args.length > 2) throw new UsageError('mirror-read: expected MASTER [SINCE_TID]');
    const since = tidArg(args[1]);
    if (!args[0].includes('@') && fs.existsSync(args[0]) && hammer2MountOf(path.resolve(args[0]))) return readMounted(ctx, args[0], since);
    // IMAGE@LABEL of an image a daemon holds (mounted, maybe as another PFS): that daemon streams it.
    const held = args[0].includes('@') ? await daemonFor(args[0]) : null;
    if (held) return readMounted(ctx, args[0], since, held.t);
    const { devices, label } = imageSpec(args[0], 'mirror-read');
    const h = await open(devices, false);
    try {
      const L = await lib();
      const throttle = ctx.bandwidth ? throttleTo(ctx.bandwidth) : undefined;
      const out = batchedWriter((b) => writeAll(1, b), throttle);
      const r = L.mirrorRead(h, label, since, out.push);
      out.flush();
      if (ctx.verbose > 0) ctx.io.err(`mirror-read: ${label} from ${since} to ${r.header.to}: ${r.stats.records} records, ${r.stats.bytes} bytes\n`);
    } catch (e) {
      if (e instanceof DirectiveError) throw e;
      throw new DirectiveError((e as Error).message);
    } finally {
      h.close();
    }
    return 0;
  },
  'mirror-write': async (ctx, args) => {
    if (args.length !== 1) throw new UsageError('mirror-write: expected SLAVE (IMAGE@LABEL or a mounted path); the stream comes from standard input');
    // A slave whose image a daemon holds (mounted): the daemon applies the stream.
    const held = await daemonFor(args[0]);
    if (held) return writeThroughDaemon(ctx, held.t, held.label);
    const { devices, label } = imageSpec(args[0], 'mirror-write');
    const h = await open(devices, true);
    try {
      const L = await lib();
      const r = L.mirrorWrite(h, label, new L.FdSource(0));
      ctx.io.out(`${label}: transaction ${r.from} -> ${r.header.to}: ${r.stats.inodes} inodes, ${r.stats.leaves} blocks and entries written, ${r.stats.deleted} removed\n`);
    } catch (e) {
      throw new DirectiveError(`${label}: stream refused, the slave is unchanged: ${(e as Error).message}`);
    } finally {
      h.close();
    }
    return 0;
  },
  'mirror-copy': async (ctx, args) => {
    if (args.length !== 2) throw new UsageError('mirror-copy: expected MASTER SLAVE (IMAGE@LABEL each)');
    const m = imageSpec(args[0], 'mirror-copy');
    const s = imageSpec(args[1], 'mirror-copy');
    const same = m.devices === s.devices;
    const sh = await open(s.devices, true);
    const mh = same ? sh : await open(m.devices, false);
    try {
      const r = (await lib()).mirrorCopy(mh, m.label, sh, s.label);
      ctx.io.out(`${s.label}: transaction ${r.from} -> ${r.header.to}: ${r.read.blocksRead} master blocks read, ${r.stats.inodes} inodes, ${r.stats.leaves} blocks and entries written, ${r.stats.deleted} removed\n`);
    } catch (e) {
      throw new DirectiveError(`${s.label}: not copied, the slave is unchanged: ${(e as Error).message}`);
    } finally {
      if (!same) mh.close();
      sh.close();
    }
    return 0;
  },
  'pfs-upgrade': setType(PfsType.MASTER, 'pfs-upgrade'),
  'pfs-downgrade': setType(PfsType.SLAVE, 'pfs-downgrade'),
};
