// The benchmark's client: one process per measured step, doing plain
// synchronous system calls on the filesystem under test (as dd, cp or a
// compiler would) and timing them itself. It is never the process that
// serves a mount, so synchronous calls on the mount are safe.
//
//   node dist/bench/worker.js '<json Job>'
//
// stdout: {"p": fraction} lines while it runs, then {"result": {...}} or
// {"error": "..."} (exit 1).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CHUNK, DataKind, DataSource, prng } from './data';

export type Job =
  | { op: 'seqwrite'; file: string; size: number; kind: DataKind; seed: number }
  | { op: 'seqread'; file: string; size: number; kind: DataKind; seed: number; verify: number }
  | { op: 'randrw'; file: string; size: number; runtime: number; seed: number }
  | { op: 'fsync'; file: string; count: number }
  | { op: 'create' | 'stat' | 'unlink'; dir: string; count: number; dirs?: number }
  | { op: 'readdir'; dir: string; count: number; dirs?: number }
  | { op: 'exec'; cmd: string; args: string[]; syncDir?: string }
  | { op: 'tree'; dir: string };

const now = () => Number(process.hrtime.bigint()) / 1e9;
let lastProgress = 0;
function progress(frac: number): void {
  const t = Date.now();
  if (t - lastProgress < 250) return;
  lastProgress = t;
  fs.writeSync(1, JSON.stringify({ p: Math.min(1, Math.max(0, frac)) }) + '\n');
}

/** Make everything under `dir` durable: fsync(dir) (a FUSE filesystem gets it as
 * fsyncdir; syncfs does not reach a FUSE daemon) and syncfs (the local disk). */
export function barrier(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  spawnSync('sync', ['-f', dir]);
}

export const fileName = (i: number) => `f${String(i).padStart(6, '0')}`;

/** With `dirs` > 1, file i lives in subdirectory d(i % dirs) of dir. */
const spread = (dirs: number | undefined) => (dir: string, i: number) => (dirs && dirs > 1 ? path.join(dir, `d${i % dirs}`, fileName(i)) : path.join(dir, fileName(i)));
const subdirs = (dir: string, dirs: number | undefined) => (dirs && dirs > 1 ? Array.from({ length: dirs }, (_, k) => path.join(dir, `d${k}`)) : [dir]);

/** A fixed permutation of 0..n-1, so every filesystem sees the same order. */
function shuffled(n: number, seed: number): number[] {
  const a = Array.from({ length: n }, (_, i) => i);
  const rnd = prng(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = rnd() % (i + 1);
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length - 1) * p + 0.5))];
}

function run(job: Job): Record<string, unknown> {
  switch (job.op) {
    case 'seqwrite': {
      const src = new DataSource(job.kind, job.seed);
      const chunks = job.size / CHUNK;
      const t0 = now();
      const fd = fs.openSync(job.file, 'w');
      for (let i = 0; i < chunks; i++) {
        const b = src.chunk(i);
        let off = 0;
        while (off < b.length) off += fs.writeSync(fd, b, off, b.length - off, i * CHUNK + off);
        progress(i / chunks);
      }
      fs.fsyncSync(fd);
      fs.closeSync(fd);
      const seconds = now() - t0;
      const st = fs.statSync(job.file);
      return { seconds, bytes: job.size, storedBytes: st.blocks * 512, size: st.size };
    }
    case 'seqread': {
      const buf = Buffer.allocUnsafe(CHUNK);
      const t0 = now();
      const fd = fs.openSync(job.file, 'r');
      let total = 0;
      for (;;) {
        const n = fs.readSync(fd, buf, 0, CHUNK, total);
        if (n <= 0) break;
        total += n;
        progress(total / job.size);
      }
      fs.closeSync(fd);
      const seconds = now() - t0;
      if (total !== job.size) throw new Error(`read ${total} bytes, expected ${job.size}`);
      // Outside the timing: regenerate a few chunks and compare.
      const src = new DataSource(job.kind, job.seed);
      const chunks = job.size / CHUNK;
      const fd2 = fs.openSync(job.file, 'r');
      let verified = 0;
      try {
        for (let k = 0; k < Math.min(job.verify, chunks); k++) {
          const i = Math.floor((k * chunks) / Math.min(job.verify, chunks));
          fs.readSync(fd2, buf, 0, CHUNK, i * CHUNK);
          if (!buf.equals(src.chunk(i))) throw new Error(`data mismatch in MiB ${i} of ${job.file}`);
          verified++;
        }
      } finally {
        fs.closeSync(fd2);
      }
      return { seconds, bytes: total, verifiedChunks: verified };
    }
    case 'randrw': {
      // The built-in random I/O driver (when fio is absent): 4 KiB pread/pwrite,
      // half each, at uniformly random aligned offsets, for `runtime` seconds,
      // then fsync.
      const blocks = job.size / 4096;
      const rnd = prng(job.seed);
      const buf = Buffer.alloc(4096);
      const wbuf = new DataSource('random', job.seed).chunk(0).subarray(0, 4096);
      const fd = fs.openSync(job.file, 'r+');
      let reads = 0;
      let writes = 0;
      const t0 = now();
      const end = t0 + job.runtime;
      let t = t0;
      while (t < end) {
        for (let k = 0; k < 16; k++) {
          const off = (rnd() % blocks) * 4096;
          if (rnd() & 1) {
            fs.readSync(fd, buf, 0, 4096, off);
            reads++;
          } else {
            wbuf.writeUInt32LE(writes, 8);
            fs.writeSync(fd, wbuf, 0, 4096, off);
            writes++;
          }
        }
        t = now();
        progress((t - t0) / job.runtime);
      }
      fs.fsyncSync(fd);
      fs.closeSync(fd);
      const seconds = now() - t0;
      return { seconds, reads, writes, readIops: reads / seconds, writeIops: writes / seconds, bytes: (reads + writes) * 4096 };
    }
    case 'fsync': {
      const buf = new DataSource('random', 3).chunk(0).subarray(0, 4096);
      const lat: number[] = [];
      const t0 = now();
      const fd = fs.openSync(job.file, 'w');
      for (let i = 0; i < job.count; i++) {
        const a = now();
        buf.writeUInt32LE(i, 8);
        fs.writeSync(fd, buf, 0, 4096, i * 4096);
        fs.fsyncSync(fd);
        lat.push(now() - a);
        progress(i / job.count);
      }
      fs.closeSync(fd);
      const seconds = now() - t0;
      lat.sort((x, y) => x - y);
      return { seconds, count: job.count, p50: percentile(lat, 0.5), p99: percentile(lat, 0.99), max: lat[lat.length - 1], bytes: job.count * 4096 };
    }
    case 'create': {
      const at = spread(job.dirs);
      const t0 = now();
      fs.mkdirSync(job.dir, { recursive: true });
      for (const d of subdirs(job.dir, job.dirs)) if (d !== job.dir) fs.mkdirSync(d);
      for (let i = 0; i < job.count; i++) {
        fs.closeSync(fs.openSync(at(job.dir, i), 'wx', 0o644));
        progress(i / job.count);
      }
      for (const d of subdirs(job.dir, job.dirs)) if (d !== job.dir) barrier(d);
      barrier(job.dir);
      return { seconds: now() - t0, count: job.count };
    }
    case 'stat': {
      const order = shuffled(job.count, 42);
      const t0 = now();
      let k = 0;
      const at = spread(job.dirs);
      for (const i of order) {
        fs.lstatSync(at(job.dir, i));
        if ((++k & 63) === 0) progress(k / job.count);
      }
      return { seconds: now() - t0, count: job.count };
    }
    case 'readdir': {
      const t0 = now();
      let n = 0;
      for (const dir of subdirs(job.dir, job.dirs)) {
        const d = fs.opendirSync(dir, { bufferSize: 128 });
        for (let e = d.readSync(); e; e = d.readSync()) {
          n++;
          if ((n & 255) === 0) progress(n / job.count);
        }
        d.closeSync();
      }
      const seconds = now() - t0;
      if (n !== job.count) throw new Error(`readdir found ${n} entries, expected ${job.count}`);
      return { seconds, count: n };
    }
    case 'unlink': {
      const t0 = now();
      const at = spread(job.dirs);
      for (let i = 0; i < job.count; i++) {
        fs.unlinkSync(at(job.dir, i));
        progress(i / job.count);
      }
      for (const d of subdirs(job.dir, job.dirs)) if (d !== job.dir) barrier(d);
      barrier(job.dir);
      const seconds = now() - t0;
      const left = subdirs(job.dir, job.dirs).reduce((a, d) => a + fs.readdirSync(d).length, 0);
      if (left) throw new Error(`${left} entries left after unlinking`);
      return { seconds, count: job.count };
    }
    case 'exec': {
      const t0 = now();
      const r = spawnSync(job.cmd, job.args, { encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'pipe'] });
      if (r.error) throw r.error;
      if (r.status !== 0) throw new Error(`${job.cmd} ${job.args.join(' ')} exited ${r.status ?? r.signal}: ${r.stderr.trim().slice(-2000)}`);
      if (job.syncDir) barrier(job.syncDir);
      return { seconds: now() - t0, stdout: r.stdout.trim().slice(-2000) };
    }
    case 'tree': {
      // Files, directories, symlinks and bytes under dir (lstat only).
      const out = { files: 0, dirs: 0, symlinks: 0, bytes: 0 };
      const walk = (d: string) => {
        for (const e of fs.readdirSync(d, { withFileTypes: true })) {
          const p = path.join(d, e.name);
          if (e.isDirectory()) {
            out.dirs++;
            walk(p);
          } else if (e.isSymbolicLink()) out.symlinks++;
          else {
            out.files++;
            out.bytes += fs.lstatSync(p).size;
          }
        }
      };
      walk(job.dir);
      return out;
    }
  }
}

if (require.main === module) {
  try {
    const job = JSON.parse(process.argv[2]) as Job;
    const result = run(job);
    fs.writeSync(1, JSON.stringify({ result }) + '\n');
  } catch (e) {
    fs.writeSync(1, JSON.stringify({ error: (e as Error).message ?? String(e) }) + '\n');
    process.exitCode = 1;
  }
}
