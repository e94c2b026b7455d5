// The administration requests of the hammer2 command, carried out on one
// open image. A daemon serves them over its control channel as
// transactions of the running mount; on an unmounted image the command
// runs the very same table in-process. Results are plain JSON.
import { FsError } from '../engine';
import { Hammer2Fs, Pfs, badPfsLabel } from '../fs';
import {
  Blockref,
  CheckMethod,
  CompMethod,
  encodeInode,
  brefStats,
  pfsListType,
  PfsType,
  uuidFromString,
  uuidToString,
  InodeData,
} from '../media';
import type { ControlOp } from '../control';
import { syncedTid } from '../sync';

/** A PFS mounted by the daemon that serves these requests. */
export interface MountedPfs {
  label: string;
  mountpoint: string;
  readonly: boolean;
  /** hammer2 emergency-mode-enable is in force. */
  emergency?: boolean;
}

export interface AdminHost {
  fs: Hammer2Fs;
  /** Mounts of this image (none when the image is opened by the command itself). */
  mounts(): MountedPfs[];
  /** Extra facts for `info` (pid, options). */
  describe(): Record<string, unknown>;
  /**
   * Bring in what the kernel still caches for the mounts of PFS `label`
   * (pages written under the writeback cache that it has not sent yet), so
   * a snapshot or sync taken now holds every write() made before it.
   */
  settle?(label: string | null): Promise<void>;
}

export interface PfsInfo {
  name: string;
  /** What pfs-list prints: MASTER, SNAPSHOT, SLAVE, ... */
  type: string;
  pfsType: number;
  pfsSubtype: number;
  clid: string;
  fsid: string;
  inum: string;
  lsnapTid: string;
  /** The PFS root bref's modify_tid: its last transaction (for a slave or copy, the master tid it holds). */
  tid: string;
  /** Its update_tid: the last transaction shared with another node of the cluster. */
  sharedTid: string;
  mountpoint: string | null;
}

const str = (args: Record<string, unknown>, key: string, required = true): string | undefined => {
  const v = args[key];
  if (v === undefined && !required) return undefined;
  if (typeof v !== 'string' || (required && v === '')) throw new FsError('EINVAL', `missing "${key}"`);
  return v;
};

/** Compression byte (algorithm | level << 4) as setcomp accepts it. */
export function validComp(v: number): boolean {
  const algo = v & 15;
  const level = v >> 4;
  if (!Number.isInteger(v) || v < 0 || v > 255 || algo > CompMethod.ZLIB) return false;
  return level === 0 || (algo === CompMethod.ZLIB && level >= 6 && level <= 9);
}
export const validCheck = (v: number): boolean => Number.isInteger(v) && v >= CheckMethod.NONE && v <= CheckMethod.SHA192;

/** The default name of a snapshot: LABEL.YYYYMMDD.HHMMSS in local time, as the reference names it. */
export function snapshotName(label: string, d = new Date()): string {
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${label}.${p(d.getFullYear(), 4)}${p(d.getMonth() + 1)}${p(d.getDate())}.${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

export function adminOps(host: AdminHost): Record<string, ControlOp> {
  const h2 = host.fs;
  const mountedAt = (label: string) => host.mounts().find((m) => m.label === label)?.mountpoint ?? null;
  const pfsInfo = (name: string, ip: InodeData, bref?: Blockref): PfsInfo => ({
    name,
    type: pfsListType(ip.meta.pfsType, ip.meta.pfsSubtype),
    pfsType: ip.meta.pfsType,
    pfsSubtype: ip.meta.pfsSubtype,
    clid: uuidToString(ip.meta.pfsClid),
    fsid: uuidToString(ip.meta.pfsFsid),
    inum: ip.meta.pfsInum.toString(),
    lsnapTid: ip.meta.pfsLsnapTid.toString(),
    // A node that holds nothing yet is synchronized to nothing, whatever its root says.
    tid: (bref ? syncedTid(bref, ip) : 0n).toString(),
    sharedTid: (bref?.updateTid ?? 0n).toString(),
    mountpoint: mountedAt(name),
  });
  const pfsNamed = (label: string): Pfs => {
    const p = h2.pfs(label);
    if (!p) throw new FsError('ENOENT', `no PFS labelled "${label}"`);
    return p;
  };
  const inode = (args: Record<string, unknown>) => {
    const pfs = pfsNamed(str(args, 'label')!);
    const inum = BigInt(str(args, 'inum')!);
    return { pfs, node: pfs.getInode(inum) };
  };
  const header = () => {
    const h = h2.dev.header;
    return {
      fsid: uuidToString(h.fsid),
      version: h.version,
      volumes: h2.dev.vols.volumes.map((v) => ({ path: v.dev.path, size: v.size })),
      size: (h.totalSize || h.voluSize).toString(),
      allocatorSize: h.allocatorSize.toString(),
      allocatorFree: String(h2.freeBytes()),
      mirrorTid: h.mirrorTid.toString(),
      freemapTid: h.freemapTid.toString(),
    };
  };

  const ops: Record<string, ControlOp> = {
    info: { changes: false, run: () => ({ ...host.describe(), writable: h2.writable, mounts: host.mounts(), header: header() }) },
    'pfs-list': {
      changes: false,
      run: () => h2.dev.listPfs().map((p) => pfsInfo(p.name, p.inode, p.bref)),
    },
    'pfs-get': {
      changes: false,
      run: (args) => {
        const label = str(args, 'label')!;
        const p = h2.dev.findPfs(label);
        if (!p) throw new FsError('ENOENT', `no PFS labelled "${label}"`);
        return pfsInfo(p.name, p.inode, p.bref);
      },
    },
    'pfs-create': {
      changes: true,
      run: (args) => {
        const label = str(args, 'label')!;
        const clidStr = str(args, 'clid', false);
        let clid: Buffer | undefined;
        if (clidStr !== undefined) {
          try {
            clid = uuidFromString(clidStr);
          } catch {
            throw new FsError('EINVAL', `badly formed uuid "${clidStr}"`);
          }
        }
        // The reference's default: MASTER, or SLAVE when joining a cluster by id.
        const type = typeof args.type === 'number' ? args.type : clid ? PfsType.SLAVE : PfsType.MASTER;
        h2.createPfs(label, { type, clid });
        return pfsInfo(label, h2.dev.findPfs(label)!.inode, h2.dev.findPfs(label)!.bref);
      },
    },
    'pfs-delete': {
      changes: true,
      run: (args) => {
        const label = str(args, 'label')!;
        const at = mountedAt(label);
        if (at) throw new FsError('EBUSY', `PFS "${label}" is mounted on ${at}; unmount it first`);
        h2.deletePfs(label);
        return { label };
      },
    },
    snapshot: {
      changes: true,
      run: async (args) => {
        await host.settle?.(str(args, 'label')!);
        const source = pfsNamed(str(args, 'label')!);
        const name = str(args, 'name', false) || snapshotName(source.name);
        const why = badPfsLabel(name);
        if (why) throw new FsError('EINVAL', why);
        h2.snapshotPfs(source, name);
        return pfsInfo(name, h2.dev.findPfs(name)!.inode, h2.dev.findPfs(name)!.bref);
      },
    },
    'inode-get': {
      changes: false,
      run: (args) => {
        const { node } = inode(args);
        // What the inode's subtree occupies, as its committed bref sums it up.
        const st = node.bref ? brefStats(node.bref) : { dataCount: 0n, inodeCount: 0n };
        return { raw: encodeInode(node.data).toString('base64'), dataCount: st.dataCount.toString(), inodeCount: st.inodeCount.toString() };
      },
    },
    'inode-set': {
      changes: true,
      run: (args) => {
        const { pfs, node } = inode(args);
        const comp = typeof args.comp === 'number' ? args.comp : undefined;
        const check = typeof args.check === 'number' ? args.check : undefined;
        if (comp !== undefined && !validComp(comp)) throw new FsError('EINVAL', `invalid compression 0x${comp.toString(16)}`);
        if (check !== undefined && !validCheck(check)) throw new FsError('EINVAL', `invalid check method ${check}`);
        pfs.setMethods(node, { comp, check });
        return { comp: node.data.meta.compAlgo, check: node.data.meta.checkAlgo };
      },
    },
    sync: {
      changes: true,
      run: async () => {
        await host.settle?.(null);
        const r = h2.flush();
        return { tid: (r?.tid ?? h2.dev.header.mirrorTid).toString() };
      },
    },
    bulkfree: {
      changes: true,
      run: (_args, ctx) => {
        const before = h2.freeBytes();
        const r = h2.bulkfree((done, total) => ctx.progress({ what: 'scan', done, total }));
        return { ...r, freeBefore: before, freeAfter: h2.freeBytes() };
      },
    },
    destroy: {
      changes: true,
      run: (args) => {
        const { pfs, node } = inode(args);
        const e = pfs.destroyEntry(node, Buffer.from(str(args, 'name')!), BigInt(Date.now()) * 1000n);
        h2.flush();
        return { inum: e.inum.toString() };
      },
    },
    'destroy-inum': {
      changes: true,
      run: (args) => {
        const pfs = pfsNamed(str(args, 'label')!);
        const s = str(args, 'inum')!;
        if (!/^\d+$/.test(s)) throw new FsError('EINVAL', `"${s}" is not an inode number`);
        pfs.destroyInode(BigInt(s));
        h2.flush();
        return {};
      },
    },
    // A property of a mounted PFS, as the reference's: it ends with the mount.
    'emergency-mode': {
      changes: true,
      run: (args) => {
        const label = str(args, 'label')!;
        if (!mountedAt(label)) throw new FsError('EINVAL', `PFS "${label}" is not mounted: emergency mode applies to a mounted PFS`);
        pfsNamed(label).emergency = args.enable === true;
        return { label, emergency: args.enable === true };
      },
    },
    growfs: {
      changes: true,
      run: (args, ctx) => {
        const s = str(args, 'size', false);
        if (s !== undefined && !/^\d+$/.test(s)) throw new FsError('EINVAL', `bad size "${s}"`);
        const r = h2.growfs(s === undefined ? undefined : Number(s), (what, done, total) => ctx.progress({ what, done, total }));
        return { ...r, free: h2.freeBytes() };
      },
    },
  };
  // A read-only image refuses every change with one message, before any work.
  for (const op of Object.values(ops)) {
    if (!op.changes) continue;
    const run = op.run;
    op.run = (args, ctx) => {
      if (!h2.writable) throw new FsError('EROFS', `${h2.dev.vols.volumes.map((v) => v.dev.path).join(':')} is open read-only (mounted with -o ro?)`);
      return run(args, ctx);
    };
  }
  return ops;
}
