// Map fs-layer errors to negative errno values for FUSE.
import { constants } from 'node:os';
import { FsError, MediaError } from '../engine';
import { DeviceError } from '../store';

const E = constants.errno as Record<string, number>;

export function toErrno(e: unknown, log: (msg: string) => void): number {
  if (e instanceof FsError) return -(E[e.errno] ?? E.EIO);
  if (e instanceof MediaError) {
    log(`EIO: ${e.message}`);
    return -E.EIO;
  }
  if (e instanceof DeviceError) {
    log(`device error: ${e.message}`);
    return -(E[e.code] ?? E.EIO);
  }
  // An unexpected exception is a bug: report EIO, keep serving, and say where.
  log(`internal error: ${(e as Error)?.stack ?? String(e)}`);
  return -E.EIO;
}

export const errno = (name: string): number => -(E[name] ?? E.EIO);
