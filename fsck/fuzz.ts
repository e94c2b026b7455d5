// Corrupting images on purpose, for fsck's tests and its fuzzer.
//
// mapImage() finds every block of an image the raw way (volume headers,
// freemap and filesystem trees) without the media layer's checks; a Mutator
// changes bytes with an undo log (so one image copy serves thousands of
// runs) and can re-seal check codes from a block up to the volume header
// ("forged" corruption: the damage reaches the decoders instead of being
// caught by a check code).
//
// Run as a program: the long fuzzer. Random byte flips in metadata blocks
// and volume headers of fixture images; fsck must never crash, hang or grow
// without bound, must report and exit non-zero, and (with --reference) its
// verdict must agree with the reference fsck_hammer2.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { computeCheck, decodeBlockref, icrc32, initCodecs } from '../src/media';

export type BlockKind = 'volhdr' | 'sroot' | 'inode' | 'indirect' | 'data' | 'dirent' | 'fnode' | 'fleaf';

export interface MapBlock {
  kind: BlockKind;
  off: number;
  bytes: number;
  /** Media offset of the 128-byte bref pointing at the block (-1 for volume headers). */
  brefLoc: number;
  /** Index of the block holding that bref (-1: a volume header). */
  parent: number;
  /** Zone of the volume header the block hangs under. */
  zone: number;
  /** Key of the bref (inode number, file offset, dirent hash). */
  key: bigint;
}

const KINDS: Record<number, BlockKind> = { 1: 'inode', 2: 'indirect', 3: 'data', 4: 'dirent', 5: 'fnode', 6: 'fleaf' };

/** Every block reachable from every volume header of the image (first reference wins). */
export function mapImage(img: string): MapBlock[] {
  const fd = fs.openSync(img, 'r');
  const size = fs.fstatSync(fd).size;
  const rd = (off: number, n: number) => {
    const b = Buffer.alloc(n);
    fs.readSync(fd, b, 0, n, off);
    return b;
  };
  const out: MapBlock[] = [];
  const seen = new Set<number>();
  try {
    const visit = (loc: number, parent: number, zone: number, depth: number) => {
      if (depth > 40) return;
      const b = decodeBlockref(rd(loc, 128), 0);
      const kind = KINDS[b.type];
      if (!kind) return;
      const radix = Number(b.dataOff & 0x3fn);
      const off = Number(b.dataOff & ~0x3fn);
      if (radix < 10 || radix > 16 || off + 2 ** radix > size || seen.has(off)) return;
      seen.add(off);
      const idx = out.length;
      out.push({ kind, off, bytes: 2 ** radix, brefLoc: loc, parent, zone, key: b.key });
      if (b.type === 1) {
        const ino = rd(off, 1024);
        if (!(ino[0x51] & 1)) for (let i = 0; i < 4; i++) visit(off + 0x200 + i * 128, idx, zone, depth + 1);
      } else if (b.type === 2 || b.type === 5) {
        for (let i = 0; i < 2 ** radix / 128; i++) visit(off + i * 128, idx, zone, depth + 1);
      }
    };
    // Newest header first: forged changes then land in the tree in force.
    const zones: { z: number; tid: bigint }[] = [];
    for (let z = 0; z < 4 && z * 2 ** 31 < size; z++) zones.push({ z, tid: rd(z * 2 ** 31 + 0x78, 8).readBigUInt64LE(0) });
    zones.sort((a, b) => (a.tid > b.tid ? -1 : a.tid < b.tid ? 1 : a.z - b.z));
    for (const { z } of zones) {
      const base = z * 2 ** 31;
      const idx = out.length;
      out.push({ kind: 'volhdr', off: base, bytes: 65536, brefLoc: -1, parent: -1, zone: z, key: 0n });
      for (let i = 0; i < 4; i++) visit(base + 0x200 + i * 128, idx, z, 0);
      for (let i = 0; i < 4; i++) visit(base + 0x800 + i * 128, idx, z, 0);
    }
  } finally {
    fs.closeSync(fd);
  }
  return out;
}

/** Byte changes with an undo log, and check-code forging up the tree. */
export class Mutator {
  private undo: [number, Buffer][] = [];
  readonly fd: number;
  constructor(
    readonly img: string,
    readonly blocks: MapBlock[],
  ) {
    this.fd = fs.openSync(img, 'r+');
  }
  read(off: number, n: number): Buffer {
    const b = Buffer.alloc(n);
    fs.readSync(this.fd, b, 0, n, off);
    return b;
  }
  write(off: number, buf: Buffer): void {
    this.undo.push([off, this.read(off, buf.length)]);
    fs.writeSync(this.fd, buf, 0, buf.length, off);
  }
  xor(off: number, mask: number): void {
    const b = this.read(off, 1);
    b[0] ^= mask || 0x5a;
    this.write(off, b);
  }
  restore(): void {
    for (let u = this.undo.pop(); u; u = this.undo.pop()) fs.writeSync(this.fd, u[1], 0, u[1].length, u[0]);
  }
  get dirty(): boolean {
    return this.undo.length > 0;
  }
  close(): void {
    this.restore();
    fs.closeSync(this.fd);
  }
  /** Recompute check codes from block `idx` up to its volume header. */
  reseal(idx: number): void {
    while (idx >= 0) {
      const blk = this.blocks[idx];
      if (blk.kind === 'volhdr') {
        this.resealHeader(blk.off);
        return;
      }
      const bref = decodeBlockref(this.read(blk.brefLoc, 128), 0);
      const radix = Number(bref.dataOff & 0x3fn);
      if (radix >= 10 && radix <= 16) {
        const data = this.read(Number(bref.dataOff & ~0x3fn), 2 ** radix);
        const method = (bref.methods >> 4) & 15;
        if (method === 5) {
          const c = Buffer.alloc(4);
          c.writeUInt32LE(icrc32(data), 0);
          this.write(blk.brefLoc + 0x40, c);
        } else if (method <= 4) {
          this.write(blk.brefLoc + 0x40, computeCheck(method, data));
        }
      }
      idx = blk.parent;
    }
  }
  resealHeader(base: number): void {
    const raw = this.read(base, 65536);
    raw.writeUInt32LE(icrc32(raw, 512, 1024), 0x1e0 + 6 * 4);
    raw.writeUInt32LE(icrc32(raw, 0, 512 - 4), 0x1e0 + 7 * 4);
    raw.writeUInt32LE(icrc32(raw, 0, 65536 - 4), 0xfffc);
    this.write(base, raw);
  }
}

export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

export type FlipTarget = 'metadata' | 'header' | 'data' | 'freemap' | 'anywhere';

/**
 * Flip 1..3 random bytes in a random block of the given class. Returns a
 * description, or null if the image has no such block.
 */
export function randomFlip(m: Mutator, r: () => number, target: FlipTarget): string | null {
  if (target === 'anywhere') {
    // Any byte up to a little past the last block in use: free space, leaked
    // blocks, stale freemap slots, boot/aux areas, as well as live blocks.
    let end = 0;
    for (const b of m.blocks) end = Math.max(end, b.off + b.bytes);
    // Half the time near a block in use (slack in its 64 KiB buffer, the
    // unused half of freemap slots, neighbours), half anywhere.
    let o: number;
    if (r() < 0.5 && m.blocks.length) {
      const b = m.blocks[Math.floor(r() * m.blocks.length)];
      o = Math.max(0, b.off - 65536 + Math.floor(r() * (b.bytes + 131072)));
    } else o = Math.floor(r() * (end + (1 << 20)));
    m.xor(o, 1 + Math.floor(r() * 255));
    const hit = m.blocks.find((b) => o >= b.off && o < b.off + b.bytes);
    return `byte 0x${o.toString(16)} (${hit ? `${hit.kind}@0x${hit.off.toString(16)}` : 'no block'})`;
  }
  const pick = m.blocks.filter((b) =>
    target === 'header'
      ? b.kind === 'volhdr'
      : target === 'data'
        ? b.kind === 'data'
        : target === 'freemap'
          ? b.kind === 'fnode' || b.kind === 'fleaf'
          : b.kind === 'inode' || b.kind === 'indirect' || b.kind === 'dirent' || b.kind === 'fnode' || b.kind === 'fleaf',
  );
  if (!pick.length) return null;
  const blk = pick[Math.floor(r() * pick.length)];
  const n = 1 + Math.floor(r() * 3);
  const where: string[] = [];
  for (let i = 0; i < n; i++) {
    // Headers: mostly the CRC-covered first 2 KiB (where every field lives).
    const span = blk.kind === 'volhdr' ? (r() < 0.8 ? 2048 : 65536) : blk.bytes;
    const o = blk.off + Math.floor(r() * span);
    m.xor(o, 1 + Math.floor(r() * 255));
    where.push('0x' + o.toString(16));
  }
  return `${blk.kind}@0x${blk.off.toString(16)} flip ${where.join(',')}`;
}


// ------------------------------------------------------------------ forging

export interface BrefAt {
  /** Media offset of the 128-byte bref. */
  loc: number;
  /** Index (in Mutator.blocks) of the block holding it. */
  holder: number;
  type: number;
  key: bigint;
  dataOff: bigint;
}

/** Every non-empty blockref stored in blocks of the filesystem trees (not the volume header). */
export function brefsIn(m: Mutator): BrefAt[] {
  const out: BrefAt[] = [];
  m.blocks.forEach((blk, i) => {
    if (blk.zone !== m.blocks[0].zone) return; // only the tree in force
    let base: number;
    let n: number;
    if (blk.kind === 'inode') {
      const ino = m.read(blk.off, 1024);
      if (ino[0x51] & 1) return;
      base = blk.off + 0x200;
      n = 4;
    } else if (blk.kind === 'indirect') {
      base = blk.off;
      n = blk.bytes / 128;
    } else return;
    const raw = m.read(base, n * 128);
    for (let j = 0; j < n; j++) {
      const b = decodeBlockref(raw, j * 128);
      if (b.type === 0) continue;
      out.push({ loc: base + j * 128, holder: i, type: b.type, key: b.key, dataOff: b.dataOff });
    }
  });
  return out;
}

/** The inode block of PFS `label`'s root, and of inode `inum` in any PFS (first found). */
export function findInode(m: Mutator, pred: (ino: Buffer, blk: MapBlock) => boolean): number {
  for (let i = 0; i < m.blocks.length; i++) {
    const blk = m.blocks[i];
    if (blk.kind !== 'inode' || blk.zone !== m.blocks[0].zone) continue;
    if (pred(m.read(blk.off, 1024), blk)) return i;
  }
  return -1;
}

const u64 = (v: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v, 0);
  return b;
};

export interface Forged {
  what: string;
  /** Finding codes fsck must report. */
  expect: string[];
}

type Forge = (m: Mutator, r: () => number) => Forged | null;

/** Indexes of the blocks of the tree in force (the newest header's; mapImage lists it first). */
const live = (m: Mutator): number[] => m.blocks.map((_, i) => i).filter((i) => m.blocks[i].zone === m.blocks[0].zone);

const pickOne = <T>(a: T[], r: () => number): T | undefined => (a.length ? a[Math.floor(r() * a.length)] : undefined);

/** A regular file (type 2) with exactly one name, from a makefs fixture (nlinks 1). */
const plainFile = (ino: Buffer, blk: MapBlock) =>
  blk.key >= 0x400n && blk.key < 1n << 63n && ino[0x50] === 2 && ino.readBigUInt64LE(0x68) === 1n;

/**
 * Semantic corruptions with check codes re-sealed up to the volume header:
 * the reference fsck_hammer2 passes them; fsck must find them.
 */
export const FORGES: Record<string, Forge> = {
  'nlinks-low': (m, r) => {
    const idxs = live(m).filter((i) => m.blocks[i].kind === 'inode' && plainFile(m.read(m.blocks[i].off, 1024), m.blocks[i]));
    const i = pickOne(idxs, r);
    if (i === undefined) return null;
    m.write(m.blocks[i].off + 0x68, u64(0n));
    m.reseal(i);
    return { what: `inode 0x${m.blocks[i].key.toString(16)} nlinks 1 -> 0`, expect: ['nlinks'] };
  },
  'nlinks-high': (m, r) => {
    const idxs = live(m).filter((i) => m.blocks[i].kind === 'inode' && plainFile(m.read(m.blocks[i].off, 1024), m.blocks[i]));
    const i = pickOne(idxs, r);
    if (i === undefined) return null;
    m.write(m.blocks[i].off + 0x68, u64(7n));
    m.reseal(i);
    return { what: `inode 0x${m.blocks[i].key.toString(16)} nlinks 1 -> 7`, expect: ['nlinks'] };
  },
  'dangling-entry': (m, r) => {
    const d = pickOne(brefsIn(m).filter((b) => b.type === 4), r);
    if (!d) return null;
    m.write(d.loc + 0x30, u64(0x7ffffff0n));
    m.reseal(d.holder);
    return { what: `entry ${d.key.toString(16)} -> inode 0x7ffffff0`, expect: ['dangling-entry'] };
  },
  'entry-type': (m, r) => {
    const d = pickOne(brefsIn(m).filter((b) => b.type === 4), r);
    if (!d) return null;
    const t = m.read(d.loc + 0x3a, 1)[0];
    m.write(d.loc + 0x3a, Buffer.from([t === 4 ? 2 : 4]));
    m.reseal(d.holder);
    return { what: `entry ${d.key.toString(16)} type ${t} -> ${t === 4 ? 2 : 4}`, expect: ['entry-type'] };
  },
  'entry-hash': (m, r) => {
    const all = brefsIn(m);
    const d = pickOne(all.filter((b) => b.type === 4 && (b.key & 0x7fffn) < 0x7000n), r);
    if (!d) return null;
    // Move the key out of its window but keep it below the next entry's key.
    const nk = (d.key & ~0x7fffn) - 0x8000n + 0x7fffn;
    const prev = all.filter((b) => b.holder === d.holder && b.key < d.key).reduce((a, b) => (b.key > a ? b.key : a), 0n);
    if (nk <= prev) return null;
    m.write(d.loc + 8, u64(nk));
    m.reseal(d.holder);
    return { what: `entry key ${d.key.toString(16)} -> ${nk.toString(16)}`, expect: ['entry-hash'] };
  },
  'duplicate-name': (m, r) => {
    const all = brefsIn(m);
    const d = pickOne(
      all.filter((b) => b.type === 4 && !all.some((x) => x.holder === b.holder && x.key === b.key + 1n) && (b.key & 0x7fffn) < 0x7ff0n),
      r,
    );
    if (!d) return null;
    // The same entry again, one key up, in a free slot of the same table.
    const holder = m.blocks[d.holder];
    const base = holder.kind === 'inode' ? holder.off + 0x200 : holder.off;
    const n = holder.kind === 'inode' ? 4 : holder.bytes / 128;
    let slot = -1;
    for (let j = 0; j < n; j++) if (m.read(base + j * 128, 1)[0] === 0) slot = j;
    if (slot < 0) return null;
    const raw = m.read(d.loc, 128);
    raw.writeBigUInt64LE(d.key + 1n, 8);
    m.write(base + slot * 128, raw);
    m.reseal(d.holder);
    return { what: `entry ${d.key.toString(16)} duplicated at ${(d.key + 1n).toString(16)}`, expect: ['duplicate-name'] };
  },
  unsorted: (m, r) => {
    const all = brefsIn(m);
    const holders = [...new Set(all.filter((b) => m.blocks[b.holder].kind === 'indirect').map((b) => b.holder))];
    const h = pickOne(holders.filter((x) => all.filter((b) => b.holder === x).length >= 2), r);
    if (h === undefined) return null;
    const mine = all.filter((b) => b.holder === h).sort((a, b) => a.loc - b.loc);
    const a = m.read(mine[0].loc, 128);
    const b = m.read(mine[1].loc, 128);
    m.write(mine[0].loc, b);
    m.write(mine[1].loc, a);
    m.reseal(h);
    return { what: `swapped two entries of the table at 0x${m.blocks[h].off.toString(16)}`, expect: ['unsorted'] };
  },
  'data-beyond-eof': (m, r) => {
    const idxs = live(m).filter((i) => {
        const b = m.blocks[i];
        if (b.kind !== 'inode' || b.key < 0x400n || b.key >= 1n << 63n) return false;
        const ino = m.read(b.off, 1024);
        if (ino[0x50] !== 2 || ino[0x51] & 1 || ino.readBigUInt64LE(0x60) <= 200000n) return false;
        // It must have blocks past the new EOF (an all-hole file has none).
        for (let j = 0; j < 4; j++) {
          const t = ino[0x200 + j * 128];
          const key = ino.readBigUInt64LE(0x200 + j * 128 + 8);
          if (t === 2 || (t === 3 && key >= 65536n)) return true;
        }
        return false;
      });
    const i = pickOne(idxs, r);
    if (i === undefined) return null;
    m.write(m.blocks[i].off + 0x60, u64(1000n));
    m.reseal(i);
    return { what: `inode 0x${m.blocks[i].key.toString(16)} size -> 1000`, expect: ['data-beyond-eof'] };
  },
  'dir-iparent': (m, r) => {
    const idxs = live(m).filter((i) => {
        const b = m.blocks[i];
        return b.kind === 'inode' && b.key >= 0x400n && b.key < 1n << 63n && m.read(b.off + 0x50, 1)[0] === 1;
      });
    const i = pickOne(idxs, r);
    if (i === undefined) return null;
    m.write(m.blocks[i].off + 0x70, u64(0x7ffffff1n));
    m.reseal(i);
    return { what: `directory 0x${m.blocks[i].key.toString(16)} iparent -> 0x7ffffff1`, expect: ['dir-iparent'] };
  },
  'pfs-inum': (m) => {
    const i = findInode(m, (ino) => (ino[0x51] & 2) !== 0 && ino.subarray(0x100, 0x104).toString() === 'DATA');
    if (i < 0) return null;
    const ino = m.read(m.blocks[i].off, 1024);
    if (ino.readBigUInt64LE(0x88) < 0x400n) return null;
    m.write(m.blocks[i].off + 0x88, u64(0x10n));
    m.reseal(i);
    return { what: 'DATA pfs_inum -> 0x10', expect: ['pfs-inum'] };
  },
  'inode-type': (m, r) => {
    const idxs = live(m).filter((i) => m.blocks[i].kind === 'inode' && plainFile(m.read(m.blocks[i].off, 1024), m.blocks[i]));
    const i = pickOne(idxs, r);
    if (i === undefined) return null;
    m.write(m.blocks[i].off + 0x50, Buffer.from([3]));
    m.reseal(i);
    return { what: `inode 0x${m.blocks[i].key.toString(16)} type -> 3`, expect: ['inode-type'] };
  },
  'inum-mismatch': (m, r) => {
    const idxs = live(m).filter((i) => m.blocks[i].kind === 'inode' && plainFile(m.read(m.blocks[i].off, 1024), m.blocks[i]));
    const i = pickOne(idxs, r);
    if (i === undefined) return null;
    m.write(m.blocks[i].off + 0x58, u64(m.blocks[i].key + 0x100000n));
    m.reseal(i);
    return { what: `inode 0x${m.blocks[i].key.toString(16)} inum changed`, expect: ['inum-mismatch'] };
  },
  'shared-node': (m, r) => {
    // Two inodes of the index pointing at one inode block.
    const all = brefsIn(m).filter((b) => b.type === 1 && b.key >= 0x400n && b.key < 1n << 63n);
    const a = pickOne(all, r);
    const b = a && pickOne(all.filter((x) => x.holder === a.holder && x.loc !== a.loc), r);
    if (!a || !b) return null;
    m.write(b.loc + 0x20, m.read(a.loc + 0x20, 8));
    m.write(b.loc + 0x40, m.read(a.loc + 0x40, 64));
    m.reseal(b.holder);
    return { what: `inode ${b.key.toString(16)} points at inode ${a.key.toString(16)}'s block`, expect: ['shared-block'] };
  },
  'used-free': (m, r) => {
    const z = m.blocks[0].zone;
    const leaf = m.blocks.findIndex((b) => b.kind === 'fleaf' && b.zone === z);
    const data = pickOne(m.blocks.filter((b) => b.kind === 'data' && b.zone === z && b.off >= 0x8800000 && b.off < 2 ** 30), r);
    if (leaf < 0 || !data) return null;
    const lb = m.blocks[leaf];
    const seg = Math.floor(data.off / (4 << 20));
    const blk = Math.floor((data.off % (4 << 20)) / 16384);
    const at = lb.off + seg * 128 + 0x40 + (blk >> 5) * 8;
    const w = m.read(at, 8).readBigUInt64LE(0);
    m.write(at, u64(w & ~(3n << BigInt((blk & 31) * 2))));
    m.reseal(leaf);
    return { what: `freemap: block 0x${data.off.toString(16)} marked free`, expect: ['used-free'] };
  },
};

/** The reference fsck's verdict: 0 clean, 1 not. */
export function referenceVerdict(bin: string, img: string, extra: string[] = []): number {
  const r = spawnSync(bin, ['-q', ...extra, img], { encoding: 'utf8', timeout: 60_000 });
  return r.status === 0 ? 0 : 1;
}

// ------------------------------------------------------------------ runner

/** Random bytes of a random metadata block (or the best header) changed, check codes re-sealed. */
export function randomForge(m: Mutator, r: () => number): string | null {
  const pick = m.blocks.filter((b) => b.kind === 'inode' || b.kind === 'indirect' || b.kind === 'fleaf' || b.kind === 'fnode' || b.kind === 'volhdr');
  if (!pick.length) return null;
  const blk = pick[Math.floor(r() * pick.length)];
  const idx = m.blocks.indexOf(blk);
  const n = 1 + Math.floor(r() * 3);
  const where: string[] = [];
  for (let i = 0; i < n; i++) {
    let o: number;
    if (blk.kind === 'inode') o = r() < 0.5 ? Math.floor(r() * 0x100) : 0x200 + Math.floor(r() * 0x200);
    else if (blk.kind === 'volhdr') o = r() < 0.5 ? Math.floor(r() * 0x100) : 0x200 + Math.floor(r() * 0xa00);
    else o = Math.floor(r() * blk.bytes);
    // Bytes of blockrefs that matter most: type, keybits, key, data_off, embed.
    m.xor(blk.off + o, r() < 0.5 ? 1 << Math.floor(r() * 8) : 1 + Math.floor(r() * 255));
    where.push('+0x' + o.toString(16));
  }
  if (blk.kind === 'volhdr') m.resealHeader(blk.off);
  else m.reseal(idx);
  return `forged ${blk.kind}@0x${blk.off.toString(16)} ${where.join(',')}`;
}

export interface FuzzOptions {
  images: string[];
  /** Stop after this many runs... */
  iterations: number;
  /** ...or this many milliseconds. */
  budgetMs?: number;
  seed: number;
  /** Reference fsck_hammer2 binary for verdict agreement (optional). */
  reference?: string | null;
  /** Every Nth run goes through the CLI in a child process (0: never). */
  subprocessEvery?: number;
  /** Every Nth run also repairs a copy with -y (0: never). */
  repairEvery?: number;
  /** Longest a single check may take. */
  maxMs?: number;
  maxRssMb?: number;
  log?: (m: string) => void;
  workDir?: string;
}

export interface FuzzResult {
  runs: number;
  checks: number;
  repairs: number;
  failures: string[];
  /** image/kind -> [both not clean, only reference, only fsck, both clean] */
  agreement: Map<string, [number, number, number, number]>;
  maxCheckMs: number;
  peakRssMb: number;
}

const statusOf = (res: { fatal?: { status: number }; report: { errors: number } }) => (res.fatal ? res.fatal.status : res.report.errors ? 4 : 0);

/**
 * The fuzzer: random byte flips (caught by check codes: fsck must say "not
 * clean") and forged changes (re-sealed: anything may be reported, but fsck
 * must not crash, hang or grow), now and then through the CLI in a child
 * process and through a full -y repair of a copy.
 */
export async function runFuzz(o: FuzzOptions): Promise<FuzzResult> {
  await initCodecs();
  const { checkHammer2 } = await import('./check');
  const { repairHammer2 } = await import('./repair');
  const log = o.log ?? (() => {});
  const work = o.workDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'fsck-fuzz-'));
  // Compiled: dist/fsck -> dist/src/cli; from sources (tests): fsck -> dist/src/cli.
  const cli = [path.join(__dirname, '..', 'src', 'cli', 'fsck_hammer2.js'), path.join(__dirname, '..', 'dist', 'src', 'cli', 'fsck_hammer2.js')].find((p) =>
    fs.existsSync(p),
  );
  if (o.subprocessEvery && !cli) throw new Error('fsck_hammer2.js not built (npm run build)');
  const res: FuzzResult = { runs: 0, checks: 0, repairs: 0, failures: [], agreement: new Map(), maxCheckMs: 0, peakRssMb: 0 };
  const maxMs = o.maxMs ?? 30_000;
  const t0 = Date.now();
  const copies: string[] = [];
  try {
    for (const [i, img] of o.images.entries()) {
      const dst = path.join(work, `${i}-${path.basename(img)}`);
      if (spawnSync('cp', ['--sparse=always', img, dst]).status !== 0) throw new Error(`cp ${img} failed`);
      copies.push(dst);
    }
    const maps = copies.map((c) => mapImage(c));
    const r = rng(o.seed);
    const kinds: (FlipTarget | 'forge')[] = ['metadata', 'metadata', 'metadata', 'header', 'freemap', 'data', 'forge', 'forge', 'anywhere'];
    for (let it = 0; it < o.iterations && (!o.budgetMs || Date.now() - t0 < o.budgetMs); it++) {
      const k = Math.floor(r() * copies.length);
      const img = copies[k];
      const name = path.basename(o.images[k]);
      const kind = kinds[Math.floor(r() * kinds.length)];
      const m = new Mutator(img, maps[k]);
      const fail = (msg: string) => {
        res.failures.push(`#${it} ${name} ${msg}`);
        log(`FAIL #${it} ${name} ${msg}`);
      };
      try {
        const what = kind === 'forge' ? randomForge(m, r) : randomFlip(m, r, kind);
        if (!what) continue;
        res.runs++;
        let status: number;
        const c0 = Date.now();
        if (o.subprocessEvery && it % o.subprocessEvery === 0) {
          const p = spawnSync(process.execPath, [cli!, '-q', img], { encoding: 'utf8', timeout: maxMs, env: { ...process.env, HAMMER2_QUIET_SHIM: '1' } });
          status = p.status ?? -1;
          if (p.signal || p.error) fail(`${what}: CLI killed (${p.signal ?? p.error?.message})`);
          else if (![0, 4, 8].includes(status)) fail(`${what}: CLI exit ${status}: ${p.stderr.split('\n').slice(0, 3).join(' | ')}`);
        } else {
          try {
            status = statusOf(await checkHammer2(img, { lock: false }));
          } catch (e) {
            status = -1;
            fail(`${what}: check threw ${(e as Error).stack}`);
          }
        }
        res.checks++;
        const ms = Date.now() - c0;
        res.maxCheckMs = Math.max(res.maxCheckMs, ms);
        if (ms > maxMs) fail(`${what}: check took ${ms} ms`);
        const rss = process.memoryUsage().rss / 2 ** 20;
        res.peakRssMb = Math.max(res.peakRssMb, rss);
        if (o.maxRssMb && rss > o.maxRssMb) fail(`${what}: rss ${rss.toFixed(0)} MiB`);
        // Every metadata/header/freemap flip lands in bytes a check code
        // covers: fsck must see it. (Data blocks may have check NONE: those
        // are judged by agreement with the reference.)
        if (kind !== 'forge' && kind !== 'anywhere' && kind !== 'data' && status === 0) fail(`${what}: reported clean`);
        let ref = -1;
        if (o.reference) {
          ref = referenceVerdict(o.reference, img);
          const key = `${name}/${kind}`;
          const a = res.agreement.get(key) ?? [0, 0, 0, 0];
          const ours = status === 0 ? 0 : 1;
          a[ref && ours ? 0 : ref ? 1 : ours ? 2 : 3]++;
          res.agreement.set(key, a);
          if (ref && !ours) fail(`${what}: the reference says not clean, fsck says clean`);
          if (!ref && ours && kind === 'anywhere') log(`note #${it} ${name} ${what}: only fsck finds a fault`);
        }
        if (o.repairEvery && it % o.repairEvery === 0 && status !== 8) {
          // Repair a copy (a repair writes beyond what the undo log restores).
          const scratch = path.join(work, 'repair.img');
          spawnSync('cp', ['--sparse=always', img, scratch]);
          try {
            const first = await checkHammer2(scratch, { lock: false });
            const rep = await repairHammer2(scratch, first, { lock: false });
            res.repairs++;
            const fin = rep.final!;
            const left = fin.report.findings.filter((f) => f.severity === 'error' && f.fixable);
            if (!fin.fatal && left.length && !rep.stopped) fail(`${what}: after -y, fixable errors remain: ${left.slice(0, 3).map((f) => `${f.code}: ${f.message}`).join(' | ')}`);
            if (o.reference && !fin.fatal && fin.report.errors === 0 && referenceVerdict(o.reference, scratch) !== 0) {
              fail(`${what}: repaired image is clean for fsck but not for the reference`);
            }
          } catch (e) {
            fail(`${what}: repair threw ${(e as Error).stack}`);
          } finally {
            fs.rmSync(scratch, { force: true });
          }
        }
        if (it % 50 === 0) log(`#${it}: ${res.runs} runs, ${res.failures.length} failures, rss ${rss.toFixed(0)} MiB`);
      } finally {
        m.restore();
        fs.closeSync(m.fd);
      }
    }
  } finally {
    if (!o.workDir) fs.rmSync(work, { recursive: true, force: true });
  }
  return res;
}

// ------------------------------------------------------------------ program

async function main(): Promise<number> {
  process.env.HAMMER2_QUIET_SHIM ??= '1';
  const argv = process.argv.slice(2);
  const o: FuzzOptions = { images: [], iterations: 2000, seed: Date.now() % 100000, reference: null, subprocessEvery: 50, repairEvery: 10, maxMs: 60_000, maxRssMb: 1536 };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i];
    if (v === '--iterations' || v === '-n') o.iterations = Number(argv[++i]);
    else if (v === '--seed') o.seed = Number(argv[++i]);
    else if (v === '--reference') o.reference = argv[++i];
    else if (v === '--subprocess-every') o.subprocessEvery = Number(argv[++i]);
    else if (v === '--repair-every') o.repairEvery = Number(argv[++i]);
    else if (v === '--max-ms') o.maxMs = Number(argv[++i]);
    else if (v === '--max-rss-mb') o.maxRssMb = Number(argv[++i]);
    else o.images.push(v);
  }
  if (!o.images.length) {
    console.error('usage: fsck-fuzz [--iterations N] [--seed S] [--reference /path/fsck_hammer2] [--repair-every N] IMAGE...');
    return 16;
  }
  console.log(`seed ${o.seed}, ${o.iterations} iterations over ${o.images.join(', ')}`);
  const res = await runFuzz({ ...o, log: (m) => console.log(m) });
  if (res.agreement.size) {
    console.log('verdicts (image/mutation: both not clean, only reference, only fsck, both clean):');
    for (const [k, v] of [...res.agreement].sort()) console.log(`  ${k.padEnd(36)} ${v.join(' ')}`);
  }
  console.log(`${res.checks} checks (slowest ${res.maxCheckMs} ms), ${res.repairs} repairs, peak rss ${res.peakRssMb.toFixed(0)} MiB`);
  console.log(`${res.runs - res.failures.length} passed, ${res.failures.length} failed`);
  return res.failures.length ? 1 : 0;
}

if (require.main === module) {
  void main().then((c) => process.exit(c));
}
