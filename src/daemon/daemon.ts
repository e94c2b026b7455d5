// One daemon per open image: it owns the image (the only process that has
// it open for writing), serves every mounted PFS of it, commits them all in
// one transaction, and answers the control channel (further mounts, the
// hammer2 command). It stops when its last mount goes.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { FdSource, mirrorReadBatches, mirrorWrite, mirrorWriteAhead, pumpSliced, WriteResult } from '../mirror';
import { AdminHost, adminOps, MountedPfs } from '../admin';
import { PfsCluster } from '../cluster';
import { syncedTid } from '../sync';
import { BLOCKREF_BYTES, Blockref, encodeBlockref, encodeInode, InodeData, PfsType } from '../media';
import { ControlOp, ControlServer, openPeerPipe, runtimeDir, socketName } from '../control';
import { FsError, MediaError } from '../engine';
import { Hammer2Fs, Pfs } from '../fs';
import { FuseSession } from '../fuse/lowlevel';
import { Hammer2Ops } from '../fuse/ops';
import { hammer2Session } from '../fuse/session';
import { holdFreedMemory, mallocStats, trimMemory } from '../store';
import { nativeShim } from '../store/native';
import { ParsedOptions, parseOptions, setMountBdi } from './options';

const TRIM_EVERY_MS = 2000;
/** What free() keeps between trims: glibc's largest mmap threshold. */
const HOLD_FREED_BYTES = 32 << 20;
/** How long an idle daemon must stay idle before it trims. */
const TRIM_QUIET_MS = 100;
/** Below this share of busy time over an interval, the daemon counts as idle. */
const TRIM_IDLE_BELOW = 0.1;
/** How long the daemon must have been idle before it gives its freed heap back. */
export const TRIM_IDLE_MS = 30_000;
/** Above this RSS (7/8 of the 256 MiB the daemon is to stay under), the heap is trimmed busy or not. */
const TRIM_RSS_ABOVE = 224 << 20;

/**
 * Whether to give the freed heap back now, after `idleFor` ms without work
 * (0: the last interval was busy) and a trim already made in this idle
 * spell or not. malloc_trim walks the whole heap and holds the event loop
 * for 20–150 ms, and every page it gives back costs a fault (~11 us here)
 * when the next burst of work takes it again: so trim once a spell of work
 * is well over (bursts a few seconds apart, such as the passes of a
 * mirror-stream, keep their pages), or whenever RSS is high enough that the
 * memory matters more than the time.
 */
export function trimDue(idleFor: number, trimmed: boolean, rss: number): boolean {
  return rss > TRIM_RSS_ABOVE || (idleFor >= TRIM_IDLE_MS && !trimmed);
}

/** How long mirror-write waits for the command's end of its FIFO to open (it opens within moments; tests shorten it). */
const WRITER_MS = Number(process.env.HAMMER2_FIFO_WAIT_MS) || 30_000;

/**
 * What a FIFO carrying a mirroring stream holds (the kernel's default is
 * 64 KiB): a 1 % pass of 100 000 files is ~4 MiB, and each time a full pipe
 * drains costs both ends a wakeup.
 */
const FIFO_BYTES = 1 << 20;

export interface DaemonOptions {
  /** The image: one volume or several as img1:img2 (absolute paths). */
  devices: string;
  writable: boolean;
  cacheBytes: number;
  /** Seconds between background commits (0: none). */
  flushSec: number;
  log: (msg: string) => void;
  /** Besides root, the uid that may change the filesystem over the control channel. */
  owner: number;
}

interface Mounted extends MountedPfs {
  session: FuseSession;
  ops: Hammer2Ops;
}

/** Escape a value for libfuse's -o list (commas and backslashes). */
const fuseOptValue = (v: string) => v.replace(/[\\,]/g, (c) => '\\' + c);

export class ImageDaemon {
  private mounted = new Map<string, Mounted>();
  /** What the last mount() wants the user told (a copy left out), besides the log. */
  warnings: string[] = [];
  /** Copies of mounted PFSs, by label. */
  private clusters = new Map<string, PfsCluster>();
  /** Committed PFS roots a mirror reader holds (mirror-pin), by pin id. */
  private pinned = new Map<string, { label: string; tid: bigint; inode: InodeData }>();
  private timer: NodeJS.Timeout | null = null;
  private trimmer: NodeJS.Timeout;
  private quiet: NodeJS.Timeout | undefined;
  private control: ControlServer | null = null;
  private stopping = false;
  private resolveDone!: (code: number) => void;
  /** Resolves with the exit status once the last mount has gone and the image is closed. */
  readonly done = new Promise<number>((r) => (this.resolveDone = r));
  private exitCode = 0;

  private constructor(
    readonly fs: Hammer2Fs,
    readonly o: DaemonOptions,
  ) {
    // Dirty state reaches media within flushSec seconds even if nobody syncs.
    if (o.writable && o.flushSec > 0) {
      this.timer = setInterval(() => this.tick(), o.flushSec * 1000);
    }
    // Block buffers are freed in bursts (after commits, during big reads);
    // hand the freed heap back so RSS follows what is in use, not the peak
    // (when it is due: see trimDue). Between trims, free() keeps what it
    // frees (holdFreedMemory): returned at every free, each burst of work
    // faulted it in again.
    if (!holdFreedMemory(HOLD_FREED_BYTES)) o.log('malloc keeps its default thresholds (no shim, or glibc refused): freed memory goes back at once');
    let last = performance.eventLoopUtilization();
    let idleSince = Date.now();
    let trimmed = false;
    this.trimmer = setInterval(() => {
      const now = performance.eventLoopUtilization();
      const busy = performance.eventLoopUtilization(now, last).utilization;
      last = now;
      if (busy >= TRIM_IDLE_BELOW) {
        idleSince = Date.now();
        trimmed = false;
      }
      const idleFor = busy >= TRIM_IDLE_BELOW ? 0 : Date.now() - idleSince;
      if (!trimDue(idleFor, trimmed, process.memoryUsage.rss())) return;
      if (busy >= TRIM_IDLE_BELOW) return trimMemory();
      // Idle: trim if it is still idle a moment later, so that a burst of
      // work that began at the interval's end is not held up.
      this.quiet = setTimeout(() => {
        if (performance.eventLoopUtilization(performance.eventLoopUtilization(), now).utilization >= TRIM_IDLE_BELOW) return;
        trimMemory();
        trimmed = true;
        // (The trim's own time is not work: it must not end the idle spell.)
        last = performance.eventLoopUtilization();
      }, TRIM_QUIET_MS);
      this.quiet.unref();
    }, TRIM_EVERY_MS);
    this.trimmer.unref();
  }

  /** Open the image (locked) and start answering on its control socket. */
  static async open(o: DaemonOptions): Promise<ImageDaemon> {
    const fs = await Hammer2Fs.open(o.devices, { writable: o.writable, lock: true, cacheBytes: o.cacheBytes });
    const d = new ImageDaemon(fs, o);
    try {
      const first = o.devices.split(':')[0];
      d.control = await ControlServer.listen(path.join(runtimeDir(), socketName(first)), d.ops(), { owner: o.owner, log: o.log });
    } catch (e) {
      // Mounting still works; only the hammer2 command and further mounts cannot reach us.
      o.log(`control channel unavailable: ${(e as Error).message}`);
    }
    return d;
  }

  get socket(): string | null {
    return this.control?.file ?? null;
  }

  mounts(): MountedPfs[] {
    return [...this.mounted.values()].map(({ label, mountpoint, readonly }) => ({ label, mountpoint, readonly, emergency: !!this.fs.pfs(label)?.emergency }));
  }

  private tick(): void {
    try {
      this.fs.pollBehind();
      if (!this.fs.dirty) {
        this.fs.idleTick();
        return;
      }
      this.fs.flushBehind();
      this.fs.maybeReclaim();
    } catch (e) {
      this.o.log(`background flush failed: ${(e as Error).message}`);
    }
  }

  /** The PFS with `label`, with a clear error when it is missing or bad. */
  private pfs(label: string): Pfs {
    let names: string[];
    try {
      names = this.fs.dev.listPfs().map((p) => p.name);
    } catch (e) {
      throw new MediaError(`${this.o.devices}: cannot read the super-root: ${(e as Error).message}`);
    }
    let pfs: Pfs | undefined;
    try {
      pfs = this.fs.pfs(label);
    } catch (e) {
      throw new MediaError(`${this.o.devices}@${label}: bad PFS root: ${(e as Error).message}`);
    }
    if (!pfs) throw new FsError('ENOENT', `${this.o.devices}: no PFS labelled "${label}" (available: ${names.join(', ') || 'none'})`);
    return pfs;
  }

  /** Mount PFS `label` on `mountpoint` with mount_hammer2's -o options. */
  async mount(label: string, mountpoint: string, po: ParsedOptions, debug = false): Promise<void> {
    if (this.stopping) throw new FsError('ESHUTDOWN', 'the daemon is shutting down');
    const pfs = this.pfs(label);
    const already = this.mounted.get(label);
    // Two FUSE mounts of one PFS would each keep kernel caches the other's changes bypass.
    if (already) throw new FsError('EBUSY', `PFS "${label}" is already mounted on ${already.mountpoint}`);
    if (!po.readonly && !this.fs.writable) {
      throw new FsError('EROFS', `${this.o.devices} is open read-only by this daemon (pid ${process.pid}); unmount its mounts to mount read-write`);
    }
    const log = this.o.log;
    // Copies first: a bad copy spec refuses the mount before anything is served.
    this.warnings = [];
    if (po.copies.length) {
      if (po.readonly) throw new FsError('EINVAL', 'copies need a read-write mount');
      const c = this.cluster(label, { retrySec: po.copyRetrySec, rateBytes: po.resyncMiBps * 1024 * 1024 });
      try {
        if (po.master && po.master !== this.o.devices && !po.copies.includes(po.master)) {
          throw new FsError('EINVAL', `-o master=${po.master} names neither this image nor one of its copy= images`);
        }
        for (const spec of po.copies) await c.add(spec, { atMount: true, master: po.master });
        for (const st of c.status().slice(1)) {
          if (st.state === 'offline' || st.state === 'failed') this.warnings.push(`copy ${st.spec} is ${st.state}: ${st.error ?? ''}; mounted without it`);
        }
      } catch (e) {
        this.dropCluster(label);
        throw e;
      }
    }
    // A SLAVE follows its master through mirroring only: users read it (EROFS on changes) until pfs-upgrade.
    const slave = pfs.root.data.meta.pfsType === PfsType.SLAVE;
    if (slave && po.copies.length) throw new FsError('EINVAL', `PFS "${label}" is a SLAVE: it has no copies of its own (mirroring keeps it)`);
    const ops = new Hammer2Ops(this.fs, pfs, { dirtyLimit: po.dirtyBytes, log, readonly: po.readonly || slave });
    const fuse = po.fuse.filter((f) => !f.startsWith('fsname='));
    fuse.push(`fsname=${fuseOptValue(`${this.o.devices}@${label}`)}`);
    const session = hammer2Session(mountpoint, ops, {
      options: fuse,
      debug,
      log,
      // A slave changes under the kernel (mirror-write): names are not cached, changed inodes are invalidated.
      attrTimeout: slave ? 0 : po.attrTimeout,
      entryTimeout: slave ? 0 : po.attrTimeout,
      spinUs: po.spinUs,
      // A slave's files change under the kernel (mirror-write): it must not keep its own idea of their size.
      writebackCache: po.writebackCache && !po.readonly && !slave,
    });
    try {
      await session.mount();
    } catch (e) {
      this.dropCluster(label);
      throw e;
    }
    const m: Mounted = { label, mountpoint, readonly: po.readonly, session, ops };
    this.mounted.set(label, m);
    log(`mounted ${this.o.devices} (PFS ${label}) on ${mountpoint}, ${po.readonly ? 'read-only' : slave ? 'read-only (a SLAVE: hammer2 pfs-upgrade to write)' : 'read-write'}`);
    if (po.readaheadKb > 0) {
      const why = setMountBdi(mountpoint, 'read_ahead_kb', po.readaheadKb);
      if (why) log(`readahead left at the kernel's default: ${why}`);
    }
    if (session.conn?.writebackCache && po.writebackRatio > 0) {
      const why = setMountBdi(mountpoint, 'max_ratio', po.writebackRatio);
      if (why) log(`writeback cache left at the kernel's 1 % of dirty memory: ${why}`);
    }
    void session.closed.then((end) => {
      log(`${mountpoint}: session ended (${end.message})`);
      if (!end.ok) this.exitCode = 1;
      this.mounted.delete(label);
      try {
        ops.destroy();
      } catch (e) {
        log(`final flush failed: ${(e as Error).message}`);
        this.exitCode = 1;
      }
      this.dropCluster(label);
      if (this.mounted.size === 0) this.finish();
    });
  }

  /** The copies of mounted PFS `label` (made on first use). */
  private cluster(label: string, o: { retrySec?: number; rateBytes?: number } = {}): PfsCluster {
    let c = this.clusters.get(label);
    if (!c) {
      c = new PfsCluster(this.fs, this.pfs(label), this.o.devices, { log: this.o.log, cacheBytes: this.o.cacheBytes, ...o });
      this.clusters.set(label, c);
    }
    return c;
  }

  private dropCluster(label: string): void {
    const c = this.clusters.get(label);
    if (!c) return;
    this.clusters.delete(label);
    try {
      // What is pending reaches the copies before they are let go.
      if (this.fs.writable && !this.fs.failed) this.fs.flush();
    } catch (e) {
      this.o.log(`flush before closing copies failed: ${(e as Error).message}`);
    }
    c.close();
  }

  /** Unmount everything (signals); the daemon ends when the last session closes. */
  stop(why: string): void {
    this.stopping = true;
    if (this.mounted.size === 0) return this.finish();
    // Pages a writeback cache still holds come in first: the unmount below
    // is lazy, and what the kernel has not sent by then is lost.
    void this.settle(null)
      .catch((e) => this.o.log(`before unmounting: ${(e as Error).message}`))
      .then(() => {
        for (const m of this.mounted.values()) {
          this.o.log(`unmounting ${m.mountpoint} (${why})`);
          m.session.unmount().catch((e) => this.o.log(`unmount: ${(e as Error).message}`));
        }
      });
  }

  private finish(): void {
    if (this.timer) clearInterval(this.timer);
    clearInterval(this.trimmer);
    clearTimeout(this.quiet);
    this.control?.close();
    this.control = null;
    try {
      if (this.fs.writable) this.fs.flush();
    } catch (e) {
      this.o.log(`final flush failed: ${(e as Error).message}`);
      this.exitCode = 1;
    }
    this.fs.close();
    this.resolveDone(this.exitCode);
  }

  /**
   * Have the kernel send the pages it caches for the writeback-cached mounts
   * of `label` (every mount when null). syncfs runs in a child process: this
   * one must keep answering the WRITEs it causes. Fails (EIO, with sync's
   * message) if the kernel could not be made to send them: a snapshot or
   * mirror pass must not go on without them.
   */
  private async settle(label: string | null): Promise<void> {
    const ms = [...this.mounted.values()].filter((m) => (label === null || m.label === label) && m.session.conn?.writebackCache);
    if (!ms.length) return;
    // An absolute path: a daemon started from fstab or systemd may have no PATH.
    const bin = ['/usr/bin/sync', '/bin/sync'].find((b) => fs.existsSync(b)) ?? 'sync';
    const errors = await Promise.all(
      ms.map(
        (m) =>
          new Promise<string | null>((res) => {
            execFile(bin, ['-f', m.mountpoint], { timeout: 120_000 }, (err, _out, errText) => res(err ? `sync -f ${m.mountpoint}: ${String(errText).trim() || err.message}` : null));
          }),
      ),
    );
    const bad = errors.filter((e): e is string => e !== null);
    if (bad.length) throw new FsError('EIO', `the kernel's cached writes could not be brought in: ${bad.join('; ')}`);
  }

  /** Where the daemon's memory is, in bytes (`hammer2 info`): RSS alone cannot say whose it is. */
  private memory(): Record<string, number> {
    const m = process.memoryUsage();
    const ma = mallocStats();
    return {
      rss: m.rss,
      heap: m.heapUsed,
      buffers: m.arrayBuffers,
      cache: this.fs.dev.reader.cacheStats.bytes,
      pending: this.fs.pendingBytes,
      ...(ma ? { mallocInUse: ma.inUse + ma.mmapped, mallocFree: ma.free } : {}),
    };
  }

  /** What the control channel answers: the administration table plus mounting. */
  private ops(): Record<string, ControlOp> {
    const host: AdminHost = {
      fs: this.fs,
      mounts: () => this.mounts(),
      describe: () => ({ pid: process.pid, devices: this.o.devices, socket: this.socket, memory: this.memory() }),
      settle: (label) => this.settle(label),
    };
    const mountedRw = (args: Record<string, unknown>, why = 'copies need a read-write mount'): string => {
      const label = String(args.label ?? '');
      const m = this.mounted.get(label);
      if (!m) throw new FsError('EINVAL', `PFS "${label}" is not mounted by this daemon: copies belong to a mounted PFS`);
      if (m.readonly) throw new FsError('EROFS', `PFS "${label}" is mounted read-only: ${why}`);
      return label;
    };
    /** The FIFO a mirroring command named: an absolute path to one. */
    const fifoArg = (args: Record<string, unknown>, op: string): string => {
      const fifo = String(args.fifo ?? '');
      if (!path.isAbsolute(fifo)) throw new FsError('EINVAL', `${op} needs the absolute path of a FIFO`);
      if (!fs.statSync(fifo).isFIFO()) throw new FsError('EINVAL', `${fifo} is not a FIFO`);
      return fifo;
    };
    /** PFS `label` as committed now, with what is pending (the kernel's cached writes too) committed first. */
    const committed = async (label: string) => {
      await this.settle(label);
      this.fs.flush();
      const e = this.fs.dev.findPfs(label);
      if (!e) throw new FsError('ENOENT', `no PFS labelled "${label}"`);
      return e;
    };
    const specArg = (args: Record<string, unknown>): string => {
      const spec = String(args.spec ?? '');
      if (!spec || !spec.split(':').every((p) => path.isAbsolute(p))) throw new FsError('EINVAL', 'a copy is named by absolute image paths');
      return spec;
    };
    return {
      ...adminOps(host),
      'copy-add': {
        changes: true,
        run: async (args) => {
          const label = mountedRw(args);
          return this.cluster(label).add(specArg(args));
        },
      },
      'copy-remove': {
        changes: true,
        run: async (args) => {
          const label = mountedRw(args);
          const c = this.clusters.get(label);
          if (!c) throw new FsError('ENOENT', `PFS "${label}" has no copies`);
          this.fs.flush();
          c.remove(specArg(args));
          return { label };
        },
      },
      scrub: {
        changes: true,
        run: async (args, ctx) => {
          const label = mountedRw(args, 'scrub repairs what it finds and needs a read-write mount');
          const nodes = await this.cluster(label).scrub((node, blocks) => ctx.progress({ what: node, done: blocks, total: 0 }));
          return { label, nodes };
        },
      },
      // mirror-read of a mounted master: the committed state is pinned (bulkfree
      // keeps it) while the reader walks it from the image directly.
      'mirror-pin': {
        changes: true,
        run: async (args) => {
          const label = String(args.label ?? '');
          const e = await committed(label);
          const id = `${process.hrtime.bigint()}`;
          this.fs.pins.set(id, e.bref);
          this.pinned.set(id, { label, tid: e.bref.modifyTid, inode: e.inode });
          // A reader killed before it lets go must not hold the space for ever: a lease.
          const ttl = Math.max(1, Math.min(Number(args.ttl ?? 3600), 24 * 3600));
          setTimeout(() => {
            this.fs.pins.delete(id);
            this.pinned.delete(id);
          }, ttl * 1000).unref();
          const raw = Buffer.alloc(BLOCKREF_BYTES);
          encodeBlockref(e.bref, raw, 0);
          return { id, label, bref: raw.toString('base64'), inode: encodeInode(e.inode).toString('base64'), devices: this.o.devices };
        },
      },
      // mirror-read of a mounted master: this daemon commits what is pending,
      // pins that state and walks it itself, from its caches, in slices
      // between its other requests, into the command's standard output (a
      // pipe, opened here: control/pipe.ts) or into a FIFO the command holds
      // open for reading and relays. A progress message says the FIFO is
      // open for writing.
      'mirror-read': {
        changes: true,
        run: async (args, ctx) => {
          const t0 = Date.now();
          const label = String(args.label ?? '');
          const sinceArg = String(args.since ?? '0');
          if (!/^\d+$/.test(sinceArg)) throw new FsError('EINVAL', `bad transaction id "${sinceArg}"`);
          const bandwidth = Number(args.bandwidth ?? 0);
          if (!Number.isFinite(bandwidth) || bandwidth < 0) throw new FsError('EINVAL', `bad bandwidth "${String(args.bandwidth)}"`);
          // The command's own pipe (see control/pipe.ts), else a FIFO it made and relays from.
          const direct = args.pipe !== undefined;
          const fifo = direct ? '' : fifoArg(args, 'mirror-read');
          // The pipe is opened first: a refusal then costs no commit.
          let early = direct ? openPeerPipe(ctx.peer, args.pipe, 'write') : -1;
          let state: { label: string; tid: bigint; inode: InodeData };
          let s: ReturnType<typeof mirrorReadBatches>;
          try {
            // A state the caller pinned before (mirror-pin: mirror-stream keeps it
            // as a snapshot afterwards), or the committed state now, pinned for the walk.
            let pin: Blockref;
            if (args.pin !== undefined) {
              const p = this.pinned.get(String(args.pin));
              const held = this.fs.pins.get(String(args.pin));
              if (!p || !held) throw new FsError('ENOENT', 'that pinned state was let go (its lease ran out?)');
              state = p;
              // Pinned for the walk as well: the caller's lease may run out during a long (throttled) one.
              pin = held;
            } else {
              const e = await committed(label);
              if (e.inode.meta.pfsType === PfsType.SUPROOT) throw new FsError('EINVAL', 'the super-root cannot be mirrored');
              state = { label, tid: e.bref.modifyTid, inode: e.inode };
              pin = e.bref;
            }
            s = mirrorReadBatches(this.fs.dev.reader, state.inode, state.tid, state.label, BigInt(sinceArg));
            // Pinned while it is walked: bulkfree, run between the slices, keeps it.
            const id = `${process.hrtime.bigint()}`;
            this.fs.pins.set(id, pin);
            try {
              let fd: number;
              if (direct) {
                fd = early;
                early = -1;
              } else {
                try {
                  fd = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK | fs.constants.O_NOFOLLOW);
                } catch (err) {
                  if ((err as NodeJS.ErrnoException).code === 'ENXIO') throw new FsError('EPIPE', 'the command reading the stream went away');
                  throw err;
                }
              }
              let to: net.Socket;
              try {
                // What was opened, not only the path checked before, must be a FIFO (openPeerPipe checked its own).
                if (!direct && !fs.fstatSync(fd).isFIFO()) throw new FsError('EINVAL', `${fifo} is not a FIFO`);
                nativeShim()?.pipeSize?.(fd, FIFO_BYTES);
                to = new net.Socket({ fd, readable: false, writable: true });
              } catch (err) {
                fs.closeSync(fd);
                throw err;
              }
              ctx.progress({ what: 'streaming', done: 0, total: 0 });
              // Into the command's pipe, the stream would go on without the command
              // (the reader at the other end holds the pipe): stop when it is gone,
              // as a relaying command stops it by going away.
              const gone = new FsError('EPIPE', 'the command went away');
              const stop = () => to.destroy(gone);
              if (direct) {
                ctx.gone.addEventListener('abort', stop, { once: true });
                if (ctx.gone.aborted) stop();
              }
              try {
                await pumpSliced(s.batches, to, { bandwidth });
              } catch (err) {
                to.destroy();
                if (direct && ctx.gone.aborted) throw gone;
                throw (err as NodeJS.ErrnoException).code === 'EPIPE' ? new FsError('EPIPE', 'the command reading the stream went away') : err;
              } finally {
                ctx.gone.removeEventListener('abort', stop);
              }
            } finally {
              this.fs.pins.delete(id);
            }
          } finally {
            if (early >= 0) fs.closeSync(early);
          }
          this.o.log(`mirror-read of ${state.label}: transaction ${s.header.since} -> ${s.header.to}, ${s.stats.records} records, ${(s.stats.bytes / 1048576).toFixed(1)} MiB in ${Date.now() - t0} ms${direct ? " (into the command's pipe)" : ''}`);
          return { label: state.label, from: s.header.since.toString(), to: s.header.to.toString(), records: s.stats.records, bytes: s.stats.bytes, blocksRead: s.stats.blocksRead, direct };
        },
      },
      // mirror-write into a PFS of this image (a mounted slave): the stream
      // comes from the command's standard input (a pipe, opened here) or
      // through a FIFO the command feeds, and is applied as one commit.
      'mirror-write': {
        changes: true,
        run: async (args, ctx) => {
          const t0 = Date.now();
          const label = String(args.label ?? '');
          if (!this.fs.writable) throw new FsError('EROFS', `${this.o.devices} is open read-only by this daemon`);
          // The stream arrives through the command's own pipe (see
          // control/pipe.ts), or through a FIFO the command opened before asking.
          const direct = args.pipe !== undefined;
          const fifo = direct ? `descriptor ${String((args.pipe as { fd?: unknown })?.fd)} of the command` : fifoArg(args, 'mirror-write');
          // Take the whole stream in first, without blocking this daemon while
          // it arrives (the master may be served by this very daemon), into a
          // file beside the image; then apply it as one commit. Opened
          // non-blocking: a command that died before we got here leaves no
          // writer, which reads as an empty (refused) stream, not a hang.
          // (Beside an image file; for a block device, in the temporary directory, not /dev.)
          const first = this.o.devices.split(':')[0];
          const spool = path.join(fs.statSync(first).isFile() ? path.dirname(first) : os.tmpdir(), `.h2mirror-${process.pid}-${Date.now()}`);
          const fd = direct ? openPeerPipe(ctx.peer, args.pipe, 'read') : fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
          nativeShim()?.pipeSize?.(fd, FIFO_BYTES);
          // While it arrives, what applying it will read of the slave is read
          // (between other requests): the commit then runs from memory.
          const ahead = mirrorWriteAhead(this.fs, label);
          let gone = () => {};
          await new Promise<void>((res, rej) => {
            const from = new net.Socket({ fd, readable: true, writable: false });
            const to = fs.createWriteStream(spool, { mode: 0o600 });
            // The command opens its end within moments of ours. If it died
            // first, the kernel never signals the end of a FIFO that no writer
            // ever opened: look for a writer ourselves until the first bytes
            // come (a read finds EAGAIN while one is there, 0 while none is),
            // and give up after WRITER_MS without one. (A pipe's writer was
            // there before us, and its end is the end of the stream.)
            let got = direct;
            let since = Date.now();
            const probe = Buffer.alloc(65536);
            const watch = setInterval(() => {
              if (got) return clearInterval(watch);
              let n: number;
              try {
                n = fs.readSync(fd, probe, 0, probe.length, null);
              } catch (e) {
                if ((e as NodeJS.ErrnoException).code === 'EAGAIN') since = Date.now();
                else from.destroy(e as Error);
                return;
              }
              if (n > 0) {
                // The first bytes: they go first, the socket brings the rest.
                got = true;
                const first = Buffer.from(probe.subarray(0, n));
                to.write(first);
                ahead.push(first);
              } else if (Date.now() - since > WRITER_MS) {
                clearInterval(watch);
                from.destroy(new FsError('EPIPE', `no stream came through ${fifo} within ${WRITER_MS / 1000} s (the command sending it went away)`));
              }
            }, 250);
            // From the command's pipe, the stream would go on without the
            // command: a command that went away takes its stream with it.
            gone = () => from.destroy(new FsError('EPIPE', 'the command sending the stream went away'));
            if (direct) {
              ctx.gone.addEventListener('abort', gone, { once: true });
              if (ctx.gone.aborted) gone();
            }
            from.once('data', () => (got = true));
            from.on('data', (c: Buffer) => ahead.push(c));
            from.on('error', (e) => {
              clearInterval(watch);
              to.destroy();
              rej(e);
            });
            // The spool failed (a full disk): let go of the stream's end too, so that its writer is not held.
            to.on('error', (e) => {
              clearInterval(watch);
              from.destroy();
              rej(e);
            });
            to.on('finish', () => {
              clearInterval(watch);
              res();
            });
            from.pipe(to);
          })
            .catch((e) => {
              ahead.stop();
              fs.rmSync(spool, { force: true });
              throw e;
            })
            .finally(() => ctx.gone.removeEventListener('abort', gone));
          const t1 = Date.now();
          let r: WriteResult;
          // The read-ahead kept the stream parsed: applied from there; else from the spool.
          const parsed = ahead.finish();
          const sfd = parsed ? -1 : fs.openSync(spool, 'r');
          try {
            this.fs.flush();
            r = mirrorWrite(this.fs, label, parsed ?? new FdSource(sfd), { keepPfs: true, ahead });
          } finally {
            if (sfd >= 0) fs.closeSync(sfd);
            fs.rmSync(spool, { force: true });
          }
          const m = this.mounted.get(label);
          if (m) {
            m.session.invalidate(1n);
            for (const ino of r.stats.changed) m.session.invalidate(ino);
          }
          this.o.log(`mirror-write into ${label}: transaction ${r.from} -> ${r.header.to}, ${r.stats.inodes} inodes; stream ${t1 - t0} ms${direct ? " (from the command's pipe)" : ''}, apply and commit ${Date.now() - t1} ms`);
          return { label, from: r.from.toString(), to: r.header.to.toString(), inodes: r.stats.inodes, leaves: r.stats.leaves, deleted: r.stats.deleted, direct };
        },
      },
      'pfs-tid': {
        changes: false,
        run: async (args) => {
          const e = this.fs.dev.findPfs(String(args.label ?? ''));
          if (!e) throw new FsError('ENOENT', `no PFS labelled "${String(args.label ?? '')}"`);
          return { tid: e.bref.modifyTid.toString(), synced: syncedTid(e.bref, e.inode).toString(), dirty: this.fs.dirty };
        },
      },
      'mirror-unpin': {
        changes: true,
        run: async (args) => {
          this.pinned.delete(String(args.id ?? ''));
          return { released: this.fs.pins.delete(String(args.id ?? '')) };
        },
      },
      // The state a mirroring pass sent (still pinned), kept as snapshot `name`
      // once the slave holds it: what the slave must read as, to check it.
      'mirror-keep': {
        changes: true,
        run: async (args) => {
          const p = this.pinned.get(String(args.id ?? ''));
          if (!p) throw new FsError('ENOENT', 'that pinned state was let go (its lease ran out?)');
          const name = String(args.name ?? '');
          if (!this.fs.writable) throw new FsError('EROFS', `${this.o.devices} is open read-only by this daemon`);
          if (this.mounted.has(name)) throw new FsError('EBUSY', `snapshot "${name}" is mounted; unmount it to let it follow the slave`);
          this.fs.keepSnapshot(name, p.inode, p.tid);
          return { name, tid: p.tid.toString() };
        },
      },
      'copy-status': {
        changes: false,
        run: async (args) => {
          const label = String(args.label ?? '');
          if (!this.mounted.has(label)) throw new FsError('EINVAL', `PFS "${label}" is not mounted by this daemon`);
          const c = this.clusters.get(label);
          return { label, copies: c ? c.status() : [{ spec: this.o.devices, primary: true, state: 'in-sync', tid: this.fs.dev.findPfs(label)!.bref.modifyTid.toString(), healed: 0, readErrors: 0, writeErrors: 0, resync: { blocksRead: 0, blocksWritten: 0, passes: 0 } }] };
        },
      },
      mount: {
        changes: true,
        run: async (args) => {
          const label = String(args.label ?? '');
          const mountpoint = String(args.mountpoint ?? '');
          if (!label || !path.isAbsolute(mountpoint)) throw new FsError('EINVAL', 'mount needs a label and an absolute mountpoint');
          const opts = Array.isArray(args.options) ? args.options.map(String) : [];
          let po: ParsedOptions;
          try {
            po = parseOptions(opts);
          } catch (e) {
            throw new FsError('EINVAL', (e as Error).message);
          }
          await this.mount(label, mountpoint, po);
          return { label, mountpoint, pid: process.pid, warnings: this.warnings };
        },
      },
    };
  }
}
