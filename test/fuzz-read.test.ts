// Deterministic corruption fuzz of the read path on a copy of the basic
// fixture: single-byte flips in metadata blocks (caught by check codes),
// "forged" corruption whose check codes are recomputed up to the volume
// header (so the garbage reaches the decoders: bad radix, keys, keybits,
// loops, absurd sizes, bad names), and volume header fields re-CRC'd.
// Every walk of the damaged image must end in clean errors only
// (MediaError, FsError, MountError), in bounded time and memory.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { FsError, Hammer2Device, MediaError } from '../src/engine';
import { Pfs } from '../src/fs';
import { computeCheck, decodeBlockref, icrc32, initCodecs } from '../src/media';
import { MountError } from '../src/store';

const FIXTURES = path.resolve(__dirname, '..', '..', 'shared', 'fixtures');
const ARCHIVE = path.join(FIXTURES, 'basic.img.tar.gz');
const ITERATIONS = 200;
const PER_WALK_MS = 10_000;

interface Blk {
  type: number;
  off: number;
  bytes: number;
  /** Media offset of the 128-byte bref that points at this block. */
  brefLoc: number;
  /** Index of the block holding that bref; -1 for the volume header. */
  parent: number;
  shared: boolean;
}

/** Every block reachable from the volume header's super-root (freemap excluded). */
function mapImage(fd: number): Blk[] {
  const rd = (off: number, n: number) => {
    const b = Buffer.alloc(n);
    fs.readSync(fd, b, 0, n, off);
    return b;
  };
  const out: Blk[] = [];
  const seen = new Set<number>();
  const visit = (loc: number, parent: number) => {
    const b = decodeBlockref(rd(loc, 128), 0);
    if (b.type === 0) return;
    const radix = Number(b.dataOff & 0x3fn);
    const off = Number(b.dataOff & ~0x3fn);
    const idx = out.length;
    out.push({ type: b.type, off, bytes: radix ? 2 ** radix : 0, brefLoc: loc, parent, shared: seen.has(off) });
    if (!radix || seen.has(off)) return;
    seen.add(off);
    if (b.type === 1) {
      const ino = rd(off, 1024);
      if (!(ino[0x51] & 1)) for (let i = 0; i < 4; i++) visit(off + 0x200 + i * 128, idx);
    } else if (b.type === 2) {
      for (let i = 0; i < 2 ** radix / 128; i++) visit(off + i * 128, idx);
    }
  };
  for (let i = 0; i < 4; i++) visit(0x200 + i * 128, -1);
  return out;
}

/** Writes with undo, and check-code forging from a block up to the volume header. */
class Mutator {
  private undo: [number, Buffer][] = [];
  constructor(
    private readonly fd: number,
    readonly blocks: Blk[],
  ) {}
  read(off: number, n: number): Buffer {
    const b = Buffer.alloc(n);
    fs.readSync(this.fd, b, 0, n, off);
    return b;
  }
  write(off: number, buf: Buffer): void {
    this.undo.push([off, this.read(off, buf.length)]);
    fs.writeSync(this.fd, buf, 0, buf.length, off);
  }
  restore(): void {
    for (let u = this.undo.pop(); u; u = this.undo.pop()) fs.writeSync(this.fd, u[1], 0, u[1].length, u[0]);
  }
  forge(idx: number): void {
    while (idx >= 0) {
      const blk = this.blocks[idx];
      const bref = decodeBlockref(this.read(blk.brefLoc, 128), 0);
      const radix = Number(bref.dataOff & 0x3fn);
      if (radix >= 10 && radix <= 16) {
        const data = this.read(Number(bref.dataOff & ~0x3fn), 2 ** radix);
        try {
          this.write(blk.brefLoc + 0x40, computeCheck((bref.methods >> 4) & 15, data));
        } catch {
          /* unknown method after mutation: leave the check as is */
        }
      }
      idx = blk.parent;
    }
    this.fixVolumeHeader();
  }
  fixVolumeHeader(): void {
    const raw = this.read(0, 65536);
    raw.writeUInt32LE(icrc32(raw, 512, 1024), 0x1e0 + 6 * 4);
    raw.writeUInt32LE(icrc32(raw, 0, 512 - 4), 0x1e0 + 7 * 4);
    raw.writeUInt32LE(icrc32(raw, 0, 65536 - 4), 0xfffc);
    this.write(0, raw);
  }
}

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const isClean = (e: unknown) => e instanceof MediaError || e instanceof FsError || e instanceof MountError;

interface WalkResult {
  unclean: string[];
  clean: number;
  entries: number;
}

/**
 * Open the image and touch everything: PFS list, readdir, lookup, attr,
 * readlink, file heads and tails. With `focus`, large directories are only
 * sampled (every 40th entry) plus the inodes in `focus`, to keep it quick.
 */
async function walk(img: string, focus?: Set<bigint>): Promise<WalkResult> {
  const res: WalkResult = { unclean: [], clean: 0, entries: 0 };
  const note = (where: string, e: unknown) => {
    if (isClean(e)) res.clean++;
    else res.unclean.push(`${where}: ${(e as Error)?.stack?.split('\n').slice(0, 3).join(' | ') ?? String(e)}`);
  };
  let dev: Hammer2Device;
  try {
    dev = await Hammer2Device.open(img, { lock: false });
  } catch (e) {
    note('open', e);
    return res;
  }
  try {
    let list: ReturnType<Hammer2Device['listPfs']> = [];
    try {
      list = dev.listPfs();
    } catch (e) {
      note('listPfs', e);
    }
    for (const ent of list) {
      let pfs: Pfs;
      try {
        pfs = new Pfs(dev.reader, ent);
      } catch (e) {
        note(`Pfs ${ent.name}`, e);
        continue;
      }
      const dirs = new Set<bigint>();
      const stack = [{ ip: pfs.root, p: '', depth: 0 }];
      while (stack.length) {
        const { ip, p, depth } = stack.pop()!;
        res.entries++;
        try {
          pfs.attr(ip);
        } catch (e) {
          note(`attr ${p}`, e);
        }
        const type = ip.data.meta.type;
        if (type === 1) {
          if (dirs.has(ip.inum) || depth > 64) continue;
          dirs.add(ip.inum);
          let ents: ReturnType<Pfs['readdir']> = [];
          try {
            ents = pfs.readdir(ip);
          } catch (e) {
            note(`readdir ${p}`, e);
          }
          for (let k = 0; k < ents.length; k++) {
            const d = ents[k];
            if (focus && ents.length > 64 && k % 40 !== 0 && !focus.has(d.inum)) continue;
            try {
              const le = pfs.lookup(ip, d.name);
              if (!le) throw new FsError('ENOENT');
              stack.push({ ip: pfs.getInode(le.inum), p: `${p}/${d.name.toString('utf8')}`, depth: depth + 1 });
            } catch (e) {
              note(`lookup ${p}/${d.name.toString('utf8')}`, e);
            }
          }
        } else if (type === 7) {
          try {
            pfs.readlink(ip);
          } catch (e) {
            note(`readlink ${p}`, e);
          }
        } else {
          const size = Number(ip.data.meta.size);
          for (const pos of [0, Math.max(0, size - 70000), 2 ** 40]) {
            try {
              pfs.read(ip, pos, pos ? 131072 : 1);
            } catch (e) {
              note(`read ${p}@${pos}`, e);
            }
          }
        }
      }
    }
  } finally {
    dev.close();
  }
  return res;
}

t.test('read path survives corrupted metadata', { timeout: 120_000 }, async (t) => {
  if (!fs.existsSync(ARCHIVE)) {
    t.skip(`no fixtures at ${FIXTURES}`);
    return;
  }
  await initCodecs();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'h2fuzz-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  execFileSync('tar', ['-xSzf', ARCHIVE, '-C', dir]);
  const img = path.join(dir, 'basic.img');
  const fd = fs.openSync(img, 'r+');
  t.teardown(() => fs.closeSync(fd));

  const pristine = await walk(img);
  t.same(pristine.unclean, [], 'pristine image walks without unexpected errors');
  t.equal(pristine.clean, 0, 'pristine image walks without errors');
  t.ok(pristine.entries > 3000, `pristine walk visits every entry (${pristine.entries})`);

  const blocks = mapImage(fd);
  const m = new Mutator(fd, blocks);
  const idx = (pred: (b: Blk) => boolean) => blocks.map((b, i) => (pred(b) ? i : -1)).filter((i) => i >= 0);
  const meta = idx((b) => b.bytes > 0 && !b.shared && (b.type === 1 || b.type === 2 || b.type === 4));
  const inodes = idx((b) => b.type === 1 && b.bytes > 0 && !b.shared);
  const withParent = idx((b) => b.parent >= 0);
  t.ok(meta.length > 1000 && inodes.length > 1000, 'fixture has enough metadata to fuzz');

  const R = mulberry32(0x48324653);
  const pick = <T>(a: readonly T[]): T => a[Math.floor(R() * a.length)];
  const nz = () => 1 + Math.floor(R() * 255);
  const u64s = [0n, 1n, 1024n, 65536n, 2n ** 31n, 2n ** 40n, 2n ** 53n, 2n ** 62n, 2n ** 63n, 2n ** 64n - 1n];

  const focus = new Set<bigint>();
  /** Inode numbers whose read path a damaged block is on (the walk always visits those). */
  const focusOn = (bi: number) => {
    for (let j = bi; j >= 0; j = blocks[j].parent) {
      const b = blocks[j];
      if (b.type === 1 && b.bytes) focus.add(m.read(b.off + 0x58, 8).readBigUInt64LE(0));
      if (b.type === 1 || b.type === 4) focus.add(decodeBlockref(m.read(b.brefLoc, 128), 0).embed.readBigUInt64LE(0));
    }
  };
  const mutate = (i: number): string => {
    focus.clear();
    const kind = i % 5;
    if (kind === 0 || kind === 1) {
      // one byte flipped in a metadata block; kind 1 also forges the check codes
      const bi = pick(meta);
      const b = blocks[bi];
      focusOn(bi);
      const o = b.off + Math.floor(R() * (b.type === 1 ? 1024 : b.bytes));
      const v = m.read(o, 1);
      v[0] ^= nz();
      m.write(o, v);
      if (kind === 1) m.forge(bi);
      return `${kind ? 'forged ' : ''}flip in type-${b.type} block 0x${b.off.toString(16)} at +0x${(o - b.off).toString(16)}`;
    }
    if (kind === 2) {
      // forged blockref field
      const bi = pick(withParent);
      const b = blocks[bi];
      focusOn(bi);
      const raw = m.read(b.brefLoc, 128);
      let what: string;
      switch (Math.floor(R() * 7)) {
        case 0:
          raw[0] = pick([0, 1, 2, 3, 4, 5, 6, 7, 255]);
          what = `type=${raw[0]}`;
          break;
        case 1:
          raw[3] = pick([0, 9, 10, 16, 17, 63, 64, 65, 255]);
          what = `keybits=${raw[3]}`;
          break;
        case 2:
          raw.writeBigUInt64LE(pick(u64s), 8);
          what = 'key';
          break;
        case 3:
          raw[0x20] = (raw[0x20] & 0xc0) | pick([0, 1, 9, 17, 31, 63]);
          what = `radix=${raw[0x20] & 63}`;
          break;
        case 4: {
          // point at the parent block (a loop) or at the super-root's block
          const tgt = b.parent >= 0 ? blocks[b.parent] : blocks[0];
          const radix = tgt.bytes ? Math.log2(tgt.bytes) : 10;
          raw.writeBigUInt64LE(BigInt(tgt.off) | BigInt(radix), 0x20);
          what = `data_off -> 0x${tgt.off.toString(16)}`;
          break;
        }
        case 5:
          raw.writeUInt16LE(pick([0, 64, 65, 255, 256, 65535]), 0x38);
          what = `namlen=${raw.readUInt16LE(0x38)}`;
          break;
        default:
          raw.writeBigUInt64LE(pick(u64s), 0x30);
          what = 'embed/inum';
          break;
      }
      m.write(b.brefLoc, raw);
      m.forge(b.parent);
      return `forged bref at 0x${b.brefLoc.toString(16)}: ${what}`;
    }
    if (kind === 3) {
      // forged inode field
      const bi = pick(inodes);
      const b = blocks[bi];
      focusOn(bi);
      const raw = m.read(b.off, 1024);
      let what: string;
      switch (Math.floor(R() * 5)) {
        case 0:
          raw.writeBigUInt64LE(pick([...u64s, 511n, 512n, 513n]), 0x60);
          what = `size=${raw.readBigUInt64LE(0x60)}`;
          break;
        case 1:
          raw[0x50] = pick([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 200]);
          what = `type=${raw[0x50]}`;
          break;
        case 2:
          raw[0x51] ^= 1;
          what = 'DIRECTDATA toggled';
          break;
        case 3:
          raw.writeUInt16LE(pick([0, 255, 256, 1024, 65535]), 0x80);
          what = `name_len=${raw.readUInt16LE(0x80)}`;
          break;
        default:
          raw.writeBigUInt64LE(pick(u64s), 0x58);
          what = 'inum';
          break;
      }
      m.write(b.off, raw);
      m.forge(bi);
      return `forged inode 0x${b.off.toString(16)}: ${what}`;
    }
    // volume header fields, CRCs recomputed
    const raw = m.read(0, 65536);
    let what: string;
    switch (Math.floor(R() * 6)) {
      case 0:
        raw.writeBigUInt64LE(pick([0n, 65536n, 2n ** 31n, 2n ** 40n, 2n ** 64n - 1n]), 0x28);
        what = 'volu_size';
        break;
      case 1:
        raw.writeUInt32LE(pick([0, 1, 3, 0xffffffff]), 0x30);
        what = 'version';
        break;
      case 2:
        raw[0x3c] = pick([0, 2, 64, 255]);
        what = 'nvolumes';
        break;
      case 3:
        raw[0x200] = pick([0, 2, 3, 4, 255]);
        what = 'sroot type';
        break;
      case 4:
        raw[0x220] = (raw[0x220] & 0xc0) | pick([0, 5, 9, 17, 63]);
        what = 'sroot radix';
        break;
      default:
        raw[0x203] = pick([0, 63, 64, 65, 255]);
        what = 'sroot keybits';
        break;
    }
    m.write(0, raw);
    m.fixVolumeHeader();
    return `volume header ${what}`;
  };

  const failures: string[] = [];
  let slowest = 0;
  let maxRss = 0;
  let cleanErrors = 0;
  const t0 = Date.now();
  for (let i = 0; i < ITERATIONS; i++) {
    const desc = mutate(i);
    const s = Date.now();
    const r = await walk(img, focus);
    const ms = Date.now() - s;
    m.restore();
    slowest = Math.max(slowest, ms);
    maxRss = Math.max(maxRss, process.memoryUsage().rss);
    cleanErrors += r.clean;
    if (r.unclean.length) failures.push(`#${i} ${desc}: ${r.unclean[0]}`);
    if (ms > PER_WALK_MS) failures.push(`#${i} ${desc}: walk took ${ms} ms`);
  }
  t.same(failures, [], `${ITERATIONS} corruptions give only clean errors (${cleanErrors} of them) in ${Date.now() - t0} ms`);
  t.ok(slowest <= PER_WALK_MS, `slowest walk ${slowest} ms`);
  t.ok(maxRss < 1536 * 1024 * 1024, `memory bounded (max rss ${Math.round(maxRss / 1048576)} MiB)`);

  const after = await walk(img);
  t.same([after.unclean.length, after.clean], [0, 0], 'restored image walks cleanly again');

  // A symlink whose (forged, check-valid) inode claims a huge size: readlink
  // must fail with EIO, not try to allocate the claimed size.
  await t.test('symlink with an absurd size', async (t) => {
    const dev = await Hammer2Device.open(img, { lock: false });
    const link = new Pfs(dev.reader, dev.findPfs('DATA')!).resolve('/links/len-513');
    dev.close();
    const off = Number(link.bref!.dataOff & ~0x3fn);
    const bi = blocks.findIndex((b) => b.type === 1 && b.off === off);
    const size = Buffer.alloc(8);
    size.writeBigUInt64LE(2n ** 40n);
    m.write(off + 0x60, size);
    m.forge(bi);
    const r = await walk(img);
    m.restore();
    t.same(r.unclean, [], 'only clean errors');
  });
});
