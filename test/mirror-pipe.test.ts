// A mirroring stream between two mounted PFSs goes from daemon to daemon
// through the shell's pipe (control/pipe.ts): neither command relays it.
// Where that cannot be (a file on standard input, HAMMER2_MIRROR_RELAY, a
// descriptor that is not the pipe described), the commands relay as before.
import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { spawn, spawnSync } from 'node:child_process';
import { ControlClient, findSockets, openPeerPipe, ownPipe, pipeRefused } from '../src/control';
import { H2_BIN, runH2 } from './lib/cli';
import { fuseUnavailable } from './lib/env';
import { mount } from './lib/mount';
import { mountedMasterAndSlave, slaveHoldsMaster } from './lib/mirror';

const h2 = `${process.execPath} ${H2_BIN}`;
const sh = (cmd: string, env: NodeJS.ProcessEnv = {}) =>
  spawnSync('bash', ['-o', 'pipefail', '-c', cmd], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, NODE_OPTIONS: '', ...env } });

t.test('what makes a command relay the stream itself', async (t) => {
  let refusal: unknown = null;
  try {
    openPeerPipe({ pid: process.pid, uid: (process.geteuid?.() ?? 0) + 1, gid: 0 }, { fd: 0, dev: '1', ino: '1' }, 'read');
  } catch (e) {
    refusal = e;
  }
  t.match(refusal, { code: 'EBADF', message: /not this daemon's user/ }, "a command of another user: the daemon opens nothing of it");
  t.ok(pipeRefused(refusal), 'and the command relays');
  t.notOk(pipeRefused({ code: 'EBADF', message: 'x' }), 'an EBADF from elsewhere is an answer');
  t.ok(pipeRefused({ code: 'EINVAL', message: 'mirror-write needs the absolute path of a FIFO' }), 'a daemon that only knows FIFOs');
  t.notOk(pipeRefused({ code: 'EINVAL', message: 'not a HAMMER2 mirror stream' }), 'a bad stream is an answer, not a refusal');
  t.notOk(pipeRefused({ code: 'EROFS', message: 'x' }), 'nor is a read-only image');
});

t.test('mounted master to mounted slave: daemon to daemon through the pipe, or relayed', async (t) => {
  const why = fuseUnavailable();
  if (why) return t.skip(why);
  const { A, B, mnt, m } = await mountedMasterAndSlave(t);
  const smnt = path.join(B.dir, 'slave');
  const sm = await mount(t, `${B.img}@M`, smnt);
  for (let i = 0; i < 30; i++) fs.writeFileSync(path.join(mnt, `f${i}`), Buffer.alloc(3000 + i * 97, i));
  const tid = async () => (await runH2(['mirror-tid', smnt])).out.trim();

  let x = sh(`${h2} -v mirror-read ${mnt} | ${h2} -v mirror-write ${smnt}`);
  t.equal(x.status, 0, `first pass: ${x.stderr}`);
  t.match(x.stderr, /written by the daemon into the pipe/, "the master's daemon wrote into the pipe");
  t.match(x.stderr, /the daemon read the stream from the pipe/, "the slave's daemon read from it");
  t.equal(fs.readdirSync(smnt).length, 30, 'the slave shows the files');

  // Relayed on request: the same result, through the commands.
  fs.writeFileSync(path.join(mnt, 'f3'), 'changed');
  fs.rmSync(path.join(mnt, 'f4'));
  x = sh(`${h2} -v mirror-read ${mnt} ${await tid()} | ${h2} -v mirror-write ${smnt}`, { HAMMER2_MIRROR_RELAY: '1' });
  t.equal(x.status, 0, `relayed pass: ${x.stderr}`);
  t.notMatch(x.stderr, /into the pipe|from the pipe/, 'relayed by both commands');
  t.equal(fs.readFileSync(path.join(smnt, 'f3'), 'utf8'), 'changed');
  t.notOk(fs.existsSync(path.join(smnt, 'f4')));

  // A file on standard input is relayed (the daemon does not reopen files).
  fs.writeFileSync(path.join(mnt, 'f5'), 'again');
  const file = path.join(B.dir, 'pass.stream');
  x = sh(`${h2} mirror-read ${mnt} ${await tid()} > ${file}`);
  t.equal(x.status, 0, `a stream into a file: ${x.stderr}`);
  x = sh(`${h2} -v mirror-write ${smnt} < ${file}`);
  t.equal(x.status, 0, `from the file: ${x.stderr}`);
  t.notMatch(x.stderr, /from the pipe/, 'relayed');
  t.equal(fs.readFileSync(path.join(smnt, 'f5'), 'utf8'), 'again');

  // A refused stream through the pipe: the slave as it was, the reason given.
  x = sh(`echo garbage | ${h2} mirror-write ${smnt}`);
  t.equal(x.status, 1, 'garbage refused');
  t.match(x.stderr, /not a HAMMER2 mirror stream/, 'with the reason');
  t.equal(fs.readFileSync(path.join(smnt, 'f5'), 'utf8'), 'again', 'the slave is unchanged');

  // The daemon opens only the pipe the command described, and says EBADF otherwise.
  const c = await ControlClient.connect(findSockets(B.img)[0]);
  t.teardown(() => c.close());
  // (A named FIFO of this process, opened read-write so that it opens at once.)
  const fifo = path.join(B.dir, 'named.fifo');
  t.equal(spawnSync('mkfifo', [fifo]).status, 0);
  const ffd = fs.openSync(fifo, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  t.teardown(() => fs.closeSync(ffd));
  const fst = fs.fstatSync(ffd, { bigint: true });
  await t.rejects(c.request('mirror-write', { label: 'M', pipe: { fd: ffd, dev: String(fst.dev), ino: String(fst.ino + 1n) } }), { code: 'EBADF', message: /not the pipe the command described/ }, 'not the pipe described');
  await t.rejects(c.request('mirror-write', { label: 'M', pipe: { fd: ffd, dev: String(fst.dev), ino: String(fst.ino) } }), { code: 'EBADF', message: /not the pipe the command described/ }, 'a named FIFO is not opened (the command relays it)');
  t.equal(ownPipe(ffd), null, 'nor offered');
  await t.rejects(c.request('mirror-write', { label: 'M', pipe: { fd: 'x' } }), { code: 'EBADF' }, 'a malformed description');
  await t.rejects(c.request('mirror-write', { label: 'M', pipe: { fd: 987, dev: '1', ino: '1' } }), { code: 'EBADF' }, 'a descriptor the command does not have');

  // A command that goes away takes its stream with it, though the daemon holds the pipe.
  // Pipelines are killed as process groups with process.kill, not kill(1):
  // procps-ng 4.0.2's kill reads `-KILL -13140` as signal KILL to pid -1
  // (every process) whenever the group's number starts with 1.
  const killGroup = (pid: number | undefined) => {
    try {
      if (pid) process.kill(-pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  };
  const waitFor = async (what: () => boolean) => {
    for (let i = 0; i < 200 && !what(); i++) await new Promise((r) => setTimeout(r, 50));
    return what();
  };
  // A request of `op` in `log` from a command, not from this test process:
  // the daemon may log this test's own requests above only after `before`
  // was taken, and those must not count.
  const commandAsked = (log: string, op: string) =>
    [...log.matchAll(new RegExp(`control: ${op} from pid (\\d+)`, 'g'))].some(([, pid]) => Number(pid) !== process.pid);
  const before = sm.log().length;
  const killed = spawn('bash', ['-c', `sleep 60 | exec ${h2} mirror-write ${smnt}`], { stdio: 'ignore', detached: true, env: { ...process.env, NODE_OPTIONS: '' } });
  // (Each pipeline is a process group of its own: the sleeps go with it, even if a check below throws.)
  t.teardown(() => killGroup(killed.pid));
  t.ok(await waitFor(() => commandAsked(sm.log().slice(before), 'mirror-write')), 'a mirror-write waits on a pipe nobody writes');
  spawnSync('pkill', ['-KILL', '-g', String(killed.pid), '-f', 'mirror-write']);
  t.ok(await waitFor(() => /the command sending the stream went away/.test(sm.log().slice(before))), "its daemon gives up when it is killed (not when sleep's pipe ends)");
  fs.writeFileSync(path.join(mnt, 'big'), randomBytes(3 << 20)); // more than the pipe holds
  const reader = spawn('bash', ['-c', `exec ${h2} mirror-read ${mnt} ${await tid()} | sleep 60`], { stdio: 'ignore', detached: true, env: { ...process.env, NODE_OPTIONS: '' } });
  t.teardown(() => killGroup(reader.pid));
  const mbefore = m.log().length;
  t.ok(await waitFor(() => commandAsked(m.log().slice(mbefore), 'mirror-read')), 'a mirror-read writes into a pipe nobody reads');
  await new Promise((r) => setTimeout(r, 500));
  spawnSync('pkill', ['-KILL', '-g', String(reader.pid), '-f', 'mirror-read']);
  t.ok(await waitFor(() => /mirror-read failed: EPIPE: the command went away/.test(m.log().slice(mbefore))), 'its daemon stops when it is killed');
  t.notMatch(m.log().slice(mbefore), /mirror-read of DATA/, 'without finishing the stream');

  // And it still takes the next pass, here with the master named as IMAGE@LABEL (its daemon streams it).
  fs.writeFileSync(path.join(mnt, 'f6'), 'last');
  x = sh(`${h2} -v mirror-read ${A.img}@DATA ${await tid()} | ${h2} mirror-write ${smnt}`);
  t.equal(x.status, 0, `a last pass: ${x.stderr}`);
  t.match(x.stderr, /written by the daemon into the pipe/, 'the master as IMAGE@LABEL, through its daemon');
  t.equal(fs.readFileSync(path.join(smnt, 'f6'), 'utf8'), 'last');
  // A directory that is no mount: said plainly, without the usage text.
  x = sh(`${h2} mirror-read ${mnt} | ${h2} mirror-write ${B.dir}`);
  t.not(x.status, 0, 'a plain directory refused');
  t.match(x.stderr, /is not a mounted HAMMER2 PFS/, 'saying why');
  t.notMatch(x.stderr, /pfs-list/, 'without the usage text');
  await sm.unmount();
  await m.unmount();
  await slaveHoldsMaster(t, A.img, B.img, 'M', 'after passes through the pipe and relayed');
});
