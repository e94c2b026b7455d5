// copy-add, copy-remove, copy-status: the copies of a mounted PFS (see
// src/cluster). The mount is -s MOUNTPOINT, or the mount holding the
// current directory; images are named as the user names them and sent to
// the daemon as absolute paths.
import type { CopyStatus, ScrubReport } from '../../cluster';
import { ControlError } from '../../control';
import { absSpec } from '../../daemon/options';
import { strerror } from '../common';
import { Directive, DirectiveError, Hammer2Ctx, UsageError } from './context';
import { openTarget, Target } from './target';


async function mountedPfs(ctx: Hammer2Ctx): Promise<Target> {
  const where = ctx.sel ?? '.';
  const t = await openTarget(where, { write: true });
  if (!t.mountpoint || !t.label) {
    await t.close();
    throw new DirectiveError(`${where}: not a mounted HAMMER2 PFS (copies belong to a mount; use -s MOUNTPOINT)`);
  }
  return t;
}

const message = (e: unknown): string => {
  if (e instanceof ControlError) return e.code === 'EIO' || e.message !== e.code ? e.message : strerror(e.code);
  return (e as Error).message;
};

const withTarget =
  (fn: (ctx: Hammer2Ctx, t: Target, args: string[]) => Promise<number>): Directive =>
  async (ctx, args) => {
    const t = await mountedPfs(ctx);
    try {
      return await fn(ctx, t, args);
    } catch (e) {
      if (e instanceof DirectiveError) throw e;
      throw new DirectiveError(message(e));
    } finally {
      await t.close();
    }
  };

function line(c: CopyStatus): string {
  const role = c.primary ? 'primary' : 'copy';
  let s = `${role.padEnd(8)}${c.state.padEnd(11)}tid ${c.tid.padEnd(10)} healed ${c.healed}  read errors ${c.readErrors}  write errors ${c.writeErrors}`;
  if (!c.primary && (c.resync.blocksWritten || c.state === 'resyncing')) {
    s += `  resync ${c.resync.blocksRead} blocks read, ${c.resync.blocksWritten} written, ${c.resync.passes} passes`;
  }
  s += `\n    ${c.spec}\n`;
  if (c.error) s += `    ${c.error}\n`;
  return s;
}

export const directives: Record<string, Directive> = {
  'copy-add': withTarget(async (ctx, t, args) => {
    if (args.length !== 1) throw new UsageError('copy-add: expected one image (or vol1:vol2 spec)');
    const st = await t.request<CopyStatus>('copy-add', { label: t.label, spec: absSpec(args[0]) });
    if (ctx.json) ctx.io.out(JSON.stringify(st) + '\n');
    else ctx.io.out(`${t.label}: copy ${st.spec} added, ${st.state}${st.error ? ` (${st.error})` : ''}\n`);
    return 0;
  }),
  'copy-remove': withTarget(async (ctx, t, args) => {
    if (args.length !== 1) throw new UsageError('copy-remove: expected one image (or vol1:vol2 spec)');
    const spec = absSpec(args[0]);
    await t.request('copy-remove', { label: t.label, spec });
    ctx.io.out(`${t.label}: copy ${spec} removed\n`);
    return 0;
  }),
  scrub: withTarget(async (ctx, t, args) => {
    if (args.length) throw new UsageError('scrub takes no arguments (select the mount with -s)');
    const r = await t.request<{ label: string; nodes: ScrubReport[] }>('scrub', { label: t.label });
    if (ctx.json) {
      ctx.io.out(JSON.stringify({ nodes: r.nodes }) + '\n');
    } else {
      for (const n of r.nodes) {
        ctx.io.out(
          `${n.primary ? 'primary' : 'copy   '} ${n.spec}: ${n.blocks} blocks verified, ${n.damaged} damaged, ${n.repaired} repaired${n.error ? ` (${n.error})` : ''}\n`,
        );
      }
    }
    const left = r.nodes.some((n) => n.damaged > 0 && n.repaired === 0);
    return left ? 2 : 0;
  }),
  'copy-status': withTarget(async (ctx, t, args) => {
    if (args.length) throw new UsageError('copy-status takes no arguments (select the mount with -s)');
    const r = await t.request<{ label: string; copies: CopyStatus[] }>('copy-status', { label: t.label });
    if (ctx.json) {
      ctx.io.out(JSON.stringify({ copies: r.copies }) + '\n');
      return 0;
    }
    ctx.io.out(`${t.mountpoint} (PFS ${r.label}): ${r.copies.length} node(s)\n`);
    for (const c of r.copies) ctx.io.out(line(c));
    return 0;
  }),
};
