// Little-endian 64-bit stores without BigInt arithmetic: the value goes
// through one 8-byte scratch word and is copied bytewise. writeBigUInt64LE
// splits it with BigInt shifts and masks and costs about twice as much,
// and blockref and inode encoding store five to fifteen of them each (every
// blocktable a commit writes). (A DataView per buffer costs more still: most
// buffers encoded into are fresh.)
const word = new BigUint64Array(1);
const bytes = new Uint8Array(word.buffer);
const LITTLE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const U64_MAX = (1n << 64n) - 1n;

/** buf[off..off+8) = v, little-endian. Like writeBigUInt64LE, a value outside [0, 2^64) throws rather than wrap. */
export function putU64(buf: Uint8Array, off: number, v: bigint): void {
  if (!(off >= 0 && off + 8 <= buf.length)) throw new RangeError(`u64 store at ${off} outside a ${buf.length}-byte buffer`);
  if (v < 0n || v > U64_MAX) throw new RangeError(`u64 value ${v} out of range`);
  word[0] = v;
  if (LITTLE) {
    buf[off] = bytes[0];
    buf[off + 1] = bytes[1];
    buf[off + 2] = bytes[2];
    buf[off + 3] = bytes[3];
    buf[off + 4] = bytes[4];
    buf[off + 5] = bytes[5];
    buf[off + 6] = bytes[6];
    buf[off + 7] = bytes[7];
  } else {
    for (let i = 0; i < 8; i++) buf[off + i] = bytes[7 - i];
  }
}
