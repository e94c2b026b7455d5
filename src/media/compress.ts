// Data-block compression (bref.methods low nibble): decoding into a logical
// buffer, and encoding the way the reference keeps results (power-of-two
// physical sizes, only when they save space).
import { CompMethod } from './constants';
import { CorruptCompressedData, lz4DecodeHammer2, lz4EncodeHammer2 } from './lz4';
import { accel } from './accel';

/**
 * Decode a physical data block into `out` (the logical buffer, usually
 * 64 KiB). Uncompressed data is copied; short physical blocks and
 * decompressed output shorter than `out` are zero-filled.
 */
// node:zlib is loaded on first use: most images use lz4 or nothing, and a
// command started once per mirroring pass feels every module it loads.
let zlibModule: typeof import('node:zlib') | undefined;
// eslint-disable-next-line @typescript-eslint/no-var-requires
const zlib = () => (zlibModule ??= require('node:zlib') as typeof import('node:zlib'));

export function decodeData(comp: number, phys: Uint8Array, out: Uint8Array): void {
  switch (comp & 15) {
    case CompMethod.NONE:
    case CompMethod.AUTOZERO: {
      // AUTOZERO stores non-zero blocks uncompressed; all-zero ones have no media.
      const n = Math.min(phys.length, out.length);
      out.set(phys.subarray(0, n), 0);
      if (n < out.length) out.fill(0, n);
      return;
    }
    case CompMethod.LZ4:
      lz4DecodeHammer2(phys, out);
      return;
    case CompMethod.ZLIB: {
      let r: Buffer;
      try {
        // The reference inflates a zlib stream (header + adler32) from the physical block.
        r = zlib().inflateSync(phys, { maxOutputLength: out.length, finishFlush: 2 /* Z_SYNC_FLUSH */ });
      } catch (e) {
        throw new CorruptCompressedData(`zlib: ${(e as Error).message}`);
      }
      out.set(r.subarray(0, out.length), 0);
      if (r.length < out.length) out.fill(0, r.length);
      return;
    }
    default:
      throw new CorruptCompressedData(`unknown compression method ${comp & 15}`);
  }
}

/** True if every byte is zero (32 bits at a time; 64-bit views would allocate a BigInt per word). */
export function isAllZero(b: Uint8Array): boolean {
  if (accel && b.length >= 256) return accel.isZero(b);
  let i = 0;
  const n = b.length;
  if ((b.byteOffset & 3) === 0) {
    const w = new Uint32Array(b.buffer, b.byteOffset, n >>> 2);
    for (let k = 0; k < w.length; k++) if (w[k] !== 0) return false;
    i = w.length << 2;
  }
  for (; i < n; i++) if (b[i] !== 0) return false;
  return true;
}

export const COMP_NAMES: Record<number, string> = { 0: 'none', 1: 'autozero', 2: 'lz4', 3: 'zlib' };

/**
 * Try to compress a logical block of `pblksize` bytes. Returns the bytes to
 * store (already padded to a power-of-two size >= 1 KiB) or null when the
 * reference would store the block uncompressed.
 */
export function encodeData(comp: number, level: number, data: Uint8Array): Buffer | null {
  const algo = comp & 15;
  const pblksize = data.length;
  // The reference gives compression at most half the block (minus the length word).
  if (algo === CompMethod.LZ4 && accel) {
    // Native: compress straight into the block to store, giving up at half.
    const half = pblksize >>> 1;
    const out = Buffer.allocUnsafe(Math.max(half, 4));
    const clen = half > 4 ? accel.lz4Compress(data, out, 4, half - 4) : 0;
    if (clen === 0) return null;
    out.writeUInt32LE(clen, 0);
    let size = 1024;
    while (size < clen + 4) size <<= 1;
    if (size >= pblksize) return null; // also: size <= half, so it fits `out`
    out.fill(0, clen + 4, size);
    return out.subarray(0, size);
  }
  let c: Buffer | null = null;
  if (algo === CompMethod.LZ4) {
    c = lz4EncodeHammer2(data, pblksize / 2);
  } else if (algo === CompMethod.ZLIB) {
    const z = zlib().deflateSync(data, { level: level > 0 ? Math.min(level, 9) : 6 });
    c = z.length <= pblksize / 2 - 4 ? z : null;
  } else {
    return null;
  }
  if (!c) return null;
  let size = 1024;
  while (size < c.length) size <<= 1;
  if (size >= pblksize) return null;
  const out = Buffer.alloc(size);
  c.copy(out, 0);
  return out;
}
