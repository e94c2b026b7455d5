// A fixed-size, lossy memory of blocks already verified: a block is known by
// its blockref's data_off, the first 8 bytes of its check code, its methods
// and type (an identical blockref means identical, already verified media).
// Subtrees shared between volume-header zones and snapshots are then walked
// once. When the table is full an older entry is overwritten, which only
// costs a second walk, so memory stays fixed whatever the image size.
import { Blockref } from '../src/media';

/** Numbers remembered with a subtree (the counts its walk produced). */
export const NSTATS = 9;

export class SeenCache {
  private readonly lo: Uint32Array;
  private readonly hi: Uint32Array;
  private readonly c0: Uint32Array;
  private readonly c1: Uint32Array;
  private readonly tag: Uint16Array;
  private readonly stats: Float64Array | null;
  private readonly mask: number;
  hits = 0;

  constructor(
    slotsLog2: number,
    withStats: boolean,
  ) {
    const n = 1 << slotsLog2;
    this.mask = n - 1;
    this.lo = new Uint32Array(n);
    this.hi = new Uint32Array(n);
    this.c0 = new Uint32Array(n);
    this.c1 = new Uint32Array(n);
    this.tag = new Uint16Array(n); // 0 = empty, else (type << 8 | methods) + 1
    this.stats = withStats ? new Float64Array(n * NSTATS) : null;
  }

  private key(b: Blockref): [number, number, number, number, number] {
    const lo = Number(b.dataOff & 0xffffffffn);
    const hi = Number((b.dataOff >> 32n) & 0xffffffffn);
    return [lo, hi, b.check.readUInt32LE(0), b.check.readUInt32LE(4), ((b.type << 8) | b.methods) + 1];
  }

  private slot(lo: number, hi: number, c0: number): number {
    let h = Math.imul(lo ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(hi + 0x7f4a7c15, 0xc2b2ae35) ^ c0;
    h ^= h >>> 15;
    return (h >>> 0) & this.mask;
  }

  /** The slot holding this blockref, or -1. */
  find(b: Blockref): number {
    const [lo, hi, c0, c1, tag] = this.key(b);
    let s = this.slot(lo, hi, c0);
    for (let i = 0; i < 8; i++, s = (s + 1) & this.mask) {
      if (this.tag[s] === 0) return -1;
      if (this.tag[s] === tag && this.lo[s] === lo && this.hi[s] === hi && this.c0[s] === c0 && this.c1[s] === c1) {
        this.hits++;
        return s;
      }
    }
    return -1;
  }

  has(b: Blockref): boolean {
    return this.find(b) >= 0;
  }

  statsOf(slot: number, out: number[]): void {
    if (!this.stats) return;
    for (let i = 0; i < NSTATS; i++) out[i] = this.stats[slot * NSTATS + i];
  }

  put(b: Blockref, stats?: ArrayLike<number>): void {
    const [lo, hi, c0, c1, tag] = this.key(b);
    const s0 = this.slot(lo, hi, c0);
    let s = s0;
    let at = -1;
    for (let i = 0; i < 8; i++, s = (s + 1) & this.mask) {
      if (this.tag[s] === 0 || (this.tag[s] === tag && this.lo[s] === lo && this.hi[s] === hi && this.c0[s] === c0 && this.c1[s] === c1)) {
        at = s;
        break;
      }
    }
    if (at < 0) at = (s0 + (lo & 7)) & this.mask; // evict
    this.lo[at] = lo;
    this.hi[at] = hi;
    this.c0[at] = c0;
    this.c1[at] = c1;
    this.tag[at] = tag;
    if (this.stats && stats) for (let i = 0; i < NSTATS; i++) this.stats[at * NSTATS + i] = stats[i];
  }

  clear(): void {
    this.tag.fill(0);
  }
}
