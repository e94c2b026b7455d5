// Optional native accelerators for the codec (native-shim/hammer2_shim.c):
// hardware CRC32C, XXH64, LZ4 block compression and zero detection, called
// on whole blocks without copying them. Everything has a JS or wasm
// fallback, used when the shim is not built, predates these functions, or
// HAMMER2_NO_NATIVE is set (tests compare both paths).
import * as path from 'node:path';

export interface CodecAccel {
  crc32c(crc: number, buf: Uint8Array, start: number, end: number): number;
  /** XXH64 with HAMMER2's seed, written little-endian at out[outOff..outOff+8). */
  xxh64(buf: Uint8Array, out: Uint8Array, outOff: number): void;
  /** One raw LZ4 block of src into dst[dstOff..]; its length, or 0 if it needs more than `cap` bytes. */
  lz4Compress(src: Uint8Array, dst: Uint8Array, dstOff: number, cap: number): number;
  /** Decode one raw LZ4 block src[start,end) into dst; bytes produced, -1 if malformed or too big. */
  lz4Decompress(src: Uint8Array, start: number, end: number, dst: Uint8Array): number;
  isZero(buf: Uint8Array): boolean;
  /**
   * Start working out, on the shim's own thread, what a data block is to be
   * stored as: its zero test, an LZ4 attempt and the check code (0 none,
   * 2 CRC32C, 3 XXH64) of what would be stored. `block` must not change
   * until the job is collected, cancelled or its result taken. Null when
   * the shim has no thread to do it on (absent in older builds).
   */
  sealStart?(block: Uint8Array, zeroTest: boolean, tryLz4: boolean, check: number): object | null;
  /** The job's result (done here if the thread has not started it): 0 all zeros, 2 as it is, or the LZ4 block to store; its check code in checkOut[0..8). Once. */
  sealResult?(job: object, checkOut: Uint8Array): 0 | 2 | Buffer;
  /** Let go (weakly hold) the blocks of jobs the thread has finished: sealStart and sealResult do it too. */
  sealDrain?(): void;
  /** The job's block is about to change: drop the job (waiting if the thread is reading the block). */
  sealCancel?(job: object): void;
  /** Whether the thread has yet to finish the job. */
  sealPending?(job: object): boolean;
  /** Whether crc32c runs on the CPU's CRC32 instruction. */
  crc32cHw: boolean;
}

function load(): CodecAccel | null {
  if (process.env.HAMMER2_NO_NATIVE) return null;
  for (const c of [
    path.join(__dirname, '..', '..', '..', 'native-shim', 'build', 'Release', 'hammer2_shim.node'),
    path.join(__dirname, '..', '..', 'native-shim', 'build', 'Release', 'hammer2_shim.node'),
  ]) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const m = require(c) as Partial<CodecAccel>;
      if (['crc32c', 'xxh64', 'lz4Compress', 'lz4Decompress', 'isZero'].every((f) => typeof m[f as keyof CodecAccel] === 'function')) {
        return m as CodecAccel;
      }
      return null; // an older build without them
    } catch {
      /* try the next place */
    }
  }
  return null;
}

/** The accelerators, or null (callers fall back to JS/wasm). */
export const accel: CodecAccel | null = load();
