// fsck_hammer2's verification: volume headers, the trees of every zone,
// the freemap against what the trees reference, and each PFS's namespace.
// Read-only: the image is opened without write access.
import {
  Blockref,
  brefStats,
  HAMMER2_UUID_STRING,
  initCodecs,
  NUM_VOLHDRS,
  uuidToString,
  VOLUME_ID_HBO,
  VolumeHeader,
  ZONE_BYTES,
} from '../src/media';
import { Device, HeaderCandidate, MountError, readHeaderCandidates, VolumeSet } from '../src/store';
import { BlockBits, windows } from './bitmap';
import { SeenCache } from './cache';
import { Finding, hex16, Report } from './findings';
import { compareFreemap, FreemapGeometry, FreemapStats, linearWatches, newFreemapStats } from './fmcheck';
import { NamespacePlan } from './namespace';
import { Progress } from './progress';
import { C_BYTES, GIB, Layout, MediaPlan, newCounts, newMediaPlan, PfsInfo, SEG, WalkServices, ZoneWalk } from './walk';

export interface CheckOptions {
  /** Only the best volume header zone (-b). */
  bestOnly?: boolean;
  /** Only these PFSs get namespace checks and per-PFS output (-l). */
  labels?: string[] | null;
  /** Count EMPTY blockrefs (-e). */
  countEmpty?: boolean;
  /** Read and verify every data block (default true). */
  verifyData?: boolean;
  /** Check each PFS's namespace (default true). */
  namespace?: boolean;
  /** Bitmap chunks (1 GiB each) per pass; bounds memory on huge images. */
  windowGiB?: number;
  progress?: Progress | null;
  /** Take the image lock (shared). */
  lock?: boolean;
  /** Only this zone's trees are the "in force" ones (repair uses the best). */
  report?: Report;
}

export interface ZoneStatus {
  zone: number;
  valid: boolean;
  reason?: string;
  tid?: bigint;
  best: boolean;
  /** Older than the best header. */
  stale: boolean;
  /** Trees were walked. */
  checked: boolean;
  header?: VolumeHeader;
  freemapCounts: number[];
  volumeCounts: number[];
  pfs: { name: string; counts: number[] }[];
  freemapErrors: number;
  volumeErrors: number;
  /** Damage in the volume tree that a repair cannot cut out. */
  unrepairable: number;
  /** Addresses of the freemap blocks its tree references (repair keeps them). */
  freemapBlocks: Set<number>;
  /** Good freemap leaves of this zone. */
  leaves: Blockref[];
}

export interface PfsSummary {
  name: string;
  pfsType: number;
  pfsSubtype: number;
  clid: string;
  inodes: number;
  directories: number;
  entries: number;
  counts: number[];
  /** Errors found in this PFS. */
  errors: number;
}

export interface CheckResult {
  spec: string;
  /** Set when the check could not run (exit status 8) or found no usable header (4). */
  fatal?: { message: string; status: 4 | 8 };
  zones: ZoneStatus[];
  bestZone: number;
  header?: VolumeHeader;
  report: Report;
  freemap: FreemapStats;
  pfs: PfsSummary[];
  nsPlans: NamespacePlan[];
  mediaPlan: MediaPlan;
  maxTid: bigint;
  total: number;
  passes: number;
  ms: number;
  /** Peak memory (RSS) seen, bytes. */
  peakRss: number;
}

/** Zones a header of this volume size has: i * 2 GiB < size, at most four (the reference's rule). */
export function zonesFor(voluSize: bigint): number {
  let n = 0;
  while (n < NUM_VOLHDRS && BigInt(n) * BigInt(ZONE_BYTES) < voluSize) n++;
  return n;
}

function failResult(spec: string, report: Report, message: string, status: 4 | 8, t0: number, zones: ZoneStatus[] = []): CheckResult {
  return {
    spec,
    fatal: { message, status },
    zones,
    bestZone: -1,
    report,
    freemap: newFreemapStats(),
    pfs: [],
    nsPlans: [],
    mediaPlan: newMediaPlan(),
    maxTid: 0n,
    total: 0,
    passes: 0,
    ms: Date.now() - t0,
    peakRss: process.memoryUsage().rss,
  };
}

const emptyZone = (zone: number, c: HeaderCandidate | undefined): ZoneStatus => ({
  zone,
  valid: !!c?.ok,
  reason: c?.reason,
  tid: c?.header?.mirrorTid,
  best: false,
  stale: false,
  checked: false,
  header: c?.header,
  freemapCounts: newCounts(),
  volumeCounts: newCounts(),
  pfs: [],
  freemapErrors: 0,
  volumeErrors: 0,
  unrepairable: 0,
  freemapBlocks: new Set(),
  leaves: [],
});

/** Describe why no volume could be opened: corrupt HAMMER2 (4) or not HAMMER2 / unreadable (8). */
function diagnoseOpen(spec: string, err: Error, report: Report, t0: number): CheckResult {
  const zones: ZoneStatus[] = [];
  let sawMagic = false;
  for (const path of spec.split(':').filter(Boolean)) {
    let dev: Device;
    try {
      dev = Device.open(path, { writable: false });
    } catch {
      continue;
    }
    try {
      for (const c of readHeaderCandidates(dev)) {
        if (c.ok || c.reason !== 'bad magic') sawMagic = true;
        if (path === spec.split(':')[0]) zones.push(emptyZone(c.zone, c));
        if (!c.ok) {
          report.add({ severity: 'error', code: 'header-invalid', zone: c.zone, message: `${path}: volume header #${c.zone}: ${c.reason}`, fixable: !!c.torn && path === spec.split(':')[0] });
        }
      }
    } finally {
      dev.close();
    }
  }
  const status = sawMagic && !/in use|lock/.test(err.message) ? 4 : 8;
  return failResult(spec, report, err.message, status, t0, zones);
}

export async function checkHammer2(spec: string, opts: CheckOptions = {}): Promise<CheckResult> {
  const t0 = Date.now();
  await initCodecs();
  const report = opts.report ?? new Report();
  let vols: VolumeSet;
  try {
    vols = VolumeSet.open(spec, { writable: false, lock: opts.lock ?? true });
  } catch (e) {
    if (e instanceof MountError) return diagnoseOpen(spec, e, report, t0);
    return failResult(spec, report, (e as Error).message, 8, t0);
  }
  try {
    return runCheck(spec, vols, report, opts, t0);
  } finally {
    vols.close();
  }
}

function runCheck(spec: string, vols: VolumeSet, report: Report, opts: CheckOptions, t0: number): CheckResult {
  let peakRss = 0;
  const sampleRss = () => {
    const r = process.memoryUsage().rss;
    if (r > peakRss) peakRss = r;
  };
  const hdr = vols.header;
  const bestZone = vols.headerZone;
  const total = vols.totalSize;
  const nz = zonesFor(hdr.voluSize);
  const add = (f: Finding) => report.add(f);

  // ------------------------------------------------------------ headers
  const zones: ZoneStatus[] = [];
  let maxTid = 0n;
  for (let z = 0; z < nz; z++) {
    const c = vols.candidates.find((x) => x.zone === z);
    const zs = emptyZone(z, c);
    zs.best = z === bestZone;
    if (!c) {
      zs.valid = false;
      zs.reason = 'not readable';
    }
    if (zs.valid && zs.header) {
      if (zs.header.mirrorTid > maxTid) maxTid = zs.header.mirrorTid;
      zs.stale = zs.header.mirrorTid < hdr.mirrorTid;
      if (!zs.header.fsid.equals(hdr.fsid)) {
        zs.valid = false;
        zs.reason = 'belongs to another filesystem (fsid differs)';
      }
    }
    if (!opts.bestOnly || zs.best) {
      if (!zs.valid) add({ severity: 'error', code: 'header-invalid', zone: z, message: `volume header: ${zs.reason}`, fixable: true });
    }
    zones.push(zs);
  }
  // Invalid zones still carry a tid the new header must exceed. The reference
  // also picks its "best" zone by magic and tid alone: with -b a damaged
  // header newer than every valid one is the zone it checks, so report it.
  for (const z of zones) {
    if (z.valid) continue;
    let raw: Buffer;
    try {
      raw = vols.volumes[0].dev.read(z.zone * ZONE_BYTES, 0x80);
    } catch {
      continue;
    }
    if (raw.readBigUInt64LE(0) !== VOLUME_ID_HBO) continue;
    const tid = raw.readBigUInt64LE(0x78);
    if (tid > maxTid) maxTid = tid;
    if (opts.bestOnly && tid > hdr.mirrorTid) {
      add({ severity: 'error', code: 'header-invalid', zone: z.zone, message: `newest volume header (mirror_tid 0x${tid.toString(16)}): ${z.reason}`, fixable: true });
    }
  }

  headerSanity(hdr, vols, add, bestZone);

  const layout: Layout = {
    total,
    bootBeg: Number(hdr.bootBeg),
    auxEnd: Number(hdr.auxEnd),
  };
  const geom: FreemapGeometry = { total, lowest: Math.ceil(Number(hdr.allocatorBeg) / SEG) * SEG };

  // Zones walked: the best first (its tree is the one in force), then the others, newest first.
  const walkZones = zones
    .filter((z) => z.valid && (!opts.bestOnly || z.best))
    .sort((a, b) => (a.best ? -1 : b.best ? 1 : a.tid! > b.tid! ? -1 : a.tid! < b.tid! ? 1 : a.zone - b.zone));

  const nsWanted: Set<string> | 'all' | null = opts.namespace === false ? null : opts.labels?.length ? new Set(opts.labels) : 'all';
  const services: WalkServices = {
    vols,
    layout,
    report,
    countEmpty: !!opts.countEmpty,
    verifyData: opts.verifyData !== false,
    nodeCache: new SeenCache(18, true),
    leafCache: new SeenCache(20, false),
    best: null,
    any: null,
    linearWatch: new Map(),
  };
  const progress = opts.progress ?? null;
  if (progress) services.progress = (n) => progress.add(n);

  const fm = newFreemapStats();
  let pfsInfos: PfsInfo[] = [];
  let mediaPlan = newMediaPlan();
  const wins = windows(total, opts.windowGiB ?? 8192);
  const recoveryNeeded = hdr.freemapTid < hdr.mirrorTid;

  for (let w = 0; w < wins.length; w++) {
    const [lo, hi] = wins[w];
    const first = w === 0;
    services.best = new BlockBits(lo, hi);
    services.any = new BlockBits(lo, hi);
    services.nodeCache.clear();
    services.linearWatch = new Map();
    const recovered = recoveryNeeded ? new BlockBits(lo, hi) : null;
    for (const zs of walkZones) {
      const h = zs.header!;
      const est = Number(brefStats(h.sroot[0] ?? h.sroot[1]).dataCount) || 1;
      if (first) {
        const fw = new ZoneWalk(services, { zone: zs.zone, primary: zs.best, namespace: null, reportFindings: true });
        progress?.start(`zone.${zs.zone} freemap`, 32768 * 4);
        fw.walkFreemap(h);
        zs.freemapCounts = fw.counts;
        zs.freemapErrors = fw.errors;
        zs.freemapBlocks = fw.freemapBlocks;
        zs.leaves = fw.leaves;
      }
      if (zs.best) services.linearWatch = linearWatches(vols, zs.leaves, lo, hi, geom);
      else services.linearWatch = new Map();
      progress?.start(`zone.${zs.zone} ${wins.length > 1 ? `pass ${w + 1}/${wins.length} ` : ''}volume`, est);
      const vw = new ZoneWalk(services, {
        zone: zs.zone,
        primary: zs.best,
        namespace: first && zs.best ? nsWanted : null,
        reportFindings: first,
      });
      if (recovered && zs.best) vw.recoverAbove = { tid: h.freemapTid, bits: recovered };
      vw.walkVolume(h);
      sampleRss();
      if (first) {
        zs.checked = true;
        zs.volumeCounts = vw.counts;
        zs.volumeErrors = vw.errors;
        zs.unrepairable = vw.unrepairable;
        zs.pfs = vw.pfs.map((p) => ({ name: p.name, counts: p.counts }));
        if (zs.best) {
          pfsInfos = vw.pfs;
          mediaPlan = vw.plan;
        }
      }
    }
    // The freemap in force against what the trees reference.
    const bz = zones[bestZone];
    if (bz && bz.valid) {
      fm.usedBlocks += countBits(services.best);
      fm.anyBlocks += countBits(services.any);
      compareFreemap(vols, bz.leaves, lo, hi, geom, services.best, services.any, recovered, fm, report, bestZone);
    }
    sampleRss();
  }
  progress?.clear();

  // Freemap summary findings.
  // With parts of the tree in force unreadable, "unreferenced" is unknown.
  const blind = (zones[bestZone]?.unrepairable ?? 0) > 0 || report.count('no-sroot') > 0;
  if (fm.leakedBytes > 0) {
    add({
      severity: 'warning',
      code: 'leaked',
      zone: bestZone,
      message: blind
        ? `${fmtSize(fm.leakedBytes)} marked allocated that the readable part of the tree does not reference (not reclaimable while parts are unreadable)`
        : `${fmtSize(fm.leakedBytes)} marked allocated but referenced by no volume header (leaked; bulkfree or fsck -y reclaims it)`,
      fixable: !blind,
    });
  }
  if (fm.olderFreeBlocks > 0) {
    add({
      severity: 'warning',
      code: 'older-unprotected',
      zone: bestZone,
      message: `${fm.olderFreeBlocks} blocks of 16 KiB referenced only by older volume headers are marked free (those headers will stop verifying when the space is reused)`,
      fixable: true,
    });
  }
  if (fm.recoveredBlocks > 0) {
    add({
      severity: 'info',
      code: 'recovery',
      zone: bestZone,
      message: `${fm.recoveredBlocks} blocks of 16 KiB newer than the freemap (freemap_tid ${hdr.freemapTid} < mirror_tid ${hdr.mirrorTid}) will be re-marked by mount recovery`,
      fixable: true,
    });
  }
  if (fm.reservedPairs > 0) {
    add({ severity: 'warning', code: 'freemap-01', zone: bestZone, message: `${fm.reservedPairs} freemap entries in the never-used state 01`, fixable: true });
  }
  if (fm.availMismatch > 0) {
    add({ severity: 'warning', code: 'freemap-avail', zone: bestZone, message: `${fm.availMismatch} freemap segments whose avail/linear does not match their bitmap`, fixable: true });
  }
  if (fm.complete && zones[bestZone]?.freemapErrors === 0) {
    const expect = hdr.allocatorSize - BigInt(fm.allocatedPairs) * 16384n;
    if (expect !== hdr.allocatorFree && !recoveryNeeded) {
      add({
        severity: 'warning',
        code: 'allocator-free',
        zone: bestZone,
        message: `allocator_free is ${hdr.allocatorFree}, the freemap says ${expect}`,
        fixable: true,
      });
    }
  }

  // Namespaces.
  const nsPlans: NamespacePlan[] = [];
  const pfs: PfsSummary[] = [];
  for (const p of pfsInfos) {
    if (p.ns) {
      const plan = p.ns.analyze(add, bestZone);
      nsPlans.push(plan);
    }
    pfs.push({
      name: p.name,
      pfsType: p.inode.meta.pfsType,
      pfsSubtype: p.inode.meta.pfsSubtype,
      clid: uuidToString(p.inode.meta.pfsClid),
      inodes: p.ns ? p.ns.n + 1 : 0,
      directories: p.ns ? countDirs(p) : 0,
      entries: p.ns ? p.ns.m : 0,
      counts: p.counts,
      errors: report.errorsByPfs.get(p.name) ?? 0,
    });
  }
  if (opts.labels?.length) {
    for (const l of opts.labels) {
      if (!pfsInfos.some((p) => p.name === l)) add({ severity: 'error', code: 'pfs-not-found', message: `PFS "${l}" not found`, fixable: false });
    }
  }
  pfs.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  sampleRss();
  return {
    spec,
    zones,
    bestZone,
    header: hdr,
    report,
    freemap: fm,
    pfs,
    nsPlans,
    mediaPlan,
    maxTid,
    total,
    passes: wins.length,
    ms: Date.now() - t0,
    peakRss,
  };
}

function countDirs(p: PfsInfo): number {
  let n = 1;
  const ns = p.ns!;
  for (let i = 0; i < ns.n; i++) if (ns.type[i] === 1) n++;
  return n;
}

function countBits(b: BlockBits | null): number {
  if (!b) return 0;
  let n = 0;
  for (const c of b.usedChunks()) for (const _ of b.blocksIn(c)) n++;
  return n;
}

/** Fields of the header in force that the format constrains. */
function headerSanity(h: VolumeHeader, vols: VolumeSet, add: (f: Finding) => void, zone: number): void {
  const bad = (message: string, severity: Finding['severity'] = 'error', fixable = false) =>
    add({ severity, code: 'header-field', zone, message, fixable });
  if (uuidToString(h.fstype) !== HAMMER2_UUID_STRING) bad(`fstype ${uuidToString(h.fstype)} is not HAMMER2`);
  const total = BigInt(vols.totalSize);
  if (!(h.bootBeg <= h.bootEnd && h.bootEnd <= h.auxBeg && h.auxBeg <= h.auxEnd && h.auxEnd <= h.allocatorBeg)) {
    bad(`boot/aux/allocator areas out of order (boot ${hex16(h.bootBeg)}-${hex16(h.bootEnd)}, aux ${hex16(h.auxBeg)}-${hex16(h.auxEnd)}, allocator_beg ${hex16(h.allocatorBeg)})`);
  }
  if (h.allocatorBeg > total) bad(`allocator_beg ${hex16(h.allocatorBeg)} is beyond the volume`);
  if (h.allocatorSize > total) bad(`allocator_size ${h.allocatorSize} exceeds the volume`);
  if (h.allocatorFree > h.allocatorSize) bad(`allocator_free ${h.allocatorFree} exceeds allocator_size ${h.allocatorSize}`, 'warning', true);
  if (h.version >= 2 && h.totalSize !== total) bad(`total_size ${h.totalSize} differs from the volumes' ${total}`);
  if (h.version < 2 && h.totalSize !== 0n) bad(`version 1 volume with total_size ${h.totalSize}`);
  if (h.freemapTid > h.mirrorTid) bad(`freemap_tid ${h.freemapTid} is ahead of mirror_tid ${h.mirrorTid}`, 'warning');
  // The reference's volume-table rules (sbin/hammer2 ondisk.c), which it refuses to go past.
  const NONE = 0xffffffffffffffffn;
  if (h.voluId !== 0) bad(`volume id ${h.voluId} of the root volume must be 0`);
  if (h.voluSize & (8n * 1024n * 1024n - 1n)) bad(`volume size ${h.voluSize} is not 8 MiB aligned`);
  if (h.version < 2) {
    if (h.nvolumes !== 0) bad(`version 1 volume with a volume count of ${h.nvolumes}`);
    h.voluLoff.forEach((o, i) => o !== 0n && bad(`version 1 volume with volume offset[${i}] ${hex16(o)}`));
  } else {
    h.voluLoff.forEach((o, i) => {
      if (i < h.nvolumes && o === NONE) bad(`volume offset[${i}] is unset for one of ${h.nvolumes} volumes`);
      if (i >= h.nvolumes && o !== NONE) bad(`volume offset[${i}] ${hex16(o)} is set beyond the ${h.nvolumes} volumes`);
    });
  }
}

export function fmtSize(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < GIB) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / GIB).toFixed(2)} GiB`;
}

export { C_BYTES };
