// LZ4 block format, in HAMMER2's framing: a 32-bit little-endian compressed
// length, then one raw LZ4 block. Decoding writes straight into the caller's
// buffer and never reads or writes out of bounds, whatever the input.
import { accel } from './accel';

export class CorruptCompressedData extends Error {
  override name = 'CorruptCompressedData';
}

/**
 * Decode one raw LZ4 block src[start,end) into dst[0..). Returns the number
 * of bytes produced. Throws CorruptCompressedData on malformed input or if
 * the output would not fit in dst.
 */
export function lz4DecodeBlock(src: Uint8Array, start: number, end: number, dst: Uint8Array): number {
  if (end > src.length || start > end) throw new CorruptCompressedData('lz4: input past end');
  if (accel) {
    const n = accel.lz4Decompress(src, start, end, dst);
    if (n < 0) throw new CorruptCompressedData('lz4: malformed block or output overflow');
    return n;
  }
  return lz4DecodeBlockJs(src, start, end, dst);
}

/** lz4DecodeBlock in JS: the fallback without the shim, and the reference the native one is tested against. */
export function lz4DecodeBlockJs(src: Uint8Array, start: number, end: number, dst: Uint8Array): number {
  let ip = start;
  let op = 0;
  const dend = dst.length;
  if (end > src.length) throw new CorruptCompressedData('lz4: input past end');
  while (ip < end) {
    const token = src[ip++];
    // literals
    let lit = token >>> 4;
    if (lit === 15) {
      let b: number;
      do {
        if (ip >= end) throw new CorruptCompressedData('lz4: truncated literal length');
        b = src[ip++];
        lit += b;
      } while (b === 255);
    }
    if (lit > 0) {
      if (ip + lit > end) throw new CorruptCompressedData('lz4: literal run past input');
      if (op + lit > dend) throw new CorruptCompressedData('lz4: output overflow');
      dst.set(src.subarray(ip, ip + lit), op);
      ip += lit;
      op += lit;
    }
    if (ip >= end) break; // last sequence has only literals
    // match
    if (ip + 2 > end) throw new CorruptCompressedData('lz4: truncated offset');
    const off = src[ip] | (src[ip + 1] << 8);
    ip += 2;
    if (off === 0 || off > op) throw new CorruptCompressedData('lz4: bad match offset');
    let mlen = (token & 15) + 4;
    if ((token & 15) === 15) {
      let b: number;
      do {
        if (ip >= end) throw new CorruptCompressedData('lz4: truncated match length');
        b = src[ip++];
        mlen += b;
      } while (b === 255);
    }
    if (op + mlen > dend) throw new CorruptCompressedData('lz4: output overflow');
    let from = op - off;
    if (off >= mlen) {
      dst.copyWithin(op, from, from + mlen);
      op += mlen;
    } else {
      // Overlapping copy repeats the last `off` bytes: double the run each step.
      let done = 0;
      let chunk = off;
      while (done < mlen) {
        const n = Math.min(chunk, mlen - done);
        dst.copyWithin(op + done, from, from + n);
        done += n;
        chunk += n;
      }
      op += mlen;
    }
  }
  return op;
}

/** Decode a HAMMER2 LZ4 data block into dst; bytes past the output are zeroed. */
export function lz4DecodeHammer2(src: Uint8Array, dst: Uint8Array): number {
  if (src.length < 4) throw new CorruptCompressedData('lz4: block shorter than its header');
  const clen = (src[0] | (src[1] << 8) | (src[2] << 16) | (src[3] << 24)) >>> 0;
  if (clen > src.length - 4) throw new CorruptCompressedData(`lz4: compressed length ${clen} exceeds block`);
  const n = lz4DecodeBlock(src, 4, 4 + clen, dst);
  if (n < dst.length) dst.fill(0, n);
  return n;
}

/**
 * Compress `src` into HAMMER2 framing. Returns null if the result would not
 * fit in `limit` bytes (the reference only keeps compression that saves space).
 */
let lz4wasm: typeof import('lz4-wasm-nodejs') | undefined;

export function lz4EncodeHammer2(src: Uint8Array, limit: number): Buffer | null {
  // lz4-wasm prepends the uncompressed size; HAMMER2 wants the compressed size.
  // The wasm compressor is loaded on first use (reading and copying blocks never needs it).
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  lz4wasm ??= require('lz4-wasm-nodejs') as typeof import('lz4-wasm-nodejs');
  const out = lz4wasm.compress(src);
  const clen = out.length - 4;
  if (clen + 4 > limit) return null;
  const b = Buffer.from(out.buffer, out.byteOffset, out.length);
  b.writeUInt32LE(clen, 0);
  return b;
}
