// Where a daemon's control socket lives. One socket per open image, named
// after the image's identity (device and inode of a file, device number of
// a block device), so any path to the same image finds the same daemon.
import * as fs from 'node:fs';
import * as path from 'node:path';

/** The directory this process creates its sockets in. */
export function runtimeDir(): string {
  if (process.env.HAMMER2_RUNDIR) return process.env.HAMMER2_RUNDIR;
  if (process.getuid?.() === 0) return '/run/hammer2fs';
  return path.join(process.env.XDG_RUNTIME_DIR || '/tmp', `hammer2fs-${process.getuid?.() ?? 0}`);
}

/** Every directory a daemon of any user may have put its socket in. */
export function searchDirs(): string[] {
  const dirs = [runtimeDir()];
  if (!process.env.HAMMER2_RUNDIR) {
    dirs.push('/run/hammer2fs');
    for (const base of [process.env.XDG_RUNTIME_DIR, '/tmp']) {
      if (!base) continue;
      try {
        for (const d of fs.readdirSync(base)) if (d.startsWith('hammer2fs-')) dirs.push(path.join(base, d));
      } catch {
        /* not there */
      }
    }
  }
  return [...new Set(dirs)];
}

/** The socket file name of the image whose first volume is `volume`. */
export function socketName(volume: string): string {
  const st = fs.statSync(volume);
  return st.isBlockDevice() ? `b${st.rdev}.sock` : `f${st.dev}-${st.ino}.sock`;
}

/** Existing socket files for that image, in search order. */
export function findSockets(volume: string): string[] {
  const name = socketName(volume);
  return searchDirs()
    .map((d) => path.join(d, name))
    .filter((p) => {
      try {
        return fs.statSync(p).isSocket();
      } catch {
        return false;
      }
    });
}

/** Every socket of every daemon (for @LABEL and listing). */
export function allSockets(): string[] {
  const out: string[] = [];
  for (const d of searchDirs()) {
    try {
      for (const f of fs.readdirSync(d)) if (f.endsWith('.sock')) out.push(path.join(d, f));
    } catch {
      /* not there */
    }
  }
  return out;
}
