// The libfuse3 low-level binding (src/fuse/lowlevel.ts + native-shim/fuse_ll.c)
// end to end: a toy in-memory filesystem (test/lib/toyfs.ts) is served by a
// child process, and this process uses the mount only through the kernel
// (async calls and other programs), never serving and touching it at once.
import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { ChildProcess, execFile, spawn, spawnSync } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { FuseSession, fuseLowLevelUnavailable, ConnInfo, FuseSessionOptions } from '../src/fuse/lowlevel';
import type { ToyStats } from './lib/toyfs';
import { tempDir } from './lib/env';

const run = promisify(execFile);
const REPO = path.resolve(__dirname, '..');

function unavailable(): string | null {
  const why = fuseLowLevelUnavailable();
  if (why) return why;
  if (process.getuid && process.getuid() !== 0) return 'FUSE tests need root';
  if (!fs.existsSync('/dev/fuse')) return 'no /dev/fuse';
  if (spawnSync('sh', ['-c', 'command -v fusermount3']).status !== 0) return 'no fusermount3';
  return null;
}

const isMounted = (mnt: string): boolean =>
  fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === mnt);

/** How to run a .ts file in a child: the TypeScript loader tap runs us with. */
function tsLoaderArgs(): string[] {
  const fromTap = process.execArgv.filter((a) => a.includes('@tapjs/typescript'));
  if (fromTap.length) return fromTap;
  return [`--import=${pathToFileURL(path.join(REPO, 'node_modules/@tapjs/typescript/dist/esm/import.mjs')).href}`];
}

interface Toy {
  mnt: string;
  proc: ChildProcess;
  conn: ConnInfo;
  log: () => string;
  stats: () => Promise<ToyStats>;
  exited: Promise<number | null>;
}

type ToyOptions = FuseSessionOptions & { toy?: { readdirplus?: boolean } };

async function startToy(t: { teardown: (fn: () => void | Promise<void>) => void }, mnt: string, opts: ToyOptions = {}): Promise<Toy> {
  fs.mkdirSync(mnt, { recursive: true });
  const env: NodeJS.ProcessEnv = { ...process.env, TS_NODE_TRANSPILE_ONLY: '1' };
  delete env.NODE_OPTIONS;
  const proc = spawn(process.execPath, [...tsLoaderArgs(), path.join(REPO, 'test/lib/toyfs-main.ts'), mnt, JSON.stringify(opts)], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env,
  });
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (err += d));
  let code: number | null | undefined;
  const exited = new Promise<number | null>((r) => proc.on('exit', (c) => r((code = c))));
  t.teardown(async () => {
    if (code === undefined) {
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 10000);
      await exited;
      clearTimeout(timer);
    }
    if (isMounted(mnt)) spawnSync('fusermount3', ['-uz', mnt]);
  });
  const deadline = Date.now() + 60000;
  while (!out.includes('\n')) {
    if (code !== undefined) throw new Error(`toyfs exited (${code}) before mounting: ${err}`);
    if (Date.now() > deadline) throw new Error(`toyfs did not mount within 60 s: ${err}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const ready = JSON.parse(out.split('\n')[0]) as { conn: ConnInfo };
  return {
    mnt,
    proc,
    conn: ready.conn,
    log: () => err,
    exited,
    stats: async () => JSON.parse((await run('cat', [path.join(mnt, '.stats')])).stdout) as ToyStats,
  };
}

/** errno of a failed call, 0 on success */
async function errnoOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? String(e);
  }
}

const RENAMEAT2 = `
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
r = libc.renameat2(-100, sys.argv[1].encode(), -100, sys.argv[2].encode(), int(sys.argv[3]))
print(0 if r == 0 else ctypes.get_errno())
`;

const why = unavailable();
if (why) t.plan(0, why);
else {
  t.test('mount errors are reported with libfuse’s reason', async (t) => {
    // No mount happens here, so the test process itself may own the session.
    const s = new FuseSession('/nonexistent/hammer2fs-mnt', {}, {});
    await t.rejects(s.mount(), /bad mount point|No such file/);
    t.equal((await s.closed).ok, false);
    const dir = tempDir(t);
    const s2 = new FuseSession(dir, { options: ['no_such_option_xyz'] }, {});
    await t.rejects(s2.mount(), /unknown option/);
    t.notOk(isMounted(dir));
  });

  t.test('toy filesystem through the kernel', async (t) => {
    const dir = tempDir(t, 'h2ll-');
    fs.chmodSync(dir, 0o755); // other users reach the mount through it
    const mnt = path.join(dir, 'mnt');
    const toy = await startToy(t, mnt);
    const p = (x: string) => path.join(mnt, x);

    t.test('negotiated connection', async (t) => {
      t.equal(toy.conn.maxWrite, 1 << 20, 'max_write is 1 MiB');
      t.equal(toy.conn.asyncRead, true, 'async read');
      t.equal(toy.conn.writebackCache, false, 'writeback cache off by default');
      t.equal(toy.conn.atomicOTrunc, false, 'O_TRUNC arrives as setattr');
      t.ok(toy.conn.protoMajor === 7 && toy.conn.protoMinor >= 26, `protocol 7.${toy.conn.protoMinor}`);
      const line = fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').find((l) => l.split(' ')[1] === mnt)!;
      t.match(line, /^toyfs \S+ fuse\.toyfs .*default_permissions.*allow_other/, 'fsname, subtype and -o options reach the mount');
    });

    t.test('caller credentials reach the filesystem', async (t) => {
      await fs.promises.mkdir(p('pub'));
      await fs.promises.chmod(p('pub'), 0o1777);
      await run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'touch', p('pub/x')]);
      await run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'mkdir', p('pub/d')]);
      for (const f of ['pub/x', 'pub/d']) {
        const st = await fs.promises.stat(p(f));
        t.equal(st.uid, 65534, `${f} owned by its creator`);
        t.equal(st.gid, 65534, `${f} has the creator's group`);
      }
      const c = (await toy.stats()).creators.find((x) => x.name === 'x')!;
      t.ok(c.uid === 65534 && c.gid === 65534 && c.pid > 0, `the filesystem saw uid ${c.uid} gid ${c.gid} pid ${c.pid} umask ${c.umask.toString(8)}`);
      // default_permissions: the kernel checks modes against the caller
      const denied = await run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'sh', '-c', `echo x >> ${p('hello')}`]).then(
        () => 'OK',
        (e: { stderr: string }) => e.stderr,
      );
      t.match(denied, /Permission denied/, 'another user cannot write a 0644 root file');
    });

    t.test('nanosecond timestamps', async (t) => {
      await run('touch', ['-d', '@1.123456789', p('hello')]);
      let st = await fs.promises.stat(p('hello'), { bigint: true });
      t.equal(st.mtimeNs, 1123456789n, 'mtime 1.123456789');
      t.equal(st.atimeNs, 1123456789n, 'atime 1.123456789');
      await run('python3', ['-c', `import os; os.utime(${JSON.stringify(p('hello'))}, ns=(1700000000987654321, 1600000000000000001))`]);
      st = await fs.promises.stat(p('hello'), { bigint: true });
      t.equal(st.atimeNs, 1700000000987654321n, 'atime ns from utimensat');
      t.equal(st.mtimeNs, 1600000000000000001n, 'mtime ns from utimensat');
      const before = Date.now();
      await run('touch', [p('hello')]);
      const last = (await toy.stats()).setattrs.at(-1)!;
      t.same({ atime: last.atime, mtime: last.mtime }, { atime: 'now', mtime: 'now' }, 'touch without a time sends ATIME_NOW|MTIME_NOW');
      st = await fs.promises.stat(p('hello'), { bigint: true });
      t.ok(Math.abs(Number(st.mtimeNs / 1000000n) - before) < 5000, 'and the filesystem set the current time');
    });

    t.test('writes arrive in 1 MiB requests', async (t) => {
      const src = path.join(dir, 'src.bin');
      await run('dd', ['if=/dev/urandom', `of=${src}`, 'bs=1M', 'count=16']);
      const before = await toy.stats();
      await run('dd', [`if=${src}`, `of=${p('big')}`, 'bs=1M', 'conv=fsync']);
      const after = await toy.stats();
      const sizes: Record<string, number> = {};
      for (const [k, v] of Object.entries(after.writes)) {
        const d = v - (before.writes[k] ?? 0);
        if (d) sizes[k] = d;
      }
      t.comment(`write request sizes for dd bs=1M count=16: ${JSON.stringify(sizes)}`);
      t.equal(after.maxWrite, 1 << 20, 'largest write request is 1 MiB');
      const big = Object.entries(sizes).filter(([k]) => Number(k) > 128 * 1024).reduce((a, [, v]) => a + v, 0);
      t.ok(big >= 16, `${big} write requests larger than 128 KiB`);
      const want = createHash('sha256').update(fs.readFileSync(src)).digest('hex');
      const got = createHash('sha256').update(await fs.promises.readFile(p('big'))).digest('hex');
      t.equal(got, want, 'contents read back');
      t.comment(`read request sizes so far: ${JSON.stringify((await toy.stats()).reads)}`);
      await fs.promises.unlink(p('big'));
    });

    t.test('readdir of 5000 entries in chunks', async (t) => {
      await fs.promises.mkdir(p('many'));
      await run('python3', ['-c', `import os\nfor i in range(5000): open(os.path.join(${JSON.stringify(p('many'))}, 'file-%05d' % i), 'w').close()`]);
      const before = (await toy.stats()).readdirCalls;
      const ls = (await run('ls', ['-f', p('many')], { maxBuffer: 1 << 24 })).stdout.split('\n').filter(Boolean);
      t.equal(ls.length, 5002, 'ls -f lists 5000 files plus . and ..');
      const names = await fs.promises.readdir(p('many'));
      t.equal(names.length, 5000);
      t.equal(new Set(names).size, 5000, 'no duplicates');
      t.equal(names.filter((n) => /^file-\d{5}$/.test(n)).length, 5000);
      const st = await toy.stats();
      t.ok(st.readdirCalls - before >= 6, `${st.readdirCalls - before} readdir requests`);
      t.ok(
        st.readdirOffsets.some((o) => BigInt('0x' + o) > 0x4000000000000000n),
        '64-bit offset cookies chosen by the filesystem come back intact',
      );
      const withTypes = await fs.promises.readdir(p('many'), { withFileTypes: true });
      t.ok(withTypes.every((d) => d.isFile()), 'd_type comes through');
    });

    t.test('64-bit inode numbers', async (t) => {
      t.equal((await run('stat', ['-c', '%i', p('bigino')])).stdout.trim(), '18364758544493064720', 'st_ino 0xfedcba9876543210');
      // Node reports st_ino as a signed 64-bit bigint
      t.equal(BigInt.asUintN(64, (await fs.promises.stat(p('bigino'), { bigint: true })).ino), 0xfedcba9876543210n, 'fs.stat');
      const ls = (await run('ls', ['-i', mnt])).stdout;
      t.match(ls, /18364758544493064720 bigino/, 'readdir d_ino');
      const ino = BigInt((await run('stat', ['-c', '%i', p('pub/x')])).stdout.trim());
      t.ok(ino > 1n << 32n, `new files get numbers above 2^32 (${ino})`);
    });

    t.test('rename flags reach the filesystem', async (t) => {
      await fs.promises.writeFile(p('ra'), 'A');
      await fs.promises.writeFile(p('rb'), 'B');
      const renameat2 = async (a: string, b: string, flags: number) =>
        Number((await run('python3', ['-c', RENAMEAT2, p(a), p(b), String(flags)])).stdout.trim());
      t.equal(await renameat2('ra', 'rb', 1), 17, 'RENAME_NOREPLACE onto an existing name: EEXIST');
      t.equal(await fs.promises.readFile(p('rb'), 'utf8'), 'B', 'target untouched');
      t.equal(await renameat2('ra', 'rc', 1), 0, 'RENAME_NOREPLACE onto a free name');
      t.equal(await renameat2('rc', 'rb', 2), 0, 'RENAME_EXCHANGE');
      t.equal(await fs.promises.readFile(p('rb'), 'utf8'), 'A');
      t.equal(await fs.promises.readFile(p('rc'), 'utf8'), 'B');
      const flags = (await toy.stats()).renameFlags;
      t.ok(flags.includes(1) && flags.includes(2), `the filesystem saw flags ${JSON.stringify(flags)}`);
      await fs.promises.rename(p('rb'), p('rc'));
      t.equal(await fs.promises.readFile(p('rc'), 'utf8'), 'A', 'plain rename replaces');
    });

    t.test('the other operations', async (t) => {
      await fs.promises.symlink('hello', p('sym'));
      t.equal(await fs.promises.readlink(p('sym')), 'hello', 'symlink + readlink');
      t.equal(await fs.promises.readFile(p('sym'), 'utf8'), 'hello, low-level world\n', 'followed');
      await fs.promises.link(p('hello'), p('hard'));
      t.equal((await fs.promises.stat(p('hello'))).nlink, 2, 'link');
      await fs.promises.unlink(p('hard'));
      t.equal((await fs.promises.stat(p('hello'))).nlink, 1, 'unlink');
      await run('mkfifo', [p('fifo')]);
      t.ok((await fs.promises.lstat(p('fifo'))).isFIFO(), 'mknod fifo');
      t.equal(await errnoOf(fs.promises.rmdir(p('pub'))), 'ENOTEMPTY');
      await fs.promises.writeFile(p('t'), 'abcdef');
      await fs.promises.truncate(p('t'), 2);
      t.equal(await fs.promises.readFile(p('t'), 'utf8'), 'ab', 'truncate');
      const fh = await fs.promises.open(p('t'), 'w'); // O_TRUNC -> setattr size 0
      await fh.close();
      t.equal((await fs.promises.stat(p('t'))).size, 0, 'open O_TRUNC');
      await fs.promises.chmod(p('t'), 0o600);
      t.equal((await fs.promises.stat(p('t'))).mode & 0o7777, 0o600, 'chmod');
      await fs.promises.chown(p('t'), 123, 456);
      const st = await fs.promises.stat(p('t'));
      t.same([st.uid, st.gid], [123, 456], 'chown');
      await run('fallocate', ['-l', '65536', p('t')]);
      t.equal((await fs.promises.stat(p('t'))).size, 65536, 'fallocate');
      const sf = await fs.promises.statfs(mnt);
      t.same([sf.bsize, sf.blocks], [4096, 1 << 26], 'statfs');
      const x = await run('python3', ['-c', `import os\ntry: os.getxattr(${JSON.stringify(p('t'))}, 'user.x'); print('ok')\nexcept OSError as e: print(e.errno)`]);
      t.equal(x.stdout.trim(), '95', 'getxattr without a handler: ENOSYS from libfuse, EOPNOTSUPP to callers');
      await fs.promises.rm(p('pub'), { recursive: true });
      t.equal(await errnoOf(fs.promises.stat(p('pub'))), 'ENOENT', 'rmdir');
    });

    t.test('every request is answered, even when a handler fails', async (t) => {
      t.equal(await errnoOf(fs.promises.stat(p('throw-sync'))), 'EIO', 'handler throws: EIO');
      t.equal(await errnoOf(fs.promises.stat(p('throw-async'))), 'EIO', 'handler rejects: EIO');
      t.equal(await errnoOf(fs.promises.stat(p('no-reply'))), 'EIO', 'handler resolves without answering: EIO');
      t.equal(await errnoOf(fs.promises.stat(p('slow'))), 'ENOENT', 'answered later from a timer');
      t.match(toy.log(), /lookup handler failed; answering EIO/, 'failures are logged');
      // many requests in flight at once
      const names = Array.from({ length: 200 }, (_, i) => `c${i}`);
      await Promise.all(names.map((n) => fs.promises.writeFile(p(n), n.repeat(100))));
      const back = await Promise.all(names.map((n) => fs.promises.readFile(p(n), 'utf8')));
      t.ok(back.every((b, i) => b === names[i].repeat(100)), '200 concurrent writes and reads');
      t.equal(await errnoOf(fs.promises.stat(p('hello'))), 'OK', 'still serving');
    });

    t.test('SIGTERM unmounts and exits', async (t) => {
      toy.proc.kill('SIGTERM');
      const code = await toy.exited;
      t.equal(code, 0, 'exit status 0');
      t.notOk(isMounted(mnt), 'no mount left');
      t.match(toy.log(), /session ended: unmounted/);
    });
  });

  t.test('readdirplus', async (t) => {
    const dir = tempDir(t, 'h2ll-');
    const mnt = path.join(dir, 'mnt');
    const toy = await startToy(t, mnt, { toy: { readdirplus: true } });
    t.equal(toy.conn.readdirplus, true, 'negotiated');
    await fs.promises.mkdir(path.join(mnt, 'd'));
    await run('python3', ['-c', `import os\nfor i in range(300): open(os.path.join(${JSON.stringify(path.join(mnt, 'd'))}, 'f%03d' % i), 'w').write('x' * i)`]);
    const ls = (await run('ls', ['-la', path.join(mnt, 'd')])).stdout.trim().split('\n');
    t.equal(ls.length, 303, 'ls -la lists total, ., .. and 300 files');
    t.ok(ls.some((l) => / 299 .* f299$/.test(l)), 'with their sizes');
    const names = await fs.promises.readdir(path.join(mnt, 'd'));
    t.equal(new Set(names).size, 300);
    t.ok((await toy.stats()).readdirplusCalls > 1, 'listings came through readdirplus');
  });

  t.test("readdirplus 'always', and a request loop that never spins", async (t) => {
    const dir = tempDir(t, 'h2ll-');
    const mnt = path.join(dir, 'mnt');
    const toy = await startToy(t, mnt, { toy: { readdirplus: true }, readdirplus: 'always', spinUs: 0 });
    await fs.promises.mkdir(path.join(mnt, 'd'));
    await run('python3', ['-c', `import os\nfor i in range(300): open(os.path.join(${JSON.stringify(path.join(mnt, 'd'))}, 'f%03d' % i), 'w').write('x' * i)`]);
    const before = await toy.stats();
    const names = await fs.promises.readdir(path.join(mnt, 'd'));
    t.equal(new Set(names).size, 300, 'every name listed (requests served without spinning)');
    const after = await toy.stats();
    t.ok(after.readdirplusCalls - before.readdirplusCalls > 1, 'several readdirplus batches');
    t.equal(after.readdirCalls - before.readdirCalls, 0, 'no plain readdir: attributes come with every batch');
  });

  t.test('auto_unmount cleans up after SIGKILL; writeback cache is opt-in', async (t) => {
    const dir = tempDir(t, 'h2ll-');
    const mnt = path.join(dir, 'mnt');
    const toy = await startToy(t, mnt, { options: ['fsname=toyfs', 'auto_unmount'], writebackCache: true });
    t.equal(toy.conn.writebackCache, true, 'writeback cache negotiated when asked for');
    await fs.promises.writeFile(path.join(mnt, 'f'), 'data');
    t.equal(await fs.promises.readFile(path.join(mnt, 'f'), 'utf8'), 'data');
    toy.proc.kill('SIGKILL');
    await toy.exited;
    for (let i = 0; i < 300 && isMounted(mnt); i++) await new Promise((r) => setTimeout(r, 50));
    t.notOk(isMounted(mnt), 'fusermount3 removed the mount (no dead mount left)');
  });
}
