// How much of its block cache the daemon keeps when memory runs short.
//
// The metadata cache's default (48 MiB) is sized for trees of 100 000 files
// and more, whose tables a lookup walks; but while clients stream data
// (several writers, extractions at once) the rest of the daemon's memory
// grows too, and the two together took its RSS past 256 MiB (264–290 MiB
// in the bench's parallel workload; 227 MiB with a 24 MiB cache). So the
// cache gives way under pressure: above a soft limit its budget halves
// (down to a quarter of the configured size), and it doubles back when RSS
// leaves room for what that would add. The limit follows the configured
// size (160 MiB for everything else, plus the cache), so a user who asks
// for a bigger cache gets it.

const MiB = 1048576;
/** What the daemon is expected to need beside the metadata cache. */
export const OTHER_BYTES = 160 * MiB;
/** Room kept under the soft limit when the cache grows back. */
export const MARGIN = 16 * MiB;
/**
 * RSS a cache byte costs: the charged size leaves out object overhead and
 * the allocator's slack (a 24 MiB smaller budget lowered the peak by 37–44 MiB).
 */
export const OVERHEAD = 1.5;
/** Checks to wait after a change before the next: evicted blocks leave RSS only after a collection. */
export const COOLDOWN = 1;

export class CacheGovernor {
  readonly soft: number;
  readonly floor: number;
  private wait = 0;

  /** `full`: the configured cache size in bytes. */
  constructor(readonly full: number) {
    this.soft = OTHER_BYTES + full;
    this.floor = Math.max(Math.min(full, 8 * MiB), Math.floor(full / 4));
  }

  /**
   * The cache budget to use, given RSS now, the current budget and the
   * bytes the cache holds. Shrinking a cache that is not full would free
   * nothing; growing must fit under the limit.
   */
  next(rss: number, budget: number, used: number): number {
    if (this.wait > 0) {
      this.wait--;
      return budget;
    }
    let to = budget;
    if (rss > this.soft && used >= budget * 0.75) to = Math.max(this.floor, Math.floor(budget / 2));
    else if (budget < this.full) {
      const grown = Math.min(this.full, budget * 2);
      if (rss + OVERHEAD * (grown - budget) < this.soft - MARGIN) to = grown;
    }
    if (to !== budget) this.wait = COOLDOWN;
    return to;
  }
}
