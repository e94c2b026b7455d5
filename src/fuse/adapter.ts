// FUSE operations (fuse-native, path based) on top of the fs layer. This
// layer only translates: paths to inodes, attributes to stat, errors to errno.
import Fuse from 'fuse-native';
import { Attr, Inode, Pfs, typeToIfmt } from '../fs';
import { errno, toErrno } from './errno';

type Cb = (...args: any[]) => void;

export interface AdapterOptions {
  log: (msg: string) => void;
  /** Total and free bytes for statfs. */
  space: () => { total: number; free: number; files: number };
}

const usToMs = (us: bigint): number => Number(us / 1000n);

/** File-type bits for a directory entry's d_type (0: unknown, the kernel asks). */
function direntIfmt(type: number): number {
  try {
    return typeToIfmt(type);
  } catch {
    return 0;
  }
}

export function toStat(a: Attr): Record<string, unknown> {
  return {
    mode: a.mode,
    uid: a.uid,
    gid: a.gid,
    size: a.size,
    nlink: a.nlink,
    ino: a.ino,
    rdev: a.rdev,
    blksize: 65536,
    blocks: a.blocks,
    atime: usToMs(a.atime),
    mtime: usToMs(a.mtime),
    ctime: usToMs(a.ctime),
  };
}

/** Read-only operations; every modifying call answers EROFS. */
export function readOnlyOps(pfs: Pfs, opts: AdapterOptions): Record<string, Cb> {
  const handles = new Map<number, Inode>();
  let nextFh = 1;
  const log = opts.log;

  const guard = (cb: Cb, fn: () => void) => {
    try {
      fn();
    } catch (e) {
      cb(toErrno(e, log));
    }
  };

  const erofs = (...args: any[]) => (args[args.length - 1] as Cb)(errno('EROFS'));

  return {
    init(cb: Cb) {
      cb(0);
    },
    getattr(path: string, cb: Cb) {
      guard(cb, () => cb(0, toStat(pfs.attr(pfs.resolve(path)))));
    },
    fgetattr(path: string, fd: number, cb: Cb) {
      guard(cb, () => {
        const ip = handles.get(fd) ?? pfs.resolve(path);
        cb(0, toStat(pfs.attr(ip)));
      });
    },
    access(path: string, _mode: number, cb: Cb) {
      guard(cb, () => {
        pfs.resolve(path);
        if (_mode & 2) return cb(errno('EROFS'));
        cb(0);
      });
    },
    opendir(path: string, _flags: number, cb: Cb) {
      guard(cb, () => {
        const ip = pfs.resolve(path);
        if (ip.data.meta.type !== 1) return cb(errno('ENOTDIR'));
        const fh = nextFh++;
        handles.set(fh, ip);
        cb(0, fh);
      });
    },
    releasedir(_path: string, fd: number, cb: Cb) {
      handles.delete(fd);
      cb(0);
    },
    readdir(path: string, cb: Cb) {
      guard(cb, () => {
        const dir = pfs.resolve(path);
        const entries = pfs.readdir(dir);
        const names = ['.', '..'];
        // glibc's readdir() hides entries whose d_ino is 0, so ".." needs a real number.
        const parent = dir.inum === 1n || dir.data.meta.iparent === 0n ? 1n : dir.data.meta.iparent;
        const stats: Record<string, unknown>[] = [toStat(pfs.attr(dir)), { ino: Number(parent), mode: 0o040000 }];
        for (const e of entries) {
          names.push(e.name.toString('utf8'));
          stats.push({ ino: Number(e.inum), mode: direntIfmt(e.type) });
        }
        cb(0, names, stats);
      });
    },
    open(path: string, flags: number, cb: Cb) {
      guard(cb, () => {
        if ((flags & 3) !== 0 || flags & 0o1000 /* O_TRUNC */) return cb(errno('EROFS'));
        const ip = pfs.resolve(path);
        if (ip.data.meta.type === 1) return cb(errno('EISDIR'));
        const fh = nextFh++;
        handles.set(fh, ip);
        cb(0, fh);
      });
    },
    release(_path: string, fd: number, cb: Cb) {
      handles.delete(fd);
      cb(0);
    },
    read(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: Cb) {
      try {
        const ip = handles.get(fd) ?? pfs.resolve(path);
        const data = pfs.read(ip, pos, len);
        data.copy(buf, 0);
        cb(data.length);
      } catch (e) {
        cb(toErrno(e, log));
      }
    },
    readlink(path: string, cb: Cb) {
      guard(cb, () => cb(0, pfs.readlink(pfs.resolve(path)).toString('utf8')));
    },
    statfs(_path: string, cb: Cb) {
      guard(cb, () => {
        const s = opts.space();
        const bsize = 65536;
        cb(0, {
          bsize,
          frsize: bsize,
          blocks: Math.floor(s.total / bsize),
          bfree: Math.floor(s.free / bsize),
          bavail: Math.floor(s.free / bsize),
          // Inodes are allocated from free space (1 KiB each): files = used + possible.
          files: s.files + Math.floor(s.free / 1024),
          ffree: Math.floor(s.free / 1024),
          favail: Math.floor(s.free / 1024),
          fsid: 0,
          flag: 1 /* ST_RDONLY */,
          namemax: 255,
        });
      });
    },
    create: erofs,
    mknod: erofs,
    mkdir: erofs,
    symlink: erofs,
    link: erofs,
    unlink: erofs,
    rmdir: erofs,
    rename: erofs,
    write: (...args: any[]) => (args[args.length - 1] as Cb)(errno('EROFS')),
    truncate: erofs,
    ftruncate: erofs,
    chmod: erofs,
    chown: erofs,
    utimens: erofs,
    setxattr: erofs,
    removexattr: erofs,
  };
}

/**
 * fuse-native accepts a fixed list of mount options; this subclass appends
 * the ones it lacks (use_ino so st_ino is the HAMMER2 inode number,
 * big_writes/max_write for 128 KiB writes, ro, and anything user-given).
 */
export class Hammer2Fuse extends (Fuse as any) {
  constructor(
    mnt: string,
    ops: Record<string, Cb>,
    opts: Record<string, unknown>,
    private readonly extra: string[],
  ) {
    super(mnt, ops, opts);
  }

  _fuseOptions(): string {
    const base: string = super._fuseOptions();
    const extra = this.extra.filter((x) => x.length > 0 && !/[\s]/.test(x)).join(',');
    if (!extra) return base;
    return base ? `${base},${extra}` : `-o${extra}`;
  }
}
