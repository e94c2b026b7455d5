// Freemap leaf contents: hammer2_bmap_data_t, 128 bytes managing one 4 MiB
// segment with 2 bits per 16 KiB block (00 free, 11 allocated; 10 is
// bulkfree's staging state, 01 unused), 256 of them per 32 KiB leaf (1 GiB).
// Accessors work in place on the leaf's buffer: the allocator, bulkfree and
// fsck all read and change leaves through them.
import { BMAP_DATA_BYTES } from './constants';

/** Field offsets inside one bmap. */
export const BMAP_LINEAR = 0x00; // i32: sub-16 KiB packing cursor within the segment
export const BMAP_CLASS = 0x04; // u16: (bref type << 8) | 16, 0 when the segment is free
export const BMAP_AVAIL = 0x1c; // u32: free bytes = 16 KiB x (number of 00 pairs)
export const BMAP_BITMAP = 0x40; // 8 x u64, block b at bits 2*(b%32) of word b/32

export const bmapBase = (n: number): number => n * BMAP_DATA_BYTES;

export const bmapLinear = (leaf: Buffer, n: number): number => leaf.readInt32LE(bmapBase(n) + BMAP_LINEAR);
export const setBmapLinear = (leaf: Buffer, n: number, v: number): void => {
  leaf.writeInt32LE(v, bmapBase(n) + BMAP_LINEAR);
};
export const bmapClass = (leaf: Buffer, n: number): number => leaf.readUInt16LE(bmapBase(n) + BMAP_CLASS);
export const setBmapClass = (leaf: Buffer, n: number, v: number): void => {
  leaf.writeUInt16LE(v, bmapBase(n) + BMAP_CLASS);
};
export const bmapAvail = (leaf: Buffer, n: number): number => leaf.readUInt32LE(bmapBase(n) + BMAP_AVAIL);
export const setBmapAvail = (leaf: Buffer, n: number, v: number): void => {
  leaf.writeUInt32LE(v >>> 0, bmapBase(n) + BMAP_AVAIL);
};

// The 64-bit words are read and written as 32-bit halves (16 blocks each):
// a BigInt per read would put an allocation in the allocator's inner loops.

/** 2-bit state of 16 KiB block `blk` (0..255) of bmap `n`. */
export function bmapPair(leaf: Buffer, n: number, blk: number): number {
  const o = bmapBase(n) + BMAP_BITMAP + (blk >> 4) * 4;
  return (leaf.readUInt32LE(o) >>> ((blk & 15) * 2)) & 3;
}

/** Word `i` (0..7) of bmap `n`'s bitmap as stored (blocks 32i..32i+31), for dumps. */
export const bmapWord = (leaf: Buffer, n: number, i: number): bigint => leaf.readBigUInt64LE(bmapBase(n) + BMAP_BITMAP + i * 8);

/** Set `count` consecutive blocks from `blk` to state `v`. */
export function setBmapPairs(leaf: Buffer, n: number, blk: number, count: number, v: number): void {
  for (let i = 0; i < count; i++) {
    const b = blk + i;
    const o = bmapBase(n) + BMAP_BITMAP + (b >> 4) * 4;
    const sh = (b & 15) * 2;
    const w = leaf.readUInt32LE(o);
    leaf.writeUInt32LE(((w & ~(3 << sh)) | (v << sh)) >>> 0, o);
  }
}

/** Mark a whole segment in use and closed to packing (reserved areas, space past the end). */
export function setBmapFull(leaf: Buffer, n: number): void {
  setBmapLinear(leaf, n, 1 << 22);
  const o = bmapBase(n) + BMAP_BITMAP;
  leaf.fill(0xff, o, o + 64);
}
