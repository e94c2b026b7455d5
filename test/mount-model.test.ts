// Randomized model test through the mount: the same random operations go
// to a HAMMER2 mount and to a plain directory on the host; after every few
// hundred steps the mount is unmounted and remounted and both trees must be
// identical (types, modes, sizes, contents, symlink targets, link counts).
// Also writes into a reference-made fixture image and reads it all back.
import t from 'tap';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { formatHammer2 } from '../mkfs/newfs';
import { COMPARE_TREE, FIXTURES, fuseUnavailable, haveFixtures, tempDir, unpackFixture } from './lib/env';
import { Rng } from './lib/model';
import { mount } from './lib/mount';

process.env.HAMMER2_QUIET_SHIM = '1';

interface Snap {
  type: string;
  mode: number;
  size?: number;
  hash?: string;
  target?: string;
  nlink?: number;
}

function snapshot(root: string): Map<string, Snap> {
  const out = new Map<string, Snap>();
  const rec = (rel: string) => {
    const p = path.join(root, rel);
    const st = fs.lstatSync(p);
    const mode = st.mode & 0o7777;
    if (st.isDirectory()) {
      if (rel) out.set(rel, { type: 'dir', mode });
      for (const n of fs.readdirSync(p).sort()) rec(path.join(rel, n));
    } else if (st.isSymbolicLink()) {
      out.set(rel, { type: 'symlink', mode: 0, target: fs.readlinkSync(p) });
    } else if (st.isFile()) {
      const hash = createHash('sha256').update(fs.readFileSync(p)).digest('hex');
      out.set(rel, { type: 'file', mode, size: st.size, hash, nlink: st.nlink });
    } else {
      out.set(rel, { type: 'other', mode });
    }
  };
  rec('');
  return out;
}

function diff(a: Map<string, Snap>, b: Map<string, Snap>): string[] {
  const d: string[] = [];
  for (const [k, v] of a) {
    const w = b.get(k);
    if (!w) d.push(`missing in mount: ${k}`);
    else if (JSON.stringify(v) !== JSON.stringify(w)) d.push(`${k}: model ${JSON.stringify(v)} mount ${JSON.stringify(w)}`);
  }
  for (const k of b.keys()) if (!a.has(k)) d.push(`extra in mount: ${k}`);
  return d;
}

/** One random step, applied identically to both roots. */
async function step(rng: Rng, roots: string[]): Promise<void> {
  const model = roots[0];
  const all: string[] = [];
  const walk = (rel: string) => {
    for (const n of fs.readdirSync(path.join(model, rel))) {
      const r = path.join(rel, n);
      all.push(r);
      if (fs.lstatSync(path.join(model, r)).isDirectory()) walk(r);
    }
  };
  walk('');
  const dirs = ['', ...all.filter((r) => fs.lstatSync(path.join(model, r)).isDirectory())];
  const files = all.filter((r) => fs.lstatSync(path.join(model, r)).isFile());
  const pick = <T>(a: T[]) => a[rng.int(a.length)];
  const name = `${pick(dirs)}/${rng.int(3) ? 'n' : 'long-' + 'x'.repeat(100 + rng.int(150))}${rng.int(40)}`;
  const op = rng.int(100);
  const both = async (fn: (root: string) => Promise<unknown>) => {
    const results = await Promise.allSettled(roots.map(fn));
    const codes = results.map((r) => (r.status === 'fulfilled' ? 'ok' : (r.reason as NodeJS.ErrnoException).code));
    if (codes[0] !== codes[1]) throw new Error(`op ${op} on ${name}: model ${codes[0]} vs mount ${codes[1]}`);
  };
  if (op < 20) await both((r) => fs.promises.writeFile(path.join(r, name), rng.bytes(0)));
  else if (op < 28) await both((r) => fs.promises.mkdir(path.join(r, name)));
  else if (op < 32) {
    const target = 't'.repeat(1 + rng.int(600));
    await both((r) => fs.promises.symlink(target, path.join(r, name)));
  } else if (op < 55 && files.length) {
    const f = pick(files);
    const pos = rng.int(rng.int(8) ? 200_000 : 5_000_000);
    const data = rng.bytes(1 + rng.int(rng.int(8) ? 70_000 : 1_200_000));
    await both(async (r) => {
      const fh = await fs.promises.open(path.join(r, f), 'r+');
      try {
        await fh.write(data, 0, data.length, pos);
      } finally {
        await fh.close();
      }
    });
  } else if (op < 62 && files.length) {
    const f = pick(files);
    const size = rng.int(3) ? rng.int(300_000) : 0;
    await both((r) => fs.promises.truncate(path.join(r, f), size));
  } else if (op < 68 && files.length) {
    const f = pick(files);
    const data = rng.bytes(1 + rng.int(20000));
    await both((r) => fs.promises.appendFile(path.join(r, f), data));
  } else if (op < 76 && all.length) {
    const victim = pick(all);
    await both((r) => fs.promises.rm(path.join(r, victim), { recursive: true }));
  } else if (op < 86 && all.length) {
    const src = pick(all);
    await both((r) => fs.promises.rename(path.join(r, src), path.join(r, name)));
  } else if (op < 92 && files.length) {
    const f = pick(files);
    await both((r) => fs.promises.link(path.join(r, f), path.join(r, name)));
  } else if (files.length) {
    const f = pick(files);
    const mode = pick([0o600, 0o644, 0o755, 0o4755, 0o2750, 0o1777]);
    await both((r) => fs.promises.chmod(path.join(r, f), mode));
  }
}

const why = fuseUnavailable();
if (why) t.plan(0, why);
else {
  t.test('random operations: mount and plain directory stay identical across remounts', async (t) => {
    const dir = tempDir(t);
    const img = path.join(dir, 'model.img');
    await formatHammer2({ paths: [img], sizes: [4 * 2 ** 30] });
    const model = path.join(dir, 'model');
    fs.mkdirSync(model);
    const mnt = path.join(dir, 'mnt');
    const rng = new Rng(Number(process.env.H2_MODEL_SEED ?? 777));
    const rounds = Number(process.env.H2_MODEL_ROUNDS ?? 4);
    for (let round = 0; round < rounds; round++) {
      const m = await mount(t, img, mnt, ['-o', 'flush=1']);
      for (let i = 0; i < 150; i++) {
        try {
          await step(rng, [model, mnt]);
        } catch (e) {
          t.fail(`round ${round} step ${i}: ${(e as Error).message}`);
          await m.unmount();
          return;
        }
      }
      await m.unmount();
      const m2 = await mount(t, img, mnt, ['-o', 'ro']);
      const d = diff(snapshot(model), snapshot(mnt));
      await m2.unmount();
      t.same(d, [], `round ${round}: identical after remount`);
      if (d.length) return;
    }
  });

  if (haveFixtures()) {
    t.test('writing into a reference-made image keeps everything else intact', async (t) => {
      const dir = tempDir(t);
      const img = unpackFixture('basic', dir);
      const mnt = path.join(dir, 'mnt');
      let m = await mount(t, `${img}@DATA`, mnt);
      const extra = Buffer.alloc(3 << 20, 'new data ');
      fs.writeFileSync(path.join(mnt, 'added.txt'), extra);
      fs.mkdirSync(path.join(mnt, 'newdir/sub'), { recursive: true });
      for (let i = 0; i < 300; i++) fs.writeFileSync(path.join(mnt, 'bigdir', `added-${i}`), `${i}`);
      await m.unmount();
      m = await mount(t, `${img}@DATA`, mnt, ['-o', 'ro']);
      t.ok(fs.readFileSync(path.join(mnt, 'added.txt')).equals(extra), 'new file reads back');
      t.equal(fs.readdirSync(path.join(mnt, 'bigdir')).length, 3300, 'big directory grew by 300');
      // Everything the reference wrote is still exactly as its manifest says (the new entries aside).
      const r = spawnSync('python3', [COMPARE_TREE, path.join(FIXTURES, 'basic.manifest.json'), '--pfs', 'DATA', '--root', mnt, '--ignore', 'dir.mtime'], {
        encoding: 'utf8',
        maxBuffer: 64 << 20,
      });
      const fails = r.stdout.split('\n').filter((l) => /^(FAIL|EXTRA|MISSING|ERROR)/i.test(l) && !/added|newdir/.test(l));
      t.same(fails.filter((l) => !/extra/i.test(l)), [], 'reference entries unchanged');
      await m.unmount();
    });
  }
}
