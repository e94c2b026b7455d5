// hammer2_blockref_t: the 128-byte pointer every tree is made of.
//   00 type  01 methods  02 copyid  03 keybits  04 vradix  05 flags  06 leaf_count(16)
//   08 key   10 mirror_tid  18 modify_tid  20 data_off  28 update_tid
//   30 embed[16] (dirent head or stats)   40 check[64]
import { BLOCKREF_BYTES, BrefType, OFF_MASK_RADIX, decCheck, decComp } from './constants';
import { putU64 } from './u64';

export interface Blockref {
  type: number;
  methods: number;
  copyid: number;
  keybits: number;
  vradix: number;
  flags: number;
  leafCount: number;
  key: bigint;
  mirrorTid: bigint;
  modifyTid: bigint;
  dataOff: bigint;
  updateTid: bigint;
  /** 16 bytes: dirent head for DIRENT, data_count/inode_count stats otherwise. */
  embed: Buffer;
  /** 64 bytes of check code (or freemap hints). */
  check: Buffer;
}

export function emptyBlockref(): Blockref {
  return {
    type: BrefType.EMPTY,
    methods: 0,
    copyid: 0,
    keybits: 0,
    vradix: 0,
    flags: 0,
    leafCount: 0,
    key: 0n,
    mirrorTid: 0n,
    modifyTid: 0n,
    dataOff: 0n,
    updateTid: 0n,
    embed: Buffer.alloc(16),
    check: Buffer.alloc(64),
  };
}

/**
 * Decode a blockref whose embed and check fields are views into `buf`: no
 * copies, for readers that never modify what they decode (fsck's walk).
 */
export function decodeBlockrefView(buf: Buffer, off: number): Blockref {
  return {
    type: buf[off],
    methods: buf[off + 1],
    copyid: buf[off + 2],
    keybits: buf[off + 3],
    vradix: buf[off + 4],
    flags: buf[off + 5],
    leafCount: buf.readUInt16LE(off + 6),
    key: buf.readBigUInt64LE(off + 8),
    mirrorTid: buf.readBigUInt64LE(off + 0x10),
    modifyTid: buf.readBigUInt64LE(off + 0x18),
    dataOff: buf.readBigUInt64LE(off + 0x20),
    updateTid: buf.readBigUInt64LE(off + 0x28),
    embed: buf.subarray(off + 0x30, off + 0x40),
    check: buf.subarray(off + 0x40, off + 0x80),
  };
}

/** The type byte of the blockref at buf[off]: raw media scans filter on it before decoding. */
export const rawBrefType = (buf: Uint8Array, off: number): number => buf[off];
/** The modify_tid of the blockref at buf[off]. */
export const rawBrefModifyTid = (buf: Buffer, off: number): bigint => buf.readBigUInt64LE(off + 0x18);

/** The non-EMPTY slots of a blockref table, in slot order, read in place. */
export interface TableSlots {
  /** Byte offset of each slot in the table. */
  offs: Uint32Array;
  keys: BigUint64Array;
  keybits: Uint8Array;
}

/**
 * The offsets, keys and keybits of the live entries of the table in `buf`
 * without decoding them (a lookup needs only these, and one entry).
 */
export function tableSlots(buf: Buffer): TableSlots {
  const end = buf.length - (buf.length % BLOCKREF_BYTES);
  let n = 0;
  for (let o = 0; o < end; o += BLOCKREF_BYTES) if (buf[o] !== BrefType.EMPTY) n++;
  const offs = new Uint32Array(n);
  const keys = new BigUint64Array(n);
  const keybits = new Uint8Array(n);
  for (let o = 0, i = 0; o < end; o += BLOCKREF_BYTES) {
    if (buf[o] === BrefType.EMPTY) continue;
    offs[i] = o;
    keybits[i] = buf[o + 3];
    keys[i++] = buf.readBigUInt64LE(o + 8);
  }
  return { offs, keys, keybits };
}

/** Decode a blockref with private copies of its embed and check fields (safe to modify). */
export function decodeBlockref(buf: Buffer, off: number): Blockref {
  const b = decodeBlockrefView(buf, off);
  b.embed = Buffer.from(b.embed);
  b.check = Buffer.from(b.check);
  return b;
}

export function encodeBlockref(b: Blockref, buf: Buffer, off: number): void {
  buf[off] = b.type;
  buf[off + 1] = b.methods;
  buf[off + 2] = b.copyid;
  buf[off + 3] = b.keybits;
  buf[off + 4] = b.vradix;
  buf[off + 5] = b.flags;
  buf.writeUInt16LE(b.leafCount, off + 6);
  putU64(buf, off + 8, b.key);
  putU64(buf, off + 0x10, b.mirrorTid);
  putU64(buf, off + 0x18, b.modifyTid);
  putU64(buf, off + 0x20, b.dataOff);
  putU64(buf, off + 0x28, b.updateTid);
  b.embed.copy(buf, off + 0x30, 0, 16);
  b.check.copy(buf, off + 0x40, 0, 64);
}

/**
 * An entry of a blocktable read in place that a tree update passes on
 * unchanged: only what routing needs is decoded, and it is written into the
 * new table by copying its 128 bytes (encodeEntry), which is what decoding
 * and encoding it again would give. `raw` is the table's cached block: never
 * modify it.
 */
export interface SlotRef {
  type: number;
  key: bigint;
  keybits: number;
  raw: Buffer;
  off: number;
}

/** A blocktable entry: decoded, or still in its table's bytes. */
export type TableEntry = Blockref | SlotRef;

export const isSlotRef = (e: TableEntry): e is SlotRef => (e as SlotRef).raw !== undefined;

/** Write a blocktable entry at buf[off] (a SlotRef's bytes as they are). */
export function encodeEntry(e: TableEntry, buf: Buffer, off: number): void {
  if (isSlotRef(e)) e.raw.copy(buf, off, e.off, e.off + BLOCKREF_BYTES);
  else encodeBlockref(e, buf, off);
}

/** The entry decoded (a SlotRef as a view of its table's bytes). */
export const entryBref = (e: TableEntry): Blockref => (isSlotRef(e) ? decodeBlockrefView(e.raw, e.off) : e);

/** Decode `count` consecutive blockrefs (a blockset or an indirect block). */
export function decodeBlockrefArray(buf: Buffer, off: number, count: number): Blockref[] {
  const out: Blockref[] = new Array(count);
  for (let i = 0; i < count; i++) out[i] = decodeBlockref(buf, off + i * BLOCKREF_BYTES);
  return out;
}

const ZERO_BREF = Buffer.alloc(BLOCKREF_BYTES);
/** The one EMPTY slot every all-zero table entry decodes to (frozen: see below). */
const SHARED_EMPTY: Blockref = Object.freeze({ ...emptyBlockref(), embed: Buffer.alloc(0), check: Buffer.alloc(0) }) as Blockref;

/**
 * Decode a table for a cache that keeps it and hands it out: as
 * decodeBlockrefArray, except that every all-zero slot is one shared,
 * frozen EMPTY entry, and the other entries' embed and check fields are
 * views into `buf` (which the cache keeps anyway) rather than copies.
 * Indirect tables are mostly empty slots, and a private object with two
 * copies for each cost more to make, keep and collect than the rest of the
 * table; walking a tree of 100 000 inodes decodes 100 000 entries. Callers
 * must never modify the entries (nor `buf`).
 */
export function decodeBlockrefTable(buf: Buffer, off: number, count: number): Blockref[] {
  const out: Blockref[] = new Array(count);
  for (let i = 0; i < count; i++) {
    const at = off + i * BLOCKREF_BYTES;
    out[i] = buf[at] === BrefType.EMPTY && buf.compare(ZERO_BREF, 0, BLOCKREF_BYTES, at, at + BLOCKREF_BYTES) === 0 ? SHARED_EMPTY : decodeBlockrefView(buf, at);
  }
  return out;
}

/** Physical size in bytes encoded in data_off's low 6 bits (0 = no media). */
export function brefBytes(b: Blockref): number {
  const radix = Number(b.dataOff & OFF_MASK_RADIX);
  return radix === 0 ? 0 : 2 ** radix;
}

export function brefRadix(b: Blockref): number {
  return Number(b.dataOff & OFF_MASK_RADIX);
}

/** Media offset (logical, across volumes) of the block. */
export function brefOffset(b: Blockref): bigint {
  return b.dataOff & ~OFF_MASK_RADIX;
}

export const brefCheck = (b: Blockref): number => decCheck(b.methods);
export const brefComp = (b: Blockref): number => decComp(b.methods);

/** Last key covered by a bref: key | (2^keybits - 1). */
export function brefKeyEnd(b: Pick<Blockref, 'key' | 'keybits'>): bigint {
  if (b.keybits >= 64) return 0xffffffffffffffffn;
  return b.key + (1n << BigInt(b.keybits)) - 1n;
}

export const BREF_TYPE_NAMES: Record<number, string> = {
  0: 'empty',
  1: 'inode',
  2: 'indirect',
  3: 'data',
  4: 'dirent',
  5: 'freemap_node',
  6: 'freemap_leaf',
  7: 'invalid',
  254: 'freemap',
  255: 'volume',
};

/** Dirent head inside bref.embed. */
export interface DirentHead {
  inum: bigint;
  namlen: number;
  type: number;
}

export function direntHead(b: Blockref): DirentHead {
  return { inum: b.embed.readBigUInt64LE(0), namlen: b.embed.readUInt16LE(8), type: b.embed[10] };
}

export function setDirentHead(b: Blockref, h: DirentHead): void {
  b.embed.fill(0);
  putU64(b.embed, 0, h.inum);
  b.embed.writeUInt16LE(h.namlen, 8);
  b.embed[10] = h.type;
}

/** Statistics in bref.embed for INODE and INDIRECT brefs. */
export function brefStats(b: Blockref): { dataCount: bigint; inodeCount: bigint } {
  return { dataCount: b.embed.readBigUInt64LE(0), inodeCount: b.embed.readBigUInt64LE(8) };
}

/** Allocation hints a FREEMAP_NODE or FREEMAP_LEAF bref keeps in check, after its icrc32. */
export function brefFreemapHints(b: Blockref): { bigmask: number; avail: bigint } {
  return { bigmask: b.check.readUInt32LE(4), avail: b.check.readBigUInt64LE(8) };
}
