// Bulkfree: find every block reachable from any valid volume header (the
// newest and the older copies still on media, which fsck and a fallback
// mount rely on), then return every other allocated 16 KiB block to the
// freemap. Runs between flushes, when nothing uncommitted holds media, so
// the staging state (10) the reference needs for a live scan is not needed:
// unreferenced blocks go straight from 11 to 00.
import { BLOCKREF_BYTES, Blockref, brefBytes, brefRadix, BrefType, decodeBlockrefView, rawInodeBlockset, VolumeHeader } from '../media';
import { readHeaderCandidates } from '../store';
import { BlockReader } from './blocks';
import { MediaError } from './errors';
import { FreemapAllocator } from './freemap';

const BLK_SHIFT = 14;

export interface BulkfreeResult {
  /** Bytes returned to the freemap. */
  freed: number;
  /** Blocks referenced by a tree but marked free (repaired to used). */
  fixedUp: number;
  /** Headers whose trees were scanned. */
  headers: number;
  ms: number;
}

/** Set of 16 KiB blocks referenced by media, over [0, total). */
export class BlockBitmap {
  private bits: Uint32Array;
  constructor(readonly total: number) {
    this.bits = new Uint32Array(Math.ceil(total / 2 ** BLK_SHIFT / 32) + 1);
  }
  /** Mark every 16 KiB block the byte range touches. */
  markRange(off: number, bytes: number): void {
    if (off >= this.total) return;
    const first = Math.floor(off / 2 ** BLK_SHIFT);
    const last = Math.floor((off + bytes - 1) / 2 ** BLK_SHIFT);
    for (let b = first; b <= last; b++) this.bits[b >>> 5] |= 1 << (b & 31);
  }
  has(block16k: number): boolean {
    return (this.bits[block16k >>> 5] & (1 << (block16k & 31))) !== 0;
  }
}

/**
 * The INODE and INDIRECT blocks a scan has descended into, so that trees
 * sharing most of their blocks (the older headers' trees, snapshots) are
 * walked once: one byte per KiB of media (the block's size radix), in
 * chunks of 1 MiB of media made as blocks are met there. (A Set of their
 * data_offs cost ~60 bytes a block: with 300 000 inodes, a bulkfree peaked
 * at 270 MiB.) Exact like that Set: a block met at an offset already taken
 * by one of another size, or at an offset that is not a multiple of 1 KiB
 * (damaged media only), is remembered by its data_off in a Set.
 */
export class SeenBlocks {
  private chunks = new Map<number, Uint8Array>();
  private others = new Set<number>();

  /** Whether this is the first time the block at byte `off`, 2^`radix` bytes, is met (it is recorded). */
  first(off: number, radix: number): boolean {
    const kib = off / 1024;
    if (Number.isInteger(kib)) {
      const ci = Math.floor(kib / 1024);
      let c = this.chunks.get(ci);
      if (!c) this.chunks.set(ci, (c = new Uint8Array(1024)));
      const at = kib % 1024;
      if (c[at] === radix) return false;
      if (c[at] === 0) {
        c[at] = radix;
        return true;
      }
    }
    const dataOff = off + radix;
    if (this.others.has(dataOff)) return false;
    this.others.add(dataOff);
    return true;
  }
}

/** Walk a header's super-root tree, marking every block with media. */
export function markReachable(reader: BlockReader, hdr: VolumeHeader, map: BlockBitmap, seen: SeenBlocks, onBlock?: (bytes: number) => void): void {
  markFrom(reader, hdr.sroot, map, seen, onBlock);
}

/**
 * Mark every block with media under `roots` (blockrefs of a super-root, or
 * pinned PFS roots). Indirect blocks are scanned in place: a leaf (data, a
 * long directory entry name) is marked from its slot without being
 * decoded, and only what is descended into (inodes, indirect blocks) is.
 */
export function markFrom(reader: BlockReader, roots: readonly Blockref[], map: BlockBitmap, seen: SeenBlocks, onBlock?: (bytes: number) => void): void {
  const stack: Blockref[] = roots.filter((b) => b.type !== BrefType.EMPTY);
  const slots = (raw: Buffer, at: Blockref): void => {
    for (let o = 0; o + BLOCKREF_BYTES <= raw.length; o += BLOCKREF_BYTES) {
      const type = raw[o];
      if (type === BrefType.EMPTY) continue;
      if (type === BrefType.INDIRECT || type === BrefType.INODE) {
        stack.push(decodeBlockrefView(raw, o));
        continue;
      }
      if (type !== BrefType.DATA && type !== BrefType.DIRENT) throw new MediaError(`unexpected ${type} blockref in a filesystem tree`, at.dataOff);
      const lo = raw.readUInt32LE(o + 0x20);
      const radix = lo & 0x3f;
      if (radix === 0) continue;
      const bytes = 2 ** radix;
      onBlock?.(bytes);
      map.markRange(raw.readUInt32LE(o + 0x24) * 2 ** 32 + (lo - radix), bytes);
    }
  };
  while (stack.length) {
    const b = stack.pop()!;
    const bytes = brefBytes(b);
    if (bytes === 0) continue;
    onBlock?.(bytes);
    const off = Number(b.dataOff & ~0x3fn);
    map.markRange(off, bytes);
    if (b.type === BrefType.INDIRECT) {
      if (seen.first(off, brefRadix(b))) slots(reader.readPhysical(b), b);
    } else if (b.type === BrefType.INODE) {
      if (!seen.first(off, brefRadix(b))) continue;
      const set = rawInodeBlockset(reader.readPhysical(b));
      if (set) for (const c of set) if (c.type !== BrefType.EMPTY) stack.push(c);
    } else if (b.type !== BrefType.DATA && b.type !== BrefType.DIRENT) {
      throw new MediaError(`unexpected ${b.type} blockref in a filesystem tree`, b.dataOff);
    }
  }
}

/**
 * Scan and free. The caller must have flushed: any block allocated but not
 * yet referenced by a written header would be taken for garbage.
 */
export function bulkfree(
  reader: BlockReader,
  alloc: FreemapAllocator,
  current: VolumeHeader,
  progress?: (done: number, total: number) => void,
  /** PFS roots of committed states still being read (a mirror-read of a mounted master): kept too. */
  pinned: readonly Blockref[] = [],
): BulkfreeResult {
  const t0 = Date.now();
  const total = Number(current.totalSize || current.voluSize);
  const map = new BlockBitmap(total);
  const seen = new SeenBlocks();
  let headers = 0;
  const trees: VolumeHeader[] = [current];
  for (const v of reader.vols.volumes) {
    if (v.id !== 0) continue;
    for (const c of readHeaderCandidates(v.dev)) {
      if (c.ok && c.header && c.header.mirrorTid !== current.mirrorTid) trees.push(c.header);
    }
  }
  // Progress: bytes met while scanning the tree in force, against what the
  // freemap says is allocated (shared blocks are met once; older trees add little).
  const used = Math.max(1, Number(current.allocatorSize - current.allocatorFree));
  let met = 0;
  let next = 0;
  const onBlock = progress
    ? (bytes: number) => {
        met += bytes;
        if (met >= next) {
          next = met + used / 100;
          progress(Math.min(met, used), used);
        }
      }
    : undefined;
  // The tree in force and the pinned trees must read completely (nothing
  // can be proven unused otherwise, and a pin's reader relies on it), and
  // they go first: an older tree that fails part-way leaves blocks recorded
  // as walked whose children it never reached, which a later walk would skip.
  markReachable(reader, current, map, seen, onBlock);
  headers++;
  markFrom(reader, pinned, map, seen);
  for (const h of trees) {
    if (h === current) continue;
    try {
      markReachable(reader, h, map, seen);
      headers++;
    } catch {
      // An older header whose tree is already damaged protects nothing.
    }
  }
  const r = alloc.releaseUnreferenced((blk) => map.has(blk));
  progress?.(used, used);
  return { freed: r.freed, fixedUp: r.fixedUp, headers, ms: Date.now() - t0 };
}
