// Loader for native-shim/: the few system calls Node lacks (flock, the size
// of a block device). Everything works without it except locking, and we say so once.
import { constants } from 'node:os';
import * as path from 'node:path';

export interface NativeShim {
  /** flock(LOCK_EX or LOCK_SH | LOCK_NB); 0 on success, errno otherwise. */
  flock(fd: number, exclusive: boolean): number;
  /** BLKGETSIZE64; -errno on failure. */
  blockDeviceSize(fd: number): number;
  /** SO_PEERCRED of a connected unix socket: [pid, uid, gid], or -errno. */
  peerCred(fd: number): [number, number, number] | number;
  /** pwrite from a page-aligned copy (for an O_DIRECT descriptor): bytes written or -errno (absent in older builds). */
  pwriteAligned?(fd: number, buf: Uint8Array, pos: number): number;
  /** F_SETPIPE_SZ: the new size of the pipe or FIFO, or -errno (absent in older builds). */
  pipeSize?(fd: number, bytes: number): number;
  /** mkfifo(2): 0 or -errno (absent in older builds). */
  mkfifo?(path: string, mode: number): number;
  /** malloc_trim(0): return freed heap pages to the kernel (absent in older builds). */
  trimMemory?(): boolean;
  /** Start writes and syncs on the shim's I/O thread, in order (absent in older builds; null: no thread). */
  ioStart?(steps: IoStep[]): object | null;
  /** Whether the thread is done with a job (finished or stopped at an error). */
  ioDone?(job: object): boolean;
  /** Wait for a job; 0 or -errno of the step that failed. Lets go of its buffers. */
  ioWait?(job: object): number;
  /** malloc's bytes in use, free in its arenas, and in mmapped chunks (mallinfo2; null where glibc lacks it; absent in older builds). */
  mallocStats?(): [number, number, number] | null;
  /** mallopt M_TRIM_THRESHOLD and M_MMAP_THRESHOLD (absent in older builds). */
  holdFreedMemory?(trimBytes: number, mmapBytes: number): boolean;
}

/** One step of an ioStart job: pwritev of buffers back to back, fdatasync, or a write from an aligned copy (O_DIRECT). */
export type IoStep = [0, number, number, Uint8Array[]] | [1, number] | [2, number, number, [Uint8Array]];

/** The name of an errno value (the shim returns -errno), or `fallback`. */
export function errnoName(n: number, fallback = 'EIO'): string {
  return Object.entries(constants.errno).find(([, v]) => v === n)?.[0] ?? fallback;
}

/** malloc's view of the process: bytes in use, free in its arenas (held, not returned), in mmapped chunks; null where unknown. */
export function mallocStats(): { inUse: number; free: number; mmapped: number } | null {
  const m = nativeShim()?.mallocStats?.();
  return m ? { inUse: m[0], free: m[1], mmapped: m[2] } : null;
}

/** Return memory freed to malloc to the kernel, where the shim can. */
export function trimMemory(): void {
  nativeShim()?.trimMemory?.();
}

/**
 * Keep memory freed to malloc in the process (up to `bytes` at the top of
 * its heap, and blocks below `bytes` off mmap) instead of giving it back at
 * every free: a process that trims when it is idle (trimMemory) does not
 * pay for faulting the same pages in again through every burst of work.
 * False where the shim or glibc cannot.
 */
export function holdFreedMemory(bytes: number): boolean {
  return nativeShim()?.holdFreedMemory?.(bytes, bytes) ?? false;
}

let loaded: NativeShim | null | undefined;

export function nativeShim(): NativeShim | null {
  if (loaded !== undefined) return loaded;
  const candidates = [
    path.join(__dirname, '..', '..', '..', 'native-shim', 'build', 'Release', 'hammer2_shim.node'),
    path.join(__dirname, '..', '..', 'native-shim', 'build', 'Release', 'hammer2_shim.node'),
  ];
  for (const c of candidates) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      loaded = require(c) as NativeShim;
      return loaded;
    } catch {
      /* try next */
    }
  }
  loaded = null;
  if (!process.env.HAMMER2_QUIET_SHIM) {
    process.stderr.write(
      'hammer2fs: native shim not built (run `npm run build:shim`); image files still work, ' +
        'but images are not locked against concurrent writers\n',
    );
  }
  return loaded;
}
