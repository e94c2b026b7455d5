// The slave's blocktables and inodes a mirroring pass reads, kept for the
// length of the pass. Applying a stream reads the slave's inode index three
// times (deletions in unskipped ranges, the old copy of a changed
// directory, the paths its updates rewrite), and a mounted slave reads the
// whole index ahead while the stream arrives (see StreamApplier's dry
// run): at 100 000 inodes the decoded index is larger than the block
// cache, so without this each table was read from media and decoded again.
// Entries are found only by a bref with the same data_off and check code,
// as BlockReader's own cache finds them, so a stale entry is never used.
import { BlockReader, PreparedTable, prepareTable, TableSource } from '../engine';
import { Blockref, brefBytes, brefKeyEnd, BrefType } from '../media';

/** The pass's default budget: the inode index of well over 200 000 inodes (tables read in place). */
export const PASS_TABLE_BYTES = 48 << 20;

interface Entry {
  check8: bigint;
  methods: number;
  table?: PreparedTable;
  brefs?: Blockref[];
  bytes?: Buffer;
}

/** What a decoded table is charged: as BlockReader charges one (the block and ~400 bytes per live entry). */
const tableCost = (b: Blockref, live: number) => brefBytes(b) + 64 + live * 400;

export class PassTables implements TableSource {
  private memo = new Map<number, Entry>();
  private charged = 0;
  hits = 0;
  misses = 0;

  /** `budget`: bytes (charged as the block cache charges them) kept at most; past it, reads go to `reader` only. */
  constructor(
    readonly reader: BlockReader,
    private readonly budget: number,
  ) {}

  private entry(b: Blockref): Entry | undefined {
    const e = this.memo.get(Number(b.dataOff));
    if (e && e.check8 === b.check.readBigUInt64LE(0) && e.methods === b.methods) return e;
    return undefined;
  }

  private keep(b: Blockref, cost: number): Entry | undefined {
    let e = this.entry(b);
    if (e) return e;
    if (this.charged + cost > this.budget) return undefined;
    this.charged += cost;
    e = { check8: b.check.readBigUInt64LE(0), methods: b.methods };
    this.memo.set(Number(b.dataOff), e);
    return e;
  }

  readTable(b: Blockref): PreparedTable {
    const e = this.entry(b);
    if (e?.table) {
      this.hits++;
      return e.table;
    }
    if (e?.brefs) {
      this.hits++;
      return (e.table = prepareTable(e.brefs, b.key, brefKeyEnd(b), b.dataOff));
    }
    this.misses++;
    const t = this.reader.readTable(b);
    // Read in place: its block and keys (tree updates read entries from it too).
    const k = this.keep(b, brefBytes(b) + 64 + t.overhead);
    if (k) k.table = t;
    return t;
  }

  readBlockrefs(b: Blockref): Blockref[] {
    const e = this.entry(b);
    if (e?.brefs) {
      this.hits++;
      return e.brefs;
    }
    if (e?.table) {
      // Its live entries, which is all a reader of a table uses.
      this.hits++;
      return e.table.entries();
    }
    this.misses++;
    const r = this.reader.readBlockrefs(b);
    let live = 0;
    for (const x of r) if (x.type !== BrefType.EMPTY) live++;
    const k = this.keep(b, tableCost(b, live));
    if (k) k.brefs = r;
    return r;
  }

  /** A block's verified bytes; inodes are kept (the block cache does not keep them), other blocks are not. */
  readPhysical(b: Blockref): Buffer {
    if (b.type !== BrefType.INODE) return this.reader.readPhysical(b);
    const e = this.entry(b);
    if (e?.bytes) {
      this.hits++;
      return e.bytes;
    }
    this.misses++;
    const bytes = this.reader.readPhysical(b);
    const k = this.keep(b, bytes.length + 64);
    if (k) k.bytes = bytes;
    return bytes;
  }
}
