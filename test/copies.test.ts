// Copies from the command line, as a user runs them: mount_hammer2 -o
// copy=IMAGE, hammer2 copy-add / copy-remove / copy-status. A copy is
// filled and followed; blocks damaged on the primary are served from the
// copy and repaired; a copy left out while the PFS is written catches up
// when it returns; bad copy specs get clear messages. Every image left
// behind passes our fsck and the reference's, and the copy reads back
// exactly through the reference implementation.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { CopyStatus } from '../src/cluster';
import { Hammer2Fs } from '../src/fs';
import { BrefType, inodeBlockset } from '../src/media';
import { checkHammer2 } from '../fsck';
import { newImage, runH2 } from './lib/cli';
import { fileHashes, fuseUnavailable, haveRef, refRead, REPO, tempDir } from './lib/env';
import { forceUnmount, mount, mountRefusal } from './lib/mount';
import { imageTree, treeDiff, fsckBoth } from './lib/pfstree';

process.env.HAMMER2_QUIET_SHIM = '1';

type Status = CopyStatus;

async function status(mnt: string): Promise<Status[]> {
  const r = await runH2(['-s', mnt, 'copy-status', '--json']);
  if (r.status !== 0) throw new Error(`copy-status failed: ${r.err}`);
  return JSON.parse(r.out).copies;
}

async function waitInSync(t: any, mnt: string, ms = 60000): Promise<Status[]> {
  const end = Date.now() + ms;
  let s = await status(mnt);
  while (Date.now() < end && !s.every((c) => c.state === 'in-sync' && c.tid === s[0].tid)) {
    await new Promise((r) => setTimeout(r, 100));
    s = await status(mnt);
  }
  t.ok(s.every((c) => c.state === 'in-sync' && c.tid === s[0].tid), `every node in sync at tid ${s[0].tid}`);
  return s;
}

function writeTree(root: string, seed: string, n: number): Map<string, string> {
  const out = new Map<string, string>();
  fs.mkdirSync(path.join(root, 'd'), { recursive: true });
  for (let i = 0; i < n; i++) {
    const data = i % 5 === 0 ? randomBytes(300000 + i * 1000) : Buffer.from(`${seed} file ${i}\n`.repeat(i * 37 + 1));
    const rel = i % 2 ? `d/f${i}` : `f${i}`;
    fs.writeFileSync(path.join(root, rel), data);
    out.set(rel, createHash('sha256').update(data).digest('hex'));
  }
  return out;
}

function hashesUnder(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string, rel: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(path.join(d, e.name), r);
      else if (e.isFile()) out.set(r, createHash('sha256').update(fs.readFileSync(path.join(d, e.name))).digest('hex'));
    }
  };
  walk(root, '');
  return out;
}

/** Commit what the mount holds: an fsync commits everything pending (sync(1) does not reach a FUSE daemon). */
function commitNow(mnt: string): void {
  const fd = fs.openSync(mnt, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Flip a byte in the first data block of each named file of an unmounted image. */
async function damageData(img: string, label: string, files: string[]): Promise<number> {
  const h = await Hammer2Fs.open(img, { lock: false });
  const offs: bigint[] = [];
  try {
    const p = h.pfs(label)!;
    for (const f of files) {
      let b = inodeBlockset(p.resolve(`/${f}`).data).find((x) => x.type !== BrefType.EMPTY);
      while (b && b.type === BrefType.INDIRECT) b = h.dev.reader.readBlockrefs(b).find((x) => x.type !== BrefType.EMPTY);
      if (b && b.type === BrefType.DATA) offs.push(b.dataOff & ~0x3fn);
    }
  } finally {
    h.close();
  }
  const fd = fs.openSync(img, 'r+');
  for (const o of offs) {
    const one = Buffer.alloc(1);
    fs.readSync(fd, one, 0, 1, Number(o) + 17);
    one[0] ^= 0xff;
    fs.writeSync(fd, one, 0, 1, Number(o) + 17);
  }
  fs.closeSync(fd);
  return offs.length;
}

const why = fuseUnavailable();
if (why) t.plan(0, why);
else {
  t.test('mount with a copy: fill, follow, repair the primary, catch up after an absence', async (t) => {
    const A = await newImage(t, 512 << 20, ['DATA']);
    const B = await newImage(t, 512 << 20, ['none']);
    const mnt = path.join(A.dir, 'mnt');

    // 1. A copy named at mount time is made and filled while files are written.
    let m = await mount(t, `${A.img}@DATA`, mnt, ['-o', `copy=${B.img}`]);
    const want = writeTree(mnt, 'one', 40);
    fs.writeFileSync(path.join(mnt, 'synced'), 'fsync reaches every in-sync copy');
    const fd = fs.openSync(path.join(mnt, 'synced'), 'r+');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    let s = await waitInSync(t, mnt);
    t.equal(s.length, 2, 'primary and copy listed');
    t.ok(s[0].primary && !s[1].primary, 'the primary first');
    t.equal(s[1].spec, B.img, 'the copy by its image');
    t.ok(s[1].resync.passes >= 1, `filled by ${s[1].resync.passes} resync pass(es), then followed commits`);
    const human = await runH2(['-s', mnt, 'copy-status']);
    t.match(human.out, /primary\s+in-sync/, 'copy-status prints a table');
    await m.unmount();
    t.same(treeDiff(await imageTree(A.img, 'DATA'), await imageTree(B.img, 'DATA')), [], 'after unmount: copy identical to primary');
    await fsckBoth(t, A.img, 'primary');
    await fsckBoth(t, B.img, 'copy');

    // 2. Damage data blocks of the primary: reads see no error, the primary is repaired.
    const victims = ['f0', 'd/f5', 'f10', 'd/f15'];
    t.equal(await damageData(A.img, 'DATA', victims), victims.length, 'primary blocks damaged');
    m = await mount(t, `${A.img}@DATA`, mnt, ['-o', `copy=${B.img}`]);
    s = await waitInSync(t, mnt);
    const got = hashesUnder(mnt);
    for (const [k, v] of want) if (got.get(k) !== v) t.fail(`${k} reads wrong`);
    t.pass('every file reads right through the damage');
    await new Promise((r) => setTimeout(r, 300));
    s = await status(mnt);
    t.ok(s[0].readErrors >= victims.length, `primary read errors counted: ${s[0].readErrors}`);
    await m.unmount();
    t.match(m.log(), /repaired/, 'the daemon logs the repairs');
    await fsckBoth(t, A.img, 'repaired primary');
    const r0 = await checkHammer2(A.img, { lock: false });
    t.equal(r0.report.errors, 0, 'no damage left on the primary');

    // 3. A copy left out: the PFS is written without it, then it returns.
    m = await mount(t, `${A.img}@DATA`, mnt);
    const more = writeTree(path.join(mnt, 'later'), 'two', 20);
    fs.rmSync(path.join(mnt, 'f2'));
    fs.renameSync(path.join(mnt, 'f4'), path.join(mnt, 'd', 'f4-moved'));
    await m.unmount();
    m = await mount(t, `${A.img}@DATA`, mnt, ['-o', `copy=${B.img}`]);
    s = await waitInSync(t, mnt);
    t.ok(s[1].resync.blocksWritten > 0 && s[1].resync.blocksWritten < 400, `catch-up wrote ${s[1].resync.blocksWritten} blocks`);
    await m.unmount();
    t.same(treeDiff(await imageTree(A.img, 'DATA'), await imageTree(B.img, 'DATA')), [], 'after the catch-up: identical');
    await fsckBoth(t, B.img, 'copy after catch-up');
    if (haveRef('makefs')) {
      const ref = fileHashes(refRead(B.img, 'DATA', tempDir(t)));
      let bad = 0;
      for (const [k, v] of more) if (ref.get(`later/${k}`) !== v) bad++;
      t.equal(bad, 0, 'the copy reads back exactly through the reference');
    }
  });

  t.test('copy-add and copy-remove on a live mount; bad copies refused', async (t) => {
    const A = await newImage(t, 256 << 20, ['DATA']);
    const B = await newImage(t, 256 << 20, ['none']);
    const C = await newImage(t, 256 << 20, ['DATA']); // another cluster's DATA
    const junk = path.join(A.dir, 'junk');
    fs.writeFileSync(junk, Buffer.alloc(1 << 20, 7));
    const mnt = path.join(A.dir, 'mnt');
    const m = await mount(t, `${A.img}@DATA`, mnt);
    writeTree(mnt, 'x', 10);
    let r = await runH2(['-s', mnt, 'copy-add', B.img]);
    t.equal(r.status, 0, `copy-add: ${r.out}${r.err}`);
    await waitInSync(t, mnt);
    for (const [spec, re] of [
      [A.img, /already part of this cluster/],
      [C.img, /another cluster/],
      [junk, /cannot be used as a copy/],
      [B.img, /already a copy/],
    ] as [string, RegExp][]) {
      r = await runH2(['-s', mnt, 'copy-add', spec]);
      t.equal(r.status, 1, `copy-add ${path.basename(spec)} refused`);
      t.match(r.err, re, `with a clear message: ${r.err.trim()}`);
    }
    // Too small for what the PFS holds.
    const rundir = process.env.HAMMER2_RUNDIR;
    const tiny = await newImage(t, 64 << 20, ['none']);
    process.env.HAMMER2_RUNDIR = rundir; // newImage points it at its own directory
    fs.writeFileSync(path.join(mnt, 'bulk'), randomBytes(80 << 20));
    commitNow(mnt);
    r = await runH2(['-s', mnt, 'copy-add', tiny.img]);
    t.equal(r.status, 1, 'a copy too small for the data is refused');
    t.match(r.err, /bytes free; the PFS "DATA" holds/, `with a clear message: ${r.err.trim()}`);
    fs.rmSync(path.join(mnt, 'bulk'));
    // A node made the reference way: pfs-create -u CLID on another image.
    const clid = (await runH2(['-s', mnt, 'pfs-clid', 'DATA'])).out.trim();
    const D = await newImage(t, 256 << 20, ['none']);
    process.env.HAMMER2_RUNDIR = rundir; // newImage points it at its own directory
    r = await runH2(['-s', D.img, '-u', clid, 'pfs-create', 'DATA']);
    t.equal(r.status, 0, `pfs-create -u ${clid} on another image: ${r.out}${r.err}`);
    r = await runH2(['-s', mnt, 'copy-add', D.img]);
    t.equal(r.status, 0, `that node is taken as a copy: ${r.err}`);
    await waitInSync(t, mnt);
    r = await runH2(['-s', mnt, 'copy-remove', D.img]);
    t.equal(r.status, 0, 'and removed again');
    r = await runH2(['-s', mnt, 'copy-add', path.join(A.dir, 'missing.img')]);
    t.equal(r.status, 0, 'a missing image is accepted as offline');
    let s = await status(mnt);
    t.equal(s.find((c) => c.spec.endsWith('missing.img'))?.state, 'offline', 'and listed offline');
    r = await runH2(['-s', mnt, 'copy-remove', path.join(A.dir, 'missing.img')]);
    t.equal(r.status, 0, 'copy-remove');
    fs.writeFileSync(path.join(mnt, 'after-add'), 'x');
    r = await runH2(['-s', mnt, 'copy-remove', B.img]);
    t.equal(r.status, 0, 'copy-remove of the live copy');
    s = await status(mnt);
    t.equal(s.length, 1, 'only the primary left');
    await m.unmount();
    t.same(treeDiff(await imageTree(A.img, 'DATA'), await imageTree(B.img, 'DATA')), [], 'the removed copy holds everything up to its removal');
    await fsckBoth(t, B.img, 'removed copy');
  });

  t.test('the newest node wins at mount; diverged nodes need a choice, and the loser is kept', async (t) => {
    const A = await newImage(t, 256 << 20, ['DATA']);
    const B = await newImage(t, 256 << 20, ['none']);
    const mnt = path.join(A.dir, 'mnt');
    const mntB = path.join(A.dir, 'mntB');
    let m = await mount(t, `${A.img}@DATA`, mnt, ['-o', `copy=${B.img}`]);
    fs.writeFileSync(path.join(mnt, 'both'), 'written with the copy in sync');
    await waitInSync(t, mnt);
    await m.unmount();

    // The primary is missing: the copy is mounted alone, read-write, and written.
    let mb = await mount(t, `${B.img}@DATA`, mntB);
    fs.writeFileSync(path.join(mntB, 'only-on-B'), 'written while the primary was away');
    await mb.unmount();
    // Back together: the copy is newer, so the primary is brought level from it at mount.
    m = await mount(t, `${A.img}@DATA`, mnt, ['-o', `copy=${B.img}`]);
    t.equal(fs.readFileSync(path.join(mnt, 'only-on-B'), 'utf8'), 'written while the primary was away', "the copy's newer state is served");
    await waitInSync(t, mnt);
    await m.unmount();
    t.match(m.log(), /brought the primary level/, 'and the daemon says so');
    t.same(treeDiff(await imageTree(A.img, 'DATA'), await imageTree(B.img, 'DATA')), [], 'identical again');
    // Level again means level: the next mount together is no divergence (nothing was written since).
    m = await mount(t, `${A.img}@DATA`, mnt, ['-o', `copy=${B.img}`]);
    await waitInSync(t, mnt);
    await m.unmount();
    t.notMatch(m.log(), /diverged/, 'mounting the two together again is plain');

    // Both written apart: diverged.
    m = await mount(t, `${A.img}@DATA`, mnt);
    fs.writeFileSync(path.join(mnt, 'only-on-A'), 'A alone');
    await m.unmount();
    mb = await mount(t, `${B.img}@DATA`, mntB);
    fs.writeFileSync(path.join(mntB, 'only-on-B2'), 'B alone');
    await mb.unmount();
    const refused = await mountRefusal(t, `${A.img}@DATA`, mnt, ['-o', `copy=${B.img}`]);
    t.match(refused, /diverged/, 'a read-write mount of diverged nodes is refused');
    t.match(refused, /master=/, 'with the way to choose');
    m = await mount(t, `${A.img}@DATA`, mnt, ['-o', `copy=${B.img},master=${B.img}`]);
    t.ok(fs.existsSync(path.join(mnt, 'only-on-B2')), "the chosen node's state is served");
    t.notOk(fs.existsSync(path.join(mnt, 'only-on-A')), "the other's is not");
    await waitInSync(t, mnt);
    await m.unmount();
    t.match(m.log(), /kept as PFS "DATA\.diverged\.\d+"/, 'the log says where the losing state went');
    const h = await Hammer2Fs.open(A.img, { lock: false });
    const snap = h.dev.listPfs().find((p) => p.name.startsWith('DATA.diverged.'));
    h.close();
    t.ok(snap, 'the losing state is a snapshot PFS on its image');
    const kept = await imageTree(A.img, snap!.name);
    t.ok(kept.has('/only-on-A'), "and holds what only it had");
    t.same(treeDiff(await imageTree(A.img, 'DATA'), await imageTree(B.img, 'DATA')), [], 'the nodes are identical');
    await fsckBoth(t, A.img, 'primary after divergence');
    await fsckBoth(t, B.img, 'copy after divergence');
  });

  t.test('blocks damaged on both nodes under a running workload: no error seen, scrub repairs all', async (t) => {
    const A = await newImage(t, 256 << 20, ['DATA']);
    const B = await newImage(t, 256 << 20, ['none']);
    const mnt = path.join(A.dir, 'mnt');
    const m = await mount(t, `${A.img}@DATA`, mnt, ['-o', `copy=${B.img}`]);
    const stable = writeTree(path.join(mnt, 'stable'), 'stable', 60);
    fs.mkdirSync(path.join(mnt, 'busy'));
    commitNow(mnt);
    await waitInSync(t, mnt);

    // A workload: writes, overwrites and removals in busy/, reads of stable/.
    let stop = false;
    t.teardown(() => {
      stop = true; // a failed step must not leave the workload running (the test would hang until tap's timeout)
    });
    let errors = 0;
    let ops = 0;
    const work = (async () => {
      for (let i = 0; !stop; i++) {
        try {
          const f = path.join(mnt, 'busy', `w${i % 25}`);
          await fs.promises.writeFile(f, randomBytes(5000 + ((i * 7777) % 150000)));
          if (i % 7 === 0) await fs.promises.rm(path.join(mnt, 'busy', `w${(i + 3) % 25}`), { force: true });
          const [k, h] = [...stable][i % stable.size];
          const got = createHash('sha256').update(await fs.promises.readFile(path.join(mnt, 'stable', k))).digest('hex');
          if (got !== h) errors++;
          if (i % 10 === 0) {
            const fh = await fs.promises.open(f, 'r+');
            await fh.sync();
            await fh.close();
          }
          ops++;
        } catch {
          errors++;
        }
      }
    })();

    // Meanwhile, damage blocks of stable files on both images: data blocks,
    // an inode and a directory's blocktable.
    await new Promise((r) => setTimeout(r, 300));
    const victimsA = ['stable/f0', 'stable/d/f5', 'stable/f20'];
    const victimsB = ['stable/f10', 'stable/d/f15', 'stable/f30', 'stable/d/f25'];
    t.equal(await damageData(A.img, 'DATA', victimsA), victimsA.length, 'primary data blocks damaged');
    t.equal(await damageData(B.img, 'DATA', victimsB), victimsB.length, 'copy data blocks damaged');
    await damageMeta(B.img, 'DATA', 'stable/f40');
    // Enough steps after the damage to meet it, however slow the machine is today.
    const until = ops + 12;
    for (let i = 0; i < 600 && ops < until; i++) await new Promise((r) => setTimeout(r, 100));
    stop = true;
    await work;
    t.ok(ops > 10, `${ops} workload steps`);
    t.equal(errors, 0, 'the workload saw no error and no wrong data');

    const r = await runH2(['-s', mnt, 'scrub', '--json']);
    t.equal(r.status, 0, `scrub: ${r.err}`);
    const nodes = JSON.parse(r.out).nodes as { primary: boolean; damaged: number; repaired: number; blocks: number }[];
    t.ok(nodes[0].damaged >= 0 && nodes[1].damaged >= victimsB.length, `damage found: primary ${nodes[0].damaged}, copy ${nodes[1].damaged}`);
    t.ok(nodes.every((n) => n.repaired >= (n.damaged ? 1 : 0)), 'and repaired');
    const again = JSON.parse((await runH2(['-s', mnt, 'scrub', '--json'])).out).nodes as { damaged: number }[];
    t.same(again.map((n) => n.damaged), [0, 0], 'a second scrub finds nothing');
    const st = await status(mnt);
    t.ok(st[1].healed >= victimsB.length, `copy repairs counted (${st[1].healed})`);
    await m.unmount();
    await fsckBoth(t, A.img, 'primary');
    await fsckBoth(t, B.img, 'copy');
    t.same(treeDiff(await imageTree(A.img, 'DATA'), await imageTree(B.img, 'DATA')), [], 'identical');
    if (haveRef('makefs')) {
      const ref = fileHashes(refRead(B.img, 'DATA', tempDir(t)));
      let bad = 0;
      for (const [k, v] of stable) if (ref.get(`stable/${k}`) !== v) bad++;
      t.equal(bad, 0, 'the copy reads back exactly through the reference');
    }
  });

  t.test('an fstab line with copy= (the mount(8) helper)', async (t) => {
    const A = await newImage(t, 256 << 20, ['DATA']);
    const B = await newImage(t, 256 << 20, ['none']);
    const mnt = path.join(A.dir, 'fstab-mnt');
    fs.mkdirSync(mnt);
    t.teardown(() => forceUnmount(mnt));
    // What mount(8) runs for "IMG@DATA MNT fuse.hammer2 defaults,copy=B 0 0".
    const r = spawnSync(path.join(REPO, 'scripts', 'mount.fuse.hammer2'), [`${A.img}@DATA`, mnt, '-o', `defaults,copy=${B.img}`], {
      encoding: 'utf8',
      env: { ...process.env, NODE_OPTIONS: '', HAMMER2FS_DIR: REPO },
    });
    t.equal(r.status, 0, r.stderr);
    fs.writeFileSync(path.join(mnt, 'x'), 'through fstab');
    const s = await waitInSync(t, mnt);
    t.equal(s[1].spec, B.img, 'the copy named in the fstab options');
    t.equal(spawnSync('umount', [mnt]).status, 0, 'umount');
    for (let i = 0; i < 100 && fs.readFileSync('/proc/self/mounts', 'utf8').includes(mnt); i++) await new Promise((r) => setTimeout(r, 50));
    // The daemon commits to both nodes before it lets go of the images.
    let tree = new Map<string, string>();
    for (let i = 0; i < 100; i++) {
      try {
        tree = await imageTree(B.img, 'DATA');
        if (tree.has('/x')) break;
      } catch {
        /* still being written */
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    t.ok(tree.has('/x'), 'the copy holds the file after umount');
    // A copy that is not there: the mount succeeds, and says so.
    const r2 = spawnSync(path.join(REPO, 'scripts', 'mount.fuse.hammer2'), [`${A.img}@DATA`, mnt, '-o', `copy=${path.join(A.dir, 'gone.img')}`], {
      encoding: 'utf8',
      env: { ...process.env, NODE_OPTIONS: '', HAMMER2FS_DIR: REPO },
    });
    t.equal(r2.status, 0, 'mounted without the missing copy');
    t.match(r2.stderr, /warning: copy .*gone\.img is offline/, `and warned: ${r2.stderr.trim()}`);
    t.equal(spawnSync('umount', [mnt]).status, 0, 'umount');
  });
}

/** Damage the inode block of `file` (unmounted or not: the image is read without the lock). */
async function damageMeta(img: string, label: string, file: string): Promise<void> {
  const h = await Hammer2Fs.open(img, { lock: false });
  let off: bigint;
  try {
    off = h.pfs(label)!.resolve(`/${file}`).bref!.dataOff & ~0x3fn;
  } finally {
    h.close();
  }
  const fd = fs.openSync(img, 'r+');
  const one = Buffer.alloc(1);
  fs.readSync(fd, one, 0, 1, Number(off) + 40);
  one[0] ^= 0xff;
  fs.writeSync(fd, one, 0, 1, Number(off) + 40);
  fs.closeSync(fd);
}
