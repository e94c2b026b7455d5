// Running the commands from tests: the hammer2 command in-process or as its
// own process (never inside a daemon's process), and a fresh image.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { run as hammer2 } from '../../src/cli/hammer2';
import { run as newfs } from '../../src/cli/newfs_hammer2';
import { REPO, tempDir } from './env';

export const H2_BIN = path.join(REPO, 'dist', 'src', 'cli', 'hammer2.js');

export interface CliResult {
  status: number | null;
  out: string;
  err: string;
}

/** A built CLI (default: hammer2) as a child process. */
export function runBin(bin: string, args: string[], opts: { uid?: number; cwd?: string } = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    // tap's NODE_OPTIONS would make the child write into .tap/ (not writable by another uid).
    const p = spawn(process.execPath, [bin, ...args], { cwd: opts.cwd, uid: opts.uid, gid: opts.uid, env: { ...process.env, NODE_OPTIONS: '' } });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('close', (status) => resolve({ status, out, err }));
  });
}

export const runH2 = (args: string[], opts: { uid?: number; cwd?: string } = {}): Promise<CliResult> => runBin(H2_BIN, args, opts);

/** hammer2 in this process, output collected. */
export async function h2(args: string[]): Promise<{ status: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const status = await hammer2(args, { out: (s) => (out += s), err: (s) => (err += s) });
  return { status, out, err };
}

/** A temp dir (control sockets in it) with a fresh image of `bytes` holding `labels`. */
export async function newImage(
  t: { teardown: (fn: () => void) => void; equal: (a: unknown, b: unknown, m?: string) => void },
  bytes: number,
  labels = ['ROOT'],
): Promise<{ dir: string; img: string }> {
  const dir = tempDir(t);
  process.env.HAMMER2_RUNDIR = path.join(dir, 'run');
  const img = path.join(dir, 'img');
  fs.writeFileSync(img, '');
  fs.truncateSync(img, bytes);
  const quiet = { out: () => {}, err: () => {} };
  t.equal(await newfs([...labels.flatMap((l) => ['-L', l]), img], quiet), 0, 'newfs');
  return { dir, img };
}
