// More workloads for the crash harness (crash-test.ts --loaded): a tar
// extraction made durable file by file, a rename-heavy loop and a
// hardlink-heavy loop. Each runs until the mount dies and keeps `sealed`
// as the files a completed fsync made durable, at the names they must
// have: a name is sealed only after the fsync of its directory returned,
// and unsealed before it is renamed or unlinked.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Rng, sha, Sealed } from './crash-lib';

const unseal = (sealed: Sealed[], p: string) => {
  const i = sealed.findIndex((s) => s.path === p);
  if (i >= 0) sealed.splice(i, 1);
};

/** fsync a file or directory by path; false when it is no longer on the mount (`dev`). */
async function fsyncPath(p: string, dev: number): Promise<boolean> {
  const fh = await fs.promises.open(p, 'r');
  try {
    await fh.sync();
    return (await fh.stat()).dev === dev;
  } finally {
    await fh.close().catch(() => {});
  }
}

function fill(rng: Rng, size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i += 4096) b.writeUInt32LE(rng.next(), i);
  return b;
}

/**
 * Extract `tarball` again and again into new directories; after each, every
 * file and directory is fsynced and the files sealed with the source's hashes.
 */
export async function tarWorkload(mnt: string, rng: Rng, sealed: Sealed[], tarball: string, source: Map<string, { hash: string; size: number }>): Promise<string | null> {
  const dev = fs.statSync(mnt).dev;
  try {
    for (let n = 0; ; n++) {
      const dir = path.join(mnt, `t${n}`);
      await fs.promises.mkdir(dir);
      const code = await new Promise<number | null>((res) => spawn('tar', ['-xf', tarball, '-C', dir], { stdio: 'ignore' }).on('close', res));
      if (code !== 0) return `tar exit ${code}`;
      // As `sync` would: every file, then the directories bottom up.
      const dirs: string[] = [];
      for (const [rel] of source) if (!(await fsyncPath(path.join(dir, rel), dev))) return 'unmounted';
      const walk = (d: string) => {
        for (const e of fs.readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(path.join(d, e.name));
        dirs.push(d);
      };
      walk(dir);
      for (const d of dirs) if (!(await fsyncPath(d, dev))) return 'unmounted';
      if (!(await fsyncPath(mnt, dev))) return 'unmounted';
      for (const [rel, s] of source) sealed.push({ path: path.relative(mnt, path.join(dir, rel)), ...s });
      // Now and then, remove an older extraction (its files unsealed first).
      if (n >= 2 && rng.int(3) === 0) {
        const old = `t${rng.int(n)}`;
        for (let i = sealed.length - 1; i >= 0; i--) if (sealed[i].path.startsWith(old + '/')) sealed.splice(i, 1);
        await fs.promises.rm(path.join(mnt, old), { recursive: true, force: true });
      }
    }
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? (e as Error).message;
  }
}

/** Files made durable, then renamed again and again across directories (each rename made durable too). */
export async function renameWorkload(mnt: string, rng: Rng, sealed: Sealed[]): Promise<string | null> {
  const dev = fs.statSync(mnt).dev;
  const names: { path: string; hash: string; size: number }[] = [];
  let n = 0;
  try {
    for (let d = 0; d < 6; d++) await fs.promises.mkdir(path.join(mnt, `r${d}`), { recursive: true });
    if (!(await fsyncPath(mnt, dev))) return 'unmounted';
    for (;;) {
      if (names.length < 20 || rng.int(4) === 0) {
        const data = fill(rng, rng.int(40000));
        const p = path.join(`r${rng.int(6)}`, `n${n++}`);
        await fs.promises.writeFile(path.join(mnt, p), data);
        if (!(await fsyncPath(path.join(mnt, p), dev)) || !(await fsyncPath(path.join(mnt, path.dirname(p)), dev))) return 'unmounted';
        const s = { path: p, hash: sha(data), size: data.length };
        names.push(s);
        sealed.push({ ...s });
        continue;
      }
      const i = rng.int(names.length);
      const from = names[i].path;
      // Sometimes over another file (rename replaces it), mostly to a new name.
      const over = rng.int(5) === 0 && names.length > 1 ? names[(i + 1 + rng.int(names.length - 1)) % names.length] : null;
      const to = over ? over.path : path.join(`r${rng.int(6)}`, `m${n++}`);
      unseal(sealed, from);
      if (over) unseal(sealed, over.path);
      await fs.promises.rename(path.join(mnt, from), path.join(mnt, to));
      if (over) names.splice(names.indexOf(over), 1);
      names[names.findIndex((x) => x.path === from)].path = to;
      for (const d of new Set([path.dirname(from), path.dirname(to)])) if (!(await fsyncPath(path.join(mnt, d), dev))) return 'unmounted';
      const s = names.find((x) => x.path === to)!;
      sealed.push({ ...s });
    }
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? (e as Error).message;
  }
}

/** Files with many hard links: links added and removed, every name checked once its directory is durable. */
export async function linkWorkload(mnt: string, rng: Rng, sealed: Sealed[]): Promise<string | null> {
  const dev = fs.statSync(mnt).dev;
  const files: { names: string[]; hash: string; size: number }[] = [];
  let n = 0;
  try {
    for (let d = 0; d < 4; d++) await fs.promises.mkdir(path.join(mnt, `l${d}`), { recursive: true });
    if (!(await fsyncPath(mnt, dev))) return 'unmounted';
    for (;;) {
      const op = rng.int(10);
      if (files.length < 8 || op < 2) {
        const data = fill(rng, rng.int(30000));
        const p = path.join(`l${rng.int(4)}`, `h${n++}`);
        await fs.promises.writeFile(path.join(mnt, p), data);
        if (!(await fsyncPath(path.join(mnt, p), dev)) || !(await fsyncPath(path.join(mnt, path.dirname(p)), dev))) return 'unmounted';
        files.push({ names: [p], hash: sha(data), size: data.length });
        sealed.push({ path: p, hash: sha(data), size: data.length });
      } else if (op < 7) {
        const f = files[rng.int(files.length)];
        const p = path.join(`l${rng.int(4)}`, `k${n++}`);
        await fs.promises.link(path.join(mnt, f.names[0]), path.join(mnt, p));
        if (!(await fsyncPath(path.join(mnt, path.dirname(p)), dev))) return 'unmounted';
        f.names.push(p);
        sealed.push({ path: p, hash: f.hash, size: f.size });
      } else {
        // Drop a name (the last one too, now and then: the file goes).
        const fi = rng.int(files.length);
        const f = files[fi];
        const k = rng.int(f.names.length);
        const p = f.names[k];
        unseal(sealed, p);
        await fs.promises.unlink(path.join(mnt, p));
        f.names.splice(k, 1);
        if (!f.names.length) files.splice(fi, 1);
        if (!(await fsyncPath(path.join(mnt, path.dirname(p)), dev))) return 'unmounted';
      }
    }
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? (e as Error).message;
  }
}
