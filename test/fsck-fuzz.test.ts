// Short fuzz of fsck_hammer2 (the long one: npm run fsck-fuzz -- --iterations N IMAGE...):
// random byte flips in metadata blocks, freemap leaves, data blocks and volume
// headers of fixture images and of a four-header image written by our own
// writer, plus forged changes whose check codes are re-sealed. fsck must never
// crash, hang or grow without bound; every flip must be reported; -y on a copy
// must leave no fixable error; with the reference fsck at hand, verdicts agree.
import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { runFuzz } from '../fsck/fuzz';
import { formatHammer2 } from '../mkfs/newfs';
import { Hammer2Fs } from '../src/fs';
import { ObjType } from '../src/media';
import { FIXTURES, haveFixtures, tempDir, unpackFixture } from './lib/env';

process.env.HAMMER2_QUIET_SHIM = '1';
const REF = process.env.H2_REF_FSCK ?? '/work/ref/bin/fsck_hammer2';
const BUDGET_MS = Number(process.env.H2_FUZZ_MS ?? 30_000);

async function writerImage(img: string): Promise<void> {
  await formatHammer2({ paths: [img], sizes: [9 * 2 ** 30] });
  const cred = { uid: 0, gid: 0 };
  for (let f = 0; f < 5; f++) {
    const h2 = await Hammer2Fs.open(img, { writable: true, lock: false });
    const pfs = h2.pfs('DATA')!;
    const now = 1_700_000_000_000_000n + BigInt(f);
    const d = pfs.create(pfs.root, Buffer.from(`dir${f}`), ObjType.DIRECTORY, 0o755, cred, now);
    for (let i = 0; i < 40; i++) {
      const n = pfs.create(d, Buffer.from(`file-${i}-${'x'.repeat(i * 3)}`), ObjType.REGFILE, 0o644, cred, now);
      const buf = Buffer.alloc(((i * 7919) % 90000) + 1);
      for (let j = 0; j < buf.length; j++) buf[j] = (j * 31 + i) & 0xff;
      pfs.write(n, 0, buf, now);
    }
    h2.flush();
    h2.close();
  }
}

if (!haveFixtures()) t.plan(0, `no fixtures at ${FIXTURES}`);
else
  t.test('fsck survives random damage', async (t) => {
    const dir = tempDir(t);
    const imgs: string[] = [];
    for (const name of ['zlib', 'multipfs']) {
      const d = path.join(dir, name);
      fs.mkdirSync(d);
      imgs.push(unpackFixture(name, d));
    }
    const w = path.join(dir, 'writer9g.img');
    await writerImage(w);
    imgs.push(w);
    const seed = Number(process.env.H2_FUZZ_SEED ?? 20261121);
    const res = await runFuzz({
      images: imgs,
      iterations: 1000,
      budgetMs: BUDGET_MS,
      seed,
      reference: fs.existsSync(REF) ? REF : null,
      subprocessEvery: 40,
      repairEvery: 8,
      maxMs: 20_000,
      maxRssMb: 1024,
      workDir: dir,
    });
    t.ok(res.runs >= 40, `${res.runs} damaged images checked (seed ${seed}), ${res.repairs} repaired, slowest ${res.maxCheckMs} ms, peak rss ${res.peakRssMb.toFixed(0)} MiB`);
    t.same(res.failures, [], 'no crash, hang, miss or disagreement');
    if (res.agreement.size) {
      const onlyRef = [...res.agreement.values()].reduce((a, v) => a + v[1], 0);
      t.equal(onlyRef, 0, 'never clean where the reference says not clean');
    }
  });
