// A small in-memory filesystem on the low-level FUSE binding, for tests and
// measurements of the binding itself. Inode numbers are deliberately large
// (above 2^40, one fixed at 0xfedcba9876543210) and directory offsets are
// 64-bit cookies, so both must survive the trip through the kernel intact.
// It also counts what it is asked (write sizes, readdir calls, rename flags,
// creators), readable through the hidden file "/.stats" (lookup only).
import { constants as C } from 'node:fs';
import { constants as osc } from 'node:os';
import {
  Attr,
  DirEntry,
  DirEntryPlus,
  Entry,
  Ino,
  LowLevelOps,
  RENAME,
  Request,
  ReplyErr,
  SetAttr,
  Timespec,
  timespecNow,
} from '../../src/fuse/lowlevel';

const E = osc.errno;
const S_ISGID = 0o2000;
const CHUNK = 1 << 20;
export const BIG_INO = 0xfedcba9876543210n;
const COOKIE_BASE = 0x4000000000000000n;
const STATS_INO = 2n;

interface Node {
  ino: Ino;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  size: number;
  rdev: number;
  atime: Timespec;
  mtime: Timespec;
  ctime: Timespec;
  chunks?: Map<number, Buffer>;
  target?: string;
  dir?: Map<string, { ino: Ino; cookie: bigint }>;
  parent?: Ino;
  lookups: number;
  opens: number;
}

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
  private nodes = new Map<Ino, Node>();
  private nextIno = (1n << 40n) + 1n;
  private nextCookie = COOKIE_BASE + 3n;
  private nextFh = 1;
  private snapshots = new Map<number, Buffer>();
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

  constructor(private readonly opts: { readdirplus?: boolean } = {}) {
    const root = this.mk(1n, C.S_IFDIR | 0o755, 0, 0);
    root.dir = new Map();
    root.parent = 1n;
    root.nlink = 2;
    const big = this.mk(BIG_INO, C.S_IFREG | 0o644, 0, 0);
    this.put(root, 'bigino', big);
    const f = this.mk(3n, C.S_IFREG | 0o644, 0, 0);
    this.write(f, Buffer.from('hello, low-level world\n'), 0);
    this.put(root, 'hello', f);
  }

  private mk(ino: Ino, mode: number, uid: number, gid: number): Node {
    const t = timespecNow();
    const n: Node = { ino, mode, uid, gid, nlink: 1, size: 0, rdev: 0, atime: t, mtime: t, ctime: t, lookups: 0, opens: 0 };
    if ((mode & C.S_IFMT) === C.S_IFREG) n.chunks = new Map();
    this.nodes.set(ino, n);
    return n;
  }

  private put(dir: Node, name: string, n: Node): void {
    dir.dir!.set(name, { ino: n.ino, cookie: this.nextCookie++ });
    if (n.dir) {
      n.parent = dir.ino;
      dir.nlink++;
    }
  }

  private node(ino: Ino): Node | undefined {
    return this.nodes.get(ino);
  }

  attr(n: Node): Attr {
    return {
      ino: n.ino,
      mode: n.mode,
      nlink: n.nlink,
      uid: n.uid,
      gid: n.gid,
      size: n.size,
      rdev: n.rdev,
      atime: n.atime,
      mtime: n.mtime,
      ctime: n.ctime,
    };
  }

  private entry(n: Node): Entry {
    n.lookups++;
    return { ino: n.ino, attr: this.attr(n) };
  }

  private statsFile(): Buffer {
    this.stats.inodes = this.nodes.size;
    return Buffer.from(JSON.stringify(this.stats, null, 1) + '\n');
  }

  private maybeDrop(n: Node): void {
    if (n.nlink === 0 && n.lookups <= 0 && n.opens <= 0 && n.ino !== 1n) this.nodes.delete(n.ino);
  }

  private write(n: Node, data: Buffer, off: number): void {
    const chunks = n.chunks!;
    let pos = 0;
    while (pos < data.length) {
      const at = off + pos;
      const ci = Math.floor(at / CHUNK);
      const co = at - ci * CHUNK;
      const len = Math.min(CHUNK - co, data.length - pos);
      if (co === 0 && len === CHUNK) {
        chunks.set(ci, data.subarray(pos, pos + len)); // keep the request's buffer: no copy
      } else {
        let c = chunks.get(ci);
        if (!c || c.length < CHUNK) {
          const nc = Buffer.alloc(CHUNK);
          if (c) c.copy(nc);
          c = nc;
          chunks.set(ci, c);
        }
        data.copy(c, co, pos, pos + len);
      }
      pos += len;
    }
    n.size = Math.max(n.size, off + data.length);
  }

  private read(n: Node, off: number, size: number): Buffer {
    const end = Math.min(n.size, off + size);
    if (end <= off) return Buffer.alloc(0);
    const out = Buffer.alloc(end - off);
    for (let at = off; at < end; ) {
      const ci = Math.floor(at / CHUNK);
      const co = at - ci * CHUNK;
      const len = Math.min(CHUNK - co, end - at);
      const c = n.chunks!.get(ci);
      if (c) c.copy(out, at - off, co, co + len);
      at += len;
    }
    return out;
  }

  private truncate(n: Node, size: number): void {
    const chunks = n.chunks!;
    for (const ci of [...chunks.keys()]) if (ci * CHUNK >= size) chunks.delete(ci);
    const ci = Math.floor(size / CHUNK);
    const c = chunks.get(ci);
    if (c) {
      const nc = Buffer.alloc(CHUNK);
      c.copy(nc, 0, 0, size - ci * CHUNK);
      chunks.set(ci, nc);
    }
    n.size = size;
  }

  private count(op: string): void {
    this.stats.ops[op] = (this.stats.ops[op] ?? 0) + 1;
  }

  private newChild(req: Request, parent: Ino, name: string, mode: number, reply: ReplyErr, op: string): Node | null {
    this.count(op);
    const dir = this.node(parent);
    if (!dir?.dir) return reply.err('ENOTDIR'), null;
    if (dir.dir.has(name)) return reply.err('EEXIST'), null;
    if (Buffer.byteLength(name) > 255) return reply.err('ENAMETOOLONG'), null;
    // setgid directories pass their group on
    const gid = dir.mode & S_ISGID ? dir.gid : req.gid;
    const n = this.mk(this.nextIno++, mode, req.uid, gid);
    if ((mode & C.S_IFMT) === C.S_IFDIR) {
      n.dir = new Map();
      n.nlink = 2;
      if (dir.mode & S_ISGID) n.mode |= S_ISGID;
    }
    this.put(dir, name, n);
    dir.mtime = dir.ctime = timespecNow();
    this.stats.creators.push({ name, uid: req.uid, gid: req.gid, pid: req.pid, umask: req.umask });
    if (this.stats.creators.length > 50) this.stats.creators.shift();
    return n;
  }

  /** The FUSE operations. Handlers answer synchronously except where noted. */
  ops(): LowLevelOps {
    const ops = this.allOps();
    if (!this.opts.readdirplus) delete ops.readdirplus;
    return ops;
  }

  private allOps(): LowLevelOps {
    return {
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
        if (parent === 1n && name === '.stats') {
          const t = timespecNow();
          reply.entry({
            ino: STATS_INO,
            attr: { ino: STATS_INO, mode: C.S_IFREG | 0o444, nlink: 1, uid: 0, gid: 0, size: 0, atime: t, mtime: t, ctime: t },
            attrTimeout: 0,
            entryTimeout: 0,
          });
          return;
        }
        const dir = this.node(parent);
        if (!dir?.dir) return void reply.err('ENOTDIR');
        const de = dir.dir.get(name);
        const n = de && this.node(de.ino);
        if (!n) return void reply.noEntry(0);
        reply.entry(this.entry(n));
      },
      forget: (_req, ino, nlookup) => {
        this.stats.forgets++;
        const n = this.node(ino);
        if (!n) return;
        n.lookups -= nlookup;
        this.maybeDrop(n);
      },
      getattr: (_req, ino, _fh, reply) => {
        this.count('getattr');
        if (ino === STATS_INO) {
          const t = timespecNow();
          return void reply.attr({ ino, mode: C.S_IFREG | 0o444, nlink: 1, uid: 0, gid: 0, size: 0, atime: t, mtime: t, ctime: t }, 0);
        }
        const n = this.node(ino);
        if (!n) return void reply.err('ENOENT');
        reply.attr(this.attr(n));
      },
      setattr: (_req, ino, s: SetAttr, _fh, reply) => {
        this.count('setattr');
        const n = this.node(ino);
        if (!n) return void reply.err('ENOENT');
        this.stats.setattrs.push({ toSet: s.toSet, atime: s.atime, mtime: s.mtime });
        if (this.stats.setattrs.length > 50) this.stats.setattrs.shift();
        const now = timespecNow();
        if (s.mode !== undefined) n.mode = (n.mode & C.S_IFMT) | (s.mode & 0o7777);
        if (s.uid !== undefined) n.uid = s.uid;
        if (s.gid !== undefined) n.gid = s.gid;
        if (s.size !== undefined) {
          if (!n.chunks) return void reply.err(n.dir ? 'EISDIR' : 'EINVAL');
          this.truncate(n, s.size);
          n.mtime = now;
        }
        if (s.atime !== undefined) n.atime = s.atime === 'now' ? now : s.atime;
        if (s.mtime !== undefined) n.mtime = s.mtime === 'now' ? now : s.mtime;
        n.ctime = s.ctime ?? now;
        reply.attr(this.attr(n));
      },
      readlink: (_req, ino, reply) => {
        const n = this.node(ino);
        if (n?.target === undefined) return void reply.err('EINVAL');
        reply.readlink(n.target);
      },
      mknod: (req, parent, name, mode, rdev, reply) => {
        const n = this.newChild(req, parent, name, mode, reply, 'mknod');
        if (!n) return;
        n.rdev = rdev;
        if ((mode & C.S_IFMT) === C.S_IFREG) n.chunks = new Map();
        reply.entry(this.entry(n));
      },
      mkdir: (req, parent, name, mode, reply) => {
        const n = this.newChild(req, parent, name, C.S_IFDIR | (mode & 0o7777), reply, 'mkdir');
        if (n) reply.entry(this.entry(n));
      },
      symlink: (req, parent, name, target, reply) => {
        const n = this.newChild(req, parent, name, C.S_IFLNK | 0o777, reply, 'symlink');
        if (!n) return;
        n.target = target;
        n.size = Buffer.byteLength(target);
        reply.entry(this.entry(n));
      },
      create: (req, parent, name, mode, _flags, reply) => {
        const n = this.newChild(req, parent, name, C.S_IFREG | (mode & 0o7777), reply, 'create');
        if (!n) return;
        n.opens++;
        reply.create(this.entry(n), { fh: this.nextFh++ });
      },
      unlink: (_req, parent, name, reply) => {
        this.count('unlink');
        const dir = this.node(parent);
        const de = dir?.dir?.get(name);
        const n = de && this.node(de.ino);
        if (!dir || !n) return void reply.err('ENOENT');
        if (n.dir) return void reply.err('EISDIR');
        dir.dir!.delete(name);
        n.nlink--;
        n.ctime = dir.mtime = dir.ctime = timespecNow();
        this.maybeDrop(n);
        reply.ok();
      },
      rmdir: (_req, parent, name, reply) => {
        this.count('rmdir');
        const dir = this.node(parent);
        const de = dir?.dir?.get(name);
        const n = de && this.node(de.ino);
        if (!dir || !n) return void reply.err('ENOENT');
        if (!n.dir) return void reply.err('ENOTDIR');
        if (n.dir.size) return void reply.err('ENOTEMPTY');
        dir.dir!.delete(name);
        dir.nlink--;
        n.nlink = 0;
        dir.mtime = dir.ctime = timespecNow();
        this.maybeDrop(n);
        reply.ok();
      },
      rename: (_req, parent, name, newParent, newName, flags, reply) => {
        this.count('rename');
        this.stats.renameFlags.push(flags);
        const from = this.node(parent)?.dir;
        const to = this.node(newParent)?.dir;
        if (!from || !to) return void reply.err('ENOENT');
        const src = from.get(name);
        if (!src) return void reply.err('ENOENT');
        const dst = to.get(newName);
        if (flags & ~(RENAME.NOREPLACE | RENAME.EXCHANGE)) return void reply.err('EINVAL');
        if (flags & RENAME.NOREPLACE && dst) return void reply.err('EEXIST');
        const now = timespecNow();
        if (flags & RENAME.EXCHANGE) {
          if (!dst) return void reply.err('ENOENT');
          from.set(name, { ino: dst.ino, cookie: src.cookie });
          to.set(newName, { ino: src.ino, cookie: dst.cookie });
          return void reply.ok();
        }
        const sn = this.node(src.ino)!;
        if (dst) {
          const dn = this.node(dst.ino)!;
          if (dn.dir && !sn.dir) return void reply.err('EISDIR');
          if (!dn.dir && sn.dir) return void reply.err('ENOTDIR');
          if (dn.dir?.size) return void reply.err('ENOTEMPTY');
          dn.nlink = dn.dir ? 0 : dn.nlink - 1;
          if (dn.dir) this.node(newParent)!.nlink--;
          this.maybeDrop(dn);
        }
        from.delete(name);
        to.set(newName, { ino: src.ino, cookie: this.nextCookie++ });
        if (sn.dir && parent !== newParent) {
          this.node(parent)!.nlink--;
          this.node(newParent)!.nlink++;
          sn.parent = newParent;
        }
        sn.ctime = now;
        reply.ok();
      },
      link: (_req, ino, newParent, newName, reply) => {
        this.count('link');
        const n = this.node(ino);
        const dir = this.node(newParent);
        if (!n || !dir?.dir) return void reply.err('ENOENT');
        if (dir.dir.has(newName)) return void reply.err('EEXIST');
        dir.dir.set(newName, { ino, cookie: this.nextCookie++ });
        n.nlink++;
        n.ctime = timespecNow();
        reply.entry(this.entry(n));
      },
      open: (_req, ino, _flags, reply) => {
        this.count('open');
        if (ino === STATS_INO) {
          // a snapshot per open file, so that reading it does not change it
          const fh = this.nextFh++;
          this.snapshots.set(fh, this.statsFile());
          return void reply.open({ fh, directIo: true });
        }
        const n = this.node(ino);
        if (!n) return void reply.err('ENOENT');
        n.opens++;
        reply.open({ fh: this.nextFh++ });
      },
      read: (_req, ino, size, offset, fh, reply) => {
        const k = String(size);
        this.stats.reads[k] = (this.stats.reads[k] ?? 0) + 1;
        if (ino === STATS_INO) return void reply.buf((this.snapshots.get(fh) ?? Buffer.alloc(0)).subarray(offset, offset + size));
        const n = this.node(ino);
        if (!n?.chunks) return void reply.err('EISDIR');
        reply.buf(this.read(n, offset, size));
      },
      write: (_req, ino, data, offset, _fh, _writepage, reply) => {
        const k = String(data.length);
        this.stats.writes[k] = (this.stats.writes[k] ?? 0) + 1;
        this.stats.writeRequests++;
        this.stats.maxWrite = Math.max(this.stats.maxWrite, data.length);
        const n = this.node(ino);
        if (!n?.chunks) return void reply.err('EBADF');
        this.write(n, data, offset);
        n.mtime = n.ctime = timespecNow();
        reply.write(data.length);
      },
      flush: (_req, _ino, _fh, _owner, reply) => void reply.ok(),
      release: (_req, ino, fh, _flags, reply) => {
        this.snapshots.delete(fh);
        const n = this.node(ino);
        if (n) {
          n.opens--;
          this.maybeDrop(n);
        }
        reply.ok();
      },
      fsync: (_req, _ino, _datasync, _fh, reply) => void reply.ok(),
      opendir: (_req, ino, _flags, reply) => {
        const n = this.node(ino);
        if (!n?.dir) return void reply.err('ENOTDIR');
        reply.open({ fh: this.nextFh++ });
      },
      readdir: (_req, ino, _size, offset, _fh, reply) => {
        this.stats.readdirCalls++;
        if (this.stats.readdirOffsets.length < 1000) this.stats.readdirOffsets.push(offset.toString(16));
        const n = this.node(ino);
        if (!n?.dir) return void reply.err('ENOTDIR');
        const nodes = this.nodes;
        function* entries(): Generator<DirEntry> {
          if (offset < COOKIE_BASE + 1n) yield { name: '.', ino: n!.ino, type: C.S_IFDIR, next: COOKIE_BASE + 1n };
          if (offset < COOKIE_BASE + 2n) yield { name: '..', ino: n!.parent ?? 1n, type: C.S_IFDIR, next: COOKIE_BASE + 2n };
          for (const [name, de] of n!.dir!) {
            if (de.cookie <= offset) continue;
            const c = nodes.get(de.ino);
            if (c) yield { name, ino: de.ino, type: c.mode, next: de.cookie };
          }
        }
        reply.dirents(entries());
      },
      // Only with `new ToyFs({ readdirplus: true })` (see ops()).
      readdirplus: (_req, ino, size, offset, _fh, reply) => {
        this.stats.readdirplusCalls++;
        const n = this.node(ino);
        if (!n?.dir) return void reply.err('ENOTDIR');
        const list: DirEntryPlus[] = [];
        const t = timespecNow();
        const dot = (ino: Ino): Entry => ({ ino: 0, attr: { ino, mode: C.S_IFDIR, nlink: 2, uid: 0, gid: 0, size: 0, atime: t, mtime: t, ctime: t } });
        if (offset < COOKIE_BASE + 1n) list.push({ name: '.', entry: dot(n.ino), next: COOKIE_BASE + 1n });
        if (offset < COOKIE_BASE + 2n) list.push({ name: '..', entry: dot(n.parent ?? 1n), next: COOKIE_BASE + 2n });
        for (const [name, de] of n.dir) {
          if (list.length > size / 32) break; // more than can fit
          if (de.cookie <= offset) continue;
          const c = this.nodes.get(de.ino);
          if (c) list.push({ name, entry: { ino: c.ino, attr: this.attr(c) }, next: de.cookie });
        }
        const sent = reply.direntsPlus(list);
        // every entry the kernel received (ino != 0) is a lookup it will forget
        for (const e of list.slice(0, Math.max(0, sent))) if (e.entry.ino !== 0) this.nodes.get(BigInt(e.entry.ino))!.lookups++;
      },
      releasedir: (_req, _ino, _fh, reply) => void reply.ok(),
      statfs: (_req, _ino, reply) =>
        void reply.statfs({ bsize: 4096, blocks: 1 << 20, bfree: 1 << 19, bavail: 1 << 19, files: 1 << 20, ffree: (1 << 20) - this.nodes.size, namemax: 255 }),
      fallocate: (_req, ino, mode, offset, length, _fh, reply) => {
        const n = this.node(ino);
        if (!n?.chunks) return void reply.err('EBADF');
        if (mode !== 0) return void reply.err('EOPNOTSUPP');
        if (offset + length > n.size) this.truncate(n, offset + length);
        reply.ok();
      },
      // getxattr/listxattr/setxattr/removexattr deliberately absent: libfuse
      // answers ENOSYS, the kernel then answers EOPNOTSUPP without asking.
    };
  }
}

export const errnoName = (n: number): string => Object.entries(E).find(([, v]) => v === n)?.[0] ?? String(n);
