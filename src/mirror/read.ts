// mirror-read: walk one committed state of a master PFS and emit what
// changed after `since` as stream records. The walk is the synchronizer's:
// a branch whose modify_tid is not newer than `since` becomes one SKIP
// record (the slave holds it), everything else is descended into, so the
// stream's size follows the change, not the PFS.
import * as fs from 'node:fs';
import { BlockReader, MediaError } from '../engine';
import { BLOCKREF_BYTES, Blockref, brefKeyEnd, brefOffset, brefRadix, BrefType, decodeBlockrefView, decodeInode, encodeBlockref, encodeInode, inodeBlockset, InodeData, KEY_MAX, OPFLAG_DIRECTDATA, PBUFSIZE } from '../media';
import { encodeRecord, Rec, u64pair } from './stream';

/**
 * Reads of the blocks the walk is about to need, issued together on libuv's
 * threads so that the kernel fetches them in parallel; the walk's own
 * (synchronous, one at a time) reads then find them in the page cache. A
 * pass after a small change reads a few thousand scattered blocks of a
 * cold image, and waited for each in turn. The bytes read here are thrown
 * away (the walk verifies what it reads itself): one 64 KiB sink serves
 * every request.
 */
class Readahead {
  private readonly sink = Buffer.allocUnsafe(PBUFSIZE);
  private readonly asked = new Set<number>();
  private inflight = 0;

  constructor(private readonly reader: BlockReader) {}

  /** Start reading the 64 KiB buffer holding `b`'s block (the unit the volume layer reads small blocks in). */
  block(b: Blockref): void {
    // Callbacks run only after the (synchronous) walk: a bound, not a window.
    if (brefRadix(b) === 0 || this.inflight >= 8192) return;
    const off = Number(brefOffset(b));
    const base = off - (off % PBUFSIZE);
    if (this.asked.has(base)) return;
    const v = this.reader.vols.volumes.find((x) => base >= x.offset && base + PBUFSIZE <= x.offset + x.size);
    if (!v) return;
    this.asked.add(base);
    this.inflight++;
    fs.read(v.dev.fd, this.sink, 0, PBUFSIZE, base - v.offset, () => this.inflight--);
  }
}

export interface ReadStats {
  records: number;
  /** Blocks read from the master (blocktables, inodes, data). */
  blocksRead: number;
  bytes: number;
}

/** An unchanged entry of a master table (it becomes part of a SKIP). */
const SKIPPED = {} as Blockref;

/** 2^k - 1: the last key of a range of k key bits, less its first. */
const SPAN = Array.from({ length: 64 }, (_, k) => (1n << BigInt(k)) - 1n);

const brefBytes = (b: Blockref): Buffer => {
  const x = Buffer.alloc(BLOCKREF_BYTES);
  encodeBlockref(b, x, 0);
  return x;
};

/**
 * Emit the records (after the header) that bring a slave synchronized at
 * `since` to the state under `root`. `emit` receives each encoded record.
 */
export function readPfsChanges(reader: BlockReader, root: InodeData, since: bigint, emit: (rec: Buffer) => void): ReadStats {
  // A full stream reads everything in order: the kernel's own readahead serves it.
  const ahead = since > 0n ? new Readahead(reader) : null;
  const stats: ReadStats = { records: 0, blocksRead: 0, bytes: 0 };
  // Skipped branches whose key ranges touch are sent as one SKIP: a 1 %
  // change leaves long runs of untouched neighbours. Ranges with a gap
  // between them stay apart (a key deleted in the gap must not be kept).
  let skip: [bigint, bigint] | null = null;
  const flushSkip = () => {
    if (!skip) return;
    const [lo, hi] = skip;
    skip = null;
    send(Rec.SKIP, u64pair(lo, hi));
  };
  const out = (type: Rec, ...parts: Uint8Array[]) => {
    flushSkip();
    send(type, ...parts);
  };
  const send = (type: Rec, ...parts: Uint8Array[]) => {
    const r = encodeRecord(type, ...parts);
    stats.records++;
    stats.bytes += r.length;
    emit(r);
  };
  const table = (set: readonly Blockref[], depth: number): void => {
    if (depth > 64) throw new MediaError('master tree too deep (loop?)');
    out(Rec.TABLE, u64pair(0n, KEY_MAX));
    walk(set, 0);
    out(Rec.TABLE_END); // (a pending SKIP goes out first)
  };
  const skipped = (key: bigint, end: bigint): void => {
    if (skip && skip[1] !== KEY_MAX && skip[1] + 1n === key) skip[1] = end;
    else {
      flushSkip();
      skip = [key, end];
    }
  };
  const walk = (set: readonly Blockref[], depth: number): void => {
    if (depth > 64) throw new MediaError('master tree too deep (loop?)');
    const live = set.filter((b) => b.type !== BrefType.EMPTY).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    if (ahead) for (const b of live) if (b.modifyTid > since) ahead.block(b);
    for (const b of live) visit(b, null, depth);
  };
  const visit = (b: Blockref, raw: Buffer | null, depth: number, inode?: Buffer): void => {
    if (since > 0n && b.modifyTid <= since) return skipped(b.key, brefKeyEnd(b));
    if (b.type === BrefType.INDIRECT) {
      stats.blocksRead++;
      indirect(b, depth + 1);
    } else if (b.type === BrefType.INODE) {
      stats.blocksRead++;
      const ino = inode ?? reader.readPhysical(b);
      out(Rec.INODE, raw ?? brefBytes(b), ino);
      const ip = decodeInode(ino);
      if (!(ip.meta.opFlags & OPFLAG_DIRECTDATA)) table(inodeBlockset(ip), depth + 1);
    } else {
      const bytes = brefRadix(b) !== 0 ? reader.readPhysical(b) : Buffer.alloc(0);
      if (bytes.length) stats.blocksRead++;
      out(Rec.LEAF, raw ?? brefBytes(b), bytes);
    }
  };
  /**
   * An indirect block of the master. After a small change nearly all of
   * its entries are older than `since` and become SKIPs: those are read
   * from the verified block in place (key, key bits, modify_tid) rather
   * than decoded into objects, which cost the walk of a tree of 100 000
   * inodes more than its reads. The table is checked as readTable checks
   * it first; one that is not in key order, or not sound, goes through
   * readTable (which sorts it, or says what is wrong).
   */
  const indirect = (b: Blockref, depth: number): void => {
    if (depth > 64) throw new MediaError('master tree too deep (loop?)');
    if (since === 0n) return walk(reader.readTable(b).live, depth);
    const bytes = reader.readPhysical(b);
    const lo = b.key;
    const hi = brefKeyEnd(b);
    const at: number[] = [];
    const keys: bigint[] = [];
    const ends: bigint[] = [];
    let prev = -1n;
    for (let o = 0; o + BLOCKREF_BYTES <= bytes.length; o += BLOCKREF_BYTES) {
      if (bytes[o] === BrefType.EMPTY) continue;
      const kb = bytes[o + 3];
      const key = bytes.readBigUInt64LE(o + 8);
      const end = kb >= 64 ? KEY_MAX : key + SPAN[kb];
      if (kb > 64 || key < lo || end > hi || key <= prev) return walk(reader.readTable(b).live, depth);
      prev = end;
      at.push(o);
      keys.push(key);
      ends.push(end);
    }
    const changed: Blockref[] = [];
    for (let i = 0; i < at.length; i++) {
      const o = at[i];
      changed.push(bytes.readBigUInt64LE(o + 0x18) <= since ? SKIPPED : decodeBlockrefView(bytes, o));
    }
    // Two levels at once: this table's changed blocks, then (once those
    // are in) the blocks below its changed inodes, which a depth-first
    // walk would otherwise wait for one inode at a time.
    const inodes: (Buffer | undefined)[] = [];
    if (ahead) {
      for (const c of changed) if (c !== SKIPPED) ahead.block(c);
      for (let i = 0; i < changed.length; i++) {
        const c = changed[i];
        if (c === SKIPPED || c.type !== BrefType.INODE) continue;
        const ip = decodeInode((inodes[i] = reader.readPhysical(c)));
        if (ip.meta.opFlags & OPFLAG_DIRECTDATA) continue;
        for (const d of inodeBlockset(ip)) if (d.type !== BrefType.EMPTY && d.modifyTid > since) ahead.block(d);
      }
    }
    for (let i = 0; i < at.length; i++) {
      const o = at[i];
      if (changed[i] === SKIPPED) skipped(keys[i], ends[i]);
      else visit(changed[i], bytes.subarray(o, o + BLOCKREF_BYTES), depth, inodes[i]);
    }
  };
  out(Rec.ROOT, encodeInode(root));
  table(inodeBlockset(root), 0);
  const end = Buffer.alloc(8);
  end.writeBigUInt64LE(BigInt(stats.records));
  emit(encodeRecord(Rec.END, end));
  return stats;
}
