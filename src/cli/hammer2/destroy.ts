// destroy, destroy-inum: last-resort removal of a directory entry or an
// inode the normal paths cannot remove (a dangling or unreadable one);
// emergency-mode-enable/-disable; cleanup (a bulkfree per mounted image).
// Output lines and exit codes as the reference prints them.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ControlError } from '../../control';
import { mountTable } from '../../daemon/options';
import { strerror } from '../common';
import { Directive, DirectiveError, UsageError } from './context';
import { hammer2Mounts, openTarget, Target } from './target';

/** The errno name of a failure, for strerror; otherwise its message. */
const why = (e: unknown): string => {
  if (e instanceof ControlError) return e.code === 'EIO' || !/^E[A-Z]+$/.test(e.code) ? e.message : strerror(e.code);
  const code = (e as NodeJS.ErrnoException).code;
  return code && /^E[A-Z]+$/.test(code) ? strerror(code) : (e as Error).message;
};

async function mounted(p: string): Promise<Target> {
  const t = await openTarget(p, { write: true });
  if (!t.mountpoint || !t.label) {
    await t.close();
    throw new DirectiveError(`${p}: not inside a mounted HAMMER2 filesystem`);
  }
  return t;
}

// destroy PATH...: the entry's directory is opened, the last component is
// removed by name (the entry itself may name nothing readable).
const destroy: Directive = async (ctx, args) => {
  if (!args.length) throw new UsageError('destroy: specify one or more paths to destroy');
  let status = 0;
  for (const p of args) {
    ctx.io.out(`${p}\t`);
    const name = path.basename(p);
    const dir = path.dirname(p);
    let t: Target | null = null;
    try {
      if (!name || name === '.' || name === '..' || p.endsWith('/')) throw new ControlError('EINVAL', 'not an entry name');
      const st = fs.statSync(dir);
      t = await mounted(dir);
      await t.request('destroy', { label: t.label, inum: String(st.ino), name });
      ctx.io.out('ok\n');
    } catch (e) {
      ctx.io.out(`${why(e)}\n`);
      status = 1;
    } finally {
      await t?.close();
    }
  }
  return status;
};

// destroy-inum INUM...: on the PFS of -s PATH (or the current directory);
// IMAGE@LABEL works too, in-process.
const destroyInum: Directive = async (ctx, args) => {
  if (!args.length) throw new UsageError('destroy-inum: specify one or more inode numbers to destroy');
  const sel = ctx.sel ?? '.';
  let t: Target;
  try {
    t = await openTarget(sel, { write: true });
  } catch (e) {
    ctx.io.err(`${sel}: ${(e as Error).message}\n`);
    return 1;
  }
  let status = 0;
  try {
    if (!t.label) throw new DirectiveError(`${sel}: give a mounted PFS or IMAGE@LABEL`);
    ctx.io.out(`deleting inodes on ${sel}\n`);
    for (const a of args) {
      // strtoul(a, NULL, 0): 0x hex, 0 octal, decimal
      const v = /^0x[0-9a-f]+$/i.test(a) ? BigInt(a) : /^0[0-7]+$/.test(a) ? BigInt('0o' + a.slice(1)) : /^\d+$/.test(a) ? BigInt(a) : null;
      ctx.io.out(`${String(v ?? 0n).padStart(16)} `);
      try {
        if (v === null) throw new ControlError('EINVAL', 'not a number');
        await t.request('destroy-inum', { label: t.label, inum: v.toString() });
        ctx.io.out('ok\n');
      } catch (e) {
        ctx.io.out(`${why(e)}\n`);
        status = 1;
      }
    }
  } finally {
    await t.close();
  }
  return status;
};

const emergency =
  (enable: boolean): Directive =>
  async (ctx, args) => {
    if (args.length !== 1) {
      ctx.io.err('Expected <filesystem> argument\n');
      return 1;
    }
    const p = args[0];
    if (!fs.existsSync(p)) {
      ctx.io.err(`Unable to find "${p}"\n`);
      return 1;
    }
    let t: Target | null = null;
    try {
      t = await mounted(p);
      await t.request('emergency-mode', { label: t.label, enable });
      ctx.io.out(`Emergency mode on "${p}" ${enable ? 'enabled' : 'disabled'}\n`);
      return 0;
    } catch (e) {
      ctx.io.out(`Cannot change emerg mode: ${e instanceof DirectiveError ? e.message : why(e)}\n`);
      return 1;
    } finally {
      await t?.close();
    }
  };

// cleanup [PATH]: bulkfree on PATH, or once per mounted image (the others
// of an image are named "(same partition)").
const cleanup: Directive = async (ctx, args) => {
  const one = async (p: string): Promise<number> => {
    ctx.io.out(`hammer2 cleanup "${p}"\n`);
    let t: Target | null = null;
    try {
      t = await openTarget(p, { write: true });
      await t.request('bulkfree');
      return 0;
    } catch (e) {
      ctx.io.err(`hammer2: bulkfree: ${why(e)}\n`);
      return 1;
    } finally {
      await t?.close();
    }
  };
  if (args[0] !== undefined) return one(args[0]);
  const points = hammer2Mounts();
  if (!points.length) {
    ctx.io.err('hammer2 cleanup: no HAMMER2 mounts\n');
    return 0;
  }
  const table = mountTable();
  const seen = new Set<string>();
  let status = 0;
  for (const p of points) {
    const src = table.find((m) => m.point === p)?.source ?? p;
    const image = src.includes('@') ? src.slice(0, src.lastIndexOf('@')) : src;
    if (seen.has(image)) {
      ctx.io.out(`hammer2 cleanup "${p}" (same partition)\n`);
      continue;
    }
    seen.add(image);
    const r = await one(p);
    if (r) status = r;
  }
  return status;
};

export const directives: Record<string, Directive> = {
  destroy,
  'destroy-inum': destroyInum,
  'emergency-mode-enable': emergency(true),
  'emergency-mode-disable': emergency(false),
  cleanup,
};
