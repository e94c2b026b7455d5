// show, freemap, volhdr: raw dumps of the media in the reference's layout
// (its cmd_show modes 0, 1 and 2: the super-root topology, the freemap tree
// with totals, the volume headers); hash and dhash: a name's directory hash
// and the hash of its 1 KiB long-entry record.
//
// The dump is the one place that shows what is on the media as it is: every
// blockref in storage order, interior nodes included, and blocks that fail
// their check code (reported, and their direct children listed one level
// deep), which is why it reads through the volume set rather than the
// verifying BlockReader and walks tables itself rather than with scanRange.
import {
  Blockref,
  BREF_TYPE_NAMES,
  brefFreemapHints,
  BrefType,
  bmapAvail,
  bmapClass,
  bmapLinear,
  bmapPair,
  bmapWord,
  CheckMethod,
  decCheck,
  decComp,
  decodeBlockrefArray,
  decodeInode,
  decodeVolumeHeader,
  direntHead,
  dirhash,
  emptyBlockref,
  FREEMAP_COUNT,
  FREEMAP_LEVELN_PSIZE,
  HAMMER2_UUID_STRING,
  icrc32,
  initCodecs,
  INODE_BYTES,
  InodeData,
  MAX_VOLUMES,
  NUM_VOLHDRS,
  OFF_MASK_RADIX,
  OPFLAG_DIRECTDATA,
  OPFLAG_PFSROOT,
  PBUFRADIX,
  PBUFSIZE,
  PfsType,
  pfsSubtypeName,
  pfsTypeName,
  rawInodeBlockset,
  sha192,
  uuidToString,
  VOLUME_BYTES,
  VolumeHeader,
  volumeHeaderExtras,
  xxh64,
  ZONE_BYTES,
  ZONE_FREEMAP_00,
  ZONE_FREEMAP_INC,
} from '../../media';
import { DeviceError, MountError, Volume, VolumeSet } from '../../store';
import { CliIo } from '../io';
import { Directive, DirectiveError, Hammer2Ctx, UsageError } from './context';
import { checkModeName, compModeName, objTypeName, time64ToStr } from './printinode';

const GIG = 2 ** 30;
const MIB = 2 ** 20;
const SEG_BYTES = 4 * MIB; // what one bmap manages
const U64_MAX = 2n ** 64n - 1n;
const EMPTY_MEDIA = Buffer.alloc(PBUFSIZE);

const hex = (v: bigint | number, width: number): string => v.toString(16).padStart(width, '0');
const hex16 = (v: bigint): string => hex(v, 16);
const sp = (n: number): string => ' '.repeat(n);

/**
 * printf's "%W.Pf": the double's exact binary value rounded half to even at
 * P decimals, as glibc does. toFixed rounds exact ties up, and sizes in
 * GiB (multiples of 2^-16 here) can land on them.
 */
export function cFixed(x: number, prec: number, width = 0): string {
  const dv = new DataView(new ArrayBuffer(8));
  dv.setFloat64(0, Math.abs(x));
  const bits = dv.getBigUint64(0);
  const bexp = Number(bits >> 52n);
  let mant = bits & ((1n << 52n) - 1n);
  let exp = -1074;
  if (bexp !== 0) {
    mant |= 1n << 52n;
    exp = bexp - 1075;
  }
  const scaled = mant * 10n ** BigInt(prec);
  let q: bigint;
  if (exp >= 0) q = scaled << BigInt(exp);
  else {
    const sh = BigInt(-exp);
    q = scaled >> sh;
    const rem = scaled - (q << sh);
    const half = 1n << (sh - 1n);
    if (rem > half || (rem === half && (q & 1n) === 1n)) q++;
  }
  let s = q.toString().padStart(prec + 1, '0');
  if (prec > 0) s = `${s.slice(0, -prec)}.${s.slice(-prec)}`;
  return ((x < 0 ? '-' : '') + s).padStart(width);
}

/**
 * printf's "%*.*s" of a fixed-size name field: the bytes up to the first
 * NUL (at most `len`), right-aligned in `len` columns.
 */
function cName(b: Buffer, len: number): string {
  const field = b.subarray(0, Math.min(len, b.length));
  const nul = field.indexOf(0);
  const name = nul < 0 ? field : field.subarray(0, nul);
  return sp(len - name.length) + name.toString('utf8');
}

/**
 * strtol(s, NULL, 0) (base 0: 0x hex, leading 0 octal, else decimal) or
 * strtoull(s, NULL, 16): the longest numeric prefix, 0 without one; null
 * where the C call would overflow (and set errno, which the reference treats
 * as "not given").
 */
function cStrtol(s: string, base: 0 | 16, unsigned: boolean): bigint | null {
  const m = /^\s*([+-]?)(.*)$/s.exec(s)!;
  let rest = m[2];
  let radix: number = base;
  if (/^0[xX][0-9a-fA-F]/.test(rest)) {
    rest = rest.slice(2);
    radix = 16;
  } else if (radix === 0) radix = rest.startsWith('0') ? 8 : 10;
  const digits = (radix === 8 ? /^[0-7]*/ : radix === 10 ? /^[0-9]*/ : /^[0-9a-fA-F]*/).exec(rest)![0];
  let v = 0n;
  for (const c of digits) v = v * BigInt(radix) + BigInt(parseInt(c, 16));
  const neg = m[1] === '-';
  if (unsigned) return v > U64_MAX ? null : neg ? BigInt.asUintN(64, -v) : v;
  if (v > (neg ? 2n ** 63n : 2n ** 63n - 1n)) return null;
  return neg ? -v : v;
}

/** The HAMMER2_SHOW_* environment knobs the reference reads. */
interface ShowSettings {
  allHeaders: boolean;
  /** Indentation per level (0..8). */
  tab: number;
  /** Levels to descend, -1 for all. */
  depth: number;
  minMirrorTid: bigint;
  minModifyTid: bigint;
}

function showSettings(env: NodeJS.ProcessEnv): ShowSettings {
  const int = (name: string): number | null => {
    const s = env[name];
    if (s === undefined) return null;
    const v = cStrtol(s, 0, false);
    return v === null ? NaN : Number(BigInt.asIntN(32, v)); // (int) of the long
  };
  const tid = (name: string): bigint => {
    const s = env[name];
    return s === undefined ? 0n : (cStrtol(s, 16, true) ?? 0n);
  };
  const all = int('HAMMER2_SHOW_ALL_VOLUME_HEADERS');
  const tab = int('HAMMER2_SHOW_TAB');
  const depth = int('HAMMER2_SHOW_DEPTH');
  return {
    allHeaders: !!all, // NaN (overflow) is false too
    tab: tab === null || !(tab >= 0 && tab <= 8) ? 2 : tab,
    depth: depth === null || !(depth >= 0) ? -1 : depth,
    minMirrorTid: tid('HAMMER2_SHOW_MIN_MIRROR_TID'),
    minModifyTid: tid('HAMMER2_SHOW_MIN_MODIFY_TID'),
  };
}

/** Output gathered into pieces: a dump runs to megabytes. */
class Out {
  private parts: string[] = [];
  private size = 0;

  constructor(private readonly io: CliIo) {}

  put(s: string): void {
    this.parts.push(s);
    this.size += s.length;
    if (this.size >= 1 << 16) this.flush();
  }

  flush(): void {
    if (!this.parts.length) return;
    this.io.out(this.parts.join(''));
    this.parts = [];
    this.size = 0;
  }
}

/** `data` extended with zeros to `n` bytes, where a structure is read past a short block. */
const atLeast = (data: Buffer, n: number): Buffer => (data.length >= n ? data : Buffer.concat([data, Buffer.alloc(n - data.length)]));

/** The volume holding logical offset `loff`, as the reference finds a volume's path and fd. */
const volumeAt = (vols: VolumeSet, loff: bigint): Volume | undefined =>
  vols.volumes.find((v) => loff >= BigInt(v.offset) && loff < BigInt(v.offset + v.size));

/** Tallies of the freemap dump: bytes per 2-bit state, in 16 KiB blocks and in whole 64 KiB chunks. */
interface FreemapTotals {
  accum16: number[];
  accum64: number[];
  unavail: number;
  freemap: number;
}

class Dump {
  readonly totals: FreemapTotals = { accum16: [0, 0, 0, 0], accum64: [0, 0, 0, 0], unavail: 0, freemap: 0 };
  /** Indentation of the first blockref shown: depth is counted from it. */
  private initTab = -1;

  constructor(
    private readonly vols: VolumeSet,
    private readonly out: Out,
    private readonly verbose: number,
    private readonly quiet: number,
    private readonly set: ShowSettings,
  ) {}

  private volumeId(dataOff: bigint): number {
    return volumeAt(this.vols, dataOff & ~OFF_MASK_RADIX)?.id ?? -1;
  }

  /** One blockref, its block's contents and (unless `norecurse`) its children; `vh` is the header being shown. */
  showBref(vh: VolumeHeader, tab: number, bi: number, b: Blockref, norecurse: number): void {
    const { set, out } = this;
    if (b.mirrorTid < set.minMirrorTid) return;
    // A zero modify_tid is kept, except on an inode with no leaves.
    if (b.modifyTid < set.minModifyTid && (b.modifyTid !== 0n || (b.type === BrefType.INODE && b.leafCount === 0))) return;
    if (this.initTab === -1) this.initTab = tab;

    const radix = Number(b.dataOff & OFF_MASK_RADIX);
    const bytes = radix ? 2 ** radix : 0;
    const off = b.dataOff & ~OFF_MASK_RADIX;
    let data: Buffer = EMPTY_MEDIA;
    if (bytes) {
      // The reference reads from the 16 KiB boundary below into a 64 KiB
      // buffer, so only a block past 64 KiB plus that slack cannot be read.
      if (PBUFSIZE + Number(off % 16384n) < bytes) {
        out.put(`(bad block size ${1n << BigInt(radix)})\n`);
        return;
      }
      if (b.type !== BrefType.DATA || this.verbose >= 1) {
        try {
          data = this.vols.read(Number(off), bytes);
        } catch (e) {
          if (!(e instanceof DeviceError)) throw e;
          out.put('(media read failed)\n');
          return;
        }
      }
    }

    let children: Blockref[] = [];
    let inode: InodeData | undefined;
    let vd: VolumeHeader | undefined;
    switch (b.type) {
      case BrefType.INODE:
        inode = decodeInode(atLeast(data, INODE_BYTES));
        children = rawInodeBlockset(inode.raw) ?? [];
        break;
      case BrefType.INDIRECT:
      case BrefType.FREEMAP_NODE:
        children = decodeBlockrefArray(data, 0, Math.floor(bytes / 128));
        break;
      case BrefType.VOLUME:
      case BrefType.FREEMAP:
        vd = decodeVolumeHeader(atLeast(data, VOLUME_BYTES));
        children = b.type === BrefType.VOLUME ? vd.sroot : vd.freemap;
        break;
    }

    const typeStr = BREF_TYPE_NAMES[b.type] ?? 'unknown';
    const isFreemap = b.type === BrefType.FREEMAP_NODE || b.type === BrefType.FREEMAP_LEAF;
    const ids = `${typeStr}.${String(bi).padEnd(3)}`;
    const where = `${hex16(b.dataOff)} ${hex16(b.key)}/${String(b.keybits).padEnd(2)} `;
    const tids = `vol=${this.volumeId(b.dataOff)} mir=${hex16(b.mirrorTid)} mod=${hex16(b.modifyTid)}`;
    if (this.quiet > 0) {
      out.put(`${sp(tab)}${ids} ${where}${tids} leafcnt=${b.leafCount} `);
    } else {
      out.put(`${sp(tab)}${ids}${sp(Math.max(0, 8 - typeStr.length))} ${where}\n${sp(tab + 13)}${tids} lfcnt=${b.leafCount} `);
      if (children.length || b.flags || isFreemap) out.put(`\n${sp(tab + 13)}`);
    }
    if (children.length) out.put(`bcnt=${children.length} `);
    if (b.flags) out.put(`flags=${hex(b.flags, 2)} `);
    if (isFreemap) {
      const h = brefFreemapHints(b);
      out.put(`bigmask=${hex(h.bigmask, 8)} avail=${h.avail} `);
    }

    let failed = 0;
    if (bytes && (b.type !== BrefType.DATA || this.verbose >= 1)) {
      if (this.quiet <= 0) out.put(`\n${sp(tab + 13)}`);
      const r = checkText(b, data);
      out.put(r.text);
      failed = r.failed ? 1 : 0;
    }

    tab += set.tab;
    let obrace = true;
    let namelen = 0;
    if (this.quiet > 0) {
      obrace = false;
      out.put('\n');
    } else {
      const line = (s: string) => out.put(`${sp(tab)}${s}\n`);
      switch (b.type) {
        case BrefType.EMPTY:
          if (norecurse) out.put('\n');
          obrace = false;
          break;
        case BrefType.DIRENT: {
          out.put('{\n');
          const h = direntHead(b);
          // Names of up to 64 bytes live in the bref's check field, longer ones in the block.
          line(`filename "${cName(h.namlen <= 64 ? b.check : data, h.namlen)}"`);
          line(`inum 0x${hex16(h.inum)}`);
          line(`nlen ${h.namlen}`);
          line(`type ${objTypeName(h.type)}`);
          break;
        }
        case BrefType.INODE: {
          out.put('{\n');
          const m = inode!.meta;
          namelen = m.nameLen > 256 ? 0 : m.nameLen;
          const pfsRoot = (m.opFlags & OPFLAG_PFSROOT) !== 0 || m.pfsType === PfsType.SUPROOT;
          line(`filename "${cName(inode!.filename, namelen)}"`);
          line(`version  ${m.version}`);
          if (pfsRoot) line(`pfs_st   ${m.pfsSubtype} (${pfsSubtypeName(m.pfsSubtype)})`);
          line(`uflags   0x${hex(m.uflags, 8)}`);
          if (m.rmajor || m.rminor) {
            line(`rmajor   ${m.rmajor | 0}`);
            line(`rminor   ${m.rminor | 0}`);
          }
          line(`ctime    ${time64ToStr(m.ctime)}`);
          line(`mtime    ${time64ToStr(m.mtime)}`);
          line(`atime    ${time64ToStr(m.atime)}`);
          line(`btime    ${time64ToStr(m.btime)}`);
          line(`uid      ${uuidToString(m.uid)}`);
          line(`gid      ${uuidToString(m.gid)}`);
          line(`type     ${objTypeName(m.type)}`);
          line(`opflgs   0x${hex(m.opFlags, 2)}`);
          line(`capflgs  0x${hex(m.capFlags, 4)}`);
          line(`mode     ${m.mode.toString(8).padEnd(7)}`);
          line(`inum     0x${hex16(m.inum)}`);
          const embedded = m.opFlags & OPFLAG_DIRECTDATA && m.size <= 512n;
          line(`size     ${m.size} ${embedded ? '(embedded data)' : ''}`);
          line(`nlinks   ${m.nlinks}`);
          line(`iparent  0x${hex16(m.iparent)}`);
          line(`name_key 0x${hex16(m.nameKey)}`);
          line(`name_len ${m.nameLen}`);
          line(`ncopies  ${m.ncopies}`);
          line(`compalg  ${compModeName(m.compAlgo)}`);
          line(`checkalg ${checkModeName(m.checkAlgo)}`);
          if (pfsRoot) {
            line(`pfs_nmas ${m.pfsNmasters}`);
            line(`pfs_type ${m.pfsType} (${pfsTypeName(m.pfsType)})`);
            line(`pfs_inum 0x${hex16(m.pfsInum)}`);
            line(`pfs_clid ${uuidToString(m.pfsClid)}`);
            line(`pfs_fsid ${uuidToString(m.pfsFsid)}`);
            line(`pfs_lsnap_tid 0x${hex16(m.pfsLsnapTid)}`);
          }
          line(`data_quota  ${m.dataQuota}`);
          line(`data_count  ${b.embed.readBigUInt64LE(0)}`);
          line(`inode_quota ${m.inodeQuota}`);
          line(`inode_count ${b.embed.readBigUInt64LE(8)}`);
          break;
        }
        case BrefType.INDIRECT:
          out.put('{\n');
          break;
        case BrefType.VOLUME:
        case BrefType.FREEMAP:
          out.put(`mirror_tid=${hex16(vd!.mirrorTid)} freemap_tid=${hex16(vd!.freemapTid)} {\n`);
          break;
        case BrefType.FREEMAP_LEAF: {
          out.put('{\n');
          line(`rotation=${rotation(off)}`);
          const leaf = atLeast(data, FREEMAP_LEVELN_PSIZE);
          for (let i = 0; i < FREEMAP_COUNT; i++) {
            const seg = BigInt.asUintN(64, b.key + BigInt(i * SEG_BYTES));
            const words = Array.from({ length: 8 }, (_, w) => hex16(bmapWord(leaf, i, w))).join(' ');
            out.put(
              `${sp(tab + 4)}${hex16(seg)} ${String(i).padStart(4, '0')}.${hex(bmapClass(leaf, i), 4)} ` +
                `linear=${hex(bmapLinear(leaf, i) >>> 0, 6)} avail=${hex(bmapAvail(leaf, i), 6)} ${words}\n`,
            );
          }
          line('}');
          break;
        }
        case BrefType.FREEMAP_NODE:
          out.put('{\n');
          line(`rotation=${rotation(off)}`);
          break;
        default:
          out.put('\n');
          obrace = false;
          break;
      }
    }

    if (b.type === BrefType.FREEMAP_LEAF) this.countLeaf(vh, b.key, atLeast(data, FREEMAP_LEVELN_PSIZE));

    // A block that failed its check still has its direct children listed, but no deeper.
    if (set.depth === -1 || Math.trunc((tab - this.initTab) / set.tab) < set.depth) {
      if (norecurse === 0) {
        children.forEach((c, i) => {
          if (c.type !== BrefType.EMPTY) this.showBref(vh, tab, i, c, failed);
        });
      }
    }
    tab -= set.tab;
    if (obrace) {
      const tail = b.type === BrefType.INODE ? `, "${cName(inode!.filename, namelen)}"` : '';
      out.put(`${sp(tab)}} (${typeStr}.${bi}${tail})\n`);
    }
  }

  /** Add a leaf's 256 segments to the totals: those past the aux area and inside the media by state, the rest as unavailable. */
  private countLeaf(vh: VolumeHeader, key: bigint, leaf: Buffer): void {
    const t = this.totals;
    const total = BigInt(this.vols.totalSize);
    for (let i = 0; i < FREEMAP_COUNT; i++) {
      const seg = BigInt.asUintN(64, key + BigInt(i * SEG_BYTES));
      if (seg < vh.auxEnd || seg >= total) {
        t.unavail += SEG_BYTES;
        continue;
      }
      for (let blk = 0; blk < 256; blk += 4) {
        const v = bmapPair(leaf, i, blk);
        let same = true;
        for (let k = 0; k < 4; k++) {
          const p = bmapPair(leaf, i, blk + k);
          t.accum16[p] += 16384;
          if (p !== v) same = false;
        }
        if (same) t.accum64[v] += 65536;
      }
    }
    t.freemap += GIG;
  }

  /** The body of `hammer2 volhdr` for one header copy (zone `bi`). */
  showVolhdr(raw: Buffer, bi: number): void {
    const h = decodeVolumeHeader(raw);
    const x = volumeHeaderExtras(raw);
    const out = this.out;
    const line = (s: string) => out.put(`    ${s}\n`);
    const size = (v: bigint, unit: number, name: string) => `(${cFixed(Number(v) / unit, 2, 6)}${name})`;
    const crc = (computed: number, stored: number) => `0x${hex(computed, 8)}/0x${hex(stored, 8)}`;
    out.put(`\nVolume ${h.voluId} header ${bi} {\n`);
    line(`magic          0x${hex16(h.magic)}`);
    line(`boot_beg       0x${hex16(h.bootBeg)}`);
    line(`boot_end       0x${hex16(h.bootEnd)} ${size(BigInt.asUintN(64, h.bootEnd - h.bootBeg), MIB, 'MB')}`);
    line(`aux_beg        0x${hex16(h.auxBeg)}`);
    line(`aux_end        0x${hex16(h.auxEnd)} ${size(BigInt.asUintN(64, h.auxEnd - h.auxBeg), MIB, 'MB')}`);
    line(`volu_size      0x${hex16(h.voluSize)} ${size(h.voluSize, GIG, 'GB')}`);
    line(`version        ${h.version | 0}`);
    line(`flags          0x${hex(h.flags, 8)}`);
    line(`copyid         ${h.copyid}`);
    line(`freemap_vers   ${h.freemapVersion}`);
    line(`peer_type      ${h.peerType}`);
    line(`volu_id        ${h.voluId}`);
    line(`nvolumes       ${h.nvolumes}`);
    line(`fsid           ${uuidToString(h.fsid)}`);
    const fstype = uuidToString(h.fstype);
    line(`fstype         ${fstype}`);
    line(`               (${fstype === HAMMER2_UUID_STRING ? 'DragonFly HAMMER2' : '?'})`);
    line(`allocator_size 0x${hex16(h.allocatorSize)} ${size(h.allocatorSize, GIG, 'GB')}`);
    line(`allocator_free 0x${hex16(h.allocatorFree)} ${size(h.allocatorFree, GIG, 'GB')}`);
    line(`allocator_beg  0x${hex16(h.allocatorBeg)} ${size(h.allocatorBeg, GIG, 'GB')}`);
    line(`mirror_tid     0x${hex16(h.mirrorTid)}`);
    line(`reserved0080   0x${hex16(x.reserved0080)}`);
    line(`reserved0088   0x${hex16(x.reserved0088)}`);
    line(`freemap_tid    0x${hex16(h.freemapTid)}`);
    line(`bulkfree_tid   0x${hex16(h.bulkfreeTid)}`);
    // The reference prints element 0 on each of the four lines.
    for (let i = 0; i < 4; i++) line(`reserved00A0/${i} 0x${hex16(x.reserved00A0[0])}`);
    line(`total_size     0x${hex16(h.totalSize)}`);
    line(`copyexists    ${x.copyexists.map((c) => ` 0x${hex(c, 2)}`).join('')}`);
    out.put('\n');
    // icrc_sects[7] covers sector 0 and [6] sector 1; the others are unused.
    for (let i = 0; i < 8; i++) {
      const s = x.icrcSects[i];
      const computed = i === 7 ? x.crcSect0 : x.crcSect1;
      const text = i === 7 || i === 6 ? `${crc(computed, s)} ${computed === s ? '(OK)' : '(FAILED)'}` : `0x${hex(s, 8)} (reserved)`;
      line(`icrc_sects[${i}]  ${text}`);
    }
    const vhOk = x.crcVolheader === x.icrcVolheader;
    line(`icrc_volhdr    ${crc(x.crcVolheader, x.icrcVolheader)} ${vhOk ? '(OK)' : '(FAILED - not a critical error)'}`);
    out.put('\n');
    for (const [name, set] of [
      ['sroot_blockset', h.sroot],
      ['freemap_blockset', h.freemap],
    ] as const) {
      line(`${name} {`);
      set.forEach((b, i) => this.showBref(h, 16, i, b, 2));
      line('}');
    }
    if (h.voluLoff.some((v) => v !== 0n)) {
      out.put('\n');
      h.voluLoff.forEach((v, i) => {
        if (v !== U64_MAX) line(`volu_loff[${i}]   0x${hex16(v)}`);
      });
    }
    out.put('}\n');
  }
}

/** Which of the 8 freemap copies (rotations) of a 4 MiB zone segment a freemap block sits in. */
function rotation(off: bigint): number {
  const slot = Number(off % BigInt(SEG_BYTES)) / PBUFSIZE;
  return Math.floor((Math.floor(slot) - ZONE_FREEMAP_00) / ZONE_FREEMAP_INC);
}

/** What the dump prints after a block's ids: its methods and check code, recomputed. */
function checkText(b: Blockref, data: Buffer): { text: string; failed: boolean } {
  const algo = decCheck(b.methods);
  const meth = `${checkModeName(algo)}|${compModeName(decComp(b.methods))}`;
  const ok = (s: string) => ({ text: s, failed: false });
  const bad = (s: string) => ({ text: s, failed: true });
  switch (algo) {
    case CheckMethod.NONE:
    case CheckMethod.DISABLED:
      return ok(`meth=${meth} `);
    case CheckMethod.ISCSI32: {
      const cv = icrc32(data);
      const st = b.check.readUInt32LE(0);
      return st === cv ? ok(`meth=${meth} iscsi32=${hex(cv, 8)} `) : bad(`(icrc ${meth} ${hex(st, 8)}/${hex(cv, 8)} failed) `);
    }
    case CheckMethod.XXHASH64: {
      const cv = xxh64(data);
      const st = b.check.readBigUInt64LE(0);
      return st === cv ? ok(`meth=${meth} xxh=${hex16(cv)} `) : bad(`(xxhash64 ${meth} ${hex16(st)}/${hex16(cv)} failed) `);
    }
    case CheckMethod.SHA192:
      // The reference separates the two names with ':' in this one message.
      return sha192(data).equals(b.check.subarray(0, 24)) ? ok(`meth=${meth} `) : bad(`(sha192 ${meth.replace('|', ':')} failed) `);
    case CheckMethod.FREEMAP: {
      const cv = icrc32(data);
      const st = b.check.readUInt32LE(0);
      return st === cv ? ok(`meth=${meth} fcrc=${hex(cv, 8)} `) : bad(`(fcrc ${meth} ${hex(st, 8)}/${hex(cv, 8)} failed) `);
    }
    default:
      return ok('');
  }
}

/**
 * Every header slot of a volume that can be read whole, valid or not (the
 * dump shows them all), and the best: the highest mirror_tid, the first
 * slot on ties. Unlike mounting, no CRC is checked for this choice.
 */
function volumeZones(v: Volume): { zones: { zone: number; raw: Buffer }[]; best: number } {
  const zones: { zone: number; raw: Buffer }[] = [];
  let best = -1;
  let bestTid = 0n;
  for (let zone = 0; zone < NUM_VOLHDRS; zone++) {
    const pos = zone * ZONE_BYTES;
    if (pos + VOLUME_BYTES > v.dev.size) continue;
    const raw = v.dev.read(pos, VOLUME_BYTES);
    const tid = raw.readBigUInt64LE(0x78); // mirror_tid
    if (best < 0 || tid > bestTid) {
      best = zone;
      bestTid = tid;
    }
    zones.push({ zone, raw });
  }
  return { zones, best };
}

/** The first volume offset in the header's table above `loff` (all ones when none: the last volume). */
function nextVolume(h: VolumeHeader, loff: bigint): bigint {
  return h.voluLoff.find((v) => v > loff) ?? U64_MAX;
}

type ShowMode = 'show' | 'freemap' | 'volhdr';

async function cmdShow(ctx: Hammer2Ctx, devpath: string, mode: ShowMode): Promise<number> {
  await initCodecs();
  let vols: VolumeSet;
  try {
    // Unlocked, read-only: the reference dumps devices that are mounted.
    vols = VolumeSet.open(devpath, { writable: false, lock: false });
  } catch (e) {
    if (e instanceof MountError) throw new DirectiveError(e.message);
    throw e;
  }
  const out = new Out(ctx.io);
  try {
    const set = showSettings(process.env);
    const verbose = Math.max(0, ctx.verbose);
    const dump = new Dump(vols, out, verbose, Math.max(0, ctx.quiet), set);
    const allHeaders = verbose >= 3 || set.allHeaders;
    let next = 0n;
    for (let i = 0; i < MAX_VOLUMES; i++) {
      const loff = next;
      const vol = volumeAt(vols, loff);
      out.put(`${vol ? vol.dev.path : '(null)'}\n`);
      const { zones, best } = vol ? volumeZones(vol) : { zones: [], best: -1 };
      for (const { zone, raw } of zones) {
        const h = decodeVolumeHeader(raw);
        out.put(`Volume ${h.voluId} header ${zone}: mirror_tid=${hex16(h.mirrorTid)}\n`);
        if (!allHeaders && zone !== best) continue;
        if (mode === 'volhdr') {
          dump.showVolhdr(raw, zone);
          next = nextVolume(h, loff);
        } else {
          // The tree of the first volume only: from the header copy, as a bref to it.
          const root = emptyBlockref();
          root.type = mode === 'show' ? BrefType.VOLUME : BrefType.FREEMAP;
          root.dataOff = BigInt(zone * ZONE_BYTES) | BigInt(PBUFRADIX);
          root.mirrorTid = h.mirrorTid;
          dump.showBref(h, 0, zone, root, 0);
          next = U64_MAX;
        }
        if (allHeaders && zone !== NUM_VOLHDRS - 1) out.put('\n');
      }
      if (next === U64_MAX) break;
      if (i !== MAX_VOLUMES - 1) out.put('---------------------------------------------\n');
    }
    if (mode === 'freemap' && verbose < 3) {
      const t = dump.totals;
      const gb = (n: number) => cFixed(n / GIG, 3, 6);
      out.put(`Total unallocated storage:   ${gb(t.accum16[0])}GB (${gb(t.accum64[0])}GB in 64KB chunks)\n`);
      out.put(`Total possibly free storage: ${gb(t.accum16[2])}GB (${gb(t.accum64[2])}GB in 64KB chunks)\n`);
      out.put(`Total allocated storage:     ${gb(t.accum16[3])}GB (${gb(t.accum64[3])}GB in 64KB chunks)\n`);
      out.put(`Total unavailable storage:   ${gb(t.unavail)}GB\n`);
      out.put(`Total freemap storage:       ${gb(t.freemap)}GB\n`);
    }
    return 0;
  } finally {
    out.flush();
    vols.close();
  }
}

const showDirective =
  (mode: ShowMode): Directive =>
  async (ctx, args) => {
    if (args.length !== 1) throw new UsageError(`${mode}: requires device path`);
    return cmdShow(ctx, args[0], mode);
  };

export const directives: Record<string, Directive> = {
  show: showDirective('show'),
  freemap: showDirective('freemap'),
  volhdr: showDirective('volhdr'),
  hash: async (ctx, args) => {
    for (const name of args) ctx.io.out(`${hex16(dirhash(Buffer.from(name)))} ${name}\n`);
    return 0;
  },
  // The hash of a long name's 1 KiB directory record: the name (at most
  // 1023 bytes, as snprintf leaves room for its NUL) and zeros.
  dhash: async (ctx, args) => {
    await initCodecs();
    for (const name of args) {
      const rec = Buffer.alloc(1024);
      Buffer.from(name).copy(rec, 0, 0, 1023);
      ctx.io.out(`${hex16(xxh64(rec))} ${name}\n`);
    }
    return 0;
  },
};
