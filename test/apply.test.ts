// The copy-on-write tree updater against an in-memory block store: random
// inserts, replacements, deletions and truncations, checking after each
// round that every blocktable is sorted, within capacity and inside its
// parent's key range, and that a full walk yields exactly the expected leaves.
import t from 'tap';
import { applyUpdates, LeafUpdate, PreparedTable, rollupStats, scanRange, TreeContext } from '../src/engine';
import { Blockref, brefKeyEnd, BrefType, decodeBlockrefArray, emptyBlockref, encodeEntry, entryBref, KEY_MAX, TableEntry } from '../src/media';

function makeStore(indirectBytes: (depth: number) => number) {
  const blocks = new Map<bigint, TableEntry[]>();
  let next = 1n;
  let writes = 0;
  const ctx: TreeContext = {
    reader: {
      readBlockrefs(b: Blockref) {
        const tbl = blocks.get(b.dataOff);
        if (!tbl) throw new Error('missing block');
        return tbl.map(entryBref);
      },
    },
    indirectBytes,
    writeIndirect(key, keybits, table) {
      const b = emptyBlockref();
      b.type = BrefType.INDIRECT;
      b.key = key;
      b.keybits = keybits;
      const radix = Math.log2(table.length * 128);
      b.dataOff = ((next++) << 16n) | BigInt(radix);
      blocks.set(b.dataOff, table);
      writes++;
      return b;
    },
  };
  return { ctx, blocks, writes: () => writes };
}

function leaf(key: bigint, keybits: number, tag: number): Blockref {
  const b = emptyBlockref();
  b.type = BrefType.DATA;
  b.key = key;
  b.keybits = keybits;
  b.dataOff = BigInt(tag) << 8n;
  return b;
}

function checkTree(t: any, ctx: TreeContext, root: Blockref[], cap: number): Map<bigint, bigint> {
  const seen = new Map<bigint, bigint>();
  const walk = (tbl: readonly Blockref[], lo: bigint, hi: bigint, capacity: number) => {
    const live = tbl.filter((b) => b.type !== BrefType.EMPTY);
    if (live.length > capacity) t.fail('over capacity');
    for (let i = 0; i < tbl.length; i++) {
      if (tbl[i].type === BrefType.EMPTY && tbl.slice(i).some((b) => b.type !== BrefType.EMPTY)) t.fail('empty before live entry');
    }
    for (let i = 1; i < live.length; i++) if (brefKeyEnd(live[i - 1]) >= live[i].key) t.fail('unsorted or overlapping');
    for (const b of live) {
      if (b.key < lo || brefKeyEnd(b) > hi) t.fail('outside parent range');
      if (b.type === BrefType.INDIRECT) {
        if (b.key & ((1n << BigInt(b.keybits)) - 1n)) t.fail('indirect key not aligned');
        const sub = ctx.reader.readBlockrefs(b);
        walk(sub, b.key, brefKeyEnd(b), sub.length);
      } else seen.set(b.key, b.dataOff);
    }
  };
  walk(root, 0n, KEY_MAX, cap);
  return seen;
}

t.test('file-like trees: sequential, random, truncation', async (t) => {
  const { ctx } = makeStore((d) => (d === 0 ? 16384 : 16384));
  let root: Blockref[] = [];
  const model = new Map<bigint, bigint>();
  let seed = 7;
  const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) % n);
  for (let round = 0; round < 60; round++) {
    const ups = new Map<bigint, LeafUpdate>();
    const n = 1 + rnd(round < 20 ? 50 : 400);
    for (let i = 0; i < n; i++) {
      const k = BigInt(rnd(round < 30 ? 2000 : 200000)) << 16n;
      if (rnd(5) === 0) ups.set(k, { key: k, bref: null });
      else ups.set(k, { key: k, bref: leaf(k, 16, round * 100000 + i) });
    }
    const list = [...ups.values()].sort((a, b) => (a.key < b.key ? -1 : 1));
    let truncateFrom: bigint | undefined;
    if (round % 13 === 12) truncateFrom = BigInt(rnd(100000)) << 16n;
    root = applyUpdates(ctx, root, 4, list, { truncateFrom });
    if (truncateFrom !== undefined) for (const k of [...model.keys()]) if (k >= truncateFrom) model.delete(k);
    for (const u of list) {
      if (u.bref) model.set(u.key, u.bref.dataOff);
      else model.delete(u.key);
    }
    // Truncation applies first, then the updates (a file cut short, then written past the cut).
    const seen = checkTree(t, ctx, root, 4);
    if (seen.size !== model.size || [...model].some(([k, v]) => seen.get(k) !== v)) {
      t.fail(`round ${round}: tree holds ${seen.size} leaves, model ${model.size}`);
      return;
    }
  }
  t.pass('60 rounds consistent');
  // A range scan returns exactly the leaves in range, in order.
  const keys: bigint[] = [];
  scanRange(ctx.reader, root, 100n << 16n, (5000n << 16n) - 1n, (b) => {
    keys.push(b.key);
  });
  const want = [...model.keys()].filter((k) => k >= 100n << 16n && k < 5000n << 16n).sort((a, b) => (a < b ? -1 : 1));
  t.same(keys, want);
});

t.test('directory-like trees: hashed keys fill a radix trie', async (t) => {
  const { ctx } = makeStore((d) => (d === 0 ? 4096 : 16384));
  let root: Blockref[] = [];
  const model = new Map<bigint, bigint>();
  let x = 0x9e3779b97f4a7c15n;
  const rnd64 = () => {
    x ^= (x << 13n) & KEY_MAX;
    x ^= x >> 7n;
    x ^= (x << 17n) & KEY_MAX;
    return x;
  };
  for (let round = 0; round < 20; round++) {
    const list: LeafUpdate[] = [];
    for (let i = 0; i < 1000; i++) {
      const k = (rnd64() | 0x8000000000000000n) & ~0x7fffn;
      const b = leaf(k, 0, round * 1000 + i);
      b.type = BrefType.DIRENT;
      list.push({ key: k, bref: b });
    }
    list.sort((a, b) => (a.key < b.key ? -1 : 1));
    root = applyUpdates(ctx, root, 4, list);
    for (const u of list) model.set(u.key, u.bref!.dataOff);
  }
  const seen = checkTree(t, ctx, root, 4);
  t.equal(seen.size, model.size, '20000 entries present');
  // Delete everything: all indirect blocks vanish.
  const del = [...model.keys()].sort((a, b) => (a < b ? -1 : 1)).map((key) => ({ key, bref: null }));
  root = applyUpdates(ctx, root, 4, del);
  t.equal(root.length, 0, 'empty tree after deleting every entry');
});

/**
 * A store of encoded blocktables; with `inPlace`, tables are read as a
 * mounted filesystem reads them (PreparedTable.fromBytes), so that entries
 * passed on unchanged come back as SlotRefs and are copied as bytes.
 */
function byteStore(inPlace: boolean) {
  const blocks = new Map<bigint, Buffer>();
  let next = 1n;
  const written: Buffer[] = [];
  const ctx: TreeContext = {
    reader: {
      readBlockrefs(b: Blockref) {
        const raw = blocks.get(b.dataOff)!;
        return decodeBlockrefArray(raw, 0, raw.length / 128);
      },
      ...(inPlace ? { readTable: (b: Blockref) => PreparedTable.fromBytes(blocks.get(b.dataOff)!, b.key, brefKeyEnd(b), b.dataOff) } : {}),
    },
    indirectBytes: () => 4096,
    writeIndirect(key: bigint, keybits: number, table: TableEntry[]) {
      const buf = Buffer.alloc(table.length * 128);
      for (let i = 0; i < table.length; i++) if (table[i].type !== BrefType.EMPTY) encodeEntry(table[i], buf, i * 128);
      const b = emptyBlockref();
      b.type = BrefType.INDIRECT;
      b.key = key;
      b.keybits = keybits;
      b.dataOff = (next++ << 16n) | 12n;
      b.modifyTid = next;
      rollupStats(b, table);
      blocks.set(b.dataOff, buf);
      written.push(buf);
      return b;
    },
  };
  return { ctx, written };
}

t.test('entries passed on as their bytes: the same tables, byte for byte, as decoding and encoding them', async (t) => {
  const a = byteStore(false);
  const b = byteStore(true);
  let ra: Blockref[] = [];
  let rb: Blockref[] = [];
  let seed = 11;
  const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) % n);
  for (let round = 0; round < 40; round++) {
    const ups = new Map<bigint, LeafUpdate>();
    const n = 1 + rnd(round < 10 ? 300 : 30);
    for (let i = 0; i < n; i++) {
      const k = BigInt(rnd(20000)) << 16n;
      if (rnd(6) === 0) ups.set(k, { key: k, bref: null });
      else {
        const l = leaf(k, 16, round * 100000 + i);
        l.embed.writeBigUInt64LE(BigInt(i), 0);
        l.check.writeBigUInt64LE(BigInt(round * 7 + i), 0);
        l.leafCount = i & 0xffff;
        ups.set(k, { key: k, bref: l });
      }
    }
    const list = [...ups.values()].sort((x, y) => (x.key < y.key ? -1 : 1));
    ra = applyUpdates(a.ctx, ra, 4, list);
    rb = applyUpdates(b.ctx, rb, 4, list);
  }
  t.ok(b.written.length > 100, `${b.written.length} tables written`);
  t.equal(b.written.length, a.written.length, 'as many tables');
  t.ok(b.written.every((w, i) => w.equals(a.written[i])), 'every table the same bytes');
  t.same(rb, ra, 'the same root');
});
