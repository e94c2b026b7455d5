#!/usr/bin/env node
// fsck_hammer2 [-f] [-v] [-q] [-e] [-b] [-p] [-P] [-l pfs,..] [-c N] [-y | -n] [--json] special
//
// Verifies a HAMMER2 filesystem (image files or block devices, several
// volumes as img1:img2): every volume header, every blockref reachable from
// each valid header (as the reference fsck_hammer2 does), and beyond that
// the freemap against the trees and each PFS's namespace. With -y it
// repairs what it can through copy-on-write and a new volume header.
//
// Exit status (fsck(8)): 0 clean, 1 errors corrected, 4 errors left
// uncorrected, 8 operational error, 16 usage error.
import { Command } from 'commander';
import { CliIo, parseArgs, stdio, toolCommand } from './common';
import { checkHammer2, CheckResult } from '../../fsck/check';
import { renderPfsList, renderText, summaryLine, TextOptions, toJson, jsonStringify } from '../../fsck/output';
import { Progress } from '../../fsck/progress';
import { repairHammer2, RepairResult } from '../../fsck/repair';

const prog = 'fsck_hammer2';

interface CliOpts {
  force?: boolean;
  verbose?: number;
  quiet?: number;
  empty?: boolean;
  best?: boolean;
  pfs?: boolean;
  printPfs?: boolean;
  labels?: string[];
  cache?: string;
  debug?: boolean;
  yes?: boolean;
  no?: boolean;
  json?: boolean;
  progress?: boolean;
  window?: string;
}

export function exitStatus(r: CheckResult): number {
  if (r.fatal) return r.fatal.status;
  return r.report.errors ? 4 : 0;
}

/** Run the command with `args` (without node and script); resolves to the exit status. */
export async function run(args: string[], io: CliIo = stdio): Promise<number> {
  const count = (_v: string, prev: number | undefined) => (prev ?? 0) + 1;
  const program = toolCommand(
    new Command(prog)
      .description('verify (and with -y repair) a HAMMER2 file system')
      .usage('[-f] [-v] [-q] [-e] [-b] [-p] [-P] [-l pfs,..] [-c N] [-y|-n] [--json] special')
      .option('-f, --force', 'accepted for compatibility (every check always runs)')
      .option('-v, --verbose', 'more detail (notes, per-finding context); repeatable', count)
      .option('-q, --quiet', 'only problems and the summary; repeatable', count)
      .option('-e, --empty', 'count empty blockrefs')
      .option('-b, --best', 'check only the best volume header zone')
      .option('-p, --pfs', 'print blockref counts per PFS')
      .option('-P, --print-pfs', 'list the PFSs and exit')
      .option('-l, --labels <names>', 'only these PFSs (comma separated)', (v: string, acc: string[] | undefined) =>
        (acc ?? []).concat(v.split(',').filter(Boolean)),
      )
      .option('-c, --cache <count>', 'accepted for compatibility (blockref cache count)')
      .option('-d, --debug', 'accepted for compatibility')
      .option('-y, --yes', 'repair everything repairable without asking')
      .option('-n, --no-write', 'never write (the default without -y)')
      .option('--json', 'machine-readable report on stdout')
      .option('--no-progress', 'no progress bar on a terminal')
      .option('--window <GiB>', 'bitmap window in GiB (bounds memory on huge images; default 8192)')
      .argument('<special>', 'image file or block device; several volumes as img1:img2:...'),
    prog,
    io,
  );
  const usage = parseArgs(program, args, 16);
  if (usage !== null) return usage;
  const o = program.opts<CliOpts & { write?: boolean }>();
  const spec = program.args[0];
  const verbose = Math.max(0, (o.verbose ?? 0) - (o.quiet ?? 0));
  const quiet = (o.quiet ?? 0) > (o.verbose ?? 0);
  if (o.yes && o.write === false) {
    io.err(`${prog}: -y and -n exclude each other\n`);
    return 16;
  }
  const windowGiB = o.window !== undefined ? Number(o.window) : undefined;
  if (windowGiB !== undefined && !(windowGiB >= 1)) {
    io.err(`${prog}: --window must be a number of GiB >= 1\n`);
    return 16;
  }
  const text: TextOptions = {
    quiet,
    verbose: verbose > 0,
    perPfs: !!o.pfs,
    countEmpty: !!o.empty,
    bestOnly: !!o.best,
    labels: o.labels ?? null,
  };
  const progress = !o.json && o.progress !== false && io.tty ? Progress.forTerminal(true) : null;
  const checkOpts = {
    bestOnly: !!o.best,
    labels: o.labels ?? null,
    countEmpty: !!o.empty,
    windowGiB,
    progress,
  };
  try {
    if (o.printPfs) {
      const r = await checkHammer2(spec, { ...checkOpts, verifyData: false, namespace: false });
      if (r.fatal) {
        io.err(`${prog}: ${r.fatal.message}\n`);
        return r.fatal.status;
      }
      if (o.json) io.out(jsonStringify(toJson(r, exitStatus(r))) + '\n');
      else io.out(renderPfsList(r, text));
      return 0;
    }
    const first = await checkHammer2(spec, checkOpts);
    let status = exitStatus(first);
    let final = first;
    let repair: RepairResult | undefined;
    // A fatal result is repaired only where the repair can start: a header cut short while written.
    const mendable = !!first.fatal && first.report.findings.some((f) => f.code === 'header-invalid' && f.fixable);
    if (o.yes && (!first.fatal || mendable)) {
      if (!o.json) io.out(renderText(first, text));
      repair = await repairHammer2(spec, first, {
        ...checkOpts,
        log: (m) => {
          if (!o.json) io.out(`repair: ${m}\n`);
        },
      });
      final = repair.final ?? first;
      const left = exitStatus(final);
      status = left !== 0 ? left : first.report.errors > 0 ? 1 : 0;
      if (!o.json) {
        if (repair.wrote) {
          io.out('after repair:\n');
          io.out(renderText(final, { ...text, quiet: true }));
        }
        io.out(summaryLine(final, status) + '\n');
      }
    } else if (!o.json) {
      io.out(renderText(first, text));
      io.out(summaryLine(first, status) + '\n');
    }
    if (o.json) io.out(jsonStringify(toJson(final, status, repair, repair ? first : undefined)) + '\n');
    return status;
  } catch (e) {
    progress?.clear();
    io.err(`${prog}: ${(e as Error).stack ?? String(e)}\n`);
    return 8;
  }
}

if (require.main === module) {
  process.env.HAMMER2_QUIET_SHIM ??= '1';
  void run(process.argv.slice(2)).then((code) => process.exit(code));
}
