// Syncing several images at once. A commit that reaches copies syncs the
// primary's data and every copy's data before any header is written; done
// one after the other, each image waits for the disk alone. Here the main
// thread syncs the first image while worker threads sync the others (an
// fd is valid in every thread of the process), and the main thread blocks
// on an Atomics.wait until all are done, so the commit stays synchronous.
import { Worker } from 'node:worker_threads';
import { DeviceError } from './device';
import { errnoName } from './native';
import { VolumeSet } from './volumes';

const WORKER = `
const { parentPort } = require('node:worker_threads');
const fs = require('node:fs');
parentPort.on('message', ({ fds, sab }) => {
  const a = new Int32Array(sab);
  let errno = 0;
  for (const fd of fds) {
    try {
      fs.fdatasyncSync(fd);
    } catch (e) {
      errno = typeof e.errno === 'number' ? Math.abs(e.errno) : 5;
      break;
    }
  }
  Atomics.store(a, 1, errno);
  Atomics.store(a, 0, 1);
  Atomics.notify(a, 0);
});
`;

const pool: Worker[] = [];

/** How long a copy's sync may take before it is given up (its copy then fails). */
const SYNC_LIMIT_MS = 10 * 60 * 1000;

function worker(i: number): Worker {
  while (pool.length <= i) {
    const w = new Worker(WORKER, { eval: true });
    w.unref();
    pool.push(w);
  }
  return pool[i];
}

/**
 * Write out what each set has queued, then fdatasync all of their devices
 * in parallel. Returns, per set, null or the error its sync met (the caller
 * decides what a failure of each means).
 */
export function syncTogether(sets: VolumeSet[]): (Error | null)[] {
  const out: (Error | null)[] = sets.map(() => null);
  // Queued writes first (page-cache copies: this thread's work either way).
  for (let i = 0; i < sets.length; i++) {
    try {
      sets[i].flushWrites();
    } catch (e) {
      out[i] = e as Error;
    }
  }
  if (sets.length === 1) {
    if (!out[0]) {
      try {
        sets[0].syncDevices();
      } catch (e) {
        out[0] = e as Error;
      }
    }
    return out;
  }
  const waits: { i: number; a: Int32Array }[] = [];
  for (let i = 1; i < sets.length; i++) {
    if (out[i]) continue;
    const a = new Int32Array(new SharedArrayBuffer(8));
    worker(i - 1).postMessage({ fds: sets[i].volumes.map((v) => v.dev.fd), sab: a.buffer });
    waits.push({ i, a });
  }
  if (!out[0]) {
    try {
      sets[0].syncDevices();
    } catch (e) {
      out[0] = e as Error;
    }
  }
  // A worker that never answers (it could not start) must not hang the daemon for good.
  const deadline = Date.now() + SYNC_LIMIT_MS;
  for (const { i, a } of waits) {
    while (Atomics.load(a, 0) === 0 && Date.now() < deadline) Atomics.wait(a, 0, 0, 1000);
    if (Atomics.load(a, 0) === 0) {
      out[i] = new DeviceError(`${sets[i].volumes.map((v) => v.dev.path).join(':')}: fsync did not complete within ${SYNC_LIMIT_MS / 1000} s`, 'ETIMEDOUT', true);
      continue;
    }
    const errno = Atomics.load(a, 1);
    if (errno) {
      const code = errnoName(errno);
      out[i] = new DeviceError(`${sets[i].volumes.map((v) => v.dev.path).join(':')}: fsync failed: ${code}`, code, true);
    }
  }
  return out;
}
