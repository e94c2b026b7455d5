// Directory hashing and directory-entry names.
import { icrc32 } from './crc32c';

const isSep = (c: number) => c === 0x2e /* . */ || c === 0x2d /* - */ || c === 0x5f /* _ */ || c === 0x7e; /* ~ */

/**
 * hammer2_dirhash(): bits 63..32 are the sum of the CRC32Cs of the name's
 * fields (split at . - _ ~) with bit 63 forced; bits 31..16 come from a CRC of
 * the whole name; bit 15 is set so readdir cookies 0..0x7fff stay free for
 * "." and "..". The low 15 bits are left for collision iteration.
 */
export function dirhash(name: Uint8Array): bigint {
  let crcx = 0;
  let j = 0;
  let i = 0;
  for (; i < name.length; i++) {
    if (isSep(name[i])) {
      if (i !== j) crcx = (crcx + icrc32(name, j, i)) >>> 0;
      j = i + 1;
    }
  }
  if (i !== j) crcx = (crcx + icrc32(name, j, i)) >>> 0;
  crcx = (crcx | 0x80000000) >>> 0;
  let key = BigInt(crcx) << 32n;
  let c2 = icrc32(name, 0, name.length);
  c2 = (c2 ^ (c2 << 16)) >>> 0;
  key |= BigInt((c2 & 0xffff0000) >>> 0);
  key |= 0x8000n;
  return key;
}
