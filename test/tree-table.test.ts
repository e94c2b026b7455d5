// Blocktables read in place (PreparedTable.fromBytes) against the decoded
// path (fromBlockrefs): the same entries in the same order, the same
// corruption refused, and lookups through a tree of raw tables that decode
// only the entries they pass.
import t from 'tap';
import { lookupKey, MediaError, PreparedTable, scanRange, TableSource } from '../src/engine';
import { BLOCKREF_BYTES, Blockref, brefKeyEnd, BrefType, decodeBlockrefArray, emptyBlockref, encodeBlockref, KEY_MAX } from '../src/media';

function leaf(key: bigint, keybits = 0, type: number = BrefType.INODE): Blockref {
  const b = emptyBlockref();
  b.type = type;
  b.key = key;
  b.keybits = keybits;
  b.dataOff = (key << 10n) | 10n;
  b.check.writeBigUInt64LE(key * 7n + 1n, 0);
  return b;
}

/** A table of `slots` entries with `brefs` placed at the given slots (the rest empty). */
function table(slots: number, placed: [number, Blockref][]): Buffer {
  const buf = Buffer.alloc(slots * BLOCKREF_BYTES);
  for (const [i, b] of placed) encodeBlockref(b, buf, i * BLOCKREF_BYTES);
  return buf;
}

const entries = (p: PreparedTable) => Array.from({ length: p.count }, (_, i) => [p.at(i).key, p.at(i).keybits, p.keyAt(i), p.endAt(i)]);

t.test('raw and decoded tables agree', async (t) => {
  const keys = [5n, 9n, 0x100n, 0x2000n];
  // Sorted with holes, as the reference leaves them after deletions.
  const sorted = table(16, [[1, leaf(keys[0])], [2, leaf(keys[1])], [7, leaf(keys[2], 8)], [15, leaf(keys[3], 4)]]);
  // Out of order: still readable, in key order.
  const shuffled = table(16, [[0, leaf(keys[3], 4)], [3, leaf(keys[0])], [4, leaf(keys[2], 8)], [9, leaf(keys[1])]]);
  for (const [name, buf] of [['sorted', sorted], ['out of order', shuffled]] as const) {
    const raw = PreparedTable.fromBytes(buf, 0n, 0xffffn, 1n);
    const dec = PreparedTable.fromBlockrefs(decodeBlockrefArray(buf, 0, 16), 0n, 0xffffn, 1n);
    t.equal(raw.count, 4, `${name}: four live entries`);
    t.same(entries(raw), entries(dec), `${name}: same entries, same order`);
    t.same(raw.entries().map((b) => b.key), keys, `${name}: in key order`);
    t.equal(raw.at(2).check.readBigUInt64LE(0), 0x100n * 7n + 1n, `${name}: an entry decodes whole`);
    t.equal(raw.seek(0x101n), 2, `${name}: seek finds the entry covering a key`);
    t.equal(raw.seek(0x200n), 3, `${name}: or the next one`);
    t.equal(raw.seek(0x3000n), 4, `${name}: or the end`);
  }
  const empty = PreparedTable.fromBytes(Buffer.alloc(4 * BLOCKREF_BYTES), 0n, KEY_MAX, 1n);
  t.equal(empty.count, 0, 'an empty table');
  t.equal(empty.seek(0n), 0);
  const full = PreparedTable.fromBytes(table(1, [[0, leaf(0n, 64, BrefType.INDIRECT)]]), 0n, KEY_MAX, 1n);
  t.equal(full.endAt(0), KEY_MAX, 'keybits 64 covers every key');
  t.ok(full.overhead < PreparedTable.fromBlockrefs(full.entries(), 0n, KEY_MAX).overhead, 'a raw table costs less than a decoded one');
});

t.test('raw tables refuse what decoded tables refuse', async (t) => {
  const cases: [string, Buffer, RegExp][] = [
    ['overlap', table(4, [[0, leaf(0x10n, 4)], [1, leaf(0x18n)]]), /overlapping blockrefs/],
    ['outside the parent', table(4, [[0, leaf(0x10n)], [1, leaf(0x20000n)]]), /outside its parent's range/],
    ['absurd keybits', table(4, [[0, leaf(0x10n, 65)]]), /keybits 65/],
    ['duplicate key', table(4, [[0, leaf(0x10n)], [2, leaf(0x10n)]]), /overlapping blockrefs/],
  ];
  for (const [name, buf, re] of cases) {
    t.throws(() => PreparedTable.fromBytes(buf, 0n, 0xffffn, 0x4000n), re, `raw: ${name}`);
    t.throws(() => PreparedTable.fromBlockrefs(decodeBlockrefArray(buf, 0, 4), 0n, 0xffffn, 0x4000n), re, `decoded: ${name}`);
    try {
      PreparedTable.fromBytes(buf, 0n, 0xffffn, 0x4000n);
    } catch (e) {
      t.ok(e instanceof MediaError && e.offset === 0x4000n, `raw: ${name} names the block`);
    }
  }
});

t.test('a lookup through raw tables decodes only the entries on its path', async (t) => {
  // Two levels: a root blockset of 2 indirect blocks, each 64 entries of 256 leaves.
  const blocks = new Map<bigint, Buffer>();
  const set: Blockref[] = [];
  for (let k = 0; k < 2; k++) {
    const ind = leaf(BigInt(k) << 16n, 16, BrefType.INDIRECT);
    ind.dataOff = (BigInt(k + 1) << 20n) | 13n;
    const placed: [number, Blockref][] = [];
    for (let i = 0; i < 64; i++) placed.push([i, leaf((BigInt(k) << 16n) + BigInt(i) * 256n, 8)]);
    blocks.set(ind.dataOff, table(64, placed));
    set.push(ind);
  }
  let decodedTables = 0;
  const src: TableSource = {
    readBlockrefs(b) {
      decodedTables++;
      return decodeBlockrefArray(blocks.get(b.dataOff)!, 0, 64);
    },
    readTable(b) {
      return PreparedTable.fromBytes(blocks.get(b.dataOff)!, b.key, brefKeyEnd(b), b.dataOff);
    },
  };
  const hit = lookupKey(src, set, 0x10000n + 5n * 256n + 17n);
  t.equal(hit?.key, 0x10000n + 5n * 256n, 'the covering leaf');
  t.equal(lookupKey(src, set, 0x20000n), null, 'nothing past the last range');
  const all: bigint[] = [];
  scanRange(src, set, 0n, KEY_MAX, (b) => void all.push(b.key));
  t.equal(all.length, 128, 'a full scan visits every leaf');
  t.ok(all.every((k, i) => i === 0 || all[i - 1] < k), 'in key order');
  t.equal(decodedTables, 0, 'no table was decoded whole');
});
