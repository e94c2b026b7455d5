// Pending directory entries of one directory, indexed two ways: by hash
// range (lookups and key choice touch only their own collision range) and
// in key order (readdir resumes from a cookie with a binary search). Without
// the index both cost O(pending entries) per call, which made a directory
// of 100 000 new names quadratic.
import { DIRHASH_LOMASK } from '../media';

export interface DirEntry {
  name: Buffer;
  inum: bigint;
  /** HAMMER2 object type from the entry (OBJTYPE_*). */
  type: number;
  key: bigint;
}

const baseOf = (key: bigint) => key & ~DIRHASH_LOMASK;

export class PendingDirents {
  /** key → entry, or null for a committed entry deleted. */
  private map = new Map<bigint, DirEntry | null>();
  private byBase = new Map<bigint, bigint[]>();
  private sorted: bigint[] | null = null;

  get size(): number {
    return this.map.size;
  }

  get(key: bigint): DirEntry | null | undefined {
    return this.map.get(key);
  }

  has(key: bigint): boolean {
    return this.map.has(key);
  }

  set(key: bigint, e: DirEntry | null): void {
    if (!this.map.has(key)) {
      const b = baseOf(key);
      const list = this.byBase.get(b);
      if (list) list.push(key);
      else this.byBase.set(b, [key]);
      this.sorted = null;
    }
    this.map.set(key, e);
  }

  delete(key: bigint): void {
    if (!this.map.delete(key)) return;
    const b = baseOf(key);
    const list = this.byBase.get(b)!;
    const i = list.indexOf(key);
    list.splice(i, 1);
    if (!list.length) this.byBase.delete(b);
    this.sorted = null;
  }

  /** Keys in the collision range of `base` (a dirhash). */
  inRange(base: bigint): readonly bigint[] {
    return this.byBase.get(baseOf(base)) ?? [];
  }

  /** Live entries with key >= from, in key order, at most `max`. */
  from(from: bigint, max: number): DirEntry[] {
    if (!this.sorted) this.sorted = [...this.map.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const s = this.sorted;
    let lo = 0;
    let hi = s.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (s[mid] < from) lo = mid + 1;
      else hi = mid;
    }
    const out: DirEntry[] = [];
    for (let i = lo; i < s.length && out.length < max; i++) {
      const e = this.map.get(s[i]);
      if (e) out.push(e);
    }
    return out;
  }

  /** Any live (non-deleted) entry? */
  anyLive(): boolean {
    for (const e of this.map.values()) if (e) return true;
    return false;
  }

  values(): IterableIterator<DirEntry | null> {
    return this.map.values();
  }

  [Symbol.iterator](): IterableIterator<[bigint, DirEntry | null]> {
    return this.map[Symbol.iterator]();
  }
}
