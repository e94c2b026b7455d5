// Filesystem semantics of one PFS: inodes by number, directories, file and
// symlink contents, attributes — and, on a writable mount, every change to
// them, held in memory until the next flush turns it into new blocks.
//
// Layout reminder: a PFS's inodes all live in the PFS root inode's block tree,
// keyed by inode number (< 2^63); the root directory's entries share that tree
// with hash keys (bit 63 set). Other directories hold only their entries.
//
// A Node is an inode as the filesystem sees it now: its committed version
// (what the last flush wrote) plus pending changes (metadata, data blocks,
// directory entries). Clean nodes are rebuilt from media on demand.
import {
  Blockref,
  brefStats,
  BrefType,
  decodeInode,
  direntHead,
  dirhash,
  DIRHASH_LOMASK,
  DIRHASH_VISIBLE,
  EMBEDDED_BYTES,
  INODE_START,
  inodeBlockset,
  InodeData,
  KEY_MAX,
  NAME_MAX,
  ObjType,
  OPFLAG_DIRECTDATA,
  ALLOC_MIN,
  PBUFSIZE,
  uuidToXid,
  xidToUuid,
  INODE_VERSION_ONE,
  setInodeBlockset,
  SET_COUNT,
  emptyBlockref,
} from '../media';
import { BlockReader, FsError, hex, inodeCheck, inodeComp, lookupKey, LruCache, MediaError, PfsEntry, PreparedTable, prepareTable, scanRange, sealAhead, unseal } from '../engine';

export const ROOT_INUM = 1n;

import { DirEntry, PendingDirents } from './pending';
export type { DirEntry };

export interface Node {
  inum: bigint;
  /** Committed bref (for the root: the super-root's); null if created since the last flush. */
  bref: Blockref | null;
  /** Committed inode; null if created since the last flush. */
  disk: InodeData | null;
  /** Current inode: the committed one while clean, a private copy once changed. */
  data: InodeData;
  dirty: boolean;
  /** Pending logical 64 KiB file blocks by offset. */
  blocks?: Map<bigint, Buffer>;
  /** Committed file data at keys >= this is gone (64 KiB aligned). */
  truncFrom?: bigint;
  /** Committed 64 KiB file blocks punched out (holes at the next flush). */
  holes?: Set<bigint>;
  /** Pending directory entries by key; null deletes the committed entry. */
  dirents?: PendingDirents;
  /** Removed from the inode index at the next flush. */
  deleted?: boolean;
  /** Taken out by destroy-inum: open handles may read, nothing may change it. */
  destroyed?: boolean;
  /** Open handles (an unlinked inode lives until the last one closes). */
  opens: number;
  /** Blocks of this file that did not compress lately (skip trying while it is high). */
  compHeuristic?: { n: number };
  /**
   * The inode failed to read here and was taken from a copy (attributes
   * only): its contents are read from the copy too, and it cannot change
   * until the repair from that copy has been committed.
   */
  borrowed?: boolean;
}

/**
 * Other nodes of the PFS's cluster (copies), which hold the same committed
 * state: where an item fails to read here, it is read there, and this
 * node's damaged branch is repaired from them.
 */
export interface PfsRedundancy {
  /** Committed bytes [pos, pos + out.length) of inode `inum` from a copy (zeros past its EOF); false if no copy could. */
  readData(inum: bigint, pos: number, out: Buffer): boolean;
  /** The committed inode `inum` from a copy (its attributes; its blockset is the copy's own). */
  readInode(inum: bigint): InodeData | null;
  /** Committed entries of directory `inum` with keys in [lo, hi], in key order, from a copy. */
  readEntries(inum: bigint, lo: bigint, hi: bigint): DirEntry[] | null;
  /** An item of this node failed to read (`why`): repair it from a copy. `key` names a data block; none: the inode's whole tree. */
  damaged(inum: bigint, key?: bigint, why?: string): void;
}

export interface Attr {
  ino: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  size: number;
  blocks: number;
  /** Microseconds since the epoch, as stored. */
  atime: bigint;
  mtime: bigint;
  ctime: bigint;
  btime: bigint;
  /**
   * `blocks` is an estimate until the next commit (pending data, truncation,
   * holes or directory entries): the commit stores what compression made of it.
   */
  provisional: boolean;
}

const S_IFMT: Record<number, number> = {
  [ObjType.DIRECTORY]: 0o040000,
  [ObjType.REGFILE]: 0o100000,
  [ObjType.FIFO]: 0o010000,
  [ObjType.CDEV]: 0o020000,
  [ObjType.BDEV]: 0o060000,
  [ObjType.SOFTLINK]: 0o120000,
  [ObjType.SOCKET]: 0o140000,
};

export function typeToIfmt(t: number): number {
  const m = S_IFMT[t];
  if (m === undefined) throw new FsError('EIO', `unknown inode type ${t}`);
  return m;
}

export function ifmtToType(mode: number): number {
  const f = mode & 0o170000;
  for (const [t, m] of Object.entries(S_IFMT)) if (m === f) return Number(t);
  throw new FsError('EINVAL', `unsupported file type ${f.toString(8)}`);
}

/** Linux makedev() for the FUSE st_rdev, and back. */
export const makedev = (maj: number, min: number): number =>
  ((maj & 0xfff) << 8) | (min & 0xff) | ((min & ~0xff) << 12);
export const devMajor = (dev: number): number => (dev >>> 8) & 0xfff;
export const devMinor = (dev: number): number => (dev & 0xff) | ((dev >>> 12) & 0xfff00);

const MAX_FILE_SIZE = 2n ** 63n - 1n;
/** Longest symlink target believed from media (Linux allows 4095; this is a sanity bound). */
const MAX_SYMLINK = 65536;
const LBLOCK = BigInt(PBUFSIZE);
const LINK_MAX = 0xffffffffn;
const isDir = (n: Node) => n.data.meta.type === ObjType.DIRECTORY;

/** Name the inode in a media error (the daemon logs it with the block offset). */
function withInode(e: unknown, n: Node): unknown {
  if (e instanceof MediaError && !e.message.startsWith('inode ')) return new MediaError(`inode ${n.inum}: ${e.message}`, e.offset);
  return e;
}

export function cloneInode(d: InodeData): InodeData {
  const raw = Buffer.from(d.raw);
  const c = decodeInode(raw);
  // decodeInode re-reads from raw: carry over fields changed in memory but not yet encoded.
  c.meta = { ...d.meta, uid: Buffer.from(d.meta.uid), gid: Buffer.from(d.meta.gid), pfsClid: Buffer.from(d.meta.pfsClid), pfsFsid: Buffer.from(d.meta.pfsFsid) };
  c.filename = Buffer.from(d.filename);
  c.u = Buffer.from(d.u);
  return c;
}

export interface Credentials {
  uid: number;
  gid: number;
}

export interface SetAttr {
  mode?: number;
  uid?: number;
  gid?: number;
  size?: bigint;
  atime?: bigint;
  mtime?: bigint;
  ctime?: bigint;
}

/**
 * What a clean cached Node costs in memory: the 1 KiB inode copy, its
 * decoded fields and blockset (four decoded blockrefs), the committed bref.
 * Measured from heap snapshots; the cache budget below counts this.
 */
const NODE_BYTES = 4096;

/**
 * Committed inodes' blocksets, checked and ordered once: every lookup
 * starts at one (the PFS root's for each inode read). Kept with a copy of
 * the bytes they came from, so an inode whose blockset is rewritten in
 * place is prepared again rather than served stale.
 */
const setTables = new WeakMap<InodeData, { u: Buffer; t: PreparedTable }>();
const SET_BYTES = SET_COUNT * 128;

function blocksetTable(ip: InodeData): PreparedTable {
  const hit = setTables.get(ip);
  if (hit && ip.u.compare(hit.u, 0, SET_BYTES, 0, SET_BYTES) === 0) return hit.t;
  const t = prepareTable(inodeBlockset(ip), 0n, KEY_MAX);
  setTables.set(ip, { u: Buffer.from(ip.u.subarray(0, SET_BYTES)), t });
  return t;
}

/** The size of a pending block holding `bytes` of data: a power of two from 1 KiB to 64 KiB. */
function pendingSize(bytes: number): number {
  let p = ALLOC_MIN;
  while (p < bytes && p < PBUFSIZE) p <<= 1;
  return p;
}

/** Memory held by a node's pending blocks. */
function heldBytes(blocks: Map<bigint, Buffer>): number {
  let n = 0;
  for (const b of blocks.values()) n += b.length;
  return n;
}

export class Pfs {
  readonly root: Node;
  /** Nodes with pending changes or open handles (strongly held). */
  readonly live = new Map<bigint, Node>();
  private clean = new LruCache<number, Node>(8 * 1024 * 1024);
  private nextInum: bigint;
  /** Inodes removed since the last flush (their index entries go at the flush). */
  readonly removed = new Set<bigint>();
  /** ... of which these never reached media (no index entry to remove). */
  readonly removedNew = new Set<bigint>();
  /** Pending file data, 64 KiB a block whatever its buffer holds, for flush pacing. */
  pendingBytes = 0;
  /** Media bytes of removed inodes (their data), for pacing reclaim. */
  releasedBytes = 0;
  /** Set by the filesystem when a change needs flushing. */
  onDirty: () => void = () => {};
  /**
   * Emergency mode (hammer2 emergency-mode-enable): as the reference, no
   * new inodes, links, renames or file writes (EROFS); removal and
   * attribute changes go on, so a full filesystem can be emptied.
   */
  emergency = false;
  /** Copies to fall back on and repair from (set by the cluster layer). */
  redundancy: PfsRedundancy | null = null;
  /** Whether commits of this PFS reach another node (an in-sync copy): recorded as the root's update_tid. */
  replicated = false;

  /** Rewrite the root at the next commit even if nothing else changed (records a cluster point). */
  touchRoot(): void {
    this.touch(this.root);
  }

  private refuseInEmergency(): void {
    if (this.emergency) throw new FsError('EROFS', `PFS "${this.name}" is in emergency mode: only removal and attribute changes are allowed`);
  }

  constructor(
    readonly reader: BlockReader,
    public entry: PfsEntry,
    readonly writable = false,
  ) {
    this.root = { inum: ROOT_INUM, bref: entry.bref, disk: entry.inode, data: entry.inode, dirty: false, opens: 0 };
    this.validate(this.root);
    if (entry.inode.meta.type !== ObjType.DIRECTORY) {
      throw new MediaError(`PFS "${entry.name}": root inode is not a directory (type ${entry.inode.meta.type})`, entry.bref.dataOff);
    }
    const next = entry.inode.meta.pfsInum + 1n;
    this.nextInum = next < BigInt(INODE_START) ? BigInt(INODE_START) : next;
  }

  get name(): string {
    return this.entry.name;
  }

  /** Whether anything awaits a flush. */
  get dirty(): boolean {
    return this.root.dirty || this.removed.size > 0 || this.dirtyLive.size > 0;
  }

  /** Changed nodes in `live` (not the root), so `dirty` need not scan every open file. */
  private readonly dirtyLive = new Set<bigint>();

  // ---------------------------------------------------------------- inodes

  private validate(ip: Node): void {
    const m = ip.data.meta;
    const at = ip.bref?.dataOff;
    if (S_IFMT[m.type] === undefined) throw new MediaError(`inode ${ip.inum} has unknown type ${m.type}`, at);
    if (m.size > MAX_FILE_SIZE) throw new MediaError(`inode ${ip.inum} has absurd size ${m.size}`, at);
    if (m.opFlags & OPFLAG_DIRECTDATA && m.size > BigInt(EMBEDDED_BYTES)) {
      throw new MediaError(`inode ${ip.inum} claims ${m.size} bytes of embedded data`, at);
    }
    if (m.type === ObjType.SOFTLINK && m.size > BigInt(MAX_SYMLINK)) {
      throw new MediaError(`symlink inode ${ip.inum} claims a ${m.size}-byte target`, at);
    }
  }

  /** The committed inode tree (inode index + root entries) of this PFS. */
  private committedRootSet(): PreparedTable | Blockref[] {
    return this.root.disk ? blocksetTable(this.root.disk) : [];
  }

  /** Load an inode by number. Throws FsError(ENOENT) if absent, MediaError if corrupt. */
  getInode(inum: bigint): Node {
    if (inum === ROOT_INUM) return this.root;
    const live = this.live.get(inum);
    if (live) {
      // An unlinked inode stays reachable by number while it is open.
      if (live.deleted && live.opens === 0) throw new FsError('ENOENT', `inode ${inum} was removed`);
      return live;
    }
    if (this.removed.has(inum)) throw new FsError('ENOENT', `inode ${inum} was removed`);
    const hit = this.clean.get(Number(inum));
    if (hit) return hit;
    if (inum >= DIRHASH_VISIBLE) throw new FsError('ENOENT', `inode ${inum} out of range`);
    let ip: Node;
    try {
      ip = this.readInode(inum);
    } catch (e) {
      const copy = e instanceof MediaError ? this.redundancy?.readInode(inum) : null;
      if (!copy) throw e;
      // Served from a copy until the repair is committed (not cached: the repaired one replaces it).
      this.redundancy!.damaged(inum, undefined, (e as Error).message);
      const data = cloneInode(copy);
      setInodeBlockset(data, Array.from({ length: SET_COUNT }, emptyBlockref));
      const n: Node = { inum, bref: null, disk: data, data, dirty: false, opens: 0, borrowed: true };
      this.validate(n);
      return n;
    }
    this.clean.set(Number(inum), ip, NODE_BYTES);
    return ip;
  }

  /** Read inode `inum` from this node's committed index. */
  private readInode(inum: bigint): Node {
    const b = lookupKey(this.reader, this.committedRootSet(), inum);
    if (!b || b.key !== inum || b.type !== BrefType.INODE) throw new MediaError(`inode ${inum} is missing from the inode index`);
    const data = decodeInode(this.reader.readPhysical(b));
    if (data.meta.inum !== inum) {
      throw new MediaError(`inode block at ${hex(b.dataOff)} holds inode ${data.meta.inum}, expected ${inum}`, b.dataOff);
    }
    const ip: Node = { inum, bref: b, disk: data, data, dirty: false, opens: 0 };
    this.validate(ip);
    return ip;
  }

  /**
   * The PFS root was recommitted from outside (a repair from a copy): take
   * the new committed state. Only while nothing is pending. Nodes held open
   * keep their identity and take their new committed inode.
   */
  reload(entry: PfsEntry): void {
    if (this.dirty) throw new FsError('EBUSY', `PFS "${this.name}" has pending changes`);
    this.entry = entry;
    this.root.bref = entry.bref;
    this.root.disk = this.root.data = entry.inode;
    this.clean.clear();
    // The new tree may hold inodes numbered past what this node handed out.
    const next = entry.inode.meta.pfsInum + 1n;
    if (next > this.nextInum) this.nextInum = next;
    for (const n of this.live.values()) {
      if (n.dirty || n.deleted) continue;
      try {
        const fresh = this.readInode(n.inum);
        n.bref = fresh.bref;
        n.disk = n.data = fresh.data;
        n.borrowed = false;
      } catch {
        // Still unreadable: it stays as it was (a later repair retries).
      }
    }
  }

  /** Make a node's inode private and mark it changed. */
  private touch(n: Node): InodeData {
    if (!this.writable) throw new FsError('EROFS');
    if (n.destroyed) throw new FsError('ENOENT', `inode ${n.inum} was destroyed`);
    if (n.borrowed) throw new FsError('EIO', `inode ${n.inum} failed to read and is being repaired from a copy; try again`);
    if (!n.dirty) {
      if (n.data === n.disk) n.data = cloneInode(n.data);
      n.dirty = true;
      if (n !== this.root) {
        this.live.set(n.inum, n);
        this.dirtyLive.add(n.inum);
        this.clean.delete(Number(n.inum));
      }
      this.onDirty();
    }
    return n.data;
  }

  /** After a flush: the node's current state is now the committed one. */
  committed(n: Node, bref: Blockref | null): void {
    n.bref = bref;
    n.disk = n.data;
    n.dirty = false;
    this.dirtyLive.delete(n.inum);
    if (n.blocks) this.pendingBytes -= n.blocks.size * PBUFSIZE;
    n.blocks = undefined;
    n.truncFrom = undefined;
    n.holes = undefined;
    n.dirents = undefined;
    if (n !== this.root && n.opens === 0) {
      this.live.delete(n.inum);
      if (!n.deleted) this.clean.set(Number(n.inum), n, NODE_BYTES);
    }
  }

  /** Drop a removed inode whose removal has been flushed. */
  forget(inum: bigint): void {
    this.removed.delete(inum);
    this.removedNew.delete(inum);
    const n = this.live.get(inum);
    if (n && n.opens === 0) {
      this.live.delete(inum);
      this.dirtyLive.delete(inum);
    }
    this.clean.delete(Number(inum));
  }

  allocInum(): bigint {
    const n = this.nextInum;
    this.nextInum += 1n;
    return n;
  }

  /** The value the PFS root records as its inode allocator (the next number to hand out). */
  get inumAllocator(): bigint {
    return this.nextInum;
  }

  // ------------------------------------------------------------- directories

  /** Committed directory tree of a directory node. */
  private committedSet(n: Node): PreparedTable | Blockref[] {
    if (n === this.root) return this.committedRootSet();
    if (!n.disk || n.disk.meta.opFlags & OPFLAG_DIRECTDATA) return [];
    return blocksetTable(n.disk);
  }

  /** Decode a directory-tree leaf as an entry; null for leaves that are not entries. */
  private entryOf(b: Blockref): DirEntry | null {
    if (b.type === BrefType.DIRENT) {
      const h = direntHead(b);
      if (h.namlen === 0 || h.namlen > NAME_MAX) throw new MediaError(`dirent ${hex(b.key)} has name length ${h.namlen}`, b.dataOff);
      let name: Buffer;
      if (h.namlen <= 64) {
        name = Buffer.from(b.check.subarray(0, h.namlen));
      } else {
        const blk = this.reader.readPhysical(b);
        if (blk.length < h.namlen) throw new MediaError(`dirent name block too small`, b.dataOff);
        name = Buffer.from(blk.subarray(0, h.namlen));
      }
      if (name.includes(0) || name.includes(0x2f)) {
        throw new MediaError(`dirent ${hex(b.key)} has a name containing '/' or NUL`, b.dataOff);
      }
      return { name, inum: h.inum, type: h.type, key: b.key };
    }
    if (b.type === BrefType.INODE && b.key >= DIRHASH_VISIBLE) {
      // Older media (and the super-root) keep inodes directly in the directory.
      const ip = decodeInode(this.reader.readPhysical(b));
      return { name: Buffer.from(ip.filename), inum: ip.meta.inum, type: ip.meta.type, key: b.key };
    }
    return null;
  }

  /** Find `name` in directory `dir`. Hash collisions are resolved by comparing names. */
  lookup(dir: Node, name: Buffer): DirEntry | null {
    try {
      return this.lookupNoContext(dir, name);
    } catch (e) {
      throw withInode(e, dir);
    }
  }

  private lookupNoContext(dir: Node, name: Buffer): DirEntry | null {
    if (!isDir(dir)) throw new FsError('ENOTDIR');
    if (name.length > NAME_MAX) throw new FsError('ENAMETOOLONG');
    const key = dirhash(name);
    const end = key | DIRHASH_LOMASK;
    const pend = dir.dirents;
    if (pend) {
      for (const k of pend.inRange(key)) {
        const e = pend.get(k);
        if (e && e.name.equals(name)) return e;
      }
    }
    let found: DirEntry | null = null;
    this.scanEntries(dir, key, end, (k, e) => {
      if (pend?.has(k)) return;
      if (e && e.name.equals(name)) {
        found = e;
        return true;
      }
    });
    return found;
  }

  /** Every entry of a directory, in hash order (without "." and ".."). */
  readdir(dir: Node): DirEntry[] {
    return this.readdirFrom(dir, DIRHASH_VISIBLE, Infinity);
  }

  /**
   * Up to `max` entries with key >= fromKey, in key order: readdir resumes
   * from a cookie without listing the whole directory again.
   */
  readdirFrom(dir: Node, fromKey: bigint, max: number): DirEntry[] {
    if (!isDir(dir)) throw new FsError('ENOTDIR');
    const start = fromKey < DIRHASH_VISIBLE ? DIRHASH_VISIBLE : fromKey;
    const out: DirEntry[] = [];
    const pend = dir.dirents;
    this.scanEntries(dir, start, KEY_MAX, (k, e) => {
      if (pend?.has(k)) return;
      if (e) out.push(e);
      return out.length >= max;
    });
    if (pend && pend.size) {
      out.push(...pend.from(start, max));
      out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
      if (out.length > max) out.length = max;
    }
    return out;
  }

  /** True if a directory has no entries. */
  isEmptyDir(dir: Node): boolean {
    const pend = dir.dirents;
    if (pend?.anyLive()) return false;
    let any = false;
    this.scanEntries(dir, DIRHASH_VISIBLE, KEY_MAX, (k, e) => {
      if (pend?.has(k)) return;
      if (e) {
        any = true;
        return true;
      }
    });
    return !any;
  }

  /** A free directory key for `name`: its hash, or the next unused one in the collision range. */
  private freeKey(dir: Node, name: Buffer): bigint {
    const base = dirhash(name);
    const used = new Set<bigint>();
    this.scanEntries(dir, base, base | DIRHASH_LOMASK, (k) => {
      used.add(k);
    });
    const pend = dir.dirents;
    const pendKeys = new Set(pend?.inRange(base));
    for (let k = base; k <= (base | DIRHASH_LOMASK); k++) {
      const p = pendKeys.has(k) ? pend!.get(k) : undefined;
      if (p) continue; // pending entry
      if (p === null) return k; // committed entry deleted: its key is free again
      if (!used.has(k)) return k;
    }
    throw new FsError('ENOSPC', 'too many names with the same hash in one directory');
  }

  private addEntry(dir: Node, name: Buffer, inum: bigint, type: number): void {
    this.touch(dir);
    const key = this.freeKey(dir, name);
    (dir.dirents ??= new PendingDirents()).set(key, { name: Buffer.from(name), inum, type, key });
  }

  private removeEntry(dir: Node, e: DirEntry): void {
    this.touch(dir);
    (dir.dirents ??= new PendingDirents()).set(e.key, null);
    // A pending entry that never reached media needs no deletion record.
    if (!this.committedHasKey(dir, e.key)) dir.dirents.delete(e.key);
  }

  private committedHasKey(dir: Node, key: bigint): boolean {
    let has = false;
    this.scanEntries(dir, key, key, (k) => {
      if (k === key) has = true;
      return true;
    });
    return has;
  }

  /**
   * Visit the committed leaves of a directory with keys in [lo, hi], in key
   * order, decoded as entries (null for leaves that are not). Where this
   * node's tree fails to read, the rest comes from a copy, and the
   * directory is queued for repair.
   */
  private scanEntries(dir: Node, lo: bigint, hi: bigint, visit: (key: bigint, e: DirEntry | null) => boolean | void): void {
    let from = lo;
    if (!dir.borrowed) {
      try {
        scanRange(this.reader, this.committedSet(dir), lo, hi, (b) => {
          const e = this.entryOf(b);
          from = b.key + 1n;
          return visit(b.key, e);
        });
        return;
      } catch (e) {
        if (!(e instanceof MediaError) || !this.redundancy) throw e;
        this.redundancy.damaged(dir.inum, undefined, e.message);
      }
    }
    const rest = this.redundancy?.readEntries(dir.inum, from, hi);
    if (!rest) throw new MediaError(`inode ${dir.inum}: directory unreadable here and on every copy`);
    for (const e of rest) if (visit(e.key, e)) return;
  }

  /** Resolve a PFS-absolute path ("/a/b"), without following symlinks. */
  resolve(path: string): Node {
    let ip = this.root;
    for (const comp of path.split('/')) {
      if (comp === '' || comp === '.') continue;
      if (comp === '..') {
        const p = ip.data.meta.iparent;
        ip = p === 0n || p === ROOT_INUM ? this.root : this.getInode(p);
        continue;
      }
      const name = Buffer.from(comp, 'utf8');
      if (name.length > NAME_MAX) throw new FsError('ENAMETOOLONG');
      const e = this.lookup(ip, name);
      if (!e) throw new FsError('ENOENT');
      ip = this.getInode(e.inum);
    }
    return ip;
  }

  // -------------------------------------------------------------- file data

  /** Committed file tree of a node (empty for embedded data or new inodes). */
  committedFileSet(n: Node): Blockref[] {
    if (!n.disk || n.disk.meta.opFlags & OPFLAG_DIRECTDATA) return [];
    return inodeBlockset(n.disk);
  }

  /** Read committed data of logical block `lbase` into out (its first out.length bytes: a pending block may be short). */
  private readCommittedBlock(n: Node, lbase: bigint, out: Buffer): void {
    if (out.length > PBUFSIZE) out.fill(0, PBUFSIZE);
    this.readCommittedPart(n, lbase, 0, out.subarray(0, PBUFSIZE));
  }

  /** Committed bytes [lbase+from, lbase+from+out.length) of one 64 KiB block, with pending holes and truncation applied. */
  private readCommittedPart(n: Node, lbase: bigint, from: number, out: Buffer): void {
    const disk = n.disk;
    if (!disk || (n.truncFrom !== undefined && lbase >= n.truncFrom) || n.holes?.has(lbase)) {
      out.fill(0);
      return;
    }
    if (disk.meta.opFlags & OPFLAG_DIRECTDATA) {
      out.fill(0);
      if (lbase === 0n && from < EMBEDDED_BYTES) disk.u.copy(out, 0, from, Math.min(EMBEDDED_BYTES, Number(disk.meta.size), from + out.length));
      return;
    }
    this.readRange(n, this.committedFileSet(n), Number(lbase) + from, out);
  }

  /**
   * Fill every byte of `out` with committed data from [pos, pos+out.length)
   * of a block tree (holes as zeros). Whole blocks are collected and read
   * together (adjacent ones with one pread, see BlockReader.readDataBlocks);
   * blocks the range covers only in part go through the data cache.
   */
  private readRange(n: Node, set: Blockref[], pos: number, out: Buffer): void {
    if (!n.borrowed) {
      try {
        this.readRangeHere(n, set, pos, out);
        return;
      } catch (e) {
        if (!(e instanceof MediaError) || !this.redundancy) throw e;
        // Name the 64 KiB blocks of the range for the repair.
        let why: string | undefined = e.message;
        for (let k = Math.floor(pos / PBUFSIZE) * PBUFSIZE; k < pos + out.length; k += PBUFSIZE) {
          this.redundancy.damaged(n.inum, BigInt(k), why);
          why = undefined;
        }
      }
    }
    if (!this.redundancy?.readData(n.inum, pos, out)) throw new MediaError(`inode ${n.inum}: data unreadable here and on every copy`);
    // Pending truncation applies over committed data, wherever it was read.
    if (n.truncFrom !== undefined && BigInt(pos + out.length) > n.truncFrom) {
      const cut = Number(n.truncFrom) - pos;
      out.fill(0, Math.max(0, cut));
    }
  }

  private readRangeHere(n: Node, set: Blockref[], pos: number, out: Buffer): void {
    const end = pos + out.length;
    /** out[0, filled) is written or queued in `whole`. */
    let filled = 0;
    const whole: Blockref[] = [];
    const dst: Buffer[] = [];
    const flushWhole = () => {
      if (whole.length === 0) return;
      this.reader.readDataBlocks(whole, dst);
      whole.length = dst.length = 0;
    };
    scanRange(this.reader, set, BigInt(pos), BigInt(end - 1), (b) => {
      if (b.type !== BrefType.DATA) throw new MediaError(`inode ${n.inum}: ${b.type} blockref among file data`, b.dataOff);
      if (b.keybits < 10 || b.keybits > 16) throw new MediaError(`inode ${n.inum}: data block with keybits ${b.keybits}`, b.dataOff);
      const lsize = 1 << b.keybits;
      const lbase = Number(b.key);
      if (n.truncFrom !== undefined && b.key >= n.truncFrom) return;
      const from = Math.max(pos, lbase);
      const to = Math.min(end, lbase + lsize);
      if (from - pos > filled) out.fill(0, filled, from - pos);
      if (from === lbase && to === lbase + lsize) {
        whole.push(b);
        dst.push(out.subarray(from - pos, to - pos));
      } else {
        // Keep the media order of writes should blocks overlap (corrupt trees).
        flushWhole();
        this.reader.readDataPart(b, from - lbase, to - lbase, out, from - pos);
      }
      filled = Math.max(filled, to - pos);
    });
    flushWhole();
    if (filled < out.length) out.fill(0, filled);
  }

  /** Read up to `len` bytes at `pos` from a file or symlink; short only at EOF. */
  read(n: Node, pos: number, len: number): Buffer {
    return this.readInto(n, pos, len, null);
  }

  /**
   * read() into `into` when it is large enough (the result is then a view of
   * it): a caller that is done with the data before its next read can reuse
   * one buffer instead of allocating every time.
   */
  readInto(n: Node, pos: number, len: number, into: Buffer | null): Buffer {
    if (pos < 0 || len < 0) throw new FsError('EINVAL');
    try {
      return this.readNoContext(n, pos, len, into);
    } catch (e) {
      throw withInode(e, n);
    }
  }

  private readNoContext(n: Node, pos: number, len: number, into: Buffer | null): Buffer {
    const m = n.data.meta;
    if (m.type === ObjType.DIRECTORY) throw new FsError('EISDIR');
    const size = Number(m.size);
    if (pos >= size || len <= 0) return Buffer.alloc(0);
    const cnt = Math.min(len, size - pos);
    if (m.opFlags & OPFLAG_DIRECTDATA) {
      const out = Buffer.alloc(cnt);
      n.data.u.copy(out, 0, pos, pos + cnt);
      return out;
    }
    // Every byte is written below (data, or zeros for holes): no zero-fill first.
    const out = into && into.length >= cnt ? into.subarray(0, cnt) : Buffer.allocUnsafe(cnt);
    const end = pos + cnt;
    if (!n.blocks?.size && n.disk === n.data) {
      this.readRange(n, this.committedFileSet(n), pos, out);
      return out;
    }
    // Mixed: pending blocks override committed ones, 64 KiB at a time; the
    // committed parts are read straight into `out` (a random 4 KiB read of a
    // file being written must not cost a 64 KiB buffer and a copy).
    for (let lb = Math.floor(pos / PBUFSIZE) * PBUFSIZE; lb < end; lb += PBUFSIZE) {
      const from = Math.max(pos, lb);
      const to = Math.min(end, lb + PBUFSIZE);
      const pend = n.blocks?.get(BigInt(lb));
      if (pend) {
        // A short pending block holds zeros past its end.
        const got = pend.copy(out, from - pos, Math.min(from - lb, pend.length), Math.min(to - lb, pend.length));
        if (got < to - from) out.fill(0, from - pos + got, to - pos);
      } else this.readCommittedPart(n, BigInt(lb), from - lb, out.subarray(from - pos, to - pos));
    }
    return out;
  }

  readlink(n: Node): Buffer {
    if (n.data.meta.type !== ObjType.SOFTLINK) throw new FsError('EINVAL');
    return this.read(n, 0, Number(n.data.meta.size));
  }

  /**
   * The pending buffer for block `lbase`, created from committed data, for
   * the caller to change up to `need` bytes into it: the only way to a
   * pending block that changes it (what sealAhead worked out for it is
   * dropped). A small file's block 0 is kept short (a power of two of at
   * least 1 KiB covering the file's bytes in it and `need`; zeros past its
   * end): its pending data must not touch 64 KiB until the commit. The
   * dirty limit still counts 64 KiB a block (pendingBytes): counted by what
   * they hold, small files committed eight times less often, and the larger
   * commits held more at their peak than the buffers saved.
   */
  private blockFor(n: Node, lbase: bigint, need = 0): Buffer {
    const map = (n.blocks ??= new Map());
    let b = map.get(lbase);
    if (b) {
      unseal(b);
      if (b.length >= need) return b;
      const grown = Buffer.alloc(pendingSize(need)); // (only block 0 is ever short)
      b.copy(grown);
      map.set(lbase, grown);
      return grown;
    }
    // The committed bytes of this block (up to the larger of the old and new size) must fit.
    const was = n.disk?.meta.size ?? 0n;
    const size = was > n.data.meta.size ? was : n.data.meta.size;
    const inBlock = size <= lbase ? 0 : size - lbase >= LBLOCK ? PBUFSIZE : Number(size - lbase);
    // Only block 0 is kept short: a file past 64 KiB is not small, and growing each block it appends to would copy it over and over.
    b = Buffer.allocUnsafe(lbase === 0n ? pendingSize(Math.max(need, inBlock)) : PBUFSIZE); // every byte is filled from committed data or zeros
    this.readCommittedBlock(n, lbase, b);
    map.set(lbase, b);
    this.pendingBytes += PBUFSIZE;
    return b;
  }

  /** Move embedded data into block 0 once a file outgrows the inode. */
  private undirect(n: Node): void {
    const d = n.data;
    if (!(d.meta.opFlags & OPFLAG_DIRECTDATA)) return;
    const size = Number(d.meta.size);
    const b0 = Buffer.alloc(pendingSize(size));
    d.u.copy(b0, 0, 0, Math.min(size, EMBEDDED_BYTES));
    d.meta.opFlags &= ~OPFLAG_DIRECTDATA;
    d.u.fill(0);
    (n.blocks ??= new Map()).set(0n, b0);
    this.pendingBytes += PBUFSIZE;
  }

  /**
   * Write `buf` at `pos`. `buf` is taken over, not copied where it covers
   * whole 64 KiB blocks: those become pending blocks that point into it
   * (a FUSE request's buffer belongs to its handler; holding a slice keeps
   * it alive). The caller must not change `buf` afterwards. `now` null:
   * the times are left as they are (the caller sets them).
   */
  write(n: Node, pos: number, buf: Uint8Array, now: bigint | null): number {
    this.refuseInEmergency();
    const m = n.data.meta;
    if (m.type === ObjType.DIRECTORY) throw new FsError('EISDIR');
    if (m.type !== ObjType.REGFILE && m.type !== ObjType.SOFTLINK) throw new FsError('EINVAL');
    const end = BigInt(pos) + BigInt(buf.length);
    if (end > MAX_FILE_SIZE) throw new FsError('EFBIG');
    if (buf.length === 0) return 0;
    const d = this.touch(n);
    if (d.meta.opFlags & OPFLAG_DIRECTDATA && end <= BigInt(EMBEDDED_BYTES)) {
      d.u.set(buf, pos);
    } else {
      this.undirect(n);
      let done = 0;
      while (done < buf.length) {
        const p = BigInt(pos + done);
        const lbase = p - (p % LBLOCK);
        const off = Number(p - lbase);
        const cnt = Math.min(PBUFSIZE - off, buf.length - done);
        if (off === 0 && cnt === PBUFSIZE) {
          // A whole block: adopt the caller's bytes (replacing any pending copy).
          const map = (n.blocks ??= new Map());
          if (!map.has(lbase)) this.pendingBytes += PBUFSIZE;
          const blk = Buffer.from(buf.buffer, buf.byteOffset + done, PBUFSIZE);
          map.set(lbase, blk);
          // Nothing changes it before the commit (see blockFor): its check and compression can start now.
          sealAhead(blk, lbase, inodeComp(d), inodeCheck(d), n.compHeuristic);
          done += cnt;
          continue;
        }
        const blk = this.blockFor(n, lbase, off + cnt);
        blk.set(buf.subarray(done, done + cnt), off);
        done += cnt;
      }
    }
    if (end > d.meta.size) d.meta.size = end;
    if (now !== null) {
      d.meta.mtime = now;
      d.meta.ctime = now;
    }
    return buf.length;
  }

  /** Change the size: zero what is cut, drop blocks beyond EOF. */
  truncate(n: Node, size: bigint, now: bigint): void {
    const m = n.data.meta;
    if (m.type === ObjType.DIRECTORY) throw new FsError('EISDIR');
    if (m.type !== ObjType.REGFILE) throw new FsError('EINVAL');
    if (size < 0n) throw new FsError('EINVAL');
    if (size > MAX_FILE_SIZE) throw new FsError('EFBIG');
    const d = this.touch(n);
    const old = d.meta.size;
    d.meta.mtime = now;
    d.meta.ctime = now;
    if (size === old) return;
    if (d.meta.opFlags & OPFLAG_DIRECTDATA) {
      if (size <= BigInt(EMBEDDED_BYTES)) {
        if (size < old) d.u.fill(0, Number(size));
        d.meta.size = size;
        return;
      }
      this.undirect(n);
    }
    if (size < old) {
      // Keep the block holding the new EOF, zeroed past it; everything after goes.
      const keepTo = size === 0n ? 0n : ((size + LBLOCK - 1n) / LBLOCK) * LBLOCK;
      const partial = size % LBLOCK;
      if (partial !== 0n) {
        const lbase = size - partial;
        const blk = this.blockFor(n, lbase);
        if (Number(partial) < blk.length) blk.fill(0, Number(partial));
      }
      if (n.blocks) {
        for (const k of [...n.blocks.keys()]) {
          if (k >= keepTo) {
            n.blocks.delete(k);
            this.pendingBytes -= PBUFSIZE;
          }
        }
      }
      if (n.holes) for (const k of n.holes) if (k >= keepTo) n.holes.delete(k);
      if (n.truncFrom === undefined || keepTo < n.truncFrom) n.truncFrom = keepTo;
    }
    d.meta.size = size;
  }

  /**
   * Zero [start, end) of a file, clipped to its size (fallocate's
   * PUNCH_HOLE and ZERO_RANGE): edge blocks are zeroed in place, whole
   * blocks become holes (pending ones dropped, committed ones deleted at the
   * next flush). Copy-on-write media has no preallocated zeroes, so both
   * modes end the same way.
   */
  zeroRange(n: Node, start: bigint, end: bigint, now: bigint): void {
    const m = n.data.meta;
    if (m.type === ObjType.DIRECTORY) throw new FsError('EISDIR');
    if (m.type !== ObjType.REGFILE) throw new FsError('ENODEV');
    if (start < 0n || end < start) throw new FsError('EINVAL');
    const d = this.touch(n);
    d.meta.mtime = now;
    d.meta.ctime = now;
    if (end > d.meta.size) end = d.meta.size;
    if (start >= end) return;
    if (d.meta.opFlags & OPFLAG_DIRECTDATA) {
      d.u.fill(0, Number(start), Number(end));
      return;
    }
    const firstFull = ((start + LBLOCK - 1n) / LBLOCK) * LBLOCK;
    const fullEnd = (end / LBLOCK) * LBLOCK;
    const zeroPart = (lbase: bigint) => {
      const from = start > lbase ? start : lbase;
      const to = end < lbase + LBLOCK ? end : lbase + LBLOCK;
      // A short block's bytes past its end are zeros already.
      const blk = this.blockFor(n, lbase);
      blk.fill(0, Math.min(Number(from - lbase), blk.length), Math.min(Number(to - lbase), blk.length));
    };
    if (firstFull >= fullEnd) {
      // No whole block inside: one or two partial blocks.
      const a = start - (start % LBLOCK);
      zeroPart(a);
      const b = (end - 1n) - ((end - 1n) % LBLOCK);
      if (b !== a) zeroPart(b);
      return;
    }
    if (start < firstFull) zeroPart(firstFull - LBLOCK);
    if (end > fullEnd) zeroPart(fullEnd);
    if (n.blocks) {
      for (const k of [...n.blocks.keys()]) {
        if (k >= firstFull && k < fullEnd) {
          n.blocks.delete(k);
          this.pendingBytes -= PBUFSIZE;
        }
      }
    }
    // Committed blocks in the range: only those that exist need a deletion.
    const set = this.committedFileSet(n);
    scanRange(this.reader, set, firstFull, fullEnd - 1n, (b) => {
      if (b.type !== BrefType.DATA || b.key < firstFull || b.key >= fullEnd) return;
      if (n.truncFrom !== undefined && b.key >= n.truncFrom) return;
      (n.holes ??= new Set()).add(b.key);
    });
  }

  // ------------------------------------------------------------ namespace

  private checkName(name: Buffer): void {
    if (name.length > NAME_MAX) throw new FsError('ENAMETOOLONG');
    if (name.length === 0 || name.includes(0) || name.includes(0x2f)) throw new FsError('EINVAL');
    if ((name.length === 1 && name[0] === 0x2e) || (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e)) {
      throw new FsError('EEXIST');
    }
  }

  /** A new inode in `dir` (file, directory, symlink, fifo, socket or device). */
  create(
    dir: Node,
    name: Buffer,
    type: number,
    mode: number,
    cred: Credentials,
    now: bigint,
    opts: { rdev?: number; gid?: number } = {},
  ): Node {
    this.refuseInEmergency();
    if (!isDir(dir)) throw new FsError('ENOTDIR');
    this.checkName(name);
    if (dir.data.meta.nlinks === 0n) throw new FsError('ENOENT');
    if (this.lookup(dir, name)) throw new FsError('EEXIST');
    if (type === ObjType.DIRECTORY && dir.data.meta.nlinks >= LINK_MAX) throw new FsError('EMLINK');
    const inum = this.allocInum();
    const pm = dir.data.meta;
    const raw = Buffer.alloc(1024);
    const data = decodeInode(raw);
    const m = data.meta;
    m.version = INODE_VERSION_ONE;
    m.type = type;
    m.mode = mode & 0o7777;
    m.inum = inum;
    m.size = 0n;
    m.nlinks = type === ObjType.DIRECTORY ? 2n : 1n;
    m.iparent = dir.inum;
    m.compAlgo = pm.compAlgo;
    m.checkAlgo = pm.checkAlgo;
    m.ctime = m.mtime = m.atime = m.btime = now;
    m.uid = xidToUuid(cred.uid);
    m.gid = xidToUuid(opts.gid ?? cred.gid);
    if (type === ObjType.CDEV || type === ObjType.BDEV) {
      m.rmajor = devMajor(opts.rdev ?? 0);
      m.rminor = devMinor(opts.rdev ?? 0);
    }
    if (type === ObjType.REGFILE || type === ObjType.SOFTLINK) m.opFlags |= OPFLAG_DIRECTDATA;
    // Inodes in the index are named by their number, as the reference names them.
    data.filename = Buffer.from(`0x${inum.toString(16).padStart(16, '0')}`);
    m.nameLen = data.filename.length;
    m.nameKey = inum;
    const n: Node = { inum, bref: null, disk: null, data, dirty: true, opens: 0 };
    this.live.set(inum, n);
    this.dirtyLive.add(inum);
    this.onDirty();
    this.addEntry(dir, name, inum, type);
    const dm = this.touch(dir).meta;
    if (type === ObjType.DIRECTORY && dm.nlinks !== 1n) dm.nlinks += 1n;
    dm.mtime = now;
    dm.ctime = now;
    return n;
  }

  symlink(dir: Node, name: Buffer, target: Buffer, cred: Credentials, now: bigint): Node {
    if (target.length === 0) throw new FsError('ENOENT');
    if (target.length > 4095) throw new FsError('ENAMETOOLONG');
    const n = this.create(dir, name, ObjType.SOFTLINK, 0o777, cred, now);
    this.write(n, 0, target, now);
    return n;
  }

  link(n: Node, dir: Node, name: Buffer, now: bigint): void {
    this.refuseInEmergency();
    if (isDir(n)) throw new FsError('EPERM');
    if (!isDir(dir)) throw new FsError('ENOTDIR');
    this.checkName(name);
    if (this.lookup(dir, name)) throw new FsError('EEXIST');
    if (n.data.meta.nlinks >= LINK_MAX) throw new FsError('EMLINK');
    if (n.data.meta.nlinks === 0n) throw new FsError('ENOENT');
    this.addEntry(dir, name, n.inum, n.data.meta.type);
    const m = this.touch(n).meta;
    m.nlinks += 1n;
    m.ctime = now;
    const dm = this.touch(dir).meta;
    dm.mtime = now;
    dm.ctime = now;
  }

  /** Remove a name; the inode goes when its last link and last open handle are gone. */
  unlink(dir: Node, name: Buffer, now: bigint, wantDir = false): void {
    if (!isDir(dir)) throw new FsError('ENOTDIR');
    const e = this.lookup(dir, name);
    if (!e) throw new FsError('ENOENT');
    const n = this.getInode(e.inum);
    if (wantDir) {
      if (!isDir(n)) throw new FsError('ENOTDIR');
      if (!this.isEmptyDir(n)) throw new FsError('ENOTEMPTY');
    } else if (isDir(n)) {
      throw new FsError('EISDIR');
    }
    this.removeEntry(dir, e);
    const dm = this.touch(dir).meta;
    dm.mtime = now;
    dm.ctime = now;
    if (isDir(n) && dm.nlinks !== 1n && dm.nlinks > 2n) dm.nlinks -= 1n;
    this.dropLink(n, now);
  }

  /**
   * hammer2 destroy: take the entry `name` out of `dir` without looking at
   * the inode it names, which keeps its link count: the way out for an
   * entry whose inode is gone or unreadable.
   */
  destroyEntry(dir: Node, name: Buffer, now: bigint): DirEntry {
    if (!isDir(dir)) throw new FsError('ENOTDIR');
    const e = this.lookup(dir, name);
    if (!e) throw new FsError('ENOENT');
    this.removeEntry(dir, e);
    const dm = this.touch(dir).meta;
    dm.mtime = now;
    dm.ctime = now;
    return e;
  }

  /**
   * hammer2 destroy-inum: take an inode out of the inode index whatever its
   * links, without reading it (it may be the unreadable one). Entries that
   * name it are left as they are; fsck reports them.
   */
  destroyInode(inum: bigint): void {
    if (!this.writable) throw new FsError('EROFS');
    if (inum === ROOT_INUM) throw new FsError('EINVAL', 'the PFS root inode cannot be destroyed (pfs-delete removes a PFS)');
    if (inum <= 0n || inum >= DIRHASH_VISIBLE) throw new FsError('EINVAL', `${inum} is not an inode number`);
    if (this.removed.has(inum)) throw new FsError('ENOENT', `inode ${inum} was removed`);
    const live = this.live.get(inum);
    if (live) {
      live.deleted = true;
      live.destroyed = true; // open handles may still read; changes get ENOENT
      this.retire(live);
    } else {
      const b = lookupKey(this.reader, this.committedRootSet(), inum);
      if (!b || b.key !== inum || b.type !== BrefType.INODE) throw new FsError('ENOENT', `no inode ${inum}`);
      this.removed.add(inum);
      this.clean.delete(Number(inum));
    }
    this.onDirty();
  }

  private dropLink(n: Node, now: bigint): void {
    const m = this.touch(n).meta;
    if (isDir(n)) m.nlinks = 0n;
    else if (m.nlinks > 0n) m.nlinks -= 1n;
    m.ctime = now;
    if (m.nlinks === 0n) {
      n.deleted = true;
      if (n.bref) this.releasedBytes += Number(brefStats(n.bref).dataCount) + 1024;
      // An open inode stays (as an orphan with no links) until its last close.
      if (n.opens === 0) this.retire(n);
    }
  }

  /**
   * A removed inode nobody holds open: keep only its number, to take it out
   * of the inode index at the next flush (rm -r of a large tree must not
   * hold every removed inode in memory until then). Its pending data is
   * never written.
   */
  private retire(n: Node): void {
    this.removed.add(n.inum);
    if (n.bref === null) this.removedNew.add(n.inum);
    if (n.blocks) {
      this.pendingBytes -= n.blocks.size * PBUFSIZE;
      n.blocks = undefined;
    }
    this.live.delete(n.inum);
    this.dirtyLive.delete(n.inum); // the removal keeps the PFS dirty until flushed
    this.clean.delete(Number(n.inum));
  }

  /** Is `anc` an ancestor of (or the same as) `n`? Walks iparent links. */
  private isAncestor(anc: Node, n: Node): boolean {
    let cur: Node = n;
    for (let i = 0; i < 100000; i++) {
      if (cur.inum === anc.inum) return true;
      if (cur === this.root) return false;
      const p = cur.data.meta.iparent;
      if (p === 0n || p === ROOT_INUM) return anc === this.root;
      cur = this.getInode(p);
    }
    throw new MediaError('directory parent chain does not reach the root');
  }

  rename(sdir: Node, sname: Buffer, ddir: Node, dname: Buffer, now: bigint): void {
    this.refuseInEmergency();
    if (!isDir(sdir) || !isDir(ddir)) throw new FsError('ENOTDIR');
    this.checkName(dname);
    const se = this.lookup(sdir, sname);
    if (!se) throw new FsError('ENOENT');
    const n = this.getInode(se.inum);
    const de = this.lookup(ddir, dname);
    if (de && de.inum === se.inum) return; // same file: POSIX says do nothing
    if (isDir(n) && this.isAncestor(n, ddir)) throw new FsError('EINVAL');
    if (de) {
      const t = this.getInode(de.inum);
      if (isDir(n) && !isDir(t)) throw new FsError('ENOTDIR');
      if (!isDir(n) && isDir(t)) throw new FsError('EISDIR');
      if (isDir(t) && !this.isEmptyDir(t)) throw new FsError('ENOTEMPTY');
      this.removeEntry(ddir, de);
      if (isDir(t)) {
        const dm = this.touch(ddir).meta;
        if (dm.nlinks !== 1n && dm.nlinks > 2n) dm.nlinks -= 1n;
      }
      this.dropLink(t, now);
    }
    this.removeEntry(sdir, se);
    this.addEntry(ddir, dname, n.inum, n.data.meta.type);
    const m = this.touch(n).meta;
    m.ctime = now;
    if (isDir(n) && sdir !== ddir) {
      m.iparent = ddir.inum;
      const sm = this.touch(sdir).meta;
      if (sm.nlinks !== 1n && sm.nlinks > 2n) sm.nlinks -= 1n;
      const dm = this.touch(ddir).meta;
      if (dm.nlinks !== 1n) dm.nlinks += 1n;
    }
    for (const d of [sdir, ddir]) {
      const dm = this.touch(d).meta;
      dm.mtime = now;
      dm.ctime = now;
    }
  }

  setattr(n: Node, a: SetAttr, now: bigint): void {
    if (a.size !== undefined) this.truncate(n, a.size, now);
    const m = this.touch(n).meta;
    if (a.mode !== undefined) m.mode = a.mode & 0o7777;
    if (a.uid !== undefined) m.uid = xidToUuid(a.uid);
    if (a.gid !== undefined) m.gid = xidToUuid(a.gid);
    // Times before 1970 are stored as the reference stores them: the
    // microsecond count as an unsigned 64-bit value (two's complement).
    if (a.atime !== undefined) m.atime = BigInt.asUintN(64, a.atime);
    if (a.mtime !== undefined) m.mtime = BigInt.asUintN(64, a.mtime);
    m.ctime = BigInt.asUintN(64, a.ctime ?? now);
  }

  /**
   * setcomp/setcheck: the methods new blocks of this inode (and, by
   * inheritance, new inodes below a directory) are written with. Blocks
   * already on media keep the methods their blockrefs record.
   */
  setMethods(n: Node, m: { comp?: number; check?: number }): void {
    const d = this.touch(n).meta;
    if (m.comp !== undefined) d.compAlgo = m.comp;
    if (m.check !== undefined) d.checkAlgo = m.check;
  }

  /** The root remembers the transaction of the last snapshot taken of this PFS (pfs_lsnap_tid). */
  markSnapshot(tid: bigint): void {
    this.touch(this.root).meta.pfsLsnapTid = tid;
  }

  open(n: Node): void {
    n.opens++;
    if (n !== this.root) this.live.set(n.inum, n);
  }

  /** Last close of an unlinked inode lets it go. */
  release(n: Node): void {
    if (n.opens > 0) n.opens--;
    if (n.destroyed) return; // already out of the index
    if (n.opens === 0 && n.deleted && n !== this.root) {
      this.retire(n);
      this.onDirty();
      return;
    }
    if (n.opens === 0 && n !== this.root && !n.dirty && !n.deleted) {
      this.live.delete(n.inum);
      // A node borrowed from a copy is not kept: the next lookup reads (or repairs) it again.
      if (!n.borrowed) this.clean.set(Number(n.inum), n, NODE_BYTES);
    }
  }

  attr(n: Node): Attr {
    const m = n.data.meta;
    let bytes = 0;
    if (!(m.opFlags & OPFLAG_DIRECTDATA)) {
      if (n.bref && n !== this.root) bytes = Number(brefStats(n.bref).dataCount);
      if (n.blocks?.size) bytes += heldBytes(n.blocks);
    }
    return {
      ino: Number(n.inum),
      mode: typeToIfmt(m.type) | (m.mode & 0o7777),
      nlink: Number(m.nlinks),
      uid: uuidToXid(m.uid),
      gid: uuidToXid(m.gid),
      rdev: m.type === ObjType.CDEV || m.type === ObjType.BDEV ? makedev(m.rmajor, m.rminor) : 0,
      size: Number(m.size),
      blocks: Math.ceil(bytes / 512),
      atime: BigInt.asIntN(64, m.atime),
      mtime: BigInt.asIntN(64, m.mtime),
      ctime: BigInt.asIntN(64, m.ctime),
      btime: BigInt.asIntN(64, m.btime),
      provisional: !!(n.blocks?.size || n.truncFrom !== undefined || n.holes?.size || n.dirents?.size),
    };
  }
}
