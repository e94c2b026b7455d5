// Repair (-y). Everything goes through copy-on-write and a new volume
// header, written last: until that header is on media every block the
// existing headers reference is untouched, so an interrupted repair leaves
// the image as it was (or, after the header write, repaired).
//
// A repair runs in rounds, re-checking the image after each:
//   media round     - choose the tree to keep: the best header's if its tree
//                     verifies, else the newest zone's that does (rollback;
//                     the transactions in between are lost), else the best
//                     one with every bad blockref cut out (pruning by
//                     path copy); rebuild the whole freemap from the blocks
//                     the kept trees reference; write the new header over
//                     every zone that is invalid or whose trees fail (or the
//                     next zone in rotation).
//   namespace round - through the filesystem layer (Hammer2Fs opened
//                     writable, one flush): entries naming missing inodes go,
//                     orphans are reattached in lost+found, link counts,
//                     parent pointers and the inode allocator are set right.
//   reclaim         - once the image has no errors left, leaked space is
//                     returned to the freemap (a media round without pruning).
import {
  applyUpdates,
  BlockReader,
  BlockWriter,
  freemapSlot,
  padTable,
  rollupStats,
  TreeContext,
  Allocator,
} from '../src/engine';
import { Hammer2Fs, Node, Pfs } from '../src/fs';
import { PendingDirents } from '../src/fs/pending';
import {
  BMAP_BITMAP,
  bmapBase,
  bmapClass,
  bmapLinear,
  setBmapAvail,
  setBmapClass,
  setBmapFull,
  setBmapLinear,
  BLOCKREF_BYTES,
  Blockref,
  BrefType,
  decodeInode,
  decodeVolumeHeader,
  dirhash,
  DIRHASH_LOMASK,
  emptyBlockref,
  encMethods,
  encodeEntry,
  encodeInode,
  encodeVolumeHeader,
  icrc32,
  inodeBlockset,
  ObjType,
  OPFLAG_DIRECTDATA,
  SET_COUNT,
  setInodeBlockset,
  VolumeHeader,
  VOLUME_BYTES,
  ZONE_BYTES,
  ZONE_SEG,
} from '../src/media';
import { Device, readHeaderCandidates, VolumeSet } from '../src/store';
import { BLOCK, BlockBits, CHUNK_BYTES, windows } from './bitmap';
import { SeenCache } from './cache';
import { checkHammer2, CheckOptions, CheckResult, ZoneStatus } from './check';
import { hex16, Report } from './findings';
import { allocatableRange, FreemapGeometry, readLeaf } from './fmcheck';
import { NamespacePlan, planIsEmpty, ROOT_INUM } from './namespace';
import { GIB, MediaPlan, mediaPlanEmpty, SEG, sig, SROOT_OWNER, WalkServices, ZoneWalk } from './walk';

export interface RepairResult {
  rounds: number;
  actions: string[];
  wrote: boolean;
  /** Set when the repair rolled back to an older volume header. */
  rollback?: { fromZone: number; fromTid: string; toZone: number; toTid: string; lostTids: string };
  /** Why the repair gave up before the image was clean (nothing of that round was written). */
  stopped?: string;
  /** The check after the last round. */
  final?: CheckResult;
}

export interface RepairOptions extends CheckOptions {
  log?: (m: string) => void;
  maxRounds?: number;
  /** Tests: fail a media round after its blocks are written, before the volume header. */
  failBeforeHeader?: boolean;
}

/** Problems the namespace round fixes; every other fixable error needs a media round. */
const NAMESPACE_CODES = new Set([
  'dangling-entry',
  'entry-to-root',
  'entry-type',
  'dir-hardlink',
  'orphan',
  'dir-cycle',
  'nlinks',
  'dir-nlinks',
  'dir-iparent',
  'pfs-inum',
  'entry-hash',
  'inode-algo',
]);
/** Warnings a freemap rebuild removes. */
const RECLAIM_CODES = new Set(['leaked', 'older-unprotected', 'allocator-free', 'freemap-avail', 'freemap-01', 'recovery']);

function needs(r: CheckResult): { media: boolean; namespace: boolean; reclaim: boolean } {
  let media = false;
  let namespace = false;
  let reclaim = false;
  for (const z of r.zones) if (!z.valid || z.volumeErrors || z.freemapErrors) media = true;
  if (!mediaPlanEmpty(r.mediaPlan)) media = true;
  for (const [code, n] of r.report.byCode) {
    if (!n) continue;
    if (NAMESPACE_CODES.has(code)) namespace = true;
    else if (RECLAIM_CODES.has(code)) reclaim = true;
  }
  for (const f of r.report.findings) {
    if (f.severity === 'error' && f.fixable && !NAMESPACE_CODES.has(f.code)) media = true;
  }
  if (r.nsPlans.some((p) => !planIsEmpty(p))) namespace = true;
  return { media, namespace, reclaim };
}

/** A fingerprint of what is left to fix, to stop when a round changes nothing. */
const fingerprint = (r: CheckResult): string =>
  [...r.report.byCode].map(([k, v]) => `${k}:${v}`).join(',') + `|${r.zones.map((z) => `${z.valid}${z.volumeErrors}${z.freemapErrors}`).join('')}`;

export async function repairHammer2(spec: string, first: CheckResult, o: RepairOptions = {}): Promise<RepairResult> {
  const log = o.log ?? (() => {});
  const res: RepairResult = { rounds: 0, actions: [], wrote: false };
  const act = (m: string) => {
    res.actions.push(m);
    log(m);
  };
  let cur = first;
  let reclaimed = false;
  const seen = new Set<string>();
  const maxRounds = o.maxRounds ?? 6;
  const recheck = () => checkHammer2(spec, { ...o, report: new Report(), lock: o.lock });
  // No header verifies, but one was only cut short while written: give it
  // back its whole-header CRC first, then repair from there as usual.
  if (cur.fatal && !o.failBeforeHeader) {
    const mended = mendTornHeader(spec);
    if (mended) {
      act(mended);
      if (!mended.startsWith('cannot')) {
        res.wrote = true;
        cur = await recheck();
      }
    }
  }
  for (let round = 0; round < maxRounds; round++) {
    if (cur.fatal) {
      if (round === 0) act(`cannot repair: ${cur.fatal.message}`);
      break;
    }
    const n = needs(cur);
    const fp = fingerprint(cur);
    if (seen.has(fp)) {
      act('no further progress possible');
      break;
    }
    seen.add(fp);
    try {
      if (n.media) {
        await mediaRound(spec, cur, o, act, res);
      } else if (n.namespace) {
        await namespaceRound(spec, cur, act, o.lock ?? true);
      } else if (n.reclaim && !reclaimed && cur.report.errors === 0) {
        reclaimed = true;
        await mediaRound(spec, cur, o, act, res);
      } else {
        break;
      }
    } catch (e) {
      if (o.failBeforeHeader) throw e;
      // A round that fails before its header write changed nothing on media.
      res.stopped = (e as Error).message;
      act(`repair stopped: ${(e as Error).message}`);
      if (res.wrote) cur = await recheck();
      break;
    }
    res.wrote = true;
    res.rounds++;
    cur = await recheck();
  }
  res.final = res.wrote ? cur : first;
  return res;
}

/**
 * Where no volume header of the root volume verifies, rewrite the newest
 * one rejected only by its whole-header CRC (both sectors verify: a commit
 * killed inside its header write left the first page new and the rest
 * old) with its CRCs recomputed. What the header names is then checked by
 * the normal rounds (the freemap rebuilt if it disagrees). Returns what
 * was done, or null.
 */
function mendTornHeader(spec: string): string | null {
  const first = spec.split(':').filter(Boolean)[0];
  let dev: Device;
  try {
    dev = Device.open(first, { writable: true, lock: true });
  } catch (e) {
    return `cannot open ${first} to mend its header: ${(e as Error).message}`;
  }
  try {
    const c = readHeaderCandidates(dev);
    if (c.some((x) => x.ok)) return null;
    let best: { zone: number; raw: Buffer; tid: bigint } | null = null;
    for (const x of c.filter((y) => y.torn)) {
      const raw = dev.read(x.zone * ZONE_BYTES, VOLUME_BYTES);
      const tid = decodeVolumeHeader(raw).mirrorTid;
      if (!best || tid > best.tid) best = { zone: x.zone, raw, tid };
    }
    if (!best) return null;
    dev.writeWhole(best.zone * ZONE_BYTES, encodeVolumeHeader(decodeVolumeHeader(best.raw)));
    dev.sync();
    return `volume header #${best.zone} (mirror_tid 0x${best.tid.toString(16)}) was cut short while written: its CRCs rewritten`;
  } finally {
    dev.close();
  }
}

// ====================================================================== media

/** Allocation for the blocks a repair writes: free space no valid header references. */
class RepairAllocator implements Allocator {
  private partial = -1; // 16 KiB block being filled with small blocks
  private partialUsed = 0;
  private cursor: number;
  private readonly end: number;
  constructor(
    private readonly avoid: BlockBits,
    private readonly keep: BlockBits,
    private readonly g: FreemapGeometry,
  ) {
    this.cursor = Math.max(g.lowest, avoid.lo);
    this.end = Math.min(avoid.hi, Math.floor(g.total / SEG) * SEG);
  }

  private usable(off: number): boolean {
    return off >= this.g.lowest && off % GIB >= SEG && off < this.end;
  }

  private take(blk: number, n: number): void {
    for (let i = 0; i < n; i++) {
      this.avoid.set(blk + i);
      this.keep.set(blk + i);
    }
  }

  alloc(bytes: number, _type: number): number {
    if (bytes < BLOCK && this.partial >= 0) {
      const at = Math.ceil(this.partialUsed / bytes) * bytes;
      if (at + bytes <= BLOCK) {
        this.partialUsed = at + bytes;
        return this.partial * BLOCK + at;
      }
    }
    const n = Math.max(1, bytes / BLOCK);
    for (let pass = 0; pass < 2; pass++) {
      let off = pass === 0 ? this.cursor : Math.max(this.g.lowest, this.avoid.lo);
      off = Math.ceil(off / (n * BLOCK)) * n * BLOCK;
      for (; off + n * BLOCK <= this.end; off += n * BLOCK) {
        if (!this.usable(off)) {
          if (off % GIB < SEG) off = Math.floor(off / GIB) * GIB + SEG - n * BLOCK;
          continue;
        }
        const blk = off / BLOCK;
        let free = true;
        for (let i = 0; i < n && free; i++) if (this.avoid.has(blk + i)) free = false;
        if (!free) continue;
        this.take(blk, n);
        this.cursor = off + n * BLOCK;
        if (bytes < BLOCK) {
          this.partial = blk;
          this.partialUsed = bytes;
        }
        return off;
      }
    }
    throw new Error('no free space for the repair');
  }

  freeBytes(): number {
    return Number.MAX_SAFE_INTEGER;
  }
}

/** Rewrites the tables on paths to planned changes (drop, patch, sort), bottom up. */
class Pruner {
  private memo = new Map<string, Blockref | null>();
  copies = 0;
  constructor(
    private readonly reader: BlockReader,
    private readonly w: BlockWriter,
    private readonly plan: MediaPlan,
  ) {}

  table(owner: string, table: Blockref[], capacity: number): { table: Blockref[]; changed: boolean } {
    const drops = this.plan.drop.get(owner);
    const patches = this.plan.patch.get(owner);
    let changed = false;
    const out: Blockref[] = [];
    for (let i = 0; i < table.length; i++) {
      let b = table[i];
      if (drops?.has(i)) {
        changed = true;
        continue;
      }
      const p = patches?.get(i);
      if (p) {
        b = p;
        changed = true;
      }
      if (b.type === BrefType.EMPTY) {
        if (b.dataOff !== 0n) changed = true; // junk in an empty slot goes
        continue;
      }
      if ((b.type === BrefType.INODE || b.type === BrefType.INDIRECT) && this.plan.dirty.has(sig(b))) {
        const nb = this.node(b);
        if (nb !== b) changed = true;
        if (!nb) continue;
        b = nb;
      }
      out.push(b);
    }
    if (this.plan.sort.has(owner)) changed = true;
    if (!changed) return { table, changed };
    return { table: padTable(out, capacity), changed };
  }

  private node(b: Blockref): Blockref | null {
    const key = sig(b);
    if (this.memo.has(key)) return this.memo.get(key)!;
    let nb: Blockref | null = b;
    let check = (b.methods >> 4) & 15;
    if (check > 4) check = 3;
    if (b.type === BrefType.INDIRECT) {
      const t = this.reader.readBlockrefs(b);
      const r = this.table(key, t, t.length);
      if (r.changed) {
        if (r.table.every((x) => x.type === BrefType.EMPTY)) nb = null;
        else {
          nb = this.w.writeIndirect(b.key, b.keybits, r.table, check);
          this.copies++;
        }
      }
    } else {
      const ip = decodeInode(Buffer.from(this.reader.readPhysical(b)));
      if (!(ip.meta.opFlags & OPFLAG_DIRECTDATA)) {
        const r = this.table(key, inodeBlockset(ip), SET_COUNT);
        if (r.changed) {
          setInodeBlockset(ip, r.table);
          nb = this.w.writeMeta(BrefType.INODE, b.key, 0, encodeInode(ip), check, b.methods & 15);
          nb.flags = b.flags;
          nb.copyid = b.copyid;
          nb.vradix = b.vradix;
          rollupStats(nb, r.table);
          this.copies++;
        }
      }
    }
    this.memo.set(key, nb);
    return nb;
  }
}

const expand16 = (bits: number): number => {
  let v = 0;
  for (let i = 0; i < 16; i++) if ((bits >>> i) & 1) v |= 3 << (i * 2);
  return v >>> 0;
};

/** Rotation slot of a freemap block: the start of the longest run of slots no header uses. */
function chooseSlot(key: bigint, keybits: number, used: Set<number>, prefer: number): number {
  const free = (r: number) => !used.has(Number(freemapSlot(key, keybits, r)));
  let best = -1;
  let bestRun = -1;
  for (let k = 0; k < 8; k++) {
    const r = (prefer + k) % 8;
    if (!free(r)) continue;
    let run = 0;
    while (run < 8 && free((r + run) % 8)) run++;
    if (run > bestRun) {
      best = r;
      bestRun = run;
    }
  }
  if (best < 0) throw new Error(`no free freemap slot for ${hex16(key)}/${keybits}`);
  used.add(Number(freemapSlot(key, keybits, best)));
  return best;
}

function rotationOf(dataOff: bigint): number {
  const blk = Number((dataOff & 0x3fffc0n) / 65536n);
  const r = Math.floor((blk - 1) / 5);
  return r >= 0 && r < 8 ? r : -1;
}

async function mediaRound(spec: string, cur: CheckResult, o: RepairOptions, act: (m: string) => void, res: RepairResult): Promise<void> {
  const zones = cur.zones;
  const best = zones[cur.bestZone];
  const good = (z: ZoneStatus) => z.valid && z.checked && z.volumeErrors === 0;
  let target: ZoneStatus = best;
  if (!good(best)) {
    const older = zones.filter((z) => good(z) && z !== best).sort((a, b) => (a.tid! > b.tid! ? -1 : a.tid! < b.tid! ? 1 : 0));
    if (older.length) target = older[0];
  }
  const noSroot = cur.report.findings.some((f) => f.code === 'no-sroot' && f.zone === target.zone);
  if (target.unrepairable || noSroot) {
    // Whatever that damage references is unknown: rebuilding the freemap
    // would free it. Leave the image alone.
    throw new Error(
      `zone.${target.zone}'s tree has damage that cannot be cut out and no older volume header verifies; ` +
        `nothing written (a freemap rebuild would free what the damaged blocks reference)`,
    );
  }
  const prune = target === best && !mediaPlanEmpty(cur.mediaPlan);
  // Zones the new header goes to: every broken one (the reference checks them all).
  const broken = zones.filter((z) => !z.valid || (z.checked && (z.volumeErrors || z.freemapErrors)));
  let write = broken.map((z) => z.zone);
  const vols = VolumeSet.open(spec, { writable: true, lock: o.lock ?? true, zone: target.zone });
  try {
    const root = vols.volumes[0];
    let slots = 0;
    while (slots < 4 && slots * ZONE_BYTES + ZONE_SEG <= root.size) slots++;
    write = write.filter((z) => z < Math.max(1, slots));
    if (!write.length) write = [(cur.bestZone + 1) % Math.max(1, slots)];
    if (write.includes(cur.bestZone)) write = [cur.bestZone, ...write.filter((z) => z !== cur.bestZone)];

    const th = target.header!;
    const tid = cur.maxTid + 1n;
    const total = vols.totalSize;
    const geom: FreemapGeometry = { total, lowest: Math.ceil(Number(th.allocatorBeg) / SEG) * SEG };
    if (target !== best) {
      res.rollback = {
        fromZone: best.zone,
        fromTid: '0x' + best.tid!.toString(16),
        toZone: target.zone,
        toTid: '0x' + target.tid!.toString(16),
        lostTids: `0x${(target.tid! + 1n).toString(16)}..0x${best.tid!.toString(16)}`,
      };
      act(
        `rolling back from zone.${best.zone} (mirror_tid 0x${best.tid!.toString(16)}) to zone.${target.zone} (mirror_tid 0x${target.tid!.toString(16)}), ` +
          `whose tree verifies: transactions ${res.rollback.lostTids} are lost`,
      );
    } else if (!good(best)) {
      act(`no volume header's tree verifies: keeping zone.${best.zone}'s and cutting out what fails`);
    }

    // Headers that survive keep their trees; everything they reference stays allocated.
    const surviving = zones.filter((z) => z.valid && !write.includes(z.zone) && z !== target && z.header);
    const allValid = zones.filter((z) => z.valid && z.header);
    const reader = new BlockReader(vols, { cacheBytes: 32 * 1024 * 1024 });
    const svc = (lo: number, hi: number): WalkServices => ({
      vols,
      layout: { total, bootBeg: Number(th.bootBeg), auxEnd: Number(th.auxEnd) },
      report: new Report(),
      countEmpty: false,
      verifyData: false,
      nodeCache: new SeenCache(16, true),
      leafCache: new SeenCache(10, false),
      best: new BlockBits(lo, hi),
      any: new BlockBits(lo, hi),
      linearWatch: new Map(),
    });
    const reach = (s: WalkServices, h: VolumeHeader, into: 'keep' | 'avoid') => {
      // `primary` marks s.best (keep); every walk marks s.any (avoid).
      s.nodeCache.clear();
      const w = new ZoneWalk(s, { zone: -1, primary: into === 'keep', namespace: null, reportFindings: false });
      w.walkVolume(h);
      return w;
    };
    // Freemap blocks any header references: never overwritten by this repair.
    const usedSlots = new Set<number>();
    for (const z of allValid) {
      const s = svc(0, 1);
      const w = new ZoneWalk(s, { zone: z.zone, primary: false, namespace: null, reportFindings: false });
      w.walkFreemap(z.header!);
      for (const x of w.freemapBlocks) usedSlots.add(x);
    }
    const oldLeaves = new Map<number, Blockref>();
    {
      const s = svc(0, 1);
      const w = new ZoneWalk(s, { zone: target.zone, primary: false, namespace: null, reportFindings: false });
      w.walkFreemap(th);
      for (const l of w.leaves) oldLeaves.set(Number(l.key), l);
    }

    const wins = windows(total, o.windowGiB ?? 8192);
    let sroot = th.sroot;
    const leafUpdates: { key: bigint; bref: Blockref }[] = [];
    let allocated = 0n;
    let pruned = 0;
    const newHeader = decodeVolumeHeader(Buffer.from(th.raw));
    for (let wi = 0; wi < wins.length; wi++) {
      const [lo, hi] = wins[wi];
      const s = svc(lo, hi);
      const keep = s.best!;
      const avoid = s.any!;
      for (const z of allValid) reach(s, z.header!, 'avoid');
      if (wi === 0 && prune) {
        // Cut out every planned blockref by copying the paths above it.
        const alloc = new RepairAllocator(avoid, keep, geom);
        const writer = new BlockWriter(vols, reader, alloc);
        writer.tid = tid;
        const pr = new Pruner(reader, writer, cur.mediaPlan);
        const r = pr.table(SROOT_OWNER, th.sroot, SET_COUNT);
        sroot = r.table;
        pruned = pr.copies;
        let drops = 0;
        for (const s2 of cur.mediaPlan.drop.values()) drops += s2.size;
        act(`cut out ${drops} bad blockref${drops === 1 ? '' : 's'} (${pr.copies} blocks rewritten on the paths above them)`);
      }
      newHeader.sroot = sroot;
      reach(s, newHeader, 'keep');
      for (const z of surviving) reach(s, z.header!, 'keep');
      // Leaves for this window: where anything is referenced, and where a leaf was.
      const keys = new Set<number>();
      for (const c of keep.usedChunks()) keys.add(c * CHUNK_BYTES);
      for (const k of oldLeaves.keys()) if (k >= lo && k < hi) keys.add(k);
      for (const key of [...keys].sort((a, b) => a - b)) {
        if (key >= total) continue;
        const old = oldLeaves.get(key);
        const oldBuf = old ? readLeaf(vols, old) : null;
        const { buf, pairs, createdAvail } = buildLeaf(key, keep, oldBuf, geom);
        allocated += BigInt(pairs);
        const r = chooseSlot(BigInt(key), 30, usedSlots, old ? (rotationOf(old.dataOff) + 1) % 8 : 0);
        const b = freemapBref(BrefType.FREEMAP_LEAF, BigInt(key), 30, r, buf, tid);
        b.check.writeUInt32LE(0xffffffff, 4);
        b.check.writeBigUInt64LE(old ? old.check.readBigUInt64LE(8) : createdAvail, 8);
        vols.write(Number(b.dataOff & ~0x3fn), buf);
        leafUpdates.push({ key: b.key, bref: b });
      }
    }
    // Nodes above the leaves.
    const ctx: TreeContext = {
      reader,
      indirectBytes: () => 32768,
      writeIndirect: (key, keybits, table) => {
        const buf = Buffer.alloc(32768);
        let children = 0;
        for (let i = 0; i < table.length; i++) {
          if (table[i].type === BrefType.EMPTY) continue;
          children++;
          encodeEntry(table[i], buf, i * BLOCKREF_BYTES);
        }
        const r = chooseSlot(key, keybits, usedSlots, 0);
        const b = freemapBref(BrefType.FREEMAP_NODE, key, keybits, r, buf, tid);
        b.embed.writeBigUInt64LE(BigInt(32768 * children), 0);
        vols.write(Number(b.dataOff & ~0x3fn), buf);
        return b;
      },
    };
    leafUpdates.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    const fmTable = applyUpdates(ctx, [], SET_COUNT, leafUpdates);
    newHeader.freemap = padTable(fmTable, SET_COUNT);
    newHeader.sroot = padTable(
      sroot.filter((b) => b.type !== BrefType.EMPTY),
      SET_COUNT,
    );
    newHeader.mirrorTid = tid;
    newHeader.freemapTid = tid;
    const free = newHeader.allocatorSize - allocated * 16384n;
    newHeader.allocatorFree = free < 0n ? 0n : free;
    const raw = encodeVolumeHeader(newHeader);
    vols.sync();
    if (o.failBeforeHeader) throw new Error('failpoint: stopped before the volume header write');
    for (const z of write) {
      vols.writeHeader(0, z, raw);
      vols.sync();
    }
    act(
      `rebuilt the freemap (${leafUpdates.length} leaves, allocator_free ${newHeader.allocatorFree}) and wrote volume header ` +
        `mirror_tid 0x${tid.toString(16)} to zone${write.length > 1 ? 's' : ''} ${write.join(', ')}` +
        (pruned ? '' : ''),
    );
  } finally {
    vols.close();
  }
}

function freemapBref(type: number, key: bigint, keybits: number, r: number, buf: Buffer, tid: bigint): Blockref {
  const b = emptyBlockref();
  b.type = type;
  b.methods = encMethods(5, 0);
  b.key = key;
  b.keybits = keybits;
  b.dataOff = freemapSlot(key, keybits, r) | 15n;
  b.mirrorTid = tid;
  b.modifyTid = tid;
  b.check.writeUInt32LE(icrc32(buf), 0);
  return b;
}

/** A leaf from the referenced blocks: reserved segments full, the rest as referenced. */
function buildLeaf(key: number, keep: BlockBits, old: Buffer | null, g: FreemapGeometry): { buf: Buffer; pairs: number; createdAvail: bigint } {
  const buf = Buffer.alloc(32768);
  const [lokey, hikey] = allocatableRange(key, g);
  let full = 0;
  let pairs = 0;
  for (let n = 0; n < 256; n++) {
    const seg = key + n * SEG;
    const o = bmapBase(n) + BMAP_BITMAP;
    if (seg < lokey || seg >= hikey) {
      setBmapFull(buf, n);
      full++;
      continue;
    }
    let used = 0;
    const gblk0 = seg / BLOCK;
    for (let w = 0; w < 8; w++) {
      const bits = keep.bits32(gblk0 + w * 32) >>> 0;
      if (!bits) continue;
      buf.writeUInt32LE(expand16(bits & 0xffff), o + w * 8);
      buf.writeUInt32LE(expand16(bits >>> 16), o + 4 + w * 8);
      for (let i = 0; i < 32; i++) if ((bits >>> i) & 1) used++;
    }
    pairs += used;
    setBmapAvail(buf, n, (256 - used) * BLOCK);
    if (used) {
      setBmapClass(buf, n, old ? bmapClass(old, n) : 0);
      const oldLinear = old ? bmapLinear(old, n) : 0;
      setBmapLinear(buf, n, Math.min(SEG, Math.max(0, Math.ceil(oldLinear / BLOCK) * BLOCK)));
    }
  }
  return { buf, pairs, createdAvail: BigInt(GIB - SEG * full) };
}

// ================================================================== namespace

const cred = { uid: 0, gid: 0 };

/** Make a node private and pending (keeps its times). */
function touch(pfs: Pfs, n: Node, now: bigint): void {
  pfs.setattr(n, { ctime: n.data.meta.ctime, mtime: n.data.meta.mtime, atime: n.data.meta.atime }, now);
}

/** Keys in use per directory (read once per repair: directories can be huge). */
const usedKeys = new WeakMap<Node, Set<bigint>>();

/** A free key for `name` in `dir` (hash + 1 as the reference picks, or the next free one in the window). */
function freeKey(pfs: Pfs, dir: Node, name: Buffer): bigint {
  const h = dirhash(name);
  let used = usedKeys.get(dir);
  if (!used) {
    used = new Set<bigint>();
    for (const e of pfs.readdir(dir)) used.add(e.key);
    usedKeys.set(dir, used);
  }
  // Keys with a pending change (new entries, deletions) are taken too.
  const free = (k: bigint) => !used!.has(k) && !dir.dirents?.has(k);
  for (let k = h + 1n; k <= (h | DIRHASH_LOMASK); k++) {
    if (free(k)) {
      used.add(k);
      return k;
    }
  }
  if (free(h)) {
    used.add(h);
    return h;
  }
  throw new Error(`no free key for ${name} in directory ${dir.inum}`);
}

function addEntry(pfs: Pfs, dir: Node, name: Buffer, inum: bigint, type: number, now: bigint): bigint {
  touch(pfs, dir, now);
  const key = freeKey(pfs, dir, name);
  pending(dir).set(key, { name: Buffer.from(name), inum, type, key });
  return key;
}

/** The directory's pending-entry table (the filesystem layer's own structure). */
const pending = (dir: Node): PendingDirents => (dir.dirents ??= new PendingDirents());

const getNode = (pfs: Pfs, inum: bigint): Node => (inum === ROOT_INUM ? pfs.root : pfs.getInode(inum));

async function namespaceRound(spec: string, cur: CheckResult, act: (m: string) => void, lock: boolean): Promise<void> {
  const fs = await Hammer2Fs.open(spec, { writable: true, lock });
  try {
    const now = BigInt(Date.now()) * 1000n;
    for (const plan of cur.nsPlans) {
      if (planIsEmpty(plan)) continue;
      const pfs = fs.pfs(plan.pfs);
      if (!pfs) continue;
      try {
        fixNamespace(pfs, plan, now, act);
      } catch (e) {
        act(`${plan.pfs}: namespace repair incomplete: ${(e as Error).message}`);
      }
    }
    const st = fs.flush();
    if (st) act(`namespace repairs committed (mirror_tid 0x${st.tid.toString(16)}, ${st.blocks} blocks written)`);
  } finally {
    fs.close();
  }
}

function fixNamespace(pfs: Pfs, plan: NamespacePlan, now: bigint, act: (m: string) => void): void {
  const p = plan.pfs;
  // First: everything created below inherits these from its directory.
  for (const a of plan.algo) {
    const n = getNode(pfs, a.inum);
    touch(pfs, n, now);
    if (a.comp !== undefined) n.data.meta.compAlgo = a.comp;
    if (a.check !== undefined) n.data.meta.checkAlgo = a.check;
  }
  if (plan.algo.length) act(`${p}: reset invalid compression/check methods of ${plan.algo.length} inode${plan.algo.length === 1 ? '' : 's'}`);
  for (const r of plan.remove) {
    const dir = getNode(pfs, r.dir);
    touch(pfs, dir, now);
    pending(dir).set(r.key, null);
  }
  if (plan.remove.length) act(`${p}: removed ${plan.remove.length} directory entr${plan.remove.length === 1 ? 'y' : 'ies'} (naming missing inodes, extra directory names, loops)`);
  for (const r of plan.retype) {
    const dir = getNode(pfs, r.dir);
    const e = pfs.readdir(dir).find((x) => x.key === r.key);
    if (!e) continue;
    touch(pfs, dir, now);
    pending(dir).set(r.key, { ...e, type: r.type });
  }
  if (plan.retype.length) act(`${p}: corrected the type of ${plan.retype.length} directory entr${plan.retype.length === 1 ? 'y' : 'ies'}`);
  for (const r of plan.rekey) {
    const dir = getNode(pfs, r.dir);
    const e = pfs.readdir(dir).find((x) => x.key === r.key);
    if (!e) continue;
    touch(pfs, dir, now);
    pending(dir).set(r.key, null);
    addEntry(pfs, dir, e.name, e.inum, e.type, now);
  }
  if (plan.rekey.length) act(`${p}: moved ${plan.rekey.length} directory entr${plan.rekey.length === 1 ? 'y' : 'ies'} into their name's hash window`);
  if (plan.reattach.length) {
    let lf: Node;
    let lfName = 'lost+found';
    for (let i = 1; ; i++) {
      const e = pfs.lookup(pfs.root, Buffer.from(lfName));
      if (!e) {
        lf = pfs.create(pfs.root, Buffer.from(lfName), ObjType.DIRECTORY, 0o700, cred, now);
        break;
      }
      if (e.type === ObjType.DIRECTORY) {
        lf = pfs.getInode(e.inum);
        break;
      }
      lfName = `lost+found.${i}`;
    }
    for (const r of plan.reattach) {
      const n = pfs.getInode(r.inum);
      let name = `#${r.inum}`;
      for (let i = 1; pfs.lookup(lf, Buffer.from(name)); i++) name = `#${r.inum}.${i}`;
      addEntry(pfs, lf, Buffer.from(name), r.inum, n.data.meta.type, now);
      if (n.data.meta.type === ObjType.DIRECTORY) {
        touch(pfs, n, now);
        n.data.meta.iparent = lf.inum;
        if (lf.data.meta.nlinks !== 1n) lf.data.meta.nlinks += 1n;
      }
    }
    act(`${p}: reattached ${plan.reattach.length} orphan${plan.reattach.length === 1 ? '' : 's'} in /${lfName}`);
  }
  for (const r of plan.nlinks) {
    const n = getNode(pfs, r.inum);
    touch(pfs, n, now);
    n.data.meta.nlinks = r.nlinks;
  }
  if (plan.nlinks.length) act(`${p}: set the link count of ${plan.nlinks.length} inode${plan.nlinks.length === 1 ? '' : 's'}`);
  for (const r of plan.iparent) {
    const n = getNode(pfs, r.inum);
    touch(pfs, n, now);
    n.data.meta.iparent = r.iparent;
  }
  if (plan.iparent.length) act(`${p}: corrected the parent of ${plan.iparent.length} director${plan.iparent.length === 1 ? 'y' : 'ies'}`);
  if (plan.pfsInumAtLeast !== undefined) {
    const gap = plan.pfsInumAtLeast - pfs.inumAllocator;
    if (gap < 10_000_000n) {
      while (pfs.inumAllocator <= plan.pfsInumAtLeast) pfs.allocInum();
      touch(pfs, pfs.root, now);
      act(`${p}: moved the inode allocator past 0x${plan.pfsInumAtLeast.toString(16)}`);
    } else {
      act(`${p}: cannot move the inode allocator past 0x${plan.pfsInumAtLeast.toString(16)} (too far)`);
    }
  }
}
