// Plumbing shared by the tools that run in-process for tests (newfs, fsck):
// where output goes, and commander set up to report usage errors as
// "prog: message" and return an exit status instead of exiting.
import { Command, CommanderError } from 'commander';
import { CliIo } from './io';

export { stdio } from './io';
export type { CliIo } from './io';

/** Finish a tool's Command: -h, no guessing, errors through `io`, no process.exit. */
export function toolCommand(program: Command, prog: string, io: CliIo): Command {
  return program
    .helpOption('-h, --help', 'show this help')
    .showSuggestionAfterError(false)
    .exitOverride()
    .configureOutput({
      writeOut: io.out,
      writeErr: (s) => io.err(s.startsWith('error: ') ? `${prog}: ${s.slice(7)}` : s),
    });
}

/**
 * Parse `args`; null when they parsed, otherwise the exit status to return
 * (0 after --help, `usageStatus` for a usage error).
 */
export function parseArgs(program: Command, args: string[], usageStatus: number): number | null {
  try {
    program.parse(args, { from: 'user' });
    return null;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : usageStatus;
    throw e;
  }
}

const STRERROR: Record<string, string> = {
  EPERM: 'Operation not permitted',
  ENOENT: 'No such file or directory',
  EIO: 'Input/output error',
  EACCES: 'Permission denied',
  EBUSY: 'Device or resource busy',
  EEXIST: 'File exists',
  ENOTDIR: 'Not a directory',
  EISDIR: 'Is a directory',
  EINVAL: 'Invalid argument',
  ENOSPC: 'No space left on device',
  EROFS: 'Read-only file system',
  ENOTEMPTY: 'Directory not empty',
  EOPNOTSUPP: 'Operation not supported',
  ENOTCONN: 'Transport endpoint is not connected',
};

/** strerror(3)'s text for an errno name, as the reference tools print it; the name itself if unknown. */
export const strerror = (code: string | undefined): string => (code && STRERROR[code]) || code || 'Unknown error';
