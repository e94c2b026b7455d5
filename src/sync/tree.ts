// The synchronizer: bring one node's copy of a PFS level with another's.
//
// HAMMER2 trees on different nodes hold the same logical items (inodes by
// number, directory entries by hash key, file blocks by offset) at different
// media offsets, under indirect blocks that need not have the same shape. So
// the comparison is by key, never by offset, and it is bounded by transaction
// ids: every block a commit writes carries that commit's modify_tid, and a
// blocktable is rewritten whenever anything below it is, so a source branch
// whose modify_tid is not newer than the target's synchronized tid (`since`)
// holds nothing the target lacks. The walk skips such branches whole and
// only descends where something changed, as hammer2_synchro.c does.
//
// A pass produces, for the target's PFS root, the leaf updates its trees
// need (new leaves copied byte for byte, so check codes carry over;
// deletions for target leaves the source no longer has) and applies them
// with the copy-on-write engine through the target's own writer and
// allocator. Target branches that fail to read (a bad check, an I/O error)
// are replaced whole from the source: that is how a damaged copy heals.
//
// A pass can stop early (a byte budget) and resume from a cursor, so a
// large resynchronization runs in bounded steps between other work.
import {
  applyUpdates,
  BlockReader,
  BlockWriter,
  inodeCheck,
  LeafUpdate,
  MediaError,
  padTable,
  prepareTable,
  scanRange,
  TableSource,
  TreeContext,
  writeInode,
} from '../engine';
import {
  Blockref,
  brefCheck,
  brefKeyEnd,
  brefRadix,
  BrefType,
  CheckMethod,
  decodeInode,
  DIRHASH_VISIBLE,
  encodeInode,
  inodeBlockset,
  InodeData,
  KEY_MAX,
  ObjType,
  OPFLAG_DIRECTDATA,
  SET_COUNT,
  setInodeBlockset,
} from '../media';

/** Where a stopped pass resumes: a key in a table, and for an inode leaf at exactly that key, the place inside it. */
export interface SyncCursor {
  key: bigint;
  /** The inode at `key` is being copied whole (its target had no tree): resume without skipping. */
  full?: boolean;
  inner?: SyncCursor;
}

export interface SyncStats {
  /** Blocks read from the source (blocktables, inodes, data). */
  srcBlocksRead: number;
  /** Blocks read from the target. */
  dstBlocksRead: number;
  /** Blocks written to the target. */
  blocksWritten: number;
  bytesWritten: number;
  /** Leaves (data blocks, directory entries, inodes) copied or rewritten. */
  leavesCopied: number;
  leavesDeleted: number;
  /** Target branches that failed to read and were replaced from the source. */
  healed: number;
}

/**
 * The source failed to read (not the target): the pass cannot go on past
 * it. Names the damaged item: inode `inum`, and in its tree data key `key`.
 */
export class SourceError extends MediaError {
  override name = 'SourceError';
  constructor(
    msg: string,
    readonly inum: bigint,
    readonly key?: bigint,
  ) {
    super(`source: ${msg}`);
  }
}

export const emptyStats = (): SyncStats => ({
  srcBlocksRead: 0,
  dstBlocksRead: 0,
  blocksWritten: 0,
  bytesWritten: 0,
  leavesCopied: 0,
  leavesDeleted: 0,
  healed: 0,
});

export interface SyncSide {
  reader: BlockReader;
  /** Bytes of a block this side has just written itself (trusted, no read-back), if it still has them. */
  peek?: (dataOff: bigint) => Uint8Array | undefined;
}

export interface SyncTarget extends SyncSide {
  writer: BlockWriter;
}

export interface SyncOptions {
  /** The target holds the source's state as of this transaction id (0: nothing is known to match). */
  since: bigint;
  /** Resume a stopped pass. */
  from?: SyncCursor;
  /** Stop (at a leaf boundary) once this many bytes were written; the result then has a cursor. */
  budgetBytes?: number;
  /**
   * A repair instead of a pass: only these inodes (by number) are looked
   * at; for each, the named data keys are rewritten even where the leaves
   * look equal (their blocks failed to read), or with no keys named the
   * whole inode is compared leaf by leaf (its inode or a blocktable failed).
   */
  force?: Map<bigint, Set<bigint> | null>;
  stats?: SyncStats;
  /** Called for every target branch that failed to read (it is replaced). */
  onHeal?: (what: string) => void;
}

export interface PfsSyncResult {
  /** The target PFS root inode to write (source attributes, target identity, new blockset). */
  root: InodeData;
  /** Whether anything was written or deleted (the root must be committed). */
  changed: boolean;
  /** Null when the pass reached the end. */
  next: SyncCursor | null;
}

/** Leaves collected per step of a table walk before the step is processed (bounds memory). */
const STEP_LEAVES = 2048;

type IndirectPolicy = (depth: number) => number;

type Item = { leaf: Blockref } | { skip: [bigint, bigint] };

const isNode = (t: number) => t === BrefType.INDIRECT;

class Pass {
  readonly stats: SyncStats;
  private written0: number;
  /** Target indirect blocks that failed to read, by data_off: treated as empty so the source's leaves replace them. */
  private broken = new Set<bigint>();

  constructor(
    private readonly src: SyncSide,
    private readonly dst: SyncTarget,
    private readonly opts: SyncOptions,
  ) {
    this.stats = opts.stats ?? emptyStats();
    this.written0 = dst.writer.bytesWritten;
    this.blocks0 = dst.writer.blocksWritten;
  }
  private blocks0: number;

  /** Depth of work that must finish in this step (a broken range being replaced). */
  private unbudgeted = 0;

  private overBudget(): boolean {
    if (this.unbudgeted > 0) return false;
    const b = this.opts.budgetBytes;
    return b !== undefined && this.dst.writer.bytesWritten - this.written0 >= b;
  }

  /** A blocktable of the source tree of inode `inum` (0: the PFS index). */
  private srcTable(b: Blockref, inum: bigint): Blockref[] {
    this.stats.srcBlocksRead++;
    return this.fromSource(() => this.src.reader.readTable(b).entries(), inum, b.key);
  }

  /** A read of the source: its failure is the source's damage, told apart from the target's. */
  private fromSource<T>(read: () => T, inum: bigint, key: bigint): T {
    try {
      return read();
    } catch (e) {
      if (!(e instanceof MediaError)) throw e;
      // In the index, the item is the inode at that key; in an inode's tree, that data key.
      throw inum === 0n ? new SourceError(e.message, key) : new SourceError(e.message, inum, key);
    }
  }

  /**
   * Source items of [lo, hi] in key order: changed leaves, and skip ranges
   * for branches not newer than `since`. Stops after STEP_LEAVES leaves;
   * returns the last key covered.
   */
  private walkSrc(set: readonly Blockref[], lo: bigint, hi: bigint, since: bigint, out: Item[], inum: bigint): bigint {
    let count = 0;
    let covered = hi;
    const visit = (table: readonly Blockref[], depth: number): boolean => {
      if (depth > 64) throw new MediaError('source tree too deep (loop?)');
      for (const b of table) {
        if (b.type === BrefType.EMPTY) continue;
        const end = brefKeyEnd(b);
        if (end < lo) continue;
        if (b.key > hi) break;
        if (since > 0n && b.modifyTid <= since) {
          out.push({ skip: [b.key < lo ? lo : b.key, end > hi ? hi : end] });
          continue;
        }
        if (isNode(b.type)) {
          if (visit(this.srcTable(b, inum), depth + 1)) return true;
          continue;
        }
        if (count >= STEP_LEAVES) {
          covered = b.key - 1n;
          return true;
        }
        out.push({ leaf: b });
        count++;
      }
      return false;
    };
    visit(sortedLive(set), 0);
    return covered;
  }

  /**
   * Target leaves in [lo, hi], tolerating branches that fail to read: those
   * are recorded as broken (with their key ranges) and skipped.
   */
  private walkDst(set: readonly Blockref[], lo: bigint, hi: bigint, leaves: Map<bigint, Blockref>, broken: [bigint, bigint][]): void {
    const visit = (table: readonly Blockref[], depth: number): void => {
      if (depth > 64) throw new MediaError('target tree too deep (loop?)');
      for (const b of table) {
        if (b.type === BrefType.EMPTY) continue;
        const end = brefKeyEnd(b);
        if (end < lo) continue;
        if (b.key > hi) break;
        if (!isNode(b.type)) {
          leaves.set(b.key, b);
          continue;
        }
        if (this.broken.has(b.dataOff)) continue;
        let child: readonly Blockref[];
        try {
          this.stats.dstBlocksRead++;
          child = this.dst.reader.readTable(b).entries();
        } catch (e) {
          if (!(e instanceof MediaError)) throw e;
          this.broken.add(b.dataOff);
          broken.push([b.key, end]);
          this.stats.healed++;
          this.opts.onHeal?.(`indirect block at key ${b.key.toString(16)}/${b.keybits}: ${e.message}`);
          continue;
        }
        visit(child, depth + 1);
      }
    };
    visit(sortedLive(set), 0);
  }

  /** The target reader as the engine's apply sees it: broken blocktables read as empty. */
  private dstContext(owner: InodeData | null, policy: IndirectPolicy): TreeContext {
    const r = this.dst.reader;
    const check = owner ? inodeCheck(owner) : CheckMethod.XXHASH64;
    return {
      reader: {
        readBlockrefs: (b) => {
          if (this.broken.has(b.dataOff)) return [];
          this.stats.dstBlocksRead++;
          return r.readBlockrefs(b);
        },
      },
      indirectBytes: policy,
      writeIndirect: (key, keybits, table) => this.dst.writer.writeIndirect(key, keybits, table, check),
    };
  }

  /**
   * Updates that make the target table `dstSet` hold what the source table
   * `srcSet` holds. `inum` names the inode owning the tables (0 for a PFS
   * root's index), for forced rewrites and messages.
   */
  syncTable(
    srcSet: readonly Blockref[],
    dstSet: readonly Blockref[],
    since: bigint,
    from: SyncCursor | undefined,
    inum: bigint,
    ranges: [bigint, bigint][] = [[0n, KEY_MAX]],
    forced?: Set<bigint>,
  ): { updates: LeafUpdate[]; next: SyncCursor | null } {
    const updates: LeafUpdate[] = [];
    let inner = from?.inner;
    // Named ranges (a repair) are looked at whatever their tids say.
    const walkSince = ranges.length === 1 && ranges[0][0] === 0n && ranges[0][1] === KEY_MAX ? since : 0n;
    for (const [rlo, rhi] of ranges) {
      let lo = from && from.key > rlo ? from.key : rlo;
      while (lo <= rhi) {
        const items: Item[] = [];
        const covered = this.walkSrc(srcSet, lo, rhi, walkSince, items, inum);
        // Target leaves of the ranges that changed.
        const dstLeaves = new Map<bigint, Blockref>();
        const broken: [bigint, bigint][] = [];
        for (const [a, b] of changedRanges(items, lo, covered)) this.walkDst(dstSet, a, b, dstLeaves, broken);
        // A broken target branch lost everything in its range: take all of
        // the source's leaves there, changed or not.
        if (broken.length) {
          for (const [a, b] of broken) {
            const full: Item[] = [];
            this.walkSrcAll(srcSet, a, b, full, inum);
            mergeItems(items, full, a, b);
            // Route at least one update into the broken block so that it is replaced (or dropped).
            if (!full.length) updates.push({ key: a, bref: null });
          }
        }
        let stopAt: bigint | null = null;
        const srcKeys = new Set<bigint>();
        // A broken range is replaced in one step: stopping inside it would lose what it held.
        const inBroken = (k: bigint) => broken.some(([a, b]) => k >= a && k <= b);
        for (const it of items) {
          if (!('leaf' in it)) continue;
          const s = it.leaf;
          srcKeys.add(s.key);
          const replacing = inBroken(s.key);
          if (this.overBudget() && !replacing) {
            stopAt = s.key;
            break;
          }
          const d = dstLeaves.get(s.key) ?? null;
          if (s.type === BrefType.INODE) {
            // Inside a broken range everything it held is rewritten now, nested trees included.
            if (replacing) this.unbudgeted++;
            let r: { bref: Blockref | null; next: SyncCursor | null };
            try {
              r = this.syncInode(s, d, since, inner && s.key === lo ? inner : undefined);
            } finally {
              if (replacing) this.unbudgeted--;
            }
            inner = undefined;
            if (r.bref) updates.push({ key: s.key, bref: r.bref });
            if (r.next) {
              return { updates: finish(updates, dstLeaves, srcKeys, lo, s.key - 1n, this.stats), next: { key: s.key, inner: r.next } };
            }
            continue;
          }
          if (d && sameLeaf(s, d) && !forced?.has(s.key)) continue;
          updates.push({ key: s.key, bref: this.copyLeaf(s, inum) });
        }
        if (stopAt !== null) {
          return { updates: finish(updates, dstLeaves, srcKeys, lo, stopAt - 1n, this.stats), next: { key: stopAt } };
        }
        finish(updates, dstLeaves, srcKeys, lo, covered, this.stats);
        if (covered >= rhi) break;
        lo = covered + 1n;
      }
    }
    updates.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    return { updates: dedupe(updates), next: null };
  }

  /** Every source leaf of [lo, hi] (no skipping). */
  private walkSrcAll(set: readonly Blockref[], lo: bigint, hi: bigint, out: Item[], inum: bigint): void {
    const visit = (table: readonly Blockref[], depth: number): void => {
      if (depth > 64) throw new MediaError('source tree too deep (loop?)');
      for (const b of table) {
        if (b.type === BrefType.EMPTY) continue;
        if (brefKeyEnd(b) < lo) continue;
        if (b.key > hi) break;
        if (isNode(b.type)) visit(this.srcTable(b, inum), depth + 1);
        else out.push({ leaf: b });
      }
    };
    visit(sortedLive(set), 0);
  }

  /** Copy one data block or directory entry into the target. */
  private copyLeaf(s: Blockref, inum: bigint): Blockref {
    this.stats.leavesCopied++;
    if (brefRadix(s) === 0) return this.dst.writer.copyRef(s);
    const kept = this.src.peek?.(s.dataOff);
    if (kept) return this.dst.writer.copyBlock(s, Buffer.from(kept.buffer, kept.byteOffset, kept.byteLength));
    this.stats.srcBlocksRead++;
    return this.dst.writer.copyBlock(s, this.fromSource(() => this.src.reader.readPhysical(s), inum, s.key));
  }

  /** The target's inode at `d`, or null when it is missing or unreadable (then rebuilt whole). */
  private readDstInode(d: Blockref | null): InodeData | null {
    if (!d || d.type !== BrefType.INODE) return null;
    try {
      this.stats.dstBlocksRead++;
      return decodeInode(this.dst.reader.readPhysical(d));
    } catch (e) {
      if (!(e instanceof MediaError)) throw e;
      this.stats.healed++;
      this.opts.onHeal?.(`inode ${d.key}: ${e.message}`);
      return null;
    }
  }

  /** Bring one inode (its attributes and its tree) level; returns the new target bref, or null if it already matched. */
  syncInode(s: Blockref, d: Blockref | null, since: bigint, from: SyncCursor | undefined): { bref: Blockref | null; next: SyncCursor | null } {
    this.stats.srcBlocksRead++;
    const srcIp = this.fromSource(() => decodeInode(this.src.reader.readPhysical(s)), 0n, s.key);
    const dstIp = this.readDstInode(d);
    const out = copyInode(srcIp);
    let next: SyncCursor | null = null;
    // A repair that names the inode rewrites its block, whatever a cached read of it says.
    let changed = !dstIp || !sameAttributes(srcIp, dstIp) || (this.opts.force?.get(s.key) === null);
    if (!(srcIp.meta.opFlags & OPFLAG_DIRECTDATA)) {
      const hasTree = !!dstIp && !(dstIp.meta.opFlags & OPFLAG_DIRECTDATA);
      const dstSet = hasTree ? inodeBlockset(dstIp) : [];
      // A repair names this inode: its named blocks are rewritten, or (no
      // blocks named) its whole tree is compared leaf by leaf.
      const f = this.opts.force;
      const keys = f?.has(s.key) ? f.get(s.key) : undefined;
      const ranges: [bigint, bigint][] | undefined = keys?.size ? [...keys].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0)).map((k) => [k, k]) : undefined;
      // A resumed inode copied whole goes on without skipping; one whose
      // target is gone since the cursor was taken starts over.
      const resume = hasTree ? from : undefined;
      const innerSince = !hasTree || resume?.full || (f?.has(s.key) && !ranges) ? 0n : since;
      const r = this.syncTable(inodeBlockset(srcIp), dstSet, innerSince, resume, s.key, ranges, keys ?? undefined);
      if (r.next && innerSince === 0n && since !== 0n) r.next.full = true;
      next = r.next;
      let table = dstSet;
      if (r.updates.length) {
        const policy: IndirectPolicy = (depth) => (depth === 0 && srcIp.meta.type === ObjType.DIRECTORY ? 4096 : 16384);
        table = applyUpdates(this.dstContext(srcIp, policy), dstSet, SET_COUNT, r.updates);
        changed = true;
      }
      setInodeBlockset(out, padTable([...table], SET_COUNT));
    }
    if (!changed) return { bref: null, next };
    this.stats.leavesCopied++;
    return { bref: writeInode(this.dst.writer, out, s.key, inodeBlockset(out), s.flags), next };
  }

  /** The PFS root: attributes from the source, identity (ids, name, type) from the target. */
  /** Fold the writer's counters into the stats. */
  close(): void {
    this.stats.blocksWritten += this.dst.writer.blocksWritten - this.blocks0;
    this.stats.bytesWritten += this.dst.writer.bytesWritten - this.written0;
  }

  syncRoot(srcRoot: InodeData, dstRoot: InodeData, since: bigint): PfsSyncResult {
    const f = this.opts.force;
    let ranges: [bigint, bigint][] | undefined = f ? [...f.keys()].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0)).map((k) => [k, k]) : undefined;
    // The root directory's own entries share the root's tree (at the hash
    // keys): a repair naming the root directory compares all of them.
    if (ranges && f!.has(1n)) ranges = [...ranges.filter(([k]) => k < DIRHASH_VISIBLE), [DIRHASH_VISIBLE, KEY_MAX]];
    // Named root-level leaves (entries of the root directory) are rewritten even where they look equal.
    const r = this.syncTable(inodeBlockset(srcRoot), inodeBlockset(dstRoot), since, this.opts.from, 0n, ranges, f ? new Set(f.keys()) : undefined);
    const root = copyInode(srcRoot);
    const m = root.meta;
    const keep = dstRoot.meta;
    m.pfsFsid = Buffer.from(keep.pfsFsid);
    m.pfsClid = Buffer.from(keep.pfsClid);
    m.pfsType = keep.pfsType;
    m.pfsSubtype = keep.pfsSubtype;
    m.nameKey = keep.nameKey;
    m.nameLen = keep.nameLen;
    m.iparent = keep.iparent;
    root.filename = Buffer.from(dstRoot.filename);
    let table = inodeBlockset(dstRoot);
    if (r.updates.length) {
      table = applyUpdates(this.dstContext(srcRoot, () => 16384), table, SET_COUNT, r.updates);
    }
    setInodeBlockset(root, padTable([...table], SET_COUNT));
    const changed = r.updates.length > 0 || !encodeInode(root).equals(encodeInode(dstRoot));
    return { root, changed, next: r.next };
  }
}

/**
 * One synchronization pass (or step of one) over a PFS: the source root
 * inode's trees against the target's. Writes the changed target blocks
 * through `dst.writer` (the caller commits them, with the returned root,
 * as one transaction of the target image).
 */
export function syncPfs(src: SyncSide, srcRoot: InodeData, dst: SyncTarget, dstRoot: InodeData, opts: SyncOptions): PfsSyncResult {
  const p = new Pass(src, dst, opts);
  try {
    return p.syncRoot(srcRoot, dstRoot, opts.since);
  } finally {
    p.close();
  }
}

/**
 * The transaction id a node's copy of a PFS is known to match its source
 * at: its root bref's modify_tid, which a pass sets only when it completes
 * (while a pass is under way it keeps the tid the pass started from). A
 * node whose tree is empty has never been synchronized: 0.
 */
export function syncedTid(rootBref: Blockref, root: InodeData): bigint {
  if (inodeBlockset(root).every((b) => b.type === BrefType.EMPTY)) return 0n;
  return rootBref.modifyTid;
}

// ------------------------------------------------------------------ helpers

function sortedLive(set: readonly Blockref[]): Blockref[] {
  const live = set.filter((b) => b.type !== BrefType.EMPTY);
  live.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return live;
}

/** The parts of [lo, hi] not covered by skip items. */
function changedRanges(items: Item[], lo: bigint, hi: bigint): [bigint, bigint][] {
  const out: [bigint, bigint][] = [];
  let at = lo;
  for (const it of items) {
    if (!('skip' in it)) continue;
    const [a, b] = it.skip;
    if (a > at) out.push([at, a - 1n]);
    if (b + 1n > at) at = b + 1n;
  }
  if (at <= hi) out.push([at, hi]);
  return out;
}

/** Replace what `items` holds in [a, b] with `full` (the same range, unskipped). */
function mergeItems(items: Item[], full: Item[], a: bigint, b: bigint): void {
  const keep = items.filter((it) => {
    if ('leaf' in it) return it.leaf.key < a || it.leaf.key > b;
    return it.skip[1] < a || it.skip[0] > b;
  });
  // A skip range that straddles [a, b] keeps its outer parts.
  for (const it of items) {
    if (!('skip' in it)) continue;
    const [x, y] = it.skip;
    if (x < a && y >= a) keep.push({ skip: [x, a - 1n] });
    if (y > b && x <= b) keep.push({ skip: [b + 1n, y] });
  }
  keep.push(...full);
  keep.sort((p, q) => {
    const kp = 'leaf' in p ? p.leaf.key : p.skip[0];
    const kq = 'leaf' in q ? q.leaf.key : q.skip[0];
    return kp < kq ? -1 : kp > kq ? 1 : 0;
  });
  items.length = 0;
  items.push(...keep);
}

/** Delete target leaves of [lo, hi] the source does not have (outside broken ranges, whose contents are gone anyway). */
function finish(
  updates: LeafUpdate[],
  dstLeaves: Map<bigint, Blockref>,
  srcKeys: Set<bigint>,
  lo: bigint,
  hi: bigint,
  stats: SyncStats,
): LeafUpdate[] {
  for (const [k] of dstLeaves) {
    if (k < lo || k > hi || srcKeys.has(k)) continue;
    updates.push({ key: k, bref: null });
    stats.leavesDeleted++;
  }
  updates.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return dedupe(updates);
}

/** One update per key (the last one wins: a copy after a forced delete). */
function dedupe(updates: LeafUpdate[]): LeafUpdate[] {
  const out: LeafUpdate[] = [];
  for (const u of updates) {
    if (out.length && out[out.length - 1].key === u.key) {
      if (u.bref || !out[out.length - 1].bref) out[out.length - 1] = u;
    } else out.push(u);
  }
  return out;
}

/**
 * Whether two leaves hold the same item: same type, range, methods and
 * size, and the same check code (for entries, the same name and head).
 * Without a check code there is nothing to compare cheaply: not equal.
 */
export function sameLeaf(a: Blockref, b: Blockref): boolean {
  if (a.type !== b.type || a.key !== b.key || a.keybits !== b.keybits || a.methods !== b.methods) return false;
  if (brefRadix(a) !== brefRadix(b)) return false;
  if (a.type === BrefType.DIRENT) return a.embed.equals(b.embed) && a.check.equals(b.check);
  if (brefCheck(a) === CheckMethod.NONE || brefCheck(a) === CheckMethod.DISABLED) return false;
  return a.check.equals(b.check);
}

export function copyInode(ip: InodeData): InodeData {
  const c = decodeInode(Buffer.from(encodeInode(ip)));
  return c;
}

/** Attributes and embedded data equal (the blockset aside). */
function sameAttributes(a: InodeData, b: InodeData): boolean {
  const ea = encodeInode(a);
  const eb = encodeInode(b);
  if (a.meta.opFlags & OPFLAG_DIRECTDATA || b.meta.opFlags & OPFLAG_DIRECTDATA) return ea.equals(eb);
  // The blockset is the last 512 bytes (the union area); compare the rest.
  return ea.subarray(0, ea.length - 512).equals(eb.subarray(0, eb.length - 512));
}

/** The parts of [lo, hi] not covered by `skips` (sorted, non-overlapping). */
export function unskipped(skips: [bigint, bigint][], lo: bigint, hi: bigint): [bigint, bigint][] {
  return changedRanges(
    skips.map((k) => ({ skip: k })),
    lo,
    hi,
  );
}

/**
 * Every leaf of a blocktable tree with keys in the given ranges, by key (a
 * damaged blocktable throws). Each range is found by binary search in each
 * table on its path: a mirroring pass asks for a thousand narrow ranges of
 * a tree of a hundred thousand leaves.
 */
export function leavesIn(reader: TableSource, set: readonly Blockref[], ranges: [bigint, bigint][]): Map<bigint, Blockref> {
  const out = new Map<bigint, Blockref>();
  // Checked and ordered once, not once a range.
  const top = prepareTable(set, 0n, KEY_MAX);
  for (const [lo, hi] of ranges) {
    scanRange(reader, top, lo, hi, (b) => {
      out.set(b.key, b);
      return false;
    });
  }
  return out;
}
