// hammer2_inode_data_t: 1024 bytes = 256-byte meta, 256-byte filename,
// 512 bytes of either a 4-entry blockset or embedded (DIRECTDATA) bytes.
import { decodeBlockrefArray, decodeBlockrefView, encodeBlockref, Blockref } from './blockref';
import { EMBEDDED_BYTES, INODE_BYTES, OPFLAG_DIRECTDATA, SET_COUNT } from './constants';
import { putU64 } from './u64';

export interface InodeMeta {
  version: number;
  pfsSubtype: number;
  uflags: number;
  rmajor: number;
  rminor: number;
  /** Times in microseconds since the epoch. */
  ctime: bigint;
  mtime: bigint;
  atime: bigint;
  btime: bigint;
  uid: Buffer;
  gid: Buffer;
  type: number;
  opFlags: number;
  capFlags: number;
  mode: number;
  inum: bigint;
  size: bigint;
  nlinks: bigint;
  iparent: bigint;
  nameKey: bigint;
  nameLen: number;
  ncopies: number;
  compAlgo: number;
  checkAlgo: number;
  pfsNmasters: number;
  pfsType: number;
  pfsInum: bigint;
  pfsClid: Buffer;
  pfsFsid: Buffer;
  dataQuota: bigint;
  inodeQuota: bigint;
  pfsLsnapTid: bigint;
  decryptCheck: bigint;
}

export interface InodeData {
  meta: InodeMeta;
  /** Filename bytes (name_len of them). */
  filename: Buffer;
  /** The 512-byte union: blockset or embedded data. */
  u: Buffer;
  /**
   * Raw 1024 bytes; kept so reserved/unknown fields survive a rewrite. Only
   * a base for encodeInode: the fields above may be views of it (decodeInode)
   * or of an older copy (after encodeInode), so read them, not these bytes.
   */
  raw: Buffer;
}

export function decodeInode(raw: Buffer): InodeData {
  if (raw.length < INODE_BYTES) throw new Error(`inode block is ${raw.length} bytes, need ${INODE_BYTES}`);
  // A private copy; the fields below are views of it. encodeInode writes a
  // new buffer (and keeps that as raw), so what it handed out for writing
  // never changes through them.
  const r = Buffer.from(raw.subarray(0, INODE_BYTES));
  const nameLen = r.readUInt16LE(0x80);
  const meta: InodeMeta = {
    version: r.readUInt16LE(0),
    pfsSubtype: r[3],
    uflags: r.readUInt32LE(4),
    rmajor: r.readUInt32LE(8),
    rminor: r.readUInt32LE(0xc),
    ctime: r.readBigUInt64LE(0x10),
    mtime: r.readBigUInt64LE(0x18),
    atime: r.readBigUInt64LE(0x20),
    btime: r.readBigUInt64LE(0x28),
    uid: r.subarray(0x30, 0x40),
    gid: r.subarray(0x40, 0x50),
    type: r[0x50],
    opFlags: r[0x51],
    capFlags: r.readUInt16LE(0x52),
    mode: r.readUInt32LE(0x54),
    inum: r.readBigUInt64LE(0x58),
    size: r.readBigUInt64LE(0x60),
    nlinks: r.readBigUInt64LE(0x68),
    iparent: r.readBigUInt64LE(0x70),
    nameKey: r.readBigUInt64LE(0x78),
    nameLen,
    ncopies: r[0x82],
    compAlgo: r[0x83],
    checkAlgo: r[0x85],
    pfsNmasters: r[0x86],
    pfsType: r[0x87],
    pfsInum: r.readBigUInt64LE(0x88),
    pfsClid: r.subarray(0x90, 0xa0),
    pfsFsid: r.subarray(0xa0, 0xb0),
    dataQuota: r.readBigUInt64LE(0xb0),
    inodeQuota: r.readBigUInt64LE(0xc0),
    pfsLsnapTid: r.readBigUInt64LE(0xd0),
    decryptCheck: r.readBigUInt64LE(0xe0),
  };
  return {
    meta,
    filename: r.subarray(0x100, 0x100 + Math.min(nameLen, 256)),
    u: r.subarray(0x200, 0x200 + EMBEDDED_BYTES),
    raw: r,
  };
}

export function encodeInode(ip: InodeData): Buffer {
  const r = Buffer.from(ip.raw.length === INODE_BYTES ? ip.raw : Buffer.alloc(INODE_BYTES));
  const m = ip.meta;
  r.writeUInt16LE(m.version, 0);
  r[3] = m.pfsSubtype;
  r.writeUInt32LE(m.uflags >>> 0, 4);
  r.writeUInt32LE(m.rmajor >>> 0, 8);
  r.writeUInt32LE(m.rminor >>> 0, 0xc);
  putU64(r, 0x10, m.ctime);
  putU64(r, 0x18, m.mtime);
  putU64(r, 0x20, m.atime);
  putU64(r, 0x28, m.btime);
  m.uid.copy(r, 0x30, 0, 16);
  m.gid.copy(r, 0x40, 0, 16);
  r[0x50] = m.type;
  r[0x51] = m.opFlags;
  r.writeUInt16LE(m.capFlags, 0x52);
  r.writeUInt32LE(m.mode >>> 0, 0x54);
  putU64(r, 0x58, m.inum);
  putU64(r, 0x60, m.size);
  putU64(r, 0x68, m.nlinks);
  putU64(r, 0x70, m.iparent);
  putU64(r, 0x78, m.nameKey);
  r.writeUInt16LE(m.nameLen, 0x80);
  r[0x82] = m.ncopies;
  r[0x83] = m.compAlgo;
  r[0x85] = m.checkAlgo;
  r[0x86] = m.pfsNmasters;
  r[0x87] = m.pfsType;
  putU64(r, 0x88, m.pfsInum);
  m.pfsClid.copy(r, 0x90, 0, 16);
  m.pfsFsid.copy(r, 0xa0, 0, 16);
  putU64(r, 0xb0, m.dataQuota);
  putU64(r, 0xc0, m.inodeQuota);
  putU64(r, 0xd0, m.pfsLsnapTid);
  putU64(r, 0xe0, m.decryptCheck);
  r.fill(0, 0x100, 0x200);
  ip.filename.copy(r, 0x100, 0, Math.min(ip.filename.length, 256));
  ip.u.copy(r, 0x200, 0, EMBEDDED_BYTES);
  ip.raw = r;
  return r;
}

/**
 * The blockset straight from an inode's media bytes, without decoding the
 * rest (null when the inode embeds its data): for walks over every inode,
 * such as bulkfree. The blockrefs are views of `raw`.
 */
export function rawInodeBlockset(raw: Buffer): Blockref[] | null {
  if (raw.length < INODE_BYTES) throw new Error(`inode block is ${raw.length} bytes, need ${INODE_BYTES}`);
  if (raw[0x51] & OPFLAG_DIRECTDATA) return null;
  const out: Blockref[] = [];
  for (let i = 0; i < SET_COUNT; i++) out.push(decodeBlockrefView(raw, 0x200 + i * 128));
  return out;
}

/**
 * The fields a raw media scan filters candidate inodes on, read in place at
 * raw[off] (decodeInode copies the whole inode): type, op_flags, inum, iparent.
 */
export function peekInode(raw: Buffer, off = 0): { type: number; opFlags: number; inum: bigint; iparent: bigint } {
  return {
    type: raw[off + 0x50],
    opFlags: raw[off + 0x51],
    inum: raw.readBigUInt64LE(off + 0x58),
    iparent: raw.readBigUInt64LE(off + 0x70),
  };
}

/** The inode's 4-entry blockset (meaningless when DIRECTDATA is set). */
export function inodeBlockset(ip: InodeData): Blockref[] {
  return decodeBlockrefArray(ip.u, 0, SET_COUNT);
}

export function setInodeBlockset(ip: InodeData, set: Blockref[]): void {
  ip.u.fill(0);
  for (let i = 0; i < SET_COUNT; i++) encodeBlockref(set[i], ip.u, i * 128);
}
