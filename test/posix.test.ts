// POSIX semantics through a read-write mount: errno values, permission
// checks as an unprivileged user, timestamps, link counts, rename edge cases,
// unlinked-but-open files, name length limits, symlinks and special files.
// The mount is the default one (default_permissions, allow_other as root),
// so the kernel checks permissions and the daemon keeps the filesystem's
// rules. Calls the test process makes synchronously are served by the
// daemon, a separate process. Unprivileged calls, mknod and utimensat with
// UTIME_OMIT go through a small python helper (setpriv for the user).
import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { formatHammer2 } from '../mkfs/newfs';
import { fuseUnavailable, tempDir } from './lib/env';
import { mount, Mounted } from './lib/mount';

process.env.HAMMER2_QUIET_SHIM = '1';

const REF_FSCK = process.env.H2_REF_FSCK ?? '/work/ref/bin/fsck_hammer2';
const NOBODY = 65534;
// The system python: an unprivileged user may not reach one under root's home.
const PY = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

// One line per operation: "ok", "ok <value>" or the errno name.
const HELPER = String.raw`
import ctypes, errno, json, os, socket, stat, sys
libc = ctypes.CDLL(None, use_errno=True)
class TS(ctypes.Structure):
    _fields_ = [('sec', ctypes.c_long), ('nsec', ctypes.c_long)]
SPECIAL = {'NOW': (1 << 30) - 1, 'OMIT': (1 << 30) - 2}
def run(op, a):
    if op == 'mkdir': os.mkdir(a[0], a[1] if len(a) > 1 else 0o755)
    elif op == 'rmdir': os.rmdir(a[0])
    elif op == 'unlink': os.unlink(a[0])
    elif op == 'create':
        os.close(os.open(a[0], os.O_CREAT | os.O_EXCL | os.O_WRONLY, a[1] if len(a) > 1 else 0o644))
    elif op == 'read':
        with open(a[0], 'rb') as f: return f.read().decode('latin1')
    elif op == 'write':
        fd = os.open(a[0], os.O_WRONLY | (os.O_APPEND if len(a) > 2 and a[2] else 0))
        try: os.write(fd, a[1].encode())
        finally: os.close(fd)
    elif op == 'rename': os.rename(a[0], a[1])
    elif op == 'renameat2':
        if libc.renameat2(-100, a[0].encode(), -100, a[1].encode(), a[2]) != 0:
            e = ctypes.get_errno(); raise OSError(e, os.strerror(e))
    elif op == 'link': os.link(a[0], a[1])
    elif op == 'symlink': os.symlink(a[0], a[1])
    elif op == 'chmod': os.chmod(a[0], a[1])
    elif op == 'chown': os.chown(a[0], a[1], a[2])
    elif op == 'lchown': os.lchown(a[0], a[1], a[2])
    elif op == 'truncate': os.truncate(a[0], a[1])
    elif op == 'utimensat':
        ts = (TS * 2)()
        for i, (s, n) in enumerate([(a[1], a[2]), (a[3], a[4])]):
            ts[i].sec = s; ts[i].nsec = SPECIAL.get(n, n) if isinstance(n, str) else n
        if libc.utimensat(-100, a[0].encode(), ts, 0) != 0:
            e = ctypes.get_errno(); raise OSError(e, os.strerror(e))
    elif op == 'mknod':
        kind = {'fifo': stat.S_IFIFO, 'chr': stat.S_IFCHR, 'blk': stat.S_IFBLK, 'reg': stat.S_IFREG}[a[1]]
        os.mknod(a[0], kind | a[2], os.makedev(a[3], a[4]) if len(a) > 4 else 0)
    elif op == 'socket':
        s = socket.socket(socket.AF_UNIX); s.bind(a[0]); s.close()
    elif op == 'stat':
        st = os.lstat(a[0]); return '%o %d %d %d' % (st.st_mode, st.st_nlink, st.st_uid, st.st_gid)
    elif op == 'readdir': return ' '.join(sorted(os.listdir(a[0])))
    elif op == 'open':
        flags = {'r': os.O_RDONLY, 'w': os.O_WRONLY, 'rw': os.O_RDWR}[a[1]]
        os.close(os.open(a[0], flags))
    else: raise SystemExit('unknown op ' + op)
for op, *a in json.loads(sys.argv[1]):
    try:
        v = run(op, a)
        print('ok' if v is None else 'ok ' + v)
    except OSError as e:
        print(errno.errorcode.get(e.errno, str(e.errno)))
`;

type Op = [string, ...(string | number)[]];

if (fuseUnavailable()) t.plan(0, fuseUnavailable()!);
else if (spawnSync(PY, ['-c', 'pass']).status !== 0) t.plan(0, 'python3 is needed for the helper');
else {
  t.test('POSIX semantics through the mount', async (t) => {
    const dir = tempDir(t, 'h2posix-');
    // Unprivileged users must reach the mountpoint.
    fs.chmodSync(dir, 0o755);
    const img = path.join(dir, 'posix.img');
    await formatHammer2({ paths: [img], sizes: [1 << 30] });
    const helper = path.join(dir, 'helper.py');
    fs.writeFileSync(helper, HELPER);
    fs.chmodSync(helper, 0o644);
    const mnt = path.join(dir, 'mnt');
    const log = path.join(dir, 'daemon.log');
    let m: Mounted = await mount(t, img, mnt, ['--log', log]);
    // H2_SHOW_LOG=1 prints the daemon's log (flush failures and the like).
    t.teardown(() => {
      if (process.env.H2_SHOW_LOG && fs.existsSync(log)) console.error(fs.readFileSync(log, 'utf8'));
    });
    const p = (...x: string[]) => path.join(mnt, ...x);

    /** Run helper ops as root or (uid given) as that user with no groups. */
    const ops = (list: Op[], uid?: number, gid = uid): string[] => {
      const argv = [PY, helper, JSON.stringify(list)];
      const cmd = uid === undefined ? argv : ['setpriv', `--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', ...argv];
      const r = spawnSync(cmd[0], cmd.slice(1), { encoding: 'utf8', cwd: '/' });
      if (r.status !== 0) throw new Error(`helper failed: ${r.stderr}`);
      return r.stdout.trimEnd().split('\n');
    };
    const op = (o: Op, uid?: number, gid?: number) => ops([o], uid, gid)[0];
    const asNobody = (o: Op) => op(o, NOBODY, NOBODY);
    const err = (fn: () => unknown): string => {
      try {
        fn();
        return 'ok';
      } catch (e) {
        return (e as NodeJS.ErrnoException).code ?? String(e);
      }
    };
    const st = (x: string) => fs.lstatSync(x, { bigint: true });
    const tick = () => new Promise((r) => setTimeout(r, 15));

    await t.test('errno values', async (t) => {
      fs.mkdirSync(p('e'));
      fs.mkdirSync(p('e/full'));
      fs.writeFileSync(p('e/full/f'), 'x');
      fs.mkdirSync(p('e/empty'));
      fs.writeFileSync(p('e/file'), 'data');
      t.equal(err(() => fs.mkdirSync(p('e/full'))), 'EEXIST', 'mkdir over a directory');
      t.equal(err(() => fs.mkdirSync(p('e/file'))), 'EEXIST', 'mkdir over a file');
      t.equal(err(() => fs.openSync(p('e/file'), 'wx')), 'EEXIST', 'O_CREAT|O_EXCL on an existing file');
      t.equal(err(() => fs.rmdirSync(p('e/full'))), 'ENOTEMPTY', 'rmdir of a non-empty directory');
      t.equal(err(() => fs.rmdirSync(p('e/file'))), 'ENOTDIR', 'rmdir of a file');
      t.equal(err(() => fs.rmdirSync(p('e/empty') + '/.')), 'EINVAL', 'rmdir of "."');
      t.equal(err(() => fs.unlinkSync(p('e/full'))), 'EISDIR', 'unlink of a directory');
      t.equal(err(() => fs.statSync(p('e/nothing'))), 'ENOENT', 'missing name');
      t.equal(err(() => fs.statSync(p('e/file/x'))), 'ENOTDIR', 'a file as a path component');
      t.equal(err(() => fs.writeFileSync(p('e/nodir/x'), '')), 'ENOENT', 'create in a missing directory');
      t.equal(err(() => fs.linkSync(p('e/full'), p('e/dirlink'))), 'EPERM', 'hard link to a directory');
      t.equal(err(() => fs.linkSync(p('e/file'), p('e/full/f'))), 'EEXIST', 'link over an existing name');
      t.equal(err(() => fs.symlinkSync('x', p('e/file'))), 'EEXIST', 'symlink over an existing name');
      t.equal(err(() => fs.truncateSync(p('e/full'), 0)), 'EISDIR', 'truncate of a directory');
      t.equal(err(() => fs.openSync(p('e/full'), 'w')), 'EISDIR', 'open a directory for writing');
      t.equal(err(() => fs.readdirSync(p('e/file'))), 'ENOTDIR', 'opendir of a file');
      t.equal(err(() => fs.readlinkSync(p('e/file'))), 'EINVAL', 'readlink of a file');
      const fd = fs.openSync(p('e/file'), 'r');
      t.equal(err(() => fs.writeSync(fd, 'x')), 'EBADF', 'write on a read-only descriptor');
      fs.closeSync(fd);
      t.equal(op(['mknod', p('e/bad'), 'reg', 0o644]), 'ok', 'mknod of a regular file');
      t.equal(op(['truncate', p('e/file'), -1]), 'EINVAL', 'negative truncate');
      const r = spawnSync('fallocate', ['-c', '-o', '0', '-l', '65536', p('e/file')], { encoding: 'utf8' });
      if (r.error) t.skip('no fallocate(1)');
      else t.match(r.stderr, /not supported/, 'fallocate COLLAPSE_RANGE is not supported');
    });

    await t.test('name and path length limits', async (t) => {
      fs.mkdirSync(p('n'));
      const n255 = 'a'.repeat(255);
      const n256 = 'b'.repeat(256);
      t.equal(err(() => fs.writeFileSync(p('n', n255), 'x')), 'ok', '255-byte file name');
      t.equal(err(() => fs.mkdirSync(p('n', 'd' + n255.slice(1)))), 'ok', '255-byte directory name');
      t.equal(err(() => fs.symlinkSync('t', p('n', 's' + n255.slice(1)))), 'ok', '255-byte symlink name');
      t.equal(err(() => fs.linkSync(p('n', n255), p('n', 'l' + n255.slice(1)))), 'ok', '255-byte link name');
      // Multi-byte names count bytes: 85 three-byte characters are 255 bytes.
      t.equal(err(() => fs.writeFileSync(p('n', '\u20ac'.repeat(85)), '')), 'ok', '255 bytes of UTF-8');
      t.equal(err(() => fs.writeFileSync(p('n', '\u20ac'.repeat(86)), '')), 'ENAMETOOLONG', '258 bytes of UTF-8');
      t.equal(err(() => fs.writeFileSync(p('n', n256), 'x')), 'ENAMETOOLONG', 'create 256');
      t.equal(err(() => fs.mkdirSync(p('n', n256))), 'ENAMETOOLONG', 'mkdir 256');
      t.equal(err(() => fs.symlinkSync('t', p('n', n256))), 'ENAMETOOLONG', 'symlink 256');
      t.equal(err(() => fs.linkSync(p('n', n255), p('n', n256))), 'ENAMETOOLONG', 'link 256');
      t.equal(err(() => fs.renameSync(p('n', n255), p('n', n256))), 'ENAMETOOLONG', 'rename to 256');
      t.equal(err(() => fs.statSync(p('n', n256))), 'ENAMETOOLONG', 'lookup 256');
      t.equal(err(() => fs.unlinkSync(p('n', n256))), 'ENAMETOOLONG', 'unlink 256');
      t.equal(op(['mknod', p('n', n256), 'fifo', 0o644]), 'ENAMETOOLONG', 'mknod 256');
      const names = fs.readdirSync(p('n'));
      t.ok(names.includes(n255), 'readdir returns the 255-byte name whole');
      t.equal(fs.readFileSync(p('n', n255), 'utf8'), 'x');
      // Paths: the kernel limits a path to PATH_MAX (4096 with its NUL).
      const deep = Array.from({ length: 20 }, () => 'c'.repeat(250)).join('/');
      t.equal(err(() => fs.statSync(p('n', deep))), 'ENAMETOOLONG', 'path over PATH_MAX');
      // Symlink targets up to 4095 bytes.
      const target = ('x'.repeat(200) + '/').repeat(21).slice(0, 4095);
      t.equal(err(() => fs.symlinkSync(target, p('n', 'longlink'))), 'ok', '4095-byte symlink target');
      t.equal(fs.readlinkSync(p('n', 'longlink')), target, 'read back whole');
      t.equal(err(() => fs.symlinkSync(target + 'y', p('n', 'toolong'))), 'ENAMETOOLONG', '4096-byte target');
      // The filesystem survives: the names are still there and removable.
      for (const f of fs.readdirSync(p('n'))) fs.rmSync(p('n', f), { recursive: true });
      t.same(fs.readdirSync(p('n')), [], 'all removed');
      t.equal(fs.statfsSync(p('n')).type !== undefined, true);
    });

    await t.test('symlinks', async (t) => {
      fs.mkdirSync(p('s'));
      fs.writeFileSync(p('s/target'), 'hello');
      fs.symlinkSync('target', p('s/rel'));
      fs.symlinkSync(p('s/target'), p('s/abs'));
      fs.symlinkSync('nowhere', p('s/dangling'));
      fs.symlinkSync('loop2', p('s/loop1'));
      fs.symlinkSync('loop1', p('s/loop2'));
      t.equal(fs.readFileSync(p('s/rel'), 'utf8'), 'hello', 'relative link followed');
      t.equal(fs.readFileSync(p('s/abs'), 'utf8'), 'hello', 'absolute link followed');
      const l = st(p('s/rel'));
      t.equal(Number(l.mode) & 0o170000, 0o120000, 'lstat says symlink');
      t.equal(Number(l.mode) & 0o777, 0o777, 'symlink mode 0777');
      t.equal(l.size, 6n, 'symlink size is the target length');
      t.equal(fs.readlinkSync(p('s/rel')), 'target');
      t.equal(err(() => fs.statSync(p('s/dangling'))), 'ENOENT', 'dangling link');
      t.equal(err(() => fs.lstatSync(p('s/dangling'))), 'ok', 'dangling link itself exists');
      t.equal(err(() => fs.readFileSync(p('s/loop1'))), 'ELOOP', 'symlink loop');
      t.equal(op(['lchown', p('s/rel'), 123, 456]), 'ok', 'lchown of a symlink');
      t.equal(st(p('s/rel')).uid, 123n, 'symlink owner changed');
      t.equal(st(p('s/target')).uid, 0n, 'target owner untouched');
      // A target longer than the inode's embedded area lives in a data block.
      const long = 'd/'.repeat(600);
      fs.symlinkSync(long, p('s/long'));
      t.equal(fs.readlinkSync(p('s/long')), long, '1200-byte target');
      t.equal(err(() => fs.symlinkSync('', p('s/empty'))), 'ENOENT', 'empty target');
    });

    await t.test('special files', async (t) => {
      fs.mkdirSync(p('dev'));
      t.same(
        ops([
          ['mknod', p('dev/fifo'), 'fifo', 0o640],
          ['mknod', p('dev/chr'), 'chr', 0o600, 1, 7],
          ['mknod', p('dev/blk'), 'blk', 0o660, 8, 300],
          ['socket', p('dev/sock')],
        ]),
        ['ok', 'ok', 'ok', 'ok'],
      );
      const f = fs.lstatSync(p('dev/fifo'));
      t.ok(f.isFIFO(), 'fifo');
      t.equal(f.mode & 0o7777, 0o640);
      const c = fs.lstatSync(p('dev/chr'));
      t.ok(c.isCharacterDevice(), 'character device');
      t.equal(c.rdev, (1 << 8) | 7, 'rdev 1,7');
      const b = fs.lstatSync(p('dev/blk'));
      t.ok(b.isBlockDevice(), 'block device');
      t.equal(b.rdev, (8 << 8) | (300 & 0xff) | ((300 & ~0xff) << 12), 'rdev 8,300');
      t.ok(fs.lstatSync(p('dev/sock')).isSocket(), 'socket');
      t.equal(op(['mknod', p('dev/fifo'), 'fifo', 0o640]), 'EEXIST', 'mknod over an existing name');
    });

    await t.test('link counts', async (t) => {
      fs.mkdirSync(p('l'));
      fs.writeFileSync(p('l/a'), 'a');
      t.equal(st(p('l/a')).nlink, 1n, 'new file: 1');
      fs.linkSync(p('l/a'), p('l/b'));
      fs.linkSync(p('l/a'), p('l/c'));
      t.equal(st(p('l/a')).nlink, 3n, 'two more links: 3');
      t.equal(st(p('l/b')).ino, st(p('l/a')).ino, 'same inode');
      fs.unlinkSync(p('l/a'));
      t.equal(st(p('l/b')).nlink, 2n, 'after unlink: 2');
      fs.writeFileSync(p('l/b'), 'changed');
      t.equal(fs.readFileSync(p('l/c'), 'utf8'), 'changed', 'data shared by the links');
      fs.mkdirSync(p('l/d'));
      t.equal(st(p('l/d')).nlink, 2n, 'new directory: 2');
      const base = st(p('l')).nlink;
      fs.mkdirSync(p('l/d/sub1'));
      fs.mkdirSync(p('l/d/sub2'));
      t.equal(st(p('l/d')).nlink, 4n, 'two subdirectories: 4');
      fs.writeFileSync(p('l/d/file'), '');
      t.equal(st(p('l/d')).nlink, 4n, 'files do not count');
      fs.rmdirSync(p('l/d/sub2'));
      t.equal(st(p('l/d')).nlink, 3n, 'rmdir: 3');
      fs.renameSync(p('l/d/sub1'), p('l/sub1'));
      t.equal(st(p('l/d')).nlink, 2n, 'subdirectory moved out: 2');
      t.equal(st(p('l')).nlink, base + 1n, 'moved in: parent +1');
    });

    await t.test('rename', async (t) => {
      fs.mkdirSync(p('r'));
      fs.mkdirSync(p('r/x'));
      fs.mkdirSync(p('r/y'));
      fs.writeFileSync(p('r/f1'), 'one');
      fs.writeFileSync(p('r/f2'), 'two');
      fs.linkSync(p('r/f2'), p('r/f2link'));
      const ino1 = st(p('r/f1')).ino;
      fs.renameSync(p('r/f1'), p('r/f2'));
      t.equal(fs.readFileSync(p('r/f2'), 'utf8'), 'one', 'replace: target has the source data');
      t.equal(st(p('r/f2')).ino, ino1, 'replace: same inode moved');
      t.equal(err(() => fs.statSync(p('r/f1'))), 'ENOENT', 'replace: source name gone');
      t.equal(st(p('r/f2link')).nlink, 1n, 'replaced target lost a link');
      t.equal(fs.readFileSync(p('r/f2link'), 'utf8'), 'two', 'replaced target still reachable by its other link');

      // Same file under two names: nothing happens.
      fs.linkSync(p('r/f2'), p('r/same'));
      fs.renameSync(p('r/f2'), p('r/same'));
      t.ok(fs.existsSync(p('r/f2')) && fs.existsSync(p('r/same')), 'rename between hard links of one file is a no-op');
      t.equal(st(p('r/same')).nlink, 2n);
      fs.renameSync(p('r/same'), p('r/same'));
      t.ok(fs.existsSync(p('r/same')), 'rename onto itself');

      // Directories.
      fs.writeFileSync(p('r/x/inside'), 'in');
      fs.mkdirSync(p('r/emptydir'));
      const xino = st(p('r/x')).ino;
      fs.renameSync(p('r/x'), p('r/emptydir'));
      t.equal(st(p('r/emptydir')).ino, xino, 'directory over an empty directory');
      t.equal(fs.readFileSync(p('r/emptydir/inside'), 'utf8'), 'in');
      fs.mkdirSync(p('r/x'));
      fs.writeFileSync(p('r/y/occupant'), '');
      t.equal(err(() => fs.renameSync(p('r/x'), p('r/y'))), 'ENOTEMPTY', 'directory over a non-empty directory');
      t.equal(err(() => fs.renameSync(p('r/x'), p('r/f2'))), 'ENOTDIR', 'directory over a file');
      t.equal(err(() => fs.renameSync(p('r/f2'), p('r/x'))), 'EISDIR', 'file over a directory');
      fs.mkdirSync(p('r/x/a/b'), { recursive: true });
      t.equal(err(() => fs.renameSync(p('r/x'), p('r/x/a/b/x'))), 'EINVAL', 'directory into its own subtree');
      t.equal(err(() => fs.renameSync(p('r/x'), p('r/x/x'))), 'EINVAL', 'directory into itself');
      t.equal(err(() => fs.renameSync(p('r/missing'), p('r/z'))), 'ENOENT', 'missing source');
      t.equal(err(() => fs.renameSync(p('r/f2'), p('r/nodir/z'))), 'ENOENT', 'missing target directory');

      // Across parents: ".." follows, link counts move.
      const xn = st(p('r/x')).nlink;
      const yn = st(p('r/y')).nlink;
      fs.renameSync(p('r/x/a'), p('r/y/a'));
      t.equal(st(p('r/y/a/..')).ino, st(p('r/y')).ino, '".." is the new parent');
      t.equal(st(p('r/x')).nlink, xn - 1n, 'old parent lost a link');
      t.equal(st(p('r/y')).nlink, yn + 1n, 'new parent gained a link');
      t.ok(fs.existsSync(p('r/y/a/b')), 'subtree came along');
      fs.renameSync(p('r/f2link'), p('r/y/a/b/moved'));
      t.equal(fs.readFileSync(p('r/y/a/b/moved'), 'utf8'), 'two', 'file across parents');

      // renameat2 flags.
      fs.writeFileSync(p('r/n1'), '1');
      fs.writeFileSync(p('r/n2'), '2');
      t.equal(op(['renameat2', p('r/n1'), p('r/n2'), 1]), 'EEXIST', 'RENAME_NOREPLACE onto an existing name');
      t.equal(op(['renameat2', p('r/n1'), p('r/n3'), 1]), 'ok', 'RENAME_NOREPLACE to a new name');
      t.equal(op(['renameat2', p('r/n3'), p('r/n2'), 2]), 'EINVAL', 'RENAME_EXCHANGE is not supported');
      t.equal(op(['renameat2', p('r/n3'), p('r/n4'), 4]), 'EINVAL', 'RENAME_WHITEOUT is not supported');
      t.ok(fs.existsSync(p('r/n3')) && !fs.existsSync(p('r/n4')), 'and renames nothing');
      t.equal(fs.readFileSync(p('r/n3'), 'utf8'), '1');
    });

    await t.test('unlinked but open', async (t) => {
      fs.mkdirSync(p('u'));
      fs.writeFileSync(p('u/f'), Buffer.alloc(200000, 7));
      const ino = st(p('u/f')).ino;
      const fd = fs.openSync(p('u/f'), 'r+');
      fs.unlinkSync(p('u/f'));
      t.equal(err(() => fs.statSync(p('u/f'))), 'ENOENT', 'the name is gone');
      t.equal(fs.fstatSync(fd).nlink, 0, 'fstat: no links');
      const buf = Buffer.alloc(200000);
      t.equal(fs.readSync(fd, buf, 0, buf.length, 0), 200000, 'still readable');
      t.ok(buf.every((b) => b === 7), 'contents intact');
      fs.writeSync(fd, Buffer.from('tail'), 0, 4, 200000);
      // A commit while the orphan is open (fsync of another file commits everything).
      fs.writeFileSync(p('u/other'), 'o');
      const ofd = fs.openSync(p('u/other'), 'r+');
      fs.fsyncSync(ofd);
      fs.closeSync(ofd);
      const tail = Buffer.alloc(4);
      fs.readSync(fd, tail, 0, 4, 200000);
      t.equal(tail.toString(), 'tail', 'written after unlink, read back after a commit');
      t.equal(fs.fstatSync(fd).size, 200004);
      fs.closeSync(fd);
      t.notOk(fs.readdirSync(p('u')).includes('f'), 'not listed');
      // The inode number is not reused while in doubt.
      fs.writeFileSync(p('u/new'), 'n');
      t.not(st(p('u/new')).ino, ino, 'a new file gets a new inode number');
    });

    await t.test('timestamps', async (t) => {
      fs.mkdirSync(p('t'));
      const past = 1_000_000_000; // 2001
      const reset = (...files: string[]) => {
        for (const f of files) fs.utimesSync(f, past, past);
      };
      const T = (f: string) => {
        const s = st(f);
        return { a: s.atimeNs, m: s.mtimeNs, c: s.ctimeNs };
      };
      const PAST = BigInt(past) * 1_000_000_000n;

      // create: the directory's mtime and ctime.
      reset(p('t'));
      let d0 = T(p('t'));
      await tick();
      fs.writeFileSync(p('t/f'), '');
      let d1 = T(p('t'));
      t.ok(d1.m > PAST && d1.c > d0.c, 'create updates the parent mtime and ctime');
      const f0 = T(p('t/f'));
      t.equal(f0.a, f0.m, 'new file: atime = mtime');
      t.equal(f0.m, f0.c, 'new file: mtime = ctime');

      // write: mtime and ctime, not atime.
      reset(p('t/f'));
      let b = T(p('t/f'));
      await tick();
      fs.appendFileSync(p('t/f'), 'more');
      let a = T(p('t/f'));
      t.ok(a.m > PAST && a.c > b.c, 'write updates mtime and ctime');
      t.equal(a.a, PAST, 'write leaves atime');
      // read: HAMMER2 does not update atime (as on DragonFly).
      fs.readFileSync(p('t/f'));
      t.equal(T(p('t/f')).a, PAST, 'read leaves atime (HAMMER2 keeps no access times)');

      // chmod, chown: ctime only.
      b = T(p('t/f'));
      await tick();
      fs.chmodSync(p('t/f'), 0o600);
      a = T(p('t/f'));
      t.ok(a.c > b.c && a.m === b.m, 'chmod updates ctime only');
      b = a;
      await tick();
      fs.chownSync(p('t/f'), 1, 1);
      a = T(p('t/f'));
      t.ok(a.c > b.c && a.m === b.m, 'chown updates ctime only');

      // truncate, and open(O_TRUNC) of an empty file.
      reset(p('t/f'));
      b = T(p('t/f'));
      await tick();
      fs.truncateSync(p('t/f'), 1);
      a = T(p('t/f'));
      t.ok(a.m > PAST && a.c > b.c, 'truncate updates mtime and ctime');
      fs.truncateSync(p('t/f'), 0);
      reset(p('t/f'));
      b = T(p('t/f'));
      await tick();
      fs.closeSync(fs.openSync(p('t/f'), 'w'));
      a = T(p('t/f'));
      t.ok(a.m > PAST && a.c > b.c, 'open(O_TRUNC) of an empty file updates mtime and ctime');

      // link, unlink, rename.
      reset(p('t'), p('t/f'));
      b = T(p('t/f'));
      d0 = T(p('t'));
      await tick();
      fs.linkSync(p('t/f'), p('t/g'));
      a = T(p('t/f'));
      d1 = T(p('t'));
      t.ok(a.c > b.c && a.m === PAST, 'link updates the file ctime only');
      t.ok(d1.m > PAST && d1.c > d0.c, 'link updates the directory');
      reset(p('t'));
      b = T(p('t/f'));
      d0 = T(p('t'));
      await tick();
      fs.unlinkSync(p('t/g'));
      a = T(p('t/f'));
      d1 = T(p('t'));
      t.ok(a.c > b.c, 'unlink updates the ctime of the remaining file');
      t.ok(d1.m > PAST && d1.c > d0.c, 'unlink updates the directory');
      fs.mkdirSync(p('t/other'));
      reset(p('t'), p('t/other'), p('t/f'));
      b = T(p('t/f'));
      d0 = T(p('t'));
      await tick();
      fs.renameSync(p('t/f'), p('t/other/f'));
      a = T(p('t/other/f'));
      t.ok(a.c > b.c && a.m === PAST, 'rename updates the moved inode ctime');
      t.ok(T(p('t')).m > PAST && T(p('t')).c > d0.c, 'rename updates the old parent');
      t.ok(T(p('t/other')).m > PAST, 'rename updates the new parent');

      // mkdir, rmdir: parent times.
      reset(p('t'));
      fs.mkdirSync(p('t/sub'));
      t.ok(T(p('t')).m > PAST, 'mkdir updates the parent mtime');
      reset(p('t'));
      fs.rmdirSync(p('t/sub'));
      t.ok(T(p('t')).m > PAST, 'rmdir updates the parent mtime');

      // utimensat: explicit times (microseconds on media), UTIME_NOW, UTIME_OMIT.
      const f = p('t/other/f');
      t.equal(op(['utimensat', f, 1234567890, 123456789, 1234567891, 987654321]), 'ok');
      a = T(f);
      t.equal(a.a, 1234567890_123456000n, 'atime kept to the microsecond');
      t.equal(a.m, 1234567891_987654000n, 'mtime kept to the microsecond');
      t.equal(op(['utimensat', f, 0, 'OMIT', 1500000000, 5000]), 'ok');
      a = T(f);
      t.equal(a.a, 1234567890_123456000n, 'UTIME_OMIT leaves atime');
      t.equal(a.m, 1500000000_000005000n, 'mtime set');
      b = a;
      await tick();
      t.equal(op(['utimensat', f, 0, 'NOW', 0, 'OMIT']), 'ok');
      a = T(f);
      const now = BigInt(Date.now()) * 1_000_000n;
      t.ok(a.a > now - 10_000_000_000n && a.a <= now + 1_000_000_000n, 'UTIME_NOW sets atime to now');
      t.equal(a.m, b.m, 'UTIME_OMIT leaves mtime');
      t.ok(a.c > b.c, 'utimensat updates ctime');
      t.equal(op(['utimensat', f, -1, 0, 4102444800, 0]), 'ok', 'times before 1970 and after 2038');
      a = T(f);
      t.equal(a.a, -1_000_000_000n, 'atime 1969');
      t.equal(a.m, 4102444800_000000000n, 'mtime 2100');
      t.equal(op(['utimensat', f, -2, 500000000, 0, 'OMIT']), 'ok');
      t.equal(T(f).a, -1_500_000_000n, 'atime 1.5 s before 1970');
    });

    await t.test('permissions as an unprivileged user', async (t) => {
      if (spawnSync('setpriv', ['--version']).status !== 0) {
        t.skip('setpriv (util-linux) is needed to act as another user');
        return;
      }
      fs.mkdirSync(p('perm'), 0o755);
      fs.writeFileSync(p('perm/secret'), 'root only', { mode: 0o600 });
      fs.writeFileSync(p('perm/public'), 'everyone', { mode: 0o644 });
      fs.writeFileSync(p('perm/shared'), 'shared');
      fs.chmodSync(p('perm/shared'), 0o666);
      t.equal(asNobody(['create', p('perm/mine')]), 'EACCES', 'create in a directory without write permission');
      t.equal(asNobody(['mkdir', p('perm/mine')]), 'EACCES', 'mkdir without write permission');
      t.equal(asNobody(['unlink', p('perm/public')]), 'EACCES', 'unlink without write permission');
      t.equal(asNobody(['rename', p('perm/public'), p('perm/x')]), 'EACCES', 'rename without write permission');
      t.equal(asNobody(['read', p('perm/secret')]), 'EACCES', 'read a 0600 file of another user');
      t.equal(asNobody(['read', p('perm/public')]), 'ok everyone', 'read a 0644 file');
      t.equal(asNobody(['write', p('perm/public'), 'x']), 'EACCES', 'write a 0644 file of another user');
      t.equal(asNobody(['write', p('perm/shared'), 'X']), 'ok', 'write a 0666 file');
      t.equal(asNobody(['chmod', p('perm/shared'), 0o777]), 'EPERM', 'chmod of a file one does not own');
      t.equal(asNobody(['chown', p('perm/shared'), NOBODY, NOBODY]), 'EPERM', 'chown of a file one does not own');
      t.equal(asNobody(['utimensat', p('perm/shared'), 0, 'NOW', 0, 'NOW']), 'ok', 'utime NOW with write permission');
      t.equal(asNobody(['utimensat', p('perm/shared'), 5, 0, 5, 0]), 'EPERM', 'explicit utime needs ownership');
      t.equal(asNobody(['truncate', p('perm/public'), 0]), 'EACCES', 'truncate without write permission');

      fs.mkdirSync(p('perm/closed'), 0o700);
      fs.writeFileSync(p('perm/closed/f'), 'x');
      t.equal(asNobody(['read', p('perm/closed/f')]), 'EACCES', 'no search permission on a directory');
      t.equal(asNobody(['readdir', p('perm/closed')]), 'EACCES', 'no read permission on a directory');
      fs.chmodSync(p('perm/closed'), 0o711);
      t.equal(asNobody(['read', p('perm/closed/f')]), 'ok x', 'search permission alone reaches the file');
      t.equal(asNobody(['readdir', p('perm/closed')]), 'EACCES', 'but does not list');

      // Ownership of new inodes: the caller's uid and gid.
      fs.mkdirSync(p('perm/open'), 0o777);
      fs.chmodSync(p('perm/open'), 0o777);
      t.equal(asNobody(['create', p('perm/open/mine'), 0o644]), 'ok');
      t.equal(asNobody(['stat', p('perm/open/mine')]), `ok 100644 1 ${NOBODY} ${NOBODY}`, 'new file belongs to its creator');
      t.equal(op(['create', p('perm/open/g1'), 0o640], NOBODY, 4321), 'ok');
      t.equal(st(p('perm/open/g1')).gid, 4321n, 'new file takes the creator gid');
      t.equal(asNobody(['chmod', p('perm/open/mine'), 0o600]), 'ok', 'owner may chmod');
      t.equal(asNobody(['chown', p('perm/open/mine'), 0, NOBODY]), 'EPERM', 'owner may not give a file away');
      t.equal(asNobody(['chown', p('perm/open/mine'), -1, 0]), 'EPERM', 'nor chgrp to a group it is not in');
      t.equal(asNobody(['utimensat', p('perm/open/mine'), 5, 0, 5, 0]), 'ok', 'owner sets explicit times');

      // Sticky directory: only the owner of a file (or of the directory) removes it.
      fs.mkdirSync(p('perm/sticky'));
      fs.chmodSync(p('perm/sticky'), 0o1777);
      fs.writeFileSync(p('perm/sticky/roots'), '');
      fs.chmodSync(p('perm/sticky/roots'), 0o666);
      t.equal(asNobody(['create', p('perm/sticky/mine')]), 'ok');
      t.equal(asNobody(['unlink', p('perm/sticky/roots')]), 'EPERM', 'sticky: unlink of another user file');
      t.equal(asNobody(['rename', p('perm/sticky/roots'), p('perm/sticky/r2')]), 'EPERM', 'sticky: rename of another user file');
      t.equal(asNobody(['rename', p('perm/sticky/mine'), p('perm/sticky/mine2')]), 'ok', 'sticky: rename own file');
      t.equal(asNobody(['unlink', p('perm/sticky/mine2')]), 'ok', 'sticky: unlink own file');

      // setuid/setgid: cleared when another user writes, and on chown.
      fs.writeFileSync(p('perm/open/suid'), 'x');
      fs.chmodSync(p('perm/open/suid'), 0o6777);
      t.equal(asNobody(['write', p('perm/open/suid'), 'y']), 'ok');
      t.equal(Number(st(p('perm/open/suid')).mode) & 0o7777, 0o777, 'write by another user clears setuid and setgid');
      fs.chmodSync(p('perm/open/suid'), 0o4755);
      fs.chownSync(p('perm/open/suid'), 1, 1);
      t.equal(Number(st(p('perm/open/suid')).mode) & 0o7777, 0o755, 'chown clears setuid');
      // A non-member cannot set setgid: the kernel drops the bit.
      t.equal(asNobody(['chmod', p('perm/open/g1'), 0o2755]), 'ok');
      t.equal(Number(st(p('perm/open/g1')).mode) & 0o7777, 0o755, 'setgid dropped for a non-member');
      t.equal(asNobody(['chmod', p('perm/open/mine'), 0o2755]), 'ok');
      t.equal(Number(st(p('perm/open/mine')).mode) & 0o7777, 0o2755, 'setgid kept for a member');

      // setgid directory: new inodes take its group, subdirectories stay setgid.
      fs.mkdirSync(p('perm/sgid'));
      fs.chownSync(p('perm/sgid'), 0, 777);
      fs.chmodSync(p('perm/sgid'), 0o2777);
      fs.writeFileSync(p('perm/sgid/f'), '');
      fs.mkdirSync(p('perm/sgid/d'));
      t.equal(st(p('perm/sgid/f')).gid, 777n, 'file takes the directory group');
      t.equal(st(p('perm/sgid/d')).gid, 777n, 'directory takes the directory group');
      t.equal(Number(st(p('perm/sgid/d')).mode) & 0o2000, 0o2000, 'subdirectory inherits setgid');
      t.equal(asNobody(['create', p('perm/sgid/n')]), 'ok');
      t.equal(st(p('perm/sgid/n')).gid, 777n, 'also for another user');
    });

    await t.test('files: append, sparse, large', async (t) => {
      fs.mkdirSync(p('data'));
      fs.writeFileSync(p('data/app'), 'a');
      const fd = fs.openSync(p('data/app'), 'a');
      fs.writeSync(fd, 'b', 0);
      fs.closeSync(fd);
      fs.appendFileSync(p('data/app'), 'c');
      t.equal(fs.readFileSync(p('data/app'), 'utf8'), 'abc', 'O_APPEND writes at the end whatever the offset');
      fs.writeFileSync(p('data/big'), '');
      fs.truncateSync(p('data/big'), 999999999);
      t.equal(st(p('data/big')).size, 999999999n, 'truncate up to 999999999');
      const rfd = fs.openSync(p('data/big'), 'r+');
      const z = Buffer.alloc(100, 1);
      t.equal(fs.readSync(rfd, z, 0, 100, 999999950), 49, 'short read at EOF');
      t.ok(z.subarray(0, 49).every((x) => x === 0), 'a hole reads as zeros');
      fs.writeSync(rfd, 'end', 0, 'latin1');
      fs.writeSync(rfd, Buffer.from('tail'), 0, 4, 5_000_000_000);
      t.equal(fs.fstatSync(rfd).size, 5_000_000_004, 'write past 4 GiB');
      fs.fsyncSync(rfd);
      t.ok(fs.fstatSync(rfd).blocks * 512 < 1 << 20, 'sparse file takes little space');
      fs.closeSync(rfd);
      fs.truncateSync(p('data/big'), 3);
      t.equal(fs.readFileSync(p('data/big'), 'latin1'), 'end', 'truncate down');
      // st_blocks is an estimate until the commit compresses the data; the
      // kernel keeps attributes for long, so the commit must invalidate it.
      fs.writeFileSync(p('data/text'), Buffer.alloc(4 << 20, 'compressible '));
      const before = fs.statSync(p('data/text')).blocks;
      const sfd = fs.openSync(p('data/text'), 'r');
      fs.fsyncSync(sfd);
      fs.closeSync(sfd);
      const after = fs.statSync(p('data/text')).blocks;
      t.ok(before >= (4 << 20) / 512 && after < before / 4, `st_blocks after the commit shows the compressed size (${before} -> ${after})`);
    });

    // Persistence: unmount, remount, and everything above is still as it was.
    const snapshot = (): string[] => {
      const out: string[] = [];
      const walk = (rel: string) => {
        for (const n of fs.readdirSync(p(rel)).sort()) {
          const r = path.join(rel, n);
          const s = st(p(r));
          const ty = Number(s.mode) & 0o170000;
          let extra = '';
          if (ty === 0o120000) extra = fs.readlinkSync(p(r));
          else if (ty === 0o100000 && s.size < 1n << 20n) extra = fs.readFileSync(p(r)).toString('base64');
          out.push([r, s.mode, s.nlink, s.uid, s.gid, s.rdev, s.size, s.mtimeNs, s.atimeNs, extra].join(' '));
          if (ty === 0o040000) walk(r);
        }
      };
      walk('');
      return out;
    };
    const before = snapshot();
    await m.unmount();
    await t.test('after remount', async (t) => {
      m = await mount(t, img, mnt, ['--log', log]);
      t.same(snapshot(), before, 'names, modes, owners, links, devices, sizes, times and contents survive');
      await m.unmount();
      if (fs.existsSync(REF_FSCK)) {
        const r = spawnSync(REF_FSCK, ['-q', img], { encoding: 'utf8' });
        t.equal(r.status, 0, `reference fsck_hammer2 is clean${r.status ? ': ' + r.stdout + r.stderr : ''}`);
      }
    });
  });
}
