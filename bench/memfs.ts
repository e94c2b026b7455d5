// memfs: a minimal in-memory filesystem on our libfuse3 low-level binding
// (src/fuse/lowlevel.ts), the benchmark's ceiling for any Node filesystem on
// this binding. It does as little as a POSIX filesystem can: file data in
// 1 MiB chunks (a full-chunk write keeps the request's buffer, no copy),
// directories as Maps, no persistence. It is mounted with what mount_hammer2
// uses by default (default_permissions, allow_other, its attribute and entry
// timeouts, keep_cache on open, no writeback cache, 1 MiB writes), so that
// the difference to hammer2fs is the filesystem's own work. The binding's own
// tests serve the same filesystem with counters around it (test/lib/toyfs.ts).
//
//   node dist/bench/memfs.js MOUNTPOINT
//
// Prints one JSON line {"ready":true,"pid":N} once mounted; SIGINT/SIGTERM or
// `fusermount -u MOUNTPOINT` unmount and exit. The serving process never
// touches its own mount.
import { constants as C } from 'node:fs';
import {
  Attr,
  DirEntry,
  DirEntryPlus,
  EXCLUSIVE_CACHE_TIMEOUT,
  Entry,
  FuseSession,
  Ino,
  LowLevelOps,
  RENAME,
  SetAttr,
  Timespec,
  timespecNow,
} from '../src/fuse/lowlevel';

const CHUNK = 1 << 20;
const S_ISGID = 0o2000;

export interface MemFsOptions {
  /** First inode number handed out (default 2). */
  firstIno?: Ino;
  /** Directory cookies: '.' is base+1, '..' base+2, entries base+3... (default 0). */
  cookieBase?: bigint;
  /** Answer READDIRPLUS (default: no handler, the kernel uses READDIR). */
  readdirplus?: boolean;
  /** keep_cache on open (default true, as mount_hammer2). */
  keepCache?: boolean;
}

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

export class MemFs {
  private nodes = new Map<Ino, Node>();
  private nextIno: Ino;
  private readonly dot: bigint;
  private readonly dotdot: bigint;
  private nextCookie: bigint;
  private nextFh = 1;
  private bytes = 0;
  private readonly keepCache: boolean;

  constructor(private readonly opts: MemFsOptions = {}) {
    this.nextIno = opts.firstIno ?? 2n;
    const base = opts.cookieBase ?? 0n;
    this.dot = base + 1n;
    this.dotdot = base + 2n;
    this.nextCookie = base + 3n;
    this.keepCache = opts.keepCache ?? true;
    const root = this.mk(1n, C.S_IFDIR | 0o755, 0, 0);
    root.dir = new Map();
    root.parent = 1n;
    root.nlink = 2;
  }

  /** A regular file in the root with a chosen inode number (fixtures). */
  addFile(name: string, ino: Ino, content: Buffer): void {
    const n = this.mk(ino, C.S_IFREG | 0o644, 0, 0);
    if (content.length) this.write(n, Buffer.from(content), 0);
    this.nodes.get(1n)!.dir!.set(name, { ino, cookie: this.nextCookie++ });
  }

  /** Inodes held (the root included). */
  get inodes(): number {
    return this.nodes.size;
  }

  private mk(ino: Ino, mode: number, uid: number, gid: number): Node {
    const t = timespecNow();
    const n: Node = { ino, mode, uid, gid, nlink: 1, size: 0, rdev: 0, atime: t, mtime: t, ctime: t, lookups: 0, opens: 0 };
    if ((mode & C.S_IFMT) === C.S_IFREG) n.chunks = new Map();
    this.nodes.set(ino, n);
    return n;
  }

  private attr(n: Node): Attr {
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

  private maybeDrop(n: Node): void {
    if (n.nlink <= 0 && n.lookups <= 0 && n.opens <= 0 && n.ino !== 1n) {
      if (n.chunks) this.truncate(n, 0);
      this.nodes.delete(n.ino);
    }
  }

  private write(n: Node, data: Buffer, off: number): void {
    const chunks = n.chunks!;
    let pos = 0;
    while (pos < data.length) {
      const at = off + pos;
      const ci = Math.floor(at / CHUNK);
      const co = at - ci * CHUNK;
      const len = Math.min(CHUNK - co, data.length - pos);
      let c = chunks.get(ci);
      if (co === 0 && len === CHUNK) {
        if (!c) this.bytes += CHUNK;
        chunks.set(ci, data.subarray(pos, pos + len)); // the request's buffer is ours to keep
      } else {
        if (!c) {
          c = Buffer.alloc(CHUNK);
          this.bytes += CHUNK;
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
    const ci = Math.floor(off / CHUNK);
    const co = off - ci * CHUNK;
    // Within one chunk (every request the kernel makes here): no copy.
    if (co + (end - off) <= CHUNK) {
      const c = n.chunks!.get(ci);
      return c ? c.subarray(co, co + (end - off)) : Buffer.alloc(end - off);
    }
    const out = Buffer.alloc(end - off);
    for (let at = off; at < end; ) {
      const i = Math.floor(at / CHUNK);
      const o = at - i * CHUNK;
      const len = Math.min(CHUNK - o, end - at);
      n.chunks!.get(i)?.copy(out, at - off, o, o + len);
      at += len;
    }
    return out;
  }

  private truncate(n: Node, size: number): void {
    const chunks = n.chunks!;
    for (const ci of [...chunks.keys()]) {
      if (ci * CHUNK >= size) {
        chunks.delete(ci);
        this.bytes -= CHUNK;
      }
    }
    const ci = Math.floor(size / CHUNK);
    const c = chunks.get(ci);
    if (c && size > ci * CHUNK) {
      const nc = Buffer.alloc(CHUNK);
      c.copy(nc, 0, 0, size - ci * CHUNK);
      chunks.set(ci, nc);
    }
    n.size = size;
  }

  private child(parent: Ino, name: string): Node | undefined {
    const de = this.nodes.get(parent)?.dir?.get(name);
    return de && this.nodes.get(de.ino);
  }

  private newChild(req: { uid: number; gid: number }, parent: Ino, name: string, mode: number): Node | string {
    const dir = this.nodes.get(parent);
    if (!dir?.dir) return 'ENOTDIR';
    if (dir.dir.has(name)) return 'EEXIST';
    if (Buffer.byteLength(name) > 255) return 'ENAMETOOLONG';
    const gid = dir.mode & S_ISGID ? dir.gid : req.gid;
    const n = this.mk(this.nextIno++, mode, req.uid, gid);
    if ((mode & C.S_IFMT) === C.S_IFDIR) {
      n.dir = new Map();
      n.nlink = 2;
      n.parent = parent;
      dir.nlink++;
      if (dir.mode & S_ISGID) n.mode |= S_ISGID;
    }
    dir.dir.set(name, { ino: n.ino, cookie: this.nextCookie++ });
    dir.mtime = dir.ctime = timespecNow();
    return n;
  }

  ops(): LowLevelOps {
    return {
      lookup: (_req, parent, name, reply) => {
        const dir = this.nodes.get(parent);
        if (!dir?.dir) return void reply.err('ENOTDIR');
        const n = this.child(parent, name);
        if (!n) return void reply.err('ENOENT');
        reply.entry(this.entry(n));
      },
      forget: (_req, ino, nlookup) => {
        const n = this.nodes.get(ino);
        if (!n) return;
        n.lookups -= nlookup;
        this.maybeDrop(n);
      },
      forgetMulti: (_req, items) => {
        for (const { ino, nlookup } of items) {
          const n = this.nodes.get(ino);
          if (!n) continue;
          n.lookups -= nlookup;
          this.maybeDrop(n);
        }
      },
      getattr: (_req, ino, _fh, reply) => {
        const n = this.nodes.get(ino);
        if (!n) return void reply.err('ENOENT');
        reply.attr(this.attr(n));
      },
      setattr: (_req, ino, s: SetAttr, _fh, reply) => {
        const n = this.nodes.get(ino);
        if (!n) return void reply.err('ENOENT');
        const now = timespecNow();
        if (s.size !== undefined) {
          if (!n.chunks) return void reply.err(n.dir ? 'EISDIR' : 'EINVAL');
          this.truncate(n, s.size);
          n.mtime = now;
        }
        if (s.mode !== undefined) n.mode = (n.mode & C.S_IFMT) | (s.mode & 0o7777);
        if (s.uid !== undefined) n.uid = s.uid;
        if (s.gid !== undefined) n.gid = s.gid;
        if (s.atime !== undefined) n.atime = s.atime === 'now' ? now : s.atime;
        if (s.mtime !== undefined) n.mtime = s.mtime === 'now' ? now : s.mtime;
        n.ctime = s.ctime ?? now;
        reply.attr(this.attr(n));
      },
      readlink: (_req, ino, reply) => {
        const n = this.nodes.get(ino);
        if (n?.target === undefined) return void reply.err('EINVAL');
        reply.readlink(n.target);
      },
      mknod: (req, parent, name, mode, rdev, reply) => {
        const n = this.newChild(req, parent, name, mode);
        if (typeof n === 'string') return void reply.err(n);
        n.rdev = rdev;
        reply.entry(this.entry(n));
      },
      mkdir: (req, parent, name, mode, reply) => {
        const n = this.newChild(req, parent, name, C.S_IFDIR | (mode & 0o7777));
        if (typeof n === 'string') return void reply.err(n);
        reply.entry(this.entry(n));
      },
      symlink: (req, parent, name, target, reply) => {
        const n = this.newChild(req, parent, name, C.S_IFLNK | 0o777);
        if (typeof n === 'string') return void reply.err(n);
        n.target = target;
        n.size = Buffer.byteLength(target);
        reply.entry(this.entry(n));
      },
      create: (req, parent, name, mode, _flags, reply) => {
        const n = this.newChild(req, parent, name, C.S_IFREG | (mode & 0o7777));
        if (typeof n === 'string') return void reply.err(n);
        n.opens++;
        reply.create(this.entry(n), { fh: this.nextFh++, keepCache: this.keepCache });
      },
      unlink: (_req, parent, name, reply) => {
        const dir = this.nodes.get(parent);
        const n = this.child(parent, name);
        if (!dir || !n) return void reply.err('ENOENT');
        if (n.dir) return void reply.err('EISDIR');
        dir.dir!.delete(name);
        n.nlink--;
        n.ctime = dir.mtime = dir.ctime = timespecNow();
        this.maybeDrop(n);
        reply.ok();
      },
      rmdir: (_req, parent, name, reply) => {
        const dir = this.nodes.get(parent);
        const n = this.child(parent, name);
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
        const fromDir = this.nodes.get(parent);
        const toDir = this.nodes.get(newParent);
        if (!fromDir?.dir || !toDir?.dir) return void reply.err('ENOENT');
        const src = fromDir.dir.get(name);
        if (!src) return void reply.err('ENOENT');
        const dst = toDir.dir.get(newName);
        if (flags & ~(RENAME.NOREPLACE | RENAME.EXCHANGE)) return void reply.err('EINVAL');
        if (flags & RENAME.NOREPLACE && dst) return void reply.err('EEXIST');
        if (flags & RENAME.EXCHANGE) {
          if (!dst) return void reply.err('ENOENT');
          fromDir.dir.set(name, { ino: dst.ino, cookie: src.cookie });
          toDir.dir.set(newName, { ino: src.ino, cookie: dst.cookie });
          return void reply.ok();
        }
        const sn = this.nodes.get(src.ino)!;
        if (dst) {
          if (dst.ino === src.ino) return void reply.ok();
          const dn = this.nodes.get(dst.ino)!;
          if (dn.dir && !sn.dir) return void reply.err('EISDIR');
          if (!dn.dir && sn.dir) return void reply.err('ENOTDIR');
          if (dn.dir?.size) return void reply.err('ENOTEMPTY');
          if (dn.dir) {
            dn.nlink = 0;
            toDir.nlink--;
          } else dn.nlink--;
          this.maybeDrop(dn);
        }
        fromDir.dir.delete(name);
        toDir.dir.set(newName, { ino: src.ino, cookie: this.nextCookie++ });
        if (sn.dir && parent !== newParent) {
          fromDir.nlink--;
          toDir.nlink++;
          sn.parent = newParent;
        }
        sn.ctime = fromDir.mtime = fromDir.ctime = toDir.mtime = toDir.ctime = timespecNow();
        reply.ok();
      },
      link: (_req, ino, newParent, newName, reply) => {
        const n = this.nodes.get(ino);
        const dir = this.nodes.get(newParent);
        if (!n || !dir?.dir) return void reply.err('ENOENT');
        if (dir.dir.has(newName)) return void reply.err('EEXIST');
        dir.dir.set(newName, { ino, cookie: this.nextCookie++ });
        n.nlink++;
        n.ctime = timespecNow();
        reply.entry(this.entry(n));
      },
      open: (_req, ino, _flags, reply) => {
        const n = this.nodes.get(ino);
        if (!n) return void reply.err('ENOENT');
        n.opens++;
        reply.open({ fh: this.nextFh++, keepCache: this.keepCache });
      },
      read: (_req, ino, size, offset, _fh, reply) => {
        const n = this.nodes.get(ino);
        if (!n?.chunks) return void reply.err('EISDIR');
        reply.buf(this.read(n, offset, size));
      },
      write: (_req, ino, data, offset, _fh, _writepage, reply) => {
        const n = this.nodes.get(ino);
        if (!n?.chunks) return void reply.err('EBADF');
        this.write(n, data, offset);
        n.mtime = n.ctime = timespecNow();
        reply.write(data.length);
      },
      // No flush handler: the first FLUSH is answered ENOSYS and the kernel
      // stops sending them (mount_hammer2 needs none either).
      release: (_req, ino, _fh, _flags, reply) => {
        const n = this.nodes.get(ino);
        if (n) {
          n.opens--;
          this.maybeDrop(n);
        }
        reply.ok();
      },
      fsync: (_req, _ino, _datasync, _fh, reply) => void reply.ok(),
      opendir: (_req, ino, _flags, reply) => {
        const n = this.nodes.get(ino);
        if (!n?.dir) return void reply.err('ENOTDIR');
        reply.open({ fh: this.nextFh++ });
      },
      readdir: (_req, ino, _size, offset, _fh, reply) => {
        const n = this.nodes.get(ino);
        if (!n?.dir) return void reply.err('ENOTDIR');
        const nodes = this.nodes;
        const { dot, dotdot } = this;
        function* entries(): Generator<DirEntry> {
          if (offset < dot) yield { name: '.', ino: n!.ino, type: C.S_IFDIR, next: dot };
          if (offset < dotdot) yield { name: '..', ino: n!.parent ?? 1n, type: C.S_IFDIR, next: dotdot };
          // Cookies grow in insertion order, which is the Map's order.
          for (const [name, de] of n!.dir!) {
            if (de.cookie <= offset) continue;
            const c = nodes.get(de.ino);
            if (c) yield { name, ino: de.ino, type: c.mode, next: de.cookie };
          }
        }
        reply.dirents(entries());
      },
      ...(this.opts.readdirplus ? { readdirplus: (_req, ino, size, offset, _fh, reply) => this.readdirplus(ino, size, offset, reply) } : {}),
      releasedir: (_req, _ino, _fh, reply) => void reply.ok(),
      fsyncdir: (_req, _ino, _datasync, _fh, reply) => void reply.ok(),
      statfs: (_req, _ino, reply) => {
        const total = 1 << 26; // 256 GiB in 4 KiB blocks: never the limit
        const used = Math.ceil(this.bytes / 4096);
        reply.statfs({ bsize: 4096, blocks: total, bfree: total - used, bavail: total - used, files: 1 << 24, ffree: (1 << 24) - this.nodes.size, namemax: 255 });
      },
      fallocate: (_req, ino, mode, offset, length, _fh, reply) => {
        const n = this.nodes.get(ino);
        if (!n?.chunks) return void reply.err('EBADF');
        if (mode !== 0) return void reply.err('EOPNOTSUPP');
        if (offset + length > n.size) n.size = offset + length;
        reply.ok();
      },
    };
  }

  private readdirplus(ino: Ino, size: number, offset: bigint, reply: Parameters<NonNullable<LowLevelOps['readdirplus']>>[5]): void {
    const n = this.nodes.get(ino);
    if (!n?.dir) return void reply.err('ENOTDIR');
    const list: DirEntryPlus[] = [];
    const t = timespecNow();
    // '.' and '..' go without attributes (ino 0: no lookup the kernel would have to forget).
    const dotEntry = (ino: Ino): Entry => ({ ino: 0, attr: { ino, mode: C.S_IFDIR, nlink: 2, uid: 0, gid: 0, size: 0, atime: t, mtime: t, ctime: t } });
    if (offset < this.dot) list.push({ name: '.', entry: dotEntry(n.ino), next: this.dot });
    if (offset < this.dotdot) list.push({ name: '..', entry: dotEntry(n.parent ?? 1n), next: this.dotdot });
    for (const [name, de] of n.dir) {
      if (list.length > size / 32) break; // more than can fit
      if (de.cookie <= offset) continue;
      const c = this.nodes.get(de.ino);
      if (c) list.push({ name, entry: { ino: c.ino, attr: this.attr(c) }, next: de.cookie });
    }
    const sent = reply.direntsPlus(list);
    // Every entry the kernel took with attributes is a lookup it will forget.
    for (const e of list.slice(0, Math.max(0, sent))) if (e.entry.ino !== 0) this.nodes.get(BigInt(e.entry.ino))!.lookups++;
  }
}

async function main(): Promise<void> {
  const mnt = process.argv[2];
  if (!mnt) throw new Error('usage: memfs MOUNTPOINT');
  const memfs = new MemFs();
  const session = new FuseSession(
    mnt,
    {
      options: ['fsname=memfs', 'subtype=memfs', 'default_permissions', 'allow_other', 'auto_unmount'],
      attrTimeout: EXCLUSIVE_CACHE_TIMEOUT,
      entryTimeout: EXCLUSIVE_CACHE_TIMEOUT,
    },
    memfs.ops(),
  );
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    void session.unmount();
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  session.closed.then((end) => {
    process.exitCode = end.ok ? 0 : 1;
    process.exit();
  });
  await session.mount();
  process.stdout.write(JSON.stringify({ ready: true, pid: process.pid }) + '\n');
}

if (require.main === module) {
  main().catch((e) => {
    process.stderr.write(`memfs: ${(e as Error).message}\n`);
    process.exit(1);
  });
}
