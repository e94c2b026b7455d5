// mirror-read: walk one committed state of a master PFS and emit what
// changed after `since` as stream records. The walk is the synchronizer's:
// a branch whose modify_tid is not newer than `since` becomes one SKIP
// record (the slave holds it), everything else is descended into, so the
// stream's size follows the change, not the PFS.
import { BlockReader, MediaError, PreparedTable } from '../engine';
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
 * The records (after the header, END included) that bring a slave
 * synchronized at `since` to the state under `root`, in batches: the walk
 * goes on only as far as its consumer pulls, so a daemon can stream a pass
 * in slices between its other requests. `stats` is kept up to date.
 * (Leaves and skipped branches are handled without a generator of their
 * own, and batches leave only between entries: resuming a deep chain of
 * generators once per record cost the walk a third more.)
 */
export function* pfsChangeRecords(reader: BlockReader, root: InodeData, since: bigint, stats: ReadStats): Generator<Buffer[], void, undefined> {
  let batch: Buffer[] = [];
  let batchBytes = 0;
  // Skipped branches whose key ranges touch are sent as one SKIP: a 1 %
  // change leaves long runs of untouched neighbours. Ranges with a gap
  // between them stay apart (a key deleted in the gap must not be kept).
  let skip: [bigint, bigint] | null = null;
  const send = (type: Rec, ...parts: Uint8Array[]) => {
    const r = encodeRecord(type, ...parts);
    stats.records++;
    stats.bytes += r.length;
    batch.push(r);
    batchBytes += r.length;
  };
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
  const skipped = (key: bigint, end: bigint): void => {
    if (skip && skip[1] !== KEY_MAX && skip[1] + 1n === key) skip[1] = end;
    else {
      flushSkip();
      skip = [key, end];
    }
  };
  /** A skipped branch or a leaf, sent here; false for what must be descended into. */
  const flat = (b: Blockref, raw: Buffer | null): boolean => {
    if (since > 0n && b.modifyTid <= since) skipped(b.key, brefKeyEnd(b));
    else if (b.type === BrefType.INDIRECT || b.type === BrefType.INODE) return false;
    else {
      const bytes = brefRadix(b) !== 0 ? reader.readPhysical(b) : Buffer.alloc(0);
      if (bytes.length) stats.blocksRead++;
      out(Rec.LEAF, raw ?? brefBytes(b), bytes);
    }
    return true;
  };
  function* table(set: readonly Blockref[], depth: number): Generator<Buffer[], void, undefined> {
    if (depth > 64) throw new MediaError('master tree too deep (loop?)');
    out(Rec.TABLE, u64pair(0n, KEY_MAX));
    const live = set.filter((b) => b.type !== BrefType.EMPTY).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    for (const b of live) if (!flat(b, null)) yield* descend(b, null, 0);
    out(Rec.TABLE_END); // (a pending SKIP goes out first)
  }
  /** An indirect block or an inode that changed after `since`. */
  function* descend(b: Blockref, raw: Buffer | null, depth: number): Generator<Buffer[], void, undefined> {
    stats.blocksRead++;
    if (b.type === BrefType.INDIRECT) return yield* indirect(b, depth + 1);
    const ino = reader.readPhysical(b);
    out(Rec.INODE, raw ?? brefBytes(b), ino);
    const ip = decodeInode(ino);
    if (!(ip.meta.opFlags & OPFLAG_DIRECTDATA)) yield* table(inodeBlockset(ip), depth + 1);
  }
  /**
   * An indirect block of the master. After a small change nearly all of
   * its entries are older than `since` and become SKIPs: their key range
   * and modify_tid are read from the table in place (readTable checks and
   * orders it without decoding entries); only the entries walked into are
   * decoded.
   */
  function* indirect(b: Blockref, depth: number): Generator<Buffer[], void, undefined> {
    if (depth > 64) throw new MediaError('master tree too deep (loop?)');
    const t = reader.readTable(b);
    for (let i = 0; i < t.count; ) {
      i = scan(t, i);
      // (Read before descending: the walk below sets it again.)
      if (descendAt) {
        yield* descend(t.at(i), t.slot(i), depth);
        i++;
      }
      if (batch.length >= 128 || batchBytes >= BATCH_BYTES) {
        yield batch;
        batch = [];
        batchBytes = 0;
      }
    }
  }
  /**
   * Entries of `t` from `i` on that need no descent (skipped, leaves), up
   * to the next that does (descendAt set) or until the batch is full (a
   * table of 64 KiB data blocks is 32 MiB: its leaves go out in batches,
   * so that a slice of a daemon's walk stays short). The index to go on at.
   */
  let descendAt = false;
  const scan = (t: PreparedTable, i: number): number => {
    descendAt = false;
    for (; i < t.count && batchBytes < BATCH_BYTES; i++) {
      const slot = t.slot(i);
      const modified = slot ? rawBrefModifyTid(slot, 0) : t.at(i).modifyTid;
      if (since > 0n && modified <= since) skipped(t.keyAt(i), t.endAt(i));
      else if (!flat(t.at(i), slot)) {
        descendAt = true;
        return i;
      }
    }
    return i;
  };
  out(Rec.ROOT, encodeInode(root));
  yield* table(inodeBlockset(root), 0);
  const end = Buffer.alloc(8);
  end.writeBigUInt64LE(BigInt(stats.records));
  batch.push(encodeRecord(Rec.END, end));
  yield batch;
}

/** Bytes of records a batch holds at most (past a record that crosses it). */
const BATCH_BYTES = 1 << 20;

export const newReadStats = (): ReadStats => ({ records: 0, blocksRead: 0, bytes: 0 });

/**
 * Emit the records (after the header) that bring a slave synchronized at
 * `since` to the state under `root`. `emit` receives each encoded record.
 */
export function readPfsChanges(reader: BlockReader, root: InodeData, since: bigint, emit: (rec: Buffer) => void): ReadStats {
  const stats = newReadStats();
  for (const batch of pfsChangeRecords(reader, root, since, stats)) for (const r of batch) emit(r);
  return stats;
}
