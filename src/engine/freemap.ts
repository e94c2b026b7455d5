// The freemap allocator (see docs/notes/freemap.md): 1 GiB leaves of 256
// bmaps, 2 bits per 16 KiB block (00 free, 10 staged by bulkfree, 11 used),
// sub-16 KiB blocks packed through each bmap's `linear` cursor, one block
// type per 4 MiB segment (class), freemap blocks themselves in the reserved
// first 4 MiB of every GiB, each moving to the next of 8 rotation slots
// whenever a commit changes it.
import {
  Blockref,
  bmapAvail,
  bmapClass,
  bmapLinear,
  bmapPair,
  setBmapAvail,
  setBmapClass,
  setBmapFull,
  setBmapLinear,
  setBmapPairs,
  BrefType,
  CheckMethod,
  emptyBlockref,
  encMethods,
  encodeEntry,
  FREEMAP_BLOCK_SIZE,
  FREEMAP_COUNT,
  FREEMAP_LEVEL0_RADIX,
  FREEMAP_LEVEL1_RADIX,
  FREEMAP_LEVELN_PSIZE,
  icrc32,
  PBUFSIZE,
  SET_COUNT,
  ZONE_FREEMAP_00,
  ZONE_FREEMAP_INC,
  NFREEMAPS,
  VolumeHeader,
} from '../media';
import { VolumeSet } from '../store';
import { applyUpdates, LeafUpdate, padTable, TreeContext } from './apply';
import { BlockReader } from './blocks';
import { FsError, hex, MediaError } from './errors';
import { lookupKey } from './tree';
import { Allocator } from './writer';

const SEG = 1 << FREEMAP_LEVEL0_RADIX; // 4 MiB
const GIB = 2 ** FREEMAP_LEVEL1_RADIX;
const SEG_PER_LEAF = FREEMAP_COUNT; // 256
const BLK = FREEMAP_BLOCK_SIZE; // 16 KiB
const LEAF_BYTES = FREEMAP_LEVELN_PSIZE; // 32 KiB
const LINEAR_FULL = SEG;

/** One 1 GiB leaf held in memory: 256 bmaps of 128 bytes. */
interface Leaf {
  key: number;
  /** The committed bref (null for a leaf created since the last commit). */
  bref: Blockref | null;
  buf: Buffer;
  /** avail recorded in the leaf bref at creation (never updated, as the reference). */
  createdAvail: bigint;
  dirty: boolean;
}

/** Level (1 = leaf .. 5) of a freemap block from its keybits. */
function levelOf(keybits: number): number {
  switch (keybits) {
    case 30:
      return 1;
    case 38:
      return 2;
    case 46:
      return 3;
    case 54:
      return 4;
    case 62:
      return 5;
    default:
      throw new MediaError(`freemap block with keybits ${keybits}`);
  }
}

/** Media offset of the rotation slot `r` for a freemap block (key, keybits). */
export function freemapSlot(key: bigint, keybits: number, r: number): bigint {
  const base = key & ~((1n << BigInt(keybits)) - 1n);
  const slot = ZONE_FREEMAP_00 + ZONE_FREEMAP_INC * r + (levelOf(keybits) - 1);
  return base + BigInt(slot * PBUFSIZE);
}

/** Rotation index of a committed freemap block, or -1 if it has none. */
function rotationOf(dataOff: bigint): number {
  const off = dataOff & ~0x3fn;
  if (off === 0n) return -1;
  const blk = Number((off & BigInt(SEG - 1)) / BigInt(PBUFSIZE));
  const r = Math.floor((blk - ZONE_FREEMAP_00) / ZONE_FREEMAP_INC);
  return r >= 0 && r < NFREEMAPS ? r : -1;
}

export class FreemapAllocator implements Allocator {
  private leaves = new Map<number, Leaf>();
  /** Committed freemap node brefs by "key/keybits", for rotating them on rewrite. */
  private nodes = new Map<string, Blockref>();
  private free: bigint;
  private total: number;
  private readonly lowest: number;
  /** Per-type search cursors (media offsets). */
  private hint = new Map<number, number>();
  private relaxed = false;
  /** Allocations made and bytes allocated since open (for statistics and reclaim pacing). */
  allocations = 0;
  bytesAllocated = 0;

  constructor(
    private readonly vols: VolumeSet,
    private readonly reader: BlockReader,
    private readonly hdr: VolumeHeader,
  ) {
    this.free = hdr.allocatorFree;
    this.total = Number(hdr.totalSize || hdr.voluSize);
    this.lowest = Math.ceil(Number(hdr.allocatorBeg) / SEG) * SEG;
  }

  freeBytes(): number {
    return Number(this.free);
  }

  // ------------------------------------------------------------------ leaves

  private leafFor(key: number): Leaf {
    let leaf = this.leaves.get(key);
    if (leaf) return leaf;
    const b = lookupKey(this.reader, this.hdr.freemap, BigInt(key));
    if (b && b.type === BrefType.FREEMAP_LEAF && b.key === BigInt(key) && b.keybits === FREEMAP_LEVEL1_RADIX) {
      const buf = Buffer.from(this.reader.readPhysical(b));
      if (buf.length !== LEAF_BYTES) throw new MediaError(`freemap leaf ${hex(b.dataOff)} has ${buf.length} bytes`, b.dataOff);
      leaf = { key, bref: b, buf, createdAvail: b.check.readBigUInt64LE(8), dirty: false };
    } else if (b) {
      throw new MediaError(`freemap lookup for ${hex(BigInt(key))} found a ${b.type}/${b.keybits} block`, b.dataOff);
    } else {
      leaf = this.newLeaf(key);
    }
    this.leaves.set(key, leaf);
    return leaf;
  }

  /** A leaf as the reference initialises it: reserved, pre-allocator and past-end segments full. */
  private newLeaf(key: number): Leaf {
    const buf = Buffer.alloc(LEAF_BYTES);
    const lokey = Math.max(this.lowest, key + SEG);
    let hikey = key + GIB;
    if (hikey > this.total) hikey = Math.floor(this.total / SEG) * SEG;
    let full = 0;
    for (let n = 0; n < SEG_PER_LEAF; n++) {
      const seg = key + n * SEG;
      if (seg < lokey || seg >= hikey) {
        setBmapFull(buf, n);
        full++;
      } else {
        setBmapAvail(buf, n, SEG);
      }
    }
    return { key, bref: null, buf, createdAvail: BigInt(GIB - SEG * full), dirty: true };
  }

  private pair(leaf: Leaf, n: number, blk: number): number {
    return bmapPair(leaf.buf, n, blk);
  }

  private setPairs(leaf: Leaf, n: number, blk: number, count: number, v: number): void {
    setBmapPairs(leaf.buf, n, blk, count, v);
  }

  // -------------------------------------------------------------- allocation

  alloc(bytes: number, type: number): number {
    if (bytes < 1024 || bytes > PBUFSIZE || (bytes & (bytes - 1)) !== 0) throw new Error(`bad allocation size ${bytes}`);
    const cls = (type << 8) | 16;
    for (let pass = 0; pass < 2; pass++) {
      const relaxed = this.relaxed || pass === 1;
      const start = Math.max(this.lowest, Math.min(this.hint.get(type) ?? this.lowest, this.total - 1));
      const startLeaf = Math.floor(start / GIB) * GIB;
      let leafKey = startLeaf;
      let first = true;
      do {
        if (leafKey + SEG < this.total) {
          const leaf = this.leafFor(leafKey);
          const n0 = first ? Math.floor((start - leafKey) / SEG) : 0;
          for (let n = n0; n < SEG_PER_LEAF; n++) {
            const off = this.tryBmap(leaf, n, bytes, cls, relaxed);
            if (off >= 0) {
              const at = leafKey + n * SEG + off;
              this.hint.set(type, leafKey + n * SEG);
              this.allocations++;
              this.bytesAllocated += bytes;
              return at;
            }
          }
        }
        first = false;
        leafKey += GIB;
        if (leafKey >= this.total) leafKey = 0;
      } while (leafKey !== startLeaf);
      // One more look at the part of the first leaf before the cursor.
      const leaf = this.leafFor(startLeaf);
      for (let n = 0; n < Math.floor((start - startLeaf) / SEG); n++) {
        const off = this.tryBmap(leaf, n, bytes, cls, relaxed);
        if (off >= 0) {
          this.hint.set(type, startLeaf + n * SEG);
          this.allocations++;
          this.bytesAllocated += bytes;
          return startLeaf + n * SEG + off;
        }
      }
      if (!relaxed) continue;
      break;
    }
    throw new FsError('ENOSPC', 'no free space left on the volume');
  }

  /** Try to place `bytes` in bmap `n` of a leaf; returns the offset in the segment or -1. */
  private tryBmap(leaf: Leaf, n: number, bytes: number, cls: number, relaxed: boolean): number {
    const buf = leaf.buf;
    const bclass = bmapClass(buf, n);
    if (!relaxed && bclass !== 0 && bclass !== cls) return -1;
    const avail = bmapAvail(buf, n);
    const linear = bmapLinear(buf, n);
    if (bytes < BLK) {
      // Continue packing the partly used 16 KiB block, if it has room.
      const lin = linear & (BLK - 1);
      if (lin !== 0 && lin + bytes <= BLK && linear < LINEAR_FULL && this.pair(leaf, n, linear >> 14) === 3) {
        setBmapLinear(buf, n, linear + bytes);
        this.markDirty(leaf);
        return linear;
      }
    }
    if (avail === 0) return -1;
    const count = bytes >= BLK ? bytes / BLK : 1;
    for (let blk = 0; blk + count <= SEG_PER_LEAF; blk += count) {
      let freeRun = true;
      for (let i = 0; i < count; i++) {
        if (this.pair(leaf, n, blk + i) !== 0) {
          freeRun = false;
          break;
        }
      }
      if (!freeRun) continue;
      this.setPairs(leaf, n, blk, count, 3);
      setBmapAvail(buf, n, avail - count * BLK);
      if (bclass === 0) setBmapClass(buf, n, cls);
      const off = blk * BLK;
      if (bytes < BLK) setBmapLinear(buf, n, off + bytes);
      this.free -= BigInt(count * BLK);
      this.markDirty(leaf);
      return off;
    }
    return -1;
  }

  /** Whether a commit has freemap changes to write. */
  get dirty(): boolean {
    for (const l of this.leaves.values()) if (l.dirty) return true;
    return false;
  }

  private markDirty(leaf: Leaf): void {
    leaf.dirty = true;
  }

  /**
   * Mark a block as in use (11) without allocating it: for blocks referenced
   * by media that the freemap does not cover (repair, bulkfree fix-ups).
   */
  markUsed(dataOff: bigint): void {
    const radix = Number(dataOff & 0x3fn);
    if (radix === 0) return;
    const off = Number(dataOff & ~0x3fn);
    const bytes = 2 ** radix;
    if (off < this.lowest || off + bytes > this.total) return;
    const leafKey = Math.floor(off / GIB) * GIB;
    const leaf = this.leafFor(leafKey);
    const n = Math.floor((off - leafKey) / SEG);
    const segOff = off - leafKey - n * SEG;
    const first = Math.floor(segOff / BLK);
    const last = Math.floor((segOff + bytes - 1) / BLK);
    for (let b = first; b <= last; b++) {
      if (this.pair(leaf, n, b) === 0) {
        this.free -= BigInt(BLK);
        setBmapAvail(leaf.buf, n, bmapAvail(leaf.buf, n) - BLK);
      }
      this.setPairs(leaf, n, b, 1, 3);
    }
    leaf.dirty = true;
  }

  /** Every leaf that exists, committed or new, loaded. */
  private allLeaves(): Leaf[] {
    const walk = (set: readonly Blockref[]) => {
      for (const b of set) {
        if (b.type === BrefType.FREEMAP_NODE) walk(this.reader.readBlockrefs(b));
        else if (b.type === BrefType.FREEMAP_LEAF) this.leafFor(Number(b.key));
      }
    };
    walk(this.hdr.freemap);
    return [...this.leaves.values()];
  }

  /**
   * Bulkfree's second half: every allocated 16 KiB block that `isUsed`
   * (indexed by offset >> 14) does not claim goes back to free; a used block
   * marked free is corrected. Segments reserved at leaf creation stay full.
   */
  releaseUnreferenced(isUsed: (block16k: number) => boolean): { freed: number; fixedUp: number } {
    let freed = 0;
    let fixedUp = 0;
    for (const leaf of this.allLeaves()) {
      const lokey = Math.max(this.lowest, leaf.key + SEG);
      const hikey = Math.min(leaf.key + GIB, Math.floor(this.total / SEG) * SEG);
      for (let n = 0; n < SEG_PER_LEAF; n++) {
        const seg = leaf.key + n * SEG;
        if (seg < lokey || seg >= hikey) continue;
        let avail = bmapAvail(leaf.buf, n);
        let changed = false;
        let anyUsed = false;
        for (let blk = 0; blk < SEG_PER_LEAF; blk++) {
          const st = this.pair(leaf, n, blk);
          const used = isUsed(seg / BLK + blk);
          if (st !== 0 && !used) {
            this.setPairs(leaf, n, blk, 1, 0);
            avail += BLK;
            freed += BLK;
            changed = true;
          } else if (st === 2 && used) {
            this.setPairs(leaf, n, blk, 1, 3); // staged by a reference bulkfree, but in use
            changed = true;
          } else if (st === 0 && used) {
            this.setPairs(leaf, n, blk, 1, 3);
            avail -= BLK;
            fixedUp++;
            changed = true;
          }
          if (used) anyUsed = true;
        }
        if (!changed) continue;
        setBmapAvail(leaf.buf, n, avail);
        const linear = bmapLinear(leaf.buf, n);
        if (!anyUsed) {
          setBmapLinear(leaf.buf, n, 0);
          setBmapClass(leaf.buf, n, 0);
        } else if (linear & (BLK - 1) && this.pair(leaf, n, linear >> 14) === 0) {
          // The partly packed block was freed: nothing may be packed after it.
          setBmapLinear(leaf.buf, n, (linear + BLK - 1) & ~(BLK - 1));
        }
        leaf.dirty = true;
      }
    }
    this.free += BigInt(freed) - BigInt(fixedUp * BLK);
    this.relaxed = false;
    return { freed, fixedUp };
  }

  // ------------------------------------------------------------------ commit

  private ctx(tid: bigint): TreeContext {
    return {
      reader: this.reader,
      indirectBytes: () => LEAF_BYTES,
      // Freemap nodes exist only at the fixed levels whose slots are reserved.
      allowedBits: (bits) => bits === 38 || bits === 46 || bits === 54 || bits === 62,
      writeIndirect: (key, keybits, table) => {
        const old = this.nodes.get(`${key}/${keybits}`);
        const r = old ? (rotationOf(old.dataOff) + 1) % NFREEMAPS : 0;
        const buf = Buffer.alloc(LEAF_BYTES);
        let children = 0;
        for (let i = 0; i < table.length; i++) {
          if (table[i].type === BrefType.EMPTY) continue;
          children++;
          encodeEntry(table[i], buf, i * 128);
        }
        const b = this.freemapBref(BrefType.FREEMAP_NODE, key, keybits, r, buf, tid);
        b.embed.writeBigUInt64LE(BigInt(LEAF_BYTES * children), 0);
        this.nodes.set(`${key}/${keybits}`, b);
        return b;
      },
    };
  }

  private freemapBref(type: number, key: bigint, keybits: number, r: number, buf: Buffer, tid: bigint): Blockref {
    const off = freemapSlot(key, keybits, r);
    const b = emptyBlockref();
    b.type = type;
    b.methods = encMethods(CheckMethod.FREEMAP, 0);
    b.key = key;
    b.keybits = keybits;
    b.dataOff = off | 15n;
    b.mirrorTid = tid;
    b.modifyTid = tid;
    b.check.writeUInt32LE(icrc32(buf), 0);
    this.vols.write(Number(off), buf);
    this.reader.invalidate(b.dataOff);
    return b;
  }

  /** Write every changed leaf (and the nodes above it) for transaction `tid`. */
  commit(tid: bigint): { freemap: Blockref[]; free: bigint } {
    this.collectNodes();
    const updates: LeafUpdate[] = [];
    for (const leaf of this.leaves.values()) {
      if (!leaf.dirty) continue;
      const r = leaf.bref ? (rotationOf(leaf.bref.dataOff) + 1) % NFREEMAPS : 0;
      const b = this.freemapBref(BrefType.FREEMAP_LEAF, BigInt(leaf.key), FREEMAP_LEVEL1_RADIX, r, leaf.buf, tid);
      b.check.writeUInt32LE(0xffffffff, 4); // bigmask: every radix may fit
      b.check.writeBigUInt64LE(leaf.createdAvail, 8);
      updates.push({ key: b.key, bref: b });
    }
    if (!updates.length) return { freemap: this.hdr.freemap, free: this.free };
    updates.sort((a, b) => (a.key < b.key ? -1 : 1));
    const table = applyUpdates(this.ctx(tid), this.hdr.freemap, SET_COUNT, updates);
    const freemap = padTable(table, SET_COUNT);
    for (const u of updates) {
      const leaf = this.leaves.get(Number(u.key))!;
      leaf.bref = u.bref;
      leaf.dirty = false;
    }
    return { freemap, free: this.free };
  }

  /** Remember where the committed freemap nodes sit, so rewrites rotate from there. */
  private collectNodes(): void {
    const walk = (set: readonly Blockref[]) => {
      for (const b of set) {
        if (b.type !== BrefType.FREEMAP_NODE) continue;
        const k = `${b.key}/${b.keybits}`;
        if (this.nodes.get(k)?.dataOff === b.dataOff) continue;
        this.nodes.set(k, b);
        walk(this.reader.readBlockrefs(b));
      }
    };
    walk(this.hdr.freemap);
  }

  /**
   * The volume now ends at `total` (growfs): segments between the old end
   * and the new one become free as a leaf created now would have them, in
   * the leaf that already covers the old end (its init marked them full) and
   * in leaves made later. Returns the bytes added to the free count. The caller
   * commits; rollback() followed by resize(old) undoes it.
   */
  grow(total: number): number {
    // As the reference: allocator_free grows by what allocator_size grows by
    // (fsck reads free as size minus what the leaves mark allocated).
    const gained = total - this.total;
    const oldEnd = Math.floor(this.total / SEG) * SEG;
    this.total = total;
    const newEnd = Math.floor(total / SEG) * SEG;
    const tailKey = Math.floor(oldEnd / GIB) * GIB;
    if (oldEnd % GIB !== 0 && this.hasLeaf(tailKey)) {
      const leaf = this.leafFor(tailKey);
      for (let n = (oldEnd - tailKey) / SEG; n < SEG_PER_LEAF && tailKey + n * SEG < newEnd; n++) {
        setBmapPairs(leaf.buf, n, 0, SEG_PER_LEAF, 0);
        setBmapAvail(leaf.buf, n, SEG);
        setBmapClass(leaf.buf, n, 0);
        setBmapLinear(leaf.buf, n, 0);
      }
      leaf.dirty = true;
    }
    this.free += BigInt(gained);
    return gained;
  }

  /** Set the volume's end without touching leaves (undoing grow after rollback). */
  resize(total: number): void {
    this.total = total;
  }

  /** Whether a leaf for `key` exists in memory or on media. */
  private hasLeaf(key: number): boolean {
    if (this.leaves.has(key)) return true;
    const b = lookupKey(this.reader, this.hdr.freemap, BigInt(key));
    return !!b && b.type === BrefType.FREEMAP_LEAF && b.key === BigInt(key);
  }

  /** Drop uncommitted changes: leaves are re-read from media on next use. */
  rollback(): void {
    this.leaves.clear();
    this.nodes.clear();
    // Place the retry where the failed attempt went: it rewrites those blocks
    // instead of spreading over more of the (perhaps full) host disk.
    this.hint.clear();
    this.free = this.hdr.allocatorFree;
  }
}
