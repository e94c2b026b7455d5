// A few SIGKILL crash runs (the long version: npm run crash-test -- --runs N).
import t from 'tap';
import * as fs from 'node:fs';
import { crashRun } from '../fsck/crash-test';
import { fuseUnavailable, tempDir } from './lib/env';

process.env.HAMMER2_QUIET_SHIM = '1';
const why = fuseUnavailable();
if (why) t.plan(0, why);
else
  t.test('SIGKILL at random moments loses nothing fsynced', async (t) => {
    const dir = tempDir(t);
    const seed = Number(process.env.H2_CRASH_SEED ?? 4242);
    for (let i = 0; i < 3; i++) {
      const r = await crashRun(i, seed + i, dir, 4 * 2 ** 30);
      t.ok(r.ok, `run ${i} (seed ${seed + i}): ${r.detail}`);
    }
    t.ok(fs.existsSync(dir));
  });
