// The requester's end of the control channel.
import * as net from 'node:net';
import { ControlError, lineReader, Message, Progress } from './protocol';

export class ControlClient {
  private nextId = 1;
  private waiting = new Map<number, { resolve(v: unknown): void; reject(e: Error): void; progress?: (p: Progress) => void }>();
  private closedWith: Error | null = null;

  private constructor(
    readonly file: string,
    private sock: net.Socket,
  ) {
    sock.on(
      'data',
      lineReader(
        (line) => this.onLine(line),
        () => this.fail(new ControlError('EPROTO', 'reply too long')),
        64 << 20,
      ),
    );
    sock.on('error', (e) => this.fail(e));
    sock.on('close', () => this.fail(new ControlError('ECONNRESET', `the daemon behind ${file} went away`)));
  }

  static connect(file: string, timeoutMs = 5000): Promise<ControlClient> {
    return new Promise((resolve, reject) => {
      const sock = net.connect(file);
      const t = setTimeout(() => {
        sock.destroy();
        reject(new ControlError('ETIMEDOUT', `${file}: the daemon does not answer`));
      }, timeoutMs);
      sock.once('connect', () => {
        clearTimeout(t);
        resolve(new ControlClient(file, sock));
      });
      sock.once('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(t);
        const why = e.code === 'ECONNREFUSED' || e.code === 'ENOENT' ? 'no daemon is listening (it was stopped or killed)' : e.message;
        reject(new ControlError(e.code === 'EACCES' ? 'EACCES' : 'ECONNREFUSED', `${file}: ${why}`));
      });
    });
  }

  private onLine(line: string): void {
    let m: Message;
    try {
      m = JSON.parse(line);
    } catch {
      return this.fail(new ControlError('EPROTO', 'malformed reply'));
    }
    const w = this.waiting.get(m.id);
    if (!w) {
      if (m.id === -1 && 'error' in m) this.fail(new ControlError(m.error.code, m.error.message));
      return;
    }
    if ('progress' in m) return w.progress?.(m.progress);
    this.waiting.delete(m.id);
    if (m.ok) w.resolve(m.result);
    else w.reject(new ControlError(m.error.code, m.error.message));
  }

  private fail(e: Error): void {
    if (!this.closedWith) this.closedWith = e;
    for (const w of this.waiting.values()) w.reject(e);
    this.waiting.clear();
  }

  /** Send a request; resolves with its result, rejects with a ControlError. */
  request<T = unknown>(op: string, args: Record<string, unknown> = {}, progress?: (p: Progress) => void): Promise<T> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject, progress });
      this.sock.write(JSON.stringify({ id, op, args }) + '\n');
    });
  }

  close(): void {
    this.sock.end();
    this.sock.destroy();
  }
}
