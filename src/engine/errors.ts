// Errors from the media: a block that fails its check, a tree that is not
// shaped like one, a value out of range. Each maps to EIO for the caller.

export class MediaError extends Error {
  override name = 'MediaError';
  readonly errno = 'EIO';
  constructor(
    msg: string,
    /** Media offset of the offending block, when known. */
    readonly offset?: bigint,
  ) {
    super(msg);
  }
}

export class FsError extends Error {
  override name = 'FsError';
  constructor(
    readonly errno: string,
    msg?: string,
  ) {
    super(msg ?? errno);
  }
}

export const hex = (n: bigint | number): string => '0x' + n.toString(16).padStart(16, '0');
