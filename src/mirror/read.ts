// mirror-read: walk one committed state of a master PFS and emit what
// changed after `since` as stream records. The walk is the synchronizer's:
// a branch whose modify_tid is not newer than `since` becomes one SKIP
// record (the slave holds it), everything else is descended into, so the
// stream's size follows the change, not the PFS.
import { BlockReader, MediaError } from '../engine';
import { BLOCKREF_BYTES, Blockref, brefKeyEnd, brefRadix, BrefType, decodeInode, encodeBlockref, encodeInode, inodeBlockset, InodeData, KEY_MAX, OPFLAG_DIRECTDATA, rawBrefModifyTid } from '../media';
import { encodeRecord, Rec, u64pair } from './stream';

export interface ReadStats {
  records: number;
  /** Blocks read from the master (blocktables, inodes, data). */
  blocksRead: number;
  bytes: number;
}

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
   * its entries are older than `since` and become SKIPs: their key range
   * and modify_tid are read from the table in place (readTable checks and
   * orders it without decoding entries); only the entries walked into are
   * decoded.
   */
  const indirect = (b: Blockref, depth: number): void => {
    if (depth > 64) throw new MediaError('master tree too deep (loop?)');
    const t = reader.readTable(b);
    for (let i = 0; i < t.count; i++) {
      const slot = t.slot(i);
      const modified = slot ? rawBrefModifyTid(slot, 0) : t.at(i).modifyTid;
      if (since > 0n && modified <= since) skipped(t.keyAt(i), t.endAt(i));
      else visit(t.at(i), slot, depth);
    }
  };
  out(Rec.ROOT, encodeInode(root));
  table(inodeBlockset(root), 0);
  const end = Buffer.alloc(8);
  end.writeBigUInt64LE(BigInt(stats.records));
  emit(encodeRecord(Rec.END, end));
  return stats;
}
