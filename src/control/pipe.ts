// A command's own pipe, handed to the daemon it asks. `hammer2 mirror-read
// MNT | hammer2 mirror-write MNT2` would otherwise copy the whole stream
// through both commands (daemon -> FIFO -> command -> pipe -> command ->
// FIFO -> daemon): on Linux the daemon can open the command's standard
// input or output itself through /proc/PID/fd, and the stream then flows
// from one daemon straight into the other through the shell's pipe.
import * as fs from 'node:fs';
import { ControlError } from './protocol';
import type { Peer } from './server';

/** Which descriptor of the asking command, and which pipe it is (so that the daemon opens that one and no other). */
export interface PipeSpec {
  fd: number;
  dev: string;
  ino: string;
}

/**
 * This process's descriptor `fd` as a PipeSpec when it is a pipe or FIFO
 * (not a file, a socket or a terminal, which the command relays itself);
 * null elsewhere, or when HAMMER2_MIRROR_RELAY is set (always relay).
 */
export function ownPipe(fd: number): PipeSpec | null {
  if (process.platform !== 'linux' || process.env.HAMMER2_MIRROR_RELAY) return null;
  try {
    const st = fs.fstatSync(fd, { bigint: true });
    return st.isFIFO() ? { fd, dev: st.dev.toString(), ino: st.ino.toString() } : null;
  } catch {
    return null;
  }
}

/** Whether a refusal from the daemon means "relay it yourself" (nothing was read or written yet). */
export function pipeRefused(e: unknown): boolean {
  const x = e as { code?: string; message?: string };
  // EBADF: openPeerPipe's refusals. A daemon older than PipeSpec asks for a FIFO.
  return x?.code === 'EBADF' || (x?.code === 'EINVAL' && /absolute path of a FIFO/.test(x?.message ?? ''));
}

/**
 * Open the asking command's pipe `spec` for reading or writing, non-blocking.
 * Only for a command of this daemon's own user: through /proc a process
 * reaches only what that user could open anyway (a daemon run by root for
 * another user's command must not open, with root's rights, whatever that
 * command's descriptor names). Only the very pipe the command described.
 * Every refusal is a ControlError EBADF, raised before a byte has moved.
 */
export function openPeerPipe(peer: Peer, spec: unknown, mode: 'read' | 'write'): number {
  const p = spec as Partial<PipeSpec> | null;
  if (!p || !Number.isInteger(p.fd) || (p.fd as number) < 0 || typeof p.dev !== 'string' || typeof p.ino !== 'string') {
    throw new ControlError('EBADF', 'malformed pipe argument');
  }
  if (process.platform !== 'linux') throw new ControlError('EBADF', 'no /proc here: relay the stream');
  if (peer.pid <= 0 || peer.uid !== process.geteuid?.()) throw new ControlError('EBADF', "the command is not this daemon's user: it relays the stream");
  const { O_RDONLY, O_WRONLY, O_NONBLOCK, O_NOCTTY } = fs.constants;
  let fd: number;
  try {
    fd = fs.openSync(`/proc/${peer.pid}/fd/${p.fd}`, (mode === 'read' ? O_RDONLY : O_WRONLY) | O_NONBLOCK | O_NOCTTY);
  } catch (e) {
    throw new ControlError('EBADF', `cannot open the command's descriptor ${p.fd}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    const st = fs.fstatSync(fd, { bigint: true });
    if (!st.isFIFO() || st.dev.toString() !== p.dev || st.ino.toString() !== p.ino) throw new ControlError('EBADF', `descriptor ${p.fd} is not the pipe the command described`);
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
  return fd;
}
