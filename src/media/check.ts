// Check codes of blocks (bref.methods high nibble), computed over the
// physical (possibly compressed) bytes of the block.
import { CheckMethod, XXH_HAMMER2_SEED } from './constants';
import { icrc32 } from './crc32c';
import { accel } from './accel';

let h64Raw: ((b: Uint8Array, seed?: bigint) => bigint) | null = null;

/**
 * xxhash-wasm instantiates asynchronously: every tool awaits this once at
 * start. With the native shim's xxh64 the wasm one is the fallback only,
 * and it is not loaded (a command started once per mirroring pass feels
 * every module it loads) unless `wasm` asks for it (tests compare the two).
 */
export async function initCodecs(o: { wasm?: boolean } = {}): Promise<void> {
  if (h64Raw || (accel && !o.wasm)) return;
  h64Raw = (await (await import('xxhash-wasm')).default()).h64Raw;
}

const xxOut = Buffer.alloc(8);

/** XXH64 with HAMMER2's seed ("MattDlln"). */
export function xxh64(buf: Uint8Array): bigint {
  if (accel) {
    accel.xxh64(buf, xxOut, 0);
    return xxOut.readBigUInt64LE(0);
  }
  return xxh64Wasm(buf);
}

/** The wasm implementation (the fallback, and what tests compare the native one with). */
export function xxh64Wasm(buf: Uint8Array): bigint {
  if (!h64Raw) throw new Error('codecs not initialised: call initCodecs() first');
  return h64Raw(buf, XXH_HAMMER2_SEED);
}

let createHash: typeof import('node:crypto').createHash | undefined;

/** sha192: SHA-256 with its 4th 64-bit word folded (xor) into the 3rd, first 24 bytes kept. */
export function sha192(buf: Uint8Array): Buffer {
  // Loaded on first use: node:crypto costs a command's start-up more than most checks need.
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  createHash ??= (require('node:crypto') as typeof import('node:crypto')).createHash;
  const d = createHash('sha256').update(buf).digest();
  for (let i = 16; i < 24; i++) d[i] ^= d[i + 8];
  return d.subarray(0, 24);
}

/**
 * Compute the 64-byte check field for `data` under `method`.
 * NONE and DISABLED leave the field zeroed.
 */
export function computeCheck(method: number, data: Uint8Array, out: Buffer = Buffer.alloc(64)): Buffer {
  out.fill(0);
  switch (method) {
    case CheckMethod.ISCSI32:
    case CheckMethod.FREEMAP:
      out.writeUInt32LE(icrc32(data), 0);
      break;
    case CheckMethod.XXHASH64:
      if (accel) accel.xxh64(data, out, 0);
      else out.writeBigUInt64LE(xxh64Wasm(data), 0);
      break;
    case CheckMethod.SHA192:
      sha192(data).copy(out, 0);
      break;
    case CheckMethod.NONE:
    case CheckMethod.DISABLED:
      break;
    default:
      throw new Error(`unknown check method ${method}`);
  }
  return out;
}

/**
 * Verify `data` against a bref's 64-byte check field (the buffer region at
 * check[0..64)). Returns true if the method says the data is good.
 * Unknown methods fail: a block we cannot verify is not trusted.
 */
export function verifyCheck(method: number, check: Uint8Array, data: Uint8Array): boolean {
  const dv = Buffer.from(check.buffer, check.byteOffset, check.byteLength);
  switch (method) {
    case CheckMethod.NONE:
    case CheckMethod.DISABLED:
      return true;
    case CheckMethod.ISCSI32:
      return dv.readUInt32LE(0) === icrc32(data);
    case CheckMethod.FREEMAP:
      return dv.readUInt32LE(0) === icrc32(data);
    case CheckMethod.XXHASH64:
      if (accel) {
        accel.xxh64(data, xxOut, 0);
        return xxOut.equals(dv.subarray(0, 8));
      }
      return dv.readBigUInt64LE(0) === xxh64Wasm(data);
    case CheckMethod.SHA192:
      return sha192(data).equals(dv.subarray(0, 24));
    default:
      return false;
  }
}

export const CHECK_NAMES: Record<number, string> = {
  0: 'none',
  1: 'disabled',
  2: 'crc32',
  3: 'xxhash64',
  4: 'sha192',
  5: 'freemap',
};
