// Glue between the low-level FUSE binding (lowlevel.ts) and the operation
// layer (ops.ts): argument and attribute conversion, errors to errno.
// Names travel as latin1 strings so every byte of a HAMMER2 name survives.
import { FsError, MediaError } from '../engine';
import { Attr } from '../fs';
import { DeviceError } from '../store';
import { Caller, Hammer2Ops } from './ops';
import { Attr as FuseAttr, Entry as FuseEntry, FuseSession, LowLevelOps, Request, SETATTR, Timespec } from './lowlevel';

const bytes = (s: string) => Buffer.from(s, 'latin1');

export const usToTimespec = (us: bigint): Timespec => {
  // Floor division: times before 1970 keep 0 <= nsec < 1e9.
  let sec = us / 1000000n;
  if (us < 0n && sec * 1000000n !== us) sec -= 1n;
  return { sec: Number(sec), nsec: Number(us - sec * 1000000n) * 1000 };
};
export const timespecToUs = (t: Timespec): bigint => BigInt(t.sec) * 1000000n + BigInt(Math.floor(t.nsec / 1000));

function fuseAttr(a: Attr): FuseAttr {
  return {
    ino: BigInt(a.ino),
    mode: a.mode,
    nlink: a.nlink,
    uid: a.uid,
    gid: a.gid,
    size: a.size,
    atime: usToTimespec(a.atime),
    mtime: usToTimespec(a.mtime),
    ctime: usToTimespec(a.ctime),
    rdev: a.rdev,
    blocks: a.blocks,
    blksize: 65536,
  };
}

// close() needs no FLUSH round trip (durability is fsync's job): opens say
// FOPEN_NOFLUSH, and under the writeback cache, which ignores that, the one
// FLUSH the kernel sends is answered ENOSYS (no handler) and it stops asking.
const Z: Timespec = { sec: 0, nsec: 0 };
const caller = (r: Request): Caller => ({ uid: r.uid, gid: r.gid, pid: r.pid });

export interface SessionOptions {
  options: string[];
  debug?: boolean;
  log: (msg: string) => void;
  attrTimeout?: number;
  entryTimeout?: number;
  /** see FuseSessionOptions.spinUs */
  spinUs?: number;
  /** FUSE writeback cache: the kernel owns size and times of regular files while it caches them. */
  writebackCache?: boolean;
}

/** Errors from the layers below as errno; unexpected ones are logged as bugs. */
export function errnoOf(e: unknown, log: (m: string) => void): string {
  if (e instanceof FsError) return e.errno;
  if (e instanceof MediaError) {
    log(`EIO: ${e.message}`);
    return 'EIO';
  }
  if (e instanceof DeviceError) {
    log(`device error: ${e.message}`);
    return e.code && /^E[A-Z]+$/.test(e.code) ? e.code : 'EIO';
  }
  log(`internal error: ${(e as Error)?.stack ?? String(e)}`);
  return 'EIO';
}

export function hammer2Session(mountpoint: string, ops: Hammer2Ops, so: SessionOptions): FuseSession {
  // The kernel may keep attributes for the whole timeout: every change goes
  // through it, except st_blocks of inodes with pending data, which the
  // next commit turns from an estimate into what was stored. Those inodes
  // are remembered and their attributes invalidated after each commit.
  const provisional = new Set<bigint>();
  const attrOut = (a: Attr): FuseAttr => {
    if (a.provisional) provisional.add(BigInt(a.ino));
    return fuseAttr(a);
  };
  const entry = (e: { ino: bigint; attr: Attr }): FuseEntry => ({ ino: e.ino, attr: attrOut(e.attr) });
  const run = (reply: { err(e: string | number): number }, fn: () => void) => {
    try {
      fn();
    } catch (e) {
      reply.err(errnoOf(e, so.log));
    }
  };
  const ll: LowLevelOps = {
    destroy: () => ops.destroy(),
    lookup: (req, parent, name, reply) =>
      run(reply, () => {
        const e = ops.lookup(caller(req), parent, bytes(name));
        // Every change goes through this daemon, so the kernel may cache "no such name" too.
        if (e) reply.entry(entry(e));
        else reply.noEntry(so.entryTimeout ?? 1);
      }),
    getattr: (req, ino, fh, reply) => run(reply, () => reply.attr(attrOut(ops.getattr(caller(req), ino, fh === undefined ? undefined : BigInt(fh))))),
    setattr: (req, ino, ch, fh, reply) =>
      run(reply, () => {
        const t = ch.toSet;
        const a = ops.setattr(
          caller(req),
          ino,
          {
            mode: t & SETATTR.MODE ? ch.mode : undefined,
            uid: t & SETATTR.UID ? ch.uid : undefined,
            gid: t & SETATTR.GID ? ch.gid : undefined,
            size: t & SETATTR.SIZE && ch.size !== undefined ? BigInt(ch.size) : undefined,
            atime: ch.atime === undefined ? undefined : ch.atime === 'now' ? 'now' : timespecToUs(ch.atime),
            mtime: ch.mtime === undefined ? undefined : ch.mtime === 'now' ? 'now' : timespecToUs(ch.mtime),
            ctime: ch.ctime ? timespecToUs(ch.ctime) : undefined,
          },
          fh === undefined ? undefined : BigInt(fh),
        );
        reply.attr(attrOut(a));
      }),
    readlink: (req, ino, reply) => run(reply, () => reply.readlink(ops.readlink(caller(req), ino).toString('latin1'))),
    mknod: (req, parent, name, mode, rdev, reply) => run(reply, () => reply.entry(entry(ops.mknod(caller(req), parent, bytes(name), mode, rdev)))),
    mkdir: (req, parent, name, mode, reply) => run(reply, () => reply.entry(entry(ops.mkdir(caller(req), parent, bytes(name), mode)))),
    unlink: (req, parent, name, reply) => run(reply, () => (ops.unlink(caller(req), parent, bytes(name)), reply.ok())),
    rmdir: (req, parent, name, reply) => run(reply, () => (ops.rmdir(caller(req), parent, bytes(name)), reply.ok())),
    symlink: (req, parent, name, target, reply) => run(reply, () => reply.entry(entry(ops.symlink(caller(req), bytes(target), parent, bytes(name))))),
    rename: (req, parent, name, np, nn, flags, reply) =>
      run(reply, () => (ops.rename(caller(req), parent, bytes(name), np, bytes(nn), flags), reply.ok())),
    link: (req, ino, np, nn, reply) => run(reply, () => reply.entry(entry(ops.link(caller(req), ino, np, bytes(nn))))),
    open: (req, ino, flags, reply) => run(reply, () => reply.open({ fh: Number(ops.open(caller(req), ino, flags)), keepCache: true, noFlush: true })),
    read: (req, ino, size, off, fh, reply) => run(reply, () => reply.buf(ops.read(caller(req), ino, size, off, BigInt(fh)))),
    // Page-cache writes (wp) come from mmap too; only under the writeback cache does the kernel keep the times itself.
    write: (req, ino, data, off, fh, wp, reply) => run(reply, () => reply.write(ops.write(caller(req), ino, data, off, BigInt(fh), wp && !!so.writebackCache))),
    fallocate: (req, ino, mode, off, len, fh, reply) =>
      run(reply, () => (ops.fallocate(caller(req), ino, mode, off, len, fh === undefined ? undefined : BigInt(fh)), reply.ok())),
    release: (req, ino, fh, _flags, reply) => run(reply, () => (ops.release(caller(req), ino, BigInt(fh)), reply.ok())),
    fsync: (req, ino, ds, fh, reply) => run(reply, () => (ops.fsync(caller(req), ino, ds, BigInt(fh)), reply.ok())),
    opendir: (req, ino, _flags, reply) => run(reply, () => reply.open({ fh: Number(ops.opendir(caller(req), ino)) })),
    readdir: (req, ino, size, off, fh, reply) =>
      run(reply, () => {
        // A dirent takes 24 bytes plus its name: ask for a few more than can fit.
        const list = ops.readdir(caller(req), ino, off, Math.ceil(size / 32) + 2, BigInt(fh));
        reply.dirents(list.map((e) => ({ name: e.name.toString('latin1'), ino: e.ino, type: e.mode, next: e.next })));
      }),
    // Entries with their attributes: ls -l, find and tar need no lookup per name.
    readdirplus: (req, ino, size, off, fh, reply) =>
      run(reply, () => {
        const c = caller(req);
        const list = ops.readdir(c, ino, off, Math.ceil(size / 160) + 2, BigInt(fh));
        function* plus() {
          for (const e of list) {
            let a: Attr | null = null;
            try {
              a = ops.getattr(c, e.ino);
            } catch {
              a = null; // listed all the same, but not cached: a later lookup reports the error
            }
            const attr = a ? attrOut(a) : { ino: e.ino, mode: e.mode, nlink: 1, uid: 0, gid: 0, size: 0, atime: Z, mtime: Z, ctime: Z };
            yield { name: e.name.toString('latin1'), entry: { ino: a ? e.ino : 0n, attr }, next: e.next };
          }
        }
        reply.direntsPlus(plus());
      }),
    releasedir: (req, ino, fh, reply) => run(reply, () => (ops.releasedir(caller(req), ino, BigInt(fh)), reply.ok())),
    fsyncdir: (req, ino, ds, fh, reply) => run(reply, () => (ops.fsyncdir(caller(req), ino, ds, BigInt(fh)), reply.ok())),
    statfs: (req, _ino, reply) => run(reply, () => reply.statfs(ops.statfs(caller(req)))),
    access: (req, ino, mask, reply) => run(reply, () => (ops.access(caller(req), ino, mask), reply.ok())),
    create: (req, parent, name, mode, flags, reply) =>
      run(reply, () => {
        const r = ops.create(caller(req), parent, bytes(name), mode, flags);
        reply.create(entry(r.entry), { fh: Number(r.fh), keepCache: true, noFlush: true });
      }),
  };
  const session = new FuseSession(mountpoint, {
    options: so.options,
    debug: so.debug,
    log: so.log,
    nameEncoding: 'latin1',
    attrTimeout: so.attrTimeout ?? 1,
    entryTimeout: so.entryTimeout ?? 1,
    spinUs: so.spinUs,
    writebackCache: so.writebackCache ?? false,
    // Attributes come from the inode index anyway; walkers then need no LOOKUP per name.
    readdirplus: 'always',
    errorToErrno: (e) => errnoOf(e, so.log),
  }, ll);
  const onCommit = () => {
    for (const ino of provisional) session.invalidate(ino);
    provisional.clear();
  };
  ops.fs.commitListeners.add(onCommit);
  void session.closed.then(() => ops.fs.commitListeners.delete(onCommit));
  return session;
}
