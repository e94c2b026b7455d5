// Reading blocks through blockrefs: bounds and radix sanity, check-code
// verification on every read from media, decompression of data blocks,
// and a cache of verified blocks and decoded blockref arrays.
import {
  BLOCKREF_BYTES,
  Blockref,
  brefBytes,
  brefCheck,
  CheckMethod,
  brefComp,
  brefKeyEnd,
  brefOffset,
  brefRadix,
  BrefType,
  BREF_TYPE_NAMES,
  CHECK_NAMES,
  CompMethod,
  CorruptCompressedData,
  decodeBlockrefTable,
  decodeData,
  PBUFSIZE,
  RADIX_MAX,
  RADIX_MIN,
  verifyCheck,
} from '../media';
import { DeviceError, VolumeSet } from '../store';
import { LruCache } from './cache';
import { hex, MediaError } from './errors';
import { PreparedTable } from './tree';

interface CachedBlock {
  check8: bigint;
  methods: number;
  bytes: Buffer;
  brefs?: Blockref[];
  /** Live entries in `brefs`. */
  decoded?: number;
  table?: PreparedTable;
}

export interface BlockReaderOptions {
  /** Bytes of verified metadata/data blocks to keep (default 64 MiB). */
  cacheBytes?: number;
  /** Called for every check failure (the daemon logs them). */
  onCheckError?: (msg: string) => void;
}

export class BlockReader {
  /**
   * Indirect and freemap blocks (with their decoded tables) and long-name
   * blocks: what every lookup walks. Keyed by data_off as a number (exact
   * below 2^53; BigInt map keys are slow).
   */
  private cache: LruCache<number, CachedBlock>;
  /** File data, separately and smaller, so a big sequential read cannot evict the tree. */
  private dataCache: LruCache<number, CachedBlock>;
  checkErrors = 0;
  /** Run buffer of readDataBlocks for blocks that are decoded, not read in place (reads are synchronous). */
  private scratch: Buffer | null = null;
  /** One logical block, for readDataPart of compressed blocks. */
  private partScratch: Buffer | null = null;

  /** The metadata cache's budget when nothing else asks for room. */
  private readonly budget: number;
  /** Room given up to what is held for commits (see makeRoom). */
  private given = 0;

  constructor(
    readonly vols: VolumeSet,
    private readonly opts: BlockReaderOptions = {},
  ) {
    this.budget = opts.cacheBytes ?? 64 * 1024 * 1024;
    this.cache = new LruCache(this.budget);
    this.dataCache = new LruCache(Math.max(1 << 20, Math.floor(this.budget / 8))); // (>> 3 wraps at 2 GiB)
  }

  /**
   * Inode blocks are not kept: the filesystem layer caches them decoded,
   * and keeping both halves the useful cache.
   */
  private cacheFor(type: number): LruCache<number, CachedBlock> | null {
    if (type === BrefType.INODE) return null;
    return type === BrefType.DATA ? this.dataCache : this.cache;
  }

  /**
   * `bytes` are held for commits (waiting for one, or being written by the
   * one in flight): the metadata cache gives up as much of its budget, down
   * to a quarter, and takes it back as they go. That is when a daemon's
   * memory peaks; metadata-heavy work holds little. Changes under 1 MiB are
   * ignored (called on every write).
   */
  makeRoom(bytes: number): void {
    const give = Math.min(Math.max(0, bytes), (this.budget * 3) / 4);
    if (Math.abs(give - this.given) < 1 << 20 && !(give === 0 && this.given !== 0)) return;
    this.given = give;
    this.cache.setBudget(this.budget - give);
  }

  /** Validate a bref's data_off before any I/O: radix, alignment, volume bounds. */
  private locate(b: Blockref): { off: number; bytes: number } {
    const radix = brefRadix(b);
    if (radix < RADIX_MIN || radix > RADIX_MAX) {
      throw new MediaError(`${BREF_TYPE_NAMES[b.type] ?? b.type} blockref ${hex(b.dataOff)} has bad size radix ${radix}`, b.dataOff);
    }
    const bytes = brefBytes(b);
    const off = brefOffset(b);
    if (off > BigInt(Number.MAX_SAFE_INTEGER)) throw new MediaError(`blockref offset ${hex(off)} out of range`, b.dataOff);
    const o = Number(off);
    // The allocator packs small blocks at 1 KiB granularity, but no block
    // straddles a 64 KiB physical buffer (the reference's I/O unit).
    if ((o % PBUFSIZE) + bytes > PBUFSIZE) {
      throw new MediaError(`blockref ${hex(b.dataOff)} straddles a 64 KiB buffer`, b.dataOff);
    }
    if (o + bytes > this.vols.totalSize) {
      throw new MediaError(`blockref ${hex(b.dataOff)} points past the end of the media`, b.dataOff);
    }
    return { off: o, bytes };
  }

  /** The verified physical bytes of the block a bref points to. */
  readPhysical(b: Blockref): Buffer {
    return this.load(b).bytes;
  }

  private load(b: Blockref): CachedBlock {
    const check8 = b.check.readBigUInt64LE(0);
    const cache = this.cacheFor(b.type);
    const hit = cache?.get(Number(b.dataOff));
    if (hit && hit.check8 === check8 && hit.methods === b.methods) return hit;
    const { off, bytes } = this.locate(b);
    const data = this.media(off, b, () => this.vols.read(off, bytes));
    this.verify(b, data);
    const e: CachedBlock = { check8, methods: b.methods, bytes: data };
    cache?.set(Number(b.dataOff), e, bytes + 64);
    return e;
  }

  /**
   * `bytes` were just written where `b` points (with `b`'s check code
   * computed over them): cache them as if read and verified. The caller
   * must not change them afterwards.
   */
  seed(b: Blockref, bytes: Buffer): void {
    const cache = this.cacheFor(b.type);
    // A failed commit's blocks are never written, and their offsets go back
    // to the allocator: an entry is only found again by a bref with the same
    // check code, which at 64 bits and more cannot be another block's.
    const method = brefCheck(b);
    if (!cache || (method !== CheckMethod.XXHASH64 && method !== CheckMethod.SHA192)) return;
    cache.set(Number(b.dataOff), { check8: b.check.readBigUInt64LE(0), methods: b.methods, bytes }, bytes.length + 64);
  }

  /** Run a device read at `off` for `b`, device trouble reported as a MediaError. */
  private media<T>(off: number, b: Blockref, read: () => T): T {
    try {
      return read();
    } catch (e) {
      // Queued writes go out before a read: their failure is not this block's.
      if (e instanceof DeviceError && e.writing) throw e;
      throw new MediaError(`read error at ${hex(off)}: ${(e as Error).message}`, b.dataOff);
    }
  }

  /** Throw (and count, and report) if `data` fails the check code of `b`. */
  private verify(b: Blockref, data: Uint8Array): void {
    const method = brefCheck(b);
    if (verifyCheck(method, b.check, data)) return;
    this.checkErrors++;
    const msg =
      `check failed (${CHECK_NAMES[method] ?? method}) for ${BREF_TYPE_NAMES[b.type] ?? b.type} block ` +
      `at ${hex(b.dataOff)} key ${hex(b.key)}`;
    this.opts.onCheckError?.(msg);
    throw new MediaError(msg, b.dataOff);
  }

  /** The blockrefs of an indirect block, checked against its range and sorted (cached). */
  readTable(b: Blockref): PreparedTable {
    const e = this.load(b);
    if (!e.table) {
      // Read in place: the keys now, an entry when a walk reaches it.
      e.table = PreparedTable.fromBytes(e.bytes, b.key, brefKeyEnd(b), b.dataOff);
      this.recharge(b, e);
    }
    return e.table;
  }

  /** The blockrefs held by an INDIRECT or FREEMAP_NODE block. */
  readBlockrefs(b: Blockref): Blockref[] {
    const e = this.load(b);
    if (!e.brefs) {
      e.brefs = decodeBlockrefTable(e.bytes, 0, e.bytes.length / BLOCKREF_BYTES);
      let live = 0;
      for (const x of e.brefs) if (x.type !== BrefType.EMPTY) live++;
      e.decoded = live;
      this.recharge(b, e);
    }
    return e.brefs;
  }

  /** Charge the cache for what a block's decoded forms cost besides its bytes (decoded entries far more than the block). */
  private recharge(b: Blockref, e: CachedBlock): void {
    const cost = e.bytes.length + 64 + (e.decoded ?? 0) * 400 + (e.table?.overhead ?? 0);
    this.cacheFor(b.type)?.set(Number(b.dataOff), e, cost);
  }

  /**
   * Decode a DATA block into `out` (its logical size). A bref without media
   * (radix 0, e.g. an autozero block) reads as zeros.
   */
  readData(b: Blockref, out: Uint8Array): void {
    if (brefRadix(b) === 0) {
      out.fill(0);
      return;
    }
    this.decode(b, this.readPhysical(b), out);
  }

  /**
   * Decode bytes [from, to) of a DATA block's logical contents into `out`
   * at `outOff` (a read covering part of a block). Uncompressed blocks are
   * copied from the verified physical block without a full decode.
   */
  readDataPart(b: Blockref, from: number, to: number, out: Buffer, outOff: number): void {
    if (brefRadix(b) === 0) {
      out.fill(0, outOff, outOff + to - from);
      return;
    }
    const phys = this.readPhysical(b);
    if (isRaw(b)) {
      const n = Math.max(0, Math.min(to, phys.length) - from);
      if (n > 0) phys.copy(out, outOff, from, from + n);
      if (n < to - from) out.fill(0, outOff + n, outOff + to - from);
      return;
    }
    if (!this.partScratch) this.partScratch = Buffer.allocUnsafe(PBUFSIZE);
    const s = this.partScratch.subarray(0, 1 << b.keybits);
    this.decode(b, phys, s);
    s.copy(out, outOff, from, to);
  }

  private decode(b: Blockref, phys: Uint8Array, out: Uint8Array): void {
    try {
      decodeData(brefComp(b), phys, out);
    } catch (e) {
      if (e instanceof CorruptCompressedData) {
        throw new MediaError(`undecodable data block at ${hex(b.dataOff)}: ${e.message}`, b.dataOff);
      }
      throw e;
    }
  }

  /**
   * Decode whole DATA blocks, `bs[i]` into `outs[i]` (its logical size), for
   * a read spanning several blocks. Blocks lying back to back on the media
   * are read with one pread per run; uncompressed ones whose slices of one
   * output buffer are adjacent too are read straight into it and verified
   * in place, the others through a scratch buffer. Every block's check is
   * verified as in readData; the first failure throws. Blocks read this way
   * are not cached: a sequential read would only churn the data cache, and
   * the kernel keeps the pages.
   */
  readDataBlocks(bs: readonly Blockref[], outs: readonly Buffer[]): void {
    let i = 0;
    while (i < bs.length) {
      const b = bs[i];
      if (brefRadix(b) === 0) {
        outs[i++].fill(0);
        continue;
      }
      const hit = this.dataCache.get(Number(b.dataOff));
      if (hit && hit.check8 === b.check.readBigUInt64LE(0) && hit.methods === b.methods) {
        this.decode(b, hit.bytes, outs[i++]);
        continue;
      }
      const first = this.locate(b);
      // Extend the run while the next block starts where this one ends.
      let j = i + 1;
      let runEnd = first.off + first.bytes;
      let direct = isRaw(b) && first.bytes === outs[i].length;
      while (j < bs.length && runEnd - first.off < MAX_RUN) {
        const nb = bs[j];
        if (brefRadix(nb) === 0) break;
        const l = this.locate(nb);
        if (l.off !== runEnd) break;
        const prev = outs[j - 1];
        direct &&=
          isRaw(nb) &&
          l.bytes === outs[j].length &&
          outs[j].buffer === prev.buffer &&
          outs[j].byteOffset === prev.byteOffset + prev.length;
        runEnd += l.bytes;
        j++;
      }
      const len = runEnd - first.off;
      let buf: Buffer;
      if (len < PBUFSIZE) {
        // Small (compressed, or a small file's) blocks: through the volume's
        // 64 KiB buffer cache, which brings their neighbours along (the data
        // of files written together, read together by tar, cp -r, builds).
        direct = false;
        buf = this.media(first.off, b, () => this.vols.read(first.off, len));
      } else {
        if (direct) buf = Buffer.from(outs[i].buffer, outs[i].byteOffset, len);
        else {
          if (!this.scratch || this.scratch.length < len) this.scratch = Buffer.allocUnsafe(Math.max(len, PBUFSIZE));
          buf = this.scratch;
        }
        this.media(first.off, b, () => this.vols.readSpan(first.off, len, buf));
      }
      let at = 0;
      for (let k = i; k < j; k++) {
        const kb = bs[k];
        const bytes = brefBytes(kb);
        const phys = buf.subarray(at, at + bytes);
        at += bytes;
        this.verify(kb, phys);
        if (!direct) this.decode(kb, phys, outs[k]);
      }
      i = j;
    }
  }

  /**
   * Read a block from the media itself (no cache of ours in between) and
   * verify its check code: the scrub's read. Returns the bytes, or the
   * reason it is bad (check failure, bad bref, device error).
   */
  readVerified(b: Blockref): { bytes: Buffer } | { bad: string } {
    try {
      const { off, bytes } = this.locate(b);
      const buf = Buffer.allocUnsafe(bytes);
      this.vols.readSpan(off, bytes, buf);
      const method = brefCheck(b);
      if (!verifyCheck(method, b.check, buf)) {
        this.checkErrors++;
        return { bad: `check failed (${CHECK_NAMES[method] ?? method}) for ${BREF_TYPE_NAMES[b.type] ?? b.type} block at ${hex(b.dataOff)}` };
      }
      return { bytes: buf };
    } catch (e) {
      if (e instanceof DeviceError && e.writing) throw e;
      return { bad: (e as Error).message };
    }
  }

  /** Forget a cached block (the writer calls this when media at `dataOff` is rewritten). */
  invalidate(dataOff: bigint): void {
    this.cache.delete(Number(dataOff));
    this.dataCache.delete(Number(dataOff));
  }

  clearCache(): void {
    this.cache.clear();
    this.dataCache.clear();
  }

  get cacheStats(): { hits: number; misses: number; bytes: number; budget: number } {
    return { hits: this.cache.hits, misses: this.cache.misses, bytes: this.cache.size, budget: this.budget - this.given };
  }
}

/** Longest run of adjacent blocks read with one pread. */
const MAX_RUN = 4 << 20;

/** A block whose media bytes are its contents (no compression: NONE, or AUTOZERO's stored blocks). */
const isRaw = (b: Blockref): boolean => {
  const c = brefComp(b) & 15;
  return c === CompMethod.NONE || c === CompMethod.AUTOZERO;
};

export const isLeafType = (t: number): boolean => t !== BrefType.INDIRECT && t !== BrefType.FREEMAP_NODE && t !== BrefType.EMPTY;
