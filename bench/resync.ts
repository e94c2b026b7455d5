// Resynchronization cost against the size of the change (issue 11): a PFS
// of SIZE bytes of files gets a copy on a second image (a full copy), the
// copy is taken away, 1 % of the file blocks are rewritten (plus a few new
// and removed files), and the copy comes back. The second resync should
// read and write on the order of the change and the tree blocks above it.
// Runs at the fs layer (no FUSE), images on the local disk.
//
//   node dist/bench/resync.js [--size MiB] [--dir DIR]      (npm run bench -- --copies runs it too)
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PfsCluster } from '../src/cluster';
import { FreemapAllocator } from '../src/engine';
import { Hammer2Fs } from '../src/fs';
import { ObjType, PBUFSIZE } from '../src/media';
import { formatHammer2 } from '../mkfs/newfs';

export interface ResyncResult {
  sizeMiB: number;
  changedMiB: number;
  full: { seconds: number; blocksRead: number; blocksWritten: number };
  incremental: { seconds: number; blocksRead: number; blocksWritten: number };
}

const now = () => BigInt(Date.now()) * 1000n;

async function waitSettled(c: PfsCluster): Promise<void> {
  while (!c.status().slice(1).every((x) => x.state === 'in-sync')) await new Promise((r) => setTimeout(r, 5));
}

export async function resyncBench(sizeMiB: number, dir: string, log: (s: string) => void = () => {}): Promise<ResyncResult> {
  fs.mkdirSync(dir, { recursive: true });
  const imgSize = Math.ceil((sizeMiB * 1.6 + 256) / 8) * 8 * 1024 * 1024;
  const A = path.join(dir, 'resync-primary.img');
  const B = path.join(dir, 'resync-copy.img');
  for (const f of [A, B]) {
    fs.rmSync(f, { force: true });
    fs.writeFileSync(f, '');
    fs.truncateSync(f, imgSize);
  }
  await formatHammer2({ paths: [A], sizes: [imgSize] });
  await formatHammer2({ paths: [B], sizes: [imgSize], labels: ['none'] });
  const a = await Hammer2Fs.open(A, { writable: true, lock: true, allocator: (d) => new FreemapAllocator(d.vols, d.reader, d.header) });
  try {
    const p = a.pfs('DATA')!;
    const cred = { uid: 0, gid: 0 };
    const fileMiB = 8;
    const nfiles = Math.max(1, Math.round(sizeMiB / fileMiB));
    const files = [];
    log(`resync: writing ${nfiles} files of ${fileMiB} MiB`);
    for (let i = 0; i < nfiles; i++) {
      const n = p.create(p.root, Buffer.from(`f${i}`), ObjType.REGFILE, 0o644, cred, now());
      for (let off = 0; off < fileMiB << 20; off += 1 << 20) p.write(n, off, randomBytes(1 << 20), now());
      files.push(n);
      if (p.pendingBytes > 64 << 20) a.flush();
    }
    a.flush();

    const c = new PfsCluster(a, p, A, { log: () => {}, stepBytes: 64 << 20 });
    try {
      log('resync: full copy');
      let t0 = process.hrtime.bigint();
      await c.add(B);
      await waitSettled(c);
      const fullSec = Number(process.hrtime.bigint() - t0) / 1e9;
      const s1 = c.status()[1];
      c.remove(B);

      // 1 % of the blocks rewritten, spread over the files, in several commits.
      const blocksPerFile = (fileMiB << 20) / PBUFSIZE;
      const total = nfiles * blocksPerFile;
      const change = Math.max(1, Math.round(total / 100));
      log(`resync: rewriting ${change} of ${total} blocks`);
      for (let k = 0; k < change; k++) {
        const f = files[(k * 7919) % nfiles];
        const blk = (k * 104729) % blocksPerFile;
        p.write(f, blk * PBUFSIZE, randomBytes(PBUFSIZE), now());
        if (k % 500 === 499) a.flush();
      }
      a.flush();

      log('resync: incremental');
      t0 = process.hrtime.bigint();
      await c.add(B);
      await waitSettled(c);
      const incSec = Number(process.hrtime.bigint() - t0) / 1e9;
      const s2 = c.status()[1];
      return {
        sizeMiB,
        changedMiB: (change * PBUFSIZE) / 1048576,
        full: { seconds: fullSec, blocksRead: s1.resync.blocksRead, blocksWritten: s1.resync.blocksWritten },
        incremental: { seconds: incSec, blocksRead: s2.resync.blocksRead, blocksWritten: s2.resync.blocksWritten },
      };
    } finally {
      c.close();
    }
  } finally {
    a.close();
    fs.rmSync(A, { force: true });
    fs.rmSync(B, { force: true });
  }
}

export function resyncLines(r: ResyncResult): string[] {
  const f = r.full;
  const i = r.incremental;
  const ratio = (x: number, y: number) => (y > 0 ? `${((x / y) * 100).toFixed(2)} %` : '–');
  return [
    `resync of a ${r.sizeMiB} MiB PFS: full copy ${f.seconds.toFixed(1)} s (${(r.sizeMiB / f.seconds).toFixed(0)} MiB/s), ${f.blocksRead} blocks read, ${f.blocksWritten} written`,
    `after ${r.changedMiB.toFixed(1)} MiB (1 %) changed: ${i.seconds.toFixed(2)} s, ${i.blocksRead} blocks read, ${i.blocksWritten} written` +
      ` = ${ratio(i.seconds, f.seconds)} of the time, ${ratio(i.blocksRead, f.blocksRead)} of the reads, ${ratio(i.blocksWritten, f.blocksWritten)} of the writes of the full copy`,
  ];
}

if (require.main === module) {
  const args = process.argv.slice(2);
  const opt = (name: string, dflt: string) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : dflt;
  };
  const size = Number(opt('--size', '2048'));
  const dir = opt('--dir', fs.mkdtempSync(path.join(os.tmpdir(), 'h2resync-')));
  resyncBench(size, dir, (s) => process.stderr.write(s + '\n'))
    .then((r) => {
      process.stdout.write(resyncLines(r).join('\n') + '\n');
      process.stdout.write(JSON.stringify(r) + '\n');
    })
    .catch((e) => {
      process.stderr.write(`resync bench failed: ${(e as Error).stack}\n`);
      process.exit(1);
    });
}
