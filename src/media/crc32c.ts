// CRC32C (Castagnoli, reflected 0x82F63B78), the "icrc32" HAMMER2 uses for
// volume header sections, the iscsi32 check method, freemap blocks and the
// directory hash. The native shim does it with the CPU's CRC32 instruction
// (or in C) for anything but short names; the JS slicing-by-8 is the fallback.
import { accel } from './accel';

/** Below this many bytes the JS loop beats a native call. */
const NATIVE_MIN = 128;

const POLY = 0x82f63b78;
const T = new Int32Array(8 * 256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
  T[n] = c;
}
for (let n = 0; n < 256; n++) {
  let c = T[n];
  for (let k = 1; k < 8; k++) {
    c = T[c & 0xff] ^ (c >>> 8);
    T[k * 256 + n] = c;
  }
}

/** Continue a CRC32C over buf[start, end). `crc` is the previous result (0 to start). */
export function crc32cUpdate(crc: number, buf: Uint8Array, start = 0, end = buf.length): number {
  if (accel && end - start >= NATIVE_MIN) return accel.crc32c(crc, buf, start, end);
  return crc32cJs(crc, buf, start, end);
}

/** The JS implementation (also the reference the native one is tested against). */
export function crc32cJs(crc: number, buf: Uint8Array, start = 0, end = buf.length): number {
  let c = ~crc;
  let i = start;
  // Align-independent 8-byte steps.
  const stop8 = end - ((end - i) & 7);
  while (i < stop8) {
    const a = (buf[i] | (buf[i + 1] << 8) | (buf[i + 2] << 16) | (buf[i + 3] << 24)) ^ c;
    const b = buf[i + 4] | (buf[i + 5] << 8) | (buf[i + 6] << 16) | (buf[i + 7] << 24);
    c =
      T[7 * 256 + (a & 0xff)] ^
      T[6 * 256 + ((a >>> 8) & 0xff)] ^
      T[5 * 256 + ((a >>> 16) & 0xff)] ^
      T[4 * 256 + (a >>> 24)] ^
      T[3 * 256 + (b & 0xff)] ^
      T[2 * 256 + ((b >>> 8) & 0xff)] ^
      T[256 + ((b >>> 16) & 0xff)] ^
      T[b >>> 24];
    i += 8;
  }
  while (i < end) c = T[(c ^ buf[i++]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

/** hammer2_icrc32(): CRC32C of a byte range, as an unsigned 32-bit number. */
export function icrc32(buf: Uint8Array, start = 0, end = buf.length): number {
  return crc32cUpdate(0, buf, start, end);
}
