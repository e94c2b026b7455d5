// The mirroring scenario end to end, through FUSE: a master being written,
// mirror-stream into a SLAVE mounted on another image, and at several
// moments the slave's `tar | sha256sum` equals that of the master's state
// at the slave's synchronized transaction id (kept on the master as a
// snapshot with --keep-synced). Then the writer stops, the slave catches
// up, and the two trees are identical.
import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { H2_BIN, newImage, runH2 } from './lib/cli';
import { fuseUnavailable } from './lib/env';
import { mount } from './lib/mount';
import { mountedMasterAndSlave, slaveHoldsMaster } from './lib/mirror';
import { content, fsckBoth, imageTree, treeDiff } from './lib/pfstree';

process.env.HAMMER2_QUIET_SHIM = '1';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** sha256 of `tar` of a tree (names sorted, so only content and attributes count). */
function tarHash(dir: string): string {
  const r = spawnSync('bash', ['-o', 'pipefail', '-c', `tar -C '${dir}' --sort=name -cf - . | sha256sum`], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`tar of ${dir}: ${r.stderr}`);
  return r.stdout.split(' ')[0];
}

/** The synchronized tid of PFS `label` as pfs-list shows it. */
async function listedTid(where: string, label: string): Promise<bigint | null> {
  const r = await runH2(['pfs-list', where, '--json']);
  if (r.status !== 0) throw new Error(r.err);
  const pfs = JSON.parse(r.out)[0].pfs.find((x: { name: string }) => x.name === label);
  return pfs ? BigInt(pfs.tid) : null;
}

t.test('mirror-stream into a mounted slave: consistent at its synced tid while the master is written, identical at the end', async (t) => {
  const why = fuseUnavailable();
  if (why) return t.skip(why);
  const { A, B, mnt, m: ma } = await mountedMasterAndSlave(t, ['-o', 'flush=1']);
  const smnt = path.join(B.dir, 'slave');
  const mb = await mount(t, `${B.img}@M`, smnt);

  // A writer of files, directories, renames, hard links, symlinks, truncations and deletions.
  let stop = false;
  let ops = 0;
  const writer = (async () => {
    for (let i = 0; !stop; i++, ops++) {
      const d = path.join(mnt, `d${i % 7}`);
      await fs.promises.mkdir(d, { recursive: true });
      const f = path.join(d, `f${i % 23}`);
      await fs.promises.writeFile(f, content(i, 3000 + (i % 11) * 9000));
      if (i % 5 === 0) await fs.promises.rename(f, path.join(mnt, `moved${i % 13}`)).catch(() => {});
      if (i % 7 === 0) await fs.promises.rm(path.join(mnt, `d${(i + 3) % 7}`, `f${(i + 5) % 23}`), { force: true });
      if (i % 9 === 0) await fs.promises.link(path.join(mnt, `moved${i % 13}`), path.join(mnt, `link${i % 4}`)).catch(() => {});
      if (i % 11 === 0) await fs.promises.symlink(`d${i % 7}/f${i % 23}`, path.join(mnt, `sym${i}`)).catch(() => {});
      if (i % 13 === 0) await fs.promises.truncate(path.join(mnt, `moved${(i + 1) % 13}`), i % 5000).catch(() => {});
      await sleep(3);
    }
  })();

  const st = spawn(process.execPath, [H2_BIN, '--keep-synced', 'DATA.synced', 'mirror-stream', mnt, smnt], { env: { ...process.env, NODE_OPTIONS: '' } });
  let out = '';
  st.stdout.on('data', (d) => (out += d));
  st.stderr.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => st.on('exit', (c) => r(c)));
  t.teardown(() => {
    st.kill('SIGCONT');
    st.kill('SIGKILL');
  });

  // At several moments: hold the stream, and compare the slave with the
  // master's state at the slave's tid (the kept snapshot), both mounted.
  const snap = path.join(A.dir, 'synced');
  let checked = 0;
  const tids: bigint[] = [];
  for (let tries = 0; checked < 3 && tries < 60; tries++) {
    await sleep(1200);
    st.kill('SIGSTOP');
    try {
      const slaveTid = await listedTid(smnt, 'M');
      const keptTid = await listedTid(mnt, 'DATA.synced');
      // Stopped between the slave's commit and the snapshot's: look again later.
      if (!slaveTid || slaveTid !== keptTid || tids.includes(slaveTid)) continue;
      const ms = await mount(t, `${A.img}@DATA.synced`, snap);
      try {
        t.equal(tarHash(smnt), tarHash(snap), `the slave reads as the master did at transaction ${slaveTid}`);
      } finally {
        await ms.unmount();
      }
      tids.push(slaveTid);
      checked++;
    } finally {
      st.kill('SIGCONT');
    }
  }
  t.equal(checked, 3, `checked at three synced points (${tids.join(', ')}) while ${ops} operations ran`);

  stop = true;
  await writer;
  // The last commit of the master (a file of its own: the writer may have removed any of its files).
  const fh = await fs.promises.open(path.join(mnt, 'last'), 'w');
  await fh.write('the last commit');
  await fh.sync();
  await fh.close();
  const masterTid = (await listedTid(mnt, 'DATA'))!;
  for (let i = 0; i < 300 && (await listedTid(smnt, 'M')) !== masterTid; i++) await sleep(200);
  t.equal(await listedTid(smnt, 'M'), masterTid, 'the slave caught up with the master');
  t.equal(tarHash(smnt), tarHash(mnt), 'the mounted trees are identical');
  st.kill('SIGTERM');
  t.equal(await exited, 0, `mirror-stream ends on SIGTERM (${out.split('\n').filter(Boolean).length} lines of passes)`);
  t.notMatch(out, /not kept/, 'every synced state was kept');
  // Both ends mounted: the master's daemon streamed the pinned states itself.
  t.match(ma.log(), /mirror-read of DATA: transaction \d+ -> \d+/, "the master's daemon streamed the passes");
  await mb.unmount();
  await ma.unmount();
  await slaveHoldsMaster(t, A.img, B.img, 'M', 'the images hold the same tree');
});

t.test('mirror-stream to a slave on another host ([user@]host:SLAVE through $HAMMER2_RSH), and mirror-tid', async (t) => {
  const why = fuseUnavailable();
  if (why) return t.skip(why);
  const { A, B, mnt, m: ma } = await mountedMasterAndSlave(t, ['-o', 'flush=1'], 256 << 20);
  // "ssh": runs the command here, with hammer2 on its PATH, as a remote shell would.
  const bin = path.join(B.dir, 'bin');
  fs.mkdirSync(bin);
  fs.writeFileSync(path.join(bin, 'hammer2'), `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(H2_BIN)} "$@"\n`, { mode: 0o755 });
  const rsh = path.join(bin, 'fake-ssh');
  fs.writeFileSync(rsh, `#!/bin/sh\necho "$1" >> ${JSON.stringify(path.join(B.dir, 'hosts'))}\nshift\nPATH=${JSON.stringify(bin)}:$PATH exec sh -c "$*"\n`, { mode: 0o755 });
  const env = { ...process.env, NODE_OPTIONS: '', HAMMER2_RSH: rsh, PATH: `${bin}:${process.env.PATH}` };
  t.equal(spawnSync('hammer2', ['mirror-tid', `${B.img}@M`], { env, encoding: 'utf8' }).stdout, '0\n', 'mirror-tid: an empty slave holds 0');
  for (let i = 0; i < 30; i++) fs.writeFileSync(path.join(mnt, `f${i}`), content(i, 5000 + i * 300));
  const st = spawn(process.execPath, [H2_BIN, 'mirror-stream', mnt, `backup@otherhost:${B.img}@M`], { env });
  let out = '';
  st.stdout.on('data', (d) => (out += d));
  st.stderr.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => st.on('exit', (c) => r(c)));
  t.teardown(() => st.kill('SIGKILL'));
  for (let i = 0; i < 40; i++) {
    await fs.promises.writeFile(path.join(mnt, `g${i % 10}`), content(100 + i, 7000));
    if (i % 8 === 0) await fs.promises.rm(path.join(mnt, `f${i}`), { force: true });
    await sleep(50);
  }
  const fh = await fs.promises.open(path.join(mnt, 'last'), 'w');
  await fh.write('the last commit');
  await fh.sync();
  await fh.close();
  const target = (await listedTid(mnt, 'DATA'))!;
  const slaveTid = () => BigInt(spawnSync('hammer2', ['mirror-tid', `${B.img}@M`], { env, encoding: 'utf8' }).stdout.trim() || '0');
  for (let i = 0; i < 300 && slaveTid() !== target; i++) await sleep(200);
  t.equal(slaveTid(), target, 'the remote slave reached the master tid');
  st.kill('SIGTERM');
  t.equal(await exited, 0, 'mirror-stream ends on SIGTERM');
  t.match(out, /backup@otherhost:M: transaction 0 -> \d+/, `passes went through the remote shell: ${out.split('\n')[0]}`);
  t.match(fs.readFileSync(path.join(B.dir, 'hosts'), 'utf8'), /^backup@otherhost$/m, 'to the host named');
  const bad = spawnSync(process.execPath, [H2_BIN, '--keep-synced', 'X', 'mirror-stream', mnt, `otherhost:${B.img}@M`], { env, encoding: 'utf8' });
  t.equal(bad.status, 1, 'a kept snapshot needs the slave here');
  await ma.unmount();
  t.same(treeDiff(await imageTree(A.img, 'DATA'), await imageTree(B.img, 'M')), [], 'the slave holds the master');
  await fsckBoth(t, B.img, 'slave');
});

t.test('mirror-stream between mounted paths goes on when the slave is unmounted and mounted again', async (t) => {
  const why = fuseUnavailable();
  if (why) return t.skip(why);
  const { A, B, mnt, m: ma } = await mountedMasterAndSlave(t, [], 256 << 20);
  const smnt = path.join(B.dir, 'slave');
  let mb = await mount(t, `${B.img}@M`, smnt);
  const st = spawn(process.execPath, [H2_BIN, 'mirror-stream', mnt, smnt], { env: { ...process.env, NODE_OPTIONS: '' } });
  let out = '';
  st.stdout.on('data', (d) => (out += d));
  st.stderr.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => st.on('exit', (c) => r(c)));
  t.teardown(() => st.kill('SIGKILL'));
  const commit = async (name: string) => {
    const fh = await fs.promises.open(path.join(mnt, name), 'w');
    await fh.write(name);
    await fh.sync();
    await fh.close();
    return (await listedTid(mnt, 'DATA'))!;
  };
  const reach = async (tid: bigint) => {
    for (let i = 0; i < 100 && (await listedTid(B.img, 'M')) !== tid; i++) await sleep(100);
    return listedTid(B.img, 'M');
  };
  let tid = await commit('one');
  t.equal(await reach(tid), tid, 'first pass into the mounted slave');
  await mb.unmount();
  tid = await commit('two');
  t.equal(await reach(tid), tid, 'a pass into the slave image while it is not mounted');
  mb = await mount(t, `${B.img}@M`, smnt);
  tid = await commit('three');
  t.equal(await reach(tid), tid, 'and into the slave mounted again');
  t.same(fs.readdirSync(smnt).sort(), ['one', 'three', 'two'], 'the mount shows all three');
  t.equal(st.exitCode, null, `the stream never stopped: ${out.trim()}`);
  st.kill('SIGTERM');
  t.equal(await exited, 0, 'ends on SIGTERM');
  await mb.unmount();
  await ma.unmount();
  await fsckBoth(t, B.img, 'slave');
});
