// mount_hammer2's options, and the mount table: shared by the command and
// by the daemon that takes further mounts of an image over its control channel.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { EXCLUSIVE_CACHE_TIMEOUT } from '../fuse/lowlevel';

/** Our own -o options, and the ones handed to libfuse. */
export interface ParsedOptions {
  readonly: boolean;
  /** Seconds between background flushes of dirty state. */
  flushSec: number;
  /** Flush once this much file data is pending. */
  dirtyBytes: number;
  /** Kernel attribute/entry cache timeouts, seconds. */
  attrTimeout: number;
  /** Microseconds the request loop stays awake after a request. */
  spinUs: number;
  /** Metadata block cache, MiB (file data gets an eighth of it on top). */
  cacheMiB: number;
  /** KiB of kernel readahead for the mount (its bdi's read_ahead_kb); 0 leaves the kernel's default. */
  readaheadKb: number;
  /** Images (or vol1:vol2 specs) holding copies of the PFS (copy=SPEC, repeatable), absolute. */
  copies: string[];
  /** master=SPEC: the node whose state wins when copies have diverged (absolute). */
  master: string | null;
  /** copy_retry=SEC: how often a copy that is offline or failed is tried again. */
  copyRetrySec: number;
  /** resync_rate=MiB: upper bound of resynchronization writes per second (0: none). */
  resyncMiBps: number;
  /**
   * FUSE writeback cache (-o writeback_cache): the kernel keeps written pages
   * and sends them later, merged, so a writer does not wait for each
   * request. Off by default: a write the daemon refuses (ENOSPC, EROFS in
   * emergency mode) is then reported only by fsync or close, and the page
   * cache keeps showing the refused bytes until it drops them. Used only by
   * read-write mounts of a non-SLAVE PFS.
   */
  writebackCache: boolean;
  /**
   * writeback_ratio=PCT: the share of the kernel's dirty-page limit the
   * writeback cache of this mount may hold (its bdi's max_ratio). FUSE
   * starts every mount at 1 %, which on random writes sends each page back
   * almost at once, one 64 KiB read-modify-write each; with more, pages of
   * one block wait together and arrive together, in offset order. Only
   * with writeback_cache; 0 leaves the kernel's 1 %.
   */
  writebackRatio: number;
  fuse: string[];
}

/**
 * Node flags the daemon runs with (mount_hammer2's background mode passes
 * them; run it with them when starting it with -f yourself). V8 lets the
 * young generation grow to 32 MiB of semispaces under the allocation rate
 * of a create storm, which alone put the daemon's peak RSS past 256 MiB
 * with 100 000 files; 8 MiB semispaces cost no measurable time there
 * (docs/notes/performance.md).
 */
export const DAEMON_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=8'];

// Kernel attribute and name cache timeout: see EXCLUSIVE_CACHE_TIMEOUT. The
// one thing a commit changes behind the kernel's back (st_blocks of files
// with pending data) is invalidated explicitly (fuse/session.ts).
const CACHE_TIMEOUT = EXCLUSIVE_CACHE_TIMEOUT;

const OWN = new Set(['ro', 'rw', 'flush', 'dirty', 'attr_timeout', 'entry_timeout', 'spin', 'cache', 'noallow_other', 'readahead', 'copy', 'master', 'copy_retry', 'resync_rate', 'writeback_cache', 'no_writeback_cache', 'writeback_ratio']);

// Kernel readahead of the mount. FUSE starts at 128 KiB, so a sequential
// read arrives as 128 KiB requests (two data blocks each); with more, the
// kernel asks for up to 1 MiB per request (the binding's max_pages) and
// keeps several in flight, so each pread covers a run of blocks.
const DEFAULT_READAHEAD_KB = 4096;

// writeback_ratio's default, measured with fio randrw over 1 GiB on this
// project's machine: 1 % gives 1.7x the IOPS of a mount without the
// writeback cache, 40 % about 4x (docs/notes/performance.md).
const DEFAULT_WRITEBACK_RATIO = 40;

/** A volume spec with every path made absolute (the daemon's cwd is not the caller's). */
export const absSpec = (spec: string): string =>
  spec
    .split(':')
    .map((d) => path.resolve(d))
    .join(':');

/** The same -o list with copy= paths made absolute, to hand to a daemon. */
export function absCopyOptions(list: string[]): string[] {
  return list.map((s) =>
    s
      .split(',')
      .map((o) => {
        const m = /^(copy|master)=(.+)$/.exec(o);
        return m ? `${m[1]}=${absSpec(m[2])}` : o;
      })
      .join(','),
  );
}

export function parseOptions(list: string[]): ParsedOptions {
  const p: ParsedOptions = {
    readonly: false,
    flushSec: 5,
    dirtyBytes: 32 << 20,
    attrTimeout: CACHE_TIMEOUT,
    spinUs: 50,
    cacheMiB: 48,
    readaheadKb: DEFAULT_READAHEAD_KB,
    copies: [],
    master: null,
    copyRetrySec: 10,
    resyncMiBps: 0,
    writebackCache: false,
    writebackRatio: DEFAULT_WRITEBACK_RATIO,
    fuse: [],
  };
  let allowOther = process.getuid?.() === 0;
  // time_gran: HAMMER2 keeps microseconds; the kernel, which owns a file's times under the writeback cache, rounds to them too.
  const fuse = new Set<string>(['default_permissions', 'auto_unmount', 'fsname=hammer2', 'subtype=hammer2', 'time_gran=1000']);
  for (const o of list.flatMap((s) => s.split(',')).filter(Boolean)) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)(?:=([^,\s]*))?$/.exec(o);
    if (!m) throw new Error(`bad mount option "${o}"`);
    const [, key, val] = m;
    const num = (what: string) => {
      const n = Number(val);
      if (val === undefined || !Number.isFinite(n) || n < 0) throw new Error(`-o ${key}= needs ${what}`);
      return n;
    };
    if (!OWN.has(key)) {
      if (key === 'allow_other') allowOther = true;
      else if (key === 'fsname' || key === 'subtype') {
        for (const f of [...fuse]) if (f.startsWith(key + '=')) fuse.delete(f);
        fuse.add(o);
      } else fuse.add(o);
      continue;
    }
    if (key === 'ro') p.readonly = true;
    else if (key === 'rw') p.readonly = false;
    else if (key === 'flush') p.flushSec = num('seconds');
    else if (key === 'dirty') p.dirtyBytes = num('MiB') * 1024 * 1024;
    else if (key === 'attr_timeout' || key === 'entry_timeout') p.attrTimeout = num('seconds');
    else if (key === 'spin') p.spinUs = Math.min(num('microseconds'), 10000);
    else if (key === 'cache') p.cacheMiB = Math.max(1, Math.min(Math.floor(num('MiB')), 4096));
    else if (key === 'noallow_other') allowOther = false;
    else if (key === 'readahead') p.readaheadKb = Math.min(Math.floor(num('KiB')), 1 << 20);
    else if (key === 'copy') {
      if (!val) throw new Error('-o copy= needs an image (or vol1:vol2) holding a copy of the PFS');
      p.copies.push(absSpec(val));
    } else if (key === 'copy_retry') p.copyRetrySec = Math.max(0.1, num('seconds'));
    else if (key === 'resync_rate') p.resyncMiBps = num('MiB per second');
    else if (key === 'writeback_cache') p.writebackCache = true;
    else if (key === 'no_writeback_cache') p.writebackCache = false;
    else if (key === 'writeback_ratio') {
      const n = num('a percentage (0 to 100)');
      if (n > 100 || !Number.isInteger(n)) throw new Error(`-o writeback_ratio= needs a whole percentage (0 to 100), not ${val}`);
      p.writebackRatio = n;
    }
    else if (key === 'master') {
      if (!val) throw new Error('-o master= needs the image whose state wins (the primary or one of the copy= images)');
      p.master = absSpec(val);
    }
  }
  if (p.copies.length && p.readonly) throw new Error('copies (-o copy=) need a read-write mount: they are kept level by its commits');
  if (p.master && !p.copies.length) throw new Error('-o master= chooses among copies: name them with -o copy=');
  if (allowOther) fuse.add('allow_other');
  if (p.readonly) fuse.add('ro');
  p.fuse = [...fuse];
  return p;
}

/**
 * Set a property of the FUSE mount at `mnt` in its backing device info
 * (/sys/class/bdi/MAJ:MIN/NAME: read_ahead_kb, max_ratio), found through
 * /proc/self/mountinfo (a stat of the mountpoint would be a request to
 * ourselves). Needs root; returns why not.
 */
export function setMountBdi(mnt: string, name: 'read_ahead_kb' | 'max_ratio', value: number): string | null {
  let mounts: Mount[];
  try {
    mounts = mountTable();
  } catch (e) {
    return `cannot read /proc/self/mountinfo: ${(e as Error).message}`;
  }
  const dev = mounts.filter((m) => m.point === mnt).pop()?.dev; // the last one listed is on top
  if (!dev || !/^\d+:\d+$/.test(dev)) return `${mnt} not found in /proc/self/mountinfo`;
  const file = `/sys/class/bdi/${dev}/${name}`;
  try {
    fs.writeFileSync(file, `${value}\n`);
  } catch (e) {
    return `cannot set ${file}: ${(e as Error).message}`;
  }
  return null;
}

export interface Mount {
  /** The mountpoint, unescaped. */
  point: string;
  /** major:minor of the mounted filesystem. */
  dev: string;
  /** Filesystem type (fuse.hammer2 for ours). */
  fstype: string;
  /** Mount source (ours: the image spec and @LABEL). */
  source: string;
}

/** This process's view of the mounts, in mount order (/proc/self/mountinfo). */
export function mountTable(): Mount[] {
  // Bytes are octal escapes; latin1 keeps them bytes, then they become UTF-8 text.
  const unesc = (f: string) =>
    Buffer.from(f.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))), 'latin1').toString('utf8');
  return fs
    .readFileSync('/proc/self/mountinfo', 'latin1')
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f.length > 4)
    .map((f) => {
      const sep = f.indexOf('-', 6);
      return { point: unesc(f[4]), dev: f[2], fstype: sep > 0 ? f[sep + 1] ?? '' : '', source: sep > 0 ? unesc(f[sep + 2] ?? '') : '' };
    });
}

/** The innermost hammer2 mount that contains `p` (a resolved absolute path). */
export function hammer2MountOf(p: string): Mount | undefined {
  let best: Mount | undefined;
  for (const m of mountTable()) {
    const inside = p === m.point || p.startsWith(m.point.endsWith('/') ? m.point : m.point + '/');
    if (inside && (!best || m.point.length >= best.point.length)) best = m;
  }
  return best && best.fstype === 'fuse.hammer2' ? best : undefined;
}
