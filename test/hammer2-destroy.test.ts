// hammer2 destroy, destroy-inum, emergency-mode-enable/-disable and cleanup
// against a live mount: a dangling entry made and removed, emergency mode
// refusing what the reference refuses and allowing removal, and the image
// left clean for our fsck and the reference's.
import t from 'tap';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';

process.env.HAMMER2_QUIET_SHIM = '1';

import { checkHammer2 } from '../fsck/check';
import { mount } from './lib/mount';
import { newImage, runH2 } from './lib/cli';
import { fuseUnavailable, haveRef, refFsck, refRead, fileHashes } from './lib/env';

const skip = fuseUnavailable() ?? false;
const run = (args: string[]) => runH2(args);

const code = (p: Promise<unknown>): Promise<string | null> =>
  p.then(
    () => null,
    (e: NodeJS.ErrnoException) => e.code ?? 'error',
  );
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('destroy-inum leaves a dangling entry; destroy removes it', { skip }, async (t) => {
  const { dir, img } = await newImage(t, 256 << 20);
  const mnt = path.join(dir, 'mnt');
  const m = await mount(t, `${img}@ROOT`, mnt);
  await fsp.writeFile(path.join(mnt, 'keep'), 'kept\n');
  await fsp.writeFile(path.join(mnt, 'victim'), 'x'.repeat(100000));
  await fsp.mkdir(path.join(mnt, 'd'));
  await fsp.writeFile(path.join(mnt, 'd', 'inner'), 'inner\n');
  const ino = (await fsp.stat(path.join(mnt, 'victim'))).ino;

  let r = await run(['-s', mnt, 'destroy-inum', String(ino), '1', '999999', 'abc']);
  t.equal(r.status, 1, 'some of them failed');
  t.equal(
    r.out,
    `deleting inodes on ${mnt}\n${String(ino).padStart(16)} ok\n${'1'.padStart(16)} Invalid argument\n${'999999'.padStart(16)} No such file or directory\n${'0'.padStart(16)} Invalid argument\n`,
    "the reference's lines",
  );
  t.ok((await fsp.readdir(mnt)).includes('victim'), 'the entry is still listed');
  await sleep(1200); // the kernel's entry cache (1 s) forgets the old inode
  t.equal(await code(fsp.readFile(path.join(mnt, 'victim'))), 'EIO', 'and names nothing readable');

  r = await run(['destroy', path.join(mnt, 'victim'), path.join(mnt, 'nothing'), path.join(mnt, 'd', 'inner')]);
  t.equal(r.status, 1);
  t.equal(r.out, `${path.join(mnt, 'victim')}\tok\n${path.join(mnt, 'nothing')}\tNo such file or directory\n${path.join(mnt, 'd', 'inner')}\tok\n`);
  t.same((await fsp.readdir(mnt)).sort(), ['d', 'keep']);
  t.same(await fsp.readdir(path.join(mnt, 'd')), [], 'destroy in a subdirectory');
  r = await run(['destroy']);
  t.equal(r.status, 1);
  t.match(r.err, /destroy: specify one or more paths to destroy/);
  await m.unmount();

  // d/inner's inode was left with its link: an orphan (a warning), not an error.
  const c = await checkHammer2(img, { lock: false });
  t.equal(c.report.errors, 0, `our fsck: no errors (${[...c.report.byCode.keys()].join(', ')})`);
  if (haveRef('fsck_hammer2')) t.equal(refFsck(img).status, 0, 'reference fsck clean');
  if (haveRef('makefs')) t.same([...fileHashes(refRead(img, 'ROOT', dir)).keys()].sort(), ['keep'], 'the reference reads what is left');
});

t.test('emergency mode: creation and writes refused, removal allowed', { skip }, async (t) => {
  const { dir, img } = await newImage(t, 256 << 20, ['ROOT', 'HOME']);
  const a = path.join(dir, 'a');
  const b = path.join(dir, 'b');
  const ma = await mount(t, `${img}@ROOT`, a);
  const mb = await mount(t, `${img}@HOME`, b);
  await fsp.writeFile(path.join(a, 'big'), Buffer.alloc(1 << 20, 1));
  await fsp.writeFile(path.join(a, 'small'), 'small\n');
  const fh = await fsp.open(path.join(a, 'small'), 'r+');

  let r = await run(['emergency-mode-enable', a]);
  t.equal(r.status, 0, r.err);
  t.equal(r.out, `Emergency mode on "${a}" enabled\n`);
  r = await run(['--json', 'info', a]);
  const info = JSON.parse(r.out)[0];
  t.same(
    info.mounts.map((x: { label: string; emergency: boolean }) => [x.label, x.emergency]).sort(),
    [
      ['HOME', false],
      ['ROOT', true],
    ],
    'info shows it, for that PFS only',
  );
  t.equal(await code(fsp.writeFile(path.join(a, 'new'), 'x')), 'EROFS', 'no new files');
  t.equal(await code(fsp.mkdir(path.join(a, 'newdir'))), 'EROFS', 'no new directories');
  t.equal(await code(fsp.rename(path.join(a, 'small'), path.join(a, 'moved'))), 'EROFS', 'no renames');
  t.equal(await code(fsp.link(path.join(a, 'small'), path.join(a, 'hard'))), 'EROFS', 'no links');
  t.equal(await code(fh.write('changed', 0).then(() => fh.sync())), 'EROFS', 'no writes through a handle opened before');
  t.equal(await code(fsp.chmod(path.join(a, 'small'), 0o600)), null, 'attributes change');
  t.equal(await code(fsp.rm(path.join(a, 'big'))), null, 'files are removed');
  await fsp.writeFile(path.join(b, 'other'), 'the other PFS writes on');
  r = await run(['emergency-mode-disable', a]);
  t.equal(r.out, `Emergency mode on "${a}" disabled\n`);
  await fsp.writeFile(path.join(a, 'new'), 'after');
  t.equal(await fsp.readFile(path.join(a, 'small'), 'utf8'), 'small\n', 'the refused write changed nothing');
  await fh.close();

  r = await run(['emergency-mode-enable']);
  t.equal(r.status, 1);
  t.equal(r.err, 'Expected <filesystem> argument\n');
  r = await run(['emergency-mode-enable', path.join(dir, 'nowhere')]);
  t.equal(r.err, `Unable to find "${path.join(dir, 'nowhere')}"\n`);
  r = await run(['emergency-mode-enable', dir]);
  t.equal(r.status, 1);
  t.match(r.out, /^Cannot change emerg mode: .*not inside a mounted HAMMER2 filesystem/);

  r = await run(['cleanup', a]);
  t.equal(r.status, 0, r.err);
  t.equal(r.out, `hammer2 cleanup "${a}"\n`);
  await ma.unmount();
  await mb.unmount();
  const c = await checkHammer2(img, { lock: false });
  t.equal(c.report.errors, 0, 'our fsck: no errors');
  t.equal(c.report.warnings, 0, `our fsck: no warnings after cleanup (${[...c.report.byCode.keys()].join(', ')})`);
  if (haveRef('fsck_hammer2')) t.equal(refFsck(img).status, 0, 'reference fsck clean');
});
