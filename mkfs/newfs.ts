// newfs_hammer2: lay out an empty HAMMER2 filesystem on one or more volumes.
//
// What gets written (all offsets are volume-relative):
//   - every volume: a copy of its volume header at the start of each 2 GiB
//     zone that begins inside the volume (at most four), and a zeroed last
//     64 KiB block (the reference's "can we write the end" probe);
//   - the root volume (id 0) additionally: the zone-0 reserved segment
//     (first 4 MiB) and the boot and aux areas cleared, then one 64 KiB
//     buffer at the end of the aux area holding the super-root inode followed
//     by one PFS root inode per label.
// Header copies of an older filesystem beyond the formatted size (a -s
// smaller than the device) are erased so that no reader prefers them.
// The freemap is left empty (the filesystem builds it on its first
// allocation) and every blockref and header starts at mirror_tid 0x10.
//
// Nothing written is proportional to the volume size. Areas that must read
// as zeros are only written where they do not already (a fresh sparse image
// needs no writes at all there), so a 1 TiB sparse image stays sparse.
import * as fs from 'node:fs';
import {
  AUX_MAX_BYTES,
  AUX_MIN_BYTES,
  AUX_NOM_BYTES,
  Blockref,
  BOOT_MAX_BYTES,
  BOOT_MIN_BYTES,
  BOOT_NOM_BYTES,
  BREF_FLAG_PFSROOT,
  BrefType,
  CheckMethod,
  CompMethod,
  dirhash,
  emptyBlockref,
  encMethods,
  encodeInode,
  encodeVolumeHeader,
  FREEMAP_LEVEL1_RADIX,
  HAMMER2_UUID_STRING,
  INODE_BYTES,
  INODE_MAXNAME,
  INODE_VERSION_ONE,
  initCodecs,
  InodeData,
  InodeMeta,
  MAX_VOLUMES,
  NUM_VOLHDRS,
  ObjType,
  OPFLAG_PFSROOT,
  PBUFSIZE,
  PEER_HAMMER2,
  PfsType,
  RADIX_MIN,
  SET_COUNT,
  setInodeBlockset,
  uuidFromString,
  uuidRandom,
  uuidToString,
  VOL_VERSION_DEFAULT,
  VOL_VERSION_MIN,
  VOL_VERSION_MULTI_VOLUMES,
  VOL_VERSION_WIP,
  VOLUME_ALIGN,
  VOLUME_BYTES,
  VOLUME_ID_ABO,
  VOLUME_ID_HBO,
  VolumeHeader,
  xxh64,
  ZONE_BYTES,
  ZONE_SEG,
} from '../src/media';
import { Device, DeviceError } from '../src/store';

/** 1 GiB: the freemap level-1 unit; volumes other than the last are multiples of it. */
export const LEVEL1_SIZE = 2 ** FREEMAP_LEVEL1_RADIX;
/** All PFS root inodes share one 64 KiB buffer with the super-root, so at most SET_COUNT PFSs. */
export const MAX_LABELS = SET_COUNT;
/** Every blockref, the volume header's mirror_tid and freemap_tid start here. */
export const INITIAL_TID = 0x10n;
/** First inode number a new PFS hands out. */
export const FIRST_PFS_INUM = 16n;
/** Copy id of storage refs written by newfs ("local"). */
export const COPYID_LOCAL = 0xff;

export class NewfsError extends Error {
  override name = 'NewfsError';
}

export interface FormatOptions {
  /** One path per volume; several paths form one filesystem (version 2). */
  paths: string[];
  /**
   * The -L values in order. `undefined` or `[]`: the default set (LOCAL, DATA).
   * "none" (any case) means "no label besides LOCAL". LOCAL is always created.
   */
  labels?: string[];
  /** Volume version, 1 or 2 (default 2). Several volumes need 2. */
  version?: number;
  /** Boot area bytes; 0/undefined: scaled from the size like the reference. */
  bootSize?: number;
  /** Aux area bytes; 0/undefined: scaled from the size like the reference. */
  auxSize?: number;
  /**
   * -s: one value caps the whole filesystem (shared out over the volumes in
   * order), several give one cap per volume. A missing image file is created
   * sparse with its size (one size per missing volume when there are several).
   */
  sizes?: number[];
  /** Format even if a target already holds a HAMMER2 volume. */
  force?: boolean;
  /** Called with non-fatal notes (e.g. a -s larger than an existing image). */
  warn?: (msg: string) => void;
}

export interface FormattedVolume {
  path: string;
  id: number;
  /** Logical offset of the volume within the filesystem. */
  offset: number;
  /** Formatted size (aligned; may be less than the file). */
  size: number;
  /** Number of volume header copies written (one per 2 GiB zone). */
  headers: number;
  /** True if newfs created the image file. */
  created: boolean;
}

export interface FormattedPfs {
  label: string;
  clid: string;
  fsid: string;
  /** Media offset of the PFS root inode. */
  offset: number;
  nameKey: bigint;
}

export interface FormatResult {
  version: number;
  volumes: FormattedVolume[];
  totalSize: number;
  bootSize: number;
  auxSize: number;
  reservedSize: number;
  freeSize: number;
  allocatorBeg: number;
  volFsid: string;
  supClid: string;
  supFsid: string;
  /** PFSs in the order they were laid out (LOCAL first). */
  pfs: FormattedPfs[];
}

// ---------------------------------------------------------------------------
// Argument helpers shared with the CLI

/**
 * Parse a size: an integer (decimal or 0x hex) with an optional K/M/G/T
 * suffix (powers of 1024, either case). A bare number is bytes.
 */
export function parseSize(str: string, what = 'size'): number {
  const m = /^\s*(0x[0-9a-f]+|[0-9]+)\s*([kmgt]?)b?\s*$/i.exec(str);
  if (!m) throw new NewfsError(`bad ${what} '${str}' (expected a number with an optional K, M, G or T suffix)`);
  const mult: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };
  const v = Number(BigInt(m[1].toLowerCase()) * BigInt(mult[m[2].toLowerCase()]));
  if (!Number.isSafeInteger(v)) throw new NewfsError(`${what} '${str}' is too large`);
  return v;
}

/** "a:b:c" → one size per volume (the reference's -s syntax). */
export function parseSizeList(str: string): number[] {
  const parts = str.split(':');
  if (parts.length > MAX_VOLUMES) throw new NewfsError(`-s: at most ${MAX_VOLUMES} sizes`);
  return parts.map((p) => parseSize(p, 'size'));
}

/** Boot/aux sizes as the reference takes them: multiples of 8 MiB within [min, max]. */
export function checkAreaSize(bytes: number, what: string, max: number): number {
  if (bytes < VOLUME_ALIGN) throw new NewfsError(`${what} ${sizeToStr(bytes).trim()} is too small (min ${sizeToStr(VOLUME_ALIGN).trim()})`);
  if (bytes > max) throw new NewfsError(`${what} ${sizeToStr(bytes).trim()} is too large (max ${sizeToStr(max).trim()})`);
  if (bytes % VOLUME_ALIGN) throw new NewfsError(`${what} ${bytes} is not a multiple of ${VOLUME_ALIGN / 1024}K`);
  return bytes;
}

export function parseVersion(str: string): number {
  const v = /^(0x[0-9a-f]+|[0-9]+)$/i.test(str.trim()) ? Number(str.trim()) : NaN;
  if (!(v >= VOL_VERSION_MIN && v < VOL_VERSION_WIP)) {
    throw new NewfsError(`I don't understand how to format HAMMER2 version ${str} (supported: ${VOL_VERSION_MIN}..${VOL_VERSION_WIP - 1})`);
  }
  return v;
}

/** printf("%6.2f<unit>") with binary units, as the reference prints sizes. */
export function sizeToStr(size: number): string {
  const units: [number, string][] = [
    [1024 / 2, 'B'],
    [1024 ** 2 / 2, 'KB'],
    [1024 ** 3 / 2, 'MB'],
    [1024 ** 4 / 2, 'GB'],
  ];
  let div = 1;
  for (const [limit, unit] of units) {
    if (size < limit) return (size / div).toFixed(2).padStart(6) + unit;
    div *= 1024;
  }
  return (size / div).toFixed(2).padStart(6) + 'TB';
}

/**
 * The final PFS label list (LOCAL first, as the reference lays them out),
 * validated: names must be usable as one path component and as a mount
 * label ("image@LABEL"), unique, and there is room for SET_COUNT PFSs.
 */
export function resolveLabels(given: string[] | undefined): string[] {
  const out = ['LOCAL'];
  const list = given ?? [];
  for (const l of list) {
    if (l.toLowerCase() === 'none') continue;
    const b = Buffer.from(l, 'utf8');
    if (b.length === 0) throw new NewfsError(`invalid label '': a PFS label cannot be empty`);
    if (b.length >= INODE_MAXNAME) throw new NewfsError(`invalid label '${l}': too long (${INODE_MAXNAME - 1} bytes max)`);
    if (l === '.' || l === '..') throw new NewfsError(`invalid label '${l}'`);
    if (/[/\0@]/.test(l)) throw new NewfsError(`invalid label '${l}': it cannot contain '/', '@' or NUL`);
    if (/[\x00-\x1f\x7f]/.test(l)) throw new NewfsError(`invalid label '${JSON.stringify(l)}': control characters are not allowed`);
    if (l === 'LOCAL') throw new NewfsError(`invalid label 'LOCAL': LOCAL is always created, don't give it with -L`);
    if (out.includes(l)) throw new NewfsError(`invalid label '${l}': given twice`);
    if (out.length >= MAX_LABELS) throw new NewfsError(`too many labels: at most ${MAX_LABELS - 1} besides LOCAL`);
    out.push(l);
  }
  if (list.length === 0) out.push('DATA');
  const keys = new Map<bigint, string>();
  for (const l of out) {
    const k = dirhash(Buffer.from(l, 'utf8'));
    const other = keys.get(k);
    if (other !== undefined) throw new NewfsError(`invalid label '${l}': its name hash collides with '${other}'`);
    keys.set(k, l);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Layout arithmetic (pure)

export interface AreaLayout {
  bootSize: number;
  auxSize: number;
  /** 4 MiB per started GiB of the whole filesystem. */
  reservedSize: number;
  /** What the allocator may hand out: total - reserved - boot - aux (may be <= 0: too small). */
  freeSize: number;
  bootBeg: number;
  auxBeg: number;
  auxEnd: number;
}

const roundUp = (v: number, a: number): number => Math.ceil(v / a) * a;

/** Boot/aux defaults scale down (by halves) to 1/20th of the filesystem, then round up to 8 MiB. */
function areaSize(requested: number | undefined, nominal: number, min: number, total: number): number {
  let s = requested ?? 0;
  if (s === 0) {
    s = nominal;
    while (s > total / 20) s = Math.floor(s / 2);
    if (s < min) s = min;
  } else if (s < min) {
    s = min;
  }
  return roundUp(s, VOLUME_ALIGN);
}

export function computeAreas(totalSize: number, bootSize?: number, auxSize?: number): AreaLayout {
  const boot = areaSize(bootSize, BOOT_NOM_BYTES, BOOT_MIN_BYTES, totalSize);
  const aux = areaSize(auxSize, AUX_NOM_BYTES, AUX_MIN_BYTES, totalSize);
  const reserved = Math.ceil(totalSize / LEVEL1_SIZE) * ZONE_SEG;
  const bootBeg = ZONE_SEG;
  return {
    bootSize: boot,
    auxSize: aux,
    reservedSize: reserved,
    freeSize: totalSize - reserved - boot - aux,
    bootBeg,
    auxBeg: bootBeg + boot,
    auxEnd: bootBeg + boot + aux,
  };
}

/** Smallest (8 MiB aligned) single-volume filesystem these boot/aux settings fit in. */
export function minimumSize(bootSize?: number, auxSize?: number): number {
  for (let t = VOLUME_ALIGN; ; t += VOLUME_ALIGN) {
    const a = computeAreas(t, bootSize, auxSize);
    if (a.freeSize > 0 && a.auxEnd + PBUFSIZE <= t) return t;
  }
}

/** Header copies a volume of `size` bytes carries: one per 2 GiB zone that starts inside it. */
export const headerCount = (size: number): number => Math.min(NUM_VOLHDRS, Math.ceil(size / ZONE_BYTES));

// ---------------------------------------------------------------------------
// Formatting

interface Target {
  path: string;
  /** Requested size for a file to create (only when missing). */
  createSize?: number;
  dev?: Device;
  created: boolean;
  size: number;
  offset: number;
}

function errText(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  switch (err.code) {
    case 'ENOENT':
      return 'no such file or directory';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EISDIR':
      return 'is a directory';
    case 'EROFS':
      return 'read-only file system';
    case 'ENOTDIR':
      return 'a parent is not a directory';
    case 'EFBIG':
      return 'file too large for the filesystem it is on';
    case 'ENOSPC':
      return 'no space left on device';
    default:
      return err.message ?? String(e);
  }
}

/** The first volume header slot of an existing target that carries the HAMMER2 magic. */
function existingHammer2(dev: Device): { zone: number; fsid?: string } | undefined {
  for (let zone = 0; zone < NUM_VOLHDRS; zone++) {
    const pos = zone * ZONE_BYTES;
    if (pos + 0x60 > dev.size) break;
    const head = dev.read(pos, 0x60);
    const magic = head.readBigUInt64LE(0);
    if (magic === VOLUME_ID_HBO) return { zone, fsid: uuidToString(head.subarray(0x40, 0x50)) };
    if (magic === VOLUME_ID_ABO) return { zone };
  }
  return undefined;
}

/** Open a target read-write and locked, with a one-line reason when that is impossible. */
function openTarget(path: string): Device {
  try {
    fs.closeSync(fs.openSync(path, 'r+'));
  } catch (e) {
    throw new NewfsError(`cannot open ${path} for writing: ${errText(e)}`);
  }
  try {
    return Device.open(path, { writable: true, lock: true });
  } catch (e) {
    if (e instanceof DeviceError) throw new NewfsError(`cannot use ${e.message}`);
    throw e;
  }
}

const ZERO_CHUNK = Buffer.alloc(1024 * 1024);

/** True if `dev` is a regular file with no block allocated: it reads as zeros throughout. */
function allHoles(dev: Device): boolean {
  if (dev.isBlockDevice) return false;
  return fs.fstatSync(dev.fd).blocks === 0;
}

/**
 * Make [start, end) read as zeros, writing only where it does not already,
 * so holes stay holes.
 */
function clearRange(dev: Device, start: number, end: number): void {
  const buf = Buffer.allocUnsafe(ZERO_CHUNK.length);
  for (let pos = start; pos < end; pos += ZERO_CHUNK.length) {
    const n = Math.min(ZERO_CHUNK.length, end - pos);
    const got = dev.read(pos, n, buf);
    if (!got.subarray(0, n).equals(ZERO_CHUNK.subarray(0, n))) dev.write(pos, ZERO_CHUNK.subarray(0, n));
  }
}

function inodeMeta(now: bigint): InodeMeta {
  return {
    version: INODE_VERSION_ONE,
    pfsSubtype: 0,
    uflags: 0,
    rmajor: 0,
    rminor: 0,
    ctime: now,
    mtime: now,
    atime: now,
    btime: now,
    uid: Buffer.alloc(16),
    gid: Buffer.alloc(16),
    type: ObjType.DIRECTORY,
    opFlags: 0,
    capFlags: 0,
    mode: 0o755,
    inum: 0n,
    size: 0n,
    nlinks: 1n,
    iparent: 0n,
    nameKey: 0n,
    nameLen: 0,
    ncopies: 0,
    compAlgo: 0,
    checkAlgo: 0,
    pfsNmasters: 0,
    pfsType: PfsType.NONE,
    pfsInum: 0n,
    pfsClid: Buffer.alloc(16),
    pfsFsid: Buffer.alloc(16),
    dataQuota: 0n,
    inodeQuota: 0n,
    pfsLsnapTid: 0n,
    decryptCheck: 0n,
  };
}

function newInode(meta: InodeMeta, name: string): InodeData {
  const filename = Buffer.from(name, 'utf8');
  meta.nameLen = filename.length;
  return { meta, filename, u: Buffer.alloc(512), raw: Buffer.alloc(INODE_BYTES) };
}

/** A blockref to a 1 KiB inode at media offset `off`, checked with xxhash64. */
function inodeBref(off: number, raw: Buffer, comp: number, key: bigint, flags: number): Blockref {
  const b = emptyBlockref();
  b.type = BrefType.INODE;
  b.methods = encMethods(CheckMethod.XXHASH64, comp);
  b.copyid = COPYID_LOCAL;
  b.keybits = 0;
  b.vradix = RADIX_MIN;
  b.flags = flags;
  b.key = key;
  b.mirrorTid = INITIAL_TID;
  b.dataOff = BigInt(off) | BigInt(RADIX_MIN);
  b.check.writeBigUInt64LE(xxh64(raw), 0);
  return b;
}

interface InodeBlock {
  /** 64 KiB buffer to write at `base`. */
  buf: Buffer;
  base: number;
  sroot: Blockref;
  allocatorBeg: number;
  pfs: FormattedPfs[];
  supClid: Buffer;
  supFsid: Buffer;
}

/**
 * Build the super-root and the PFS root inodes, packed at `allocBase`
 * (the end of the aux area): super-root first, then one inode per label.
 */
function buildInodes(labels: string[], allocBase: number, now: bigint, supClid: Buffer, supFsid: Buffer): InodeBlock {
  const base = Math.floor(allocBase / PBUFSIZE) * PBUFSIZE;
  const buf = Buffer.alloc(PBUFSIZE);
  const isize = 1 << RADIX_MIN; // == INODE_BYTES
  let next = allocBase;
  const srootOff = next;
  next += isize;
  const pfs: FormattedPfs[] = [];
  const brefs: Blockref[] = [];
  for (const label of labels) {
    const off = next;
    next += isize;
    const clid = uuidRandom();
    const fsid = uuidRandom();
    const m = inodeMeta(now);
    m.mode = 0o755;
    m.inum = 1n;
    m.nlinks = 1n;
    const boot = label.toLowerCase() === 'boot';
    m.compAlgo = boot ? CompMethod.AUTOZERO : CompMethod.LZ4;
    m.checkAlgo = CheckMethod.XXHASH64;
    m.pfsClid = clid;
    m.pfsFsid = fsid;
    m.pfsType = PfsType.MASTER;
    m.opFlags = OPFLAG_PFSROOT;
    m.pfsInum = FIRST_PFS_INUM;
    const ip = newInode(m, label);
    m.nameKey = dirhash(ip.filename);
    const raw = encodeInode(ip);
    raw.copy(buf, off - base);
    brefs.push(inodeBref(off, raw, CompMethod.NONE, m.nameKey, BREF_FLAG_PFSROOT));
    pfs.push({ label, clid: uuidToString(clid), fsid: uuidToString(fsid), offset: off, nameKey: m.nameKey });
  }
  if (next > base + PBUFSIZE) throw new Error('internal: inodes do not fit one 64 KiB buffer');

  const m = inodeMeta(now);
  m.mode = 0o700;
  m.inum = 0n;
  m.nlinks = 2n;
  m.compAlgo = CompMethod.AUTOZERO;
  m.checkAlgo = CheckMethod.XXHASH64;
  m.pfsClid = supClid;
  m.pfsFsid = supFsid;
  m.pfsType = PfsType.SUPROOT;
  m.pfsInum = 0n;
  const sip = newInode(m, 'SUPROOT');
  m.nameKey = 0n;
  brefs.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  while (brefs.length < SET_COUNT) brefs.push(emptyBlockref());
  setInodeBlockset(sip, brefs);
  const sraw = encodeInode(sip);
  sraw.copy(buf, srootOff - base);
  const sroot = inodeBref(srootOff, sraw, CompMethod.AUTOZERO, 0n, 0);
  return { buf, base, sroot, allocatorBeg: next, pfs, supClid, supFsid };
}

function volumeHeader(fields: Partial<VolumeHeader>): Buffer {
  const v: VolumeHeader = {
    magic: VOLUME_ID_HBO,
    bootBeg: 0n,
    bootEnd: 0n,
    auxBeg: 0n,
    auxEnd: 0n,
    voluSize: 0n,
    version: VOL_VERSION_DEFAULT,
    flags: 0,
    copyid: 0,
    freemapVersion: 0,
    peerType: PEER_HAMMER2,
    voluId: 0,
    nvolumes: 0,
    fsid: Buffer.alloc(16),
    fstype: uuidFromString(HAMMER2_UUID_STRING),
    allocatorSize: 0n,
    allocatorFree: 0n,
    allocatorBeg: 0n,
    mirrorTid: INITIAL_TID,
    freemapTid: INITIAL_TID,
    bulkfreeTid: 0n,
    totalSize: 0n,
    sroot: Array.from({ length: SET_COUNT }, emptyBlockref),
    freemap: Array.from({ length: SET_COUNT }, emptyBlockref),
    voluLoff: new Array<bigint>(MAX_VOLUMES).fill(0n),
    raw: Buffer.alloc(VOLUME_BYTES),
    ...fields,
  };
  return encodeVolumeHeader(v);
}

/**
 * Format `opts.paths` as one HAMMER2 filesystem. Everything that can be
 * checked is checked before the first byte is written or a file is created;
 * on a refusal the targets are untouched.
 */
export async function formatHammer2(opts: FormatOptions): Promise<FormatResult> {
  await initCodecs();
  const warn = opts.warn ?? (() => undefined);
  const paths = opts.paths;
  if (paths.length === 0) throw new NewfsError('you must specify at least one disk device or image file');
  if (paths.length > MAX_VOLUMES) throw new NewfsError(`the maximum number of volumes is ${MAX_VOLUMES}`);
  const version = opts.version ?? VOL_VERSION_DEFAULT;
  if (!(Number.isInteger(version) && version >= VOL_VERSION_MIN && version < VOL_VERSION_WIP)) {
    throw new NewfsError(`I don't understand how to format HAMMER2 version ${version}`);
  }
  if (paths.length > 1 && version < VOL_VERSION_MULTI_VOLUMES) {
    throw new NewfsError(`version ${version} supports only one volume; several volumes need -V ${VOL_VERSION_MULTI_VOLUMES}`);
  }
  const labels = resolveLabels(opts.labels);
  const bootReq = opts.bootSize ? checkAreaSize(opts.bootSize, 'boot area size', BOOT_MAX_BYTES) : undefined;
  const auxReq = opts.auxSize ? checkAreaSize(opts.auxSize, 'aux area size', AUX_MAX_BYTES) : undefined;
  const sizes = opts.sizes ?? [];
  if (sizes.length > 1 && sizes.length !== paths.length) {
    throw new NewfsError(`-s gives ${sizes.length} sizes for ${paths.length} volume${paths.length > 1 ? 's' : ''}`);
  }
  for (const s of sizes) if (!(Number.isSafeInteger(s) && s > 0)) throw new NewfsError(`bad size ${s}`);

  const targets: Target[] = paths.map((path) => ({ path, created: false, size: 0, offset: 0 }));
  const closeAll = (): void => {
    for (const t of targets) t.dev?.close();
  };
  try {
    // Open what exists; note what must be created.
    const missing: Target[] = [];
    for (const [i, t] of targets.entries()) {
      if (targets.slice(0, i).some((o) => o.path === t.path)) throw new NewfsError(`${t.path} specified more than once`);
      let exists = true;
      try {
        fs.statSync(t.path);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new NewfsError(`${t.path}: ${errText(e)}`);
        exists = false;
      }
      if (!exists) {
        if (sizes.length === 0) throw new NewfsError(`${t.path}: no such file (give -s SIZE to create a sparse image file)`);
        if (sizes.length === 1 && paths.length > 1) {
          throw new NewfsError(`${t.path}: no such file (to create several volume files give one size per volume: -s SIZE1:SIZE2...)`);
        }
        t.createSize = sizes.length === 1 ? sizes[0] : sizes[i];
        missing.push(t);
        continue;
      }
      t.dev = openTarget(t.path);
    }
    // Files on different paths can still be the same file.
    const ids = new Map<string, string>();
    for (const t of targets) {
      if (!t.dev) continue;
      const st = fs.fstatSync(t.dev.fd);
      const key = `${st.dev}:${st.ino}`;
      const other = ids.get(key);
      if (other !== undefined) throw new NewfsError(`${t.path} and ${other} are the same file`);
      ids.set(key, t.path);
    }
    // Refuse to overwrite an existing HAMMER2 filesystem unless forced.
    if (!opts.force) {
      for (const t of targets) {
        if (!t.dev) continue;
        const f = existingHammer2(t.dev);
        if (f) {
          throw new NewfsError(
            `${t.path} already holds a HAMMER2 volume (header #${f.zone}${f.fsid ? `, fsid ${f.fsid}` : ''}); use -f to overwrite it`,
          );
        }
      }
    }

    // Volume sizes: the reference's -s semantics, then alignment
    // (8 MiB for the last volume, 1 GiB for the others).
    let resid = sizes.length === 1 ? sizes[0] : 0;
    let total = 0;
    for (const [i, t] of targets.entries()) {
      let size = t.dev ? t.dev.size : t.createSize!;
      if (t.dev && sizes.length > 1 && sizes[i] > size) {
        warn(`${t.path} holds only ${size} bytes, less than its -s size ${sizes[i]}; using ${size}`);
      }
      if (sizes.length === 1) {
        if (resid === 0) throw new NewfsError(`no remaining filesystem size for ${t.path} (-s is smaller than the volumes before it)`);
        size = Math.min(size, resid);
        resid -= size;
      } else if (sizes.length > 1) {
        size = Math.min(size, sizes[i]);
      }
      const last = i === targets.length - 1;
      const align = last ? VOLUME_ALIGN : LEVEL1_SIZE;
      const aligned = Math.floor(size / align) * align;
      if (aligned === 0) {
        throw new NewfsError(
          last
            ? `${t.path} is too small: ${size} bytes (a volume is a multiple of ${sizeToStr(VOLUME_ALIGN).trim()})`
            : `${t.path} is too small: ${size} bytes (every volume but the last must be at least 1 GiB)`,
        );
      }
      t.size = aligned;
      t.offset = total;
      total += aligned;
    }

    if (sizes.length === 1 && resid > 0 && targets.some((t) => t.dev)) {
      warn(`the volumes hold less than the -s size ${sizes[0]}; formatting ${total} bytes`);
    }

    const areas = computeAreas(total, bootReq, auxReq);
    if (areas.auxEnd + PBUFSIZE > LEVEL1_SIZE) {
      throw new NewfsError(
        `boot area (${sizeToStr(areas.bootSize).trim()}) and aux area (${sizeToStr(areas.auxSize).trim()}) are too large: they must end below 1 GiB`,
      );
    }
    if (areas.freeSize <= 0 || areas.auxEnd + PBUFSIZE > targets[0].size) {
      const min = minimumSize(bootReq, auxReq);
      const what = targets.length > 1 ? 'the filesystem' : targets[0].path;
      throw new NewfsError(
        `${what} is too small: ${sizeToStr(total).trim()} after alignment, HAMMER2 needs at least ${sizeToStr(min).trim()} (${min} bytes) with these boot/aux sizes`,
      );
    }

    // Nothing refused: create the missing files (sparse), then write.
    for (const t of missing) {
      let fd: number;
      try {
        fd = fs.openSync(t.path, 'wx', 0o644);
      } catch (e) {
        throw new NewfsError(`cannot create ${t.path}: ${errText(e)}`);
      }
      t.created = true;
      try {
        fs.ftruncateSync(fd, t.createSize!);
      } catch (e) {
        throw new NewfsError(`cannot size ${t.path} to ${t.createSize} bytes: ${errText(e)}`);
      } finally {
        fs.closeSync(fd);
      }
      t.dev = openTarget(t.path);
    }

    const volFsid = uuidRandom();
    const supClid = uuidRandom();
    const supFsid = uuidRandom();
    const now = BigInt(Date.now()) * 1000n;
    const fstype = uuidFromString(HAMMER2_UUID_STRING);
    let inodes: InodeBlock | undefined;
    const volumes: FormattedVolume[] = [];

    for (const [id, t] of targets.entries()) {
      const dev = t.dev!;
      // A file we just created, or one without any allocated block, already reads as zeros.
      const zeroed = t.created || allHoles(dev);
      // The reference probes the last 64 KiB block; it ends up zero.
      if (!zeroed) clearRange(dev, t.size - PBUFSIZE, t.size);
      let sroot: Blockref[];
      if (id === 0) {
        if (!zeroed) {
          clearRange(dev, 0, ZONE_SEG);
          clearRange(dev, areas.bootBeg, areas.auxEnd);
        }
        inodes = buildInodes(labels, areas.auxEnd, now, supClid, supFsid);
        dev.write(inodes.base, inodes.buf);
        sroot = [inodes.sroot, emptyBlockref(), emptyBlockref(), emptyBlockref()];
      } else {
        sroot = Array.from({ length: SET_COUNT }, () => {
          const b = emptyBlockref();
          b.type = BrefType.INVALID;
          return b;
        });
      }
      const multi = version >= VOL_VERSION_MULTI_VOLUMES;
      const voluLoff = new Array<bigint>(MAX_VOLUMES).fill(multi ? 0xffffffffffffffffn : 0n);
      if (multi) for (const [j, o] of targets.entries()) voluLoff[j] = BigInt(o.offset);
      const raw = volumeHeader({
        bootBeg: id === 0 ? BigInt(areas.bootBeg) : 0n,
        bootEnd: id === 0 ? BigInt(areas.auxBeg) : 0n,
        auxBeg: id === 0 ? BigInt(areas.auxBeg) : 0n,
        auxEnd: id === 0 ? BigInt(areas.auxEnd) : 0n,
        voluSize: BigInt(t.size),
        version,
        voluId: multi ? id : 0,
        nvolumes: multi ? targets.length : 0,
        totalSize: multi ? BigInt(total) : 0n,
        voluLoff,
        fsid: volFsid,
        fstype,
        allocatorSize: BigInt(areas.freeSize),
        allocatorFree: id === 0 ? BigInt(areas.freeSize) : 0n,
        allocatorBeg: id === 0 ? BigInt(inodes!.allocatorBeg) : 0n,
        sroot,
      });
      const n = headerCount(t.size);
      for (let z = 0; z < n; z++) dev.write(z * ZONE_BYTES, raw);
      // A device larger than the formatted size (-s) may still carry header
      // copies of an older filesystem past the end; readers pick the best of
      // all copies on the device, so erase those.
      for (let z = n; z < NUM_VOLHDRS && z * ZONE_BYTES + VOLUME_BYTES <= dev.size; z++) {
        const magic = dev.read(z * ZONE_BYTES, 8).readBigUInt64LE(0);
        if (magic === VOLUME_ID_HBO || magic === VOLUME_ID_ABO) dev.write(z * ZONE_BYTES, Buffer.alloc(VOLUME_BYTES));
      }
      dev.sync();
      volumes.push({ path: t.path, id, offset: t.offset, size: t.size, headers: n, created: t.created });
    }

    return {
      version,
      volumes,
      totalSize: total,
      bootSize: areas.bootSize,
      auxSize: areas.auxSize,
      reservedSize: areas.reservedSize,
      freeSize: areas.freeSize,
      allocatorBeg: inodes!.allocatorBeg,
      volFsid: uuidToString(volFsid),
      supClid: uuidToString(supClid),
      supFsid: uuidToString(supFsid),
      pfs: inodes!.pfs,
    };
  } catch (e) {
    // A refusal after we created files: take them back so nothing is left behind.
    closeAll();
    for (const t of targets) {
      t.dev = undefined;
      if (t.created) {
        try {
          fs.unlinkSync(t.path);
        } catch {
          /* best effort */
        }
      }
    }
    throw e;
  } finally {
    closeAll();
  }
}

/** The summary the reference prints after formatting. */
export function formatSummary(r: FormatResult, debug = false): string {
  const lines: string[] = [];
  for (const v of r.volumes) lines.push(`Volume ${v.path.padEnd(15)} size ${sizeToStr(v.size)}`);
  lines.push('---------------------------------------------');
  lines.push(`version:          ${r.version}`);
  lines.push(`total-size:       ${sizeToStr(r.totalSize)} (${r.totalSize} bytes)`);
  lines.push(`boot-area-size:   ${sizeToStr(r.bootSize)} (${r.bootSize} bytes)`);
  lines.push(`aux-area-size:    ${sizeToStr(r.auxSize)} (${r.auxSize} bytes)`);
  lines.push(`topo-reserved:    ${sizeToStr(r.reservedSize)} (${r.reservedSize} bytes)`);
  lines.push(`free-size:        ${sizeToStr(r.freeSize)} (${r.freeSize} bytes)`);
  lines.push(`vol-fsid:         ${r.volFsid}`);
  lines.push(`sup-clid:         ${r.supClid}`);
  lines.push(`sup-fsid:         ${r.supFsid}`);
  for (const p of r.pfs) {
    lines.push(`PFS "${p.label}"`);
    lines.push(`    clid ${p.clid}`);
    lines.push(`    fsid ${p.fsid}`);
  }
  if (debug) {
    lines.push('---------------------------------------------');
    const w = Math.max(...r.volumes.map((v) => v.path.length));
    const hx = (n: number) => '0x' + n.toString(16).padStart(16, '0');
    lines.push(`total    ${''.padEnd(w)} ${hx(0)} ${hx(r.totalSize)}`);
    for (const v of r.volumes) {
      lines.push(`volume${String(v.id).padEnd(2)} ${v.path.padEnd(w)} ${hx(v.offset)} ${hx(v.size)}${v.id === 0 ? ' (root volume)' : ''}`);
    }
  }
  return lines.join('\n') + '\n';
}
