// mirror-read: walk one committed state of a master PFS and emit what
// changed after `since` as stream records. The walk is the synchronizer's:
// a branch whose modify_tid is not newer than `since` becomes one SKIP
// record (the slave holds it), everything else is descended into, so the
// stream's size follows the change, not the PFS.
import { BlockReader, MediaError } from '../engine';
import { BLOCKREF_BYTES, Blockref, brefKeyEnd, brefRadix, BrefType, decodeBlockrefView, decodeInode, encodeBlockref, encodeInode, inodeBlockset, InodeData, KEY_MAX, OPFLAG_DIRECTDATA } from '../media';
import { encodeRecord, Rec, u64pair } from './stream';

export interface ReadStats {
  records: number;
  /** Blocks read from the master (blocktables, inodes, data). */
  blocksRead: number;
  bytes: number;
}

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
    for (const b of live) visit(b, null, depth);
  };
  const visit = (b: Blockref, raw: Buffer | null, depth: number): void => {
    if (since > 0n && b.modifyTid <= since) return skipped(b.key, brefKeyEnd(b));
    if (b.type === BrefType.INDIRECT) {
      stats.blocksRead++;
      indirect(b, depth + 1);
    } else if (b.type === BrefType.INODE) {
      stats.blocksRead++;
      const ino = reader.readPhysical(b);
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
    for (let i = 0; i < at.length; i++) {
      const o = at[i];
      if (bytes.readBigUInt64LE(o + 0x18) <= since) skipped(keys[i], ends[i]);
      else visit(decodeBlockrefView(bytes, o), bytes.subarray(o, o + BLOCKREF_BYTES), depth);
    }
  };
  out(Rec.ROOT, encodeInode(root));
  table(inodeBlockset(root), 0);
  const end = Buffer.alloc(8);
  end.writeBigUInt64LE(BigInt(stats.records));
  emit(encodeRecord(Rec.END, end));
  return stats;
}
