// pfs-list, pfs-clid, pfs-fsid, pfs-create, pfs-delete, snapshot: the
// reference's output lines and exit statuses, plus --json.
import type { PfsInfo } from '../../admin';
import { ControlError } from '../../control';
import { Directive, DirectiveError, UsageError } from './context';
import { hammer2Mounts, openTarget } from './target';

const errText = (e: unknown) => (e instanceof ControlError || e instanceof DirectiveError ? e.message : String((e as Error)?.message ?? e));

const pfsList: Directive = async (ctx, args) => {
  // Without paths: -s, else every hammer2 mount.
  const paths = args.length ? args : ctx.sel ? [ctx.sel] : hammer2Mounts();
  if (!paths.length) throw new DirectiveError('no HAMMER2 filesystem is mounted (give a path, -s MOUNTPOINT or IMAGE)');
  const json: { path: string; pfs: PfsInfo[] }[] = [];
  let status = 0;
  for (const [i, p] of paths.entries()) {
    let list: PfsInfo[];
    try {
      const t = await openTarget(p, { write: false });
      try {
        list = await t.request<PfsInfo[]>('pfs-list');
      } finally {
        await t.close();
      }
    } catch (e) {
      ctx.io.err(`hammer2: ${p}: ${errText(e)}\n`);
      status = 1;
      continue;
    }
    // Sorted by label as strcmp sorts (byte order).
    list.sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)));
    if (ctx.json) {
      json.push({ path: p, pfs: list });
      continue;
    }
    if (i > 0) ctx.io.out('\n');
    ctx.io.out(`Type        ClusterId (pfs_clid)                 Label on ${p}\n`);
    for (const e of list) ctx.io.out(`${e.type.padEnd(11)} ${e.clid} ${e.name}\n`);
  }
  if (ctx.json) ctx.io.out(JSON.stringify(json, null, 2) + '\n');
  return status;
};

const pfsGetId =
  (which: 'clid' | 'fsid'): Directive =>
  async (ctx, args) => {
    if (args.length < 1) throw new UsageError(`pfs-${which}: requires name`);
    const t = await openTarget(ctx.sel, { write: false });
    try {
      const p = await t.request<PfsInfo>('pfs-get', { label: args[0] });
      ctx.io.out(ctx.json ? JSON.stringify({ name: p.name, [which]: p[which] }) + '\n' : `${p[which]}\n`);
      return 0;
    } catch (e) {
      ctx.io.err(`hammer2: pfs-${which}(${args[0]}): ${errText(e)}\n`);
      return 1;
    } finally {
      await t.close();
    }
  };

const pfsCreate: Directive = async (ctx, args) => {
  if (args.length < 1) throw new UsageError('pfs-create: requires name');
  const name = args[0];
  const t = await openTarget(ctx.sel, { write: true });
  try {
    await t.request('pfs-create', { label: name, type: ctx.pfsType, clid: ctx.uuid });
    ctx.io.out(`hammer2: pfs_create(${name}): SUCCESS\n`);
    return 0;
  } catch (e) {
    if (e instanceof ControlError && e.code === 'EEXIST') {
      ctx.io.err(
        'NOTE: Typically the same name is used for cluster elements on different mounts,\n' +
          '      but cluster elements on the same mount require unique names.\n' +
          `hammer2: pfs_create(${name}): already present\n`,
      );
    } else if (e instanceof ControlError && e.code === 'EINVAL' && /uuid/.test(e.message)) {
      ctx.io.err(`hammer2: pfs_create(${name}): badly formed uuid\n`);
    } else {
      ctx.io.err(`hammer2: pfs_create(${name}): ${errText(e)}\n`);
    }
    return 1;
  } finally {
    await t.close();
  }
};

const pfsDelete: Directive = async (ctx, args) => {
  if (args.length < 1) throw new UsageError('pfs-delete: requires name');
  let status = 0;
  for (const name of args) {
    // Without -s, the name must be found on exactly one mounted image.
    let where = ctx.sel;
    if (!where) {
      const hits: string[] = [];
      const images = new Set<string>();
      for (const m of hammer2Mounts()) {
        try {
          const t = await openTarget(m, { write: false });
          try {
            const info = await t.request<{ devices: string }>('info');
            if (images.has(info.devices)) continue;
            images.add(info.devices);
            await t.request('pfs-get', { label: name });
            hits.push(m);
          } finally {
            await t.close();
          }
        } catch {
          /* not there */
        }
      }
      if (hits.length > 1) {
        ctx.io.err(`hammer2: pfs_delete(${name}): Duplicate PFS name, must specify mount\n`);
        status = 1;
        continue;
      }
      if (!hits.length) {
        ctx.io.out(`hammer2: pfs_delete(${name}): ${name} not found\n`);
        status = 1;
        continue;
      }
      where = hits[0];
    }
    try {
      const t = await openTarget(where, { write: true });
      try {
        await t.request('pfs-delete', { label: name });
      } finally {
        await t.close();
      }
      ctx.io.out(`hammer2: pfs_delete(${name}): SUCCESS\n`);
    } catch (e) {
      ctx.io.out(`hammer2: pfs_delete(${name}): ${errText(e)}\n`);
      status = 1;
    }
  }
  return status;
};

const snapshot: Directive = async (ctx, args) => {
  if (args.length > 2) throw new UsageError('snapshot: too many arguments');
  const where = args[0] ?? ctx.sel;
  const t = await openTarget(where, { write: true });
  try {
    if (!t.label) throw new DirectiveError(`${t.name}: name the PFS to snapshot (IMAGE@LABEL)`);
    const p = await t.request<PfsInfo>('snapshot', { label: t.label, name: args[1] });
    ctx.io.out(ctx.json ? JSON.stringify(p) + '\n' : `created snapshot ${p.name}\n`);
    return 0;
  } catch (e) {
    ctx.io.err(`hammer2: snapshot: ${errText(e)}\n`);
    return 1;
  } finally {
    await t.close();
  }
};

/**
 * pfs-status: each PFS's node type, cluster id and transaction id; for a
 * SLAVE, the master tid it is synchronized to, and its lag behind a MASTER
 * of its cluster on the same filesystem when there is one.
 */
const pfsStatus: Directive = async (ctx, args) => {
  const paths = args.length ? args : ctx.sel ? [ctx.sel] : hammer2Mounts();
  if (!paths.length) throw new DirectiveError('no HAMMER2 filesystem is mounted (give a path, -s MOUNTPOINT or IMAGE)');
  const json: { path: string; pfs: (PfsInfo & { lag?: string })[] }[] = [];
  for (const p of paths) {
    const t = await openTarget(p, { write: false });
    let list: PfsInfo[];
    try {
      list = await t.request<PfsInfo[]>('pfs-list');
    } catch (e) {
      throw new DirectiveError(`${p}: ${errText(e)}`);
    } finally {
      await t.close();
    }
    list.sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)));
    const out = list.map((x) => {
      const master = x.type === 'SLAVE' ? list.find((y) => y.clid === x.clid && y.type === 'MASTER') : undefined;
      return master ? { ...x, lag: (BigInt(master.tid) - BigInt(x.tid)).toString(), master: master.name } : x;
    });
    if (ctx.json) {
      json.push({ path: p, pfs: out });
      continue;
    }
    ctx.io.out(`${p}:\n`);
    for (const x of out as (PfsInfo & { lag?: string; master?: string })[]) {
      let line = `    ${x.name.padEnd(16)} ${x.type.padEnd(9)} ${x.clid}  tid ${x.tid}`;
      if (x.type === 'SLAVE') line += x.lag !== undefined ? `  synchronized to ${x.tid}, ${x.lag} behind ${x.master}` : `  synchronized to ${x.tid}`;
      ctx.io.out(line + '\n');
    }
  }
  if (ctx.json) ctx.io.out(JSON.stringify(json) + '\n');
  return 0;
};

export const directives: Record<string, Directive> = {
  'pfs-status': pfsStatus,
  'pfs-list': pfsList,
  'pfs-clid': pfsGetId('clid'),
  'pfs-fsid': pfsGetId('fsid'),
  'pfs-create': pfsCreate,
  'pfs-delete': pfsDelete,
  snapshot,
  'snapshot-debug': snapshot,
};

