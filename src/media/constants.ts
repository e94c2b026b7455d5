// On-media constants of HAMMER2 (values from DragonFly's hammer2_disk.h).
// Everything here is a fact of the format; nothing is a tunable.

export const ALLOC_MIN = 1024;
export const RADIX_MIN = 10;
export const ALLOC_MAX = 65536;
export const RADIX_MAX = 16;

export const PBUFRADIX = 16;
export const PBUFSIZE = 65536;
export const LBUFSIZE = 16384;

export const IND_BYTES_MIN = 4096;
export const IND_BYTES_NOM = LBUFSIZE;
export const IND_BYTES_MAX = PBUFSIZE;

export const SET_COUNT = 4;
export const EMBEDDED_BYTES = 512;

export const VOLUME_ALIGN = 8 * 1024 * 1024;
export const ZONE_BYTES = 2 * 1024 * 1024 * 1024; // one volume header per 2 GiB zone
export const ZONE_SEG = 4 * 1024 * 1024; // reserved segment at the start of each zone
export const ZONE_FREEMAP_INC = 5;
export const ZONE_FREEMAP_00 = 1;
export const ZONE_FREEMAP_END = 41;
export const NFREEMAPS = 8;

export const FREEMAP_LEVEL0_RADIX = 22; // 4 MiB
export const FREEMAP_LEVEL1_RADIX = 30; // 1 GiB
export const FREEMAP_LEVEL2_RADIX = 38;
export const FREEMAP_LEVEL3_RADIX = 46;
export const FREEMAP_LEVEL4_RADIX = 54;
export const FREEMAP_LEVEL5_RADIX = 62;
export const FREEMAP_LEVELN_PSIZE = 32768;
export const FREEMAP_BLOCK_RADIX = 14; // 16 KiB per 2-bit bitmap entry
export const FREEMAP_BLOCK_SIZE = 1 << FREEMAP_BLOCK_RADIX;
export const BMAP_ELEMENTS = 8;
export const BMAP_DATA_BYTES = 128;
export const FREEMAP_COUNT = FREEMAP_LEVELN_PSIZE / BMAP_DATA_BYTES; // 256 bmaps per leaf

export const BOOT_MIN_BYTES = VOLUME_ALIGN;
export const BOOT_NOM_BYTES = 64 * 1024 * 1024;
export const BOOT_MAX_BYTES = 256 * 1024 * 1024;
export const AUX_MIN_BYTES = VOLUME_ALIGN;
export const AUX_NOM_BYTES = 256 * 1024 * 1024;
export const AUX_MAX_BYTES = 1024 * 1024 * 1024;

export const OFF_MASK_RADIX = 0x3fn;

export const DIRHASH_VISIBLE = 0x8000000000000000n;
export const DIRHASH_USERMSK = 0x7fffffffffffffffn;
export const DIRHASH_LOMASK = 0x7fffn;

export const SROOT_KEY = 0n;
export const KEY_MAX = 0xffffffffffffffffn;

export const BLOCKREF_BYTES = 128;

export const enum BrefType {
  EMPTY = 0,
  INODE = 1,
  INDIRECT = 2,
  DATA = 3,
  DIRENT = 4,
  FREEMAP_NODE = 5,
  FREEMAP_LEAF = 6,
  INVALID = 7,
  FREEMAP = 254,
  VOLUME = 255,
}

export const BREF_FLAG_PFSROOT = 0x01;
export const BREF_FLAG_EMERG_MIP = 0x04;

export const enum CheckMethod {
  NONE = 0,
  DISABLED = 1,
  ISCSI32 = 2,
  XXHASH64 = 3,
  SHA192 = 4,
  FREEMAP = 5,
}

export const enum CompMethod {
  NONE = 0,
  AUTOZERO = 1,
  LZ4 = 2,
  ZLIB = 3,
}

export const decCheck = (methods: number): number => (methods >> 4) & 15;
export const decComp = (methods: number): number => methods & 15;
export const encMethods = (check: number, comp: number): number => ((check & 15) << 4) | (comp & 15);

export const INODE_BYTES = 1024;
export const INODE_MAXNAME = 256;
export const INODE_VERSION_ONE = 1;
export const NAME_MAX = 255;

export const OPFLAG_DIRECTDATA = 0x01;
export const OPFLAG_PFSROOT = 0x02;

export const enum ObjType {
  UNKNOWN = 0,
  DIRECTORY = 1,
  REGFILE = 2,
  FIFO = 4,
  CDEV = 5,
  BDEV = 6,
  SOFTLINK = 7,
  UNUSED08 = 8,
  SOCKET = 9,
  WHITEOUT = 10,
}

export const enum PfsType {
  NONE = 0x00,
  CACHE = 0x01,
  SLAVE = 0x03,
  SOFT_SLAVE = 0x04,
  SOFT_MASTER = 0x05,
  MASTER = 0x06,
  SUPROOT = 0x08,
  DUMMY = 0x09,
}

const PFS_TYPE_NAMES: Record<number, string> = { 0: 'NONE', 1: 'CACHE', 3: 'SLAVE', 4: 'SOFT_SLAVE', 5: 'SOFT_MASTER', 6: 'MASTER', 8: 'SUPROOT', 9: 'DUMMY' };
const PFS_SUBTYPE_NAMES: Record<number, string> = { 0: 'NONE', 1: 'SNAPSHOT', 2: 'AUTOSNAP' };
/** The reference's names of PFS types and subtypes ("ILLEGAL" for others). */
export const pfsTypeName = (t: number): string => PFS_TYPE_NAMES[t] ?? 'ILLEGAL';
export const pfsSubtypeName = (t: number): string => PFS_SUBTYPE_NAMES[t] ?? 'ILLEGAL';
/** A type name as pfs-create -t takes it (any case); undefined if unknown. */
export function parsePfsType(name: string): number | undefined {
  const up = name.toUpperCase();
  for (const [k, v] of Object.entries(PFS_TYPE_NAMES)) if (v === up && v !== 'NONE' && v !== 'SUPROOT') return Number(k);
  return undefined;
}
/** What pfs-list shows: a MASTER's subtype (SNAPSHOT) if it has one, else the type. */
export const pfsListType = (type: number, subtype: number): string =>
  type === PfsType.MASTER && subtype !== PFSSUBTYPE_NONE ? pfsSubtypeName(subtype) : pfsTypeName(type);

export const PFSSUBTYPE_NONE = 0;
export const PFSSUBTYPE_SNAPSHOT = 1;
export const PFSSUBTYPE_AUTOSNAP = 2;

export const VOLUME_ID_HBO = 0x48414d3205172011n;
export const VOLUME_ID_ABO = 0x11201705324d4148n;
export const MAX_VOLUMES = 64;
export const VOLUME_BYTES = 65536;
export const NUM_VOLHDRS = 4;
export const VOL_VERSION_MIN = 1;
export const VOL_VERSION_MULTI_VOLUMES = 2;
export const VOL_VERSION_DEFAULT = 2;
export const VOL_VERSION_WIP = 3;

export const HAMMER2_UUID_STRING = '5cbb9ad1-862d-11dc-a94d-01301bb8a9f5';

export const XXH_HAMMER2_SEED = 0x4d617474446c6c6en;

export const PEER_HAMMER2 = 3;

export const INODE_START = 1024;
