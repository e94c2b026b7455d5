// Walking HAMMER2 radix trees: a blockset (in an inode or the volume header)
// fans out through INDIRECT (or FREEMAP_NODE) blocks to leaf blockrefs. Each
// bref covers keys [key, key + 2^keybits). Walks check that every child lies
// inside its parent's range and that ranges shrink going down, which bounds
// depth and rejects reference loops in corrupt images.
import { Blockref, brefKeyEnd, BrefType, KEY_MAX } from '../media';
import { hex, MediaError } from './errors';

const MAX_DEPTH = 64;

const isNode = (t: number) => t === BrefType.INDIRECT || t === BrefType.FREEMAP_NODE;

/** Visitor returns true to stop the walk. */
export type LeafVisitor = (b: Blockref) => boolean | void;

/** A blocktable checked once and kept sorted, for binary search. */
export interface PreparedTable {
  /** Non-empty entries in key order. */
  live: Blockref[];
  /** Last key of each live entry. */
  ends: bigint[];
}

/** What a walk needs from the block layer. */
export interface TableSource {
  readBlockrefs(b: Blockref): Blockref[];
  /** Cached prepared table of an indirect block (optional fast path). */
  readTable?(b: Blockref): PreparedTable;
}

/**
 * Check a blocktable against its parent's key range [lo, hi] and order it.
 * Overlapping entries, entries outside the range and absurd keybits are
 * corruption.
 */
export function prepareTable(set: readonly Blockref[], lo: bigint, hi: bigint, at?: bigint): PreparedTable {
  const live: Blockref[] = [];
  for (const b of set) {
    if (b.type === BrefType.EMPTY) continue;
    if (b.keybits > 64) throw new MediaError(`blockref with keybits ${b.keybits}`, b.dataOff);
    live.push(b);
  }
  let sorted = true;
  for (let i = 1; i < live.length; i++) if (live[i - 1].key > live[i].key) sorted = false;
  if (!sorted) live.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  const ends = new Array<bigint>(live.length);
  for (let i = 0; i < live.length; i++) {
    const b = live[i];
    const kend = brefKeyEnd(b);
    if (b.key < lo || kend > hi || kend < b.key) {
      throw new MediaError(`blockref key ${hex(b.key)}/${b.keybits} outside its parent's range`, at ?? b.dataOff);
    }
    if (i > 0 && ends[i - 1] >= b.key) {
      throw new MediaError(`overlapping blockrefs ${hex(live[i - 1].key)} and ${hex(b.key)}`, at ?? b.dataOff);
    }
    ends[i] = kend;
  }
  return { live, ends };
}

function childTable(r: TableSource, b: Blockref): PreparedTable {
  return r.readTable ? r.readTable(b) : prepareTable(r.readBlockrefs(b), b.key, brefKeyEnd(b), b.dataOff);
}

/**
 * Visit, in key order, every leaf bref whose key range intersects [beg, end].
 * Returns true if the visitor stopped the walk.
 */
export function scanRange(r: TableSource, set: readonly Blockref[], beg: bigint, end: bigint, visit: LeafVisitor): boolean {
  return walk(r, prepareTable(set, 0n, KEY_MAX), beg, end, visit, 0, 65);
}

function walk(r: TableSource, t: PreparedTable, beg: bigint, end: bigint, visit: LeafVisitor, depth: number, parentBits: number): boolean {
  if (depth > MAX_DEPTH) throw new MediaError('block tree too deep (loop?)');
  const { live, ends } = t;
  // First entry that ends at or after `beg`.
  let lo = 0;
  let hi = live.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ends[mid] < beg) lo = mid + 1;
    else hi = mid;
  }
  for (let i = lo; i < live.length; i++) {
    const b = live[i];
    if (b.key > end) break;
    if (isNode(b.type)) {
      if (b.keybits >= parentBits) {
        throw new MediaError(`indirect block ${hex(b.dataOff)} does not narrow the key range`, b.dataOff);
      }
      if (walk(r, childTable(r, b), beg, end, visit, depth + 1, b.keybits)) return true;
    } else if (visit(b)) {
      return true;
    }
  }
  return false;
}

/** Find the leaf covering `key` exactly (key within its range), or null. */
export function lookupKey(r: TableSource, set: readonly Blockref[], key: bigint): Blockref | null {
  let found: Blockref | null = null;
  scanRange(r, set, key, key, (b) => {
    found = b;
    return true;
  });
  return found;
}
