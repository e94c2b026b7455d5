// Mirroring a master PFS into a slave PFS of its cluster: read a stream of
// what changed after the slave's synchronized transaction id, apply it as
// one commit of the slave. The slave's PFS root bref records the master tid
// it holds (modify_tid), exactly as a copy's does (src/sync).
import { BlockReader, FsError } from '../engine';
import { Hammer2Fs } from '../fs';
import { InodeData, PfsType, pfsTypeName, uuidToString } from '../media';
import { syncedTid } from '../sync';
import { StreamApplier, ApplyStats } from './apply';
import { newReadStats, pfsChangeRecords, readPfsChanges, ReadStats } from './read';
import { ByteSource, encodeHeader, ParsedStream, Rec, StreamError, StreamFeeder, StreamHeader, StreamParser } from './stream';
import { PASS_TABLE_BYTES, PassTables } from './tables';

/** The master PFS `label` of `h` (its committed state) and its tid. */
function masterOf(h: Hammer2Fs, label: string) {
  const e = h.dev.findPfs(label);
  if (!e) throw new FsError('ENOENT', `no PFS labelled "${label}"`);
  if (e.inode.meta.pfsType === PfsType.SUPROOT) throw new FsError('EINVAL', 'the super-root cannot be mirrored');
  return e;
}

/**
 * mirror-read: the stream that brings a slave synchronized at `since` to
 * the committed state of PFS `label` (header first, then the records).
 */
export function mirrorRead(h: Hammer2Fs, label: string, since: bigint, emit: (b: Buffer) => void): { header: StreamHeader; stats: ReadStats } {
  const e = masterOf(h, label);
  return mirrorReadRoot(h.dev.reader, e.inode, e.bref.modifyTid, label, since, emit);
}

/**
 * mirror-read from a committed PFS root given directly (a mounted master's
 * pinned state, read from its image while the daemon goes on).
 */
export function mirrorReadRoot(
  reader: BlockReader,
  root: InodeData,
  tid: bigint,
  label: string,
  since: bigint,
  emit: (b: Buffer) => void,
): { header: StreamHeader; stats: ReadStats } {
  const s = mirrorReadBatches(reader, root, tid, label, since);
  for (const batch of s.batches) for (const b of batch) emit(b);
  return { header: s.header, stats: s.stats };
}

/**
 * The same stream in batches of records, header first, produced only as
 * far as they are taken: a daemon streams its own committed state this way
 * in slices between its other requests. Refuses at once (not at the first
 * batch) a `since` after `tid`.
 */
export function mirrorReadBatches(
  reader: BlockReader,
  root: InodeData,
  tid: bigint,
  label: string,
  since: bigint,
): { header: StreamHeader; stats: ReadStats; batches: Generator<Buffer[], void, undefined> } {
  if (since > tid) throw new FsError('EINVAL', `"${label}" is at transaction ${tid}, before ${since}: nothing to read from there`);
  const header: StreamHeader = { clid: Buffer.from(root.meta.pfsClid), label, since, to: tid };
  const stats = newReadStats();
  function* batches(): Generator<Buffer[], void, undefined> {
    yield [encodeHeader(header)];
    yield* pfsChangeRecords(reader, root, since, stats);
  }
  return { header, stats, batches: batches() };
}

/** Why a stream of `header` cannot go into slave PFS `label` of `h`, or null. */
export function slaveRefusal(h: Hammer2Fs, label: string, header: StreamHeader): string | null {
  const e = h.dev.findPfs(label);
  if (!e) return `no PFS labelled "${label}" (make one: hammer2 -t SLAVE -u ${uuidToString(header.clid)} pfs-create ${label})`;
  const m = e.inode.meta;
  if (m.pfsType !== PfsType.SLAVE) return `PFS "${label}" is a ${pfsTypeName(m.pfsType)}: mirroring goes into a SLAVE (pfs-downgrade it, or make one with pfs-create -t SLAVE -u CLID)`;
  if (!m.pfsClid.equals(header.clid)) return `PFS "${label}" belongs to cluster ${uuidToString(m.pfsClid)}, the stream to ${uuidToString(header.clid)}`;
  const at = syncedTid(e.bref, e.inode);
  if (header.since > at) {
    return `the stream starts at transaction ${header.since} but the slave holds ${at}: read it from there (hammer2 mirror-read MASTER ${at})`;
  }
  if (at > header.to) return `the slave is at transaction ${at}, newer than the stream's ${header.to} (is the source behind, or another master?)`;
  return null;
}

export interface WriteResult {
  header: StreamHeader;
  stats: ApplyStats;
  /** The slave's transaction id before. */
  from: bigint;
}

/**
 * mirror-write: apply a stream to slave PFS `label` of writable `h` as one
 * commit. A refused, corrupted or truncated stream leaves the slave as it
 * was (the commit is rolled back) and throws with the reason.
 */
export function mirrorWrite(h: Hammer2Fs, label: string, src: ByteSource | ParsedStream, o: { keepPfs?: boolean; ahead?: WriteAhead } = {}): WriteResult {
  let header: StreamHeader;
  let next: () => { type: Rec; payload: Buffer } | null;
  if ('records' in src) {
    header = src.header;
    let i = 0;
    next = () => (i < src.records.length ? src.records[i++] : null);
  } else {
    const parser = new StreamParser(src);
    header = parser.header();
    next = () => parser.next();
  }
  const why = slaveRefusal(h, label, header);
  if (why) throw new FsError('EINVAL', why);
  const e = h.dev.findPfs(label)!;
  const from = syncedTid(e.bref, e.inode);
  let stats: ApplyStats | null = null;
  h.commitPfsRoot(
    label,
    (w) => {
      const a = new StreamApplier(h.dev.reader, w, e.inode, o.ahead?.tables);
      for (let r = next(); r; r = next()) a.push(r.type, r.payload);
      stats = a.stats;
      return { root: a.root(), modifyTid: header.to, updateTid: header.to };
    },
    { minTid: header.to, keepPfs: o.keepPfs },
  );
  return { header, stats: stats!, from };
}

/**
 * What applying a stream will read of slave `label`, read while the stream
 * is still arriving (a daemon spooling it): push() each chunk as it comes,
 * then stop() it and hand it to mirrorWrite with the whole stream. The
 * reading runs in slices between the daemon's other work, behind the
 * stream rather than holding it up (what it has not read by the end,
 * applying reads itself). It only reads and never refuses: anything wrong
 * with the stream or the slave stops it, and mirrorWrite then finds and
 * reports it.
 */
export interface WriteAhead {
  push(chunk: Buffer): void;
  stop(): void;
  /**
   * The stream has all arrived: parse what is left (without reading ahead
   * for it) and stop. Returns the whole stream's records, checked, for
   * mirrorWrite to apply without parsing the spooled bytes again; null if
   * anything went wrong or the stream was too large to keep (then
   * mirrorWrite parses the spool, and reports what is wrong).
   */
  finish(): ParsedStream | null;
  readonly tables: PassTables;
  /** Pieces pushed and not read ahead yet (0 once it has caught up, or stopped). */
  readonly backlog: number;
}

/**
 * A stream up to this size (payloads) is kept parsed as it arrives, so the
 * apply at its end does not parse the spooled copy again (a 1 % pass of
 * 100 000 files is ~4.5 MiB; a first copy is spooled and parsed anew).
 */
const KEEP_STREAM_BYTES = 64 << 20;

/** How long one slice of reading ahead may hold the daemon's event loop. */
const AHEAD_SLICE_MS = 4;

export function mirrorWriteAhead(h: Hammer2Fs, label: string, keepBytes = KEEP_STREAM_BYTES): WriteAhead {
  const tables = new PassTables(h.dev.reader, PASS_TABLE_BYTES);
  let a: StreamApplier | null = null;
  let stopped = false;
  let failed = false;
  let reading = true;
  let kept: { type: Rec; payload: Buffer }[] | null = [];
  let keptBytes = 0;
  const queue: Buffer[] = [];
  let scheduled = false;
  const feeder = new StreamFeeder((type, payload, header) => {
    if (kept) {
      kept.push({ type, payload });
      keptBytes += payload.length + 32;
      if (keptBytes > keepBytes) kept = null;
    }
    if (!reading) return;
    if (!a) {
      const e = h.dev.findPfs(label);
      if (!e || slaveRefusal(h, label, header)) throw new StreamError('not for this slave');
      a = new StreamApplier(h.dev.reader, null, e.inode, tables);
    }
    a.push(type, payload);
  });
  const run = () => {
    scheduled = false;
    const t0 = Date.now();
    try {
      while (!stopped && queue.length && Date.now() - t0 < AHEAD_SLICE_MS) feeder.push(queue.shift()!);
    } catch {
      failed = stopped = true;
    }
    if (stopped) queue.length = 0;
    else if (queue.length) schedule();
  };
  const schedule = () => {
    if (scheduled) return;
    scheduled = true;
    setImmediate(run);
  };
  return {
    tables,
    get backlog() {
      return queue.length;
    },
    push: (chunk) => {
      if (stopped) return;
      // Small pieces, so that a slice ends soon after its time is up.
      for (let o = 0; o < chunk.length; o += 8192) queue.push(chunk.subarray(o, o + 8192));
      schedule();
    },
    stop: () => {
      stopped = true;
      queue.length = 0;
    },
    finish: () => {
      if (!stopped && kept) {
        reading = false;
        try {
          while (queue.length) feeder.push(queue.shift()!);
        } catch {
          failed = true;
        }
      }
      stopped = true;
      queue.length = 0;
      if (failed || !kept || !feeder.ended || feeder.trailing || !feeder.header) return null;
      return { header: feeder.header, records: kept };
    },
  };
}

/** mirror-copy: one pass from master PFS `mlabel` of `m` into slave `slabel` of writable `s`, no stream in between. */
export function mirrorCopy(m: Hammer2Fs, mlabel: string, s: Hammer2Fs, slabel: string, throttle?: (bytes: number) => void): WriteResult & { read: ReadStats } {
  const me = masterOf(m, mlabel);
  return mirrorCopyFrom(m.dev.reader, me.inode, me.bref.modifyTid, mlabel, s, slabel, throttle);
}

/**
 * One pass from a master's committed root (read through `reader`) into
 * slave `slabel` of `s`. `throttle` is told the bytes of each record (a
 * bandwidth limit sleeps there).
 */
export function mirrorCopyFrom(
  reader: BlockReader,
  root: InodeData,
  tid: bigint,
  mlabel: string,
  s: Hammer2Fs,
  slabel: string,
  throttle?: (bytes: number) => void,
): WriteResult & { read: ReadStats } {
  const se = s.dev.findPfs(slabel);
  const since = se ? syncedTid(se.bref, se.inode) : 0n;
  const header: StreamHeader = { clid: Buffer.from(root.meta.pfsClid), label: mlabel, since, to: tid };
  const why = slaveRefusal(s, slabel, header);
  if (why) throw new FsError('EINVAL', why);
  let stats: ApplyStats | null = null;
  let read: ReadStats | null = null;
  s.commitPfsRoot(
    slabel,
    (w) => {
      const a = new StreamApplier(s.dev.reader, w, se!.inode);
      read = readPfsChanges(reader, root, since, (rec) => {
        throttle?.(rec.length);
        a.push(rec[0], rec.subarray(8, 8 + rec.readUInt32LE(4)));
      });
      if (!a.done) throw new StreamError('the master walk did not end');
      stats = a.stats;
      return { root: a.root(), modifyTid: header.to, updateTid: header.to };
    },
    { minTid: header.to },
  );
  return { header, stats: stats!, from: since, read: read! };
}
