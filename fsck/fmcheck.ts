// The freemap against the trees: every 16 KiB block a tree references must
// be allocated in the leaf covering it (a block in use but marked free will
// be handed out again: corruption), and space marked allocated that no
// volume header's tree references is leaked (harmless until bulkfree, but
// reported with its size). Leaves are also checked on their own: reserved
// segments fully allocated, avail matching the bitmap, linear in range.
import { Blockref, BMAP_BITMAP, bmapAvail, bmapBase, bmapLinear, verifyCheck } from '../src/media';
import { VolumeSet } from '../src/store';
import { BLOCK, BlockBits, CHUNK_BYTES } from './bitmap';
import { Finding, hex16, Report } from './findings';
import { GIB, SEG } from './walk';

const K16 = 16384;
const ALL = 0xffffffff;

export interface FreemapStats {
  leaves: number;
  /** 16 KiB blocks referenced by the zone in force / by any zone. */
  usedBlocks: number;
  anyBlocks: number;
  /** Marked allocated (11) but referenced by no zone. */
  leakedBytes: number;
  /** Referenced by the zone in force but marked free (00). */
  usedFreeBlocks: number;
  /** ...of which mount-time recovery would re-mark (mirror_tid > freemap_tid). */
  recoveredBlocks: number;
  /** Referenced only by older zones and marked free. */
  olderFreeBlocks: number;
  stagedBlocks: number;
  reservedPairs: number;
  /** 1 GiB regions with referenced blocks but no leaf. */
  missingLeaves: number;
  reservedFree: number;
  availMismatch: number;
  /** Non-free pairs in allocatable segments (for allocator_free). */
  allocatedPairs: number;
  /** Every leaf was readable (allocatedPairs is complete). */
  complete: boolean;
}

export const newFreemapStats = (): FreemapStats => ({
  leaves: 0,
  usedBlocks: 0,
  anyBlocks: 0,
  leakedBytes: 0,
  usedFreeBlocks: 0,
  recoveredBlocks: 0,
  olderFreeBlocks: 0,
  stagedBlocks: 0,
  reservedPairs: 0,
  missingLeaves: 0,
  reservedFree: 0,
  availMismatch: 0,
  allocatedPairs: 0,
  complete: true,
});

export interface FreemapGeometry {
  total: number;
  /** roundup(allocator_beg, 4 MiB): everything below is reserved at leaf creation. */
  lowest: number;
}

/** The allocatable bmaps of the leaf at `key`: [lokey, hikey), as leaf creation leaves them. */
export function allocatableRange(key: number, g: FreemapGeometry): [number, number] {
  const lokey = Math.max(g.lowest, key + SEG);
  const hikey = Math.min(key + GIB, Math.floor(g.total / SEG) * SEG);
  return [lokey, hikey];
}

export function readLeaf(vols: VolumeSet, b: Blockref): Buffer | null {
  try {
    const buf = vols.read(Number(b.dataOff & ~0x3fn), 32768);
    return verifyCheck(5, b.check, buf) ? buf : null;
  } catch {
    return null;
  }
}

/** bmaps whose linear cursor sits inside a 16 KiB block: that block's tail is promised free. */
export function linearWatches(vols: VolumeSet, leaves: Blockref[], lo: number, hi: number, g: FreemapGeometry): Map<number, number> {
  const out = new Map<number, number>();
  for (const b of leaves) {
    const key = Number(b.key);
    if (key < lo || key >= hi) continue;
    const buf = readLeaf(vols, b);
    if (!buf) continue;
    const [lokey, hikey] = allocatableRange(key, g);
    for (let n = 0; n < 256; n++) {
      const seg = key + n * SEG;
      if (seg < lokey || seg >= hikey) continue;
      const linear = buf.readInt32LE(n * 128);
      if (linear <= 0 || linear >= SEG || (linear & (K16 - 1)) === 0) continue;
      out.set(Math.floor((seg + linear) / K16), seg + linear);
    }
  }
  return out;
}

const pairAt = (lo: number, hi: number, i: number): number => (i < 16 ? (lo >>> (i * 2)) & 3 : (hi >>> ((i - 16) * 2)) & 3);

/**
 * Compare the leaves of the zone in force with the blocks referenced, for
 * the window [lo, hi). `recovered` (optional) holds blocks mount recovery
 * would re-mark because the freemap is older than the tree.
 */
export function compareFreemap(
  vols: VolumeSet,
  leaves: Blockref[],
  lo: number,
  hi: number,
  g: FreemapGeometry,
  best: BlockBits,
  any: BlockBits,
  recovered: BlockBits | null,
  st: FreemapStats,
  report: Report,
  zone: number,
): void {
  const add = (f: Omit<Finding, 'zone'>) => report.add({ ...f, zone });
  const usedFreeAt: number[] = [];
  let usedFree = 0;
  const haveLeaf = new Set<number>();
  for (const b of leaves) {
    const key = Number(b.key);
    if (key < lo || key >= hi) continue;
    haveLeaf.add(key);
    st.leaves++;
    const buf = readLeaf(vols, b);
    if (!buf) {
      st.complete = false;
      continue; // reported by the walk
    }
    const [lokey, hikey] = allocatableRange(key, g);
    let reservedBad = 0;
    for (let n = 0; n < 256; n++) {
      const seg = key + n * SEG;
      const o = bmapBase(n) + BMAP_BITMAP;
      if (seg < lokey || seg >= hikey) {
        for (let w = 0; w < 16; w++) if (buf.readUInt32LE(o + w * 4) !== ALL) reservedBad++;
        continue;
      }
      const linear = bmapLinear(buf, n);
      const avail = bmapAvail(buf, n);
      let free00 = 0;
      const gblk0 = seg / BLOCK;
      for (let w = 0; w < 8; w++) {
        const plo = buf.readUInt32LE(o + w * 8);
        const phi = buf.readUInt32LE(o + 4 + w * 8);
        const gb = gblk0 + w * 32;
        const bb = best.bits32(gb);
        const ab = any.bits32(gb);
        if (plo === ALL && phi === ALL) {
          st.allocatedPairs += 32;
          if (ab !== -1) {
            for (let i = 0; i < 32; i++) if (!((ab >>> i) & 1)) st.leakedBytes += K16;
          }
          continue;
        }
        if (plo === 0 && phi === 0 && bb === 0 && ab === 0) {
          free00 += 32;
          continue;
        }
        for (let i = 0; i < 32; i++) {
          const p = pairAt(plo, phi, i);
          const B = (bb >>> i) & 1;
          const A = (ab >>> i) & 1;
          if (p === 0) {
            free00++;
            if (B) {
              if (recovered?.has(gb + i)) st.recoveredBlocks++;
              else {
                st.usedFreeBlocks++;
                usedFree++;
                if (usedFreeAt.length < 8) usedFreeAt.push((gb + i) * K16);
              }
            } else if (A) st.olderFreeBlocks++;
            continue;
          }
          st.allocatedPairs++;
          if (p === 1) st.reservedPairs++;
          else if (p === 2) st.stagedBlocks++;
          else if (!A) st.leakedBytes += K16;
        }
      }
      if (avail !== free00 * K16) st.availMismatch++;
      if (linear < 0 || linear > SEG) st.availMismatch++;
    }
    if (reservedBad) {
      st.reservedFree += reservedBad;
      add({
        severity: 'error',
        code: 'freemap-reserved',
        message: `freemap leaf ${hex16(b.key)} marks reserved space (freemap/volume-header segment, below allocator_beg or past the end) free`,
        fixable: true,
      });
    }
  }
  // Referenced space in regions without a leaf: the allocator would create
  // the leaf later with everything free and hand that space out.
  for (const c of best.usedChunks()) {
    const key = c * CHUNK_BYTES;
    if (key < lo || key >= hi || haveLeaf.has(key)) continue;
    const [lokey, hikey] = allocatableRange(key, g);
    let n = 0;
    for (const blk of best.blocksIn(c)) {
      const off = blk * BLOCK;
      if (off >= lokey && off < hikey && !recovered?.has(blk)) n++;
    }
    if (n) {
      st.missingLeaves++;
      st.usedFreeBlocks += n;
      add({
        severity: 'error',
        code: 'freemap-missing-leaf',
        message: `${n} referenced 16 KiB blocks in the 1 GiB at ${hex16(key)}, which has no freemap leaf (the space would be allocated again)`,
        fixable: true,
      });
    }
  }
  if (usedFreeAt.length) {
    add({
      severity: 'error',
      code: 'used-free',
      message: `${usedFree} blocks of 16 KiB in use but marked free in the freemap, e.g. at ${usedFreeAt.map((x) => '0x' + x.toString(16)).join(', ')}`,
      fixable: true,
    });
  }
}
