// Run mount_hammer2 in the foreground as a child process and always unmount.
// The test process only touches the mount asynchronously or through other
// processes (a synchronous call on a FUSE mount served by... another process
// is fine; the daemon never touches its own mount).
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { MOUNT_BIN } from './env';

export interface Mounted {
  mnt: string;
  proc: ChildProcess;
  log: () => string;
  unmount: () => Promise<void>;
}

function isMounted(mnt: string): boolean {
  return fs
    .readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[1] === mnt);
}

export function forceUnmount(mnt: string): void {
  if (isMounted(mnt)) spawnSync('fusermount', ['-uz', mnt]);
}

/** Mount `spec` on `mnt` (created if needed); registers teardown with the tap test. */
export async function mount(
  t: { teardown: (fn: () => void | Promise<void>) => void },
  spec: string,
  mnt: string,
  args: string[] = [],
): Promise<Mounted> {
  fs.mkdirSync(mnt, { recursive: true });
  const proc = spawn(process.execPath, [MOUNT_BIN, '-f', ...args, spec, mnt], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, HAMMER2_QUIET_SHIM: '1' },
  });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  let exited = false;
  proc.on('exit', () => (exited = true));
  const unmount = async () => {
    if (!exited) {
      proc.kill('SIGTERM');
      for (let i = 0; i < 100 && !exited; i++) await new Promise((r) => setTimeout(r, 50));
      if (!exited) proc.kill('SIGKILL');
    }
    forceUnmount(mnt);
  };
  t.teardown(unmount);
  const deadline = Date.now() + 20000;
  while (!isMounted(mnt)) {
    if (exited) throw new Error(`mount_hammer2 exited before mounting: ${out}`);
    if (Date.now() > deadline) {
      await unmount();
      throw new Error(`mount did not appear within 20 s: ${out}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { mnt, proc, log: () => out, unmount };
}

/** Mount `spec` expecting a refusal: the message mount_hammer2 exits with ('' if it mounted; then it is unmounted). */
export async function mountRefusal(t: { teardown: (fn: () => void | Promise<void>) => void }, spec: string, mnt: string, args: string[] = []): Promise<string> {
  try {
    const m = await mount(t, spec, mnt, args);
    await m.unmount();
    return '';
  } catch (e) {
    return (e as Error).message;
  }
}
