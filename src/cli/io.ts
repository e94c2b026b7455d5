// Where a command's output goes (apart from commander, so that a command
// that parses its own arguments, such as hammer2, loads nothing more).
export interface CliIo {
  out: (s: string) => void;
  err: (s: string) => void;
  /** A terminal is watching (progress bars). */
  tty?: boolean;
}

export const stdio: CliIo = {
  out: (s) => process.stdout.write(s),
  err: (s) => process.stderr.write(s),
  tty: !!process.stderr.isTTY,
};
