// Cache of 64 KiB physical buffers for small reads.
//
// HAMMER2 packs small blocks (1 KiB inodes, indirect blocks, directory-name
// blocks, compressed data) into 64 KiB physical buffers, and blocks written
// together sit together: the inodes of files created in one commit share a
// few buffers. Reading the whole buffer once and serving its neighbours
// from memory turns a directory's worth of inode reads into a handful of
// I/Os (the reference does its device I/O in 64 KiB units for the same
// reason). Every write through the VolumeSet patches the buffers it touches
// (a commit writes next to what the next commit reads: the inode beside the
// one it rewrites, the freemap leaf, a file's growing tail), or drops those
// it covers whole, so the cache never serves stale bytes.

export const PHYS_BUFFER = 65536;

/** Buffers remembered as touched once (about 1 GiB of media). */
const SEEN_MAX = 16384;

export class PhysBufferCache {
  /** Base offset -> buffer, least recently used first (Map keeps insertion order). */
  private map = new Map<number, Buffer>();
  /**
   * Buffers read from once, not kept. When reads are scattered over more
   * metadata than the cache holds (a stat of random files among 100 000)
   * a buffer's neighbours are evicted before anyone wants them, and reading
   * 64 KiB for one 1 KiB inode is most of the cost: the first read of a
   * buffer fetches just the block, the second brings the whole buffer in.
   * Reads with locality (a directory's inodes, created together) pay one
   * small extra read per buffer.
   */
  private seen = new Set<number>();
  private bytes = 0;
  hits = 0;
  misses = 0;

  constructor(private readonly budget: number) {}

  /**
   * [loff, loff+len) from the buffer holding it, loading that buffer with
   * `load(base, size)` when it is not cached. `limit` is where the volume
   * ends: a buffer is cut short there. The range must lie within one
   * buffer. Returns a copy (callers may keep it). `load` must return a
   * buffer of its own (it may be handed out as it is).
   */
  read(loff: number, len: number, limit: number, load: (base: number, size: number) => Buffer): Buffer {
    const base = loff - (loff % PHYS_BUFFER);
    if (loff + len > base + PHYS_BUFFER) throw new RangeError(`read of ${len} at ${loff} crosses a 64 KiB buffer`);
    let b = this.map.get(base);
    if (b && loff + len <= base + b.length) {
      this.hits++;
      this.map.delete(base);
      this.map.set(base, b);
    } else {
      this.misses++;
      if (!b && !this.seen.has(base)) {
        this.seen.add(base);
        if (this.seen.size > SEEN_MAX) this.seen.delete(this.seen.values().next().value as number);
        return load(loff, len);
      }
      this.seen.delete(base);
      const size = Math.min(PHYS_BUFFER, limit - base);
      b = load(base, size);
      this.drop(base);
      this.map.set(base, b);
      this.bytes += b.length;
      while (this.bytes > this.budget) {
        const oldest = this.map.keys().next().value as number;
        this.drop(oldest);
      }
    }
    return copyOut(b, loff - base, len);
  }

  /** A copy of [loff, loff+len) if its buffer is cached (counted as a hit), else null; never loads. */
  peek(loff: number, len: number): Buffer | null {
    const base = loff - (loff % PHYS_BUFFER);
    const b = this.map.get(base);
    if (!b || loff + len > base + b.length) return null;
    this.hits++;
    return copyOut(b, loff - base, len);
  }

  /**
   * `data` is being written at `loff`: copy it into the cached buffers it
   * overlaps, and forget those it covers whole (a copy would cost more
   * than reading them back if they are ever needed).
   */
  update(loff: number, data: Uint8Array): void {
    if (this.map.size === 0 || data.length === 0) return;
    const end = loff + data.length;
    for (let base = loff - (loff % PHYS_BUFFER); base < end; base += PHYS_BUFFER) {
      const b = this.map.get(base);
      if (!b) continue;
      if (loff <= base && end >= base + b.length) {
        this.drop(base);
        continue;
      }
      const from = Math.max(loff, base);
      const to = Math.min(end, base + b.length);
      if (to > from) b.set(data.subarray(from - loff, to - loff), from - base);
    }
  }

  /** Forget every buffer overlapping [loff, loff+len) (it is being written). */
  invalidate(loff: number, len: number): void {
    if (this.map.size === 0 || len <= 0) return;
    for (let base = loff - (loff % PHYS_BUFFER); base < loff + len; base += PHYS_BUFFER) this.drop(base);
  }

  clear(): void {
    this.map.clear();
    this.seen.clear();
    this.bytes = 0;
  }

  private drop(base: number): void {
    const b = this.map.get(base);
    if (!b) return;
    this.map.delete(base);
    this.bytes -= b.length;
  }
}

/** A copy of `len` bytes of a cached buffer from `at` (allocUnsafe then one memcpy: Buffer.from copies element by element). */
function copyOut(b: Buffer, at: number, len: number): Buffer {
  const out = Buffer.allocUnsafe(len);
  b.copy(out, 0, at, at + len);
  return out;
}
