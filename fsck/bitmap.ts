// Which 16 KiB blocks (the freemap's granularity) the trees reference.
//
// One bit per block, in 1 GiB chunks (8 KiB each) allocated on first use, so
// a multi-terabyte sparse image costs only what its data touches. A bitmap
// covers a window of the address space; images larger than the window are
// checked in several passes (the trees are walked once per window), which
// bounds memory by the window size whatever the image size.

export const BLOCK_SHIFT = 14;
export const BLOCK = 1 << BLOCK_SHIFT;
const CHUNK_BLOCKS = 65536; // 1 GiB of 16 KiB blocks
export const CHUNK_BYTES = CHUNK_BLOCKS * BLOCK;

export class BlockBits {
  private chunks = new Map<number, Uint32Array>();

  /** Bits for the byte range [lo, hi) (both multiples of 1 GiB, hi may be the volume end). */
  constructor(
    readonly lo: number,
    readonly hi: number,
  ) {}

  get chunkCount(): number {
    return this.chunks.size;
  }

  get bytes(): number {
    return this.chunks.size * (CHUNK_BLOCKS / 8);
  }

  /** Mark every 16 KiB block that [off, off+bytes) touches, clipped to the window. */
  markRange(off: number, bytes: number): void {
    const from = Math.max(off, this.lo);
    const to = Math.min(off + bytes, this.hi);
    if (from >= to) return;
    const first = Math.floor(from / BLOCK);
    const last = Math.floor((to - 1) / BLOCK);
    for (let b = first; b <= last; b++) this.set(b);
  }

  set(block: number): void {
    const c = Math.floor(block / CHUNK_BLOCKS);
    let words = this.chunks.get(c);
    if (!words) {
      words = new Uint32Array(CHUNK_BLOCKS / 32);
      this.chunks.set(c, words);
    }
    const i = block - c * CHUNK_BLOCKS;
    words[i >>> 5] |= 1 << (i & 31);
  }

  has(block: number): boolean {
    const c = Math.floor(block / CHUNK_BLOCKS);
    const words = this.chunks.get(c);
    if (!words) return false;
    const i = block - c * CHUNK_BLOCKS;
    return (words[i >>> 5] & (1 << (i & 31))) !== 0;
  }

  /** The 32 bits of blocks [block, block+32) for a 32-aligned block index. */
  bits32(block: number): number {
    const c = Math.floor(block / CHUNK_BLOCKS);
    const words = this.chunks.get(c);
    if (!words) return 0;
    return words[(block - c * CHUNK_BLOCKS) >>> 5] | 0;
  }

  /** Whether any block in 1 GiB chunk `c` (offset c << 30) is set. */
  chunkUsed(c: number): boolean {
    const words = this.chunks.get(c);
    if (!words) return false;
    for (let i = 0; i < words.length; i++) if (words[i]) return true;
    return false;
  }

  /** Indexes of the 1 GiB chunks with at least one bit set. */
  usedChunks(): number[] {
    return [...this.chunks.keys()].filter((c) => this.chunkUsed(c)).sort((a, b) => a - b);
  }

  /** Iterate set blocks of one 1 GiB chunk. */
  *blocksIn(c: number): Generator<number> {
    const words = this.chunks.get(c);
    if (!words) return;
    for (let w = 0; w < words.length; w++) {
      let v = words[w];
      while (v) {
        const bit = 31 - Math.clz32(v & -v);
        v &= v - 1;
        yield c * CHUNK_BLOCKS + w * 32 + bit;
      }
    }
  }
}

/**
 * Windows of the address space for a memory budget: each window holds at
 * most `maxChunks` GiB of bitmap chunks per bitmap.
 */
export function windows(total: number, maxChunks: number): [number, number][] {
  const span = Math.max(1, maxChunks) * CHUNK_BYTES;
  const out: [number, number][] = [];
  for (let lo = 0; lo < total; lo += span) out.push([lo, Math.min(total, lo + span)]);
  if (!out.length) out.push([0, total]);
  return out;
}
