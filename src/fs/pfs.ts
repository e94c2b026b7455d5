// Filesystem semantics of one PFS, read side: inodes by number, directory
// lookup and listing, file and symlink contents, attributes.
//
// Layout reminder: a PFS's inodes all live in the PFS root inode's block tree,
// keyed by inode number (< 2^63); the root directory's entries share that tree
// with hash keys (bit 63 set). Other directories hold only their entries.
import {
  Blockref,
  BrefType,
  decodeInode,
  direntHead,
  dirhash,
  DIRHASH_LOMASK,
  DIRHASH_VISIBLE,
  inodeBlockset,
  InodeData,
  KEY_MAX,
  ObjType,
  OPFLAG_DIRECTDATA,
  PBUFSIZE,
  uuidToXid,
  EMBEDDED_BYTES,
  brefStats,
} from '../media';
import { BlockReader, FsError, hex, LruCache, MediaError, PfsEntry, scanRange, lookupKey } from '../engine';

export const ROOT_INUM = 1n;

export interface Inode {
  inum: bigint;
  /** The bref that points at the inode block (for the root: the super-root's). */
  bref: Blockref;
  data: InodeData;
}

export interface DirEntry {
  name: Buffer;
  inum: bigint;
  /** HAMMER2 object type from the entry (OBJTYPE_*). */
  type: number;
  key: bigint;
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

/** Linux makedev() for the FUSE st_rdev. */
export const makedev = (maj: number, min: number): number =>
  ((maj & 0xfff) << 8) | (min & 0xff) | ((min & ~0xff) << 12);

const MAX_FILE_SIZE = 2n ** 63n - 1n;

export class Pfs {
  readonly root: Inode;
  private inodeCache = new LruCache<bigint, Inode>(16 * 1024 * 1024);

  constructor(
    readonly reader: BlockReader,
    readonly entry: PfsEntry,
  ) {
    this.root = { inum: ROOT_INUM, bref: entry.bref, data: entry.inode };
    this.validate(this.root);
  }

  get name(): string {
    return this.entry.name;
  }

  private get irootSet(): Blockref[] {
    return inodeBlockset(this.root.data);
  }

  private validate(ip: Inode): void {
    const m = ip.data.meta;
    if (S_IFMT[m.type] === undefined) throw new MediaError(`inode ${ip.inum} has unknown type ${m.type}`, ip.bref.dataOff);
    if (m.size > MAX_FILE_SIZE) throw new MediaError(`inode ${ip.inum} has absurd size ${m.size}`, ip.bref.dataOff);
    if (m.opFlags & OPFLAG_DIRECTDATA && m.size > BigInt(EMBEDDED_BYTES)) {
      throw new MediaError(`inode ${ip.inum} claims ${m.size} bytes of embedded data`, ip.bref.dataOff);
    }
  }

  /** Load an inode by number. Throws FsError(ENOENT) if absent, MediaError if corrupt. */
  getInode(inum: bigint): Inode {
    if (inum === ROOT_INUM) return this.root;
    const hit = this.inodeCache.get(inum);
    if (hit) return hit;
    if (inum >= DIRHASH_VISIBLE) throw new FsError('ENOENT', `inode ${inum} out of range`);
    const b = lookupKey(this.reader, this.irootSet, inum);
    if (!b || b.key !== inum || b.type !== BrefType.INODE) throw new FsError('ENOENT', `no inode ${inum}`);
    const data = decodeInode(this.reader.readPhysical(b));
    if (data.meta.inum !== inum) {
      throw new MediaError(`inode block at ${hex(b.dataOff)} holds inode ${data.meta.inum}, expected ${inum}`, b.dataOff);
    }
    const ip: Inode = { inum, bref: b, data };
    this.validate(ip);
    this.inodeCache.set(inum, ip, 1200);
    return ip;
  }

  /** Find `name` in directory `dir`. Hash collisions are resolved by comparing names. */
  lookup(dir: Inode, name: Buffer): DirEntry | null {
    if (dir.data.meta.type !== ObjType.DIRECTORY) throw new FsError('ENOTDIR');
    const key = dirhash(name);
    let found: DirEntry | null = null;
    scanRange(this.reader, inodeBlockset(dir.data), key, key | DIRHASH_LOMASK, (b) => {
      const e = this.entryOf(b);
      if (e && e.name.equals(name)) {
        found = e;
        return true;
      }
    });
    return found;
  }

  /** Decode a directory-tree leaf as an entry; null for leaves that are not entries. */
  private entryOf(b: Blockref): DirEntry | null {
    if (b.type === BrefType.DIRENT) {
      const h = direntHead(b);
      if (h.namlen === 0 || h.namlen > 255) throw new MediaError(`dirent ${hex(b.key)} has name length ${h.namlen}`, b.dataOff);
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

  /** Every entry of a directory, in hash order (without "." and ".."). */
  readdir(dir: Inode): DirEntry[] {
    if (dir.data.meta.type !== ObjType.DIRECTORY) throw new FsError('ENOTDIR');
    const out: DirEntry[] = [];
    scanRange(this.reader, inodeBlockset(dir.data), DIRHASH_VISIBLE, KEY_MAX, (b) => {
      const e = this.entryOf(b);
      if (e) out.push(e);
    });
    return out;
  }

  /** Resolve a PFS-absolute path ("/a/b"), without following symlinks. */
  resolve(path: string): Inode {
    let ip = this.root;
    for (const comp of path.split('/')) {
      if (comp === '' || comp === '.') continue;
      if (comp === '..') {
        const p = ip.data.meta.iparent;
        ip = p === 0n ? this.root : this.getInode(p);
        continue;
      }
      const name = Buffer.from(comp, 'utf8');
      if (name.length > 255) throw new FsError('ENAMETOOLONG');
      const e = this.lookup(ip, name);
      if (!e) throw new FsError('ENOENT');
      ip = this.getInode(e.inum);
    }
    return ip;
  }

  /** Read up to `len` bytes at `pos` from a file or symlink; short only at EOF. */
  read(ip: Inode, pos: number, len: number): Buffer {
    const m = ip.data.meta;
    if (m.type === ObjType.DIRECTORY) throw new FsError('EISDIR');
    const size = Number(m.size);
    if (pos >= size || len <= 0) return Buffer.alloc(0);
    const n = Math.min(len, size - pos);
    const out = Buffer.alloc(n);
    if (m.opFlags & OPFLAG_DIRECTDATA) {
      ip.data.u.copy(out, 0, pos, pos + n);
      return out;
    }
    const end = pos + n; // exclusive
    let scratch: Buffer | null = null;
    scanRange(this.reader, inodeBlockset(ip.data), BigInt(pos), BigInt(end - 1), (b) => {
      if (b.type !== BrefType.DATA) {
        throw new MediaError(`inode ${ip.inum}: ${b.type} blockref among file data`, b.dataOff);
      }
      if (b.keybits < 10 || b.keybits > 16) {
        throw new MediaError(`inode ${ip.inum}: data block with keybits ${b.keybits}`, b.dataOff);
      }
      const lsize = 1 << b.keybits;
      const lbase = Number(b.key);
      const from = Math.max(pos, lbase);
      const to = Math.min(end, lbase + lsize);
      if (from === lbase && to === lbase + lsize) {
        this.reader.readData(b, out.subarray(from - pos, to - pos));
      } else {
        scratch ??= Buffer.allocUnsafe(PBUFSIZE);
        const s = scratch.subarray(0, lsize);
        this.reader.readData(b, s);
        s.copy(out, from - pos, from - lbase, to - lbase);
      }
    });
    return out;
  }

  readlink(ip: Inode): Buffer {
    if (ip.data.meta.type !== ObjType.SOFTLINK) throw new FsError('EINVAL');
    return this.read(ip, 0, Number(ip.data.meta.size));
  }

  attr(ip: Inode): Attr {
    const m = ip.data.meta;
    const dataCount = ip.inum === ROOT_INUM ? 0n : brefStats(ip.bref).dataCount;
    let bytes = Number(dataCount);
    if (m.opFlags & OPFLAG_DIRECTDATA || bytes === 0) bytes = 0;
    return {
      ino: Number(ip.inum),
      mode: typeToIfmt(m.type) | (m.mode & 0o7777),
      nlink: Number(m.nlinks),
      uid: uuidToXid(m.uid),
      gid: uuidToXid(m.gid),
      rdev: m.type === ObjType.CDEV || m.type === ObjType.BDEV ? makedev(m.rmajor, m.rminor) : 0,
      size: Number(m.size),
      blocks: Math.ceil(bytes / 512),
      atime: m.atime,
      mtime: m.mtime,
      ctime: m.ctime,
      btime: m.btime,
    };
  }
}
