// A mounted HAMMER2 filesystem: the device, its PFSs, and the flush that
// commits every pending change as one copy-on-write transaction:
//   1. new data, directory, inode and index blocks of every dirty PFS
//   2. the super-root pointing at the new PFS roots
//   3. the freemap recording every block allocated
//   4. fsync, then the volume header in the next slot of the rotation, fsync.
// Until step 4 completes the previous header still describes an intact tree,
// so a crash at any moment leaves the last completed flush.
import {
  applyUpdates,
  BlockWriter,
  bulkfree,
  BulkfreeResult,
  FreemapAllocator,
  FsError,
  Hammer2Device,
  LeafUpdate,
  MediaError,
  OpenOptions,
  padTable,
  rollupStats,
  settleSeals,
  TreeContext,
} from '../engine';
import { Allocator } from '../engine/writer';
import { CommitInFlight, DeviceError, syncTogether, VolumeSet } from '../store';
import {
  Blockref,
  BrefType,
  decodeInode,
  encodeInode,
  encodeVolumeHeader,
  IND_BYTES_MIN,
  IND_BYTES_NOM,
  inodeBlockset,
  DIRHASH_LOMASK,
  dirhash,
  INODE_VERSION_ONE,
  NAME_MAX,
  ObjType,
  OPFLAG_PFSROOT,
  PfsType,
  PFSSUBTYPE_SNAPSHOT,
  uuidRandom,
  BREF_FLAG_PFSROOT,
  CheckMethod,
  CompMethod,
  InodeData,
  SET_COUNT,
  setInodeBlockset,
  ZONE_BYTES,
  ZONE_SEG,
  VOLUME_ALIGN,
} from '../media';
import { flushPfs, PfsCommit, writeInode } from './flush';
import { cloneInode, Pfs } from './pfs';

export interface GrowResult {
  oldSize: number;
  size: number;
  /** False when the device had no room past the current end. */
  modified: boolean;
  /** Bytes that became free. */
  gained: number;
}

export interface FlushStats {
  tid: bigint;
  blocks: number;
  bytes: number;
  ms: number;
}

export interface FilesystemOptions extends OpenOptions {
  /** Builds the allocator for a writable mount (the freemap). */
  allocator?: (dev: Hammer2Device) => Allocator & FreemapCommit;
}

/** A commit whose blocks are written but not synced (see Hammer2Fs.prepareCommit). */
export interface PreparedCommit {
  tid: bigint;
  sroot: Blockref[];
  fm: { freemap: Blockref[]; free: bigint };
  commits: PfsCommit[];
  /** The new root of each PFS the commit changes, by label (not yet under a header). */
  roots: Map<string, { bref: Blockref; inode: InodeData }>;
  t0: number;
  b0: number;
  y0: number;
}

/**
 * Something that commits along with this image (the copies of its PFSs):
 * told when this image's blocks are written, synced together with them,
 * and committed after this image's header is durable.
 */
export interface CommitParticipant {
  /** This image's blocks for `tid` are written, not synced: write yours; the volume sets to sync along. */
  prepare(tid: bigint, roots: Map<string, { bref: Blockref; inode: InodeData }>): VolumeSet[];
  /** A set returned by prepare failed to sync. */
  syncFailed(set: VolumeSet, e: Error): void;
  /** This image's header for `tid` is durable: commit yours. */
  commit(tid: bigint): void;
  /** This image's commit failed: drop what was prepared. */
  abort(): void;
}

/** Device trouble as the caller's errno: a host that ran out of space says ENOSPC; the rest is EIO. */
function asFsError(e: unknown): Error {
  if (e instanceof FsError || e instanceof MediaError) return e;
  const code = e instanceof DeviceError && /^E[A-Z]+$/.test(e.code) ? e.code : 'EIO';
  return new FsError(code, (e as Error).message);
}

/** What the freemap must do at each commit. */
export interface FreemapCommit {
  /** Write the freemap state for transaction `tid`; returns the new freemap blockset and free bytes. */
  commit(tid: bigint): { freemap: Blockref[]; free: bigint };
  /** Forget uncommitted allocations (after a failed flush). */
  rollback(): void;
  /** Whether freemap changes await a commit. */
  readonly dirty: boolean;
}

/** What pfs-create may set; the rest is the reference's defaults. */
export interface PfsCreateOptions {
  /** PfsType; MASTER by default. */
  type?: number;
  subtype?: number;
  /** Cluster id (16 bytes, media order); a new one by default. */
  clid?: Buffer;
  /** Private id; a new one by default. */
  fsid?: Buffer;
}

/** Why a PFS label cannot be used, or null. */
export function badPfsLabel(label: string): string | null {
  const b = Buffer.from(label, 'utf8');
  if (b.length === 0) return 'a PFS label cannot be empty';
  if (b.length > NAME_MAX) return `PFS label is ${b.length} bytes long, the format allows ${NAME_MAX}`;
  // '@' separates the label in IMAGE@LABEL; '/' and NUL cannot be in a name.
  if (/[\/\0@]/.test(label)) return `PFS label "${label}" contains '/', '@' or NUL`;
  return null;
}

const nowUs = () => BigInt(Date.now()) * 1000n;

export class Hammer2Fs {
  private pfsByName = new Map<string, Pfs>();
  /** Super-root entries the next commit adds (a new PFS inode) or removes (null), by key. */
  private staged = new Map<bigint, InodeData | null>();
  /** Volume header fields changed outside any tree (growfs): the next flush must commit. */
  private headerDirty = false;
  private writer: BlockWriter | null = null;
  private allocator: (Allocator & FreemapCommit) | null = null;
  /** Set when writing the volume header itself failed: the mount refuses further writes. */
  failed: Error | null = null;
  lastFlush: FlushStats | null = null;
  onDirty: () => void = () => {};
  /** Called after every successful commit (caches above may refresh what a commit changes). */
  readonly commitListeners = new Set<(tid: bigint) => void>();
  /** PFS roots of committed states being read by someone else (mirror-read): bulkfree keeps their blocks. */
  readonly pins = new Map<string, Blockref>();
  /** Commit along with this image's commits (copies). */
  readonly participants = new Set<CommitParticipant>();

  /**
   * Highest transaction id seen on this image (header and PFS roots). Each
   * commit uses a larger one: a PFS's modify_tid must only grow, even where
   * another implementation advanced it past the volume's mirror_tid.
   */
  private maxTid = 0n;
  /** The next commit's transaction id is at least this (copies follow their master's ids). */
  tidFloor = 0n;
  /** Built into the next commit by commitPfsRoot(). */
  private extraRoots: ((w: BlockWriter) => { label: string; key: bigint; bref: Blockref; inode: InodeData })[] = [];

  private constructor(
    readonly dev: Hammer2Device,
    readonly writable: boolean,
  ) {
    const h = dev.header;
    let m = h.mirrorTid > h.freemapTid ? h.mirrorTid : h.freemapTid;
    try {
      for (const p of dev.listPfs()) {
        if (p.bref.modifyTid > m) m = p.bref.modifyTid;
        if (p.bref.mirrorTid > m) m = p.bref.mirrorTid;
      }
    } catch {
      // A damaged super-root: mounting reports it; the header's tid still bounds ours.
    }
    this.maxTid = m;
  }

  /** Keep the bytes of each commit's blocks until its commit listeners have run (copies read them there). */
  set keepCommitBlocks(on: boolean) {
    if (this.writer) this.writer.recent = on ? (this.writer.recent ?? new Map()) : null;
  }

  /** A block of the commit being reported to the listeners, if kept. */
  commitBlock(dataOff: bigint): Uint8Array | undefined {
    return this.writer?.recent?.get(dataOff);
  }

  /** Forget every cached block, so that the next reads see the media as it is (before a repair). */
  dropCaches(): void {
    this.dev.forgetCached();
    this.dev.vols.bufCache.clear();
  }

  /** The transaction id the next commit will use. */
  get nextTid(): bigint {
    let t = this.dev.header.mirrorTid > this.maxTid ? this.dev.header.mirrorTid : this.maxTid;
    t += 1n;
    return t > this.tidFloor ? t : this.tidFloor;
  }

  static async open(spec: string, opts: FilesystemOptions = {}): Promise<Hammer2Fs> {
    const dev = await Hammer2Device.open(spec, opts);
    const fs = new Hammer2Fs(dev, !!opts.writable);
    if (opts.writable) {
      fs.allocator = opts.allocator ? opts.allocator(dev) : new FreemapAllocator(dev.vols, dev.reader, dev.header);
      fs.writer = new BlockWriter(dev.vols, dev.reader, fs.allocator);
    }
    return fs;
  }

  /** The PFS with this label (one instance per label). */
  pfs(label: string): Pfs | undefined {
    let p = this.pfsByName.get(label);
    if (p) return p;
    const entry = this.dev.findPfs(label);
    if (!entry) return undefined;
    p = new Pfs(this.dev.reader, entry, this.writable);
    p.onDirty = () => this.onDirty();
    this.pfsByName.set(label, p);
    return p;
  }

  get dirty(): boolean {
    if (this.staged.size || this.headerDirty || this.extraRoots.length) return true;
    for (const p of this.pfsByName.values()) if (p.dirty) return true;
    return !!this.allocator?.dirty;
  }

  /** Whether a PFS of this image is in emergency mode. */
  get emergency(): boolean {
    for (const p of this.pfsByName.values()) if (p.emergency) return true;
    return false;
  }

  get pendingBytes(): number {
    let n = 0;
    for (const p of this.pfsByName.values()) n += p.pendingBytes;
    return n;
  }

  /** Free bytes on media (committed state plus allocations made for the flush in progress). */
  freeBytes(): number {
    return this.allocator ? this.allocator.freeBytes() : Number(this.dev.header.allocatorFree);
  }

  /** Free bytes as a user should see them: what pending data will take is already gone. */
  availableBytes(): number {
    return Math.max(0, this.freeBytes() - this.pendingBytes);
  }

  /** Space kept back so that deletions (which write metadata) always succeed. */
  get reserveBytes(): number {
    return Math.max(4 * 1024 * 1024, Math.floor(Number(this.dev.header.allocatorSize) / 100));
  }

  /** Upper bound of media a flush needs for the pending state plus `extra` more bytes of data. */
  private needed(extra: number): number {
    let nodes = 0;
    for (const p of this.pfsByName.values()) nodes += p.live.size + 1;
    // Data (never larger than its logical blocks), one 16 KiB indirect per 8 MiB,
    // and per changed inode its own block plus a path of indirects.
    const data = this.pendingBytes + extra;
    return data + Math.ceil(data / (8 << 20)) * 16384 + nodes * 8192 + 256 * 1024;
  }

  /**
   * Make sure `extra` more bytes of data (or `meta` for metadata-only
   * changes) can be committed. Flushes and reclaims space when short;
   * ENOSPC when even that is not enough. Deletions pass `meta` with a
   * smaller reserve so that freeing space is always possible.
   */
  ensureSpace(extra: number, opts: { deleting?: boolean } = {}): void {
    if (!this.writable || !this.allocator) return;
    // Emergency mode gives removals the space otherwise held back for them.
    const reserve = opts.deleting ? (this.emergency ? 0 : this.reserveBytes / 4) : this.reserveBytes;
    const ok = () => this.freeBytes() - this.needed(extra) >= reserve;
    if (ok()) return;
    if (this.pendingBytes > 0) this.flush();
    if (ok()) return;
    this.bulkfree();
    if (ok()) return;
    // Deleted data may still be held by older headers' trees.
    this.retireOlderHeaders();
    this.bulkfree();
    if (ok()) return;
    throw new FsError('ENOSPC', 'no space left on the volume');
  }

  /**
   * Reclaim space by itself: when free space is under 10 % and a meaningful
   * amount has been written since the last reclaim, or when deletions since
   * then add up to 5 % of the volume (so df shows them) and the older
   * headers no longer hold the deleted trees.
   */
  maybeReclaim(): BulkfreeResult | null {
    if (!this.writable || !this.allocator) return null;
    const size = Number(this.dev.header.allocatorSize);
    const fa = this.allocator as FreemapAllocator;
    let released = 0;
    for (const p of this.pfsByName.values()) released += p.releasedBytes;
    const low = this.freeBytes() <= size / 10 && fa.bytesAllocated - this.allocatedAtReclaim >= size / 50;
    if (released - this.releasedAtReclaim >= Math.max(size / 20, 64 << 20) && this.releaseTid === 0n) {
      this.releaseTid = this.dev.header.mirrorTid;
    }
    const aged = this.releaseTid !== 0n && this.dev.header.mirrorTid >= this.releaseTid + BigInt(this.headerSlots());
    if (!low && !aged) return null;
    const r = this.bulkfree();
    this.allocatedAtReclaim = fa.bytesAllocated;
    this.releasedAtReclaim = released;
    this.releaseTid = 0n;
    return r;
  }
  private releasedAtReclaim = 0;

  /**
   * Called when the mount is idle: if deletions wait for older headers to
   * age out, commit an empty transaction (the same tree, a newer tid, the
   * next header slot) so that they do, and reclaim.
   */
  idleTick(): BulkfreeResult | null {
    if (!this.writable || this.failed || this.dirty) return null;
    this.settle();
    const r = this.maybeReclaim();
    if (r || this.releaseTid === 0n) return r;
    const hdr = this.dev.header;
    const saved = { mirrorTid: hdr.mirrorTid, freemapTid: hdr.freemapTid };
    try {
      hdr.mirrorTid += 1n;
      hdr.freemapTid = hdr.mirrorTid;
      this.writeHeader();
      this.dev.vols.sync();
    } catch (e) {
      Object.assign(hdr, saved);
      throw e;
    }
    return null;
  }
  /** Commit after which enough deletions piled up; 0 when none pending. */
  private releaseTid = 0n;

  /** Volume header slots in use: older commits stay reachable from the others. */
  private headerSlots(): number {
    const root = this.dev.vols.volumes[0];
    let slots = 0;
    while (slots < 4 && slots * ZONE_BYTES + ZONE_SEG <= root.size) slots++;
    return Math.max(1, slots);
  }

  /**
   * Write the header in force into every other slot, so no older commit
   * keeps blocks alive: the last resort before ENOSPC (it gives up the
   * fallback to older commits).
   */
  private retireOlderHeaders(): void {
    const n = this.headerSlots();
    if (n < 2) return;
    this.settle();
    const raw = encodeVolumeHeader(this.dev.header);
    this.dev.vols.sync();
    for (let z = 0; z < n; z++) if (z !== this.dev.vols.headerZone) this.dev.vols.writeHeader(0, z, raw);
    this.dev.vols.sync();
  }

  private allocatedAtReclaim = 0;

  /**
   * Commit everything pending. No-op when clean. If anything fails before
   * the volume header is written, media still holds the previous commit
   * and memory still holds every pending change: the error goes to the
   * caller and a later flush tries again.
   */
  flush(): FlushStats | null {
    const p = this.prepareCommit();
    return p ? this.finishCommit(p) : null;
  }

  /**
   * Commit everything pending without waiting for the disk, for commits
   * nobody waits on (the dirty limit, the held-inode limit, the timer):
   * the blocks, their sync, the volume header and its sync are written in
   * that order on the shim's I/O thread while requests go on, and memory
   * holds the committed state at once. Where that cannot be (copies commit
   * along, no I/O thread, the crash tests' header fault) it is flush().
   * Everything that commits, reclaims or writes a header settles it first.
   */
  flushBehind(): void {
    this.settle();
    if (this.participants.size) {
      this.flush();
      return;
    }
    const vs = this.dev.vols;
    const hdr = this.dev.header;
    const saved = { sroot: hdr.sroot, freemap: hdr.freemap, mirrorTid: hdr.mirrorTid, freemapTid: hdr.freemapTid, allocatorFree: hdr.allocatorFree };
    // The commit's blocks stay queued for the thread (memory: the pending blocks it holds anyway).
    const limit = vs.queueLimit;
    vs.queueLimit = Infinity;
    vs.recordWrites(true);
    let p: PreparedCommit | null;
    let io: CommitInFlight | null;
    const zone = (vs.headerZone + 1) % this.headerSlots();
    try {
      p = this.prepareCommit({ keepQueued: true });
      if (!p) return;
      this.setHeader(p);
      try {
        io = vs.commitBehind(zone, encodeVolumeHeader(hdr));
      } catch (e) {
        Object.assign(hdr, saved);
        this.abortCommit(p);
        throw asFsError(e);
      }
    } finally {
      vs.queueLimit = limit;
      vs.recordWrites(false);
    }
    if (!io) {
      Object.assign(hdr, saved);
      this.finishCommit(p);
      return;
    }
    vs.headerZone = zone;
    this.behind = { io, tid: p.tid };
    this.applyCommit(p);
    settleSeals();
  }

  /** The commit flushBehind started, until settle() has seen it durable. */
  private behind: { io: CommitInFlight; tid: bigint } | null = null;

  /**
   * Wait until the commit flushBehind started is on media. If its writes
   * failed they are done again here; if that fails too, the error is
   * thrown and the commit is kept (reads still see it; no later commit can
   * start), to be tried again by the next call.
   */
  settle(): void {
    const b = this.behind;
    if (!b) return;
    try {
      b.io.finish();
    } catch (e) {
      throw asFsError(e);
    }
    this.behind = null;
    this.makeRoom();
    for (const l of this.commitListeners) l(b.tid);
  }

  /**
   * Let the metadata cache give up room to what is held for commits: file
   * data waiting for one (counted as the dirty limit counts it, 64 KiB a
   * block) and every block of the one in flight. Cheap: called after every
   * write.
   */
  makeRoom(): void {
    this.dev.reader.makeRoom(this.pendingBytes + (this.behind?.io.bytes ?? 0));
  }

  /**
   * settle() if the thread has written the commit in flight (cheap: call
   * it often). One whose writes failed is left to the next commit, which
   * retries it and reports the error; other changes go on in memory.
   */
  pollBehind(): void {
    if (this.behind?.io.state() === 'ok') this.settle();
  }

  /**
   * First half of a commit: write every new block (data, trees, super-root,
   * freemap), nothing synced, no header. Null when there is nothing to
   * commit. On failure everything is as before and the error is thrown.
   */
  prepareCommit(o: { keepQueued?: boolean } = {}): PreparedCommit | null {
    if (!this.writable || !this.writer || !this.allocator) return null;
    if (this.failed) throw new FsError('EIO', `the volume header could not be written: ${this.failed.message}`);
    this.settle();
    if (!this.dirty) return null;
    const t0 = Date.now();
    const w = this.writer;
    const hdr = this.dev.header;
    const tid = this.nextTid;
    w.tid = tid;
    const b0 = w.blocksWritten;
    const y0 = w.bytesWritten;
    const commits: PfsCommit[] = [];
    const roots = new Map<string, { bref: Blockref; inode: InodeData }>();
    w.recent?.clear();
    try {
      const srootUpdates: LeafUpdate[] = [];
      for (const p of this.pfsByName.values()) {
        const c = flushPfs(p, w);
        if (!c) continue;
        commits.push(c);
        srootUpdates.push({ key: c.bref.key, bref: c.bref });
        roots.set(p.name, { bref: c.bref, inode: p.root.data });
      }
      for (const build of this.extraRoots) {
        const r = build(w);
        srootUpdates.push({ key: r.key, bref: r.bref });
        roots.set(r.label, { bref: r.bref, inode: r.inode });
      }
      for (const [key, ip] of this.staged) {
        srootUpdates.push({ key, bref: ip ? writeInode(w, ip, key, inodeBlockset(ip), BREF_FLAG_PFSROOT) : null });
      }
      srootUpdates.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
      const sroot = srootUpdates.length ? [this.writeSuperRoot(w, srootUpdates), ...hdr.sroot.slice(1)] : hdr.sroot;
      const fm = this.allocator.commit(tid);
      if (!o.keepQueued) this.dev.vols.flushWrites();
      return { tid, sroot, fm, commits, roots, t0, b0, y0 };
    } catch (e) {
      this.dev.vols.discardWrites();
      this.dev.forgetCached(); // it may hold blocks of this commit
      this.allocator.rollback();
      throw asFsError(e);
    }
  }

  /** Drop a prepared commit (its blocks stay unreferenced; nothing points at them). */
  abortCommit(_p: PreparedCommit): void {
    this.dev.vols.discardWrites();
    this.dev.forgetCached();
    this.allocator?.rollback();
    this.writer?.recent?.clear();
  }

  /**
   * Second half: sync the blocks, write the volume header into the next
   * slot, sync again, then make memory match. Commit participants (copies)
   * write their own blocks after this image's are written and sync them
   * together with this image's; they commit their headers once this one is
   * durable, so no copy is ever ahead of the primary while the mount runs.
   * `dataSynced`: the blocks were already synced by the caller.
   */
  finishCommit(p: PreparedCommit, o: { dataSynced?: boolean } = {}): FlushStats {
    const w = this.writer!;
    const hdr = this.dev.header;
    const saved = { sroot: hdr.sroot, freemap: hdr.freemap, mirrorTid: hdr.mirrorTid, freemapTid: hdr.freemapTid, allocatorFree: hdr.allocatorFree };
    const { tid } = p;
    const joined: CommitParticipant[] = [];
    let headerStarted = false;
    try {
      if (!o.dataSynced) {
        // Copies write their blocks now, and every image's blocks are synced at once.
        const sets: VolumeSet[] = [this.dev.vols];
        const owners: CommitParticipant[] = [];
        for (const part of this.participants) {
          for (const set of part.prepare(tid, p.roots)) {
            sets.push(set);
            owners.push(part);
          }
          joined.push(part);
        }
        const res = syncTogether(sets);
        if (res[0]) throw res[0];
        for (let i = 1; i < sets.length; i++) if (res[i]) owners[i - 1].syncFailed(sets[i], res[i]!);
      }
      this.setHeader(p);
      headerStarted = true;
      this.writeHeader();
      this.dev.vols.sync();
    } catch (e) {
      Object.assign(hdr, saved);
      this.dev.vols.discardWrites();
      this.dev.forgetCached();
      this.allocator!.rollback();
      for (const part of joined) part.abort();
      // A header write that failed half way may have destroyed that slot; the
      // others still hold older commits, but this mount must not go on.
      if (headerStarted) this.failed = e as Error;
      throw asFsError(e);
    }
    this.applyCommit(p);
    try {
      for (const part of joined) part.commit(tid);
      for (const l of this.commitListeners) l(tid);
    } finally {
      w.recent?.clear();
      settleSeals();
    }
    return this.lastFlush!;
  }

  /** The volume header fields a prepared commit sets. */
  private setHeader(p: PreparedCommit): void {
    const hdr = this.dev.header;
    hdr.sroot = p.sroot;
    hdr.freemap = p.fm.freemap;
    hdr.mirrorTid = p.tid;
    hdr.freemapTid = p.tid;
    hdr.allocatorFree = p.fm.free;
  }

  /** Memory takes the state a commit wrote: pending becomes committed. */
  private applyCommit(p: PreparedCommit): void {
    const w = this.writer!;
    for (const c of p.commits) c.apply();
    this.maxTid = p.tid;
    this.staged.clear();
    this.headerDirty = false;
    this.lastFlush = { tid: p.tid, blocks: w.blocksWritten - p.b0, bytes: w.bytesWritten - p.y0, ms: Date.now() - p.t0 };
    this.makeRoom();
  }

  // ------------------------------------------------------------ PFS management
  // Each change is its own transaction: it commits at once, together with
  // whatever was pending, so a PFS appears or goes in one volume header.

  /** Stage super-root changes and commit them; on failure nothing of them remains. */
  private commitStaged(changes: [bigint, InodeData | null][]): void {
    if (!this.writable) throw new FsError('EROFS');
    for (const [k, v] of changes) this.staged.set(k, v);
    try {
      this.flush();
    } catch (e) {
      for (const [k] of changes) this.staged.delete(k);
      throw e;
    }
  }

  /** A free super-root key for `label`: its hash, or the next unused one in its collision range. */
  private pfsKey(label: string): bigint {
    const base = dirhash(Buffer.from(label, 'utf8'));
    const used = new Set(this.dev.listPfs().map((p) => p.bref.key));
    for (let k = base; k <= (base | DIRHASH_LOMASK); k++) if (!used.has(k) && !this.staged.has(k)) return k;
    throw new FsError('ENOSPC', `no free key for PFS "${label}" (too many hash collisions)`);
  }

  private checkNewLabel(label: string): void {
    const why = badPfsLabel(label);
    if (why) throw new FsError('EINVAL', why);
    if (this.dev.findPfs(label)) throw new FsError('EEXIST', `a PFS labelled "${label}" already exists`);
  }

  /** A PFS root inode as the reference's pfs-create makes it. */
  private newPfsInode(label: string, key: bigint, o: PfsCreateOptions): InodeData {
    const ip = decodeInode(Buffer.alloc(1024));
    const m = ip.meta;
    const now = nowUs();
    m.version = INODE_VERSION_ONE;
    m.type = ObjType.DIRECTORY;
    m.mode = 0o755;
    m.inum = 1n;
    m.iparent = 1n;
    m.nlinks = 1n;
    m.ctime = m.mtime = m.atime = m.btime = now;
    // The boot loader cannot decompress: a PFS named boot gets zero detection only.
    m.compAlgo = label === 'boot' || label === 'BOOT' ? CompMethod.AUTOZERO : CompMethod.LZ4;
    m.checkAlgo = CheckMethod.XXHASH64;
    m.pfsType = o.type ?? PfsType.MASTER;
    m.pfsSubtype = o.subtype ?? 0;
    m.pfsClid = o.clid ? Buffer.from(o.clid) : uuidRandom();
    m.pfsFsid = o.fsid ? Buffer.from(o.fsid) : uuidRandom();
    m.opFlags = OPFLAG_PFSROOT;
    ip.filename = Buffer.from(label, 'utf8');
    m.nameLen = ip.filename.length;
    m.nameKey = key;
    return ip;
  }

  /** pfs-create: a new, empty PFS. */
  createPfs(label: string, o: PfsCreateOptions = {}): void {
    this.checkNewLabel(label);
    const key = this.pfsKey(label);
    this.commitStaged([[key, this.newPfsInode(label, key, o)]]);
  }

  /**
   * snapshot: a new PFS whose root shares the source's committed tree.
   * Constant time: it commits what is pending, then writes one inode. The
   * snapshot root keeps the source root's attributes and methods (so the
   * snapshot reads exactly as the source did), with a new cluster and
   * private id, as the reference gives a snapshot.
   */
  snapshotPfs(source: Pfs, label: string): void {
    this.checkNewLabel(label);
    this.flush();
    const key = this.pfsKey(label);
    const tid = this.dev.header.mirrorTid + 1n;
    const ip = this.snapshotInode(source.root.data, label, key, source.inumAllocator, tid);
    const saved = source.root.data.meta.pfsLsnapTid;
    source.markSnapshot(tid);
    try {
      this.commitStaged([[key, ip]]);
    } catch (e) {
      source.root.data.meta.pfsLsnapTid = saved;
      throw e;
    }
  }

  /** The root inode of snapshot `label` of PFS root `src` (its attributes, methods and tree; a new cluster and private id). */
  private snapshotInode(src: InodeData, label: string, key: bigint, inumAllocator: bigint, tid: bigint): InodeData {
    const ip = this.newPfsInode(label, key, {});
    const keep = ip.meta;
    ip.meta = {
      ...src.meta,
      uid: Buffer.from(src.meta.uid),
      gid: Buffer.from(src.meta.gid),
      pfsType: PfsType.MASTER,
      pfsSubtype: PFSSUBTYPE_SNAPSHOT,
      pfsClid: keep.pfsClid,
      pfsFsid: keep.pfsFsid,
      pfsInum: inumAllocator,
      pfsLsnapTid: tid,
      opFlags: src.meta.opFlags | OPFLAG_PFSROOT,
      nameLen: keep.nameLen,
      nameKey: key,
      iparent: 1n,
    };
    setInodeBlockset(ip, inodeBlockset(src));
    return ip;
  }

  /**
   * A snapshot named `label` of a committed PFS root given directly (the
   * state a mirroring pass sent, pinned so its blocks are still there),
   * replacing an earlier snapshot of that name in the same transaction, so
   * there is always one. Its PFS root bref records `tid`, the transaction
   * the snapshot holds (pfs-list shows it). A PFS of that name that is not
   * a snapshot is refused.
   */
  keepSnapshot(label: string, src: InodeData, tid: bigint): void {
    if (!this.writable) throw new FsError('EROFS');
    const why = badPfsLabel(label);
    if (why) throw new FsError('EINVAL', why);
    const old = this.dev.findPfs(label);
    if (old && old.inode.meta.pfsSubtype !== PFSSUBTYPE_SNAPSHOT) throw new FsError('EEXIST', `a PFS labelled "${label}" exists and is not a snapshot`);
    // The caller keeps it from replacing a mounted snapshot; one merely loaded is re-read on demand.
    if (this.pfsByName.get(label)?.dirty) throw new FsError('EBUSY', `snapshot "${label}" has changes of its own pending`);
    this.flush();
    this.pfsByName.delete(label);
    const key = old ? old.bref.key : this.pfsKey(label);
    const ip = this.snapshotInode(src, label, key, src.meta.pfsInum, tid);
    this.extraRoots.push((w) => {
      const b = writeInode(w, ip, key, inodeBlockset(ip), BREF_FLAG_PFSROOT);
      b.modifyTid = tid;
      return { label, key, bref: b, inode: ip };
    });
    try {
      this.flush();
    } finally {
      this.extraRoots = [];
    }
  }

  /**
   * pfs-delete: remove a PFS from the super-root. What nothing else
   * references (snapshots share blocks) returns to the freemap at the next
   * bulkfree. The caller refuses a PFS that is mounted.
   */
  deletePfs(label: string): void {
    if (!this.writable) throw new FsError('EROFS');
    const all = this.dev.listPfs();
    const entry = all.find((p) => p.name === label);
    if (!entry) throw new FsError('ENOENT', `no PFS labelled "${label}"`);
    if (entry.inode.meta.pfsType === PfsType.SUPROOT) throw new FsError('EINVAL', 'the super-root cannot be deleted');
    if (label === 'LOCAL') throw new FsError('EPERM', 'the LOCAL PFS belongs to the device and cannot be deleted');
    const others = all.filter((p) => p.name !== label && p.name !== 'LOCAL');
    if (others.length === 0) throw new FsError('EPERM', `"${label}" is the last PFS of the image; deleting it would leave nothing to mount`);
    this.flush();
    const held = this.pfsByName.get(label);
    this.pfsByName.delete(label);
    try {
      this.commitStaged([[entry.bref.key, null]]);
    } catch (e) {
      if (held) this.pfsByName.set(label, held);
      throw e;
    }
  }

  /**
   * Commit a PFS root built outside this image's own PFS objects (the
   * synchronizer builds a copy's tree with this image's writer): `build`
   * runs inside the commit, at a transaction id of at least `minTid`, and
   * returns the root inode to hang under `label`'s super-root key, and
   * optionally the modify_tid its bref records (the tid the copy is
   * synchronized to; the commit's by default) and its update_tid (the last
   * tid shared with another node; kept by default). One transaction, with
   * whatever else was pending.
   */
  commitPfsRoot(
    label: string,
    build: (w: BlockWriter) => { root: InodeData; modifyTid?: bigint; updateTid?: bigint },
    opts: { minTid?: bigint; keepPfs?: boolean } = {},
  ): FlushStats | null {
    const p = this.preparePfsRoot(label, build, opts);
    const r = this.finishCommit(p);
    this.reloadHeld(label, opts);
    return r;
  }

  /**
   * commitPfsRoot's first half (blocks written, nothing synced): the caller
   * syncs them along with other images and then calls finishCommit(p,
   * {dataSynced: true}), or abortCommit(p).
   */
  preparePfsRoot(
    label: string,
    build: (w: BlockWriter) => { root: InodeData; modifyTid?: bigint; updateTid?: bigint },
    opts: { minTid?: bigint; keepPfs?: boolean } = {},
  ): PreparedCommit {
    if (!this.writable) throw new FsError('EROFS');
    const entry = this.dev.findPfs(label);
    if (!entry) throw new FsError('ENOENT', `no PFS labelled "${label}"`);
    const held = this.pfsByName.get(label);
    if (held?.dirty) throw new FsError('EBUSY', `PFS "${label}" has changes of its own pending`);
    // A PFS object in use (mounted) is kept and re-read after the commit; others are re-read on demand.
    if (!opts.keepPfs) this.pfsByName.delete(label);
    const floor = this.tidFloor;
    if (opts.minTid !== undefined && opts.minTid > floor) this.tidFloor = opts.minTid;
    this.extraRoots.push((w) => {
      const { root, modifyTid, updateTid } = build(w);
      const b = writeInode(w, root, entry.bref.key, inodeBlockset(root), entry.bref.flags | BREF_FLAG_PFSROOT);
      if (modifyTid !== undefined) b.modifyTid = modifyTid;
      // As a flush of the PFS would: a commit that reaches a copy is a shared one.
      b.updateTid = updateTid ?? (held?.replicated ? w.tid : entry.bref.updateTid);
      return { label, key: entry.bref.key, bref: b, inode: root };
    });
    try {
      return this.prepareCommit()!;
    } finally {
      this.extraRoots = [];
      this.tidFloor = floor;
    }
  }

  /** After commitPfsRoot with keepPfs: the PFS object in use takes the new committed root. */
  reloadHeld(label: string, opts: { keepPfs?: boolean } = {}): void {
    const held = this.pfsByName.get(label);
    if (held && opts.keepPfs) held.reload(this.dev.findPfs(label)!);
  }

  /**
   * pfs-upgrade / pfs-downgrade: make PFS `label` a MASTER or a SLAVE (or
   * another node type) as one transaction. What the PFS holds and the
   * transaction id it is synchronized to are unchanged.
   */
  setPfsType(label: string, type: number): void {
    if (!this.writable) throw new FsError('EROFS');
    const held = this.pfsByName.get(label);
    if (held?.dirty) this.flush();
    const e = this.dev.findPfs(label);
    if (!e) throw new FsError('ENOENT', `no PFS labelled "${label}"`);
    if (e.inode.meta.pfsType === PfsType.SUPROOT) throw new FsError('EINVAL', 'the super-root has no node type');
    this.commitPfsRoot(
      label,
      () => {
        const root = cloneInode(e.inode);
        root.meta.pfsType = type;
        return { root, modifyTid: e.bref.modifyTid, updateTid: e.bref.updateTid };
      },
      { keepPfs: true },
    );
  }

  /**
   * Return space no header references any more to the freemap, and commit.
   * Flushes first: bulkfree must not see uncommitted allocations.
   */
  bulkfree(progress?: (done: number, total: number) => void): BulkfreeResult {
    if (!this.writable || !this.allocator) throw new FsError('EROFS');
    this.flush();
    const r = bulkfree(this.dev.reader, this.allocator as FreemapAllocator, this.dev.header, progress, [...this.pins.values()]);
    this.flush();
    return r;
  }

  /**
   * Grow the filesystem into the end of its device (growfs): to `bytes`, or
   * to all the device holds; an image file is first extended (sparsely) to
   * `bytes`. The size is rounded down to the 8 MiB volume alignment. Commits
   * what is pending first, then the growth alone as one transaction: a
   * crash leaves either the old size or the new one, never a mix.
   */
  growfs(bytes?: number, progress: (step: string, done: number, total: number) => void = () => {}): GrowResult {
    if (!this.writable || !this.allocator) throw new FsError('EROFS');
    if (!(this.allocator instanceof FreemapAllocator)) throw new FsError('EOPNOTSUPP', 'growfs needs the freemap allocator');
    const vols = this.dev.vols;
    if (vols.volumes.length !== 1) throw new FsError('EOPNOTSUPP', 'growfs is not supported with several volumes (as in the reference)');
    const hdr = this.dev.header;
    const dev = vols.volumes[0].dev;
    const oldSize = Number(hdr.voluSize);
    if (bytes !== undefined && (!Number.isSafeInteger(bytes) || bytes <= 0)) throw new FsError('EINVAL', `bad size ${bytes}`);
    progress('commit pending changes', 0, 3);
    this.flush();
    try {
      if (bytes !== undefined && bytes > dev.size && !dev.isBlockDevice) dev.extend(bytes);
      dev.refreshSize();
    } catch (e) {
      throw e instanceof DeviceError ? new FsError(e.code, e.message) : e;
    }
    if (bytes !== undefined && bytes > dev.size) {
      throw new FsError('EINVAL', `size ${bytes} exceeds the device ${dev.path} (${dev.size} bytes)`);
    }
    const target = Math.floor((bytes ?? dev.size) / VOLUME_ALIGN) * VOLUME_ALIGN;
    if (target < oldSize) {
      throw new FsError('EINVAL', `would shrink the filesystem from ${oldSize} to ${target} bytes (HAMMER2 cannot shrink)`);
    }
    if (target === oldSize) return { oldSize, size: oldSize, modified: false, gained: 0 };
    const delta = BigInt(target - oldSize);
    const saved = { voluSize: hdr.voluSize, totalSize: hdr.totalSize, allocatorSize: hdr.allocatorSize };
    const fa = this.allocator;
    progress('clear new header slots', 1, 3);
    let gained = 0;
    try {
      vols.growVolume(target);
      hdr.voluSize = BigInt(target);
      if (hdr.totalSize) hdr.totalSize += delta;
      hdr.allocatorSize += delta;
      gained = fa.grow(target);
      this.headerDirty = true;
      progress('commit', 2, 3);
      this.flush();
    } catch (e) {
      Object.assign(hdr, saved);
      vols.setVolumeSize(oldSize);
      fa.rollback();
      fa.resize(oldSize);
      this.headerDirty = false;
      throw e instanceof DeviceError ? new FsError(e.code, e.message) : e;
    }
    progress('done', 3, 3);
    return { oldSize, size: target, modified: true, gained };
  }

  private writeSuperRoot(w: BlockWriter, updates: LeafUpdate[]): Blockref {
    const { bref, inode } = this.dev.superRoot();
    const data: InodeData = decodeInode(Buffer.from(inode.raw));
    const ctx: TreeContext = {
      reader: this.dev.reader,
      indirectBytes: (d) => (d === 0 ? IND_BYTES_MIN : IND_BYTES_NOM),
      writeIndirect: (key, keybits, table) => w.writeIndirect(key, keybits, table, data.meta.checkAlgo & 15),
    };
    const table = padTable(applyUpdates(ctx, inodeBlockset(inode), SET_COUNT, updates), SET_COUNT);
    setInodeBlockset(data, table);
    const raw = encodeInode(data);
    const nb = w.writeMeta(BrefType.INODE, bref.key, bref.keybits, raw, bref.methods >> 4, bref.methods & 15);
    nb.flags = bref.flags;
    rollupStats(nb, table);
    this.dev.rememberSuperRoot(nb, decodeInode(raw));
    return nb;
  }

  /** Write the header into the slot after the one it was read from (rotation over the zones that fit). */
  private writeHeader(): void {
    const vs = this.dev.vols;
    const hdr = this.dev.header;
    // Usable zones: j < 4 with j * 2 GiB + 4 MiB inside the volume (the reference's rule).
    const next = (vs.headerZone + 1) % this.headerSlots();
    vs.writeHeader(0, next, encodeVolumeHeader(hdr));
    vs.headerZone = next;
  }

  close(): void {
    try {
      this.settle();
    } catch {
      // Its error went to the final flush's caller already; what it could not write is lost.
    }
    this.dev.close();
  }
}
