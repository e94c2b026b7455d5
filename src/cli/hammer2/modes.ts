// setcomp, setcheck (and clrcheck, setcrc32, setxxhash64, setsha192), stat:
// per-inode methods and usage, by path inside a mounted PFS. The path's
// st_ino is the HAMMER2 inode number the daemon acts on.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ControlError } from '../../control';
import { strerror } from '../common';
import { decodeInode } from '../../media';
import { Directive, DirectiveError, UsageError } from './context';
import { checkModeName, compModeName, formatInode } from './printinode';
import { openTarget, Target } from './target';

const COMPS = ['none', 'autozero', 'lz4', 'zlib'];
const CHECKS = ['none', 'disabled', 'crc32', 'xxhash64', 'sha192', 'freemap'];

/** A number as strtol(s, NULL, 0) reads it (0x.. hex, 0.. octal). */
const num = (s: string): number => (/^0x/i.test(s) ? parseInt(s.slice(2), 16) : /^0\d/.test(s) ? parseInt(s, 8) : parseInt(s, 10));

/** "lz4", "zlib:9", "default", a number: the compression byte, or why not (reference rules). */
export function parseComp(spec: string): number | string {
  const [s1, s2] = spec.split(':', 2);
  let algo: number;
  if (/^\d/.test(s1)) algo = num(s1);
  else {
    algo = COMPS.indexOf(s1.toLowerCase());
    if (algo < 0 && s1.toLowerCase() === 'default') algo = 2;
    if (algo < 0 && s1.toLowerCase() === 'disabled') algo = 1;
    if (algo < 0) return `Unknown compression type: ${s1}`;
  }
  let level = 0;
  if (s2 !== undefined) {
    if (/^\d/.test(s2)) level = num(s2);
    else if (s2.toLowerCase() !== 'default') return `Unknown compression level: ${s2}`;
  }
  if (!Number.isInteger(algo) || algo < 0 || algo > 3) return `Unknown compression type: ${s1}`;
  if (level && (algo !== 3 || level < 6 || level > 9)) return `Unsupported comp_level ${level} for ${s1}`;
  return algo | (level << 4);
}

/** "xxhash64", "crc32", "default", a number: the check byte, or why not. */
export function parseCheck(spec: string): number | string {
  let algo: number;
  if (/^\d/.test(spec)) algo = num(spec);
  else {
    const s = spec.toLowerCase();
    algo = CHECKS.indexOf(s);
    if (algo < 0 && s === 'iscsi32') algo = 2; // hammer2_disk.h's name for the CRC32C method
    if (algo < 0 && s === 'default') algo = 3;
  }
  // freemap is for freemap blocks only: not a method a file can have.
  if (!Number.isInteger(algo) || algo < 0 || algo > 4) return `Unknown check code type: ${spec}`;
  return algo;
}


/** One target per mount, opened on first use. */
class Targets {
  private byMount = new Map<string, Target>();
  async of(p: string): Promise<Target> {
    const t = await openTarget(p, { write: true });
    if (!t.mountpoint) {
      await t.close();
      throw new DirectiveError(`${p}: not inside a mounted HAMMER2 filesystem`);
    }
    const have = this.byMount.get(t.mountpoint);
    if (have) {
      await t.close();
      return have;
    }
    this.byMount.set(t.mountpoint, t);
    return t;
  }
  async close(): Promise<void> {
    for (const t of this.byMount.values()) await t.close();
  }
}

const setMethod =
  (kind: 'comp' | 'check', fixed?: string): Directive =>
  async (ctx, args) => {
    const spec = fixed ?? args[0];
    const paths = fixed ? args : args.slice(1);
    if (spec === undefined || (!fixed && paths.length === 0)) {
      throw new UsageError(
        kind === 'comp' ? 'setcomp: requires compression method and directory/file path' : 'setcheck: requires check code method and directory/file path',
      );
    }
    const v = kind === 'comp' ? parseComp(spec) : parseCheck(spec);
    if (typeof v === 'string') {
      ctx.io.err(`${v}\n`);
      return 3;
    }
    const label = kind === 'comp' ? 'comp_algo' : 'check_algo';
    const targets = new Targets();
    let status = 0;
    const one = async (p: string, st: fs.Stats): Promise<void> => {
      const t = await targets.of(p);
      ctx.io.out(`${p}\t${label}=0x${v.toString(16).padStart(2, '0')}\n`);
      await t.request('inode-set', { label: t.label, inum: String(st.ino), [kind]: v });
      // -r: the reference descends with readdir; symlinks are not followed out of the tree.
      if (ctx.recurse && st.isDirectory()) {
        for (const name of fs.readdirSync(p)) {
          const child = path.join(p, name);
          const cst = fs.lstatSync(child);
          if (cst.isSymbolicLink()) continue;
          try {
            await one(child, cst);
          } catch (e) {
            ctx.io.err(`${child}: ${(e as Error).message}\n`);
            status = 3;
          }
        }
      }
    };
    try {
      for (const p of paths.length ? paths : ['.']) {
        let st: fs.Stats;
        try {
          st = fs.statSync(p);
        } catch (e) {
          ctx.io.out(`${p}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? strerror('ENOENT') : (e as Error).message}\n`);
          status = 3;
          continue;
        }
        try {
          await one(p, st);
        } catch (e) {
          ctx.io.err(`${p}: ${e instanceof ControlError || e instanceof DirectiveError ? e.message : (e as Error).message}\n`);
          status = 3;
        }
      }
    } finally {
      await targets.close();
    }
    return status;
  };

/** The reference's sizetostr: two decimals, B/KB/MB/GB/TB switching at half a unit. */
export function sizeToStr(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (i < units.length - 1 && n >= 1024 ** (i + 1) / 2) i++;
  return `${(n / 1024 ** i).toFixed(2).padStart(6)}${units[i]}`;
}

/** The reference's counttostr. */
export function countToStr(n: number): string {
  if (n < (1024 * 1024) / 2) return String(n);
  if (n < (1024 * 1024 * 1024) / 2) return `${(n / (1024 * 1024)).toFixed(2).padStart(6)}M`;
  if (n < (1024 * 1024 * 1024 * 1024) / 2) return `${Math.floor(n / 1024 ** 3).toFixed(2).padStart(6)}G`;
  return `${Math.floor(n / 1024 ** 4).toFixed(2).padStart(6)}T`;
}

const stat: Directive = async (ctx, args) => {
  const paths = args.length ? args : ['.'];
  const w = Math.max(16, ...paths.map((p) => p.length));
  const rows: Record<string, unknown>[] = [];
  if (!ctx.json) ctx.io.out(`${'PATH'.padEnd(w)} ncp  data-use inode-use comp               check        quota\n`);
  const targets = new Targets();
  let status = 0;
  try {
    for (const p of paths) {
      try {
        const st = fs.statSync(p);
        const t = await targets.of(p);
        const r = await t.request<{ raw: string; dataCount: string; inodeCount: string }>('inode-get', { label: t.label, inum: String(st.ino) });
        const m = decodeInode(Buffer.from(r.raw, 'base64')).meta;
        const data = Number(r.dataCount);
        const inodes = Number(r.inodeCount);
        if (ctx.json) {
          rows.push({ path: p, ncopies: m.ncopies, dataUse: data, inodeUse: inodes, comp: compModeName(m.compAlgo), check: checkModeName(m.checkAlgo), dataQuota: Number(m.dataQuota), inodeQuota: Number(m.inodeQuota) });
          continue;
        }
        let line = `${p.slice(0, w).padEnd(w)} ${String(m.ncopies).padStart(3)} ${sizeToStr(data).padStart(9)} ${countToStr(inodes).padStart(9)} ${compModeName(m.compAlgo).padEnd(18)} ${checkModeName(m.checkAlgo).padEnd(12)} `;
        if (m.dataQuota || m.inodeQuota) line += `${sizeToStr(Number(m.dataQuota))}/${countToStr(Number(m.inodeQuota)).padEnd(12)}`;
        ctx.io.out(line + '\n');
      } catch (e) {
        const msg = (e as Error).message;
        ctx.io.err(msg.startsWith(`${p}:`) ? `${msg}\n` : `${p}: ${msg}\n`);
        status = 1;
      }
    }
  } finally {
    await targets.close();
  }
  if (ctx.json) ctx.io.out(JSON.stringify(rows, null, 2) + '\n');
  return status;
};

// printinode PATH: the inode's meta fields as the daemon has them (its
// in-memory copy, so changes not yet flushed show too).
const printinode: Directive = async (ctx, args) => {
  if (args.length !== 1) throw new UsageError('printinode: requires directory/file path');
  const p = args[0];
  let st: fs.Stats;
  try {
    st = fs.statSync(p);
  } catch (e) {
    throw new DirectiveError(`${p}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? strerror('ENOENT') : (e as Error).message}`, 3);
  }
  const targets = new Targets();
  try {
    const t = await targets.of(p);
    const r = await t.request<{ raw: string }>('inode-get', { label: t.label, inum: String(st.ino) });
    ctx.io.out(formatInode(decodeInode(Buffer.from(r.raw, 'base64')), ctx.verbose));
  } finally {
    await targets.close();
  }
  return 0;
};

export const directives: Record<string, Directive> = {
  printinode,
  setcomp: setMethod('comp'),
  setcheck: setMethod('check'),
  clrcheck: setMethod('check', 'none'),
  setcrc32: setMethod('check', 'crc32'),
  setxxhash64: setMethod('check', 'xxhash64'),
  setsha192: setMethod('check', 'sha192'),
  stat,
};
