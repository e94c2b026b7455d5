#!/usr/bin/env node
// newfs_hammer2 [-f] [-b bootsize] [-r auxsize] [-V version] [-L label ...] [-s size] special ...
//
// Formats one or more volumes (image files or block devices) as a new
// HAMMER2 filesystem with the PFSs LOCAL and DATA (or LOCAL and the -L
// labels). A missing image file is created sparse when -s gives its size.
import { Command } from 'commander';
import { CliIo, parseArgs, stdio, toolCommand } from './common';
import { AUX_MAX_BYTES, BOOT_MAX_BYTES } from '../media';
import {
  checkAreaSize,
  formatHammer2,
  formatSummary,
  NewfsError,
  parseSize,
  parseSizeList,
  parseVersion,
} from '../../mkfs/newfs';

const prog = 'newfs_hammer2';

interface CliOpts {
  bootsize?: string;
  auxsize?: string;
  version?: string;
  label?: string[];
  size?: string;
  force?: boolean;
  debug?: boolean;
}

/** Run the command with `args` (without node and script); resolves to the exit status. */
export async function run(args: string[], io: CliIo = stdio): Promise<number> {
  const program = toolCommand(
    new Command(prog)
      .description('construct a new HAMMER2 file system')
      .usage('[-f] [-b bootsize] [-r auxsize] [-V version] [-L label ...] [-s size] special ...')
      .option('-b, --bootsize <size>', 'boot area size (multiple of 8M, 8M..256M; default scales with the volume, up to 64M)')
      .option('-r, --auxsize <size>', 'aux area size (multiple of 8M, 8M..1G; default scales with the volume, up to 256M)')
      .option('-V, --version <n>', 'volume version to format: 1 or 2 (default 2; several volumes need 2)')
      .option(
        '-L, --label <label>',
        'create PFS <label> besides LOCAL (repeatable, up to 3; "none": only LOCAL; default: DATA)',
        (v: string, acc: string[] | undefined) => (acc ?? []).concat(v),
      )
      .option('-s, --size <size>', 'filesystem size (K/M/G/T suffix); SIZE1:SIZE2... per volume; creates missing image files sparse')
      .option('-f, --force', 'format even if a target already holds a HAMMER2 volume')
      .option('-d, --debug', 'also print the volume table')
      .argument('<special...>', 'image files or block devices; several form one filesystem'),
    prog,
    io,
  );
  const usage = parseArgs(program, args, 1);
  if (usage !== null) return usage;
  const o = program.opts<CliOpts>();

  try {
    const version = o.version !== undefined ? parseVersion(o.version) : undefined;
    const bootSize =
      o.bootsize !== undefined ? checkAreaSize(parseSize(o.bootsize, 'boot area size'), 'boot area size', BOOT_MAX_BYTES) : undefined;
    const auxSize =
      o.auxsize !== undefined ? checkAreaSize(parseSize(o.auxsize, 'aux area size'), 'aux area size', AUX_MAX_BYTES) : undefined;
    const sizes = o.size !== undefined ? parseSizeList(o.size) : undefined;
    const result = await formatHammer2({
      paths: program.args,
      labels: o.label,
      version,
      bootSize,
      auxSize,
      sizes,
      force: !!o.force,
      warn: (m) => io.err(`${prog}: warning: ${m}\n`),
    });
    io.out(formatSummary(result, !!o.debug));
    return 0;
  } catch (e) {
    if (e instanceof NewfsError) {
      io.err(`${prog}: ${e.message}\n`);
      return 1;
    }
    io.err(`${prog}: unexpected error: ${(e as Error).stack ?? String(e)}\n`);
    return 1;
  }
}

if (require.main === module) {
  void run(process.argv.slice(2)).then((code) => process.exit(code));
}
