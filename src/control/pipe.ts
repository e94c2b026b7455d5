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
 * This process's descriptor `fd` as a PipeSpec when it is an anonymous pipe
 * (the shell's `|`); null for anything else (a file, a socket, a terminal,
 * a named FIFO: the command relays those itself), or when
 * HAMMER2_MIRROR_RELAY is set (always relay).
 */
export function ownPipe(fd: number): PipeSpec | null {
  if (process.platform !== 'linux' || process.env.HAMMER2_MIRROR_RELAY) return null;
  try {
    const st = fs.fstatSync(fd, { bigint: true });
    if (!st.isFIFO() || fs.readlinkSync(`/proc/self/fd/${fd}`) !== `pipe:[${st.ino}]`) return null;
    return { fd, dev: st.dev.toString(), ino: st.ino.toString() };
  } catch {
    return null;
  }
}

/** What every refusal of openPeerPipe says first: the command relays instead. */
const REFUSED = 'pipe refused: ';

const refuse = (why: string) => new ControlError('EBADF', REFUSED + why);

/** Whether a refusal from the daemon means "relay it yourself" (nothing was read or written yet). */
export function pipeRefused(e: unknown): boolean {
  const x = e as { code?: string; message?: string };
  // openPeerPipe's refusals; and a daemon older than PipeSpec asks for a FIFO.
  return (x?.code === 'EBADF' && (x?.message ?? '').startsWith(REFUSED)) || (x?.code === 'EINVAL' && /absolute path of a FIFO/.test(x?.message ?? ''));
}

/**
 * Open the asking command's pipe `spec` for reading or writing, non-blocking.
 * Only for a command of this daemon's own user: through /proc a process
 * reaches only what that user could open anyway (a daemon run by root for
 * another user's command must not open, with root's rights, whatever that
 * command's descriptor names). Only an anonymous pipe, and the very one
 * the command described: the descriptor's link names it before anything
 * is opened (opening whatever else a descriptor may name could wait on a
 * device, or on a file of a mount this very daemon serves), and what was
 * opened is checked again. Every refusal is EBADF (see pipeRefused),
 * raised before a byte has moved.
 */
export function openPeerPipe(peer: Peer, spec: unknown, mode: 'read' | 'write'): number {
  const p = spec as Partial<PipeSpec> | null;
  if (!p || !Number.isInteger(p.fd) || (p.fd as number) < 0 || typeof p.dev !== 'string' || typeof p.ino !== 'string') throw refuse('malformed pipe argument');
  if (process.platform !== 'linux') throw refuse('no /proc here');
  if (peer.pid <= 0 || peer.uid !== process.geteuid?.()) throw refuse("the command is not this daemon's user");
  const link = `/proc/${peer.pid}/fd/${p.fd}`;
  let names: string;
  try {
    names = fs.readlinkSync(link);
  } catch (e) {
    throw refuse(`the command has no descriptor ${p.fd} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  if (names !== `pipe:[${p.ino}]`) throw refuse(`descriptor ${p.fd} is not the pipe the command described`);
  const { O_RDONLY, O_WRONLY, O_NONBLOCK, O_NOCTTY } = fs.constants;
  let fd: number;
  try {
    fd = fs.openSync(link, (mode === 'read' ? O_RDONLY : O_WRONLY) | O_NONBLOCK | O_NOCTTY);
  } catch (e) {
    throw refuse(`cannot open the command's descriptor ${p.fd} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try {
    const st = fs.fstatSync(fd, { bigint: true });
    if (!st.isFIFO() || st.dev.toString() !== p.dev || st.ino.toString() !== p.ino) throw refuse(`descriptor ${p.fd} is not the pipe the command described`);
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
  return fd;
}
