// Randomized model test of the write path at the fs layer (no FUSE): long
// random sequences of creates, writes, truncates, links, unlinks, renames
// and mode changes go to a PFS and to a plain in-memory model; after every
// few steps the PFS is flushed, and now and then closed and reopened from
// media, and the whole tree is compared with the model.
import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FreemapAllocator } from '../src/engine';
import { Hammer2Fs, Node, Pfs } from '../src/fs';
import { ObjType } from '../src/media';
import { haveFixtures, FIXTURES, tempDir, unpackFixture } from './lib/env';
import { MNode, Rng, walkModel } from './lib/model';

process.env.HAMMER2_QUIET_SHIM = '1';
const cred = { uid: 0, gid: 0 };

async function openFs(img: string): Promise<Hammer2Fs> {
  return Hammer2Fs.open(img, {
    writable: true,
    lock: false,
    allocator: (d) => new FreemapAllocator(d.vols, d.reader, d.header),
  });
}

function compare(t: any, pfs: Pfs, model: MNode & { kind: 'dir' }): boolean {
  let ok = true;
  const fail = (m: string) => {
    if (ok) t.fail(m);
    ok = false;
  };
  for (const [p, m] of walkModel(model)) {
    let n: Node;
    try {
      n = pfs.resolve(p);
    } catch (e) {
      fail(`${p}: ${(e as Error).message}`);
      continue;
    }
    const meta = n.data.meta;
    if (m.kind === 'file') {
      if (meta.type !== ObjType.REGFILE) fail(`${p}: type ${meta.type}`);
      else {
        const got = pfs.read(n, 0, Number(meta.size) + 10);
        if (!got.equals(m.data)) fail(`${p}: content differs (${got.length} vs ${m.data.length})`);
        if ((meta.mode & 0o7777) !== m.mode) fail(`${p}: mode ${meta.mode.toString(8)}`);
      }
    } else if (m.kind === 'dir') {
      if (meta.type !== ObjType.DIRECTORY) fail(`${p}: not a dir`);
      const names = pfs.readdir(n).map((e) => e.name.toString());
      const want = [...m.entries.keys()];
      if (names.length !== want.length || want.some((w) => !names.includes(w))) fail(`${p}: entries ${names} vs ${want}`);
    } else {
      if (meta.type !== ObjType.SOFTLINK) fail(`${p}: not a symlink`);
      else if (pfs.readlink(n).toString() !== m.target) fail(`${p}: target`);
    }
  }
  const rootNames = pfs.readdir(pfs.root).map((e) => e.name.toString());
  if (rootNames.length !== model.entries.size) fail(`root has ${rootNames.length} entries, model ${model.entries.size}`);
  return ok;
}

if (!haveFixtures()) t.plan(0, `no fixtures at ${FIXTURES}`);
else
  t.test('random operations through the fs layer survive flush and remount', async (t) => {
    const dir = tempDir(t);
    const img = unpackFixture('empty', dir);
    let h2 = await openFs(img);
    t.teardown(() => h2.close());
    let pfs = h2.pfs('DATA')!;
    const model: MNode & { kind: 'dir' } = { kind: 'dir', id: 0, mode: 0o755, entries: new Map() };
    const rng = new Rng(12345);
    let nextId = 1;
    let now = 1_700_000_000_000_000n;
    const dirs = () => [['', model] as [string, MNode & { kind: 'dir' }], ...(walkModel(model).filter(([, n]) => n.kind === 'dir') as [string, MNode & { kind: 'dir' }][])];
    const files = () => walkModel(model).filter(([, n]) => n.kind === 'file') as [string, MNode & { kind: 'file' }][];
    const node = (p: string) => pfs.resolve(p || '/');
    const STEPS = 1500;
    for (let step = 0; step < STEPS; step++) {
      now += 1000n;
      const op = rng.int(100);
      const [dp, dm] = rng.pick(dirs());
      const name = `n${rng.int(60)}${rng.int(4) === 0 ? '-' + 'L'.repeat(70 + rng.int(150)) : ''}`;
      try {
        if (op < 25) {
          if (dm.entries.has(name)) continue;
          pfs.create(node(dp), Buffer.from(name), ObjType.REGFILE, 0o644, cred, now);
          dm.entries.set(name, { kind: 'file', id: nextId++, data: Buffer.alloc(0), mode: 0o644 });
        } else if (op < 32) {
          if (dm.entries.has(name)) continue;
          pfs.create(node(dp), Buffer.from(name), ObjType.DIRECTORY, 0o755, cred, now);
          dm.entries.set(name, { kind: 'dir', id: nextId++, mode: 0o755, entries: new Map() });
        } else if (op < 36) {
          if (dm.entries.has(name)) continue;
          const target = 't'.repeat(1 + rng.int(rng.int(2) ? 40 : 900));
          pfs.symlink(node(dp), Buffer.from(name), Buffer.from(target), cred, now);
          dm.entries.set(name, { kind: 'symlink', id: nextId++, target });
        } else if (op < 60) {
          const fl = files();
          if (!fl.length) continue;
          const [fp, fm] = rng.pick(fl);
          const big = rng.int(10) === 0;
          const pos = rng.int(big ? 3_000_000 : 200_000);
          const len = 1 + rng.int(big ? 400_000 : 70_000);
          const data = rng.bytes(len);
          pfs.write(node(fp), pos, data, now);
          const end = pos + len;
          if (end > fm.data.length) fm.data = Buffer.concat([fm.data, Buffer.alloc(end - fm.data.length)]);
          data.copy(fm.data, pos);
        } else if (op < 68) {
          const fl = files();
          if (!fl.length) continue;
          const [fp, fm] = rng.pick(fl);
          const size = rng.int(3) === 0 ? 0 : rng.int(fm.data.length + 100_000);
          pfs.truncate(node(fp), BigInt(size), now);
          fm.data = size <= fm.data.length ? Buffer.from(fm.data.subarray(0, size)) : Buffer.concat([fm.data, Buffer.alloc(size - fm.data.length)]);
        } else if (op < 76) {
          const entries = [...dm.entries].filter(([, n]) => n.kind !== 'dir');
          if (!entries.length) continue;
          const [nm] = rng.pick(entries);
          pfs.unlink(node(dp), Buffer.from(nm), now);
          dm.entries.delete(nm);
        } else if (op < 80) {
          const entries = [...dm.entries].filter(([, n]) => n.kind === 'dir' && n.entries.size === 0);
          if (!entries.length) continue;
          const [nm] = rng.pick(entries);
          pfs.unlink(node(dp), Buffer.from(nm), now, true);
          dm.entries.delete(nm);
        } else if (op < 88) {
          const entries = [...dm.entries];
          if (!entries.length) continue;
          const [nm, n] = rng.pick(entries);
          const [tp, tm] = rng.pick(dirs());
          if (n.kind === 'dir' && (tp === `${dp}/${nm}` || tp.startsWith(`${dp}/${nm}/`))) continue;
          const existing = tm.entries.get(name);
          if (existing && (existing.kind === 'dir') !== (n.kind === 'dir')) continue;
          if (existing && existing.kind === 'dir' && existing.entries.size) continue;
          if (existing === n) continue;
          pfs.rename(node(dp), Buffer.from(nm), node(tp), Buffer.from(name), now);
          dm.entries.delete(nm);
          tm.entries.set(name, n);
        } else if (op < 92) {
          const fl = files();
          if (!fl.length || dm.entries.has(name)) continue;
          const [fp, fm] = rng.pick(fl);
          pfs.link(node(fp), node(dp), Buffer.from(name), now);
          dm.entries.set(name, fm);
        } else if (op < 95) {
          const fl = files();
          if (!fl.length) continue;
          const [fp, fm] = rng.pick(fl);
          fm.mode = rng.pick([0o600, 0o644, 0o755, 0o4755, 0o1777]);
          pfs.setattr(node(fp), { mode: fm.mode }, now);
        } else {
          h2.flush();
          if (pfs.dirty) {
            t.fail(`step ${step}: the PFS still has pending changes after a flush`);
            return;
          }
          if (rng.int(3) === 0) {
            h2.close();
            h2 = await openFs(img);
            pfs = h2.pfs('DATA')!;
            if (!compare(t, pfs, model)) return;
          }
        }
      } catch (e) {
        t.fail(`step ${step} op ${op}: ${(e as Error).stack}`);
        return;
      }
    }
    h2.flush();
    h2.close();
    h2 = await openFs(img);
    pfs = h2.pfs('DATA')!;
    t.ok(compare(t, pfs, model), `${STEPS} steps, tree matches the model after remount`);
    const before = h2.freeBytes();
    const bf = h2.bulkfree();
    t.ok(bf.freed > 0, `bulkfree returned ${bf.freed} bytes of superseded blocks`);
    t.equal(bf.fixedUp, 0, 'no block in use was marked free');
    t.ok(h2.freeBytes() > before, 'free space grew');
    h2.close();
    h2 = await openFs(img);
    pfs = h2.pfs('DATA')!;
    t.ok(compare(t, pfs, model), 'tree intact after bulkfree and remount');
    // Reusing freed space must not damage anything: write more, flush, compare.
    const f = pfs.create(pfs.root, Buffer.from('after-bulkfree'), ObjType.REGFILE, 0o644, cred, now);
    const blob = rng.bytes(2_000_000);
    pfs.write(f, 0, blob, now);
    model.entries.set('after-bulkfree', { kind: 'file', id: nextId++, data: blob, mode: 0o644 });
    h2.flush();
    h2.close();
    h2 = await openFs(img);
    pfs = h2.pfs('DATA')!;
    t.ok(compare(t, pfs, model), 'tree intact after reusing freed space');
    // For checking by hand with the reference tools: H2_KEEP_IMAGE=/path npx tap ...
    if (process.env.H2_KEEP_IMAGE) fs.copyFileSync(img, process.env.H2_KEEP_IMAGE);
  });
