// Shared test environment: where ../shared is, whether FUSE mounts can run,
// and temp dirs that are always removed.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';

export const REPO = path.resolve(__dirname, '..', '..');
export const SHARED = process.env.HAMMER2_SHARED ?? path.resolve(REPO, '..', 'shared');
export const FIXTURES = path.join(SHARED, 'fixtures');
export const COMPARE_TREE = path.join(SHARED, 'tools', 'compare-tree.py');
export const MOUNT_BIN = path.join(REPO, 'dist', 'src', 'cli', 'mount_hammer2.js');

export const haveFixtures = (): boolean => fs.existsSync(path.join(FIXTURES, 'README.md'));

/** Why FUSE tests cannot run here, or null if they can. */
export function fuseUnavailable(): string | null {
  if (process.getuid && process.getuid() !== 0) return 'FUSE tests need root';
  if (!fs.existsSync('/dev/fuse')) return 'no /dev/fuse';
  if (spawnSync('sh', ['-c', 'command -v fusermount || command -v fusermount3']).status !== 0) return 'no fusermount';
  if (!fs.existsSync(MOUNT_BIN)) return 'dist/ not built (run npm run build)';
  return null;
}

export function tempDir(t: { teardown: (fn: () => void) => void }, prefix = 'h2test-'): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.teardown(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

/** `len` bytes of a file at `pos`, read straight from it (what is on media, past any cache of ours). */
export function readAt(file: string, pos: number, len: number): Buffer {
  const fd = fs.openSync(file, 'r');
  try {
    const b = Buffer.alloc(len);
    fs.readSync(fd, b, 0, len, pos);
    return b;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * A tmpfs of `mib` MiB at `dir`/host, unmounted at teardown: a host disk
 * that fills up. Null (with the reason) where no tmpfs can be mounted.
 */
export function smallHost(t: { teardown: (fn: () => void) => void }, dir: string, mib: number): { host: string } | { why: string } {
  const host = path.join(dir, 'host');
  fs.mkdirSync(host, { recursive: true });
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${mib}m`, 'tmpfs', host]);
  if (r.status !== 0) return { why: `cannot mount a tmpfs: ${r.stderr}` };
  t.teardown(() => void spawnSync('umount', ['-l', host]));
  return { host };
}

export interface Manifest {
  name: string;
  archive: string;
  image: string;
  pfs: { name: string; type: string; populated: boolean }[];
  entries: { pfs: string; path: string; type: string; size?: number; sha256?: string }[];
}

export function fixtureNames(): string[] {
  return fs
    .readdirSync(FIXTURES)
    .filter((f) => f.endsWith('.manifest.json'))
    .map((f) => f.replace(/\.manifest\.json$/, ''))
    .sort();
}

export function loadManifest(name: string): Manifest {
  return JSON.parse(fs.readFileSync(path.join(FIXTURES, `${name}.manifest.json`), 'utf8'));
}

/** Unpack a fixture archive (sparse) into dir; returns the image path. */
export function unpackFixture(name: string, dir: string, archive = `${name}.img.tar.gz`): string {
  const r = spawnSync('tar', ['-xSzf', path.join(FIXTURES, archive), '-C', dir]);
  if (r.status !== 0) throw new Error(`tar failed: ${r.stderr}`);
  const img = fs.readdirSync(dir).find((f) => f.endsWith('.img'));
  if (!img) throw new Error(`no image in ${archive}`);
  return path.join(dir, img);
}

/** The reference tools, built outside the repo (H2_REF_BIN, default /work/ref/bin); checks using them skip when absent. */
export const REF_BIN = process.env.H2_REF_BIN ?? '/work/ref/bin';
export const haveRef = (tool: 'fsck_hammer2' | 'makefs' | 'hammer2'): boolean => fs.existsSync(path.join(REF_BIN, tool));

/** The reference fsck_hammer2's verdict: exit status and output. */
export function refFsck(img: string, args: string[] = []): { status: number | null; out: string } {
  const r = spawnSync(path.join(REF_BIN, 'fsck_hammer2'), [...args, img], { encoding: 'utf8' });
  return { status: r.status, out: (r.stdout ?? '') + (r.stderr ?? '') };
}

/**
 * Read PFS `label` of `img` through the reference makefs (-o m=LABEL -o R=/)
 * into a new directory under `dir`, working on a sparse copy (makefs opens
 * the image read-write). Returns the directory, or throws with its output.
 */
export function refRead(img: string, label: string, dir: string, from = '/'): string {
  const copy = path.join(dir, `ref-copy-${label}.img`);
  const out = path.join(dir, `ref-read-${label}`);
  fs.rmSync(out, { recursive: true, force: true });
  fs.mkdirSync(out);
  const cp = spawnSync('cp', ['--sparse=always', img, copy]);
  if (cp.status !== 0) throw new Error(`cp failed: ${cp.stderr}`);
  const r = spawnSync(path.join(REF_BIN, 'makefs'), ['-t', 'hammer2', '-o', `m=${label}`, '-o', `R=${from}`, copy, out], { encoding: 'utf8' });
  fs.rmSync(copy, { force: true });
  if (r.status !== 0) throw new Error(`makefs R= of ${label} failed (${r.status}): ${(r.stdout + r.stderr).slice(-2000)}`);
  return out;
}

/** Regular files under `root` by relative path with their sha256 (what makefs R= extracts). */
export function fileHashes(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string, rel: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(p, r);
      else if (e.isFile()) out.set(r, crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex'));
    }
  };
  walk(root, '');
  return out;
}

/** Damage one byte of an image in place (XOR 0x5a). */
export function flipByte(img: string, pos: number): void {
  const fd = fs.openSync(img, 'r+');
  const b = Buffer.alloc(1);
  fs.readSync(fd, b, 0, 1, pos);
  b[0] ^= 0x5a;
  fs.writeSync(fd, b, 0, 1, pos);
  fs.closeSync(fd);
}
