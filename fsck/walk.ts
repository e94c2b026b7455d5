// Walking the trees of one volume-header zone: the freemap from
// freemap_blockset, the filesystem from sroot_blockset (super-root -> PFS
// roots -> inode index, directories, files). Every blockref is checked the
// way the reference fsck_hammer2 checks it (type, size radix, readable
// media, check code), and beyond: where its block may lie (inside the
// volume, not across a 64 KiB buffer, not in reserved areas), what may
// appear where (a DATA block under a directory, a DIRENT with an inode-index
// key), key order, overlap and nesting of every blocktable, inode and entry
// contents. Problems are reported and, for the zone a repair would keep,
// recorded as a plan: which blockrefs to drop or fix, which tables to sort.
//
// Memory: the walk is depth first and holds one path of decoded tables.
// Blocks referenced are marked in a window bitmap; shared subtrees (other
// zones, snapshots) are skipped through a fixed-size cache.
import {
  Blockref,
  brefKeyEnd,
  BREF_FLAG_PFSROOT,
  BrefType,
  CHECK_NAMES,
  decodeBlockrefView,
  decodeInode,
  dirhash,
  DIRHASH_LOMASK,
  DIRHASH_VISIBLE,
  direntHead,
  EMBEDDED_BYTES,
  INODE_BYTES,
  InodeData,
  ObjType,
  OPFLAG_DIRECTDATA,
  OPFLAG_PFSROOT,
  PfsType,
  verifyCheck,
  VolumeHeader,
} from '../src/media';
import { freemapSlot } from '../src/engine';
import { VolumeSet } from '../src/store';
import { BlockBits } from './bitmap';
import { NSTATS, SeenCache } from './cache';
import { brefInfo, Finding, hex16, Report } from './findings';
import { knownObjType, PfsNamespace } from './namespace';

export const GIB = 2 ** 30;
export const SEG = 4 * 1024 * 1024;
const K64 = 65536;
const K16 = 16384;
const MAX_FILE_SIZE = 2n ** 63n - 1n;
const MAX_DEPTH = 96;

// Indexes into a counts array (the reference's categories, plus bytes).
export const C_BREF = 0;
export const C_EMPTY = 1;
export const C_INODE = 2;
export const C_INDIRECT = 3;
export const C_DATA = 4;
export const C_DIRENT = 5;
export const C_FNODE = 6;
export const C_FLEAF = 7;
export const C_BYTES = 8;

export const newCounts = (): number[] => new Array(NSTATS).fill(0);

/** Identity of a blockref (and so of the block and the table it holds). */
export function sig(b: Blockref): string {
  return `${b.dataOff.toString(16)}.${b.check.readUInt32LE(0).toString(16)}.${b.check.readUInt32LE(4).toString(16)}.${b.type}.${b.methods}`;
}
export const SROOT_OWNER = 'sroot';
const ownerKey = (o: Blockref | string): string => (typeof o === 'string' ? o : sig(o));

/** The inode fields the walk needs, read in place (decodeInode copies every field). */
function inodeMeta(d: Buffer) {
  return {
    pfsSubtype: d[3],
    type: d[0x50],
    opFlags: d[0x51],
    inum: d.readBigUInt64LE(0x58),
    size: d.readBigUInt64LE(0x60),
    nlinks: d.readBigUInt64LE(0x68),
    iparent: d.readBigUInt64LE(0x70),
    nameLen: d.readUInt16LE(0x80),
    compAlgo: d[0x83],
    checkAlgo: d[0x85],
    pfsType: d[0x87],
    pfsInum: d.readBigUInt64LE(0x88),
  };
}

/** Blockrefs of a table, as views into its block (no copies: the walk only reads them). */
export function decodeTable(buf: Buffer, off: number, count: number): Blockref[] {
  const out: Blockref[] = new Array(count);
  for (let i = 0; i < count; i++) out[i] = decodeBlockrefView(buf, off + i * 128);
  return out;
}

/** Changes to blocktables a repair would make in the zone it keeps. */
export interface MediaPlan {
  /** Table owner -> slots to empty. */
  drop: Map<string, Set<number>>;
  /** Table owner -> slot -> replacement blockref. */
  patch: Map<string, Map<number, Blockref>>;
  /** Tables to rewrite in key order. */
  sort: Set<string>;
  /** Owners of every table on a path to a change (including the changed tables). */
  dirty: Set<string>;
}

export const newMediaPlan = (): MediaPlan => ({ drop: new Map(), patch: new Map(), sort: new Set(), dirty: new Set() });
export const mediaPlanEmpty = (p: MediaPlan): boolean => p.drop.size === 0 && p.patch.size === 0 && p.sort.size === 0;

/** Where a block of the filesystem tree may not be. */
export interface Layout {
  total: number;
  bootBeg: number;
  auxEnd: number;
}

export interface WalkServices {
  vols: VolumeSet;
  layout: Layout;
  report: Report;
  countEmpty: boolean;
  /** Read and verify DATA blocks (off: only metadata is read). */
  verifyData: boolean;
  nodeCache: SeenCache;
  leafCache: SeenCache;
  /** Blocks reachable from the zone in force, and from any zone (this window). */
  best: BlockBits | null;
  any: BlockBits | null;
  /** 16 KiB block -> first byte the allocator will sub-allocate there (from the freemap's linear cursors). */
  linearWatch: Map<number, number>;
  progress?: (bytes: number) => void;
}

type Kind = 'sroot' | 'superroot' | 'pfsroot' | 'dir' | 'file' | 'other' | 'freemap';

interface InodeCtx {
  inum: bigint;
  type: number;
  size: bigint;
  /** Directory entry scan state: names seen in the current hash window. */
  winBase: bigint;
  winNames: Buffer[];
}

interface PfsCtx {
  name: string;
  ns: PfsNamespace | null;
  counts: number[];
}

interface Frame {
  kind: Kind;
  lo: bigint;
  hi: bigint;
  parentBits: number;
  depth: number;
  /** The block holding this table (its blockref), or a tag for the volume header's tables. */
  owner: Blockref | string;
  inode: InodeCtx | null;
  pfs: PfsCtx | null;
}

export interface PfsInfo {
  name: string;
  /** Blockref counts below and including the PFS inode. */
  counts: number[];
  inode: InodeData;
  bref: Blockref;
  ns: PfsNamespace | null;
}

export interface WalkOptions {
  zone: number;
  /** This is the zone in force: record a repair plan. */
  primary: boolean;
  /** Collect the namespace of these PFSs (null: none, 'all': every PFS). */
  namespace: Set<string> | 'all' | null;
  /** Report findings (off for the extra window passes, which repeat the first). */
  reportFindings: boolean;
}

export class ZoneWalk {
  readonly counts = newCounts();
  readonly pfs: PfsInfo[] = [];
  errors = 0;
  /** Bad blockrefs that stay referenced (a repair cannot cut them out). */
  unrepairable = 0;
  /** Freemap leaves found (key, bref) and every freemap block address referenced. */
  readonly leaves: Blockref[] = [];
  readonly freemapBlocks = new Set<number>();
  readonly plan = newMediaPlan();
  /** Blocks newer than the freemap (mount recovery re-marks them) go here too. */
  recoverAbove: { tid: bigint; bits: BlockBits } | null = null;
  private path: (Blockref | string)[] = [];
  /** Nodes met in the current PFS (cleared at each PFS root). */
  private readonly visited = new SeenCache(17, false);
  private superRoots = 0;
  private pfsNames = new Set<string>();

  constructor(
    private readonly svc: WalkServices,
    private readonly o: WalkOptions,
  ) {}

  // ---------------------------------------------------------------- findings

  /** Report a finding; `zoneError` false: an error the namespace repair fixes, not a fault of the zone's tree. */
  private add(f: Omit<Finding, 'zone'>, zoneError = true): void {
    if (f.severity === 'error' && zoneError) this.errors++;
    if (!this.o.reportFindings) return;
    this.svc.report.add({ ...f, zone: this.o.zone });
  }

  private markDirty(): void {
    if (!this.o.primary) return;
    for (const p of this.path) this.plan.dirty.add(ownerKey(p));
  }

  /** A blockref that must go: report it and plan to empty its slot. */
  private bad(b: Blockref, idx: number, f: Frame, code: string, message: string, fixable = true): void {
    // Cutting out the super-root or a PFS root (or an indirect block above
    // PFS roots) would throw away whole PFSs: never done; only a rollback
    // to an older header can repair that.
    if (
      (f.kind === 'sroot' || f.kind === 'superroot') &&
      (b.type === BrefType.INODE || b.type === BrefType.INDIRECT) &&
      code !== 'extra-sroot' &&
      code !== 'not-pfs-root'
    ) {
      fixable = false;
      message += ' (holds whole PFSs: only a rollback to an older volume header can repair it)';
    }
    if (!fixable) this.unrepairable++;
    this.add({
      severity: 'error',
      code,
      message,
      pfs: f.pfs?.name,
      inum: f.inode ? hex16(f.inode.inum) : undefined,
      bref: brefInfo(b),
      fixable,
    });
    if (fixable && this.o.primary && idx >= 0) {
      const k = ownerKey(f.owner);
      let s = this.plan.drop.get(k);
      if (!s) this.plan.drop.set(k, (s = new Set()));
      s.add(idx);
      this.markDirty();
    }
  }

  private patch(f: Frame, idx: number, nb: Blockref): void {
    if (!this.o.primary || idx < 0) return;
    const k = ownerKey(f.owner);
    let m = this.plan.patch.get(k);
    if (!m) this.plan.patch.set(k, (m = new Map()));
    m.set(idx, nb);
    this.markDirty();
  }

  // ------------------------------------------------------------------- media

  /** Where a block may be: returns an error message or null. */
  private mediaProblem(b: Blockref, freemap: boolean): { code: string; msg: string } | null {
    const radix = Number(b.dataOff & 0x3fn);
    if (radix === 0) return null;
    if (radix > 16) return { code: 'bad-radix', msg: `Bad I/O bytes (size radix ${radix})` };
    if (radix < 10) return { code: 'bad-radix', msg: `size radix ${radix} is below the 1 KiB minimum` };
    const bytes = 2 ** radix;
    const off = b.dataOff & ~0x3fn;
    const L = this.svc.layout;
    if (off + BigInt(bytes) > BigInt(L.total)) return { code: 'beyond-end', msg: `block ends beyond the volume (size 0x${L.total.toString(16)})` };
    const o = Number(off);
    if ((o % K64) + bytes > K64) return { code: 'crosses-64k', msg: `block crosses a 64 KiB boundary` };
    if (bytes < K16 && (o % K16) + bytes > K16) return { code: 'crosses-16k', msg: `block smaller than 16 KiB crosses a 16 KiB boundary` };
    if (freemap) return null;
    if (o % GIB < SEG) return { code: 'reserved-area', msg: `block lies in the reserved first 4 MiB of a 1 GiB zone (volume headers, freemap)` };
    if (o < L.auxEnd && o + bytes > L.bootBeg) return { code: 'reserved-area', msg: `block lies in the boot/aux area` };
    return null;
  }

  /** Read a block; returns null (after reporting) when it cannot be read or fails its check code. */
  private readVerified(b: Blockref, idx: number, f: Frame): Buffer | null {
    const bytes = 2 ** Number(b.dataOff & 0x3fn);
    const off = Number(b.dataOff & ~0x3fn);
    let data: Buffer;
    try {
      data = this.svc.vols.read(off, bytes);
    } catch (e) {
      this.bad(b, idx, f, 'read-error', `Failed to read media: ${(e as Error).message}`);
      return null;
    }
    const method = (b.methods >> 4) & 15;
    if (method > 5) {
      this.bad(b, idx, f, 'check-method', `unknown check method ${method}`);
      return null;
    }
    if (!verifyCheck(method, b.check, data)) {
      const name = { 2: 'ISCSI32', 3: 'XXHASH64', 4: 'SHA192', 5: 'FREEMAP' }[method] ?? CHECK_NAMES[method];
      this.bad(b, idx, f, 'check', `Bad HAMMER2_CHECK_${name}`);
      return null;
    }
    return data;
  }

  /** The block is good: mark it referenced and count it. */
  private markUsed(b: Blockref, f: Frame): void {
    const radix = Number(b.dataOff & 0x3fn);
    if (radix === 0) return;
    const bytes = 2 ** radix;
    const off = Number(b.dataOff & ~0x3fn);
    this.counts[C_BYTES] += bytes;
    if (f.pfs) f.pfs.counts[C_BYTES] += bytes;
    this.svc.progress?.(bytes);
    if (f.kind === 'freemap') return;
    const svc = this.svc;
    if (this.o.primary) {
      svc.best?.markRange(off, bytes);
      if (this.recoverAbove && b.mirrorTid > this.recoverAbove.tid) this.recoverAbove.bits.markRange(off, bytes);
    }
    svc.any?.markRange(off, bytes);
    if (svc.linearWatch.size) {
      let lin: number | undefined;
      for (let blk = Math.floor(off / K16); blk * K16 < off + bytes && lin === undefined; blk++) lin = svc.linearWatch.get(blk);
      if (lin !== undefined && off + bytes > lin && this.o.reportFindings) {
        this.add({
          severity: this.o.primary ? 'error' : 'warning',
          code: 'linear-overlap',
          message:
            `block at 0x${off.toString(16)} (+${bytes}) lies beyond the freemap's sub-allocation cursor 0x${lin.toString(16)}: ` +
            `the allocator would hand out its space again`,
          pfs: f.pfs?.name,
          bref: brefInfo(b),
          fixable: true,
        });
      }
    }
  }

  private count(b: Blockref, f: Frame): void {
    const c = this.counts;
    const p = f.pfs?.counts;
    const bump = (i: number) => {
      c[i]++;
      if (p) p[i]++;
    };
    bump(C_BREF);
    switch (b.type) {
      case BrefType.INODE:
        bump(C_INODE);
        break;
      case BrefType.INDIRECT:
        bump(C_INDIRECT);
        break;
      case BrefType.DATA:
        bump(C_DATA);
        break;
      case BrefType.DIRENT:
        bump(C_DIRENT);
        break;
      case BrefType.FREEMAP_NODE:
        bump(C_FNODE);
        break;
      case BrefType.FREEMAP_LEAF:
        bump(C_FLEAF);
        break;
    }
  }

  // ------------------------------------------------------------ blocktables

  /**
   * Check a table's order and ranges, then visit its entries in key order.
   * EMPTY entries are only examined for junk the reference would verify.
   */
  private walkTable(brefs: readonly Blockref[], f: Frame): void {
    if (f.depth > MAX_DEPTH) {
      this.add({ severity: 'error', code: 'too-deep', message: 'block tree deeper than any valid tree (loop?)', pfs: f.pfs?.name, fixable: false });
      return;
    }
    const live: number[] = [];
    for (let i = 0; i < brefs.length; i++) {
      const b = brefs[i];
      if (b.type === BrefType.EMPTY) {
        this.visitEmpty(b, i, f);
        continue;
      }
      if (b.keybits > 64) {
        this.count(b, f);
        this.bad(b, i, f, 'keybits', `keybits ${b.keybits} out of range`);
        continue;
      }
      const kend = brefKeyEnd(b);
      if (b.key < f.lo || kend > f.hi || kend < b.key) {
        this.count(b, f);
        this.bad(b, i, f, 'key-range', `key range outside its parent's ${hex16(f.lo)}-${hex16(f.hi)} (invisible to lookups)`);
        continue;
      }
      live.push(i);
    }
    let sorted = true;
    for (let j = 1; j < live.length; j++) if (brefs[live[j - 1]].key > brefs[live[j]].key) sorted = false;
    if (!sorted) {
      this.add({
        severity: 'error',
        code: 'unsorted',
        message: 'blocktable entries are not in key order (lookups miss entries)',
        pfs: f.pfs?.name,
        inum: f.inode ? hex16(f.inode.inum) : undefined,
        fixable: true,
      });
      if (this.o.primary) {
        this.plan.sort.add(ownerKey(f.owner));
        this.markDirty();
      }
      live.sort((a, b) => (brefs[a].key < brefs[b].key ? -1 : brefs[a].key > brefs[b].key ? 1 : a - b));
    }
    let prevEnd = -1n;
    for (const i of live) {
      const b = brefs[i];
      if (b.key <= prevEnd) {
        this.count(b, f);
        this.bad(b, i, f, 'overlap', `key range overlaps the previous entry's (ends ${hex16(prevEnd)})`);
        continue;
      }
      prevEnd = brefKeyEnd(b);
      this.visit(b, i, f);
    }
  }

  /**
   * EMPTY slots must have no size: the reference fsck_hammer2 asserts on one
   * that has (and with -e reads and verifies it), so such junk is an error.
   */
  private visitEmpty(b: Blockref, idx: number, f: Frame): void {
    if (this.svc.countEmpty) {
      this.counts[C_BREF]++;
      this.counts[C_EMPTY]++;
      if (f.pfs) {
        f.pfs.counts[C_BREF]++;
        f.pfs.counts[C_EMPTY]++;
      }
    }
    const radix = Number(b.dataOff & 0x3fn);
    if (radix !== 0) this.bad(b, idx, f, 'empty-junk', `empty blockref with a size (radix ${radix}): junk the reference fsck aborts on`);
  }

  /** Which blockref types a table of each kind may hold. */
  private allowed(kind: Kind, b: Blockref): string | null {
    const t = b.type;
    switch (kind) {
      case 'sroot':
        return t === BrefType.INODE ? null : 'only the super-root inode belongs in the volume header';
      case 'superroot':
        return t === BrefType.INODE || t === BrefType.INDIRECT ? null : 'only PFS inodes belong under the super-root';
      case 'pfsroot':
        if (t === BrefType.INODE || t === BrefType.INDIRECT) return null;
        if (t === BrefType.DIRENT) return b.key >= DIRHASH_VISIBLE ? null : 'directory entry with an inode-index key (invisible)';
        return 'unexpected in a PFS root';
      case 'dir':
        if (t === BrefType.INDIRECT) return null;
        if (t === BrefType.DIRENT || t === BrefType.INODE) return b.key >= DIRHASH_VISIBLE ? null : 'directory entry key below 2^63 (invisible)';
        return 'unexpected in a directory';
      case 'file':
        return t === BrefType.DATA || t === BrefType.INDIRECT ? null : 'unexpected in file data';
      case 'other':
        return 'device/fifo/socket inodes hold no blocks';
      case 'freemap':
        return t === BrefType.FREEMAP_NODE || t === BrefType.FREEMAP_LEAF ? null : 'unexpected in the freemap';
    }
  }

  // ------------------------------------------------------------------ visit

  private visit(b: Blockref, idx: number, f: Frame): void {
    this.count(b, f);
    if (b.type > BrefType.FREEMAP_LEAF) {
      this.bad(b, idx, f, 'bad-type', `Invalid blockref type ${b.type}`);
      return;
    }
    const why = this.allowed(f.kind, b);
    if (why) {
      this.bad(b, idx, f, 'unexpected-type', why);
      return;
    }
    if (f.kind === 'freemap') return this.visitFreemap(b, idx, f);

    const radix = Number(b.dataOff & 0x3fn);
    if (radix === 0 && (b.type === BrefType.INODE || b.type === BrefType.INDIRECT)) {
      this.bad(b, idx, f, 'no-media', `${b.type === BrefType.INODE ? 'inode' : 'indirect block'} without storage`);
      return;
    }
    const mp = this.mediaProblem(b, false);
    if (mp) {
      this.bad(b, idx, f, mp.code, mp.msg);
      return;
    }
    // Per-type key rules.
    if ((b.type === BrefType.INODE || b.type === BrefType.DIRENT) && b.keybits !== 0) {
      this.add({
        severity: 'error',
        code: 'keybits',
        message: `${b.type === BrefType.INODE ? 'inode' : 'entry'} with keybits ${b.keybits} (must be 0)`,
        pfs: f.pfs?.name,
        bref: brefInfo(b),
        fixable: true,
      });
      const nb = { ...b, keybits: 0 };
      this.patch(f, idx, nb);
      b = nb;
    }
    if (b.type === BrefType.INDIRECT) {
      if (b.keybits >= f.parentBits) return this.bad(b, idx, f, 'indirect-range', `indirect block keybits ${b.keybits} not below its parent's ${f.parentBits}`);
      if (b.keybits < 64 && (b.key & ((1n << BigInt(b.keybits)) - 1n)) !== 0n) return this.bad(b, idx, f, 'key-align', `indirect key not aligned to its keybits`);
      if (radix < 10 || (2 ** radix) % 128) return this.bad(b, idx, f, 'bad-radix', 'indirect block size');
    }
    if (b.type === BrefType.DATA) {
      if (b.keybits < 10 || b.keybits > 16) return this.bad(b, idx, f, 'keybits', `data block keybits ${b.keybits} (expected 16)`);
      if ((b.key & ((1n << BigInt(b.keybits)) - 1n)) !== 0n) return this.bad(b, idx, f, 'key-align', 'data block key not aligned to its logical size');
    }

    // Subtrees already verified (another zone, a snapshot) are not walked again.
    const isNode = b.type === BrefType.INODE || b.type === BrefType.INDIRECT;
    if (isNode && this.canSkip(f)) {
      const slot = this.svc.nodeCache.find(b);
      if (slot >= 0) {
        const st = newCounts();
        this.svc.nodeCache.statsOf(slot, st);
        // The node itself was counted above; its cached numbers include it.
        this.undoCount(b, f);
        for (let i = 0; i < st.length; i++) {
          this.counts[i] += st[i];
          if (f.pfs) f.pfs.counts[i] += st[i];
        }
        return;
      }
    }

    // A node referenced twice in one PFS's tree never happens on real media
    // (only data blocks are shared, by dedup); a forged one could make the
    // walk exponential.
    if (isNode) {
      if (this.visited.has(b)) {
        this.bad(b, idx, f, 'shared-block', 'block referenced more than once in one tree');
        return;
      }
      this.visited.put(b);
    }

    let data: Buffer | null = null;
    const needRead =
      radix !== 0 &&
      (isNode || b.type === BrefType.DIRENT || (b.type === BrefType.DATA && this.svc.verifyData && !this.svc.leafCache.has(b)));
    if (needRead) {
      data = this.readVerified(b, idx, f);
      if (!data) return;
    }
    this.markUsed(b, f);
    switch (b.type) {
      case BrefType.INODE:
        return this.visitInode(b, idx, f, data!);
      case BrefType.INDIRECT: {
        const before = this.counts.slice();
        const errs = this.errors;
        this.path.push(b);
        const table = decodeTable(data!, 0, data!.length / 128);
        this.walkTable(table, { ...f, lo: b.key, hi: brefKeyEnd(b), parentBits: b.keybits, depth: f.depth + 1, owner: b });
        this.path.pop();
        this.remember(b, before, errs);
        return;
      }
      case BrefType.DATA:
        return this.visitData(b, idx, f, data);
      case BrefType.DIRENT:
        return this.visitDirent(b, idx, f, data);
    }
  }

  private undoCount(b: Blockref, f: Frame): void {
    const dec = (i: number) => {
      this.counts[i]--;
      if (f.pfs) f.pfs.counts[i]--;
    };
    dec(C_BREF);
    dec(b.type === BrefType.INODE ? C_INODE : C_INDIRECT);
  }

  /** May a subtree under this frame be skipped when seen before? */
  private canSkip(f: Frame): boolean {
    // PFS roots are always entered (per-PFS counts, the PFS list).
    if (f.kind === 'superroot' || f.kind === 'sroot') return false;
    // Namespace collection needs every inode and directory entry of each PFS.
    if (this.o.namespace && f.pfs?.ns) return f.kind === 'file';
    return true;
  }

  /** After a clean walk of a node, remember its subtree's counts. */
  private remember(b: Blockref, before: number[], errs: number): void {
    if (this.errors !== errs) return;
    const d = newCounts();
    for (let i = 0; i < d.length; i++) d[i] = this.counts[i] - before[i];
    // `before` was taken after the node itself was counted: include it.
    d[C_BREF]++;
    d[b.type === BrefType.INODE ? C_INODE : C_INDIRECT]++;
    // ...and its own bytes (markUsed ran before `before` was taken).
    const radix = Number(b.dataOff & 0x3fn);
    if (radix) d[C_BYTES] += 2 ** radix;
    this.svc.nodeCache.put(b, d);
  }

  // ------------------------------------------------------------------ inodes

  private visitInode(b: Blockref, idx: number, f: Frame, data: Buffer): void {
    if (data.length !== INODE_BYTES) return this.bad(b, idx, f, 'inode-size', `inode block is ${data.length} bytes, not ${INODE_BYTES}`);
    const m = inodeMeta(data);
    // Only inodes with blocks below them are worth remembering as subtrees.
    const hasChildren = !(m.opFlags & OPFLAG_DIRECTDATA) && (data[0x200] | data[0x280] | data[0x300] | data[0x380]) !== 0;
    const before = hasChildren ? this.counts.slice() : null;
    const errs = this.errors;
    let kind: Kind;
    let pfs = f.pfs;
    let inode: InodeCtx;
    let pfsInfo: PfsInfo | null = null;
    const directdata = (m.opFlags & OPFLAG_DIRECTDATA) !== 0;

    if (f.kind === 'sroot') {
      this.superRoots++;
      if (this.superRoots > 1) return this.bad(b, idx, f, 'extra-sroot', 'more than one super-root in the volume header');
      if (m.type !== ObjType.DIRECTORY) return this.bad(b, idx, f, 'sroot-type', `super-root inode is not a directory`, false);
      if (m.pfsType !== PfsType.SUPROOT) {
        this.add({ severity: 'warning', code: 'sroot-pfstype', message: `super-root pfs_type is ${m.pfsType}, not SUPROOT`, bref: brefInfo(b), fixable: false });
      }
      if (directdata) return this.bad(b, idx, f, 'directdata', 'super-root has embedded data', false);
      kind = 'superroot';
      inode = { inum: m.inum, type: m.type, size: m.size, winBase: -1n, winNames: [] };
    } else if (f.kind === 'superroot') {
      const nlen = Math.min(m.nameLen, 256);
      const ip = decodeInode(data);
      const name = ip.filename.subarray(0, nlen).toString('utf8');
      if (!(m.opFlags & OPFLAG_PFSROOT)) return this.bad(b, idx, f, 'not-pfs-root', `inode under the super-root is not a PFS root (op_flags 0x${m.opFlags.toString(16)})`);
      if (m.type !== ObjType.DIRECTORY) return this.bad(b, idx, f, 'pfs-root-type', `PFS root "${name}" is not a directory`);
      if (directdata) return this.bad(b, idx, f, 'directdata', `PFS root "${name}" has embedded data`);
      if (nlen === 0 || nlen > 255) return this.bad(b, idx, f, 'pfs-name', `PFS root with name length ${m.nameLen}`);
      const h = dirhash(ip.filename.subarray(0, nlen));
      if (b.key < h || b.key > (h | DIRHASH_LOMASK)) {
        this.add({ severity: 'error', code: 'pfs-key', message: `PFS "${name}" key ${hex16(b.key)} is outside its name's hash window ${hex16(h)} (label lookups miss it)`, bref: brefInfo(b), fixable: false });
      }
      if (this.pfsNames.has(name)) {
        this.add({ severity: 'error', code: 'pfs-duplicate', message: `two PFSs are labelled "${name}"`, bref: brefInfo(b), fixable: false });
      }
      this.pfsNames.add(name);
      if (!(b.flags & BREF_FLAG_PFSROOT)) {
        this.add({ severity: 'warning', code: 'pfs-bref-flag', message: `PFS "${name}" blockref lacks the PFSROOT flag`, pfs: name, bref: brefInfo(b), fixable: false });
      }
      if (m.inum !== 1n) {
        this.add({ severity: 'warning', code: 'pfs-root-inum', message: `PFS root "${name}" has inode number ${m.inum}, expected 1`, pfs: name, fixable: false });
      }
      const wantNs = this.o.namespace === 'all' || (this.o.namespace !== null && this.o.namespace.has(name));
      const ns = wantNs ? new PfsNamespace(name) : null;
      if (ns) {
        ns.rootNlinks = m.nlinks;
        ns.rootPfsInum = m.pfsInum;
        ns.checkAlgos(1n, m.compAlgo, m.checkAlgo);
      }
      pfs = { name, ns, counts: newCounts() };
      this.visited.clear();
      // This PFS's counts include its own inode, as the reference's -p does.
      pfs.counts[C_BREF] = 1;
      pfs.counts[C_INODE] = 1;
      pfs.counts[C_BYTES] = data.length;
      pfsInfo = { name, counts: pfs.counts, inode: ip, bref: b, ns };
      kind = 'pfsroot';
      inode = { inum: 1n, type: m.type, size: m.size, winBase: -1n, winNames: [] };
    } else if (f.kind === 'pfsroot' && b.key < DIRHASH_VISIBLE) {
      // An inode of the PFS's inode index.
      if (m.inum !== b.key) return this.bad(b, idx, f, 'inum-mismatch', `inode index key ${hex16(b.key)} holds inode ${hex16(m.inum)} (lookups fail)`);
      if (b.key === 1n || b.key === 0n) return this.bad(b, idx, f, 'inum-reserved', `inode number ${b.key} in the inode index`);
      if (!knownObjType(m.type)) return this.bad(b, idx, f, 'inode-type', `inode has unknown type ${m.type}`);
      if (m.size > MAX_FILE_SIZE) return this.bad(b, idx, f, 'inode-size', `inode size ${m.size} is absurd`);
      if (directdata && m.type !== ObjType.REGFILE && m.type !== ObjType.SOFTLINK) {
        return this.bad(b, idx, f, 'directdata', `a ${m.type === ObjType.DIRECTORY ? 'directory' : 'special file'} with embedded data`);
      }
      if (directdata && m.size > BigInt(EMBEDDED_BYTES)) return this.bad(b, idx, f, 'directdata', `embedded-data inode claims ${m.size} bytes (max 512)`);
      if (m.type === ObjType.DIRECTORY && m.size !== 0n) {
        this.add({ severity: 'warning', code: 'dir-size', message: `directory size is ${m.size}, not 0`, pfs: f.pfs?.name, inum: hex16(m.inum), fixable: false });
      }
      f.pfs?.ns?.addInode(m.inum, m.type, m.nlinks, m.iparent);
      f.pfs?.ns?.checkAlgos(m.inum, m.compAlgo, m.checkAlgo);
      kind = m.type === ObjType.DIRECTORY ? 'dir' : m.type === ObjType.REGFILE || m.type === ObjType.SOFTLINK ? 'file' : 'other';
      inode = { inum: m.inum, type: m.type, size: m.size, winBase: -1n, winNames: [] };
    } else {
      // An inode inside a directory: the old embedded-inode format. Walked for
      // its blocks; its namespace is not checked.
      this.add({ severity: 'warning', code: 'legacy-inode', message: `inode embedded in a directory (old format; not checked)`, pfs: f.pfs?.name, bref: brefInfo(b), fixable: false });
      if (!knownObjType(m.type)) return this.bad(b, idx, f, 'inode-type', `inode has unknown type ${m.type}`);
      kind = m.type === ObjType.DIRECTORY ? 'dir' : m.type === ObjType.REGFILE || m.type === ObjType.SOFTLINK ? 'file' : 'other';
      pfs = f.pfs ? { ...f.pfs, ns: null } : null;
      inode = { inum: m.inum, type: m.type, size: m.size, winBase: -1n, winNames: [] };
    }

    if (!directdata) {
      this.path.push(b);
      this.walkTable(decodeTable(data, 0x200, 4), {
        kind,
        lo: 0n,
        hi: 0xffffffffffffffffn,
        parentBits: 65,
        depth: f.depth + 1,
        owner: b,
        inode,
        pfs,
      });
      this.path.pop();
    }
    if (pfsInfo) this.pfs.push(pfsInfo);
    if (before) this.remember(b, before, errs);
  }

  // ----------------------------------------------------------- data, entries

  private visitData(b: Blockref, idx: number, f: Frame, data: Buffer | null): void {
    const ino = f.inode;
    if (ino && b.key >= ino.size) {
      this.bad(b, idx, f, 'data-beyond-eof', `data block at file offset ${b.key} lies beyond EOF (size ${ino.size})`);
      return;
    }
    const radix = Number(b.dataOff & 0x3fn);
    if (radix === 0) return;
    const comp = b.methods & 15;
    if (comp !== 0 && comp !== 2 && comp !== 3) {
      this.bad(b, idx, f, 'data-comp', `data block with compression method ${comp} (only none, lz4, zlib)`);
      return;
    }
    if (data) {
      if (comp === 2 && data.readUInt32LE(0) > data.length - 4) {
        this.bad(b, idx, f, 'data-lz4', `LZ4 length ${data.readUInt32LE(0)} exceeds the ${data.length}-byte block`);
        return;
      }
      if (comp === 3 && ((data[0] & 0x0f) !== 8 || ((data[0] << 8) | data[1]) % 31 !== 0)) {
        this.bad(b, idx, f, 'data-zlib', 'zlib block without a zlib header');
        return;
      }
      this.svc.leafCache.put(b);
    }
  }

  private visitDirent(b: Blockref, idx: number, f: Frame, data: Buffer | null): void {
    const h = direntHead(b);
    const ino = f.inode!;
    if (h.namlen === 0 || h.namlen > 255) return this.bad(b, idx, f, 'entry-name', `directory entry with name length ${h.namlen}`);
    let name: Buffer;
    if (h.namlen <= 64) {
      name = b.check.subarray(0, h.namlen);
    } else {
      if (!data || data.length < h.namlen) return this.bad(b, idx, f, 'entry-name', `directory entry name of ${h.namlen} bytes has no name block`);
      name = data.subarray(0, h.namlen);
    }
    if (name.includes(0) || name.includes(0x2f) || (h.namlen === 1 && name[0] === 0x2e) || (h.namlen === 2 && name[0] === 0x2e && name[1] === 0x2e)) {
      return this.bad(b, idx, f, 'entry-name', `directory entry name "${name.toString('utf8')}" is not a valid file name`);
    }
    if (h.inum === 0n) return this.bad(b, idx, f, 'entry-inum', `directory entry "${name.toString('utf8')}" names inode 0`);
    const hash = dirhash(name);
    let rekey = false;
    if (b.key < hash || b.key > (hash | DIRHASH_LOMASK)) {
      rekey = true;
      // A namespace matter: checked (and fixed) in the tree in force only.
      if (this.o.primary) this.add({
        severity: 'error',
        code: 'entry-hash',
        message: `entry "${name.toString('utf8')}" has key ${hex16(b.key)} outside its hash window ${hex16(hash)} (name lookups miss it)`,
        pfs: f.pfs?.name,
        inum: hex16(ino.inum),
        bref: brefInfo(b),
        fixable: true,
      }, false);
    }
    // Duplicate names can only sit in one hash window, which key order keeps together.
    const base = b.key & ~DIRHASH_LOMASK;
    if (base !== ino.winBase) {
      ino.winBase = base;
      ino.winNames = [];
    }
    if (!rekey) {
      if (ino.winNames.some((n) => n.equals(name))) {
        return this.bad(b, idx, f, 'duplicate-name', `duplicate entry "${name.toString('utf8')}" in the directory`);
      }
      ino.winNames.push(Buffer.from(name));
    }
    const ns = f.pfs?.ns;
    if (ns) {
      ns.addEntry(ino.inum, h.inum, h.type, b.key);
      if (rekey) ns.rekey.push({ dir: ino.inum, key: b.key });
    }
  }

  // ----------------------------------------------------------------- freemap

  private visitFreemap(b: Blockref, idx: number, f: Frame): void {
    const radix = Number(b.dataOff & 0x3fn);
    const off = Number(b.dataOff & ~0x3fn);
    if (radix !== 0 && off > 0) this.freemapBlocks.add(off);
    const leaf = b.type === BrefType.FREEMAP_LEAF;
    const kb = leaf ? [30] : [38, 46, 54, 62];
    if (!kb.includes(b.keybits) || b.keybits >= f.parentBits) {
      return this.bad(b, idx, f, 'freemap-keybits', `freemap ${leaf ? 'leaf' : 'node'} with keybits ${b.keybits}`);
    }
    if ((b.key & ((1n << BigInt(b.keybits)) - 1n)) !== 0n) return this.bad(b, idx, f, 'key-align', 'freemap key not aligned to its level');
    if (b.key >= BigInt(this.svc.layout.total)) return this.bad(b, idx, f, 'freemap-key', 'freemap block for space beyond the volume');
    if (radix !== 15) return this.bad(b, idx, f, 'bad-radix', `freemap block size radix ${radix} (must be 15)`);
    let slotOk = false;
    for (let r = 0; r < 8; r++) if (freemapSlot(b.key, b.keybits, r) === (b.dataOff & ~0x3fn)) slotOk = true;
    if (!slotOk) return this.bad(b, idx, f, 'freemap-slot', 'freemap block is not at a reserved freemap slot');
    if (((b.methods >> 4) & 15) !== 5) return this.bad(b, idx, f, 'check-method', `freemap block with check method ${(b.methods >> 4) & 15}`);
    const data = this.readVerified(b, idx, f);
    if (!data) return;
    this.markUsed(b, f);
    if (leaf) {
      this.leaves.push(b);
      return;
    }
    this.path.push(b);
    this.walkTable(decodeTable(data, 0, data.length / 128), {
      ...f,
      lo: b.key,
      hi: brefKeyEnd(b),
      parentBits: b.keybits,
      depth: f.depth + 1,
      owner: b,
    });
    this.path.pop();
  }

  // ------------------------------------------------------------------ entry

  walkFreemap(h: VolumeHeader): void {
    this.walkTable(h.freemap, { kind: 'freemap', lo: 0n, hi: 0xffffffffffffffffn, parentBits: 65, depth: 0, owner: 'freemap', inode: null, pfs: null });
  }

  walkVolume(h: VolumeHeader): void {
    this.path = [SROOT_OWNER];
    this.walkTable(h.sroot, { kind: 'sroot', lo: 0n, hi: 0xffffffffffffffffn, parentBits: 65, depth: 0, owner: SROOT_OWNER, inode: null, pfs: null });
    this.path = [];
    if (this.superRoots === 0) {
      this.add({ severity: 'error', code: 'no-sroot', message: 'the volume header has no (usable) super-root', fixable: false });
    }
  }
}
