#!/usr/bin/env node
// hammer2 [-s path] [-t type] [-u uuid] [-m mem] [-r] [-v] [-q] [--json] directive [argument ...]
//
// The HAMMER2 administration command, with the reference's directives and
// output. On a mounted PFS (a path inside it, -s MOUNTPOINT, or the current
// directory) requests go to the daemon that owns the image, over its
// control channel; an unmounted IMAGE[@LABEL] is opened in-process.
// Only the module of the directive asked for is loaded: a command such as
// mirror-read or mirror-write runs once per mirroring pass, and loading
// every directive's dependencies (the daemon, FUSE, fsck's helpers) cost
// more than the pass itself.
import { ControlError } from '../control/protocol';
import { parsePfsType } from '../media/constants';
import { CliIo, stdio } from './io';
import { Directive, DirectiveError, Hammer2Ctx, UsageError } from './hammer2/context';

type DirectiveTable = Record<string, Directive>;

/** The modules of directives, loaded on demand. */
const MODULES = {
  pfs: async (): Promise<DirectiveTable> => (await import('./hammer2/pfs')).directives,
  modes: async (): Promise<DirectiveTable> => (await import('./hammer2/modes')).directives,
  misc: async (): Promise<DirectiveTable> => (await import('./hammer2/misc')).directives,
  recover: async (): Promise<DirectiveTable> => (await import('./hammer2/recover')).directives,
  show: async (): Promise<DirectiveTable> => (await import('./hammer2/show')).directives,
  destroy: async (): Promise<DirectiveTable> => (await import('./hammer2/destroy')).directives,
  copies: async (): Promise<DirectiveTable> => (await import('./hammer2/copies')).directives,
  mirror: async (): Promise<DirectiveTable> => (await import('./hammer2/mirror')).directives,
};

/** Which module holds each directive (test/hammer2-directives.test.ts checks it against the modules). */
export const DIRECTIVE_MODULES: Record<string, keyof typeof MODULES> = {
  'pfs-status': 'pfs', 'pfs-list': 'pfs', 'pfs-clid': 'pfs', 'pfs-fsid': 'pfs', 'pfs-create': 'pfs', 'pfs-delete': 'pfs', snapshot: 'pfs', 'snapshot-debug': 'pfs',
  printinode: 'modes', setcomp: 'modes', setcheck: 'modes', clrcheck: 'modes', setcrc32: 'modes', setxxhash64: 'modes', setsha192: 'modes', stat: 'modes',
  bulkfree: 'misc', info: 'misc', 'volume-list': 'misc', growfs: 'misc',
  recover: 'recover', 'recover-relaxed': 'recover', 'recover-file': 'recover',
  show: 'show', freemap: 'show', volhdr: 'show', hash: 'show', dhash: 'show',
  destroy: 'destroy', 'destroy-inum': 'destroy', 'emergency-mode-enable': 'destroy', 'emergency-mode-disable': 'destroy', cleanup: 'destroy',
  'copy-add': 'copies', 'copy-remove': 'copies', scrub: 'copies', 'copy-status': 'copies',
  'mirror-stream': 'mirror', 'mirror-tid': 'mirror', 'mirror-read': 'mirror', 'mirror-write': 'mirror', 'mirror-copy': 'mirror', 'pfs-upgrade': 'mirror', 'pfs-downgrade': 'mirror',
};

/** The directive called `name`, its module loaded, or undefined. */
export async function directive(name: string): Promise<Directive | undefined> {
  const m = Object.prototype.hasOwnProperty.call(DIRECTIVE_MODULES, name) ? DIRECTIVE_MODULES[name] : undefined;
  return m ? (await MODULES[m]())[name] : undefined;
}

/** Every directive module's table (tests). */
export async function allDirectiveTables(): Promise<Record<string, DirectiveTable>> {
  const out: Record<string, DirectiveTable> = {};
  for (const [k, load] of Object.entries(MODULES)) out[k] = await load();
  return out;
}

const USAGE = `hammer2 [options] command [argument ...]
    -s path            Select filesystem (mountpoint, path in a mount, or IMAGE[@LABEL])
    -t type            PFS type for pfs-create
    -u uuid            uuid for pfs-create
    -m mem[k,m,g]      buffer memory (bulkfree)
    -b bw[k,m,g]       bandwidth limit, bytes per second (mirror-read, mirror-stream)
    -r                 recurse (setcomp, setcheck)
    -v / -q            more / less output
    --json             machine-readable output (listing and status directives)
    --size SIZE        growfs: grow to SIZE (K/M/G/T) or by +SIZE; an image file is extended
    --keep-synced NAME mirror-stream: keep the master state the slave holds as snapshot NAME on the master

    pfs-list [<path>...]              List PFSs
    pfs-status [<path>...]            PFS types, cluster ids, tids; a slave's synchronized tid and lag
    pfs-clid <label>                  Print cluster id for specific PFS
    pfs-fsid <label>                  Print private id for specific PFS
    pfs-create <label>                Create a PFS
    pfs-delete <label>                Destroy a PFS
    snapshot <path> [<label>]         Snapshot a PFS
    snapshot-debug <path> [<label>]   Snapshot (same as snapshot here)
    stat [<path>...]                  Return inode quota & config
    info [<path>...]                  Image, daemon and mounts
    volume-list [<path>...]           List volumes
    setcomp <comp[:level]> <path>...  Set comp algo {none, autozero, lz4, zlib} & level
    setcheck <check> <path>...        Set check algo {none, crc32, xxhash64, sha192}
    clrcheck [<path>...]              Clear check code override
    setcrc32 [<path>...]              Set check algo to crc32
    setxxhash64 [<path>...]           Set check algo to xxhash64
    setsha192 [<path>...]             Set check algo to sha192
    printinode <path>                 Dump inode
    show <devpath>                    Raw hammer2 media dump for topology
    freemap <devpath>                 Raw hammer2 media dump for freemap
    volhdr <devpath>                  Raw hammer2 media dump for the volume header(s)
    hash [<filename>...]              Print directory hash (key) for name
    dhash [<filename>...]             Print data hash for long directory entry
    bulkfree <path>                   Run bulkfree pass
    growfs [<path>...]                Grow a filesystem into the space after it
    cleanup [<path>]                  Run cleanup passes (bulkfree) on one or every mounted image
    destroy <path>...                 Destroy directory entries (only use if inode bad)
    destroy-inum <inum>...            Destroy inodes (only use if inode bad)
    emergency-mode-enable <target>    Enable emergency operations mode on filesystem
    emergency-mode-disable <target>   Disable emergency operations mode on filesystem
    recover <devpath> <path> <destdir> Recover deleted or corrupt files or trees
    recover-relaxed <devpath> <path> <destdir> Recover deleted or corrupt files or trees
    recover-file <devpath> <path> <destdir> Recover, target is explicitly a regular file
    copy-add <image>                  Keep a copy of the mounted PFS on another image (-s MNT)
    copy-remove <image>               Stop keeping that copy
    copy-status                       Copies of the mounted PFS: state, tid, repairs, errors
    scrub                             Verify every block of the mounted PFS and its copies; repair from a good one
    mirror-read <master> [<since>]    Stream what IMAGE@LABEL changed after transaction <since> to stdout
    mirror-write <slave>              Apply a stream from stdin to the SLAVE PFS IMAGE@LABEL
    mirror-copy <master> <slave>      One mirroring pass from one IMAGE@LABEL into another
    mirror-stream <master> <slave>    Follow the master's commits into the slave until killed (-b, --keep-synced);
                                      the slave may be [user@]host:SLAVE (through $HAMMER2_RSH, default ssh)
    mirror-tid <slave>                Print the transaction id the slave is synchronized to
    pfs-upgrade <image@label>         Make a SLAVE PFS a MASTER
    pfs-downgrade <image@label>       Make a MASTER PFS a SLAVE
`;

/**
 * --json, --keep-synced NAME and --size SIZE (or --size=SIZE) at args[i]: how many arguments
 * they took (0 when args[i] is neither).
 */
function longOption(ctx: Hammer2Ctx, args: string[], i: number): number {
  const a = args[i];
  if (a === '--json') {
    ctx.json = true;
    return 1;
  }
  if (a === '--keep-synced') {
    ctx.keepSynced = args[i + 1];
    if (ctx.keepSynced === undefined) throw new UsageError('option requires an argument -- keep-synced');
    return 2;
  }
  if (a.startsWith('--size=')) {
    ctx.size = a.slice(7);
    return 1;
  }
  if (a !== '--size') return 0;
  ctx.size = args[i + 1];
  if (ctx.size === undefined) throw new UsageError('option requires an argument -- size');
  return 2;
}

/** getopt("m:rs:t:u:vq") plus the long options: options stop at the directive. */
function parseGlobal(args: string[], io: CliIo): { ctx: Hammer2Ctx; rest: string[] } {
  const ctx: Hammer2Ctx = { io, recurse: false, verbose: 0, quiet: 0, json: false };
  let i = 0;
  for (; i < args.length; i++) {
    const a = args[i];
    if (a === '--') {
      i++;
      break;
    }
    const took = longOption(ctx, args, i);
    if (took) {
      i += took - 1;
      continue;
    }
    if (a === '-h' || a === '--help') throw new UsageError('');
    if (!a.startsWith('-') || a === '-') break;
    for (let j = 1; j < a.length; j++) {
      const c = a[j];
      const value = (): string => {
        const v = j + 1 < a.length ? a.slice(j + 1) : args[++i];
        j = a.length;
        if (v === undefined) throw new UsageError(`option requires an argument -- ${c}`);
        return v;
      };
      if (c === 'r') ctx.recurse = true;
      else if (c === 'v') ctx.quiet ? ctx.quiet-- : ctx.verbose++;
      else if (c === 'q') ctx.verbose ? ctx.verbose-- : ctx.quiet++;
      else if (c === 's') ctx.sel = value();
      else if (c === 'u') ctx.uuid = value();
      else if (c === 't') {
        const v = value();
        const t = parsePfsType(v);
        if (t === undefined) throw new UsageError('-t: Unrecognized node type');
        ctx.pfsType = t;
      } else if (c === 'm') {
        const v = value();
        const m = /^(\d+)([kKmMgG]?)$/.exec(v);
        if (!m) throw new UsageError('-m: Unrecognized suffix');
        ctx.mem = Number(m[1]) * 1024 ** ' kmg'.indexOf(m[2].toLowerCase() || ' ');
      } else if (c === 'b') {
        // mirror-stream's bandwidth limit, bytes per second (k, m, g suffixes), as hammer(8)'s -b.
        const v = value();
        const m = /^(\d+)([kKmMgG]?)$/.exec(v);
        if (!m || Number(m[1]) === 0) throw new UsageError('-b: expected a bandwidth such as 10m');
        ctx.bandwidth = Number(m[1]) * 1024 ** ' kmg'.indexOf(m[2].toLowerCase() || ' ');
      } else throw new UsageError(`Unknown option: ${c}`);
    }
  }
  return { ctx, rest: args.slice(i) };
}

/** Run with `args` (without node and script); resolves to the exit status. */
export async function run(args: string[], io: CliIo = stdio): Promise<number> {
  let ctx: Hammer2Ctx;
  let rest: string[];
  try {
    ({ ctx, rest } = parseGlobal(args, io));
    if (!rest.length) throw new UsageError('Missing command');
    // Options after the directive, where the reference's getopt would stop:
    // accepted for the ones a user naturally writes there.
    const late = rest.slice(1);
    rest = [rest[0]];
    for (let i = 0; i < late.length; i++) {
      const took = late[i] === '--json' || late[i] === '--keep-synced' || rest[0] === 'growfs' ? longOption(ctx, late, i) : 0;
      if (took) i += took - 1;
      else if (late[i] === '-r' && /^(setcomp|setcheck)$/.test(rest[0])) ctx.recurse = true;
      else rest.push(late[i]);
    }
  } catch (e) {
    const msg = (e as Error).message;
    if (msg) io.err(`${msg}\n`);
    io.err(USAGE);
    return msg ? 1 : 0;
  }
  const d = await directive(rest[0]);
  if (!d) {
    io.err(`Unrecognized command: ${rest[0]}\n${USAGE}`);
    return 1;
  }
  try {
    return await d(ctx, rest.slice(1));
  } catch (e) {
    if (e instanceof UsageError) {
      io.err(`${e.message}\n${USAGE}`);
      return e.status;
    }
    if (e instanceof DirectiveError || e instanceof ControlError) {
      io.err(`hammer2: ${e.message}\n`);
      return e instanceof DirectiveError ? e.status : 1;
    }
    io.err(`hammer2: ${(e as Error)?.stack ?? String(e)}\n`);
    return 1;
  }
}

if (require.main === module) {
  run(process.argv.slice(2)).then((code) => process.exit(code));
}
