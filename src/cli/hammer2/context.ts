// What every directive of the hammer2 command receives: the global options
// (parsed the way the reference's getopt string "m:rs:t:u:vq" reads them,
// plus --json) and where its output goes.
import { CliIo } from '../io';

export interface Hammer2Ctx {
  io: CliIo;
  /** -s PATH: the filesystem to act on (a mounted path, or IMAGE[@LABEL] where a directive allows it). */
  sel?: string;
  /** -t TYPE for pfs-create (a PfsType value), undefined when not given. */
  pfsType?: number;
  /** -u CLID for pfs-create. */
  uuid?: string;
  /** -m MEM (bytes) for bulkfree. */
  mem?: number;
  /** -b: mirror-stream's bandwidth limit, bytes per second. */
  bandwidth?: number;
  /** --keep-synced NAME: mirror-stream keeps the master state the slave holds as snapshot NAME on the master. */
  keepSynced?: string;
  /** -r: recurse (setcomp/setcheck). */
  recurse: boolean;
  /** -v count minus -q count, as the reference folds them. */
  verbose: number;
  quiet: number;
  /** --size SIZE for growfs (absolute, or +SIZE). */
  size?: string;
  /** --json on listing and status directives. */
  json: boolean;
}

/** A directive: its arguments after the directive name; resolves to the exit status. */
export type Directive = (ctx: Hammer2Ctx, args: string[]) => Promise<number>;

/** A failure a directive reports as "hammer2: message" with this exit status. */
export class DirectiveError extends Error {
  constructor(
    message: string,
    readonly status = 1,
  ) {
    super(message);
  }
}

/** A usage mistake: the message, then the usage text, exit 1 (as the reference's usage(1)). */
export class UsageError extends DirectiveError {}
