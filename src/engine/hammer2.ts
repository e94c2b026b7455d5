// A mounted HAMMER2 device: volumes, the chosen volume header, the block
// reader, and the super-root with its PFS inodes.
import {
  Blockref,
  BrefType,
  decodeInode,
  initCodecs,
  inodeBlockset,
  InodeData,
  KEY_MAX,
  ObjType,
  PfsType,
  VolumeHeader,
} from '../media';
import { VolumeSet } from '../store';
import { BlockReader, BlockReaderOptions } from './blocks';
import { hex, MediaError } from './errors';
import { scanRange } from './tree';

export interface PfsEntry {
  name: string;
  /** The super-root's bref to the PFS inode. */
  bref: Blockref;
  inode: InodeData;
}

export interface OpenOptions extends BlockReaderOptions {
  writable?: boolean;
  lock?: boolean;
  /** Force a volume header slot (0..3) instead of the best one. */
  zone?: number;
}

export class Hammer2Device {
  readonly reader: BlockReader;

  private constructor(
    readonly vols: VolumeSet,
    opts: OpenOptions,
  ) {
    this.reader = new BlockReader(vols, opts);
  }

  static async open(spec: string, opts: OpenOptions = {}): Promise<Hammer2Device> {
    await initCodecs();
    const vols = VolumeSet.open(spec, { writable: !!opts.writable, lock: opts.lock ?? true, zone: opts.zone });
    return new Hammer2Device(vols, opts);
  }

  get header(): VolumeHeader {
    return this.vols.header;
  }

  /** The last super-root decoded, and the blockref it came from (every commit asks again). */
  private sroot: { bref: Blockref; check: Buffer; inode: InodeData } | null = null;

  /** The super-root inode the volume header points at. Callers must not change it. */
  superRoot(): { bref: Blockref; inode: InodeData } {
    const b = this.header.sroot.find((x) => x.type !== BrefType.EMPTY);
    if (!b) throw new MediaError('volume header has no super-root');
    if (b.type !== BrefType.INODE) throw new MediaError(`super-root blockref has type ${b.type}, expected inode`, b.dataOff);
    const c = this.sroot;
    if (c && c.bref.dataOff === b.dataOff && c.bref.methods === b.methods && c.check.equals(b.check)) return { bref: b, inode: c.inode };
    const inode = decodeInode(this.reader.readPhysical(b));
    if (inode.meta.pfsType !== PfsType.SUPROOT && inode.meta.type !== ObjType.DIRECTORY) {
      throw new MediaError(`super-root inode at ${hex(b.dataOff)} is not a directory`, b.dataOff);
    }
    this.rememberSuperRoot(b, inode);
    return { bref: b, inode };
  }

  /** Forget decoded metadata (a failed commit may have left some of its own, never written). */
  forgetCached(): void {
    this.reader.clearCache();
    this.sroot = null;
  }

  /** A super-root a commit just wrote at `b` (the next commit starts from it). */
  rememberSuperRoot(b: Blockref, inode: InodeData): void {
    this.sroot = { bref: { ...b }, check: Buffer.from(b.check), inode };
  }

  /** Every PFS inode under the super-root, in key (name hash) order. */
  listPfs(): PfsEntry[] {
    const sroot = this.superRoot();
    const out: PfsEntry[] = [];
    scanRange(this.reader, inodeBlockset(sroot.inode), 0n, KEY_MAX, (b) => {
      if (b.type !== BrefType.INODE) return;
      const inode = decodeInode(this.reader.readPhysical(b));
      const name = inode.filename.toString('utf8');
      out.push({ name, bref: b, inode });
    });
    return out;
  }

  findPfs(label: string): PfsEntry | undefined {
    return this.listPfs().find((p) => p.name === label);
  }

  close(): void {
    this.vols.close();
  }
}

