// The binding's test filesystem: the bench's in-memory filesystem
// (bench/memfs.ts) with inode numbers above 2^40 (one fixed at
// 0xfedcba9876543210) and 64-bit directory cookies, so both must survive the
// trip through the kernel intact, and counters around it: what it is asked
// (write and read sizes, readdir calls, rename flags, creators, setattrs),
// readable through the hidden file "/.stats" (lookup only). A few names make
// the lookup handler misbehave on purpose (throw-sync, throw-async,
// no-reply, slow).
import { constants as C } from 'node:fs';
import { constants as osc } from 'node:os';
import { LowLevelOps, Request, Timespec, timespecNow } from '../../src/fuse/lowlevel';
import { MemFs } from '../../bench/memfs';

const E = osc.errno;
export const BIG_INO = 0xfedcba9876543210n;
const COOKIE_BASE = 0x4000000000000000n;
const STATS_INO = 2n;

export interface ToyStats {
  writes: Record<string, number>;
  writeRequests: number;
  maxWrite: number;
  reads: Record<string, number>;
  readdirCalls: number;
  readdirplusCalls: number;
  readdirOffsets: string[];
  renameFlags: number[];
  creators: { name: string; uid: number; gid: number; pid: number; umask: number }[];
  setattrs: { toSet: number; atime?: Timespec | 'now'; mtime?: Timespec | 'now' }[];
  ops: Record<string, number>;
  inodes: number;
  forgets: number;
}

export class ToyFs {
  private readonly mem: MemFs;
  private snapshots = new Map<number, Buffer>();
  private nextFh = 1 << 30; // the stats file's handles, apart from the filesystem's
  readonly stats: ToyStats = {
    writes: {},
    writeRequests: 0,
    maxWrite: 0,
    reads: {},
    readdirCalls: 0,
    readdirplusCalls: 0,
    readdirOffsets: [],
    renameFlags: [],
    creators: [],
    setattrs: [],
    ops: {},
    inodes: 0,
    forgets: 0,
  };

  constructor(opts: { readdirplus?: boolean } = {}) {
    this.mem = new MemFs({ firstIno: (1n << 40n) + 1n, cookieBase: COOKIE_BASE, readdirplus: opts.readdirplus, keepCache: false });
    this.mem.addFile('bigino', BIG_INO, Buffer.alloc(0));
    this.mem.addFile('hello', 3n, Buffer.from('hello, low-level world\n'));
  }

  private count(op: string): void {
    this.stats.ops[op] = (this.stats.ops[op] ?? 0) + 1;
  }

  private creator(req: Request, name: string): void {
    this.stats.creators.push({ name, uid: req.uid, gid: req.gid, pid: req.pid, umask: req.umask });
    if (this.stats.creators.length > 50) this.stats.creators.shift();
  }

  private statsAttr() {
    const t = timespecNow();
    return { ino: STATS_INO, mode: C.S_IFREG | 0o444, nlink: 1, uid: 0, gid: 0, size: 0, atime: t, mtime: t, ctime: t };
  }

  /** The FUSE operations: the in-memory filesystem's, counted. */
  ops(): LowLevelOps {
    const m = this.mem.ops();
    const s = this.stats;
    return {
      ...m,
      lookup: (req, parent, name, reply) => {
        this.count('lookup');
        if (name === 'throw-sync') throw new Error('toyfs: a handler that throws');
        if (name === 'throw-async') return Promise.reject(new Error('toyfs: a handler that rejects'));
        if (name === 'no-reply') return Promise.resolve();
        if (name === 'slow') {
          // answered later, from a timer: concurrency without promises
          setTimeout(() => reply.err('ENOENT'), 50);
          return;
        }
        if (parent === 1n && name === '.stats') return void reply.entry({ ino: STATS_INO, attr: this.statsAttr(), attrTimeout: 0, entryTimeout: 0 });
        return m.lookup!(req, parent, name, reply);
      },
      forget: (req, ino, nlookup) => {
        s.forgets++;
        m.forget!(req, ino, nlookup);
      },
      forgetMulti: (req, items) => {
        s.forgets += items.length;
        m.forgetMulti!(req, items);
      },
      getattr: (req, ino, fh, reply) => {
        this.count('getattr');
        if (ino === STATS_INO) return void reply.attr(this.statsAttr(), 0);
        return m.getattr!(req, ino, fh, reply);
      },
      setattr: (req, ino, ch, fh, reply) => {
        this.count('setattr');
        s.setattrs.push({ toSet: ch.toSet, atime: ch.atime, mtime: ch.mtime });
        if (s.setattrs.length > 50) s.setattrs.shift();
        return m.setattr!(req, ino, ch, fh, reply);
      },
      mknod: (req, parent, name, mode, rdev, reply) => {
        this.count('mknod');
        this.creator(req, name);
        return m.mknod!(req, parent, name, mode, rdev, reply);
      },
      mkdir: (req, parent, name, mode, reply) => {
        this.count('mkdir');
        this.creator(req, name);
        return m.mkdir!(req, parent, name, mode, reply);
      },
      symlink: (req, parent, name, target, reply) => {
        this.count('symlink');
        this.creator(req, name);
        return m.symlink!(req, parent, name, target, reply);
      },
      create: (req, parent, name, mode, flags, reply) => {
        this.count('create');
        this.creator(req, name);
        return m.create!(req, parent, name, mode, flags, reply);
      },
      unlink: (req, parent, name, reply) => (this.count('unlink'), m.unlink!(req, parent, name, reply)),
      rmdir: (req, parent, name, reply) => (this.count('rmdir'), m.rmdir!(req, parent, name, reply)),
      rename: (req, parent, name, np, nn, flags, reply) => {
        this.count('rename');
        s.renameFlags.push(flags);
        return m.rename!(req, parent, name, np, nn, flags, reply);
      },
      link: (req, ino, np, nn, reply) => (this.count('link'), m.link!(req, ino, np, nn, reply)),
      open: (req, ino, flags, reply) => {
        this.count('open');
        if (ino === STATS_INO) {
          // a snapshot per open file, so that reading it does not change it
          const fh = this.nextFh++;
          s.inodes = this.mem.inodes;
          this.snapshots.set(fh, Buffer.from(JSON.stringify(s, null, 1) + '\n'));
          return void reply.open({ fh, directIo: true });
        }
        return m.open!(req, ino, flags, reply);
      },
      read: (req, ino, size, offset, fh, reply) => {
        s.reads[size] = (s.reads[size] ?? 0) + 1;
        if (ino === STATS_INO) return void reply.buf((this.snapshots.get(fh) ?? Buffer.alloc(0)).subarray(offset, offset + size));
        return m.read!(req, ino, size, offset, fh, reply);
      },
      write: (req, ino, data, offset, fh, writepage, reply) => {
        s.writes[data.length] = (s.writes[data.length] ?? 0) + 1;
        s.writeRequests++;
        s.maxWrite = Math.max(s.maxWrite, data.length);
        return m.write!(req, ino, data, offset, fh, writepage, reply);
      },
      flush: (_req, _ino, _fh, _owner, reply) => void reply.ok(),
      release: (req, ino, fh, flags, reply) => {
        if (this.snapshots.delete(fh)) return void reply.ok();
        return m.release!(req, ino, fh, flags, reply);
      },
      readdir: (req, ino, size, offset, fh, reply) => {
        s.readdirCalls++;
        if (s.readdirOffsets.length < 1000) s.readdirOffsets.push(offset.toString(16));
        return m.readdir!(req, ino, size, offset, fh, reply);
      },
      ...(m.readdirplus
        ? {
            readdirplus: (req: Request, ino: bigint, size: number, offset: bigint, fh: number, reply: Parameters<NonNullable<LowLevelOps['readdirplus']>>[5]) => {
              s.readdirplusCalls++;
              return m.readdirplus!(req, ino, size, offset, fh, reply);
            },
          }
        : {}),
      // getxattr/listxattr/setxattr/removexattr deliberately absent: libfuse
      // answers ENOSYS, the kernel then answers EOPNOTSUPP without asking.
    };
  }
}

export const errnoName = (n: number): string => Object.entries(E).find(([, v]) => v === n)?.[0] ?? String(n);
