// The read-only mount as a user sees it: inode numbers, "..", random-offset
// reads, statfs, EROFS on every modifying call, and clean shutdown on SIGTERM.
import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { Hammer2Device } from '../src/engine';
import { Pfs } from '../src/fs';
import { FIXTURES, fuseUnavailable, haveFixtures, tempDir, unpackFixture, loadManifest } from './lib/env';
import { mount } from './lib/mount';

process.env.HAMMER2_QUIET_SHIM = '1';

if (!haveFixtures()) t.plan(0, `no fixtures at ${FIXTURES}`);
else if (fuseUnavailable()) t.plan(0, fuseUnavailable()!);
else {
  t.test('basic image, read-only mount', async (t) => {
    const dir = tempDir(t);
    const img = unpackFixture('basic', dir);
    const dev = await Hammer2Device.open(img, { lock: false });
    t.teardown(() => dev.close());
    const pfs = new Pfs(dev.reader, dev.findPfs('DATA')!);
    const m = await mount(t, `${img}@DATA`, path.join(dir, 'mnt'), ['-o', 'ro']);
    const p = (x: string) => path.join(m.mnt, x);

    t.test('st_ino is the HAMMER2 inode number; nlink and blocks', async (t) => {
      for (const f of ['sizes/size-65536', 'sizes/size-41943040', 'bigdir', 'hardlinks']) {
        const st = await fs.promises.lstat(p(f));
        const ip = pfs.resolve('/' + f);
        t.equal(st.ino, Number(ip.inum), `${f} ino`);
        t.equal(st.nlink, Number(ip.data.meta.nlinks), `${f} nlink`);
      }
      const big = await fs.promises.stat(p('sizes/size-41943040'));
      t.ok(big.blocks * 512 >= 41943040, 'random data occupies its size on media');
      const zeros = loadManifest('basic').entries.find((e) => e.path.includes('zero') && e.type === 'file' && (e.size ?? 0) > 0);
      if (zeros) {
        const st = await fs.promises.stat(p(zeros.path.slice(1)));
        t.ok(st.blocks * 512 < st.size, `${zeros.path}: zero blocks take no space`);
      }
    });

    t.test('readdir lists . and .. with real inode numbers', async (t) => {
      const d = await fs.promises.opendir(p('sizes'));
      const names: string[] = [];
      for await (const e of d) names.push(e.name);
      t.ok(names.length >= 12);
      const all = fs.readdirSync(p('sizes'), { withFileTypes: true });
      t.ok(all.every((e) => e.isFile()), 'd_type says regular file');
      const big = await fs.promises.readdir(p('bigdir'));
      t.equal(big.length, 3000, 'large directory lists completely');
      t.equal(new Set(big).size, 3000, 'no duplicates across getdents calls');
    });

    t.test('reads at any offset and size', async (t) => {
      const ip = pfs.resolve('/sizes/size-5242880');
      const whole = pfs.read(ip, 0, 5242880);
      const fh = await fs.promises.open(p('sizes/size-5242880'));
      t.teardown(() => fh.close());
      let seed = 42;
      const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) % n);
      for (let i = 0; i < 200; i++) {
        const pos = rnd(5242880 + 100000);
        const len = 1 + rnd(300000);
        const buf = Buffer.alloc(len);
        const { bytesRead } = await fh.read(buf, 0, len, pos);
        const want = whole.subarray(Math.min(pos, whole.length), Math.min(pos + len, whole.length));
        if (bytesRead !== want.length || !buf.subarray(0, bytesRead).equals(want)) {
          t.fail(`read ${len}@${pos} differs`);
          return;
        }
      }
      t.pass('200 random reads match');
      const h = createHash('sha256').update(await fs.promises.readFile(p('sizes/size-5242880'))).digest('hex');
      t.equal(h, createHash('sha256').update(whole).digest('hex'));
    });

    t.test('statfs reflects the volume header', async (t) => {
      const s = await fs.promises.statfs(m.mnt);
      const h = dev.header;
      t.equal(s.blocks * s.bsize, Math.floor(Number(h.allocatorSize) / s.bsize) * s.bsize);
      t.equal(s.bfree * s.bsize, Math.floor(Number(h.allocatorFree) / s.bsize) * s.bsize);
      t.ok(s.files >= s.ffree);
    });

    t.test('every modifying call fails with EROFS', async (t) => {
      const ops: [string, () => Promise<unknown>][] = [
        ['create', () => fs.promises.writeFile(p('new'), 'x')],
        ['open for write', () => fs.promises.open(p('sizes/size-1'), 'r+')],
        ['truncate', () => fs.promises.truncate(p('sizes/size-1'), 0)],
        ['mkdir', () => fs.promises.mkdir(p('newdir'))],
        ['rmdir', () => fs.promises.rmdir(p('emptydir'))],
        ['unlink', () => fs.promises.unlink(p('sizes/size-1'))],
        ['rename', () => fs.promises.rename(p('sizes/size-1'), p('sizes/size-x'))],
        ['symlink', () => fs.promises.symlink('x', p('sl'))],
        ['link', () => fs.promises.link(p('sizes/size-1'), p('hl'))],
        ['chmod', () => fs.promises.chmod(p('sizes/size-1'), 0o600)],
        ['chown', () => fs.promises.chown(p('sizes/size-1'), 1, 1)],
        ['utimes', () => fs.promises.utimes(p('sizes/size-1'), 1, 1)],
      ];
      for (const [name, op] of ops) await t.rejects(op(), { code: 'EROFS' }, name);
      t.equal((await fs.promises.stat(p('sizes/size-1'))).size, 1, 'nothing changed');
    });

    t.test('SIGTERM unmounts and exits cleanly', async (t) => {
      const exit = new Promise<number | null>((r) => m.proc.on('exit', (code) => r(code)));
      m.proc.kill('SIGTERM');
      t.equal(await exit, 0, 'daemon exit status');
      const mounted = fs.readFileSync('/proc/self/mounts', 'utf8').includes(` ${m.mnt} `);
      t.notOk(mounted, 'mount is gone');
    });
  });
}
