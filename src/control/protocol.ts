// The control channel's wire format: one JSON object per line, both ways.
//   request   {"id":1,"op":"pfs-list","args":{...}}
//   progress  {"id":1,"progress":{"done":N,"total":N,"what":"..."}}   (any number)
//   reply     {"id":1,"ok":true,"result":...} or {"id":1,"ok":false,"error":{"code":"EEXIST","message":"..."}}
// BigInts travel as decimal strings; Buffers as base64 strings: each op says which.

export const PROTOCOL_VERSION = 1;

export interface Request {
  id: number;
  op: string;
  args?: Record<string, unknown>;
}

export interface Progress {
  done: number;
  total: number;
  what?: string;
}

export interface ReplyError {
  /** An errno name (EEXIST, EPERM, ...) or EPROTO for a malformed request. */
  code: string;
  message: string;
}

export type Message =
  | { id: number; progress: Progress }
  | { id: number; ok: true; result: unknown }
  | { id: number; ok: false; error: ReplyError };

/** An error carried back to the requester with its errno name. */
export class ControlError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Splits a byte stream into lines; each complete one goes to `onLine`. Lines over `max` bytes are refused. */
export function lineReader(onLine: (line: string) => void, onTooLong: () => void, max = 1 << 20): (chunk: Buffer) => void {
  let buf = '';
  return (chunk) => {
    buf += chunk.toString('utf8');
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.trim()) onLine(line);
    }
    if (buf.length > max) {
      buf = '';
      onTooLong();
    }
  };
}

/** Any error as the channel carries it: its errno name (FsError.errno, a system error's code) or EIO. */
export function asControlError(e: unknown): ControlError {
  if (e instanceof ControlError) return e;
  const o = e as { errno?: unknown; code?: unknown; message?: unknown };
  const code = typeof o?.errno === 'string' ? o.errno : o?.code;
  return new ControlError(typeof code === 'string' && /^E[A-Z]+$/.test(code) ? code : 'EIO', String(o?.message ?? e));
}
