// mirror-write: apply a stream's records to a slave PFS, through the slave
// image's own writer, inside one commit of the slave: nothing the stream
// carries is visible until its END record has arrived and checked, and a
// stream refused half way leaves the slave as it was (the commit is rolled
// back). Records are pushed one at a time (from a pipe, or straight from a
// local mirror-read), so the applier keeps only the open blocktables of the
// current path, not the stream.
//
// Without a writer the applier is a dry run: it reads what applying would
// read of the slave (the tables on every changed path, the old copies of
// changed directories) into the pass's PassTables and writes nothing. A
// mounted slave's daemon runs it while the stream arrives, so the commit at
// its end finds the slave's tables in memory instead of reading them then.
import { applyUpdates, BlockReader, BlockWriter, inodeCheck, LeafUpdate, lookupKey, padTable, prepareTable, TreeContext, writeInode } from '../engine';
import {
  BLOCKREF_BYTES,
  Blockref,
  brefBytes,
  brefCheck,
  brefRadix,
  BrefType,
  decodeBlockref,
  decodeInode,
  inodeBlockset,
  InodeData,
  KEY_MAX,
  ObjType,
  OPFLAG_DIRECTDATA,
  SET_COUNT,
  setInodeBlockset,
  verifyCheck,
} from '../media';
import { copyInode, leavesIn, unskipped } from '../sync';
import { Rec, StreamError } from './stream';
import { PASS_TABLE_BYTES, PassTables } from './tables';

interface TableCtx {
  kind: 'table';
  lo: bigint;
  hi: bigint;
  /** The slave's blockset this table replaces (read when first needed). */
  dstSet: () => Blockref[];
  skips: [bigint, bigint][];
  keys: Set<bigint>;
  updates: LeafUpdate[];
  /** The inode whose tree this is (null: the PFS root's). */
  owner: InodeCtx | null;
  /** Check method of new blocktables. */
  check: number;
  isDir: boolean;
}

interface InodeCtx {
  kind: 'inode';
  bref: Blockref;
  src: InodeData;
  /** The table the inode is in. */
  parent: TableCtx;
}

export interface ApplyStats {
  leaves: number;
  inodes: number;
  deleted: number;
  /** Inode numbers rewritten (a mounted slave's kernel caches of them are dropped). */
  changed: bigint[];
}

export class StreamApplier {
  private stack: (TableCtx | InodeCtx)[] = [];
  private srcRoot: InodeData | null = null;
  private rootTable: Blockref[] | null = null;
  readonly stats: ApplyStats = { leaves: 0, inodes: 0, deleted: 0, changed: [] };
  done = false;
  /** Where the slave's tree is read from: `reader`, through what this pass already read. */
  readonly tables: PassTables;

  /** `writer` null: a dry run (see above). `tables`: what a dry run of this stream read. */
  constructor(
    reader: BlockReader,
    private readonly writer: BlockWriter | null,
    private readonly dstRoot: InodeData,
    tables?: PassTables,
  ) {
    this.tables = tables ?? new PassTables(reader, PASS_TABLE_BYTES);
  }

  private top(): TableCtx | InodeCtx | undefined {
    return this.stack[this.stack.length - 1];
  }

  private table(): TableCtx {
    const t = this.top();
    if (!t || t.kind !== 'table') throw new StreamError('record outside a blocktable');
    return t;
  }

  push(type: Rec, p: Buffer): void {
    if (this.done) throw new StreamError('records after END');
    switch (type) {
      case Rec.ROOT: {
        if (this.srcRoot || p.length !== 1024) throw new StreamError('misplaced or malformed ROOT record');
        this.srcRoot = decodeInode(Buffer.from(p));
        return;
      }
      case Rec.TABLE: {
        if (!this.srcRoot || p.length !== 16) throw new StreamError('misplaced or malformed TABLE record');
        const t = this.top();
        let dstSet: () => Blockref[];
        let owner: InodeCtx | null = null;
        let check: number;
        let isDir: boolean;
        if (!t) {
          if (this.rootTable) throw new StreamError('a second root table');
          const set = inodeBlockset(this.dstRoot);
          dstSet = () => set;
          check = inodeCheck(this.srcRoot);
          isDir = false;
        } else if (t.kind === 'inode') {
          owner = t;
          let set: Blockref[] | null = null;
          dstSet = () => (set ??= this.dstBlockset(t));
          check = inodeCheck(t.src);
          isDir = t.src.meta.type === ObjType.DIRECTORY;
        } else throw new StreamError('a blocktable inside a blocktable');
        this.stack.push({ kind: 'table', lo: p.readBigUInt64LE(0), hi: p.readBigUInt64LE(8), dstSet, skips: [], keys: new Set(), updates: [], owner, check, isDir });
        return;
      }
      case Rec.SKIP: {
        if (p.length !== 16) throw new StreamError('malformed SKIP record');
        this.table().skips.push([p.readBigUInt64LE(0), p.readBigUInt64LE(8)]);
        return;
      }
      case Rec.LEAF: {
        const t = this.table();
        if (!this.writer) {
          // A dry run needs the key only (the block is checked when applied).
          const key = p.length >= BLOCKREF_BYTES ? p.readBigUInt64LE(8) : 0n;
          t.updates.push({ key, bref: null });
          t.keys.add(key);
          return;
        }
        const { bref, bytes } = this.leafOf(p);
        if (bref.type === BrefType.INODE || bref.type === BrefType.INDIRECT) throw new StreamError('LEAF record holds a blocktable or inode');
        const nb = bytes.length ? this.writer.copyBlock(bref, bytes) : this.writer.copyRef(bref);
        t.updates.push({ key: bref.key, bref: nb });
        t.keys.add(bref.key);
        this.stats.leaves++;
        return;
      }
      case Rec.INODE: {
        const t = this.table();
        const { bref, bytes } = this.writer ? this.leafOf(p) : { bref: decodeBlockref(p, 0), bytes: p.subarray(BLOCKREF_BYTES) };
        if (bref.type !== BrefType.INODE || bytes.length !== 1024) throw new StreamError('malformed INODE record');
        const src = decodeInode(bytes);
        const ic: InodeCtx = { kind: 'inode', bref, src, parent: t };
        this.stack.push(ic);
        // Embedded data: no tree follows.
        if (src.meta.opFlags & OPFLAG_DIRECTDATA) this.finishInode(ic, null);
        return;
      }
      case Rec.TABLE_END:
        this.finishTable(this.table());
        return;
      case Rec.END:
        if (this.stack.length || !this.rootTable || !this.srcRoot) throw new StreamError('END before the stream is complete');
        this.done = true;
        return;
      default:
        throw new StreamError(`unknown record type ${type}`);
    }
  }

  /** A blockref and its block's bytes, the bytes verified against the blockref's check code. */
  private leafOf(p: Buffer): { bref: Blockref; bytes: Buffer } {
    if (p.length < BLOCKREF_BYTES) throw new StreamError('record too short for a blockref');
    const bref = decodeBlockref(p, 0);
    // A view: payloads are never reused, and a block queued for writing keeps its record's bytes.
    const bytes = p.subarray(BLOCKREF_BYTES);
    if (bytes.length) {
      if (brefRadix(bref) === 0 || brefBytes(bref) !== bytes.length) throw new StreamError(`block of ${bytes.length} bytes for a blockref of another size`);
      if (!verifyCheck(brefCheck(bref), bref.check, bytes)) throw new StreamError(`block at key ${bref.key.toString(16)} fails its check code`);
    } else if (brefRadix(bref) !== 0 && bref.type !== BrefType.DIRENT) {
      throw new StreamError('a blockref without its block');
    }
    return { bref, bytes };
  }

  /**
   * The slave's tree of the inode `ic` replaces: its blockset, or none (a
   * new inode, or one with embedded data). Read only when needed: the
   * slave's copy of a changed inode is one random read of a cold block.
   */
  private dstBlockset(ic: InodeCtx): Blockref[] {
    const d = lookupKey(this.tables, ic.parent.dstSet(), ic.bref.key);
    if (!d || d.key !== ic.bref.key || d.type !== BrefType.INODE) return [];
    const dst = decodeInode(this.tables.readPhysical(d));
    return dst.meta.opFlags & OPFLAG_DIRECTDATA ? [] : inodeBlockset(dst);
  }

  private finishTable(t: TableCtx): void {
    // An inode's table sent whole (nothing skipped) replaces the slave's
    // tree of that inode outright: the new tree is built from what was
    // sent, and the old one, like every block a pass replaces, is left for
    // bulkfree, without reading it. (Its leaves are not counted as removed.)
    const whole = t.owner !== null && t.skips.length === 0 && t.lo === 0n && t.hi === KEY_MAX;
    const base = whole ? [] : t.dstSet();
    if (!whole) {
      for (const [k] of leavesIn(this.tables, base, unskipped(t.skips, t.lo, t.hi))) {
        if (t.keys.has(k)) continue;
        t.updates.push({ key: k, bref: null });
        this.stats.deleted++;
      }
    }
    t.updates.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    if (!this.writer) {
      // The tree update reads the tables on the path of every key it changes: read them now.
      if (!whole) {
        const top = prepareTable(base, 0n, KEY_MAX);
        for (const u of t.updates) lookupKey(this.tables, top, u.key);
      }
      this.stack.pop();
      if (t.owner) this.finishInode(t.owner, null);
      else this.rootTable = base;
      return;
    }
    for (let i = 1; i < t.updates.length; i++) if (t.updates[i].key === t.updates[i - 1].key) throw new StreamError('a key sent twice in one blocktable');
    const w = this.writer;
    const ctx: TreeContext = {
      reader: this.tables,
      indirectBytes: (depth) => (depth === 0 && t.isDir ? 4096 : 16384),
      writeIndirect: (key, keybits, table) => w.writeIndirect(key, keybits, table, t.check),
    };
    const table = padTable(t.updates.length ? applyUpdates(ctx, base, SET_COUNT, t.updates) : base.filter((b) => b.type !== BrefType.EMPTY), SET_COUNT);
    this.stack.pop();
    if (t.owner) this.finishInode(t.owner, table);
    else this.rootTable = table;
  }

  private finishInode(ic: InodeCtx, table: Blockref[] | null): void {
    let b = ic.bref;
    if (this.writer) {
      const out = copyInode(ic.src);
      if (table) setInodeBlockset(out, table);
      b = writeInode(this.writer, out, ic.bref.key, table ?? [], ic.bref.flags);
    }
    this.stack.pop();
    const parent = this.table();
    parent.updates.push({ key: ic.bref.key, bref: b });
    parent.keys.add(ic.bref.key);
    this.stats.inodes++;
    this.stats.changed.push(ic.bref.key);
  }

  /** The slave's new root: the master's attributes, the slave's identity, the new tree. */
  root(): InodeData {
    if (!this.done) throw new StreamError('the stream did not end');
    const r = copyInode(this.srcRoot!);
    const keep = this.dstRoot.meta;
    r.meta.pfsFsid = Buffer.from(keep.pfsFsid);
    r.meta.pfsClid = Buffer.from(keep.pfsClid);
    r.meta.pfsType = keep.pfsType;
    r.meta.pfsSubtype = keep.pfsSubtype;
    r.meta.nameKey = keep.nameKey;
    r.meta.nameLen = keep.nameLen;
    r.meta.iparent = keep.iparent;
    r.filename = Buffer.from(this.dstRoot.filename);
    setInodeBlockset(r, this.rootTable!);
    return r;
  }
}
