// Writing new blocks for a flush: allocate media, compress data blocks the
// way the reference does, compute check codes, write, and return the bref
// that points at the result.
import {
  ALLOC_MIN,
  BLOCKREF_BYTES,
  Blockref,
  BREF_FLAG_PFSROOT,
  BrefType,
  CheckMethod,
  CompMethod,
  computeCheck,
  emptyBlockref,
  encMethods,
  encodeEntry,
  isSlotRef,
  TableEntry,
  encodeData,
  encodeInode,
  InodeData,
  OPFLAG_DIRECTDATA,
  isAllZero,
  PBUFSIZE,
} from '../media';
import { accel } from '../media/accel';
import { VolumeSet } from '../store';
import { BlockReader } from './blocks';

/** Media allocation, implemented over the freemap. */
export interface Allocator {
  /** Reserve `bytes` (a power of two, 1 KiB..64 KiB) for a block of `type`; returns the media offset. ENOSPC when full. */
  alloc(bytes: number, type: number): number;
  /** Bytes still free. */
  freeBytes(): number;
}

const radixOf = (bytes: number): number => {
  let r = 0;
  while (1 << r < bytes) r++;
  if (1 << r !== bytes || r < 10 || r > 16) throw new Error(`bad block size ${bytes}`);
  return r;
};

/**
 * hammer2_calc_physical(): a file's logical blocks are 64 KiB; the block
 * holding EOF is cut to the smallest power of two (>= 1 KiB) covering it.
 */
export function physicalSize(fileSize: bigint, lbase: bigint): number {
  if (lbase + BigInt(PBUFSIZE) <= fileSize) return PBUFSIZE;
  if (lbase >= fileSize) return 0;
  const eof = Number(fileSize - lbase);
  let p = PBUFSIZE;
  while (p >= eof && p >= ALLOC_MIN) p >>= 1;
  return p << 1;
}

/** Per-file count of blocks that did not compress (the reference's comp_heuristic). */
export interface CompHeuristic {
  n: number;
}

/**
 * Data blocks whose zero test, compression and check code are being worked
 * out ahead of their commit, on the shim's thread (see sealAhead). Keyed by
 * the pending block itself: whoever changes a block's bytes calls unseal().
 */
interface Seal {
  job: object;
  comp: number;
  check: number;
  triedLz4: boolean;
}
const seals = new WeakMap<Uint8Array, Seal>();

/** The shim's code for a check method it can compute, or -1. */
function sealCheck(check: number): number {
  if (check === CheckMethod.NONE || check === CheckMethod.DISABLED) return 0;
  if (check === CheckMethod.ISCSI32) return 2;
  if (check === CheckMethod.XXHASH64) return 3;
  return -1;
}

/**
 * A whole 64 KiB pending block that will not change before the commit (a
 * write adopted it): start working out what writeData will store for it
 * under `compAlgo` and `checkAlgo`, on the shim's thread, so that the
 * commit finds it done and the JS thread meanwhile serves requests. LZ4 is
 * tried as the file's heuristic says at this moment (`heur`, `lbase`: after
 * 8 blocks would not compress, every 8th); the commit then counts the
 * result as writeData would. Nothing happens without the shim's thread,
 * for other sizes, SHA192 or zlib, or if the shim refuses: the commit does
 * the work then, as always.
 */
export function sealAhead(block: Uint8Array, lbase: bigint, compAlgo: number, checkAlgo: number, heur?: CompHeuristic): void {
  if (!accel?.sealStart || block.length !== PBUFSIZE) return;
  const algo = compAlgo & 15;
  const check = sealCheck(checkAlgo);
  if (check < 0 || algo >= CompMethod.ZLIB) return;
  const zeroTest = algo !== CompMethod.NONE && checkAlgo !== CheckMethod.NONE;
  const tryLz4 = algo === CompMethod.LZ4 && ((heur?.n ?? 0) < 8 || ((lbase >> 16n) & 7n) === 0n);
  let job: object | null;
  try {
    job = accel.sealStart(block, zeroTest, tryLz4, check);
  } catch {
    return; // out of memory in the shim: an optimisation, not a failure
  }
  if (job) seals.set(block, { job, comp: compAlgo, check: checkAlgo, triedLz4: tryLz4 });
}

/** `block`'s bytes are about to change: what was worked out for it no longer holds. */
export function unseal(block: Uint8Array): void {
  const s = seals.get(block);
  if (!s) return;
  seals.delete(block);
  // Waits if the thread is reading it right now, so the change cannot race that read.
  accel?.sealCancel?.(s.job);
}

/** After a commit: blocks sealed but dropped before it (overwritten, truncated, deleted) may go. */
export function settleSeals(): void {
  accel?.sealDrain?.();
}

export class BlockWriter {
  /** Transaction id stamped into every bref written (the flush's mirror_tid). */
  tid = 0n;
  bytesWritten = 0;
  blocksWritten = 0;
  /**
   * When set, the bytes of every block placed in the current commit, by
   * data_off: copies read them from here instead of reading back (and
   * re-verifying) what was just written. The filesystem clears it after
   * each commit.
   */
  recent: Map<bigint, Uint8Array> | null = null;

  constructor(
    readonly vols: VolumeSet,
    readonly reader: BlockReader,
    readonly alloc: Allocator,
  ) {}

  private place(bytes: number, type: number, content: Uint8Array): bigint {
    const off = this.alloc.alloc(bytes, type);
    const dataOff = BigInt(off) | BigInt(radixOf(bytes));
    this.reader.invalidate(dataOff);
    // Queued: a commit's blocks mostly sit back to back and go out as a few
    // large pwritev calls when the commit syncs. `content` must stay as it is
    // until then (pending blocks and fresh encodings do).
    this.vols.writeQueued(off, content);
    if (this.recent) this.recent.set(BigInt(off) | BigInt(radixOf(bytes)), content);
    this.bytesWritten += bytes;
    this.blocksWritten++;
    return dataOff;
  }

  private stamp(b: Blockref): void {
    b.mirrorTid = this.tid;
    b.modifyTid = this.tid;
  }

  /**
   * Write one logical file block (`data` holds pblksize bytes, already cut
   * to the physical size). Returns null when the block becomes a hole
   * (all zeros under autozero/lz4/zlib with a check method, as the reference).
   */
  writeData(lbase: bigint, data: Buffer, compAlgo: number, checkAlgo: number, heur?: CompHeuristic): Blockref | null {
    const b = emptyBlockref();
    const seal = seals.get(data);
    if (seal) seals.delete(data);
    let stored: Buffer = data;
    let comp: number = CompMethod.NONE;
    if (seal && seal.comp === compAlgo && seal.check === checkAlgo) {
      // Worked out on the shim's thread (sealAhead), its check code already in b.check.
      const r = accel!.sealResult!(seal.job, b.check);
      if (r === 0) return null;
      if (r !== 2) {
        stored = r;
        comp = CompMethod.LZ4;
      }
      if (heur && (compAlgo & 15) === CompMethod.LZ4) {
        // Counted as below, for a block sealAhead tried or skipped.
        if (r !== 2) heur.n = 0;
        else if (++heur.n > 128 && seal.triedLz4) heur.n = 8;
      }
    } else {
      const algo = compAlgo & 15;
      const level = (compAlgo >> 4) & 15;
      if (algo !== CompMethod.NONE && checkAlgo !== CheckMethod.NONE && isAllZero(data)) return null;
      if (algo === CompMethod.LZ4 || algo === CompMethod.ZLIB) {
        // As the reference: after 8 blocks of a file would not compress, try only every 8th.
        const h = heur?.n ?? 0;
        if (h < 8 || (h & 7) === 0) {
          const c = encodeData(algo, level, data);
          if (c) {
            stored = c;
            comp = algo;
            if (heur) heur.n = 0;
          } else if (heur && ++heur.n > 128) {
            heur.n = 8;
          }
        } else if (heur) {
          heur.n++;
        }
      }
      computeCheck(checkAlgo, stored, b.check);
    }
    b.type = BrefType.DATA;
    b.key = lbase;
    b.keybits = 16;
    b.methods = encMethods(checkAlgo, comp);
    b.dataOff = this.place(stored.length, BrefType.DATA, stored);
    this.stamp(b);
    // A block cut at EOF is what the next append to the file reads back
    // first: keep it (a copy where it is the caller's buffer).
    if (data.length < PBUFSIZE) {
      let keep = stored;
      if (stored === data) {
        keep = Buffer.allocUnsafe(stored.length);
        stored.copy(keep);
      }
      this.reader.seed(b, keep);
    }
    return b;
  }

  /** Write a metadata block (inode, indirect table, long dirent name) with check `checkAlgo`. */
  writeMeta(type: number, key: bigint, keybits: number, content: Buffer, checkAlgo: number, compBits = 0): Blockref {
    const b = emptyBlockref();
    b.type = type;
    b.key = key;
    b.keybits = keybits;
    b.methods = encMethods(checkAlgo, compBits);
    computeCheck(checkAlgo, content, b.check);
    b.dataOff = this.place(content.length, type, content);
    this.stamp(b);
    return b;
  }

  /**
   * Place a verified block read from another tree as it is (same bytes, so
   * the same check code and methods): the synchronizer's copy of a leaf.
   * Returns `src` with the new data_off and this writer's transaction id.
   */
  copyBlock(src: Blockref, bytes: Buffer): Blockref {
    const b: Blockref = { ...src, embed: Buffer.from(src.embed), check: Buffer.from(src.check) };
    b.dataOff = this.place(bytes.length, src.type, bytes);
    this.stamp(b);
    return b;
  }

  /** A bref without media of its own (a short directory entry) restamped for this transaction. */
  copyRef(src: Blockref): Blockref {
    const b: Blockref = { ...src, embed: Buffer.from(src.embed), check: Buffer.from(src.check) };
    this.stamp(b);
    return b;
  }

  /** Serialise a blocktable into a new indirect block. */
  writeIndirect(key: bigint, keybits: number, table: readonly TableEntry[], checkAlgo: number): Blockref {
    const buf = Buffer.alloc(table.length * BLOCKREF_BYTES);
    // (Empty slots stay the zeros they were allocated as.)
    for (let i = 0; i < table.length; i++) if (table[i].type !== BrefType.EMPTY) encodeEntry(table[i], buf, i * BLOCKREF_BYTES);
    const b = this.writeMeta(BrefType.INDIRECT, key, keybits, buf, checkAlgo);
    rollupStats(b, table);
    // The next commit walks this table again (a file's block map, the inode
    // index): keep its bytes rather than read and verify them back.
    this.reader.seed(b, buf);
    return b;
  }
}

/**
 * A parent bref's statistics summarise its subtree, as the reference keeps
 * them: data_count is the physical bytes of every block below (data,
 * indirect, inode and long-name blocks), inode_count the inodes below. A
 * PFS root counts what is under it but not itself (the super-root's totals
 * equal the sum of its PFSs). leaf_count is a heuristic (capped at 65535).
 */
export function rollupStats(parent: Blockref, table: readonly TableEntry[]): void {
  let data = 0n;
  let inodes = 0n;
  let leaves = 0;
  for (const e of table) {
    if (e.type === BrefType.EMPTY) continue;
    // A SlotRef's fields are read from its bytes where it lies.
    const slot = isSlotRef(e);
    const radix = slot ? e.raw[e.off + 0x20] & 0x3f : Number(e.dataOff & 0x3fn);
    const stat = (at: number) => (slot ? e.raw.readBigUInt64LE(e.off + 0x30 + at) : e.embed.readBigUInt64LE(at));
    const bytes = radix === 0 ? 0n : 1n << BigInt(radix);
    if (e.type === BrefType.INDIRECT) {
      data += bytes + stat(0);
      inodes += stat(8);
      leaves += slot ? e.raw.readUInt16LE(e.off + 6) : e.leafCount;
    } else if (e.type === BrefType.INODE) {
      const self = (slot ? e.raw[e.off + 5] : e.flags) & BREF_FLAG_PFSROOT ? 0n : 1n;
      data += self * bytes + stat(0);
      inodes += self + stat(8);
      leaves += 1;
    } else {
      data += bytes;
      leaves += 1;
    }
  }
  parent.embed.writeBigUInt64LE(data, 0);
  parent.embed.writeBigUInt64LE(inodes, 8);
  parent.leafCount = Math.min(leaves, 65535);
}


/**
 * The check and compression methods an inode asks for. Values no reader
 * knows (a damaged inode) fall back to the defaults rather than failing every
 * commit of the mount.
 */
export function inodeCheck(d: InodeData): number {
  const c = d.meta.checkAlgo & 15;
  return c <= CheckMethod.SHA192 ? c : CheckMethod.XXHASH64;
}
export function inodeComp(d: InodeData): number {
  const algo = d.meta.compAlgo & 15;
  return algo <= CompMethod.ZLIB ? d.meta.compAlgo : CompMethod.LZ4;
}

/** Write an inode block; its bref's statistics sum up `table` (the inode's blockset). */
export function writeInode(w: BlockWriter, data: InodeData, key: bigint, table: Blockref[], flags = 0): Blockref {
  const b = w.writeMeta(BrefType.INODE, key, 0, encodeInode(data), inodeCheck(data), inodeComp(data) & 15);
  b.flags = flags;
  rollupStats(b, data.meta.opFlags & OPFLAG_DIRECTDATA ? [] : table);
  return b;
}
