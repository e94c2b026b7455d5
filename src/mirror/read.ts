// mirror-read: walk one committed state of a master PFS and emit what
// changed after `since` as stream records. The walk is the synchronizer's:
// a branch whose modify_tid is not newer than `since` becomes one SKIP
// record (the slave holds it), everything else is descended into, so the
// stream's size follows the change, not the PFS.
import { BlockReader, MediaError } from '../engine';
import { BLOCKREF_BYTES, Blockref, brefKeyEnd, brefRadix, BrefType, decodeInode, encodeBlockref, encodeInode, inodeBlockset, InodeData, KEY_MAX, OPFLAG_DIRECTDATA } from '../media';
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
  const walk = (set: readonly Blockref[], depth: number): void => {
    if (depth > 64) throw new MediaError('master tree too deep (loop?)');
    const live = set.filter((b) => b.type !== BrefType.EMPTY).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    for (const b of live) {
      if (since > 0n && b.modifyTid <= since) {
        const end = brefKeyEnd(b);
        if (skip && skip[1] !== KEY_MAX && skip[1] + 1n === b.key) skip[1] = end;
        else {
          flushSkip();
          skip = [b.key, end];
        }
        continue;
      }
      if (b.type === BrefType.INDIRECT) {
        stats.blocksRead++;
        walk(reader.readTable(b).live, depth + 1);
      } else if (b.type === BrefType.INODE) {
        stats.blocksRead++;
        const raw = reader.readPhysical(b);
        out(Rec.INODE, brefBytes(b), raw);
        const ip = decodeInode(raw);
        if (!(ip.meta.opFlags & OPFLAG_DIRECTDATA)) table(inodeBlockset(ip), depth + 1);
      } else {
        const bytes = brefRadix(b) !== 0 ? reader.readPhysical(b) : Buffer.alloc(0);
        if (bytes.length) stats.blocksRead++;
        out(Rec.LEAF, brefBytes(b), bytes);
      }
    }
  };
  out(Rec.ROOT, encodeInode(root));
  table(inodeBlockset(root), 0);
  const end = Buffer.alloc(8);
  end.writeBigUInt64LE(BigInt(stats.records));
  emit(encodeRecord(Rec.END, end));
  return stats;
}
