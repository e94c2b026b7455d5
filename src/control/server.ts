// The daemon's end of the control channel: a unix socket that anyone may
// ask questions of, but through which only root or the mount's owner may
// change the filesystem (checked with the peer's credentials, not trusted
// from the request). Requests of one connection are served in order.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { nativeShim } from '../store/native';
import { pipeRefused } from './pipe';
import { asControlError, ControlError, lineReader, Message, Progress, Request } from './protocol';

export interface Peer {
  pid: number;
  uid: number;
  gid: number;
}

export interface OpContext {
  peer: Peer;
  /** Report progress of a long operation to the requester. */
  progress(p: Progress): void;
  /** Aborted when the requester's connection closes (it exited, or was killed). */
  gone: AbortSignal;
}

export interface ControlOp {
  /** Whether the op changes the filesystem (only root or the owner may send it). */
  changes: boolean;
  run(args: Record<string, unknown>, ctx: OpContext): unknown;
}

export interface ControlServerOptions {
  /** The uid allowed to change the filesystem besides root. */
  owner: number;
  log: (msg: string) => void;
}

function peerOf(sock: net.Socket): Peer | null {
  const fd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
  const shim = nativeShim();
  if (fd === undefined || fd < 0 || !shim?.peerCred) return null;
  const r = shim.peerCred(fd);
  return typeof r === 'number' ? null : { pid: r[0], uid: r[1], gid: r[2] };
}

/** Is a daemon answering on this socket? (A file left by a dead one is not.) */
export function socketAlive(file: string, timeoutMs = 2000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(file);
    const t = setTimeout(() => (s.destroy(), resolve(false)), timeoutMs);
    s.on('connect', () => (clearTimeout(t), s.destroy(), resolve(true)));
    s.on('error', () => (clearTimeout(t), resolve(false)));
  });
}

export class ControlServer {
  private conns = new Set<net.Socket>();

  private constructor(
    readonly file: string,
    private server: net.Server,
  ) {}

  /**
   * Listen on `file`. A socket file left by a daemon that died is replaced;
   * one that answers belongs to a live daemon and is an error.
   */
  static async listen(file: string, ops: Record<string, ControlOp>, o: ControlServerOptions): Promise<ControlServer> {
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
    if (fs.existsSync(file)) {
      if (await socketAlive(file)) throw new Error(`${file}: another daemon is already serving this image`);
      fs.unlinkSync(file);
    }
    const server = net.createServer();
    const cs = new ControlServer(file, server);
    server.on('connection', (sock) => cs.serve(sock, ops, o));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(file, () => resolve());
    });
    // Questions are open to everyone; changes are checked per request.
    fs.chmodSync(file, 0o666);
    server.unref();
    return cs;
  }

  private serve(sock: net.Socket, ops: Record<string, ControlOp>, o: ControlServerOptions): void {
    this.conns.add(sock);
    const gone = new AbortController();
    sock.on('close', () => {
      this.conns.delete(sock);
      gone.abort();
    });
    sock.on('error', () => sock.destroy());
    const peer = peerOf(sock);
    const send = (m: Message) => {
      if (!sock.destroyed) sock.write(JSON.stringify(m) + '\n');
    };
    let queue = Promise.resolve();
    const handle = async (line: string) => {
      let req: Request;
      try {
        req = JSON.parse(line);
        if (typeof req !== 'object' || req === null || typeof req.id !== 'number' || typeof req.op !== 'string') throw new Error('not a request');
      } catch {
        send({ id: -1, ok: false, error: { code: 'EPROTO', message: 'malformed request' } });
        return;
      }
      const op = Object.prototype.hasOwnProperty.call(ops, req.op) ? ops[req.op] : undefined;
      let admitted = false;
      try {
        if (!op) throw new ControlError('EOPNOTSUPP', `unknown request "${req.op}"`);
        if (op.changes) {
          if (!peer) throw new ControlError('EPERM', 'cannot tell who is asking (native shim missing): changes refused');
          if (peer.uid !== 0 && peer.uid !== o.owner) {
            throw new ControlError('EPERM', `uid ${peer.uid} may not change this filesystem (only root or uid ${o.owner})`);
          }
          o.log(`control: ${req.op} from pid ${peer.pid} (uid ${peer.uid})`);
          admitted = true;
        }
        const ctx: OpContext = { peer: peer ?? { pid: 0, uid: -1, gid: -1 }, progress: (p) => send({ id: req.id, progress: p }), gone: gone.signal };
        const result = await op.run(req.args ?? {}, ctx);
        send({ id: req.id, ok: true, result: result ?? null });
      } catch (e) {
        const ce = asControlError(e);
        // A change that failed is worth a line (the requester may be gone and never show it); not
        // a refused asker (anyone may ask), nor a pipe the command will relay instead.
        if (admitted && !pipeRefused(ce)) o.log(`control: ${req.op} failed: ${ce.code}: ${ce.message}`);
        send({ id: req.id, ok: false, error: { code: ce.code, message: ce.message } });
      }
    };
    sock.on(
      'data',
      lineReader(
        (line) => (queue = queue.then(() => handle(line))),
        () => {
          send({ id: -1, ok: false, error: { code: 'EPROTO', message: 'request too long' } });
          sock.destroy();
        },
      ),
    );
  }

  close(): void {
    for (const c of this.conns) c.destroy();
    this.server.close();
    try {
      fs.unlinkSync(this.file);
    } catch {
      /* already gone */
    }
  }
}
