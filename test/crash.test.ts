// A few SIGKILL crash runs (the long version: npm run crash-test -- --runs N [--pfs N] [--copies | --mirror | --loaded]).
import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { crashRun, tarSource } from '../fsck/crash-test';
import { mirrorCrashRun } from '../fsck/crash-mirror';
import { fuseUnavailable, haveRef, REF_BIN, tempDir } from './lib/env';

process.env.HAMMER2_QUIET_SHIM = '1';
// The reference fsck must agree where it is at hand.
if (haveRef('fsck_hammer2') && !process.env.H2_REF_FSCK) process.env.H2_REF_FSCK = path.join(REF_BIN, 'fsck_hammer2');
// And read the mirrored slave back the same as the master.
if (haveRef('makefs') && !process.env.H2_REF_MAKEFS) process.env.H2_REF_MAKEFS = path.join(REF_BIN, 'makefs');
const why = fuseUnavailable();
if (why) t.plan(0, why);
else {
  const seed = Number(process.env.H2_CRASH_SEED ?? 4242);
  t.test('SIGKILL at random moments loses nothing fsynced', async (t) => {
    const dir = tempDir(t);
    for (let i = 0; i < 3; i++) {
      const r = await crashRun(i, seed + i, dir, 4 * 2 ** 30);
      t.ok(r.ok, `run ${i} (seed ${seed + i}): ${r.detail}`);
    }
    t.ok(fs.existsSync(dir));
  });
  // The workloads of --loaded (without its CPU and disk hogs, which would slow the rest of the suite),
  // on images either side of 2 GiB, and a header torn on purpose that fsck -y must mend.
  t.test('SIGKILL under the tar, rename and hardlink workloads; a torn header', async (t) => {
    const dir = tempDir(t);
    const tar = tarSource(dir);
    const runs = [
      { workload: 'tar' as const, size: 2 ** 30 },
      { workload: 'rename' as const, size: 3 * 2 ** 30 },
      { workload: 'links' as const, size: 2 ** 30 },
      { workload: 'fsync' as const, size: 2 ** 30, headerFault: '2:8192' },
    ];
    for (const [i, r0] of runs.entries()) {
      const r = await crashRun(i, seed + 400 + i, dir, r0.size, { workload: r0.workload, tar, headerFault: r0.headerFault });
      t.ok(r.ok, `${r0.workload} run (seed ${seed + 400 + i}): ${r.detail}`);
    }
  });
  t.test('SIGKILL while three PFSs are written and snapshotted', async (t) => {
    const dir = tempDir(t);
    for (let i = 0; i < 2; i++) {
      const r = await crashRun(i, seed + 100 + i, dir, 4 * 2 ** 30, { pfs: 3 });
      t.ok(r.ok, `run ${i} (seed ${seed + 100 + i}): ${r.detail}`);
      t.match(r.detail, /^3 PFSs, /);
    }
  });
  t.test('SIGKILL with a copy being filled or following commits', async (t) => {
    const dir = tempDir(t);
    for (let i = 0; i < 3; i++) {
      const r = await crashRun(i, seed + 200 + i, dir, 2 ** 30, { copy: true });
      t.ok(r.ok, `run ${i} (seed ${seed + 200 + i}): ${r.detail}`);
      t.match(r.detail, /copy level after remount/);
    }
  });
  t.test('SIGKILL of the mirror stream, its reader or writer, or either daemon', async (t) => {
    const dir = tempDir(t);
    for (let i = 0; i < 4; i++) {
      const r = await mirrorCrashRun(i, seed + 300 + i, dir, 2 ** 30);
      t.ok(r.ok, `run ${i} (seed ${seed + 300 + i}): ${r.detail}`);
      t.match(r.detail, /converged/);
    }
  });
}
