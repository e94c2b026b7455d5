// Walking HAMMER2 radix trees: a blockset (in an inode or the volume header)
// fans out through INDIRECT (or FREEMAP_NODE) blocks to leaf blockrefs. Each
// bref covers keys [key, key + 2^keybits). Walks check that every child lies
// inside its parent's range and that ranges shrink going down, which bounds
// depth and rejects reference loops in corrupt images.
import { BLOCKREF_BYTES, Blockref, brefKeyEnd, BrefType, decodeBlockrefView, KEY_MAX, SlotRef, tableSlots } from '../media';
import { hex, MediaError } from './errors';

const MAX_DEPTH = 64;

const isNode = (t: number) => t === BrefType.INDIRECT || t === BrefType.FREEMAP_NODE;

/** Visitor returns true to stop the walk. */
export type LeafVisitor = (b: Blockref) => boolean | void;

/**
 * A blocktable checked once and ordered by key, for binary search. Built
 * from decoded blockrefs (a blockset) or straight from the bytes of an
 * indirect block: then only the keys are read up front and an entry is
 * decoded when a walk reaches it, so a lookup through a 128-entry table
 * decodes one entry, and a cached table costs little more than its block.
 * Entries handed out from bytes are views into them: never modify either.
 */
export class PreparedTable {
  private constructor(
    /** Number of non-empty entries. */
    readonly count: number,
    private readonly keys: BigUint64Array,
    private readonly ends: BigUint64Array,
    private readonly brefs: readonly Blockref[] | null,
    private readonly raw: Buffer | null,
    /** Byte offset in `raw` of each entry, in key order. */
    private readonly offs: Uint32Array | null,
  ) {}

  /** Check `set` against its parent's range [lo, hi] (see checkOrder) and order it. */
  static fromBlockrefs(set: readonly Blockref[], lo: bigint, hi: bigint, at?: bigint): PreparedTable {
    const live: Blockref[] = [];
    for (const b of set) {
      if (b.type === BrefType.EMPTY) continue;
      if (b.keybits > 64) throw new MediaError(`blockref with keybits ${b.keybits}`, b.dataOff);
      live.push(b);
    }
    let sorted = true;
    for (let i = 1; i < live.length; i++) if (live[i - 1].key > live[i].key) sorted = false;
    if (!sorted) live.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    const keys = new BigUint64Array(live.length);
    const ends = new BigUint64Array(live.length);
    for (let i = 0; i < live.length; i++) {
      keys[i] = live[i].key;
      ends[i] = brefKeyEnd(live[i]);
    }
    checkOrder(keys, ends, lo, hi, (i) => at ?? live[i].dataOff);
    return new PreparedTable(live.length, keys, ends, live, null, null);
  }

  /** The table held in `bytes` (an indirect or freemap node block), checked the same way. */
  static fromBytes(bytes: Buffer, lo: bigint, hi: bigint, at: bigint): PreparedTable {
    const { offs, keys, keybits } = tableSlots(bytes);
    const count = offs.length;
    let sorted = true;
    for (let i = 0; i < count; i++) {
      if (keybits[i] > 64) throw new MediaError(`blockref with keybits ${keybits[i]}`, at);
      if (i > 0 && keys[i - 1] > keys[i]) sorted = false;
    }
    if (!sorted) {
      // Slots in key order (the reference keeps them sorted; a table that is not is still readable).
      const order = Array.from(offs.keys()).sort((a, b) => (keys[a] < keys[b] ? -1 : keys[a] > keys[b] ? 1 : 0));
      const k2 = keys.slice();
      const o2 = offs.slice();
      const b2 = keybits.slice();
      for (let i = 0; i < count; i++) {
        keys[i] = k2[order[i]];
        offs[i] = o2[order[i]];
        keybits[i] = b2[order[i]];
      }
    }
    const ends = new BigUint64Array(count);
    for (let i = 0; i < count; i++) ends[i] = keybits[i] >= 64 ? KEY_MAX : keys[i] + SPAN[keybits[i]];
    checkOrder(keys, ends, lo, hi, () => at);
    return new PreparedTable(count, keys, ends, null, bytes, offs);
  }

  /** First key of entry `i`. */
  keyAt(i: number): bigint {
    return this.keys[i];
  }

  /** Last key of entry `i`. */
  endAt(i: number): bigint {
    return this.ends[i];
  }

  /** Entry `i` (decoded now for a table read from bytes). */
  at(i: number): Blockref {
    return this.brefs ? this.brefs[i] : decodeBlockrefView(this.raw!, this.offs![i]);
  }

  /**
   * The 128 bytes of entry `i` as they lie in its block (a view), or null
   * for a table built from decoded blockrefs: for readers that look at one
   * field of many entries or pass an entry on unchanged.
   */
  slot(i: number): Buffer | null {
    return this.raw ? this.raw.subarray(this.offs![i], this.offs![i] + BLOCKREF_BYTES) : null;
  }

  /**
   * Every entry in key order as SlotRefs (keys and types read, nothing
   * decoded), for a tree update that passes most of them on unchanged;
   * null for a table built from decoded blockrefs.
   */
  slotRefs(): SlotRef[] | null {
    if (!this.raw) return null;
    const raw = this.raw;
    const out: SlotRef[] = new Array(this.count);
    for (let i = 0; i < this.count; i++) {
      const off = this.offs![i];
      out[i] = { type: raw[off], key: this.keys[i], keybits: raw[off + 3], raw, off };
    }
    return out;
  }

  /** Every entry in key order (a new array). */
  entries(): Blockref[] {
    return Array.from({ length: this.count }, (_, i) => this.at(i));
  }

  /** Index of the first entry whose range ends at or after `key` (count if none). */
  seek(key: bigint): number {
    let lo = 0;
    let hi = this.count;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.ends[mid] < key) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Bytes of memory this table holds beyond its block (for cache budgets). */
  get overhead(): number {
    return 160 + this.count * (this.brefs ? 400 : 20);
  }
}

/** 2^kb - 1 for key bits below 64. */
const SPAN: bigint[] = Array.from({ length: 64 }, (_, kb) => (1n << BigInt(kb)) - 1n);

/**
 * Entries in key order must lie within the parent's range [lo, hi] and not
 * overlap; anything else is corruption.
 */
function checkOrder(keys: BigUint64Array, ends: BigUint64Array, lo: bigint, hi: bigint, at: (i: number) => bigint): void {
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i];
    const kend = ends[i];
    if (key < lo || kend > hi || kend < key) {
      throw new MediaError(`blockref key ${hex(key)} outside its parent's range`, at(i));
    }
    if (i > 0 && ends[i - 1] >= key) {
      throw new MediaError(`overlapping blockrefs ${hex(keys[i - 1])} and ${hex(key)}`, at(i));
    }
  }
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
  return PreparedTable.fromBlockrefs(set, lo, hi, at);
}

function childTable(r: TableSource, b: Blockref): PreparedTable {
  return r.readTable ? r.readTable(b) : prepareTable(r.readBlockrefs(b), b.key, brefKeyEnd(b), b.dataOff);
}

/**
 * Visit, in key order, every leaf bref whose key range intersects [beg, end].
 * Returns true if the visitor stopped the walk.
 */
export function scanRange(r: TableSource, set: readonly Blockref[] | PreparedTable, beg: bigint, end: bigint, visit: LeafVisitor): boolean {
  return walk(r, set instanceof PreparedTable ? set : prepareTable(set, 0n, KEY_MAX), beg, end, visit, 0, 65);
}

function walk(r: TableSource, t: PreparedTable, beg: bigint, end: bigint, visit: LeafVisitor, depth: number, parentBits: number): boolean {
  if (depth > MAX_DEPTH) throw new MediaError('block tree too deep (loop?)');
  for (let i = t.seek(beg); i < t.count; i++) {
    if (t.keyAt(i) > end) break;
    const b = t.at(i);
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
export function lookupKey(r: TableSource, set: readonly Blockref[] | PreparedTable, key: bigint): Blockref | null {
  let found: Blockref | null = null;
  scanRange(r, set, key, key, (b) => {
    found = b;
    return true;
  });
  return found;
}
