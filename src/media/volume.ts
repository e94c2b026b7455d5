// hammer2_volume_data_t: the 64 KiB volume header, one copy per 2 GiB zone.
import { decodeBlockrefArray, encodeBlockref, Blockref } from './blockref';
import { MAX_VOLUMES, SET_COUNT, VOLUME_BYTES, VOLUME_ID_ABO, VOLUME_ID_HBO } from './constants';
import { icrc32 } from './crc32c';

export interface VolumeHeader {
  magic: bigint;
  bootBeg: bigint;
  bootEnd: bigint;
  auxBeg: bigint;
  auxEnd: bigint;
  voluSize: bigint;
  version: number;
  flags: number;
  copyid: number;
  freemapVersion: number;
  peerType: number;
  voluId: number;
  nvolumes: number;
  fsid: Buffer;
  fstype: Buffer;
  allocatorSize: bigint;
  allocatorFree: bigint;
  allocatorBeg: bigint;
  mirrorTid: bigint;
  freemapTid: bigint;
  bulkfreeTid: bigint;
  totalSize: bigint;
  sroot: Blockref[];
  freemap: Blockref[];
  voluLoff: bigint[];
  /** The raw 64 KiB the header was decoded from (reserved areas are kept on rewrite). */
  raw: Buffer;
}

const OFF_ICRC_SECTS = 0x1e0;
const OFF_SROOT = 0x200;
const OFF_FREEMAP = 0x800;
const OFF_VOLU_LOFF = 0xe00;
const OFF_ICRC_VOLHDR = 0xfffc;

export interface VolumeHeaderCheck {
  ok: boolean;
  /** Why the header was rejected, when !ok. */
  reason?: string;
  /** Rejected only by the whole-header CRC, both sectors verifying. */
  torn?: boolean;
}

/** Validate magic and the three CRCs the reference checks before trusting a header. */
export function checkVolumeHeader(raw: Buffer): VolumeHeaderCheck {
  if (raw.length < VOLUME_BYTES) return { ok: false, reason: 'short read' };
  const magic = raw.readBigUInt64LE(0);
  if (magic === VOLUME_ID_ABO) return { ok: false, reason: 'reverse-endian volume (not supported)' };
  if (magic !== VOLUME_ID_HBO) return { ok: false, reason: 'bad magic' };
  const c0 = raw.readUInt32LE(OFF_ICRC_SECTS + 7 * 4);
  if (c0 !== icrc32(raw, 0, 512 - 4)) return { ok: false, reason: 'sector 0 CRC mismatch' };
  const c1 = raw.readUInt32LE(OFF_ICRC_SECTS + 6 * 4);
  if (c1 !== icrc32(raw, 512, 1024)) return { ok: false, reason: 'sector 1 CRC mismatch' };
  const cv = raw.readUInt32LE(OFF_ICRC_VOLHDR);
  // Both sectors verify but the whole does not: a header write cut short (the
  // first page new, the rest old), which fsck can mend.
  if (cv !== icrc32(raw, 0, VOLUME_BYTES - 4)) return { ok: false, reason: 'volume header CRC mismatch (its sectors verify: a header write cut short?)', torn: true };
  return { ok: true };
}

export function decodeVolumeHeader(raw: Buffer): VolumeHeader {
  const voluLoff: bigint[] = [];
  for (let i = 0; i < MAX_VOLUMES; i++) voluLoff.push(raw.readBigUInt64LE(OFF_VOLU_LOFF + i * 8));
  return {
    magic: raw.readBigUInt64LE(0),
    bootBeg: raw.readBigUInt64LE(0x08),
    bootEnd: raw.readBigUInt64LE(0x10),
    auxBeg: raw.readBigUInt64LE(0x18),
    auxEnd: raw.readBigUInt64LE(0x20),
    voluSize: raw.readBigUInt64LE(0x28),
    version: raw.readUInt32LE(0x30),
    flags: raw.readUInt32LE(0x34),
    copyid: raw[0x38],
    freemapVersion: raw[0x39],
    peerType: raw[0x3a],
    voluId: raw[0x3b],
    nvolumes: raw[0x3c],
    fsid: Buffer.from(raw.subarray(0x40, 0x50)),
    fstype: Buffer.from(raw.subarray(0x50, 0x60)),
    allocatorSize: raw.readBigUInt64LE(0x60),
    allocatorFree: raw.readBigUInt64LE(0x68),
    allocatorBeg: raw.readBigUInt64LE(0x70),
    mirrorTid: raw.readBigUInt64LE(0x78),
    freemapTid: raw.readBigUInt64LE(0x90),
    bulkfreeTid: raw.readBigUInt64LE(0x98),
    totalSize: raw.readBigUInt64LE(0xc0),
    sroot: decodeBlockrefArray(raw, OFF_SROOT, SET_COUNT),
    freemap: decodeBlockrefArray(raw, OFF_FREEMAP, SET_COUNT),
    voluLoff,
    raw: Buffer.from(raw.subarray(0, VOLUME_BYTES)),
  };
}

/**
 * The header fields decodeVolumeHeader leaves in `raw` (reserved and unused
 * words, the CRCs as stored), with the CRCs computed over the bytes they
 * cover: what a dump of the header shows beside the decoded fields.
 */
export interface VolumeHeaderExtras {
  reserved0080: bigint;
  reserved0088: bigint;
  reserved00A0: bigint[];
  copyexists: number[];
  /** icrc_sects[0..7] as stored: [7] covers sector 0, [6] sector 1, the rest are unused. */
  icrcSects: number[];
  icrcVolheader: number;
  crcSect0: number;
  crcSect1: number;
  crcVolheader: number;
}

export function volumeHeaderExtras(raw: Buffer): VolumeHeaderExtras {
  const u32s = (off: number, n: number) => Array.from({ length: n }, (_, i) => raw.readUInt32LE(off + i * 4));
  return {
    reserved0080: raw.readBigUInt64LE(0x80),
    reserved0088: raw.readBigUInt64LE(0x88),
    reserved00A0: Array.from({ length: 4 }, (_, i) => raw.readBigUInt64LE(0xa0 + i * 8)),
    copyexists: u32s(0xc8, 8),
    icrcSects: u32s(OFF_ICRC_SECTS, 8),
    icrcVolheader: raw.readUInt32LE(OFF_ICRC_VOLHDR),
    crcSect0: icrc32(raw, 0, 512 - 4),
    crcSect1: icrc32(raw, 512, 1024),
    crcVolheader: icrc32(raw, 0, VOLUME_BYTES - 4),
  };
}

/**
 * Serialise a header (on top of its raw image, so reserved bytes survive)
 * and recompute icrc_sects[7], [6] and the whole-header CRC.
 */
export function encodeVolumeHeader(v: VolumeHeader): Buffer {
  const raw = Buffer.allocUnsafe(VOLUME_BYTES);
  if (v.raw.length === VOLUME_BYTES) v.raw.copy(raw);
  else raw.fill(0);
  raw.writeBigUInt64LE(v.magic, 0);
  raw.writeBigUInt64LE(v.bootBeg, 0x08);
  raw.writeBigUInt64LE(v.bootEnd, 0x10);
  raw.writeBigUInt64LE(v.auxBeg, 0x18);
  raw.writeBigUInt64LE(v.auxEnd, 0x20);
  raw.writeBigUInt64LE(v.voluSize, 0x28);
  raw.writeUInt32LE(v.version, 0x30);
  raw.writeUInt32LE(v.flags, 0x34);
  raw[0x38] = v.copyid;
  raw[0x39] = v.freemapVersion;
  raw[0x3a] = v.peerType;
  raw[0x3b] = v.voluId;
  raw[0x3c] = v.nvolumes;
  v.fsid.copy(raw, 0x40, 0, 16);
  v.fstype.copy(raw, 0x50, 0, 16);
  raw.writeBigUInt64LE(v.allocatorSize, 0x60);
  raw.writeBigUInt64LE(v.allocatorFree, 0x68);
  raw.writeBigUInt64LE(v.allocatorBeg, 0x70);
  raw.writeBigUInt64LE(v.mirrorTid, 0x78);
  raw.writeBigUInt64LE(v.freemapTid, 0x90);
  raw.writeBigUInt64LE(v.bulkfreeTid, 0x98);
  raw.writeBigUInt64LE(v.totalSize, 0xc0);
  for (let i = 0; i < SET_COUNT; i++) {
    encodeBlockref(v.sroot[i], raw, OFF_SROOT + i * 128);
    encodeBlockref(v.freemap[i], raw, OFF_FREEMAP + i * 128);
  }
  for (let i = 0; i < MAX_VOLUMES; i++) raw.writeBigUInt64LE(v.voluLoff[i], OFF_VOLU_LOFF + i * 8);
  raw.writeUInt32LE(icrc32(raw, 512, 1024), OFF_ICRC_SECTS + 6 * 4);
  raw.writeUInt32LE(icrc32(raw, 0, 512 - 4), OFF_ICRC_SECTS + 7 * 4);
  raw.writeUInt32LE(icrc32(raw, 0, VOLUME_BYTES - 4), OFF_ICRC_VOLHDR);
  v.raw = raw;
  return raw;
}
