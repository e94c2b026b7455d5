// Copy-on-write tree updates in one pass. A flush hands each tree the sorted
// leaf changes it accumulated; this rewrites only the blocktables on the paths
// to those leaves and returns the root blocktable. Clean subtrees are never
// read. Blocktables come out sorted by key and packed (empties at the end),
// the order the reference's lookups expect.
//
// When a blocktable overflows, entries are grouped under new indirect blocks
// whose key ranges are aligned radix slices: keybits = (smallest child
// keybits) + log2(entries per indirect block), widened until the groups fit.
// Indirect blocks left empty by deletions disappear.
import { BLOCKREF_BYTES, Blockref, brefBytes, brefKeyEnd, BrefType, emptyBlockref, entryBref, KEY_MAX, TableEntry } from '../media';
import { TableSource } from './tree';
import { hex, MediaError } from './errors';

/** Replace/insert a leaf (bref) or delete the leaf at `key` (null). */
export interface LeafUpdate {
  key: bigint;
  bref: Blockref | null;
}

export interface TreeContext {
  reader: TableSource;
  /** Bytes of a new indirect block created under a parent at `depth` (0 = the root blocktable). */
  indirectBytes(depth: number): number;
  /**
   * Write a new indirect block holding `table` (length = its capacity) and
   * return its bref (type, key, keybits filled in here; data_off, check,
   * tids and stats by the writer). Entries passed on unchanged from a table
   * read in place come as SlotRefs (write them with encodeEntry).
   */
  writeIndirect(key: bigint, keybits: number, table: TableEntry[]): Blockref;
  /** Restrict indirect key widths (the freemap uses fixed radix levels). */
  allowedBits?(bits: number): boolean;
}

const isNode = (b: TableEntry) => b.type === BrefType.INDIRECT || b.type === BrefType.FREEMAP_NODE;
const cmpKey = (a: TableEntry, b: TableEntry) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);

export interface ApplyOptions {
  /** Drop every leaf whose key is >= this (file truncation); straddling leaves are the caller's. */
  truncateFrom?: bigint;
}

/**
 * Apply `updates` (sorted by key, unique keys) to a blocktable of `capacity`
 * slots covering keys [lo, hi]. Returns the new non-empty entries (sorted,
 * at most `capacity`), writing new indirect blocks through `ctx` as needed.
 */
export function applyUpdates(
  ctx: TreeContext,
  table: readonly Blockref[],
  capacity: number,
  updates: readonly LeafUpdate[],
  opts: ApplyOptions = {},
  depth = 0,
  lo = 0n,
  hi = KEY_MAX,
): Blockref[] {
  // (Entries of tables below stay in their bytes until written; none reach this level.)
  return apply(ctx, table, capacity, updates, opts, depth, lo, hi).map(entryBref);
}

function apply(
  ctx: TreeContext,
  table: readonly TableEntry[],
  capacity: number,
  updates: readonly LeafUpdate[],
  opts: ApplyOptions,
  depth: number,
  lo: bigint,
  hi: bigint,
): TableEntry[] {
  if (depth > 64) throw new MediaError('tree too deep while applying updates');
  const from = opts.truncateFrom;
  const entries: TableEntry[] = [];
  for (const b of table) {
    if (b.type === BrefType.EMPTY) continue;
    if (from !== undefined && b.key >= from) continue; // whole subtree beyond EOF
    entries.push(b);
  }
  entries.sort(cmpKey);

  // Route each update to the indirect child that covers it, or to this level.
  const routed = new Map<TableEntry, LeafUpdate[]>();
  const here: LeafUpdate[] = [];
  let ei = 0;
  for (const u of updates) {
    while (ei < entries.length && brefKeyEnd(entries[ei]) < u.key) ei++;
    const e = entries[ei];
    if (e && isNode(e) && e.key <= u.key) {
      let list = routed.get(e);
      if (!list) routed.set(e, (list = []));
      list.push(u);
    } else {
      here.push(u);
    }
  }

  const out: TableEntry[] = [];
  for (const e of entries) {
    const list = routed.get(e);
    const cut = from !== undefined && isNode(e) && brefKeyEnd(e) >= from;
    if (!list && !cut) {
      out.push(e);
      continue;
    }
    // The table in place (checked, not decoded: most of its entries go into
    // the new block as the bytes they are).
    const b = entryBref(e);
    let childTable: TableEntry[];
    if (ctx.reader.readTable) {
      const t = ctx.reader.readTable(b);
      childTable = t.slotRefs() ?? t.entries();
    } else {
      childTable = ctx.reader.readBlockrefs(b);
    }
    const childCap = brefBytes(b) / BLOCKREF_BYTES;
    const sub = apply(ctx, childTable, childCap, list ?? [], opts, depth + 1, b.key, brefKeyEnd(b));
    if (sub.length === 0) continue; // emptied: the indirect block goes away
    out.push(ctx.writeIndirect(e.key, e.keybits, padTable(sub, childCap)));
  }

  // Leaf-level changes at this level.
  if (here.length) {
    const byKey = new Map<bigint, number>();
    for (let i = 0; i < out.length; i++) byKey.set(out[i].key, i);
    const drop = new Set<number>();
    for (const u of here) {
      const i = byKey.get(u.key);
      if (u.bref) {
        if (u.bref.key !== u.key) throw new Error(`update key ${hex(u.key)} != bref key ${hex(u.bref.key)}`);
        if (u.bref.key < lo || brefKeyEnd(u.bref) > hi) {
          throw new Error(`leaf ${hex(u.key)}/${u.bref.keybits} outside blocktable range`);
        }
        if (i !== undefined) {
          out[i] = u.bref;
          drop.delete(i);
        } else {
          byKey.set(u.key, out.length);
          out.push(u.bref);
        }
      } else if (i !== undefined && !isNode(out[i])) {
        drop.add(i);
      }
    }
    if (drop.size) {
      const kept = out.filter((_, i) => !drop.has(i));
      out.length = 0;
      out.push(...kept);
    }
  }
  out.sort(cmpKey);
  for (let i = 1; i < out.length; i++) {
    if (brefKeyEnd(out[i - 1]) >= out[i].key) {
      throw new MediaError(`overlapping blockrefs ${hex(out[i - 1].key)} and ${hex(out[i].key)} in one blocktable`);
    }
  }
  if (out.length <= capacity) return out;
  return regroup(ctx, out, capacity, depth, lo, hi);
}

/**
 * Group entries under new indirect blocks until at most `capacity` remain.
 * The split is a key-range radix `bits` (1-bit granularity): the widest one
 * whose groups all fit one indirect block, so new blocks come out full; or,
 * when no such split fits this table, the narrowest that does, and the
 * groups split again one level down.
 */
function regroup(ctx: TreeContext, entries: TableEntry[], capacity: number, depth: number, lo: bigint, hi: bigint): TableEntry[] {
  const indBytes = ctx.indirectBytes(depth);
  const indCap = indBytes / BLOCKREF_BYTES;
  let minKb = 64;
  for (const e of entries) minKb = Math.min(minKb, e.keybits);
  // The parent's range bounds how wide a child may be (it must be narrower).
  const parentBits = hi - lo === KEY_MAX ? 64 : log2Big(hi - lo + 1n);
  // Neighbours (keys in order) share a group at width `bits` when neither
  // stands alone (as wide as the width or wider) and their keys agree above
  // it: the highest bit in which they differ, found once, is below `bits`.
  // So each width is tried by counting over small integers.
  const n = entries.length;
  const diff = new Uint8Array(n);
  for (let i = 1; i < n; i++) diff[i] = bitLength(entries[i].key ^ entries[i - 1].key);
  const joins = (i: number, bits: number) => i > 0 && entries[i].keybits < bits && entries[i - 1].keybits < bits && diff[i] <= bits;
  let fit = -1;
  let narrowest = -1;
  for (let bits = parentBits - 1; bits > minKb; bits--) {
    let groups = 0;
    let size = 0;
    let largest = 0;
    for (let i = 0; i < n; i++) {
      if (joins(i, bits)) size++;
      else {
        groups++;
        size = 1;
      }
      if (size > largest) largest = size;
    }
    if (groups > capacity) break; // narrower splits only make more groups
    if (ctx.allowedBits && !ctx.allowedBits(bits)) continue;
    narrowest = bits;
    if (fit < 0 && largest <= indCap) fit = bits;
  }
  const bits = fit >= 0 ? fit : narrowest;
  if (bits < 0) throw new MediaError('cannot fit blocktable entries under indirect blocks');
  const groups: TableEntry[][] = [];
  for (let i = 0; i < n; i++) {
    if (joins(i, bits)) groups[groups.length - 1].push(entries[i]);
    else groups.push([entries[i]]);
  }
  const out: TableEntry[] = [];
  for (const members of groups) {
    if (members.length === 1) {
      out.push(members[0]);
      continue;
    }
    const key = (members[0].key >> BigInt(bits)) << BigInt(bits);
    const sub = members.length <= indCap ? members : regroup(ctx, members, indCap, depth + 1, key, key + (1n << BigInt(bits)) - 1n);
    out.push(ctx.writeIndirect(key, bits, padTable(sub, indCap)));
  }
  return out;
}

/** Bits needed to write x (0 for 0), for x < 2^64. */
function bitLength(x: bigint): number {
  const hi = Number(x >> 32n);
  return hi ? 64 - Math.clz32(hi) : 32 - Math.clz32(Number(x & 0xffffffffn));
}

function log2Big(n: bigint): number {
  let r = 0;
  while (n > 1n) {
    n >>= 1n;
    r++;
  }
  return r;
}

/** A blocktable of exactly `capacity` entries: the given ones sorted, then empties. */
export function padTable<T extends TableEntry>(entries: T[], capacity: number): (T | Blockref)[] {
  if (entries.length > capacity) throw new Error('blocktable overflow');
  const t: (T | Blockref)[] = entries.slice().sort(cmpKey);
  while (t.length < capacity) t.push(emptyRef());
  return t;
}

/** Padding entries are only ever encoded, never mutated: share one. */
const EMPTY_REF: Blockref = Object.freeze(emptyBlockref());
const emptyRef = (): Blockref => EMPTY_REF;
