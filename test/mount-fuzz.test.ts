// A short run of the mount fuzzer (npm run mount-fuzz for the long one):
// damaged and forged reference images mounted read-only and read-write and
// walked whole. The daemon never dies or stops answering, stays within its
// memory bound, never hands out wrong bytes where a check code can catch
// the damage, refuses what it cannot mount with a message, and a read-write
// mount never makes fsck's verdict worse.
import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { runMountFuzz } from '../fsck/mount-fuzz';
import { fuseUnavailable, REPO, tempDir } from './lib/env';

process.env.HAMMER2_QUIET_SHIM = '1';
const FIXTURES = path.resolve(REPO, '..', 'shared', 'fixtures');
const why = fuseUnavailable() ?? (fs.existsSync(path.join(FIXTURES, 'basic.img.tar.gz')) ? null : `no fixtures at ${FIXTURES}`);
if (why) t.plan(0, why);
else
  t.test('damaged images against the mount', async (t) => {
    const lines: string[] = [];
    const r = await runMountFuzz({ images: ['basic', 'checks-none', 'zlib'], iterations: 10, seed: Number(process.env.H2_MOUNT_FUZZ_SEED ?? 20261206), dir: tempDir(t), log: (l) => lines.push(l) });
    t.equal(r.runs, 10, 'ten damaged images');
    t.same(r.failures, [], `no failures (${r.refused} refused, ${r.eio} EIO answers, slowest request ${r.slowestMs} ms, peak RSS ${r.peakRssMiB.toFixed(0)} MiB)\n${lines.join('\n')}`);
    t.ok(r.eio > 0, 'the damage was met (some requests answered EIO)');
  });
