// hammer2 recover | recover-relaxed | recover-file DEVPATH [/]PATH DESTDIR
//
// Copies files out of an unmounted, possibly damaged image without trusting
// its tree, the way the reference's recover directive does it:
//
// 1. Media pass: every 64 KiB block of every volume is read as an array of
//    blockrefs. Each one of type INODE whose target verifies (its check code,
//    and an inode number equal to the bref's key) is a copy of that inode:
//    current, older, deleted and snapshot copies alike, from every PFS. PFS
//    roots hang off the super-root by name hash, so their blockrefs do not
//    qualify; 1 KiB slots that look like a PFS root are taken on sight.
// 2. Restoration pass: every directory copy (only PFS roots when PATH starts
//    with "/") is searched for PATH, a component per directory level; what
//    matches is written under DESTDIR. Directories are merged under their
//    names; each distinct copy of anything else becomes NAME.00001,
//    NAME.00002, ... Data is verified block by block: a file with a block
//    missing or failing its check keeps what could be read and is renamed
//    NAME.0000N.corrupted.
//
// recover and recover-file trust only blocks that carry a check code;
// recover-relaxed also takes blocks whose check is none or disabled.
// recover-file does not descend into directories named by the last component.
// Restored objects get the inode's mode, mtime and atime, and as root its
// owner (file flags have no Linux counterpart); further names of one inode
// copy are hard links to the first. stdout carries the reference's summary
// lines as its -q prints them; a terminal gets a progress bar on stderr.
//
// Beyond the reference: PFS roots found on sight are usable (the reference
// records them without their size and never reads them, so absolute paths and
// names directly under a PFS root find nothing there), symlinks and FIFOs are
// restored, names too long for their suffix are shortened, every problem is
// reported on stderr, and a PATH matching nothing is an error.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  BLOCKREF_BYTES,
  Blockref,
  brefBytes,
  brefCheck,
  brefComp,
  brefOffset,
  brefRadix,
  BrefType,
  BREF_TYPE_NAMES,
  CheckMethod,
  CompMethod,
  decodeBlockrefView,
  decodeInode,
  direntHead,
  EMBEDDED_BYTES,
  icrc32,
  initCodecs,
  INODE_BYTES,
  inodeBlockset,
  InodeData,
  InodeMeta,
  isAllZero,
  NAME_MAX,
  ObjType,
  OPFLAG_DIRECTDATA,
  OPFLAG_PFSROOT,
  PBUFSIZE,
  peekInode,
  rawBrefType,
  RADIX_MAX,
  uuidToXid,
} from '../../media';
import { BlockReader, hex } from '../../engine';
import { MountError, VolumeSet } from '../../store';
import { Progress } from '../../../fsck/progress';
import { Directive, DirectiveError, Hammer2Ctx, UsageError } from './context';

/** Size radix of an inode block (1 KiB). */
const INODE_RADIX = 10n;
/** Below this depth a copy is followed again even if already written (the reference's REPINODEDEPTH). */
const REPEAT_DEPTH = 256;
/** Nesting of indirect blocks under one inode before a tree counts as looping. */
const TREE_DEPTH_MAX = 64;
/** Media pass read size: 64 KiB blocks are scanned, read 16 at a time. */
const SCAN_CHUNK = 16 * PBUFSIZE;
/** Longest symlink target restored. */
const SYMLINK_MAX = 65536;
const SLASH = Buffer.from('/');

/** One copy of an inode found on the media. */
interface Copy {
  inum: bigint;
  /** Where it lies, as a blockref's data_off (offset | size radix). */
  dataOff: bigint;
  /** icrc32 of the 1 KiB as found: a copy that reads back different is not used. */
  crc: number;
  type: number;
  /** Order found, and the reference's hash bucket: together, the order copies are visited in. */
  seq: number;
  bucket: number;
  /** Written (or its directory created) once already. */
  encountered: boolean;
  /** On the current descent: an entry naming it again is a loop. */
  descending: boolean;
  /** First name it was restored under; later names become hard links to it. */
  restoredAs: Buffer | null;
  restoredIncomplete: boolean;
}

/** A destination path: its version counter and what was already written there. */
interface Topo {
  iterator: number;
  copies: Set<Copy>;
  tables: Set<bigint>;
}

/** The reference's inode hash bucket (2^22 of them); its restoration pass visits buckets in order. */
const bucketOf = (inum: bigint): number => Number(BigInt.asUintN(22, inum ^ (inum >> 16n)));

const unchecked = (b: Blockref): boolean => {
  const m = brefCheck(b);
  return m === CheckMethod.NONE || m === CheckMethod.DISABLED;
};

const typeName = (t: number): string => BREF_TYPE_NAMES[t] ?? `type ${t}`;

const OBJ_NAMES: Record<number, string> = {
  [ObjType.CDEV]: 'character device',
  [ObjType.BDEV]: 'block device',
  [ObjType.SOCKET]: 'socket',
  [ObjType.WHITEOUT]: 'whiteout',
};

/** A name a directory entry may carry: no slash, no NUL, not "." or "..". */
function validName(n: Buffer): boolean {
  if (n.length === 0 || n.includes(0x2f) || n.includes(0)) return false;
  return !(n.length <= 2 && n.every((c) => c === 0x2e));
}

const seconds = (us: bigint): number => Number(us) / 1e6;

const errText = (e: unknown): string => {
  const err = e as NodeJS.ErrnoException;
  return err.code && err.syscall ? `${err.syscall}: ${err.code}` : err.message;
};

interface Options {
  strict: boolean;
  fileOnly: boolean;
}

class Recovery {
  private readonly reader: BlockReader;
  private readonly total: bigint;
  private readonly copies: Copy[] = [];
  private readonly byOffset = new Map<bigint, Copy>();
  private readonly byInum = new Map<bigint, Copy[]>();
  /** Inode blockrefs known bad (the reference's negative cache), by identity. */
  private readonly negative = new Set<string>();
  private readonly topos = new Map<string, Topo>();
  private readonly reported = new Set<string>();
  private readonly asRoot = process.getuid?.() === 0;
  stats = { negatives: 0, negHits: 0, topoTables: 0, topoTableDups: 0, topoCopies: 0, topoCopyDups: 0 };
  /** Plausible inodes skipped because strict mode does not trust blocks without a check code. */
  untrusted = 0;
  /** Objects the path matched. */
  found = 0;
  problems = 0;

  constructor(
    private readonly vols: VolumeSet,
    private readonly dest: string,
    private readonly opts: Options,
    private readonly io: Hammer2Ctx['io'],
    private readonly progress: Progress | null,
  ) {
    this.reader = new BlockReader(vols, { cacheBytes: 16 << 20 });
    this.total = BigInt(vols.totalSize);
  }

  get inodeCount(): number {
    return this.copies.length;
  }

  // ------------------------------------------------------------ media pass

  scanMedia(): void {
    const buf = Buffer.allocUnsafe(SCAN_CHUNK);
    this.progress?.start('media pass', this.vols.totalSize);
    for (const v of this.vols.volumes) {
      for (let pos = 0; pos < v.size; pos += SCAN_CHUNK) {
        const blocks = Math.ceil(Math.min(SCAN_CHUNK, v.size - pos) / PBUFSIZE);
        let whole = true;
        try {
          v.dev.read(pos, blocks * PBUFSIZE, buf);
        } catch {
          whole = false;
        }
        for (let i = 0; i < blocks; i++) {
          const at = i * PBUFSIZE;
          if (!whole) {
            try {
              v.dev.read(pos + at, PBUFSIZE, buf, at);
            } catch {
              continue; // an unreadable block is skipped, the scan goes on
            }
          }
          this.scanBlock(buf, at, v.offset + pos + at);
        }
        this.progress?.add(blocks * PBUFSIZE);
      }
    }
    this.progress?.clear();
  }

  private scanBlock(buf: Buffer, at: number, loff: number): void {
    const end = at + PBUFSIZE;
    if (isAllZero(buf.subarray(at, end))) return;
    for (let o = at; o < end; o += BLOCKREF_BYTES) {
      if (rawBrefType(buf, o) === BrefType.INODE) this.enterInode(decodeBlockrefView(buf, o));
    }
    for (let o = at; o < end; o += INODE_BYTES) {
      const m = peekInode(buf, o);
      if (m.inum === 1n && m.iparent === 0n && m.type === ObjType.DIRECTORY && m.opFlags & OPFLAG_PFSROOT) {
        const dataOff = BigInt(loff + o - at) | INODE_RADIX;
        if (this.byOffset.get(dataOff)?.inum !== 1n) this.record(1n, dataOff, buf.subarray(o, o + INODE_BYTES));
      }
    }
  }

  /** A blockref that may point at an inode: keep the copy if it verifies. */
  private enterInode(b: Blockref): void {
    if (this.byOffset.get(b.dataOff)?.inum === b.key) return;
    const id = `${b.dataOff}.${b.methods}.${b.key}.${b.check.toString('latin1')}`;
    if (this.negative.has(id)) {
      this.stats.negHits++;
      return;
    }
    // Only a 1 KiB, 1 KiB-aligned block holding one inode number, on the media.
    const off = brefOffset(b);
    if ((b.dataOff & 0x3fn) !== INODE_RADIX || (off & 1023n) !== 0n || b.keybits !== 0 || b.key === 0n) return;
    if (off >= this.total) return;
    let raw: Buffer | null = null;
    try {
      raw = this.reader.readPhysical(b);
    } catch {
      // unreadable, or fails its check
    }
    const plausible = raw !== null && peekInode(raw).inum === b.key;
    if (plausible && this.opts.strict && unchecked(b)) this.untrusted++;
    else if (plausible) return this.record(b.key, b.dataOff, raw!);
    this.negative.add(id);
    this.stats.negatives++;
  }

  private record(inum: bigint, dataOff: bigint, raw: Buffer): void {
    const c: Copy = {
      inum,
      dataOff,
      crc: icrc32(raw, 0, INODE_BYTES),
      type: peekInode(raw).type,
      seq: this.copies.length,
      bucket: bucketOf(inum),
      encountered: false,
      descending: false,
      restoredAs: null,
      restoredIncomplete: false,
    };
    this.copies.push(c);
    this.byOffset.set(dataOff, c);
    const same = this.byInum.get(inum);
    if (same) same.push(c);
    else this.byInum.set(inum, [c]);
  }

  // ---------------------------------------------------- restoration pass

  restore(target: Buffer, absolute: boolean): void {
    const starts = this.copies
      .filter((c) => c.type === ObjType.DIRECTORY && (!absolute || c.inum === 1n))
      .sort((a, b) => a.bucket - b.bucket || b.seq - a.seq);
    this.progress?.start('restoration pass', starts.length, (n) => `${n} dirs`);
    const dest = Buffer.from(this.dest);
    for (const c of starts) {
      this.dumpTree(c, dest, target, 1);
      this.progress?.add(1);
    }
    this.progress?.clear();
  }

  /** The inode of a copy, read again; null if it no longer reads as it did in the media pass. */
  private loadInode(c: Copy): InodeData | null {
    let raw: Buffer;
    try {
      raw = this.vols.read(Number(c.dataOff & ~0x3fn), INODE_BYTES);
    } catch {
      return null;
    }
    return icrc32(raw, 0, INODE_BYTES) === c.crc ? decodeInode(raw) : null;
  }

  private topology(dest: Buffer): Topo {
    const key = dest.toString('latin1');
    let t = this.topos.get(key);
    if (!t) this.topos.set(key, (t = { iterator: 1, copies: new Set(), tables: new Set() }));
    return t;
  }

  /** Restore copy `c` at `dest`, or follow `remain` (the rest of PATH) through it. */
  private dumpTree(c: Copy, dest: Buffer, remain: Buffer, depth: number): void {
    const ip = this.loadInode(c);
    if (!ip) return;
    if (depth > REPEAT_DEPTH && c.encountered) return;
    let skip = 0;
    while (skip < remain.length && remain[skip] === 0x2f) skip++;
    remain = remain.subarray(skip);
    const topo = this.topology(dest);
    if (topo.copies.has(c)) {
      this.stats.topoCopyDups++;
      return;
    }
    topo.copies.add(c);
    this.stats.topoCopies++;
    const last = remain.length === 0;

    if (c.type === ObjType.DIRECTORY) {
      if (this.opts.fileOnly && last) return;
      if (last) this.found++;
      if (depth !== 1 && !this.makeDir(c, dest)) return;
      this.dumpDir(dest, remain, inodeBlockset(ip), depth, last, 0);
      if (depth !== 1) this.setAttrs(dest, ip.meta);
      return;
    }
    if (!last) return;
    this.found++;
    if (c.type !== ObjType.REGFILE && c.type !== ObjType.SOFTLINK && c.type !== ObjType.FIFO) {
      this.problem(dest, `${OBJ_NAMES[c.type] ?? `object of type ${c.type}`} (inode ${c.inum}) not restored`);
      return;
    }
    const version = `.${String(topo.iterator++).padStart(5, '0')}`;
    const name = this.versioned(dest, version);
    if (c.type === ObjType.REGFILE) c.encountered = true;
    if (c.restoredAs) {
      // Another name of a copy already restored: a hard link to it.
      const as = c.restoredIncomplete ? this.versioned(dest, `${version}.corrupted`) : name;
      try {
        fs.linkSync(c.restoredAs, as);
        if (c.restoredIncomplete) this.problem(as, `incomplete, a hard link to ${c.restoredAs.toString()}`);
        return;
      } catch {
        // write another copy instead
      }
    }
    if (c.type === ObjType.REGFILE) this.restoreFile(c, ip, name, () => this.versioned(dest, `${version}.corrupted`));
    else if (c.type === ObjType.SOFTLINK) this.restoreSymlink(c, ip, name);
    else this.restoreFifo(c, ip, name);
  }

  /**
   * `dest` with `suffix` added to its last component, which is shortened (at
   * a UTF-8 character boundary) if the two would exceed NAME_MAX.
   */
  private versioned(dest: Buffer, suffix: string): Buffer {
    const cut = dest.lastIndexOf(0x2f) + 1;
    let n = dest.length - cut;
    const room = NAME_MAX - suffix.length;
    if (n > room) {
      n = room;
      while (n > 0 && (dest[cut + n] & 0xc0) === 0x80) n--;
    }
    const name = Buffer.concat([dest.subarray(0, cut + n), Buffer.from(suffix)]);
    if (cut + n < dest.length) this.report(name, `name shortened to fit its suffix (the entry is ${dest.toString()})`, false);
    return name;
  }

  /** Create (or reuse) a directory on the way; false if it cannot hold anything. */
  private makeDir(c: Copy, dest: Buffer): boolean {
    try {
      fs.mkdirSync(dest, 0o755);
      c.encountered = true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
        this.problem(dest, errText(e));
        return false;
      }
    }
    // lstat: never write through a symlink that happens to carry the name.
    let st: fs.Stats;
    try {
      st = fs.lstatSync(dest);
    } catch (e) {
      this.problem(dest, errText(e));
      return false;
    }
    if (!st.isDirectory()) {
      this.problem(dest, 'exists and is not a directory');
      return false;
    }
    if ((st.mode & 0o700) !== 0o700) this.attempt(dest, () => fs.chmodSync(dest, 0o755));
    return true;
  }

  /**
   * Scan a directory's blockrefs for the next component of `remain` (every
   * entry once it is empty). `inside`: within what PATH named, where an
   * unreadable block loses entries and is reported.
   */
  private dumpDir(dest: Buffer, remain: Buffer, brefs: Blockref[], depth: number, inside: boolean, level: number): void {
    const slash = remain.indexOf(0x2f);
    const flen = slash < 0 ? remain.length : slash;
    const want = flen > 0 ? remain.subarray(0, flen) : null;
    for (const b of brefs) {
      if (b.type === BrefType.DIRENT) {
        this.matchEntry(b, dest, remain.subarray(flen), want, depth, inside);
      } else if (b.type === BrefType.INDIRECT) {
        const bad = this.mediaProblem(b);
        if (bad) {
          if (inside) this.problem(dest, `entries lost: indirect blockref ${hex(b.dataOff)} ${bad}`);
          continue;
        }
        // Copies of a directory share most of their indirect blocks: each is read once per destination.
        const topo = this.topology(dest);
        if (topo.tables.has(b.dataOff)) {
          this.stats.topoTableDups++;
          continue;
        }
        topo.tables.add(b.dataOff);
        this.stats.topoTables++;
        const table = level < TREE_DEPTH_MAX ? this.readTable(b) : 'nested too deep';
        if (typeof table === 'string') {
          if (inside) this.problem(dest, `entries lost: ${table}`);
          continue;
        }
        this.dumpDir(dest, remain, table, depth, inside, level + 1);
      }
    }
  }

  /** A directory entry: if its name matches, follow every copy of the inode it names. */
  private matchEntry(b: Blockref, dest: Buffer, rest: Buffer, want: Buffer | null, depth: number, inside: boolean): void {
    const h = direntHead(b);
    if (want && h.namlen !== want.length) return;
    const name = this.entryName(b, h.namlen, want);
    if (name === null) return;
    if (typeof name === 'string') {
      if (inside) this.problem(dest, `entry lost: ${name}`);
      return;
    }
    const child = Buffer.concat([dest, SLASH, name]);
    const same = this.byInum.get(h.inum) ?? [];
    let any = false;
    // Newest found first, as the reference's hash chains hold them.
    for (let i = same.length - 1; i >= 0; i--) {
      const c = same[i];
      if (c.type !== h.type) continue;
      any = true;
      if (c.descending) continue;
      c.descending = true;
      this.dumpTree(c, child, rest, depth + 1);
      c.descending = false;
    }
    if (!any) this.problem(child, `no valid copy of inode ${h.inum} found`);
  }

  /**
   * The name of an entry (embedded, or in a block of its own beyond 64
   * bytes): null if it is not `want` or not a name at all, a string saying
   * why if it cannot be read.
   */
  private entryName(b: Blockref, namlen: number, want: Buffer | null): Buffer | string | null {
    if (namlen > 1024) return null;
    let bytes: Buffer;
    if (namlen <= b.check.length) {
      bytes = b.check.subarray(0, namlen);
    } else {
      const radix = brefRadix(b);
      if (radix === 0 || radix > 10 || namlen > 1 << radix) return null;
      if (this.opts.strict && unchecked(b)) return `name block ${hex(b.dataOff)} has no check code (strict mode)`;
      try {
        bytes = this.reader.readPhysical(b).subarray(0, namlen);
      } catch (e) {
        return (e as Error).message;
      }
    }
    if (want && !bytes.equals(want)) return null;
    return validName(bytes) ? Buffer.from(bytes) : null;
  }

  /** Why a blockref's block cannot be read at all (before any I/O), or null. */
  private mediaProblem(b: Blockref): string | null {
    const radix = brefRadix(b);
    if (radix === 0) return 'has no media';
    if (radix > RADIX_MAX) return `has bad size radix ${radix}`;
    if (brefOffset(b) >= this.total) return 'points past the end of the media';
    return null;
  }

  /** An indirect block's blockrefs, or why they cannot be had. */
  private readTable(b: Blockref): Blockref[] | string {
    if (this.opts.strict && unchecked(b)) return `${typeName(b.type)} block ${hex(b.dataOff)} has no check code (strict mode)`;
    try {
      return this.reader.readBlockrefs(b);
    } catch (e) {
      return (e as Error).message;
    }
  }

  /**
   * Feed every verified data block under `brefs` to `sink` (bytes, count,
   * file offset), clipped at `size`; what cannot be read goes to `problems`.
   */
  private copyData(brefs: Blockref[], size: bigint, sink: (buf: Buffer, n: number, pos: number) => void, problems: string[], level: number): void {
    for (const b of brefs) {
      if (b.type === BrefType.EMPTY || b.dataOff === 0n) continue;
      if (b.type !== BrefType.DATA && b.type !== BrefType.INDIRECT) continue;
      const bad = this.mediaProblem(b);
      if (bad) {
        problems.push(`${typeName(b.type)} blockref ${hex(b.dataOff)} key ${hex(b.key)} ${bad}`);
        continue;
      }
      if (b.type === BrefType.INDIRECT) {
        const table = level < TREE_DEPTH_MAX ? this.readTable(b) : `indirect blocks nested too deep at ${hex(b.dataOff)}`;
        if (typeof table === 'string') problems.push(table);
        else this.copyData(table, size, sink, problems, level + 1);
        continue;
      }
      if (b.key >= size) continue;
      if (this.opts.strict && unchecked(b)) {
        problems.push(`data block ${hex(b.dataOff)} key ${hex(b.key)} has no check code (strict mode)`);
        continue;
      }
      const comp = brefComp(b);
      const compressed = comp === CompMethod.LZ4 || comp === CompMethod.ZLIB;
      if (compressed && b.keybits > 16) {
        problems.push(`data block ${hex(b.dataOff)} has keybits ${b.keybits}`);
        continue;
      }
      const out = Buffer.alloc(compressed ? 1 << b.keybits : brefBytes(b));
      try {
        this.reader.readData(b, out);
      } catch (e) {
        problems.push((e as Error).message);
        continue;
      }
      const n = size - b.key < BigInt(out.length) ? Number(size - b.key) : out.length;
      sink(out, n, Number(b.key));
    }
  }

  private restoreFile(c: Copy, ip: InodeData, name: Buffer, incompleteName: () => Buffer): void {
    const m = ip.meta;
    // A read-only file from an earlier run is overwritten, a symlink never followed.
    try {
      const old = fs.lstatSync(name, { throwIfNoEntry: false });
      if (old?.isFile() && (old.mode & 0o600) !== 0o600) fs.chmodSync(name, 0o600);
    } catch {
      // the open below reports what is wrong
    }
    const { O_RDWR, O_CREAT, O_TRUNC, O_NOFOLLOW } = fs.constants;
    let fd: number;
    try {
      fd = fs.openSync(name, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW, 0o600);
    } catch (e) {
      this.problem(name, errText(e));
      return;
    }
    const problems: string[] = [];
    try {
      if (m.size > BigInt(Number.MAX_SAFE_INTEGER)) {
        problems.push(`size ${m.size} out of range`);
      } else if (m.opFlags & OPFLAG_DIRECTDATA) {
        if (m.size <= BigInt(EMBEDDED_BYTES)) writeAll(fd, ip.u, Number(m.size), 0);
        else problems.push(`embedded data of ${m.size} bytes does not fit the inode`);
      } else {
        this.copyData(inodeBlockset(ip), m.size, (buf, n, pos) => writeAll(fd, buf, n, pos), problems, 0);
      }
      if (m.size <= BigInt(Number.MAX_SAFE_INTEGER)) fs.ftruncateSync(fd, Number(m.size));
    } catch (e) {
      problems.push(errText(e));
    }
    this.attempt(name, () => fs.futimesSync(fd, seconds(m.atime), seconds(m.mtime)));
    if (this.asRoot) this.attempt(name, () => fs.fchownSync(fd, uuidToXid(m.uid), uuidToXid(m.gid)));
    // An incomplete file keeps mode 0600 (the reference's choice: it is not the file).
    if (problems.length === 0) this.attempt(name, () => fs.fchmodSync(fd, m.mode & 0o7777));
    fs.closeSync(fd);
    c.restoredAs = name;
    if (problems.length === 0) return;
    const bad = incompleteName();
    try {
      fs.renameSync(name, bad);
      c.restoredAs = bad;
      c.restoredIncomplete = true;
    } catch (e) {
      problems.push(`rename: ${errText(e)}`);
    }
    const more = problems.length > 1 ? ` (and ${problems.length - 1} more)` : '';
    this.problem(c.restoredAs, `incomplete: ${problems[0]}${more}`);
  }

  private restoreSymlink(c: Copy, ip: InodeData, name: Buffer): void {
    const m = ip.meta;
    if (m.size > BigInt(SYMLINK_MAX)) {
      this.problem(name, `symlink not restored: target of ${m.size} bytes`);
      return;
    }
    const target = Buffer.alloc(Number(m.size));
    const problems: string[] = [];
    if (m.opFlags & OPFLAG_DIRECTDATA) {
      if (target.length <= EMBEDDED_BYTES) ip.u.copy(target, 0, 0, target.length);
      else problems.push(`embedded target of ${target.length} bytes does not fit the inode`);
    } else {
      this.copyData(inodeBlockset(ip), m.size, (buf, n, pos) => buf.copy(target, pos, 0, n), problems, 0);
    }
    if (problems.length) {
      this.problem(name, `symlink not restored: ${problems[0]}`);
      return;
    }
    if (!this.replace(name)) return;
    try {
      fs.symlinkSync(target, name);
    } catch (e) {
      this.problem(name, `symlink: ${errText(e)}`);
      return;
    }
    if (this.asRoot) this.attempt(name, () => fs.lchownSync(name, uuidToXid(m.uid), uuidToXid(m.gid)));
    this.attempt(name, () => fs.lutimesSync(name, seconds(m.atime), seconds(m.mtime)));
    c.restoredAs = name;
  }

  private restoreFifo(c: Copy, ip: InodeData, name: Buffer): void {
    // Node has no mkfifo: make one under a plain name in DESTDIR, then move it
    // (names from the media need not be valid UTF-8 for a command line).
    const tmp = path.join(this.dest, `.hammer2-recover.${process.pid}.fifo`);
    const r = spawnSync('mkfifo', ['-m', '600', tmp], { encoding: 'utf8' });
    if (r.status !== 0) {
      this.problem(name, `fifo not restored: mkfifo: ${(r.error?.message ?? r.stderr).trim()}`);
      return;
    }
    try {
      if (!this.replace(name)) return;
      fs.renameSync(tmp, name);
    } catch (e) {
      this.problem(name, `fifo: ${errText(e)}`);
      return;
    } finally {
      fs.rmSync(tmp, { force: true });
    }
    this.setAttrs(name, ip.meta);
    c.restoredAs = name;
  }

  /** Make room for a new symlink or FIFO at `name` (a file left by an earlier run). */
  private replace(name: Buffer): boolean {
    let st: fs.Stats | undefined;
    try {
      st = fs.lstatSync(name, { throwIfNoEntry: false });
    } catch (e) {
      this.problem(name, errText(e));
      return false;
    }
    if (!st) return true;
    if (st.isDirectory()) {
      this.problem(name, 'exists and is a directory');
      return false;
    }
    return this.attempt(name, () => fs.unlinkSync(name));
  }

  /** Times, owner (as root) and mode of a directory or FIFO at `p`. */
  private setAttrs(p: Buffer, m: InodeMeta): void {
    this.attempt(p, () => fs.utimesSync(p, seconds(m.atime), seconds(m.mtime)));
    if (this.asRoot) this.attempt(p, () => fs.lchownSync(p, uuidToXid(m.uid), uuidToXid(m.gid)));
    this.attempt(p, () => fs.chmodSync(p, m.mode & 0o7777));
  }

  /** Run a system call for `p`; a failure is reported and the recovery goes on. */
  private attempt(p: Buffer, fn: () => void): boolean {
    try {
      fn();
      return true;
    } catch (e) {
      this.problem(p, errText(e));
      return false;
    }
  }

  private problem(p: Buffer, msg: string): void {
    this.report(p, msg, true);
  }

  /** One line on stderr per path and message; `counts`: something was not recovered. */
  private report(p: Buffer, msg: string, counts: boolean): void {
    const line = `hammer2: ${p.toString()}: ${msg}\n`;
    if (this.reported.has(line)) return;
    this.reported.add(line);
    if (counts) this.problems++;
    this.progress?.clear();
    this.io.err(line);
  }
}

function writeAll(fd: number, buf: Buffer, n: number, pos: number): void {
  let done = 0;
  while (done < n) done += fs.writeSync(fd, buf, done, n - done, pos + done);
}

async function recover(ctx: Hammer2Ctx, args: string[], opts: Options): Promise<number> {
  if (args.length !== 3) throw new UsageError('recover device [/]path destdir');
  const [devpath, target, destdir] = args;
  let st: fs.Stats;
  try {
    st = fs.statSync(destdir);
  } catch (e) {
    throw new DirectiveError(`${destdir}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such directory' : errText(e)}`);
  }
  if (!st.isDirectory()) throw new DirectiveError(`${destdir}: not a directory`);
  await initCodecs();
  let vols: VolumeSet;
  try {
    // Shared lock: an image a writer has open (a read-write mount) is refused.
    vols = VolumeSet.open(devpath, { writable: false, lock: true });
  } catch (e) {
    if (e instanceof MountError) throw new DirectiveError(e.message);
    throw e;
  }
  const { io } = ctx;
  const progress = ctx.quiet === 0 && io.tty ? Progress.forTerminal(true) : null;
  try {
    const r = new Recovery(vols, destdir, opts, io, progress);
    io.out('MEDIA PASS\n');
    r.scanMedia();
    io.out(`\nInodes=${r.inodeCount}, Invalid_brefs=${r.stats.negatives}, Invalid_hits=${r.stats.negHits}\n`);
    io.out('RESTORATION PASS\n');
    let p = Buffer.from(target);
    const absolute = p[0] === 0x2f;
    while (p[0] === 0x2f) p = p.subarray(1);
    r.restore(p, absolute);
    io.out('\nCLEANUP\n');
    io.out(`TopoBRef stats: count=${r.stats.topoTables} dups=${r.stats.topoTableDups}\n`);
    io.out(`TopoInode stats: count=${r.stats.topoCopies} dups=${r.stats.topoCopyDups}\n`);
    const hint = r.untrusted
      ? `${r.untrusted} inode${r.untrusted === 1 ? '' : 's'} without a check code skipped (strict mode); recover-relaxed takes them`
      : '';
    if (r.found === 0) throw new DirectiveError(`${target}: not found on the media${hint && ` (${hint})`}`);
    if (hint) io.err(`hammer2: ${hint}\n`);
    if (r.problems) io.err(`hammer2: ${r.problems} problem${r.problems === 1 ? '' : 's'} reported; the rest is in ${destdir}\n`);
    return 0;
  } finally {
    progress?.clear();
    vols.close();
  }
}

export const directives: Record<string, Directive> = {
  recover: (ctx, args) => recover(ctx, args, { strict: true, fileOnly: false }),
  'recover-relaxed': (ctx, args) => recover(ctx, args, { strict: false, fileOnly: false }),
  'recover-file': (ctx, args) => recover(ctx, args, { strict: true, fileOnly: true }),
};
