// Inode-based filesystem operations as FUSE's low-level protocol asks for
// them, on top of one PFS. No binding here: each method returns its result
// or throws FsError; the binding glue turns that into replies. The kernel
// enforces permissions (default_permissions); this layer enforces the
// filesystem's own rules (names, types, emptiness, ENOSPC) and ownership of
// new inodes.
import { FsError, MediaError } from '../engine';
import { Attr, Hammer2Fs, ifmtToType, Node, Pfs, ROOT_INUM, typeToIfmt } from '../fs';
import { DIRHASH_VISIBLE, NAME_MAX, ObjType } from '../media';

export interface Caller {
  uid: number;
  gid: number;
  pid: number;
}

export interface Entry {
  ino: bigint;
  attr: Attr;
}

export interface DirEntryOut {
  name: Buffer;
  ino: bigint;
  /** S_IFMT bits of the entry's type (0 if unknown). */
  mode: number;
  /** Cookie of the entry after this one. */
  next: bigint;
}

/** Time values a setattr may carry: microseconds, or "now". */
export type TimeSet = bigint | 'now';

export interface SetAttrIn {
  mode?: number;
  uid?: number;
  gid?: number;
  size?: bigint;
  atime?: TimeSet;
  mtime?: TimeSet;
  ctime?: bigint;
}

export interface StatfsOut {
  bsize: number;
  frsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  namemax: number;
}

const S_ISGID = 0o2000;
const COOKIE_MASK = DIRHASH_VISIBLE - 1n;
const isDir = (n: Node) => n.data.meta.type === ObjType.DIRECTORY;

/**
 * Inodes held in memory (changed or open) before a metadata change commits
 * first. Each costs ~4 KiB held and, with what its commit allocates, ~14 KiB
 * at the peak: 8192 put the daemon past 256 MiB in a create storm, 4096
 * keeps it under with no loss of create rate measured.
 */
const LIVE_LIMIT = 4096;

export interface OpsOptions {
  /** Flush once this much file data is pending (bytes). */
  dirtyLimit?: number;
  log?: (msg: string) => void;
  /** This mount refuses changes even though the image is open for writing (-o ro beside read-write mounts). */
  readonly?: boolean;
}

export class Hammer2Ops {
  private handles = new Map<bigint, Node>();
  private nextFh = 1n;
  private readonly dirtyLimit: number;

  constructor(
    readonly fs: Hammer2Fs,
    readonly pfs: Pfs,
    readonly opts: OpsOptions = {},
  ) {
    this.dirtyLimit = opts.dirtyLimit ?? 32 * 1024 * 1024;
  }

  private now(): bigint {
    return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000));
  }

  private node(ino: bigint, fh?: bigint): Node {
    if (fh !== undefined) {
      const n = this.handles.get(fh);
      if (n && n.inum === ino) return n;
    }
    return this.pfs.getInode(ino === 1n ? ROOT_INUM : ino);
  }

  private entry(n: Node): Entry {
    return { ino: n.inum, attr: this.pfs.attr(n) };
  }

  private writable(): void {
    if (!this.pfs.writable || this.opts.readonly) throw new FsError('EROFS');
    if (this.fs.failed) throw new FsError('EIO', 'the filesystem stopped accepting changes after a failed flush');
    // Changed inodes stay in memory until a commit; bound how many (rm -r or
    // untar of a large tree within one flush interval), as dirtyLimit bounds data.
    this.fs.pollBehind();
    if (this.pfs.live.size >= LIVE_LIMIT) this.fs.flushBehind();
  }

  // ------------------------------------------------------------ lookups

  /** The entry for `name`, or null when there is none (the common case before a create: no exception). */
  lookup(_c: Caller, parent: bigint, name: Buffer): Entry | null {
    if (name.length > NAME_MAX) throw new FsError('ENAMETOOLONG');
    const dir = this.node(parent);
    const e = this.pfs.lookup(dir, name);
    if (!e) return null;
    return this.entry(this.pfs.getInode(e.inum));
  }

  getattr(_c: Caller, ino: bigint, fh?: bigint): Attr {
    return this.pfs.attr(this.node(ino, fh));
  }

  readlink(_c: Caller, ino: bigint): Buffer {
    return this.pfs.readlink(this.node(ino));
  }

  // ------------------------------------------------------------ creation

  private newOwner(c: Caller, dir: Node, mode: number, type: number): { gid: number; mode: number } {
    const pm = dir.data.meta;
    // BSD/SysV rule: in a setgid directory new inodes take its group and subdirectories stay setgid.
    if (pm.mode & S_ISGID) {
      const gid = this.pfs.attr(dir).gid;
      return { gid, mode: type === ObjType.DIRECTORY ? mode | S_ISGID : mode };
    }
    return { gid: c.gid, mode };
  }

  private make(c: Caller, parent: bigint, name: Buffer, mode: number, type: number, rdev = 0): Node {
    this.writable();
    const dir = this.node(parent);
    this.fs.ensureSpace(64 * 1024);
    const own = this.newOwner(c, dir, mode & 0o7777, type);
    return this.pfs.create(dir, name, type, own.mode, { uid: c.uid, gid: c.gid }, this.now(), { rdev, gid: own.gid });
  }

  mknod(c: Caller, parent: bigint, name: Buffer, mode: number, rdev: number): Entry {
    return this.entry(this.make(c, parent, name, mode, ifmtToType(mode), rdev));
  }

  mkdir(c: Caller, parent: bigint, name: Buffer, mode: number): Entry {
    return this.entry(this.make(c, parent, name, mode, ObjType.DIRECTORY));
  }

  symlink(c: Caller, target: Buffer, parent: bigint, name: Buffer): Entry {
    this.writable();
    if (target.length > 4095) throw new FsError('ENAMETOOLONG');
    const dir = this.node(parent);
    this.fs.ensureSpace(64 * 1024 + target.length);
    const own = this.newOwner(c, dir, 0o777, ObjType.SOFTLINK);
    const n = this.pfs.symlink(dir, name, target, { uid: c.uid, gid: own.gid }, this.now());
    return this.entry(n);
  }

  link(_c: Caller, ino: bigint, parent: bigint, name: Buffer): Entry {
    this.writable();
    this.fs.ensureSpace(16 * 1024);
    const n = this.node(ino);
    this.pfs.link(n, this.node(parent), name, this.now());
    return this.entry(n);
  }

  create(c: Caller, parent: bigint, name: Buffer, mode: number, flags: number): { entry: Entry; fh: bigint } {
    const n = this.make(c, parent, name, mode, ObjType.REGFILE);
    return { entry: this.entry(n), fh: this.openNode(n, flags) };
  }

  // ------------------------------------------------------------ removal

  unlink(_c: Caller, parent: bigint, name: Buffer): void {
    this.writable();
    this.fs.ensureSpace(0, { deleting: true });
    this.pfs.unlink(this.node(parent), name, this.now());
  }

  rmdir(_c: Caller, parent: bigint, name: Buffer): void {
    this.writable();
    this.fs.ensureSpace(0, { deleting: true });
    this.pfs.unlink(this.node(parent), name, this.now(), true);
  }

  /**
   * flags: 1 = RENAME_NOREPLACE. RENAME_EXCHANGE (2) and RENAME_WHITEOUT (4,
   * which must leave a whiteout device at the old name) are not supported:
   * EINVAL, like any flag we do not know, rather than a plain rename.
   */
  rename(_c: Caller, parent: bigint, name: Buffer, newparent: bigint, newname: Buffer, flags = 0): void {
    this.writable();
    if (flags & ~1) throw new FsError('EINVAL', `rename flags ${flags} are not supported`);
    const sdir = this.node(parent);
    const ddir = this.node(newparent);
    if (flags & 1 && this.pfs.lookup(ddir, newname)) throw new FsError('EEXIST');
    this.fs.ensureSpace(16 * 1024, { deleting: true });
    this.pfs.rename(sdir, name, ddir, newname, this.now());
  }

  // ------------------------------------------------------------ attributes

  setattr(_c: Caller, ino: bigint, a: SetAttrIn, fh?: bigint): Attr {
    this.writable();
    const n = this.node(ino, fh);
    const now = this.now();
    if (a.size !== undefined) {
      if (isDir(n)) throw new FsError('EISDIR');
      if (a.size > n.data.meta.size) this.fs.ensureSpace(0);
    }
    this.pfs.setattr(
      n,
      {
        mode: a.mode,
        uid: a.uid,
        gid: a.gid,
        size: a.size,
        atime: a.atime === 'now' ? now : a.atime,
        mtime: a.mtime === 'now' ? now : a.mtime,
        ctime: a.ctime,
      },
      now,
    );
    return this.pfs.attr(n);
  }

  // ------------------------------------------------------------ files

  private openNode(n: Node, _flags: number): bigint {
    const fh = this.nextFh++;
    this.handles.set(fh, n);
    this.pfs.open(n);
    return fh;
  }

  open(_c: Caller, ino: bigint, flags: number): bigint {
    const n = this.node(ino);
    if (isDir(n)) throw new FsError('EISDIR');
    if ((flags & 3) !== 0) this.writable();
    return this.openNode(n, flags);
  }

  /**
   * File data. Large reads land in one reused buffer: the session sends the
   * reply (copied into the kernel) before it takes the next request, and a
   * fresh 1 MiB buffer per request of a sequential read cost more in
   * allocation and garbage collection than the read itself.
   */
  read(_c: Caller, ino: bigint, size: number, off: number, fh?: bigint): Buffer {
    const n = this.node(ino, fh);
    // Small reads are cheap to allocate; past 4 MiB (more than FUSE asks for) keep nothing.
    if (size < 16 << 10 || size > 4 << 20) return this.pfs.read(n, off, size);
    if (!this.readBuf || this.readBuf.length < size) this.readBuf = Buffer.allocUnsafe(Math.max(size, 128 << 10));
    return this.pfs.readInto(n, off, size, this.readBuf);
  }
  private readBuf: Buffer | null = null;

  /**
   * `fromCache`: pages the kernel's writeback cache sends. The kernel keeps
   * mtime and ctime of such files itself and sends them in a SETATTR, which
   * background writeback may deliver before these pages: the write must not
   * stamp its own (later) time over them.
   */
  write(_c: Caller, ino: bigint, buf: Buffer, off: number, fh?: bigint, fromCache = false): number {
    this.writable();
    const n = this.node(ino, fh);
    this.fs.ensureSpace(buf.length);
    // Commit before taking more than the dirty limit: if the commit fails,
    // this write fails whole and nothing half-accepted is left behind.
    if (this.fs.pendingBytes > 0 && this.fs.pendingBytes + buf.length > this.dirtyLimit) {
      this.fs.flushBehind();
      this.fs.maybeReclaim();
    }
    const done = this.pfs.write(n, off, buf, fromCache ? null : this.now());
    this.fs.makeRoom();
    return done;
  }

  /**
   * fallocate(2). Copy-on-write media cannot reserve blocks for later
   * writes, so mode 0 and KEEP_SIZE check that the space is free now and
   * extend the size (as ZFS does); PUNCH_HOLE (with KEEP_SIZE, as Linux
   * requires) and ZERO_RANGE turn the range into holes. COLLAPSE_RANGE,
   * INSERT_RANGE and UNSHARE_RANGE are not supported (EOPNOTSUPP).
   */
  fallocate(_c: Caller, ino: bigint, mode: number, off: number, len: number, fh?: bigint): void {
    const KEEP_SIZE = 0x01;
    const PUNCH_HOLE = 0x02;
    const ZERO_RANGE = 0x10;
    this.writable();
    if (mode & ~(KEEP_SIZE | PUNCH_HOLE | ZERO_RANGE)) throw new FsError('EOPNOTSUPP');
    if (mode & PUNCH_HOLE && (mode & ZERO_RANGE || !(mode & KEEP_SIZE))) throw new FsError('EOPNOTSUPP');
    if (off < 0 || len <= 0) throw new FsError('EINVAL');
    const n = this.node(ino, fh);
    if (isDir(n)) throw new FsError('EISDIR');
    if (n.data.meta.type !== ObjType.REGFILE) throw new FsError('ENODEV');
    const start = BigInt(off);
    const end = start + BigInt(len);
    const now = this.now();
    const grow = !(mode & KEEP_SIZE) && end > n.data.meta.size;
    if (!(mode & (PUNCH_HOLE | ZERO_RANGE))) this.fs.ensureSpace(len);
    else if (grow) this.fs.ensureSpace(0);
    if (grow) this.pfs.truncate(n, end, now);
    if (mode & (PUNCH_HOLE | ZERO_RANGE)) this.pfs.zeroRange(n, start, end, now);
  }

  release(_c: Caller, _ino: bigint, fh: bigint): void {
    const n = this.handles.get(fh);
    if (!n) return;
    this.handles.delete(fh);
    this.pfs.release(n);
  }

  /** fsync and fdatasync: commit everything (one transaction covers all). */
  fsync(_c: Caller, _ino: bigint, _datasync: boolean, _fh?: bigint): void {
    if (this.pfs.writable) this.fs.flush();
  }

  // ------------------------------------------------------------ directories

  opendir(_c: Caller, ino: bigint): bigint {
    const n = this.node(ino);
    if (!isDir(n)) throw new FsError('ENOTDIR');
    const fh = this.nextFh++;
    this.handles.set(fh, n);
    this.pfs.open(n);
    return fh;
  }

  /**
   * Entries after cookie `off`: 0 starts with ".", 1 is "..", then entries
   * by directory hash (bit 63 stripped, so cookies are positive offsets).
   */
  readdir(_c: Caller, ino: bigint, off: bigint, max: number, fh?: bigint): DirEntryOut[] {
    const dir = this.node(ino, fh);
    const out: DirEntryOut[] = [];
    if (off < 1n) out.push({ name: Buffer.from('.'), ino: dir.inum, mode: 0o040000, next: 1n });
    if (off < 2n) {
      const p = dir.inum === ROOT_INUM || dir.data.meta.iparent === 0n ? ROOT_INUM : dir.data.meta.iparent;
      out.push({ name: Buffer.from('..'), ino: p, mode: 0o040000, next: 2n });
    }
    const from = off < 2n ? DIRHASH_VISIBLE : DIRHASH_VISIBLE | off;
    for (const e of this.pfs.readdirFrom(dir, from, Math.max(1, max - out.length))) {
      let mode = 0;
      try {
        mode = typeToIfmt(e.type);
      } catch {
        mode = 0;
      }
      out.push({ name: e.name, ino: e.inum, mode, next: (e.key & COOKIE_MASK) + 1n });
    }
    return out;
  }

  releasedir(c: Caller, ino: bigint, fh: bigint): void {
    this.release(c, ino, fh);
  }

  fsyncdir(c: Caller, ino: bigint, datasync: boolean, fh?: bigint): void {
    this.fsync(c, ino, datasync, fh);
  }

  statfs(_c: Caller): StatfsOut {
    const bsize = 65536;
    const size = Number(this.fs.dev.header.allocatorSize);
    const free = this.fs.availableBytes();
    const files = Number(this.pfs.entry.bref.embed.readBigUInt64LE(8)) + this.pfs.live.size;
    return {
      bsize,
      frsize: bsize,
      blocks: Math.floor(size / bsize),
      bfree: Math.floor(free / bsize),
      bavail: Math.floor(free / bsize),
      files: files + Math.floor(free / 1024),
      ffree: Math.floor(free / 1024),
      namemax: NAME_MAX,
    };
  }

  /** access(2) when the kernel does not check (without default_permissions). */
  access(c: Caller, ino: bigint, mask: number): void {
    const n = this.node(ino);
    if (mask === 0 || c.uid === 0) {
      if (mask & 2 && (!this.pfs.writable || this.opts.readonly)) throw new FsError('EROFS');
      return;
    }
    const a = this.pfs.attr(n);
    const bits = c.uid === a.uid ? (a.mode >> 6) & 7 : c.gid === a.gid ? (a.mode >> 3) & 7 : a.mode & 7;
    if ((bits & mask) !== mask) throw new FsError('EACCES');
    if (mask & 2 && (!this.pfs.writable || this.opts.readonly)) throw new FsError('EROFS');
  }

  /** Commit and stop: the mount is going away. */
  destroy(): void {
    try {
      if (this.pfs.writable) this.fs.flush();
    } catch (e) {
      this.opts.log?.(`final flush failed: ${(e as Error).message}`);
      if (!(e instanceof FsError || e instanceof MediaError)) throw e;
    }
  }
}
