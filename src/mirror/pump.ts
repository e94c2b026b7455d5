// Writing a stream that is produced on demand (mirrorReadBatches) into a
// writable (a FIFO's socket) from a daemon's event loop: the walk runs in
// slices of a few milliseconds so that the daemon keeps answering its other
// requests, waits while the pipe is full, and keeps to a bandwidth limit.
import type { Writable } from 'node:stream';

export interface PumpOptions {
  /** How long one slice of walking may hold the event loop. */
  sliceMs?: number;
  /** Bytes per second at most (0 or absent: no limit). */
  bandwidth?: number;
  /** Give up when the far end takes nothing in for this long (stopped, or gone without closing). */
  stallMs?: number;
}

const SLICE_MS = 4;
const WRITE_BYTES = 256 << 10;
const STALL_MS = 10 * 60_000;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Resolves once `to` drained; rejects if it fails, closes or takes nothing in for `stallMs`. */
function drained(to: Writable, stallMs: number): Promise<void> {
  return new Promise((res, rej) => {
    const done = (e?: Error) => {
      clearTimeout(t);
      to.off('drain', ok);
      to.off('error', bad);
      to.off('close', closed);
      if (e) rej(e);
      else res();
    };
    const ok = () => done();
    const bad = (e: Error) => done(e);
    const closed = () => done(new Error('the stream was closed by its reader'));
    const t = setTimeout(() => done(new Error(`the reader of the stream took nothing in for ${Math.round(stallMs / 1000)} s`)), stallMs);
    to.once('drain', ok);
    to.once('error', bad);
    to.once('close', closed);
  });
}

/**
 * Write every batch of `batches` into `to` and end it. Errors of the walk
 * and of `to` (EPIPE: the reader went away) are thrown; `to` is then left
 * for the caller to destroy. Returns the bytes written.
 */
export async function pumpSliced(batches: Iterator<Buffer[], void, undefined>, to: Writable, o: PumpOptions = {}): Promise<number> {
  const sliceMs = o.sliceMs ?? SLICE_MS;
  const stallMs = o.stallMs ?? STALL_MS;
  const t0 = Date.now();
  let bytes = 0;
  let failed: Error | null = null;
  const onError = (e: Error) => void (failed ??= e);
  to.on('error', onError);
  try {
    for (;;) {
      const start = Date.now();
      const parts: Buffer[] = [];
      let n = 0;
      let done = false;
      while (n < WRITE_BYTES && Date.now() - start < sliceMs) {
        const r = batches.next();
        if (r.done) {
          done = true;
          break;
        }
        for (const b of r.value) {
          parts.push(b);
          n += b.length;
        }
      }
      if (failed) throw failed;
      const room = n === 0 || to.write(parts.length === 1 ? parts[0] : Buffer.concat(parts, n));
      bytes += n;
      if (done) {
        await new Promise<void>((res, rej) => {
          to.once('error', rej);
          to.end(() => res());
        });
        if (failed) throw failed;
        return bytes;
      }
      if (!room) await drained(to, stallMs);
      const ahead = o.bandwidth ? (bytes / o.bandwidth) * 1000 - (Date.now() - t0) : 0;
      if (ahead > 5) await sleep(Math.ceil(ahead));
      else await new Promise<void>((r) => setImmediate(r));
      if (failed) throw failed;
    }
  } finally {
    to.off('error', onError);
  }
}
