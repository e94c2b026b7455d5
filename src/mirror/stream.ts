// The mirror stream (format version 1, docs/notes/mirror-stream.md): what a
// master PFS changed after a transaction id, as a sequence of checked
// records, so that it can cross a pipe or a network and be applied to a
// slave PFS on another image or host.
//
//   header:  "H2MIRROR" u32 version  u32 flags  16 bytes cluster id
//            u64 since  u64 to  u16 label length  label  u32 crc32c
//   record:  u8 type  3 bytes zero  u32 payload length  payload  u32 crc32c
//            (the crc covers type through payload)
// All integers little-endian. The stream ends with an END record; anything
// after it, a bad crc, an unknown type or a short read is refused.
import * as fs from 'node:fs';
import { crc32cUpdate } from '../media';

export const STREAM_MAGIC = Buffer.from('H2MIRROR', 'latin1');
export const STREAM_VERSION = 1;
/** Records larger than this are refused (a block is at most 64 KiB plus its blockref). */
const MAX_PAYLOAD = 1 << 20;

export enum Rec {
  /** The master PFS root inode (1 KiB): attributes and inode allocator. */
  ROOT = 1,
  /** A blocktable walk begins: u64 lo, u64 hi (the key range it covers). */
  TABLE = 2,
  /** The current blocktable walk ends. */
  TABLE_END = 3,
  /** Keys [u64 lo, u64 hi] of the current table are unchanged since `since`. */
  SKIP = 4,
  /** A changed leaf: its 128-byte blockref, then the block's bytes (none for a short directory entry). */
  LEAF = 5,
  /** A changed inode: its 128-byte blockref, then the 1 KiB inode; a TABLE of its tree follows unless its data is embedded. */
  INODE = 6,
  /** The end: u64 records before it. */
  END = 7,
}

export interface StreamHeader {
  clid: Buffer;
  label: string;
  /** The slave must hold the master's state as of this tid (0: a full stream). */
  since: bigint;
  /** The master's tid the stream brings the slave to. */
  to: bigint;
}

export class StreamError extends Error {
  override name = 'StreamError';
}

export function encodeHeader(h: StreamHeader): Buffer {
  const label = Buffer.from(h.label, 'utf8');
  const b = Buffer.alloc(8 + 4 + 4 + 16 + 8 + 8 + 2 + label.length + 4);
  let o = STREAM_MAGIC.copy(b, 0);
  o = b.writeUInt32LE(STREAM_VERSION, o);
  o = b.writeUInt32LE(0, o);
  o += h.clid.copy(b, o);
  o = b.writeBigUInt64LE(h.since, o);
  o = b.writeBigUInt64LE(h.to, o);
  o = b.writeUInt16LE(label.length, o);
  o += label.copy(b, o);
  b.writeUInt32LE(crc32cUpdate(0, b, 0, o), o);
  return b;
}

export function encodeRecord(type: Rec, ...parts: Uint8Array[]): Buffer {
  let len = 0;
  for (const p of parts) len += p.length;
  const b = Buffer.alloc(8 + len + 4);
  b[0] = type;
  b.writeUInt32LE(len, 4);
  let o = 8;
  for (const p of parts) {
    b.set(p, o);
    o += p.length;
  }
  b.writeUInt32LE(crc32cUpdate(0, b, 0, o), o);
  return b;
}

export const u64pair = (a: bigint, b: bigint): Buffer => {
  const x = Buffer.alloc(16);
  x.writeBigUInt64LE(a, 0);
  x.writeBigUInt64LE(b, 8);
  return x;
};

/** Where stream bytes come from, synchronously: exactly `n` bytes, or fewer only at the end. */
export interface ByteSource {
  read(n: number): Buffer;
}

/** Parse a stream: the header, then records one by one (each checked). */
export class StreamParser {
  private ended = false;
  count = 0;

  constructor(private readonly src: ByteSource) {}

  private exact(n: number, what: string): Buffer {
    const b = this.src.read(n);
    if (b.length !== n) throw new StreamError(`the stream is truncated (in ${what})`);
    return b;
  }

  header(): StreamHeader {
    const fixed = this.src.read(8 + 4 + 4 + 16 + 8 + 8 + 2);
    if (fixed.length === 0) throw new StreamError('the stream is empty');
    if (fixed.length < 8 || !fixed.subarray(0, 8).equals(STREAM_MAGIC)) throw new StreamError('not a HAMMER2 mirror stream (bad magic)');
    if (fixed.length < 50) throw new StreamError('the stream is truncated (in its header)');
    const version = fixed.readUInt32LE(8);
    if (version !== STREAM_VERSION) throw new StreamError(`mirror stream version ${version}; this hammer2 reads version ${STREAM_VERSION}`);
    const llen = fixed.readUInt16LE(48);
    const rest = this.exact(llen + 4, 'its header');
    const all = Buffer.concat([fixed, rest]);
    const crc = all.readUInt32LE(all.length - 4);
    if (crc32cUpdate(0, all, 0, all.length - 4) !== crc) throw new StreamError('the stream header fails its check');
    return {
      clid: Buffer.from(all.subarray(16, 32)),
      since: all.readBigUInt64LE(32),
      to: all.readBigUInt64LE(40),
      label: all.subarray(50, 50 + llen).toString('utf8'),
    };
  }

  /** The next record, or null after END (nothing may follow it). */
  next(): { type: Rec; payload: Buffer } | null {
    if (this.ended) return null;
    const head = this.src.read(8);
    if (head.length === 0) throw new StreamError('the stream ends before its END record (truncated)');
    if (head.length < 8) throw new StreamError('the stream is truncated (in a record header)');
    const type = head[0];
    const len = head.readUInt32LE(4);
    if (type < Rec.ROOT || type > Rec.END || head[1] || head[2] || head[3]) throw new StreamError(`bad record (type ${type}) after ${this.count} records`);
    if (len > MAX_PAYLOAD) throw new StreamError(`record of ${len} bytes after ${this.count} records`);
    const body = this.exact(len + 4, 'a record');
    let crc = crc32cUpdate(0, head);
    crc = crc32cUpdate(crc, body, 0, len);
    if (crc !== body.readUInt32LE(len)) throw new StreamError(`record ${this.count + 1} fails its check (corrupted stream)`);
    const payload = body.subarray(0, len);
    if (type === Rec.END) {
      if (len !== 8 || payload.readBigUInt64LE(0) !== BigInt(this.count)) throw new StreamError(`END record counts ${len === 8 ? payload.readBigUInt64LE(0) : '?'} records, ${this.count} came`);
      this.ended = true;
      if (this.src.read(1).length) throw new StreamError('bytes after the END record');
      return { type, payload };
    }
    this.count++;
    return { type, payload };
  }
}

/** A whole stream already parsed and checked (a daemon's read-ahead kept its records): header, then every record through END. */
export interface ParsedStream {
  header: StreamHeader;
  records: { type: Rec; payload: Buffer }[];
}

/** Bytes from memory (tests, mirror-copy). */
export class BufferSource implements ByteSource {
  private at = 0;
  constructor(private readonly buf: Buffer) {}
  read(n: number): Buffer {
    const b = this.buf.subarray(this.at, this.at + n);
    this.at += b.length;
    return b;
  }
}

const nap = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/** Blocking reads of a file descriptor (a pipe, stdin, a FIFO; one that is non-blocking is waited on). */
export class FdSource implements ByteSource {
  // Read ahead in large chunks: a record is a few small reads, and one
  // system call each would dominate the cost of applying a stream.
  private buf = Buffer.alloc(0);
  private at = 0;
  private eof = false;
  constructor(private readonly fd: number) {}

  private fill(): void {
    const chunk = Buffer.allocUnsafe(1 << 20);
    for (;;) {
      let r: number;
      try {
        r = fs.readSync(this.fd, chunk, 0, chunk.length, null);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EAGAIN') {
          nap(2);
          continue;
        }
        throw e;
      }
      if (r === 0) this.eof = true;
      this.buf = Buffer.concat([this.buf.subarray(this.at), chunk.subarray(0, r)]);
      this.at = 0;
      return;
    }
  }

  read(n: number): Buffer {
    while (this.buf.length - this.at < n && !this.eof) this.fill();
    const end = Math.min(this.buf.length, this.at + n);
    // A copy: callers keep payloads (blocks pending their commit), not the chunk.
    const out = Buffer.from(this.buf.subarray(this.at, end));
    this.at = end;
    return out;
  }
}

/**
 * Bytes appended as they arrive; reads take what is there (a StreamFeeder
 * asks only for what is). Chunks are kept as they came: a read within one
 * is a view, one across several copies just its own bytes, so every byte
 * is copied at most once however the chunks cut the records.
 */
class QueueSource implements ByteSource {
  private chunks: Buffer[] = [];
  private at = 0;
  available = 0;
  append(chunk: Buffer): void {
    if (!chunk.length) return;
    this.chunks.push(chunk);
    this.available += chunk.length;
  }
  /** Bytes [o, o + n) ahead of the read position, without consuming them. */
  private peek(o: number, n: number): Buffer {
    const out = Buffer.alloc(n);
    let skip = this.at + o;
    let got = 0;
    for (const c of this.chunks) {
      if (skip >= c.length) {
        skip -= c.length;
        continue;
      }
      got += c.copy(out, got, skip, Math.min(c.length, skip + n - got));
      skip = 0;
      if (got === n) break;
    }
    return out;
  }
  /** The byte at offset o ahead of the read position (o < available). */
  private byteAt(o: number): number {
    let skip = this.at + o;
    for (const c of this.chunks) {
      if (skip < c.length) return c[skip];
      skip -= c.length;
    }
    return 0;
  }
  peekU32(o: number): number {
    return (this.byteAt(o) | (this.byteAt(o + 1) << 8) | (this.byteAt(o + 2) << 16)) + this.byteAt(o + 3) * 0x1000000;
  }
  peekU16(o: number): number {
    return this.byteAt(o) | (this.byteAt(o + 1) << 8);
  }
  read(n: number): Buffer {
    n = Math.min(n, this.available);
    let out: Buffer;
    const first = this.chunks[0];
    if (first && this.at + n <= first.length) out = first.subarray(this.at, this.at + n);
    else out = this.peek(0, n);
    // Consume n bytes.
    let left = n;
    while (left > 0) {
      const c = this.chunks[0];
      const take = Math.min(left, c.length - this.at);
      this.at += take;
      left -= take;
      if (this.at === c.length) {
        this.chunks.shift();
        this.at = 0;
      }
    }
    this.available -= n;
    return out;
  }
}

/**
 * A stream parsed as its bytes arrive, without blocking: push() each chunk,
 * and every record complete so far goes to `onRecord` (checked as
 * StreamParser checks it; a bad one throws). Payloads are views of the
 * chunks: copy what is kept.
 */
export class StreamFeeder {
  private readonly q = new QueueSource();
  private readonly parser = new StreamParser(this.q);
  header: StreamHeader | null = null;
  ended = false;
  /** Bytes pushed after the END record (a stream that goes on past its end is refused). */
  trailing = 0;

  constructor(private readonly onRecord: (type: Rec, payload: Buffer, header: StreamHeader) => void) {}

  push(chunk: Buffer): void {
    if (this.ended) {
      this.trailing += chunk.length;
      return;
    }
    this.q.append(chunk);
    for (;;) {
      const n = this.q.available;
      if (!this.header) {
        if (n < 50 || n < 54 + this.q.peekU16(48)) return;
        this.header = this.parser.header();
        continue;
      }
      // A length past the limit is refused by the parser at once.
      if (n < 8 || (this.q.peekU32(4) <= MAX_PAYLOAD && n < 12 + this.q.peekU32(4))) return;
      const r = this.parser.next()!;
      if (r.type === Rec.END) this.ended = true;
      this.onRecord(r.type, r.payload, this.header);
      if (this.ended) return;
    }
  }
}
