// Low-level (inode based) FUSE sessions on libfuse3, through our own N-API
// binding (native-shim/fuse_ll.c, built as native-shim/build/Release/fuse_ll.node).
//
// Model: the kernel talks in inode numbers, not paths. Every handler gets the
// caller (`req`: uid, gid, pid, umask), its arguments, and a `reply` object
// last; it answers exactly once through `reply`, now or later (return a
// promise, or call reply from a callback). Requests run concurrently: the
// native side never waits for JS. The rules:
//   - A handler that throws, or whose promise rejects, before answering is
//     answered EIO (or what `errorToErrno` says) and the error is logged.
//   - A handler whose promise resolves without having answered is answered
//     EIO and logged (answer before resolving).
//   - An operation missing from `ops` is not registered with libfuse, which
//     answers ENOSYS (the kernel then stops asking, e.g. for getxattr it
//     returns EOPNOTSUPP to callers) or applies its documented default:
//     open/opendir succeed with fh 0, release/releasedir/forget succeed,
//     statfs reports an empty filesystem. init/destroy are notifications.
//   - forget/forgetMulti take no reply (answered natively before JS runs).
//   - Reply methods return 0, or -errno if the kernel refused the answer (the
//     request was interrupted). For entry/create/direntsPlus that means the
//     kernel did not take the lookup reference.
//
// Numbers: inode numbers (`Ino`) and readdir offsets are bigint (full 64 bit;
// the root directory is inode 1n). File handles (`fh`) are plain numbers: JS
// chooses them, and any safe integer fits the kernel's 64-bit field. File
// offsets, sizes and lengths are numbers (exact up to 2^53 bytes = 8 PiB).
// Attribute values that may be 64-bit (ino, size, blocks, generation) accept
// number or bigint. Times are { sec, nsec } with nanoseconds.
//
// Names (lookup, create, readdir, symlink targets, xattr names) are strings
// decoded as UTF-8, or as latin1 with `nameEncoding: 'latin1'` for a lossless
// byte-per-char view of names that are not UTF-8 (Buffer.from(name, 'latin1')).
import * as path from 'node:path';
import { constants as osConstants } from 'node:os';
import { performance } from 'node:perf_hooks';

export type Ino = bigint;
/** A positive errno number, or its name ('ENOENT'). */
export type Errno = number | string;
export type Handled = void | Promise<void>;

export interface Timespec {
  sec: number;
  /** 0 ≤ nsec < 1e9 */
  nsec: number;
}

/** Who is asking (from fuse_req_ctx). */
export interface Request {
  readonly uid: number;
  readonly gid: number;
  /** Thread id of the caller (0 for requests the kernel makes on its own). */
  readonly pid: number;
  /** Caller's umask (mknod/mkdir/create). The kernel has already applied it to `mode`. */
  readonly umask: number;
  /** Supplementary groups of the caller (read from /proc; call before answering). */
  groups(): number[];
}

export interface Attr {
  ino: Ino | number;
  /** st_mode: file type and permission bits */
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  size: number | bigint;
  atime: Timespec;
  mtime: Timespec;
  ctime: Timespec;
  rdev?: number;
  /** 512-byte blocks; default ceil(size / 512) */
  blocks?: number | bigint;
  /** default 4096 */
  blksize?: number;
}

export interface Entry {
  /** The kernel's handle for the inode (and st_ino unless attr.ino differs). */
  ino: Ino | number;
  generation?: number | bigint;
  attr: Attr;
  /** seconds; defaults from the session options */
  attrTimeout?: number;
  entryTimeout?: number;
}

export interface OpenFlags {
  /** default 0 */
  fh?: number;
  directIo?: boolean;
  keepCache?: boolean;
  nonSeekable?: boolean;
  /** opendir: let the kernel cache the listing */
  cacheReaddir?: boolean;
  /** open: no flush on close (libfuse ≥ 3.11) */
  noFlush?: boolean;
}

export interface DirEntry {
  name: string;
  ino: Ino | number;
  /** File type: the S_IFMT bits of st_mode (fs.constants.S_IFDIR...); a full mode is fine. */
  type: number;
  /** Opaque cookie: the offset the kernel passes back to continue after this entry. */
  next: bigint | number;
}

export interface DirEntryPlus {
  name: string;
  /** The entry also counts as a lookup (except '.' and '..'); ino 0 = no entry cached. */
  entry: Entry;
  next: bigint | number;
}

export interface StatFs {
  bsize: number;
  frsize?: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  favail?: number;
  fsid?: number;
  /** default 255 */
  namemax?: number;
  flag?: number;
}

/** What setattr changes; only the fields present are to be changed. */
export interface SetAttr {
  mode?: number;
  uid?: number;
  gid?: number;
  size?: number;
  /** 'now': set to the current time (utimensat UTIME_NOW / a plain touch) */
  atime?: Timespec | 'now';
  mtime?: Timespec | 'now';
  /** only sent with the writeback cache */
  ctime?: Timespec;
  /** The raw FUSE_SET_ATTR_* bits. */
  toSet: number;
}

export interface ConnInfo {
  protoMajor: number;
  protoMinor: number;
  maxWrite: number;
  /** 0 = no limit beyond max_pages (set with -o max_read=) */
  maxRead: number;
  maxReadahead: number;
  maxBackground: number;
  congestionThreshold: number;
  timeGran: number;
  /** FUSE_CAP_* bits the kernel offers / the session uses; names in `FUSE_CAP` */
  capable: number;
  want: number;
  writebackCache: boolean;
  asyncRead: boolean;
  atomicOTrunc: boolean;
  handleKillpriv: boolean;
  readdirplus: boolean;
  parallelDirops: boolean;
}

export interface EndInfo {
  /** false when the session failed (mount refused, init failed, device error) */
  ok: boolean;
  /** 'unmounted', 'aborted', or libfuse's error message */
  message: string;
}

// ---- replies ----

export interface ReplyErr {
  /** true once answered (by any method) */
  readonly answered: boolean;
  /** Answer an error; err(0) is success for status-only operations. */
  err(e: Errno): number;
}
export interface ReplyOk extends ReplyErr {
  ok(): number;
}
export interface ReplyEntry extends ReplyErr {
  entry(e: Entry): number;
  /** A negative entry the kernel may cache for `entryTimeout` seconds (ENOENT otherwise). */
  noEntry(entryTimeout?: number): number;
}
export interface ReplyCreate extends ReplyErr {
  create(e: Entry, fi?: OpenFlags): number;
}
export interface ReplyAttr extends ReplyErr {
  attr(a: Attr, attrTimeout?: number): number;
}
export interface ReplyReadlink extends ReplyErr {
  readlink(target: string): number;
}
export interface ReplyOpen extends ReplyErr {
  open(fi?: OpenFlags): number;
}
export interface ReplyWrite extends ReplyErr {
  /** bytes written */
  write(count: number): number;
}
export interface ReplyBuf extends ReplyErr {
  /** At most the requested size; fewer bytes than asked means end of file. */
  buf(data: Uint8Array): number;
}
export interface ReplyDir extends ReplyErr {
  /**
   * Send as many entries as fit in the kernel's buffer, in order; returns how
   * many were sent (an empty reply means the end of the directory). Give the
   * entries from the requested offset on; an iterable is consumed lazily.
   */
  dirents(entries: Iterable<DirEntry>): number;
}
export interface ReplyDirPlus extends ReplyErr {
  /** Like dirents; each sent entry except '.'/'..' with ino ≠ 0 counts as a lookup. */
  direntsPlus(entries: Iterable<DirEntryPlus>): number;
}
export interface ReplyStatfs extends ReplyErr {
  statfs(s: StatFs): number;
}
export interface ReplyXattr extends ReplyErr {
  /** size = 0 probes: answer the size the value/list needs */
  xattrSize(size: number): number;
  /** the value, or the NUL-separated name list */
  buf(data: Uint8Array): number;
}

// ---- operations ----

export interface LowLevelOps {
  /** The connection is negotiated (called before mount() resolves). */
  init?(conn: ConnInfo): void;
  /** The session ends (FUSE_DESTROY, or the loop stopped); called once. */
  destroy?(): void;
  lookup?(req: Request, parent: Ino, name: string, reply: ReplyEntry): Handled;
  forget?(req: Request, ino: Ino, nlookup: number): void;
  forgetMulti?(req: Request, items: { ino: Ino; nlookup: number }[]): void;
  /** fh is set when the kernel asks about an open file (fstat). */
  getattr?(req: Request, ino: Ino, fh: number | undefined, reply: ReplyAttr): Handled;
  setattr?(req: Request, ino: Ino, changes: SetAttr, fh: number | undefined, reply: ReplyAttr): Handled;
  readlink?(req: Request, ino: Ino, reply: ReplyReadlink): Handled;
  mknod?(req: Request, parent: Ino, name: string, mode: number, rdev: number, reply: ReplyEntry): Handled;
  mkdir?(req: Request, parent: Ino, name: string, mode: number, reply: ReplyEntry): Handled;
  unlink?(req: Request, parent: Ino, name: string, reply: ReplyOk): Handled;
  rmdir?(req: Request, parent: Ino, name: string, reply: ReplyOk): Handled;
  symlink?(req: Request, parent: Ino, name: string, target: string, reply: ReplyEntry): Handled;
  /** flags: RENAME_NOREPLACE (1) / RENAME_EXCHANGE (2), see RENAME */
  rename?(req: Request, parent: Ino, name: string, newParent: Ino, newName: string, flags: number, reply: ReplyOk): Handled;
  link?(req: Request, ino: Ino, newParent: Ino, newName: string, reply: ReplyEntry): Handled;
  /** flags: open(2) flags */
  open?(req: Request, ino: Ino, flags: number, reply: ReplyOpen): Handled;
  read?(req: Request, ino: Ino, size: number, offset: number, fh: number, reply: ReplyBuf): Handled;
  /** data is a fresh Buffer the handler may keep. writepage: from the writeback cache (caller ids invalid). */
  write?(req: Request, ino: Ino, data: Buffer, offset: number, fh: number, writepage: boolean, reply: ReplyWrite): Handled;
  flush?(req: Request, ino: Ino, fh: number, lockOwner: bigint, reply: ReplyOk): Handled;
  release?(req: Request, ino: Ino, fh: number, flags: number, reply: ReplyOk): Handled;
  fsync?(req: Request, ino: Ino, datasync: boolean, fh: number, reply: ReplyOk): Handled;
  opendir?(req: Request, ino: Ino, flags: number, reply: ReplyOpen): Handled;
  /** offset: 0n, or the `next` of the last entry the kernel received */
  readdir?(req: Request, ino: Ino, size: number, offset: bigint, fh: number, reply: ReplyDir): Handled;
  readdirplus?(req: Request, ino: Ino, size: number, offset: bigint, fh: number, reply: ReplyDirPlus): Handled;
  releasedir?(req: Request, ino: Ino, fh: number, reply: ReplyOk): Handled;
  fsyncdir?(req: Request, ino: Ino, datasync: boolean, fh: number, reply: ReplyOk): Handled;
  statfs?(req: Request, ino: Ino, reply: ReplyStatfs): Handled;
  /** mask: R_OK | W_OK | X_OK | F_OK (not sent with -o default_permissions) */
  access?(req: Request, ino: Ino, mask: number, reply: ReplyOk): Handled;
  /** flags: open(2) flags */
  create?(req: Request, parent: Ino, name: string, mode: number, flags: number, reply: ReplyCreate): Handled;
  fallocate?(req: Request, ino: Ino, mode: number, offset: number, length: number, fh: number, reply: ReplyOk): Handled;
  getxattr?(req: Request, ino: Ino, name: string, size: number, reply: ReplyXattr): Handled;
  listxattr?(req: Request, ino: Ino, size: number, reply: ReplyXattr): Handled;
  setxattr?(req: Request, ino: Ino, name: string, value: Buffer, flags: number, reply: ReplyOk): Handled;
  removexattr?(req: Request, ino: Ino, name: string, reply: ReplyOk): Handled;
}

export type OpName = Exclude<keyof LowLevelOps, 'init' | 'destroy'>;

export interface FuseSessionOptions {
  /**
   * -o options, each passed to libfuse as given: mount options (allow_other,
   * default_permissions, auto_unmount, ro, fsname=, subtype=, max_read=, ...)
   * and connection options (writeback_cache, max_write=, max_background=,
   * async_read/sync_read, time_gran=, ...; these override the fields below).
   * Unknown options make mount() fail. Escape a comma inside a value as '\,'.
   */
  options?: string[];
  /** libfuse's request trace on stderr */
  debug?: boolean;
  /** bytes per write request; default and ceiling 1 MiB (libfuse3's buffer) */
  maxWrite?: number;
  /** FUSE_CAP_WRITEBACK_CACHE; default false */
  writebackCache?: boolean;
  /** FUSE_CAP_ATOMIC_O_TRUNC; default false: open(O_TRUNC) arrives as setattr(size 0) */
  atomicOTrunc?: boolean;
  /** FUSE_CAP_HANDLE_KILLPRIV; default false: the kernel clears suid/sgid itself */
  handleKillpriv?: boolean;
  /** FUSE_CAP_ASYNC_READ; default true */
  asyncRead?: boolean;
  /**
   * microseconds the request loop keeps reading the device after a request
   * before it sleeps (0: never); default 50. Back-to-back requests then
   * find the daemon awake instead of paying a cross-CPU wakeup each.
   */
  spinUs?: number;
  /**
   * With a readdirplus handler: 'auto' (default) lets the kernel ask for
   * attributes only while it sees lookups after readdir; 'always' returns
   * them with every batch, so walkers (ls -l, find, tar, rm -r) find every
   * entry cached and send no LOOKUP per name.
   */
  readdirplus?: 'auto' | 'always';
  /** seconds the kernel caches attributes / names when a reply does not say; default 1 */
  attrTimeout?: number;
  entryTimeout?: number;
  /** default 'utf8' */
  nameEncoding?: 'utf8' | 'latin1';
  /** default: console.error */
  log?: (msg: string) => void;
  /** errno for a handler that threw or rejected before answering; default EIO */
  errorToErrno?: (err: unknown, op: OpName) => Errno;
}

// ---- constants ----

/**
 * Attribute and entry timeout (seconds) for a filesystem that owns its
 * storage exclusively: every change passes through the kernel, which
 * updates or drops what it cached itself, so the kernel may keep attributes
 * and names (also "no such name") as long as it likes, as passthrough
 * filesystems with cache=always do. Most requests then never reach the
 * daemon. Anything changed behind the kernel's back must be invalidated
 * (FuseSession.invalidate).
 */
export const EXCLUSIVE_CACHE_TIMEOUT = 86400;

/** setattr `toSet` bits */
export const SETATTR = {
  MODE: 1 << 0,
  UID: 1 << 1,
  GID: 1 << 2,
  SIZE: 1 << 3,
  ATIME: 1 << 4,
  MTIME: 1 << 5,
  ATIME_NOW: 1 << 7,
  MTIME_NOW: 1 << 8,
  FORCE: 1 << 9,
  CTIME: 1 << 10,
  KILL_SUID: 1 << 11,
  KILL_SGID: 1 << 12,
} as const;

/** rename flags */
export const RENAME = { NOREPLACE: 1, EXCHANGE: 2, WHITEOUT: 4 } as const;

/** Operation codes shared with fuse_ll.c (checked against the binding at load). */
const OP = {
  lookup: 1, forget: 2, getattr: 3, setattr: 4, readlink: 5, mknod: 6, mkdir: 7, unlink: 8,
  rmdir: 9, symlink: 10, rename: 11, link: 12, open: 13, read: 14, write: 15, flush: 16,
  release: 17, fsync: 18, opendir: 19, readdir: 20, releasedir: 21, fsyncdir: 22, statfs: 23,
  setxattr: 24, getxattr: 25, listxattr: 26, removexattr: 27, access: 28, create: 29,
  forgetMulti: 30, fallocate: 31, readdirplus: 32,
} as const satisfies Record<OpName, number>;
const EV_INIT = 100;
const EV_DESTROY = 101;
const EV_ENDED = 102;
const OP_NAMES: OpName[] = [];
for (const [k, v] of Object.entries(OP)) OP_NAMES[v] = k as OpName;

// ---- the native module ----

declare const reqBrand: unique symbol;
type NativeReq = { readonly [reqBrand]: true };
declare const sessBrand: unique symbol;
type NativeSession = { readonly [sessBrand]: true };
type Dispatch = (op: number, h: NativeReq | undefined, ...args: unknown[]) => void;

interface NativeFuseLL {
  create(
    mountpoint: string,
    args: string[],
    config: { maxWrite: number; writebackCache: boolean; atomicOTrunc: boolean; handleKillpriv: boolean; asyncRead: boolean; latin1: boolean; spinUs: number; readdirplusAuto: boolean },
    ops: number[],
    dispatch: Dispatch,
  ): NativeSession;
  unmount(s: NativeSession): void;
  abort(s: NativeSession): void;
  invalInode(s: NativeSession, ino: bigint, off: number, len: number): number;
  replyErr(r: NativeReq, errno: number): number;
  replyEntry(r: NativeReq, entry: Buffer): number;
  replyCreate(r: NativeReq, entry: Buffer, fh: number, flags: number): number;
  replyAttr(r: NativeReq, attr: Buffer, timeout: number): number;
  replyOpen(r: NativeReq, fh: number, flags: number): number;
  replyWrite(r: NativeReq, count: number): number;
  replyBuf(r: NativeReq, data: Uint8Array): number;
  replyXattrSize(r: NativeReq, size: number): number;
  replyStatfs(r: NativeReq, values: Float64Array): number;
  replyDirents(r: NativeReq, packed: Buffer, count: number): number;
  groups(r: NativeReq): number[];
  ops: Record<string, number>;
  caps: Record<string, number>;
  attrSize: number;
  entrySize: number;
  direntBase: number;
  direntPlusBase: number;
  libfuseVersion: string;
  abi: number;
}

/** Interface version shared with fuse_ll.c (FUSE_LL_ABI). */
const FUSE_LL_ABI = 2;

let binding: NativeFuseLL | null = null;
let bindingError: string | null = null;

function load(): NativeFuseLL | null {
  if (binding || bindingError) return binding;
  const candidates = [
    path.join(__dirname, '..', '..', '..', 'native-shim', 'build', 'Release', 'fuse_ll.node'), // dist/src/fuse
    path.join(__dirname, '..', '..', 'native-shim', 'build', 'Release', 'fuse_ll.node'), // src/fuse
  ];
  const errors: string[] = [];
  for (const c of candidates) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const b = require(c) as NativeFuseLL;
      if (b.abi !== FUSE_LL_ABI) throw new Error(`fuse_ll.node has ABI ${b.abi}, lowlevel.ts needs ${FUSE_LL_ABI}; rebuild it`);
      for (const [name, code] of Object.entries(OP))
        if (b.ops[name] !== code) throw new Error(`fuse_ll.node does not match lowlevel.ts (op ${name}); rebuild it`);
      if (b.attrSize !== ATTR_SIZE || b.entrySize !== ENTRY_SIZE) throw new Error('fuse_ll.node layout mismatch; rebuild it');
      binding = b;
      return b;
    } catch (e) {
      const msg = (e as Error).message;
      if (!(e as NodeJS.ErrnoException).code?.startsWith('MODULE_NOT_FOUND')) errors.push(`${c}: ${msg}`);
    }
  }
  bindingError =
    'the libfuse3 binding (native-shim/build/Release/fuse_ll.node) is ' +
    (errors.length ? `not loadable: ${errors.join('; ')}` : 'not built') +
    '. Build it with `node native-shim/build.js` (needs libfuse3-dev, pkg-config and a C compiler; `bash scripts/ensure-deps.sh` installs them).';
  return null;
}

/** Why low-level sessions cannot be used here, or null if they can. */
export function fuseLowLevelUnavailable(): string | null {
  return load() ? null : bindingError;
}

function native(): NativeFuseLL {
  const b = load();
  if (!b) throw new Error(bindingError!);
  return b;
}

/** FUSE_CAP_* bits by name (ASYNC_READ, WRITEBACK_CACHE, ...). */
export function fuseCaps(): Readonly<Record<string, number>> {
  return native().caps;
}

/** The libfuse3 version the binding runs against. */
export function libfuseVersion(): string {
  return native().libfuseVersion;
}

// ---- packing (layouts documented in fuse_ll.c) ----

const ATTR_SIZE = 96;
const ENTRY_SIZE = 32 + ATTR_SIZE;
const TWO32 = 4294967296;

function put64(b: Buffer, o: number, v: number | bigint): void {
  if (typeof v === 'bigint') {
    b.writeBigUInt64LE(BigInt.asUintN(64, v), o);
    return;
  }
  const n = Math.trunc(v);
  const hi = Math.floor(n / TWO32);
  b.writeUInt32LE(n - hi * TWO32, o);
  b.writeInt32LE(hi | 0, o + 4);
}

function nsecOf(t: Timespec, what: string): number {
  const ns = t.nsec;
  if (!Number.isInteger(ns) || ns < 0 || ns >= 1e9) throw new RangeError(`${what}.nsec must be an integer in [0, 1e9)`);
  return ns;
}

function packAttr(b: Buffer, o: number, a: Attr): void {
  put64(b, o, a.ino);
  put64(b, o + 8, a.size);
  const blocks = a.blocks ?? (typeof a.size === 'bigint' ? (a.size + 511n) / 512n : Math.ceil(a.size / 512));
  put64(b, o + 16, blocks);
  put64(b, o + 24, a.atime.sec);
  put64(b, o + 32, a.mtime.sec);
  put64(b, o + 40, a.ctime.sec);
  b.writeUInt32LE(nsecOf(a.atime, 'atime'), o + 48);
  b.writeUInt32LE(nsecOf(a.mtime, 'mtime'), o + 52);
  b.writeUInt32LE(nsecOf(a.ctime, 'ctime'), o + 56);
  b.writeUInt32LE(a.mode >>> 0, o + 60);
  b.writeUInt32LE(a.nlink >>> 0, o + 64);
  b.writeUInt32LE(a.uid >>> 0, o + 68);
  b.writeUInt32LE(a.gid >>> 0, o + 72);
  b.writeUInt32LE((a.blksize ?? 4096) >>> 0, o + 76);
  put64(b, o + 80, a.rdev ?? 0);
  put64(b, o + 88, 0);
}

function packEntry(b: Buffer, o: number, e: Entry, attrTimeout: number, entryTimeout: number): void {
  put64(b, o, e.ino);
  put64(b, o + 8, e.generation ?? 0);
  b.writeDoubleLE(e.attrTimeout ?? attrTimeout, o + 16);
  b.writeDoubleLE(e.entryTimeout ?? entryTimeout, o + 24);
  packAttr(b, o + 32, e.attr);
}

function openFlags(fi: OpenFlags | undefined): number {
  if (!fi) return 0;
  return (
    (fi.directIo ? 1 : 0) | (fi.keepCache ? 2 : 0) | (fi.nonSeekable ? 4 : 0) | (fi.cacheReaddir ? 8 : 0) | (fi.noFlush ? 16 : 0)
  );
}

function fhOf(fi: OpenFlags | undefined): number {
  const fh = fi?.fh ?? 0;
  if (!Number.isSafeInteger(fh) || fh < 0) throw new RangeError('fh must be a non-negative safe integer');
  return fh;
}

function readTimespec(b: Buffer, secAt: number, nsecAt: number): Timespec {
  return { sec: Number(b.readBigInt64LE(secAt)), nsec: b.readUInt32LE(nsecAt) };
}

function decodeSetattr(toSet: number, b: Buffer): SetAttr {
  const s: SetAttr = { toSet };
  if (toSet & SETATTR.MODE) s.mode = b.readUInt32LE(60);
  if (toSet & SETATTR.UID) s.uid = b.readUInt32LE(68);
  if (toSet & SETATTR.GID) s.gid = b.readUInt32LE(72);
  if (toSet & SETATTR.SIZE) s.size = Number(b.readBigUInt64LE(8));
  if (toSet & SETATTR.ATIME_NOW) s.atime = 'now';
  else if (toSet & SETATTR.ATIME) s.atime = readTimespec(b, 24, 48);
  if (toSet & SETATTR.MTIME_NOW) s.mtime = 'now';
  else if (toSet & SETATTR.MTIME) s.mtime = readTimespec(b, 32, 52);
  if (toSet & SETATTR.CTIME) s.ctime = readTimespec(b, 40, 56);
  return s;
}

const align8 = (n: number): number => (n + 7) & ~7;
let scratch = Buffer.alloc(64 * 1024);
function scratchFor(n: number): Buffer {
  if (scratch.length < n) scratch = Buffer.alloc(Math.max(n, scratch.length * 2));
  return scratch;
}
const entryBuf = Buffer.alloc(ENTRY_SIZE);
const attrBuf = Buffer.alloc(ATTR_SIZE);
const statfsBuf = new Float64Array(11);

const ERRNO = osConstants.errno as Record<string, number>;
const EIO = ERRNO.EIO;

/** Current wall-clock time with sub-millisecond precision. */
export function timespecNow(): Timespec {
  const ms = performance.timeOrigin + performance.now();
  const sec = Math.floor(ms / 1000);
  return { sec, nsec: Math.min(999999999, Math.max(0, Math.round((ms - sec * 1000) * 1e6))) };
}

// ---- one request: the Request and every reply kind ----

class Call
  implements Request, ReplyOk, ReplyEntry, ReplyCreate, ReplyAttr, ReplyReadlink, ReplyOpen, ReplyWrite, ReplyBuf, ReplyDir, ReplyDirPlus, ReplyStatfs, ReplyXattr
{
  answered = false;
  /** readdir buffer size */
  size = 0;

  constructor(
    private readonly s: SessionCore,
    private readonly h: NativeReq,
    readonly op: OpName,
    readonly uid: number,
    readonly gid: number,
    readonly pid: number,
    readonly umask: number,
  ) {}

  private done(rc: number): number {
    this.answered = true;
    return rc;
  }

  groups(): number[] {
    return this.s.n.groups(this.h);
  }
  err(e: Errno): number {
    return this.done(this.s.n.replyErr(this.h, this.s.errnoOf(e)));
  }
  ok(): number {
    return this.err(0);
  }
  entry(e: Entry): number {
    packEntry(entryBuf, 0, e, this.s.attrTimeout, this.s.entryTimeout);
    return this.done(this.s.n.replyEntry(this.h, entryBuf));
  }
  noEntry(entryTimeout = this.s.entryTimeout): number {
    entryBuf.fill(0);
    entryBuf.writeDoubleLE(entryTimeout, 24);
    return this.done(this.s.n.replyEntry(this.h, entryBuf));
  }
  create(e: Entry, fi?: OpenFlags): number {
    packEntry(entryBuf, 0, e, this.s.attrTimeout, this.s.entryTimeout);
    return this.done(this.s.n.replyCreate(this.h, entryBuf, fhOf(fi), openFlags(fi)));
  }
  attr(a: Attr, attrTimeout = this.s.attrTimeout): number {
    packAttr(attrBuf, 0, a);
    return this.done(this.s.n.replyAttr(this.h, attrBuf, attrTimeout));
  }
  readlink(target: string): number {
    return this.done(this.s.n.replyBuf(this.h, Buffer.from(target, this.s.enc)));
  }
  open(fi?: OpenFlags): number {
    return this.done(this.s.n.replyOpen(this.h, fhOf(fi), openFlags(fi)));
  }
  write(count: number): number {
    return this.done(this.s.n.replyWrite(this.h, count));
  }
  buf(data: Uint8Array): number {
    return this.done(this.s.n.replyBuf(this.h, data));
  }
  xattrSize(size: number): number {
    return this.done(this.s.n.replyXattrSize(this.h, size));
  }
  statfs(s: StatFs): number {
    const v = statfsBuf;
    v[0] = s.bsize;
    v[1] = s.frsize ?? s.bsize;
    v[2] = s.blocks;
    v[3] = s.bfree;
    v[4] = s.bavail;
    v[5] = s.files;
    v[6] = s.ffree;
    v[7] = s.favail ?? s.ffree;
    v[8] = s.fsid ?? 0;
    v[9] = s.namemax ?? 255;
    v[10] = s.flag ?? 0;
    return this.done(this.s.n.replyStatfs(this.h, v));
  }
  dirents(entries: Iterable<DirEntry>): number {
    const base = this.s.n.direntBase;
    let b = scratchFor(this.size + 4096);
    let used = 0;
    let pos = 0;
    let count = 0;
    for (const e of entries) {
      const nl = Buffer.byteLength(e.name, this.s.enc);
      const need = align8(base + nl);
      if (used + need > this.size) break;
      b = scratchFor(pos + 24 + nl + 8);
      put64(b, pos, e.ino);
      put64(b, pos + 8, e.next);
      b.writeUInt32LE(e.type & 0o170000, pos + 16);
      b.writeUInt32LE(nl, pos + 20);
      b.write(e.name, pos + 24, nl, this.s.enc);
      pos += align8(24 + nl);
      used += need;
      count++;
    }
    const rc = this.s.n.replyDirents(this.h, b, count);
    this.answered = true;
    return rc;
  }
  direntsPlus(entries: Iterable<DirEntryPlus>): number {
    const base = this.s.n.direntPlusBase;
    const hdr = 16 + ENTRY_SIZE;
    let b = scratchFor(this.size + 4096);
    let used = 0;
    let pos = 0;
    let count = 0;
    for (const e of entries) {
      const nl = Buffer.byteLength(e.name, this.s.enc);
      const need = align8(base + nl);
      if (used + need > this.size) break;
      b = scratchFor(pos + hdr + nl + 8);
      put64(b, pos, e.next);
      b.writeUInt32LE(nl, pos + 8);
      b.writeUInt32LE(0, pos + 12);
      packEntry(b, pos + 16, e.entry, this.s.attrTimeout, this.s.entryTimeout);
      b.write(e.name, pos + hdr, nl, this.s.enc);
      pos += align8(hdr + nl);
      used += need;
      count++;
    }
    const rc = this.s.n.replyDirents(this.h, b, count);
    this.answered = true;
    return rc;
  }
}

/** What a Call needs from its session. */
interface SessionCore {
  readonly n: NativeFuseLL;
  readonly attrTimeout: number;
  readonly entryTimeout: number;
  readonly enc: 'utf8' | 'latin1';
  errnoOf(e: Errno): number;
}

const isThenable = (v: unknown): v is PromiseLike<unknown> =>
  typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function';

// ---- the session ----

export class FuseSession implements SessionCore {
  readonly mountpoint: string;
  /** Negotiated connection parameters; set once mounted. */
  conn: ConnInfo | null = null;
  /** Resolves when the session has ended, however it ended (never rejects). */
  readonly closed: Promise<EndInfo>;

  readonly n: NativeFuseLL;
  readonly attrTimeout: number;
  readonly entryTimeout: number;
  readonly enc: 'utf8' | 'latin1';

  private handle: NativeSession | null = null;
  private state: 'new' | 'mounting' | 'mounted' | 'ended' = 'new';
  private mountWaiters: { resolve: () => void; reject: (e: Error) => void } | null = null;
  private closedResolve!: (e: EndInfo) => void;
  private destroyed = false;
  private readonly log: (msg: string) => void;

  constructor(
    mountpoint: string,
    private readonly opts: FuseSessionOptions,
    private readonly ops: LowLevelOps,
  ) {
    this.n = native();
    this.mountpoint = path.resolve(mountpoint);
    this.attrTimeout = opts.attrTimeout ?? 1;
    this.entryTimeout = opts.entryTimeout ?? 1;
    this.enc = opts.nameEncoding ?? 'utf8';
    this.log = opts.log ?? ((m) => console.error(m));
    this.closed = new Promise((r) => (this.closedResolve = r));
  }

  get mounted(): boolean {
    return this.state === 'mounted';
  }

  /** Mount and start serving; resolves once the kernel has negotiated the connection. */
  mount(): Promise<void> {
    if (this.state !== 'new') return Promise.reject(new Error(`FuseSession: mount() called twice`));
    const args = ['fuse_ll'];
    if (this.opts.debug) args.push('-d');
    for (const o of this.opts.options ?? []) args.push('-o', o);
    const registered = OP_NAMES.filter((name) => name && typeof this.ops[name] === 'function').map((name) => OP[name]);
    this.state = 'mounting';
    return new Promise<void>((resolve, reject) => {
      this.mountWaiters = { resolve, reject };
      try {
        this.handle = this.n.create(
          this.mountpoint,
          args,
          {
            maxWrite: this.opts.maxWrite ?? 1 << 20,
            writebackCache: this.opts.writebackCache ?? false,
            atomicOTrunc: this.opts.atomicOTrunc ?? false,
            handleKillpriv: this.opts.handleKillpriv ?? false,
            asyncRead: this.opts.asyncRead ?? true,
            latin1: this.enc === 'latin1',
            spinUs: this.opts.spinUs ?? 50,
            readdirplusAuto: this.opts.readdirplus !== 'always',
          },
          registered,
          this.dispatch,
        );
      } catch (e) {
        this.state = 'ended';
        this.mountWaiters = null;
        this.closedResolve({ ok: false, message: (e as Error).message });
        reject(e);
      }
    });
  }

  /**
   * Unmount (lazily, like `fusermount -uz`) and wait for the session to end.
   * Requests already queued are still served. If the kernel keeps the
   * connection (files held open) for `timeoutMs` (default 5000; 0 = wait
   * forever), the session is aborted: pending and later requests fail with
   * ENOTCONN for their callers.
   */
  async unmount(opts: { timeoutMs?: number } = {}): Promise<void> {
    if (this.state === 'new') {
      this.state = 'ended';
      this.closedResolve({ ok: true, message: 'never mounted' });
      return;
    }
    if (this.state === 'ended' || !this.handle) {
      await this.closed;
      return;
    }
    this.n.unmount(this.handle);
    const timeoutMs = opts.timeoutMs ?? 5000;
    let timer: NodeJS.Timeout | undefined;
    if (timeoutMs > 0) {
      const h = this.handle;
      timer = setTimeout(() => {
        this.log(`fuse: ${this.mountpoint} still busy after ${timeoutMs} ms; aborting the connection`);
        this.n.abort(h);
      }, timeoutMs);
    }
    try {
      await this.closed;
    } finally {
      if (timer) clearTimeout(timer);
    }
  }

  /**
   * Tell the kernel that what it cached of `ino` changed without a request:
   * its attributes (no range), or its attributes and the cached file data
   * in [off, off + len) (len 0: to the end). Returns 0, or a negative errno
   * (-ENOENT: the kernel had nothing cached; -ENOTCONN: not serving).
   * Never call it for an inode whose request is being answered by a handler
   * that the kernel waits on with the inode locked (data ranges only).
   */
  invalidate(ino: Ino, range?: { off: number; len: number }): number {
    if (!this.handle || this.state !== 'mounted') return -107;
    return this.n.invalInode(this.handle, ino, range ? range.off : -1, range ? range.len : 0);
  }

  /** Stop serving at once: pending requests fail, the mount is detached. */
  abort(): void {
    if (this.handle && this.state !== 'ended') this.n.abort(this.handle);
  }

  errnoOf(e: Errno): number {
    if (typeof e === 'number' && Number.isInteger(e)) return Math.abs(e);
    if (typeof e === 'string' && ERRNO[e] !== undefined) return ERRNO[e];
    this.log(`fuse: not an errno: ${String(e)}; answering EIO`);
    return EIO;
  }

  private fail(call: Call, err: unknown): void {
    let errno = EIO;
    if (this.opts.errorToErrno) {
      try {
        errno = this.errnoOf(this.opts.errorToErrno(err, call.op));
      } catch (e) {
        this.log(`fuse: errorToErrno threw: ${(e as Error)?.stack ?? String(e)}`);
      }
    }
    if (call.answered) {
      this.log(`fuse: ${call.op} handler failed after answering: ${(err as Error)?.stack ?? String(err)}`);
      return;
    }
    if (errno === EIO) this.log(`fuse: ${call.op} handler failed; answering EIO: ${(err as Error)?.stack ?? String(err)}`);
    try {
      call.err(errno);
    } catch (e) {
      this.log(`fuse: could not answer ${call.op}: ${(e as Error).message}`);
    }
  }

  private event(op: number, info: { ok: boolean; message: string } & Record<string, number>): void {
    if (op === EV_INIT) {
      const caps = this.n.caps;
      const want = info.want;
      this.conn = {
        protoMajor: info.protoMajor,
        protoMinor: info.protoMinor,
        maxWrite: info.maxWrite,
        maxRead: info.maxRead,
        maxReadahead: info.maxReadahead,
        maxBackground: info.maxBackground,
        congestionThreshold: info.congestionThreshold,
        timeGran: info.timeGran,
        capable: info.capable,
        want,
        writebackCache: (want & caps.WRITEBACK_CACHE) !== 0,
        asyncRead: (want & caps.ASYNC_READ) !== 0,
        atomicOTrunc: (want & caps.ATOMIC_O_TRUNC) !== 0,
        handleKillpriv: (want & caps.HANDLE_KILLPRIV) !== 0,
        readdirplus: (want & caps.READDIRPLUS) !== 0,
        parallelDirops: (want & caps.PARALLEL_DIROPS) !== 0,
      };
      this.state = 'mounted';
      try {
        this.ops.init?.(this.conn);
      } catch (e) {
        this.log(`fuse: init handler threw: ${(e as Error)?.stack ?? String(e)}`);
      }
      const w = this.mountWaiters;
      this.mountWaiters = null;
      w?.resolve();
    } else if (op === EV_DESTROY) {
      this.callDestroy();
    } else if (op === EV_ENDED) {
      const wasMounted = this.conn !== null;
      this.state = 'ended';
      if (wasMounted) this.callDestroy();
      const end: EndInfo = { ok: info.ok, message: info.message };
      const w = this.mountWaiters;
      this.mountWaiters = null;
      w?.reject(new Error(`FUSE mount of ${this.mountpoint} failed: ${info.message}`));
      this.closedResolve(end);
    }
  }

  private callDestroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    try {
      this.ops.destroy?.();
    } catch (e) {
      this.log(`fuse: destroy handler threw: ${(e as Error)?.stack ?? String(e)}`);
    }
  }

  // Called by the binding on the JS thread for every request and event.
  private readonly dispatch: Dispatch = (op, h, uid, gid, pid, umask, ino, a, b, c, d) => {
    if (op >= EV_INIT) {
      this.event(op, uid as { ok: boolean; message: string } & Record<string, number>);
      return;
    }
    const name = OP_NAMES[op];
    const ops = this.ops;
    const i = ino as Ino;
    if (op === OP.forget || op === OP.forgetMulti) {
      const req = new Call(this, h as NativeReq, name, uid as number, gid as number, pid as number, umask as number);
      req.answered = true;
      try {
        if (op === OP.forget) ops.forget?.(req, i, a as number);
        else {
          const buf = a as Buffer;
          const items: { ino: Ino; nlookup: number }[] = [];
          for (let o = 0; o + 16 <= buf.length; o += 16)
            items.push({ ino: buf.readBigUInt64LE(o), nlookup: Number(buf.readBigUInt64LE(o + 8)) });
          if (ops.forgetMulti) ops.forgetMulti(req, items);
          else if (ops.forget) for (const it of items) ops.forget(req, it.ino, it.nlookup);
        }
      } catch (err) {
        this.log(`fuse: ${name} handler threw: ${(err as Error)?.stack ?? String(err)}`);
      }
      return;
    }
    const call = new Call(this, h as NativeReq, name, uid as number, gid as number, pid as number, umask as number);
    let r: Handled;
    try {
      switch (op) {
        case OP.lookup: r = ops.lookup?.(call, i, a as string, call); break;
        case OP.getattr: r = ops.getattr?.(call, i, a as number | undefined, call); break;
        case OP.setattr: r = ops.setattr?.(call, i, decodeSetattr(a as number, b as Buffer), c as number | undefined, call); break;
        case OP.readlink: r = ops.readlink?.(call, i, call); break;
        case OP.mknod: r = ops.mknod?.(call, i, a as string, b as number, c as number, call); break;
        case OP.mkdir: r = ops.mkdir?.(call, i, a as string, b as number, call); break;
        case OP.unlink: r = ops.unlink?.(call, i, a as string, call); break;
        case OP.rmdir: r = ops.rmdir?.(call, i, a as string, call); break;
        case OP.symlink: r = ops.symlink?.(call, i, a as string, b as string, call); break;
        case OP.rename: r = ops.rename?.(call, i, a as string, b as Ino, c as string, d as number, call); break;
        case OP.link: r = ops.link?.(call, i, a as Ino, b as string, call); break;
        case OP.open: r = ops.open?.(call, i, a as number, call); break;
        case OP.read: call.size = a as number; r = ops.read?.(call, i, a as number, b as number, c as number, call); break;
        case OP.write: r = ops.write?.(call, i, a as Buffer, b as number, c as number, d as boolean, call); break;
        case OP.flush: r = ops.flush?.(call, i, a as number, b as bigint, call); break;
        case OP.release: r = ops.release?.(call, i, a as number, b as number, call); break;
        case OP.fsync: r = ops.fsync?.(call, i, a as boolean, b as number, call); break;
        case OP.opendir: r = ops.opendir?.(call, i, a as number, call); break;
        case OP.readdir: call.size = a as number; r = ops.readdir?.(call, i, a as number, b as bigint, c as number, call); break;
        case OP.readdirplus: call.size = a as number; r = ops.readdirplus?.(call, i, a as number, b as bigint, c as number, call); break;
        case OP.releasedir: r = ops.releasedir?.(call, i, a as number, call); break;
        case OP.fsyncdir: r = ops.fsyncdir?.(call, i, a as boolean, b as number, call); break;
        case OP.statfs: r = ops.statfs?.(call, i, call); break;
        case OP.access: r = ops.access?.(call, i, a as number, call); break;
        case OP.create: r = ops.create?.(call, i, a as string, b as number, c as number, call); break;
        case OP.fallocate: r = ops.fallocate?.(call, i, a as number, b as number, c as number, d as number, call); break;
        case OP.getxattr: r = ops.getxattr?.(call, i, a as string, b as number, call); break;
        case OP.listxattr: r = ops.listxattr?.(call, i, a as number, call); break;
        case OP.setxattr: r = ops.setxattr?.(call, i, a as string, b as Buffer, c as number, call); break;
        case OP.removexattr: r = ops.removexattr?.(call, i, a as string, call); break;
        default: r = undefined;
      }
      if (typeof ops[name] !== 'function' && !call.answered) call.err(ERRNO.ENOSYS);
    } catch (err) {
      this.fail(call, err);
      return;
    }
    if (isThenable(r)) {
      r.then(
        () => {
          if (!call.answered) {
            this.log(`fuse: ${name} handler resolved without answering; answering EIO`);
            try {
              call.err(EIO);
            } catch {
              /* answered meanwhile */
            }
          }
        },
        (err: unknown) => this.fail(call, err),
      );
    }
  };
}
