// The set of devices that make up one HAMMER2 filesystem (version 2 allows
// up to 64, given as "a:b:c"), the mapping of logical media offsets onto
// them, and the choice of volume header.
import {
  checkVolumeHeader,
  decodeVolumeHeader,
  HAMMER2_UUID_STRING,
  MAX_VOLUMES,
  NUM_VOLHDRS,
  uuidToString,
  VOL_VERSION_MULTI_VOLUMES,
  VOLUME_BYTES,
  VolumeHeader,
  ZONE_BYTES,
} from '../media';
import { PHYS_BUFFER, PhysBufferCache } from './bufcache';

/** Largest block read through the 64 KiB buffer cache (see read). */
const SMALL_BLOCK = 8192;
import { Device, DeviceError } from './device';
import { IoStep, nativeShim } from './native';

/**
 * HAMMER2_FAULT_HEADER=N:BYTES (crash tests only): the Nth volume header
 * this process writes stops after BYTES bytes and the process is killed,
 * which is what a kill inside a buffered header write could leave.
 */
const headerFault = (() => {
  const m = /^(\d+):(\d+)$/.exec(process.env.HAMMER2_FAULT_HEADER ?? '');
  return m ? { at: Number(m[1]), bytes: Math.min(Number(m[2]), VOLUME_BYTES), seen: 0 } : null;
})();

export class MountError extends Error {
  override name = 'MountError';
}

export interface HeaderCandidate {
  /** Zone index 0..3: the header lives at zone * 2 GiB. */
  zone: number;
  ok: boolean;
  reason?: string;
  /** Rejected only by its whole-header CRC (a header write cut short): fsck -y can mend it. */
  torn?: boolean;
  header?: VolumeHeader;
}

export interface Volume {
  id: number;
  dev: Device;
  /** Logical offset of the volume's first byte. */
  offset: number;
  size: number;
  header: VolumeHeader;
}

/** Read every header slot that fits on a device and validate each. */
export function readHeaderCandidates(dev: Device): HeaderCandidate[] {
  const out: HeaderCandidate[] = [];
  for (let zone = 0; zone < NUM_VOLHDRS; zone++) {
    const pos = zone * ZONE_BYTES;
    if (pos + VOLUME_BYTES > dev.size) break;
    let raw: Buffer;
    try {
      raw = dev.read(pos, VOLUME_BYTES);
    } catch (e) {
      out.push({ zone, ok: false, reason: (e as Error).message });
      continue;
    }
    const chk = checkVolumeHeader(raw);
    if (!chk.ok) out.push({ zone, ok: false, reason: chk.reason, torn: chk.torn });
    else out.push({ zone, ok: true, header: decodeVolumeHeader(raw) });
  }
  return out;
}

/** The valid candidate with the highest mirror_tid (ties: the lowest zone, as the reference). */
export function bestHeader(c: HeaderCandidate[]): HeaderCandidate | undefined {
  let best: HeaderCandidate | undefined;
  for (const h of c) if (h.ok && (!best || h.header!.mirrorTid > best.header!.mirrorTid)) best = h;
  return best;
}

export class VolumeSet {
  /** Volumes sorted by id; volumes[0] is the root volume. */
  readonly volumes: Volume[];
  /** Header candidates of the root volume. */
  readonly candidates: HeaderCandidate[];
  /** The header in force (the best, unless a zone was forced). */
  readonly header: VolumeHeader;
  /** Zone of the header in force; the next commit writes the zone after it. */
  headerZone: number;

  private constructor(volumes: Volume[], candidates: HeaderCandidate[], chosen: HeaderCandidate) {
    this.volumes = volumes;
    this.candidates = candidates;
    this.header = chosen.header!;
    this.headerZone = chosen.zone;
  }

  /**
   * Open "img" or "img1:img2:...". `zone` forces a specific header slot
   * (fsck's rollback uses it); by default the best valid one is used.
   */
  static open(spec: string, opts: { writable: boolean; lock?: boolean; zone?: number }): VolumeSet {
    const paths = spec.split(':').filter((p) => p.length > 0);
    if (paths.length === 0) throw new MountError('no device given');
    if (paths.length > MAX_VOLUMES) throw new MountError(`too many volumes (${paths.length} > ${MAX_VOLUMES})`);
    const devs: Device[] = [];
    try {
      for (const p of paths) devs.push(Device.open(p, { writable: opts.writable, lock: opts.lock }));
      return VolumeSet.assemble(devs, opts.zone);
    } catch (e) {
      for (const d of devs) d.close();
      if (e instanceof DeviceError) throw new MountError(e.message);
      throw e;
    }
  }

  private static assemble(devs: Device[], forceZone?: number): VolumeSet {
    const vols: { dev: Device; cands: HeaderCandidate[]; best: HeaderCandidate }[] = [];
    for (const dev of devs) {
      if (dev.size < VOLUME_BYTES) throw new MountError(`${dev.path}: too small to hold a HAMMER2 volume (${dev.size} bytes)`);
      const cands = readHeaderCandidates(dev);
      const best = bestHeader(cands);
      if (!best) {
        const why = cands.map((c) => `#${c.zone}: ${c.reason}`).join('; ');
        throw new MountError(`${dev.path}: not a HAMMER2 volume (no valid volume header: ${why})`);
      }
      vols.push({ dev, cands, best });
    }
    const root = vols.find((v) => v.best.header!.voluId === 0);
    if (!root) throw new MountError('no root volume (volume id 0) among the devices given');
    let chosen = root.best;
    if (forceZone !== undefined) {
      const c = root.cands.find((x) => x.zone === forceZone);
      if (!c || !c.ok) throw new MountError(`volume header #${forceZone} is not valid`);
      chosen = c;
    }
    const rh = chosen.header!;
    if (uuidToString(rh.fstype) !== HAMMER2_UUID_STRING) {
      throw new MountError(`${root.dev.path}: fstype ${uuidToString(rh.fstype)} is not HAMMER2`);
    }
    if (rh.version < 1 || rh.version > 2) {
      throw new MountError(`${root.dev.path}: unsupported volume version ${rh.version}`);
    }
    const volumes: Volume[] = [];
    for (const v of vols) {
      const h = v === root ? rh : v.best.header!;
      if (h.voluId >= MAX_VOLUMES) throw new MountError(`${v.dev.path}: bad volume id ${h.voluId}`);
      if (v !== root && !h.fsid.equals(rh.fsid)) throw new MountError(`${v.dev.path}: belongs to another filesystem`);
      const offset = rh.version >= VOL_VERSION_MULTI_VOLUMES ? h.voluLoff[h.voluId] : 0n;
      const size = h.voluSize;
      if (offset > BigInt(Number.MAX_SAFE_INTEGER) || size > BigInt(Number.MAX_SAFE_INTEGER)) {
        throw new MountError(`${v.dev.path}: volume offset/size out of range`);
      }
      if (Number(size) > v.dev.size) {
        throw new MountError(`${v.dev.path}: volume size ${size} exceeds the device (${v.dev.size} bytes); image truncated?`);
      }
      if (volumes.some((x) => x.id === h.voluId)) throw new MountError(`${v.dev.path}: duplicate volume id ${h.voluId}`);
      volumes.push({ id: h.voluId, dev: v.dev, offset: Number(offset), size: Number(size), header: h });
    }
    volumes.sort((a, b) => a.id - b.id);
    const nvol = rh.version >= VOL_VERSION_MULTI_VOLUMES ? Math.max(rh.nvolumes, 1) : 1;
    if (volumes.length !== nvol) {
      throw new MountError(`filesystem has ${nvol} volume(s), ${volumes.length} given (use img1:img2:... for all of them)`);
    }
    for (let i = 1; i < volumes.length; i++) {
      if (volumes[i].offset !== volumes[i - 1].offset + volumes[i - 1].size) {
        throw new MountError(`${volumes[i].dev.path}: inconsistent volume offset`);
      }
    }
    return new VolumeSet(volumes, root.cands, chosen);
  }

  /** Total logical size: the sum of the volumes. */
  get totalSize(): number {
    const last = this.volumes[this.volumes.length - 1];
    return last.offset + last.size;
  }

  private volumeFor(loff: number, len: number): Volume {
    for (const v of this.volumes) {
      if (loff >= v.offset && loff + len <= v.offset + v.size) return v;
    }
    throw new DeviceError(`media offset 0x${loff.toString(16)}+${len} is outside every volume`);
  }

  /** Small reads come from whole 64 KiB buffers kept here (see bufcache.ts); 8 MiB. */
  readonly bufCache = new PhysBufferCache(8 << 20);

  read(loff: number, len: number, out?: Buffer, outOff?: number): Buffer {
    const v = this.volumeFor(loff, len);
    const base = loff - (loff % PHYS_BUFFER);
    // Reads see queued writes. (Checked by 64 KiB buffer: that covers the whole buffer the cache may load.)
    if (this.queue.length && this.queuedWithin(loff, loff + len)) this.flushWrites();
    // And the blocks of a commit in flight, which the media may not hold yet.
    if (this.behind?.touches(loff, loff + len)) {
      const r = v.dev.read(loff - v.offset, len, out, outOff);
      this.behind.overlay(loff, len, r, outOff ?? 0);
      return r;
    }
    // A whole 64 KiB buffer gains nothing from the cache (nothing else lives
    // in it) and would cost a copy: only smaller blocks go through it. Blocks
    // of 16 KiB and more (blocktables, which the block reader keeps itself)
    // are served from a buffer already cached but never load one: four
    // times the bytes for a block whose neighbours are rarely wanted.
    if (!out && len < PHYS_BUFFER && loff + len <= base + PHYS_BUFFER && base >= v.offset) {
      if (len <= SMALL_BLOCK) return this.bufCache.read(loff, len, v.offset + v.size, (b, size) => v.dev.read(b - v.offset, size));
      const hit = this.bufCache.peek(loff, len);
      if (hit) return hit;
    }
    return v.dev.read(loff - v.offset, len, out, outOff);
  }

  /**
   * Read [loff, loff+len) into out at outOff, one pread per volume the span
   * touches (adjacent blocks read as one run may cross a volume boundary).
   */
  readSpan(loff: number, len: number, out: Buffer, outOff = 0): void {
    if (this.queue.length && this.queuedWithin(loff, loff + len)) this.flushWrites(); // reads see queued writes
    const inFlight = this.behind?.touches(loff, loff + len) ? this.behind : null;
    const [lo, n0, o0] = [loff, len, outOff];
    while (len > 0) {
      const v = this.volumeFor(loff, 1);
      const n = Math.min(len, v.offset + v.size - loff);
      v.dev.read(loff - v.offset, n, out, outOff);
      loff += n;
      outOff += n;
      len -= n;
    }
    inFlight?.overlay(lo, n0, out, o0);
  }

  write(loff: number, buf: Uint8Array): void {
    const v = this.volumeFor(loff, buf.length);
    v.dev.write(loff - v.offset, buf);
    this.bufCache.update(loff, buf);
    // A copy: the caller (the freemap) changes its buffer in place later.
    this.written?.push({ loff, bufs: [Buffer.from(buf)], bytes: buf.length });
  }

  /**
   * Every write since recordWrites() (write() and the runs flushWrites()
   * sends), for commitBehind: if a sync of the commit fails, the kernel
   * may have dropped any page written since the last good sync, so a retry
   * must write all of them again, not only what was still queued.
   */
  private written: QueuedRun[] | null = null;
  recordWrites(on: boolean): void {
    this.written = on ? [] : null;
  }

  /** Writes waiting in writeQueued's queue, in order; adjacent ones merge into one run. */
  private queue: QueuedRun[] = [];
  /** Queued bytes past which writeQueued writes the queue out. */
  queueLimit = 16 << 20;
  private queuedBytes = 0;
  /** The 64 KiB buffers (offset / PHYS_BUFFER) the queued writes touch. */
  private queuedBufs = new Set<number>();

  /**
   * Write later: blocks queued at consecutive offsets (the allocator places
   * a commit's blocks of one kind one after another) go out as one pwritev
   * each at flushWrites(), which sync() and every read that touches them do
   * first. A run never crosses a volume boundary. Memory: `buf` is held, not
   * copied, so the caller must not change it until then; the queue flushes
   * itself past 16 MiB.
   */
  writeQueued(loff: number, buf: Uint8Array): void {
    if (buf.length === 0) return;
    const v = this.volumeFor(loff, buf.length);
    // Cached copies take the new bytes now; a buffer not cached is loaded
    // only after the queue is written out (every read flushes it first).
    this.bufCache.update(loff, buf);
    const last = this.queue[this.queue.length - 1];
    if (
      last &&
      last.loff + last.bytes === loff &&
      last.loff >= v.offset && // same volume: the run started inside it
      last.bufs.length < 1024 && // IOV_MAX
      last.bytes < 8 << 20
    ) {
      last.bufs.push(buf);
      last.bytes += buf.length;
    } else {
      this.queue.push({ loff, bufs: [buf], bytes: buf.length });
    }
    this.queuedBytes += buf.length;
    addBufs(this.queuedBufs, loff, buf.length);
    if (this.queuedBytes >= this.queueLimit) this.flushWrites();
  }

  /**
   * Whether a queued write touches [lo, hi). Between commits the queue is
   * empty; while a commit queues its blocks, its reads of other blocks
   * (freemap leaves, the next inode) must not cut the queue into many small
   * writes.
   */
  private queuedWithin(lo: number, hi: number): boolean {
    // By buffer, not by run: a commit's data, inode and table blocks come
    // from separate allocator cursors and queue as many short runs.
    return touchesBufs(this.queuedBufs, lo, hi);
  }

  /** The queue's runs, leaving it empty. */
  private takeQueue(): QueuedRun[] {
    const q = this.queue;
    this.queue = [];
    this.queuedBytes = 0;
    this.queuedBufs.clear();
    return q;
  }

  /** Write runs where they belong, one pwritev each. */
  private writeRuns(runs: QueuedRun[]): void {
    for (const run of runs) {
      const v = this.volumeFor(run.loff, run.bytes);
      if (run.bufs.length === 1) v.dev.write(run.loff - v.offset, run.bufs[0]);
      else v.dev.writev(run.loff - v.offset, run.bufs, run.bytes);
    }
  }

  /** Write out everything writeQueued holds (one pwritev per run). */
  flushWrites(): void {
    const q = this.takeQueue();
    this.written?.push(...q);
    try {
      this.writeRuns(q);
    } catch (e) {
      // The cache took bytes the media may not hold.
      this.bufCache.clear();
      throw e;
    }
  }

  /** Forget queued writes (a failed commit: nothing refers to those blocks). */
  discardWrites(): void {
    this.takeQueue();
    // the cache took their bytes: let it read the media again
    this.bufCache.clear();
  }

  /**
   * Let the only volume reach `bytes` (its device must already hold them).
   * Volume header slots the growth reaches are zeroed first, as the
   * reference does: stale bytes there (an older filesystem on the same
   * device) must never be taken for a newer header. Synced before return.
   */
  growVolume(bytes: number): void {
    if (this.volumes.length !== 1) throw new DeviceError('growing is not supported with several volumes', 'EOPNOTSUPP');
    const v = this.volumes[0];
    if (bytes < v.size) throw new DeviceError(`would shrink the volume from ${v.size} to ${bytes} bytes`, 'EINVAL');
    if (bytes > v.dev.size) throw new DeviceError(`${v.dev.path}: ${bytes} bytes exceed the device (${v.dev.size} bytes)`, 'EINVAL');
    const zero = Buffer.alloc(VOLUME_BYTES);
    for (let z = 0; z < NUM_VOLHDRS; z++) {
      const at = z * ZONE_BYTES;
      if (at < v.size) continue;
      if (at + VOLUME_BYTES > bytes) break;
      this.writeHeader(v.id, z, zero);
    }
    v.dev.sync();
    v.size = bytes;
  }

  /** Undo growVolume's size change (its commit failed); the zeroed slots held nothing of ours. */
  setVolumeSize(bytes: number): void {
    this.volumes[0].size = bytes;
  }

  /** Write a volume header copy into a zone of a given volume. */
  writeHeader(volumeId: number, zone: number, raw: Buffer): void {
    const v = this.volumes.find((x) => x.id === volumeId);
    if (!v) throw new DeviceError(`no volume ${volumeId}`);
    this.bufCache.invalidate(v.offset + zone * ZONE_BYTES, raw.length);
    if (headerFault && ++headerFault.seen === headerFault.at) {
      // The crash test's hook: part of the header written the old way, then a kill.
      v.dev.write(zone * ZONE_BYTES, raw.subarray(0, headerFault.bytes));
      process.kill(process.pid, 'SIGKILL');
    }
    v.dev.writeWhole(zone * ZONE_BYTES, raw);
  }

  sync(): void {
    if (this.queue.length) this.flushWrites();
    this.syncDevices();
  }

  /** fdatasync every volume (queued writes are the caller's: see sync()). */
  syncDevices(): void {
    for (const v of this.volumes) v.dev.sync();
  }

  close(): void {
    if (this.queue.length) this.flushWrites();
    try {
      this.behind?.finish();
    } catch {
      // A commit that cannot be written even now is given up with the descriptors (its caller was told).
    }
    this.behind = null;
    for (const v of this.volumes) v.dev.close();
  }

  /** The commit being written on the shim's thread (see commitBehind). */
  behind: CommitInFlight | null = null;

  /**
   * Write out the queued blocks, sync, write `raw` as the header into
   * `zone` of the root volume and sync again, all on the shim's I/O thread,
   * in that order; return at once. Reads meanwhile see the commit's blocks
   * (from memory while the media may not hold them). Null where there is
   * no such thread (the caller commits the usual way); only one at a time.
   */
  commitBehind(zone: number, raw: Buffer): CommitInFlight | null {
    const shim = nativeShim();
    if (!shim?.ioStart || !shim.ioWait || !shim.ioDone || headerFault || this.behind) return null;
    const root = this.volumes[0];
    if (zone * ZONE_BYTES + raw.length > root.size) throw new DeviceError(`header zone ${zone} lies outside the root volume`);
    const runs = this.queue;
    const steps: IoStep[] = [];
    for (const run of runs) {
      const v = this.volumeFor(run.loff, run.bytes);
      steps.push([0, v.dev.fd, run.loff - v.offset, run.bufs]);
    }
    for (const v of this.volumes) steps.push([1, v.dev.fd]);
    const direct = root.dev.directFd();
    steps.push(direct !== null ? [2, direct, zone * ZONE_BYTES, [raw]] : [0, root.dev.fd, zone * ZONE_BYTES, [raw]]);
    for (const v of this.volumes) steps.push([1, v.dev.fd]);
    const job = shim.ioStart(steps);
    if (!job) return null;
    this.bufCache.invalidate(root.offset + zone * ZONE_BYTES, raw.length);
    // Everything written since recordWrites(true), then the queue: what reads
    // see over the media, and what a retry writes again.
    this.behind = new CommitInFlight(this, job, [...(this.written ?? []), ...this.takeQueue()], zone, raw);
    return this.behind;
  }

  /** CommitInFlight's redo: the same writes and syncs, here and synchronously. */
  redoCommit(runs: QueuedRun[], zone: number, raw: Buffer): void {
    this.writeRuns(runs);
    this.syncDevices();
    this.writeHeader(0, zone, raw);
    this.syncDevices();
  }
}

type QueuedRun = { loff: number; bufs: Uint8Array[]; bytes: number };

/** Add the 64 KiB buffers (by index) that [loff, loff+len) touches. */
function addBufs(set: Set<number>, loff: number, len: number): void {
  for (let b = Math.floor(loff / PHYS_BUFFER); b * PHYS_BUFFER < loff + len; b++) set.add(b);
}

/** Whether [lo, hi) touches any 64 KiB buffer in the set. */
function touchesBufs(set: Set<number>, lo: number, hi: number): boolean {
  for (let b = Math.floor(lo / PHYS_BUFFER); b * PHYS_BUFFER < hi; b++) if (set.has(b)) return true;
  return false;
}

/**
 * A commit whose blocks and header the shim's thread is writing. finish()
 * waits for it; if the thread met an error, it writes everything again
 * itself (Linux may have dropped the pages of a failed write, so a second
 * sync alone proves nothing) and throws if that fails too, keeping the
 * commit for the next try: until it succeeds, no later commit can start
 * and reads keep seeing its blocks from memory.
 */
export class CommitInFlight {
  private settled = false;
  /** The thread's result once collected: 0 or -errno. */
  private result: number | null = null;
  /** The 64 KiB buffers the commit's writes touch. */
  private readonly bufs = new Set<number>();

  /** Bytes the commit's writes hold until it is settled. */
  readonly bytes: number;

  constructor(
    private readonly vols: VolumeSet,
    private job: object | null,
    /** Every write of the commit, in order: laid over reads, and written again by a retry. */
    private readonly runs: QueuedRun[],
    readonly zone: number,
    private readonly raw: Buffer,
  ) {
    let n = 0;
    for (const r of runs) {
      addBufs(this.bufs, r.loff, r.bytes);
      n += r.bytes;
    }
    this.bytes = n;
  }

  /** 'running', 'ok' (finish() will not wait), or 'failed' (finish() retries, and may throw). */
  state(): 'running' | 'ok' | 'failed' {
    if (this.settled) return 'ok';
    if (this.result === null) {
      if (!nativeShim()!.ioDone!(this.job!)) return 'running';
      this.collect();
    }
    return this.result === 0 ? 'ok' : 'failed';
  }

  private collect(): void {
    this.result = nativeShim()!.ioWait!(this.job!);
    this.job = null;
  }

  finish(): void {
    if (this.settled) return;
    if (this.result === null) this.collect();
    if (this.result !== 0) this.vols.redoCommit(this.runs, this.zone, this.raw); // throws if it fails again
    this.result = 0;
    this.settled = true;
    if (this.vols.behind === this) this.vols.behind = null;
  }

  /** Whether this commit writes anywhere in [lo, hi) (by 64 KiB buffer). */
  touches(lo: number, hi: number): boolean {
    return touchesBufs(this.bufs, lo, hi);
  }

  /** Put this commit's bytes for [loff, loff+len) over what was read into out at outOff. */
  overlay(loff: number, len: number, out: Uint8Array, outOff: number): void {
    const hi = loff + len;
    for (const run of this.runs) {
      if (run.loff >= hi || run.loff + run.bytes <= loff) continue;
      let at = run.loff;
      for (const b of run.bufs) {
        const s = Math.max(at, loff);
        const e = Math.min(at + b.length, hi);
        if (s < e) out.set(b.subarray(s - at, e - at), outOff + (s - loff));
        at += b.length;
        if (at >= hi) break;
      }
    }
  }
}
