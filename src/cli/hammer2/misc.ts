// bulkfree, info, volume-list: whole-filesystem directives.
import { Directive, DirectiveError, Hammer2Ctx, UsageError } from './context';
import { sizeToStr } from './modes';
import { hammer2Mounts, openTarget } from './target';

interface Info {
  pid: number;
  devices: string;
  writable: boolean;
  socket: string | null;
  /** The daemon's, in bytes (absent without a daemon). */
  memory?: { rss: number; heap: number; buffers: number; cache: number; pending: number; mallocInUse?: number; mallocFree?: number };
  mounts: { label: string; mountpoint: string; readonly: boolean }[];
  header: { fsid: string; version: number; volumes: { path: string; size: number }[]; size: string; allocatorSize: string; allocatorFree: string; mirrorTid: string; freemapTid: string };
}

const bulkfree: Directive = async (ctx, args) => {
  if (args.length !== 1) throw new UsageError('bulkfree: requires path to mount');
  const t = await openTarget(args[0], { write: true });
  try {
    const bar = progressLine(ctx, 'bulkfree');
    const r = await t.request<{ freed: number; freeBefore: number; freeAfter: number; ms: number; headers: number }>('bulkfree', {}, bar.show);
    bar.done();
    if (ctx.json) ctx.io.out(JSON.stringify(r) + '\n');
    else if (ctx.verbose > 0 || ctx.io.tty) ctx.io.out(`bulkfree: freed ${r.freed} bytes in ${r.ms} ms (free ${r.freeBefore} -> ${r.freeAfter})\n`);
    return 0;
  } catch (e) {
    ctx.io.err(`hammer2: bulkfree: ${(e as Error).message}\n`);
    return 1;
  } finally {
    await t.close();
  }
};

const info: Directive = async (ctx, args) => {
  const paths = args.length ? args : ctx.sel ? [ctx.sel] : hammer2Mounts();
  if (!paths.length) throw new DirectiveError('no HAMMER2 filesystem is mounted (give a path, -s MOUNTPOINT or IMAGE)');
  const out: Info[] = [];
  const seen = new Set<string>();
  for (const p of paths) {
    const t = await openTarget(p, { write: false });
    try {
      const i = await t.request<Info>('info');
      if (seen.has(i.devices)) continue;
      seen.add(i.devices);
      out.push(i);
    } finally {
      await t.close();
    }
  }
  if (ctx.json) {
    ctx.io.out(JSON.stringify(out, null, 2) + '\n');
    return 0;
  }
  for (const i of out) {
    const h = i.header;
    ctx.io.out(`${i.devices}\n`);
    ctx.io.out(`    fsid            ${h.fsid}\n    version         ${h.version}\n    size            ${h.size}\n`);
    ctx.io.out(`    free            ${h.allocatorFree} of ${h.allocatorSize}\n    mirror_tid      0x${BigInt(h.mirrorTid).toString(16).padStart(16, '0')}\n`);
    ctx.io.out(`    daemon          ${i.socket ? `pid ${i.pid}, ${i.writable ? 'read-write' : 'read-only'}` : 'none (not mounted)'}\n`);
    if (i.memory) {
      const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;
      const m = i.memory;
      ctx.io.out(`    memory          ${mib(m.rss)} resident: JS heap ${mib(m.heap)}, buffers ${mib(m.buffers)} (metadata cache ${mib(m.cache)}, data awaiting commit ${mib(m.pending)})\n`);
      if (m.mallocInUse !== undefined) ctx.io.out(`    malloc          ${mib(m.mallocInUse)} in use, ${mib(m.mallocFree ?? 0)} free in its arenas\n`);
    }
    for (const m of i.mounts) ctx.io.out(`    mounted         @${m.label} on ${m.mountpoint}${m.readonly ? ' (ro)' : ''}\n`);
  }
  return 0;
};

const volumeList: Directive = async (ctx, args) => {
  const paths = args.length ? args : ctx.sel ? [ctx.sel] : hammer2Mounts();
  if (!paths.length) throw new DirectiveError('no HAMMER2 filesystem is mounted (give a path, -s MOUNTPOINT or IMAGE)');
  const json: unknown[] = [];
  for (const [n, p] of paths.entries()) {
    const t = await openTarget(p, { write: false });
    try {
      const i = await t.request<Info>('info');
      if (ctx.json) {
        json.push({ path: p, version: i.header.version, label: t.label, volumes: i.header.volumes });
        continue;
      }
      if (paths.length > 1) {
        if (n > 0) ctx.io.out('\n');
        ctx.io.out(`${p}\n`);
      }
      const vols = i.header.volumes;
      const w = Math.max(...vols.map((v) => v.path.length));
      if (ctx.quiet === 0) {
        ctx.io.out(`version ${i.header.version}\n`);
        if (t.label) ctx.io.out(`@${t.label}\n`);
      }
      let off = 0;
      for (const [id, v] of vols.entries()) {
        if (ctx.quiet > 0) {
          ctx.io.out(`${v.path}\n`);
          continue;
        }
        let line = `volume${String(id).padEnd(2)} ${v.path.padEnd(w)} ${sizeToStr(v.size)}`;
        if (ctx.verbose > 0) line += ` 0x${off.toString(16).padStart(16, '0')} 0x${v.size.toString(16).padStart(16, '0')}`;
        ctx.io.out(line + '\n');
        off += v.size;
      }
    } finally {
      await t.close();
    }
  }
  if (ctx.json) ctx.io.out(JSON.stringify(json, null, 2) + '\n');
  return 0;
};

/** "20G", "512M", "1073741824", "+4G" (relative to `current`): bytes, binary units. */
export function parseSize(spec: string, current: number): number | null {
  const m = /^(\+?)(\d+(?:\.\d+)?)([kmgtp]?)i?b?$/i.exec(spec.trim());
  if (!m) return null;
  const n = Math.floor(Number(m[2]) * 1024 ** ' kmgtp'.indexOf(m[3].toLowerCase() || ' '));
  if (!Number.isSafeInteger(n)) return null;
  return m[1] ? current + n : n;
}

/** A progress line on stderr while a terminal watches; cleared at the end. */
function progressLine(ctx: Hammer2Ctx, name: string) {
  if (!ctx.io.tty || ctx.json) return { show: undefined, done: () => {} };
  let shown = false;
  return {
    show: (p: { done: number; total: number; what?: string }) => {
      shown = true;
      const pct = Math.floor((100 * p.done) / Math.max(1, p.total));
      const bar = '#'.repeat(Math.floor(pct / 5)).padEnd(20, '.');
      ctx.io.err(`\r\x1b[K${name}: [${bar}] ${String(pct).padStart(3)}%${p.what ? ` ${p.what}` : ''}`);
    },
    done: () => shown && ctx.io.err('\r\x1b[K'),
  };
}

// growfs [PATH...]: grow into the rest of the device, or (--size) to a given
// size, extending an image file first. Output and exit codes as the reference.
const growfs: Directive = async (ctx, args) => {
  const paths = args.length ? args : [ctx.sel ?? '.'];
  let status = 0;
  for (const p of paths) {
    let t;
    try {
      t = await openTarget(p, { write: true });
    } catch (e) {
      ctx.io.err(`grow ${p} failed: ${(e as Error).message}\n`);
      status = 1;
      continue;
    }
    const bar = progressLine(ctx, 'growfs');
    try {
      let size: number | undefined;
      if (ctx.size !== undefined) {
        const i = await t.request<Info>('info');
        const s = parseSize(ctx.size, Number(i.header.size));
        if (s === null) throw new UsageError(`--size: cannot read "${ctx.size}" (bytes, or with K, M, G, T; +SIZE grows by that much)`);
        size = s;
      }
      const r = await t.request<{ oldSize: number; size: number; modified: boolean; gained: number; free: number }>(
        'growfs',
        size === undefined ? {} : { size: String(size) },
        bar.show,
      );
      bar.done();
      const hex = r.size.toString(16).padStart(16, '0');
      if (ctx.json) ctx.io.out(JSON.stringify({ path: p, ...r }) + '\n');
      else if (r.modified) ctx.io.out(`${p} grown to ${hex}\n`);
      else ctx.io.out(`${p} no size change - ${hex}\n`);
    } catch (e) {
      bar.done();
      if (e instanceof UsageError) throw e;
      ctx.io.err(`grow ${p} failed: ${(e as Error).message}\n`);
      status = 1;
    } finally {
      await t.close();
    }
  }
  return status;
};

export const directives: Record<string, Directive> = { bulkfree, info, 'volume-list': volumeList, growfs };
