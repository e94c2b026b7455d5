// Walking HAMMER2 radix trees: a blockset (in an inode or the volume header)
// fans out through INDIRECT (or FREEMAP_NODE) blocks to leaf blockrefs. Each
// bref covers keys [key, key + 2^keybits). Walks check that every child lies
// inside its parent's range and that ranges shrink going down, which bounds
// depth and rejects reference loops in corrupt images.
import { Blockref, brefKeyEnd, BrefType, KEY_MAX } from '../media';
import { BlockReader } from './blocks';
import { hex, MediaError } from './errors';

const MAX_DEPTH = 64;

const isNode = (t: number) => t === BrefType.INDIRECT || t === BrefType.FREEMAP_NODE;

/** Visitor returns true to stop the walk. */
export type LeafVisitor = (b: Blockref) => boolean | void;

/**
 * Visit, in key order, every leaf bref whose key range intersects [beg, end].
 * Returns true if the visitor stopped the walk.
 */
export function scanRange(r: Pick<BlockReader, 'readBlockrefs'>, set: readonly Blockref[], beg: bigint, end: bigint, visit: LeafVisitor): boolean {
  return walk(r, set, beg, end, visit, 0, 0n, KEY_MAX, 65);
}

function walk(
  r: Pick<BlockReader, 'readBlockrefs'>,
  set: readonly Blockref[],
  beg: bigint,
  end: bigint,
  visit: LeafVisitor,
  depth: number,
  lo: bigint,
  hi: bigint,
  parentBits: number,
): boolean {
  if (depth > MAX_DEPTH) throw new MediaError('block tree too deep (loop?)');
  let hits: Blockref[] | null = null;
  for (const b of set) {
    if (b.type === BrefType.EMPTY) continue;
    if (b.keybits > 64) throw new MediaError(`blockref with keybits ${b.keybits}`, b.dataOff);
    const kend = brefKeyEnd(b);
    if (b.key < lo || kend > hi || kend < b.key) {
      throw new MediaError(`blockref key ${hex(b.key)}/${b.keybits} outside its parent's range`, b.dataOff);
    }
    if (kend < beg || b.key > end) continue;
    (hits ??= []).push(b);
  }
  if (!hits) return false;
  if (hits.length > 1) hits.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  for (const b of hits) {
    if (isNode(b.type)) {
      if (b.keybits >= parentBits) {
        throw new MediaError(`indirect block ${hex(b.dataOff)} does not narrow the key range`, b.dataOff);
      }
      const children = r.readBlockrefs(b);
      if (walk(r, children, beg, end, visit, depth + 1, b.key, brefKeyEnd(b), b.keybits)) return true;
    } else if (visit(b)) {
      return true;
    }
  }
  return false;
}

/** Find the leaf covering `key` exactly (key within its range), or null. */
export function lookupKey(r: Pick<BlockReader, 'readBlockrefs'>, set: readonly Blockref[], key: bigint): Blockref | null {
  let found: Blockref | null = null;
  scanRange(r, set, key, key, (b) => {
    found = b;
    return true;
  });
  return found;
}
