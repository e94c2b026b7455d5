// How much of its block cache the daemon keeps when memory runs short.
//
// The metadata cache's default (48 MiB) is sized for trees of 100 000 files
// and more, whose tables a lookup walks; but while clients stream data
// (several writers, extractions at once) the rest of the daemon's memory
// grows too, and the two together took its RSS past 256 MiB (264–290 MiB
// in the bench's parallel workload; 227 MiB with a 24 MiB cache). So the
// cache gives way under pressure: above a soft limit its budget halves
// (down to a quarter of the configured size), and once RSS is well below
// the limit again it doubles back. The limit follows the configured size
// (160 MiB for everything else, plus the cache), so a user who asks for a
// bigger cache gets it.

/** What the daemon is expected to need beside the metadata cache. */
export const OTHER_BYTES = 160 << 20;
/** How far below the soft limit RSS must fall before the cache grows back. */
export const HYSTERESIS = 48 << 20;

export class CacheGovernor {
  readonly soft: number;
  readonly floor: number;

  /** `full`: the configured cache size in bytes. */
  constructor(readonly full: number) {
    this.soft = OTHER_BYTES + full;
    this.floor = Math.max(Math.min(full, 8 << 20), full >> 2);
  }

  /** The cache budget to use given RSS now and the current budget. */
  next(rss: number, budget: number): number {
    if (rss > this.soft) return Math.max(this.floor, budget >> 1);
    if (rss < this.soft - HYSTERESIS) return Math.min(this.full, budget * 2);
    return budget;
  }
}
