// Copies: one PFS kept on several images (nodes of its cluster, all with
// the PFS's cluster id), each a complete HAMMER2 image of its own.
//
// The primary node is the image the daemon serves from. Its commits are
// applied to every in-sync copy at once, each through its own allocator,
// tree and volume header, by the synchronizer (src/sync): after the
// primary commits transaction T, a copy synchronized at S gets exactly the
// branches modified after S, so a commit costs a copy what it cost the
// primary. fsync returns once every in-sync copy has committed too.
//
// A copy whose write fails leaves the in-sync set at once (failed), and
// nothing is kept for it: when it returns (it reopens, or is re-added), the
// resynchronizer walks the primary's tree from the copy's last synchronized
// transaction, in budgeted steps between requests. Writes made meanwhile do
// not go to it; instead each pass starts from where the previous one began,
// and passes repeat until one completes in a single step, at which moment
// the copy is level and rejoins the in-sync set.
//
// Reads come from the primary. Where a block there fails its check or
// cannot be read, the same item is read through an in-sync copy's own tree
// (the caller sees no error) and the primary's damaged branch is repaired
// from that copy by a copy-on-write commit. Damaged copies are repaired the
// same way by the passes that reach them, and by `scrub`.
import * as fs from 'node:fs';
import { FreemapAllocator, FsError, MediaError, PfsEntry } from '../engine';
import { CommitParticipant, DirEntry, Hammer2Fs, Pfs, PfsRedundancy, PreparedCommit } from '../fs';
import { Blockref, InodeData, PfsType, pfsTypeName, uuidToString } from '../media';
import { Damage, emptyStats, PfsSyncResult, SourceError, syncedTid, SyncCursor, syncPfs, SyncStats, verifyPfs } from '../sync';
import { BlockReader, scanRange } from '../engine';
import { DeviceError, VolumeSet } from '../store';
import { inodeBlockset } from '../media';

export type CopyState = 'in-sync' | 'resyncing' | 'offline' | 'failed';

export interface CopyStatus {
  spec: string;
  primary: boolean;
  state: CopyState;
  /** The transaction id this node's copy of the PFS is synchronized to. */
  tid: string;
  healed: number;
  readErrors: number;
  writeErrors: number;
  resync: { blocksRead: number; blocksWritten: number; passes: number };
  error?: string;
}

/** What a scrub found and did on one node. */
export interface ScrubReport {
  spec: string;
  primary: boolean;
  /** Blocks read and verified. */
  blocks: number;
  damaged: number;
  /** Damaged items rewritten from another node. */
  repaired: number;
  error?: string;
}

export interface AddOptions {
  /** Adding at mount time, before anything is served: a primary behind the copy may be brought level from it. */
  atMount?: boolean;
  /** Where copies diverged: the spec whose state wins (the primary's spec, or this copy's). */
  master?: string | null;
}

export interface ClusterOptions {
  log: (msg: string) => void;
  /** Bytes a resynchronization step may write before it commits and yields. */
  stepBytes?: number;
  /** Upper bound of resynchronization writes, bytes per second (0: none). */
  rateBytes?: number;
  /** Seconds between attempts to reopen an offline or failed copy. */
  retrySec?: number;
  /** Each copy's metadata cache, as the primary's (`cache=`; default 64 MiB). */
  cacheBytes?: number;
}

/** One node of the cluster other than the primary. */
class CopyNode {
  state: CopyState = 'offline';
  fs: Hammer2Fs | null = null;
  /** The label of the cluster's PFS on this image (normally the primary's). */
  label = '';
  tid = 0n;
  error: string | null = null;
  healed = 0;
  readErrors = 0;
  writeErrors = 0;
  resync: SyncStats = emptyStats();
  passes = 0;
  /** The pass under way: where it resumes, the tid it is based on and the primary's tid when it began. */
  pass: { since: bigint; start: bigint; cursor: SyncCursor | null; steps: number } | null = null;
  retryAt = 0;
  /** A resync waits for the primary's damage to be repaired (until retryAt). */
  waiting = false;
  /** This copy's half of the primary commit under way. */
  prepared: { commit: PreparedCommit; tid: bigint } | null = null;
  /** A read-only view of the copy's committed PFS, rebuilt when its root changes. */
  private viewCache: { off: bigint; pfs: Pfs } | null = null;

  constructor(readonly spec: string) {}

  entry(): PfsEntry {
    const e = this.fs!.dev.findPfs(this.label);
    if (!e) throw new FsError('ENOENT', `${this.spec}: the PFS "${this.label}" is gone`);
    return e;
  }

  view(): Pfs {
    const e = this.entry();
    if (this.viewCache?.off !== e.bref.dataOff) this.viewCache = { off: e.bref.dataOff, pfs: new Pfs(this.fs!.dev.reader, e, false) };
    return this.viewCache.pfs;
  }

  close(): void {
    this.viewCache = null;
    try {
      this.fs?.close();
    } catch {
      // A vanished device: nothing left to release.
    }
    this.fs = null;
  }
}

/** A node's position in its PFS's history: its last transaction, and the last one it shared with another node. */
export interface NodeTids {
  /** Root bref modify_tid (0: an empty node, never synchronized). */
  tid: bigint;
  /** Root bref update_tid: the last commit made together with another node. */
  ver: bigint;
}

/**
 * How a copy stands to the primary. A node whose last commit is newer than
 * the last one it shared wrote alone since; the older of two nodes is an
 * ancestor of the newer only if it wrote nothing alone and the newer one
 * shared a commit at least as recent as the older one's state. Otherwise
 * both hold commits the other lacks: diverged. (Exact for two nodes; with
 * more, groups that split and each kept a copy are not told apart.)
 */
export function relation(primary: NodeTids, copy: NodeTids): 'same' | 'behind' | 'ahead' | 'diverged' {
  if (copy.tid === 0n) return 'behind';
  if (copy.tid === primary.tid) return copy.ver === copy.tid ? 'same' : 'diverged';
  const [older, newer] = copy.tid < primary.tid ? [copy, primary] : [primary, copy];
  const ancestor = older.tid === older.ver && newer.ver >= older.tid;
  if (!ancestor) return 'diverged';
  return copy.tid < primary.tid ? 'behind' : 'ahead';
}

/** (st_dev, st_ino) of a file, to notice one image named twice. */
function fileId(p: string): string {
  const st = fs.statSync(p);
  return `${st.dev}:${st.ino}`;
}

const errText = (e: unknown) => (e instanceof Error ? e.message : String(e));

export class PfsCluster implements PfsRedundancy {
  private copies: CopyNode[] = [];
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  /** Damaged items of the primary, by inode: data keys, or null for the whole inode. */
  private damage = new Map<bigint, Set<bigint> | null>();
  private repairQueued = false;
  /** Primary-side counters. */
  private healed = 0;
  private readErrors = 0;
  private readonly stepBytes: number;
  /** Joins every primary commit (see replication below). */
  private readonly participant: CommitParticipant = {
    prepare: (tid, roots) => this.prepareCopies(tid, roots),
    syncFailed: (set, e) => this.copySyncFailed(set, e),
    commit: () => this.commitCopies(),
    abort: () => this.abortCopies(),
  };

  constructor(
    readonly primary: Hammer2Fs,
    readonly pfs: Pfs,
    readonly primarySpec: string,
    private readonly o: ClusterOptions,
  ) {
    this.stepBytes = o.stepBytes ?? 8 << 20;
    pfs.redundancy = this;
    // A commit written behind (no copies then) must be on media before any copy can follow it.
    primary.settle();
    primary.participants.add(this.participant);
    primary.keepCommitBlocks = true;
  }

  get label(): string {
    return this.pfs.name;
  }

  private get clid(): Buffer {
    return this.pfs.root.data.meta.pfsClid;
  }

  /** The primary's committed tid for this PFS. */
  private primaryTid(): bigint {
    return this.primary.dev.findPfs(this.label)!.bref.modifyTid;
  }

  private log(msg: string): void {
    this.o.log(`${this.primarySpec}@${this.label}: ${msg}`);
  }

  private setState(c: CopyNode, s: CopyState, why?: string): void {
    if (c.state === s && !why) return;
    c.state = s;
    this.updateReplicated();
    this.log(`copy ${c.spec}: ${s}${why ? ` (${why})` : ''}`);
  }

  // ------------------------------------------------------------ membership

  /**
   * Add a copy. The image must be a HAMMER2 image that either holds a node
   * of this cluster (same cluster id) or no PFS of this label (one is made,
   * empty, and filled by resynchronization). A missing image is kept as
   * offline (the mount goes on degraded); anything else wrong is refused.
   */
  async add(spec: string, opts: AddOptions = {}): Promise<CopyStatus> {
    if (this.copies.some((c) => c.spec === spec)) throw new FsError('EEXIST', `${spec} is already a copy of ${this.label}`);
    const c = new CopyNode(spec);
    const first = spec.split(':')[0];
    if (!fs.existsSync(first)) {
      c.error = `${first}: no such file or device`;
      this.copies.push(c);
      this.log(`copy ${spec}: offline (${c.error}); the mount goes on without it`);
      this.schedule();
      return this.statusOf(c);
    }
    this.checkDistinct(spec);
    try {
      await this.open(c, opts);
    } catch (e) {
      // A device that fails to read is a copy that is down (the mount goes
      // on, retrying it); anything the user must fix refuses the copy.
      if (!(e instanceof FsError && e.errno === 'EIO')) throw e;
      c.error = e.message;
      c.fs = null;
      c.state = 'failed';
      c.readErrors++;
      c.retryAt = Date.now() + (this.o.retrySec ?? 10) * 1000;
      this.log(`copy ${spec}: failed (${c.error}); the mount goes on without it`);
    }
    this.copies.push(c);
    this.updateReplicated();
    this.schedule();
    return this.statusOf(c);
  }

  /** Refuse an image that is already the primary or a copy. */
  private checkDistinct(spec: string): void {
    const ids = new Set<string>();
    for (const v of this.primary.dev.vols.volumes) ids.add(fileId(v.dev.path));
    for (const c of this.copies) for (const p of c.spec.split(':')) if (fs.existsSync(p)) ids.add(fileId(p));
    for (const p of spec.split(':')) {
      if (ids.has(fileId(p))) throw new FsError('EINVAL', `${p} is already part of this cluster (the primary or a copy): one image cannot hold two copies`);
    }
  }

  /** Open a copy's image and find (or make) its node of the PFS. Throws on anything a user must fix. */
  private async open(c: CopyNode, o: AddOptions = {}): Promise<void> {
    let h: Hammer2Fs;
    try {
      h = await Hammer2Fs.open(c.spec, {
        writable: true,
        lock: true,
        cacheBytes: this.o.cacheBytes,
        allocator: (d) => new FreemapAllocator(d.vols, d.reader, d.header),
      });
    } catch (e) {
      // Device trouble (an I/O error) is the copy being down; the rest (not HAMMER2, in use) is the user's to fix.
      const down = e instanceof DeviceError && e.code !== 'EBUSY' && e.code !== 'ENOENT' && e.code !== 'EACCES';
      throw new FsError(down ? 'EIO' : 'EINVAL', `${c.spec}: cannot be used as a copy: ${errText(e)}`);
    }
    try {
      const clid = this.clid;
      let all: PfsEntry[];
      try {
        all = h.dev.listPfs();
      } catch (e) {
        throw new FsError('EIO', `${c.spec}: its PFS list cannot be read: ${errText(e)}`);
      }
      const same = all.find((p) => p.inode.meta.pfsClid.equals(clid));
      const byName = all.find((p) => p.name === this.label);
      if (same) {
        c.label = same.name;
      } else if (byName) {
        throw new FsError(
          'EINVAL',
          `${c.spec} has a PFS "${this.label}" of another cluster (${uuidToString(byName.inode.meta.pfsClid)}, this one is ${uuidToString(clid)}); ` +
            `a copy must hold a node of this cluster or no PFS of that name`,
        );
      } else {
        const need = Number(this.primary.dev.findPfs(this.label)!.bref.embed.readBigUInt64LE(0));
        if (need > h.freeBytes()) {
          throw new FsError('ENOSPC', `${c.spec} has ${h.freeBytes()} bytes free; the PFS "${this.label}" holds ${need}`);
        }
        h.createPfs(this.label, { clid, type: PfsType.MASTER });
        c.label = this.label;
        this.log(`copy ${c.spec}: made a node of the cluster (PFS "${this.label}", cluster id ${uuidToString(clid)})`);
      }
      const e = h.dev.findPfs(c.label)!;
      // A node made the reference way (pfs-create -u CLID) is a SLAVE: kept level like a MASTER.
      const type = e.inode.meta.pfsType;
      if (type !== PfsType.MASTER && type !== PfsType.SLAVE) {
        throw new FsError('EINVAL', `${c.spec}@${c.label} is a ${pfsTypeName(type)} node; a copy is a MASTER or SLAVE node of the cluster`);
      }
      c.fs = h;
      c.tid = syncedTid(e.bref, e.inode);
      c.error = null;
      c.pass = null;
      const p = this.primary.dev.findPfs(this.label)!;
      const ptids = { tid: p.bref.modifyTid, ver: p.bref.updateTid };
      const ctids = { tid: c.tid, ver: e.bref.updateTid };
      const rel = relation(ptids, ctids);
      if (rel === 'diverged') this.resolveDivergence(c, ptids, ctids, o);
      else if (rel === 'ahead') this.catchUpPrimary(c, o);
      else if (rel === 'same') this.setState(c, 'in-sync');
      else this.setState(c, 'resyncing', c.tid === 0n ? 'empty: a full copy follows' : `at transaction ${c.tid}, the primary is at ${this.primaryTid()}`);
    } catch (e) {
      c.fs = null;
      h.close();
      throw e;
    }
  }

  /**
   * The copy holds commits the primary lacks (the primary was away while
   * the copy was mounted alone): the newest node is the master, so the
   * primary is brought level from it before anything is served.
   */
  private catchUpPrimary(c: CopyNode, o: AddOptions): void {
    const ptid = this.primaryTid();
    if (!o.atMount || this.pfs.dirty) {
      throw new FsError(
        'EINVAL',
        `${c.spec} holds transaction ${c.tid}, newer than this mount's ${ptid}: it was written without this image. ` +
          `Unmount, then mount again naming it as a copy (the newest node wins at mount), or mount it as the primary`,
      );
    }
    const stats = this.pullFromCopy(c, ptid);
    this.log(`the primary was at transaction ${ptid}, copy ${c.spec} at ${c.tid}: brought the primary level from it (${stats.leavesCopied} leaves, ${stats.leavesDeleted} removals)`);
    this.setState(c, 'in-sync');
  }

  /**
   * Make the primary's PFS what copy `c` holds (from `since`: 0 compares
   * everything), as one commit. The copy first records its state as shared
   * (its update_tid), so that the two nodes agree afterwards; a crash in
   * between leaves the copy simply ahead, and the next mount pulls again.
   */
  private pullFromCopy(c: CopyNode, since: bigint): SyncStats {
    const d0 = c.entry();
    if (d0.bref.updateTid !== d0.bref.modifyTid) {
      c.fs!.commitPfsRoot(c.label, () => ({ root: d0.inode, modifyTid: d0.bref.modifyTid, updateTid: d0.bref.modifyTid }));
    }
    const src = c.entry();
    return this.intoPrimary(c, { since }, (r) => ({ root: r.root, modifyTid: src.bref.modifyTid, updateTid: src.bref.modifyTid }), src.bref.modifyTid);
  }

  /** One synchronizer pass from copy `c` into the primary, committed on the primary (its PFS object kept and reloaded). */
  private intoPrimary(
    c: CopyNode,
    o: { since: bigint; force?: Map<bigint, Set<bigint> | null> },
    finish: (r: PfsSyncResult, dst: PfsEntry) => { root: InodeData; modifyTid?: bigint; updateTid?: bigint },
    minTid?: bigint,
  ): SyncStats {
    const src = c.entry();
    const dst = this.primary.dev.findPfs(this.label)!;
    const stats = emptyStats();
    this.primary.commitPfsRoot(
      this.label,
      (w) => finish(syncPfs({ reader: c.fs!.dev.reader }, src.inode, { reader: this.primary.dev.reader, writer: w }, dst.inode, { ...o, stats }), dst),
      { minTid, keepPfs: true },
    );
    return stats;
  }

  /**
   * Both nodes wrote alone since they last shared a commit. Without a
   * choice the mount is refused; with one (master=SPEC), the loser's state
   * is kept as a snapshot PFS on its own image before it is overwritten.
   */
  private resolveDivergence(c: CopyNode, p: NodeTids, cp: NodeTids, o: AddOptions): void {
    const pspec = this.primarySpec;
    const what =
      `${pspec} and ${c.spec} have diverged: the primary is at transaction ${p.tid} (last shared ${p.ver}), ` +
      `the copy at ${cp.tid} (last shared ${cp.ver}); each holds commits the other lacks`;
    if (!o.master || (o.master !== pspec && o.master !== c.spec)) {
      throw new FsError('EINVAL', `${what}. Choose the one to keep with -o master=${pspec} or -o master=${c.spec} (the other's state is kept as a snapshot)`);
    }
    if (!o.atMount || this.pfs.dirty) throw new FsError('EINVAL', `${what}: resolve it at mount with -o master=`);
    if (o.master === pspec) {
      const snap = this.keepAsSnapshot(c.fs!, c.label, cp.tid);
      this.log(`${what}. Kept the primary's; the copy's state is kept as PFS "${snap}" on ${c.spec}`);
      // Its tree is no base for an incremental pass: compare everything.
      c.tid = 0n;
      this.setState(c, 'resyncing', 'diverged: a full comparison follows');
    } else {
      const snap = this.keepAsSnapshot(this.primary, this.label, p.tid);
      this.pullFromCopy(c, 0n);
      this.log(`${what}. Kept the copy's; the primary's state is kept as PFS "${snap}" on ${pspec}`);
      this.setState(c, 'in-sync');
    }
  }

  /** Snapshot PFS `label` of `h` as LABEL.diverged.TID (or the next free name); returns the name. */
  private keepAsSnapshot(h: Hammer2Fs, label: string, tid: bigint): string {
    let name = `${label}.diverged.${tid}`;
    for (let i = 2; h.dev.findPfs(name); i++) name = `${label}.diverged.${tid}.${i}`;
    const src = h === this.primary ? this.pfs : h.pfs(label);
    if (!src) throw new FsError('ENOENT', `no PFS "${label}" to keep`);
    h.snapshotPfs(src, name);
    return name;
  }

  /** Commits of the primary count as shared while some copy is in sync. */
  private updateReplicated(): void {
    this.pfs.replicated = !this.closed && this.copies.some((c) => c.state === 'in-sync');
  }

  /**
   * A copy became level outside a primary commit (a resync finished): make
   * one commit now, so that the primary records the shared point too.
   */
  private clusterPoint(): void {
    try {
      this.pfs.touchRoot();
      this.primary.flush();
    } catch (e) {
      this.log(`recording the cluster point failed: ${errText(e)}`);
    }
  }

  /** Take a copy out (after committing what it has). */
  remove(spec: string): void {
    const i = this.copies.findIndex((c) => c.spec === spec);
    if (spec === this.primarySpec) throw new FsError('EINVAL', `${spec} is the primary of this mount, not a copy: unmount to stop using it`);
    if (i < 0) throw new FsError('ENOENT', `${spec} is not a copy of ${this.label}`);
    const c = this.copies[i];
    this.copies.splice(i, 1);
    this.updateReplicated();
    c.close();
    this.log(`copy ${spec}: removed`);
  }

  // ----------------------------------------------------------- replication

  /**
   * A primary commit is under way (its blocks written, not synced): each
   * in-sync copy builds its own commit of the same change against the
   * primary's new tree, and the primary syncs every image's blocks at once.
   */
  private prepareCopies(tid: bigint, roots: Map<string, { bref: Blockref; inode: InodeData }>): VolumeSet[] {
    const root = roots.get(this.label);
    if (this.closed || !root) return [];
    const sets: VolumeSet[] = [];
    for (const c of this.copies) {
      if (c.state !== 'in-sync' || !c.fs || c.tid === root.bref.modifyTid) continue;
      try {
        const d = c.entry();
        const since = c.tid;
        const source = { reader: this.primary.dev.reader, peek: (off: bigint) => this.primary.commitBlock(off) };
        c.prepared = {
          commit: c.fs.preparePfsRoot(
            c.label,
            (w) => {
              const r = syncPfs(source, root.inode, { reader: c.fs!.dev.reader, writer: w }, d.inode, {
                since,
                onHeal: (what) => {
                  c.healed++;
                  this.log(`copy ${c.spec}: repaired ${what}`);
                },
              });
              return { root: r.root, modifyTid: root.bref.modifyTid, updateTid: root.bref.modifyTid };
            },
            { minTid: tid },
          ),
          tid: root.bref.modifyTid,
        };
        sets.push(c.fs.dev.vols);
      } catch (e) {
        if (e instanceof SourceError) {
          // The primary's new tree failed to read: the copy misses this commit and catches up later.
          this.setState(c, 'resyncing', e.message);
          this.sourceDamaged(c, e);
        } else this.copyFailed(c, e);
      }
    }
    return sets;
  }

  private copySyncFailed(set: VolumeSet, e: Error): void {
    const c = this.copies.find((x) => x.fs?.dev.vols === set);
    if (!c) return;
    if (c.prepared) c.fs!.abortCommit(c.prepared.commit);
    c.prepared = null;
    this.copyFailed(c, e);
  }

  /** The primary's header is durable: each prepared copy writes its own. */
  private commitCopies(): void {
    for (const c of this.copies) {
      const p = c.prepared;
      if (!p) continue;
      c.prepared = null;
      try {
        c.fs!.finishCommit(p.commit, { dataSynced: true });
        c.tid = p.tid;
      } catch (e) {
        this.copyFailed(c, e);
      }
    }
  }

  private abortCopies(): void {
    for (const c of this.copies) {
      if (!c.prepared) continue;
      try {
        c.fs?.abortCommit(c.prepared.commit);
      } catch {
        // Nothing references what was written.
      }
      c.prepared = null;
    }
  }

  /** A copy's write failed: out of the in-sync set, closed, tried again later. */
  private copyFailed(c: CopyNode, e: unknown): void {
    c.writeErrors++;
    c.error = errText(e);
    c.pass = null;
    c.prepared = null;
    this.setState(c, 'failed', c.error);
    c.close();
    c.retryAt = Date.now() + (this.o.retrySec ?? 10) * 1000;
    this.schedule();
  }

  /**
   * One synchronization step into copy `c`: a whole catch-up (no budget) or
   * a budgeted step of the pass under way. Any error takes the copy out of
   * the in-sync set (its image still holds its last commit).
   */
  private syncCopy(c: CopyNode, o: { budget: number | undefined }): boolean {
    const h = c.fs!;
    const src = this.primary.dev.findPfs(this.label)!;
    const since = c.pass ? c.pass.since : c.tid;
    const from = c.pass?.cursor ?? undefined;
    // A pass that already took steps read several states of the primary:
    // when it completes, the copy is level only as of where it began.
    const multi = !!c.pass && c.pass.steps > 0;
    const start = c.pass?.start ?? src.bref.modifyTid;
    let next: SyncCursor | null = null;
    try {
      const d = c.entry();
      h.commitPfsRoot(
        c.label,
        (w) => {
          const source = { reader: this.primary.dev.reader, peek: (off: bigint) => this.primary.commitBlock(off) };
          const r = syncPfs(source, src.inode, { reader: h.dev.reader, writer: w }, d.inode, {
            since,
            from,
            budgetBytes: o.budget,
            stats: c.resync,
            onHeal: (what) => {
              c.healed++;
              this.log(`copy ${c.spec}: repaired ${what}`);
            },
          });
          next = r.next;
          // Until a pass completes the copy stays at the tid the pass is
          // based on; a completed one is state shared with the primary (as of
          // where a multi-step pass began), recorded in one commit.
          if (r.next) return { root: r.root, modifyTid: since };
          const at = multi ? start : src.bref.modifyTid;
          return { root: r.root, modifyTid: at, updateTid: at };
        },
        { minTid: src.bref.modifyTid },
      );
    } catch (e) {
      if (e instanceof SourceError) {
        this.sourceDamaged(c, e);
        return false;
      }
      this.copyFailed(c, e);
      return false;
    }
    if (next) {
      // More to do: the pass resumes from the cursor at the next step.
      c.pass = c.pass ?? { since, start, cursor: null, steps: 0 };
      c.pass.cursor = next;
      c.pass.steps++;
      c.error = null;
      return true;
    }
    c.passes++;
    c.error = null;
    if (!multi) {
      // Completed in one step: level with the primary's committed state.
      c.tid = src.bref.modifyTid;
      c.pass = null;
      if (c.state !== 'in-sync') this.setState(c, 'in-sync', `level at transaction ${c.tid}`);
      return false;
    }
    // The next pass covers what changed since this one began. The primary
    // records that its state as of then is shared, so that the two agree
    // on their history should either go on alone now.
    c.tid = start;
    c.pass = { since: start, start: this.primaryTid(), cursor: null, steps: 0 };
    this.recordShared(start);
    return true;
  }

  /** The primary's PFS root records `tid` as shared (its update_tid), unless it records a later one. */
  private recordShared(tid: bigint): void {
    try {
      this.primary.flush();
      const e = this.primary.dev.findPfs(this.label)!;
      if (e.bref.updateTid >= tid) return;
      this.primary.commitPfsRoot(this.label, () => ({ root: e.inode, modifyTid: e.bref.modifyTid, updateTid: tid }), { keepPfs: true });
    } catch (err) {
      this.log(`recording the shared point failed: ${errText(err)}`);
    }
  }

  /**
   * The primary's own tree failed to read while a copy was being brought
   * level from it: not the copy's fault. The pass waits (the copy keeps its
   * state), the primary's item is queued for repair from an in-sync copy if
   * there is one, and the pass is retried later.
   */
  private sourceDamaged(c: CopyNode, e: SourceError): void {
    c.error = `the primary failed to read (${e.message}); resynchronization waits for it to be repaired (hammer2 scrub)`;
    c.pass = null;
    this.log(`copy ${c.spec}: ${c.error}`);
    if (e.inum !== undefined) this.damaged(e.inum, e.key);
    c.retryAt = Date.now() + (this.o.retrySec ?? 10) * 1000;
    c.waiting = true;
  }

  /** Run the background work: resync steps, retries, repairs. */
  private schedule(delayMs = 0): void {
    if (this.closed || this.timer) return;
    const work = this.copies.some((c) => c.state === 'resyncing' || c.state === 'offline' || c.state === 'failed');
    if (!work) return;
    this.timer = setTimeout(() => {
      this.background()
        .catch((e) => this.log(`background work failed: ${errText(e)}`))
        .finally(() => {
          this.timer = null;
          this.schedule(this.nextDelay);
        });
    }, delayMs);
  }

  private nextDelay = 0;

  private async background(): Promise<void> {
    if (this.closed) return;
    const now = Date.now();
    let next = 1000;
    for (const c of this.copies) {
      if ((c.state === 'offline' || c.state === 'failed') && now >= c.retryAt) {
        const first = c.spec.split(':')[0];
        if (!fs.existsSync(first)) {
          c.retryAt = now + (this.o.retrySec ?? 10) * 1000;
          continue;
        }
        try {
          await this.open(c);
        } catch (e) {
          c.error = errText(e);
          c.retryAt = now + (this.o.retrySec ?? 10) * 1000;
        }
        // Removed, or the cluster closed, while the image was opening: let it go.
        if (this.closed || !this.copies.includes(c)) {
          c.close();
          return;
        }
      }
    }
    const c = this.copies.find((x) => x.state === 'resyncing' && (!x.waiting || now >= x.retryAt));
    if (c) {
      c.waiting = false;
      // The primary's pending changes are not the copy's business: it follows commits.
      const t0 = Date.now();
      const written0 = c.resync.bytesWritten;
      const more = this.syncCopy(c, { budget: this.stepBytes });
      if ((c.state as CopyState) === 'in-sync') this.clusterPoint();
      const rate = this.o.rateBytes ?? 0;
      const wrote = c.resync.bytesWritten - written0;
      next = more ? (rate > 0 ? Math.max(0, (wrote / rate) * 1000 - (Date.now() - t0)) : 0) : 0;
      if (more && c.pass && c.pass.steps % 16 === 0) {
        this.log(`copy ${c.spec}: resynchronizing, ${c.resync.blocksWritten} blocks written, ${c.resync.srcBlocksRead} read so far`);
      }
    }
    this.nextDelay = Math.round(next);
  }

  // ------------------------------------------------------- reads and repair

  private inSync(): CopyNode[] {
    const tid = this.primaryTid();
    return this.copies.filter((c) => c.state === 'in-sync' && c.tid === tid && c.fs);
  }

  /** Try each in-sync copy in turn; a copy that fails too is counted and the next one tried. */
  private fromCopies<T>(what: (c: CopyNode) => T | null): T | null {
    for (const c of this.inSync()) {
      try {
        const r = what(c);
        if (r !== null) return r;
      } catch (e) {
        if (!(e instanceof MediaError || e instanceof FsError)) throw e;
        c.readErrors++;
        this.log(`copy ${c.spec}: read failed too: ${e.message}`);
      }
    }
    return null;
  }

  readData(inum: bigint, pos: number, out: Buffer): boolean {
    this.readErrors++;
    const ok = this.fromCopies((c) => {
      const v = c.view();
      const n = v.getInode(inum);
      const got = v.read(n, pos, out.length);
      got.copy(out, 0);
      out.fill(0, got.length);
      return true;
    });
    return ok === true;
  }

  readInode(inum: bigint): InodeData | null {
    this.readErrors++;
    return this.fromCopies((c) => c.view().getInode(inum).data);
  }

  readEntries(inum: bigint, lo: bigint, hi: bigint): DirEntry[] | null {
    this.readErrors++;
    return this.fromCopies((c) => {
      const v = c.view();
      const dir = v.getInode(inum);
      // In batches, up to `hi` only (a lookup asks for one hash range, not the directory).
      const out: DirEntry[] = [];
      for (let from = lo; ; ) {
        const batch = v.readdirFrom(dir, from, 256);
        for (const e of batch) if (e.key <= hi) out.push(e);
        if (batch.length < 256 || batch[batch.length - 1].key >= hi) return out;
        from = batch[batch.length - 1].key + 1n;
      }
    });
  }

  damaged(inum: bigint, key?: bigint, why?: string): void {
    if (why) this.log(`read error on the primary, served from a copy: ${why}`);
    const cur = this.damage.get(inum);
    if (key === undefined) this.damage.set(inum, null);
    else if (cur !== null) {
      if (cur) cur.add(key);
      else this.damage.set(inum, new Set([key]));
    }
    if (!this.repairQueued) {
      this.repairQueued = true;
      // Outside the request that found it: a repair commits.
      setImmediate(() => this.repairPrimary());
    }
  }

  /** Rewrite the primary's damaged items from an in-sync copy, as one commit. */
  private repairPrimary(): void {
    this.repairQueued = false;
    if (this.closed || !this.damage.size) return;
    const damage = this.damage;
    this.damage = new Map();
    try {
      const c = this.inSync()[0];
      if (!c) throw new Error('no in-sync copy to repair from');
      const stats = this.repairPrimaryFrom(c, damage);
      const n = [...damage.values()].reduce((a, v) => a + (v ? v.size : 1), 0);
      this.healed += n;
      this.log(`repaired ${n} damaged item(s) of inode(s) ${[...damage.keys()].join(', ')} from copy ${c.spec} (${stats.leavesCopied} leaves rewritten)`);
    } catch (e) {
      this.log(`repair of inode(s) ${[...damage.keys()].join(', ')} failed: ${errText(e)}; retrying in 5 s`);
      // Keep what is still damaged, and try again (a copy may come back in sync, space may be freed).
      for (const [inum, keys] of damage) {
        if (keys === null) this.damage.set(inum, null);
        else for (const k of keys) this.damaged(inum, k);
      }
      if (!this.retryTimer && !this.closed) {
        this.retryTimer = setTimeout(() => {
          this.retryTimer = null;
          this.repairPrimary();
        }, 5000);
        this.retryTimer.unref();
      }
    }
  }
  private retryTimer: NodeJS.Timeout | null = null;

  /** A forced pass from copy `c` into the primary over `force`, committed with what was pending. */
  private repairPrimaryFrom(c: CopyNode, force: Map<bigint, Set<bigint> | null>): SyncStats {
    this.primary.flush();
    // Cached good copies of damaged blocks would hide them from the pass.
    this.primary.dropCaches();
    return this.intoPrimary(c, { since: 0n, force }, (r, dst) => {
      // Keep the primary's own inode allocator.
      r.root.meta.pfsInum = dst.inode.meta.pfsInum;
      return { root: r.root };
    });
  }

  /** A forced pass from the primary into copy `c` over `force`. */
  private repairCopy(c: CopyNode, force: Map<bigint, Set<bigint> | null>): SyncStats {
    c.fs!.dropCaches();
    const src = this.primary.dev.findPfs(this.label)!;
    const d = c.entry();
    const stats = emptyStats();
    c.fs!.commitPfsRoot(
      c.label,
      (w) => {
        const r = syncPfs({ reader: this.primary.dev.reader }, src.inode, { reader: c.fs!.dev.reader, writer: w }, d.inode, { since: 0n, force, stats });
        return { root: r.root, modifyTid: d.bref.modifyTid, updateTid: d.bref.updateTid };
      },
      { minTid: src.bref.modifyTid },
    );
    return stats;
  }

  /**
   * Damage reports as a forced pass's item list. A damaged blocktable of
   * the PFS index hides which inodes it held: the good node's index says.
   */
  private forceOf(damage: Damage[], good: { reader: BlockReader; root: InodeData }): Map<bigint, Set<bigint> | null> {
    const force = new Map<bigint, Set<bigint> | null>();
    const whole = (k: bigint) => force.set(k, null);
    for (const d of damage) {
      if (d.range) {
        scanRange(good.reader, inodeBlockset(good.root), d.range[0], d.range[1], (b) => void whole(b.key));
      } else if (d.key === undefined || d.inum === 0n) {
        whole(d.key !== undefined ? d.key : d.inum);
      } else {
        const cur = force.get(d.inum);
        if (cur === null) continue;
        if (cur) cur.add(d.key);
        else force.set(d.inum, new Set([d.key]));
      }
    }
    return force;
  }

  /**
   * Read every block of every node from its media and verify it; rewrite
   * what is damaged from a good node (the primary from an in-sync copy, a
   * copy from the primary). Nodes that are not in sync are skipped (their
   * resynchronization compares what it reaches).
   */
  async scrub(progress: (node: string, blocks: number) => void = () => {}): Promise<ScrubReport[]> {
    const out: ScrubReport[] = [];
    this.primary.flush();
    // The primary.
    {
      const rep: ScrubReport = { spec: this.primarySpec, primary: true, blocks: 0, damaged: 0, repaired: 0 };
      const found: Damage[] = [];
      const stats = { blocks: 0, bytes: 0, damaged: 0 };
      const timer = setInterval(() => progress(this.primarySpec, stats.blocks), 500);
      try {
        await verifyPfs(this.primary.dev.reader, this.primary.dev.findPfs(this.label)!.inode, (d) => found.push(d), stats);
      } finally {
        clearInterval(timer);
      }
      rep.blocks = stats.blocks;
      rep.damaged = found.length;
      if (found.length) {
        for (const d of found) this.log(`scrub: primary: ${d.why}`);
        const c = this.inSync()[0];
        if (!c) rep.error = 'no in-sync copy to repair from';
        else {
          try {
            const force = this.forceOf(found, { reader: c.fs!.dev.reader, root: c.entry().inode });
            this.repairPrimaryFrom(c, force);
            rep.repaired = found.length;
            this.healed += force.size;
            this.log(`scrub: repaired ${force.size} item(s) of the primary from copy ${c.spec}`);
          } catch (e) {
            rep.error = errText(e);
          }
        }
      }
      out.push(rep);
    }
    for (const c of this.copies) {
      const rep: ScrubReport = { spec: c.spec, primary: false, blocks: 0, damaged: 0, repaired: 0 };
      out.push(rep);
      if (c.state !== 'in-sync' || !c.fs) {
        rep.error = `skipped: ${c.state}`;
        continue;
      }
      const found: Damage[] = [];
      const stats = { blocks: 0, bytes: 0, damaged: 0 };
      try {
        await verifyPfs(c.fs.dev.reader, c.entry().inode, (d) => found.push(d), stats);
        rep.blocks = stats.blocks;
        rep.damaged = found.length;
        if (found.length && c.fs && c.state === 'in-sync') {
          for (const d of found) this.log(`scrub: copy ${c.spec}: ${d.why}`);
          const force = this.forceOf(found, { reader: this.primary.dev.reader, root: this.primary.dev.findPfs(this.label)!.inode });
          this.repairCopy(c, force);
          rep.repaired = found.length;
          c.healed += force.size;
          this.log(`scrub: repaired ${force.size} item(s) of copy ${c.spec} from the primary`);
        }
      } catch (e) {
        rep.error = errText(e);
        c.readErrors++;
      }
    }
    return out;
  }

  // ---------------------------------------------------------------- status

  private statusOf(c: CopyNode): CopyStatus {
    const s: CopyStatus = {
      spec: c.spec,
      primary: false,
      state: c.state,
      tid: c.tid.toString(),
      healed: c.healed,
      readErrors: c.readErrors,
      writeErrors: c.writeErrors,
      resync: { blocksRead: c.resync.srcBlocksRead, blocksWritten: c.resync.blocksWritten, passes: c.passes },
    };
    if (c.error) s.error = c.error;
    return s;
  }

  status(): CopyStatus[] {
    const p: CopyStatus = {
      spec: this.primarySpec,
      primary: true,
      state: 'in-sync',
      tid: this.primaryTid().toString(),
      healed: this.healed,
      readErrors: this.readErrors,
      writeErrors: 0,
      resync: { blocksRead: 0, blocksWritten: 0, passes: 0 },
    };
    return [p, ...this.copies.map((c) => this.statusOf(c))];
  }

  /** Whether every copy is in sync (tests and `copy-status --wait`). */
  get settled(): boolean {
    return this.copies.every((c) => c.state === 'in-sync' || c.state === 'offline' || c.state === 'failed') && !this.repairQueued;
  }

  close(): void {
    this.closed = true;
    this.pfs.replicated = false;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.primary.participants.delete(this.participant);
    this.pfs.redundancy = null;
    for (const c of this.copies) c.close();
    this.copies = [];
  }
}
