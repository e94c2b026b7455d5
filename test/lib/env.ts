// Shared test environment: where ../shared is, whether FUSE mounts can run,
// and temp dirs that are always removed.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';

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
