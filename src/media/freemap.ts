// Freemap leaf contents: hammer2_bmap_data_t, 128 bytes managing one 4 MiB
// segment with 2 bits per 16 KiB block (00 free, 11 allocated; 01/10 are
// bulkfree's staging states), 256 of them per 32 KiB leaf (1 GiB).
import { BMAP_DATA_BYTES, BMAP_ELEMENTS, FREEMAP_COUNT } from './constants';

export interface BmapData {
  linear: number;
  class: number;
  avail: number;
  bitmapq: BigUint64Array; // 8 x 64 bits
}

export function decodeBmap(buf: Buffer, off: number): BmapData {
  const bitmapq = new BigUint64Array(BMAP_ELEMENTS);
  for (let i = 0; i < BMAP_ELEMENTS; i++) bitmapq[i] = buf.readBigUInt64LE(off + 0x40 + i * 8);
  return {
    linear: buf.readInt32LE(off),
    class: buf.readUInt16LE(off + 4),
    avail: buf.readUInt32LE(off + 0x1c),
    bitmapq,
  };
}

export function encodeBmap(b: BmapData, buf: Buffer, off: number): void {
  buf.fill(0, off, off + BMAP_DATA_BYTES);
  buf.writeInt32LE(b.linear, off);
  buf.writeUInt16LE(b.class, off + 4);
  buf.writeUInt32LE(b.avail >>> 0, off + 0x1c);
  for (let i = 0; i < BMAP_ELEMENTS; i++) buf.writeBigUInt64LE(b.bitmapq[i], off + 0x40 + i * 8);
}

export function decodeFreemapLeaf(buf: Buffer): BmapData[] {
  const out: BmapData[] = [];
  for (let i = 0; i < FREEMAP_COUNT; i++) out.push(decodeBmap(buf, i * BMAP_DATA_BYTES));
  return out;
}

/** 2-bit state of 16 KiB block `n` (0..255) within a bmap. */
export function bmapBlockState(b: BmapData, n: number): number {
  const e = n >>> 5;
  const shift = BigInt((n & 31) * 2);
  return Number((b.bitmapq[e] >> shift) & 3n);
}
