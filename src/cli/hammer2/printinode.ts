// printinode: an inode's meta fields in the layout of the reference's
// print_inode.c, plus the field renderings it shares with the show dump
// (times, uuids, type and method names), so both print them one way.
import {
  CHECK_NAMES,
  COMP_NAMES,
  InodeData,
  pfsSubtypeName,
  pfsTypeName,
  uuidToString,
} from '../../media';

const OBJ_TYPE_NAMES: Record<number, string> = {
  0: 'UNKNOWN',
  1: 'DIR',
  2: 'FILE',
  4: 'FIFO',
  5: 'CDEV',
  6: 'BDEV',
  7: 'SOFTLINK',
  9: 'SOCKET',
  10: 'WHITEOUT',
};

/** The reference's name of an inode (or dirent) object type. */
export const objTypeName = (t: number): string => OBJ_TYPE_NAMES[t] ?? 'ILLEGAL';

/**
 * A comp_algo byte (or a bref's compression nibble) as the reference names
 * it: algorithm from the low nibble, then ":level", or ":default" without one.
 */
export function compModeName(v: number): string {
  const algo = v & 15;
  const level = (v >> 4) & 15;
  return `${COMP_NAMES[algo] ?? `unknown(${algo})`}:${level ? level : 'default'}`;
}

/** A check_algo byte (or a bref's check nibble): the name, ":level" only if one is encoded. */
export function checkModeName(v: number): string {
  const algo = v & 15;
  const level = (v >> 4) & 15;
  const name = CHECK_NAMES[algo] ?? `unknown(${algo})`;
  return level ? `${name}:${level}` : name;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const MAX_DATE_S = 8.64e12; // Date's range
const ERA_S = 146097 * 86400; // 400 Gregorian years: the calendar and zone rules repeat
const two = (n: number) => String(n).padStart(2, '0');

/**
 * Microseconds since the epoch as "DD-Mon-YYYY HH:MM:SS" in local time (TZ),
 * as strftime prints it in the C locale. The calendar is computed here, not
 * by Date, so times past Date's range (corrupt inodes) still print; Date
 * only supplies the zone's offset at that instant (past its range, at the
 * same instant some 400-year cycles earlier, as the zone's rule repeats).
 */
export function time64ToStr(us: bigint): string {
  const secs = Number(us / 1000000n);
  const probe = secs > MAX_DATE_S ? secs - Math.ceil((secs - MAX_DATE_S) / ERA_S) * ERA_S : secs;
  const offMin = -new Date(probe * 1000).getTimezoneOffset();
  const t = secs + offMin * 60;
  const days = Math.floor(t / 86400);
  const sod = t - days * 86400;
  // Civil date from days since 1970-01-01 (eras of 400 years, March-based years).
  const z = days + 719468;
  const era = Math.floor(z / 146097);
  const doe = z - era * 146097;
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36524) - Math.floor(doe / 146096)) / 365);
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const day = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const month = mp < 10 ? mp + 3 : mp - 9;
  const year = yoe + era * 400 + (month <= 2 ? 1 : 0);
  const hms = `${two(Math.floor(sod / 3600))}:${two(Math.floor(sod / 60) % 60)}:${two(sod % 60)}`;
  return `${two(day)}-${MONTHS[month - 1]}-${year} ${hms}`;
}

/** The meta bytes as hex, 16 to a line (what -v adds before the fields). */
function hexdump(b: Buffer): string {
  let s = '';
  for (let i = 0; i < b.length; i++) {
    s += b[i].toString(16).toUpperCase().padStart(2, '0');
    if (i > 0 && (i + 1) % 16 === 0) s += '\n';
    else if (i !== b.length - 1) s += ' ';
  }
  return s + '\n';
}

const hx = (v: bigint | number) => '0x' + v.toString(16);

/**
 * An inode's meta fields, one "name = value" line each, in the reference's
 * order and number formats; with `verbose` > 0 the 256 meta bytes in hex
 * first (as `hammer2 -v printinode`).
 */
export function formatInode(inode: InodeData, verbose = 0): string {
  const m = inode.meta;
  const lines = [
    `version = ${m.version}`,
    `pfs_subtype = ${m.pfsSubtype} (${pfsSubtypeName(m.pfsSubtype)})`,
    `uflags = ${hx(m.uflags)}`,
    `rmajor = ${m.rmajor}`,
    `rminor = ${m.rminor}`,
    `ctime = ${time64ToStr(m.ctime)}`,
    `mtime = ${time64ToStr(m.mtime)}`,
    `atime = ${time64ToStr(m.atime)}`,
    `btime = ${time64ToStr(m.btime)}`,
    `uid = ${uuidToString(m.uid)}`,
    `gid = ${uuidToString(m.gid)}`,
    `type = ${m.type} (${objTypeName(m.type)})`,
    `op_flags = ${hx(m.opFlags)}`,
    `cap_flags = ${hx(m.capFlags)}`,
    `mode = 0${m.mode.toString(8)}`,
    `inum = ${hx(m.inum)}`,
    `size = ${m.size}`,
    `nlinks = ${m.nlinks}`,
    `iparent = ${hx(m.iparent)}`,
    `name_key = ${hx(m.nameKey)}`,
    `name_len = ${m.nameLen}`,
    `ncopies = ${m.ncopies}`,
    `comp_algo = ${m.compAlgo}`,
    `check_algo = ${m.checkAlgo}`,
    `pfs_nmasters = ${m.pfsNmasters}`,
    `pfs_type = ${m.pfsType} (${pfsTypeName(m.pfsType)})`,
    `pfs_inum = ${hx(m.pfsInum)}`,
    `pfs_clid = ${uuidToString(m.pfsClid)}`,
    `pfs_fsid = ${uuidToString(m.pfsFsid)}`,
    `data_quota = ${hx(m.dataQuota)}`,
    `inode_quota = ${hx(m.inodeQuota)}`,
    `pfs_lsnap_tid = ${hx(m.pfsLsnapTid)}`,
    `decrypt_check = ${hx(m.decryptCheck)}`,
  ];
  return (verbose > 0 ? hexdump(inode.raw.subarray(0, 256)) : '') + lines.join('\n') + '\n';
}
