// Every reference-made fixture image, every populated PFS, mounted through
// FUSE and compared entry by entry with its manifest (type, mode, size,
// mtime, nlink, symlink target, sha256 of every file).
import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { COMPARE_TREE, fixtureNames, fuseUnavailable, haveFixtures, loadManifest, tempDir, unpackFixture, FIXTURES } from './lib/env';
import { mount } from './lib/mount';

if (!haveFixtures()) {
  t.plan(0, `no fixtures at ${FIXTURES}`);
} else if (fuseUnavailable()) {
  t.plan(0, fuseUnavailable()!);
} else {
  for (const name of fixtureNames()) {
    t.test(name, async (t) => {
      const m = loadManifest(name);
      const dir = tempDir(t);
      const img = unpackFixture(name, dir);
      const pfsList = m.pfs.filter((p) => p.populated);
      t.ok(pfsList.length > 0, 'manifest names a populated PFS');
      for (const p of pfsList) {
        const mnt = path.join(dir, `mnt-${p.name}`);
        const mounted = await mount(t, `${img}@${p.name}`, mnt, ['-o', 'ro']);
        const r = spawnSync('python3', [COMPARE_TREE, path.join(FIXTURES, `${name}.manifest.json`), '--pfs', p.name, '--root', mnt], {
          encoding: 'utf8',
          maxBuffer: 64 * 1024 * 1024,
        });
        const summary = (r.stdout.trim().split('\n').pop() ?? '').trim();
        const failures = r.stdout.split('\n').filter((l) => !/^ok\b/.test(l) && l.trim() && l !== summary);
        t.equal(r.status, 0, `${name}@${p.name}: ${summary}`, { failures: failures.slice(0, 20), log: mounted.log() });
        t.match(summary, /^\d+ passed, 0 failed$/);
        await mounted.unmount();
      }
    });
  }
}
