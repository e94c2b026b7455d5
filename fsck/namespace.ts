// The namespace of one PFS, as far as fsck needs it: every inode of the
// inode index (number, type, stored link count, parent) and every directory
// entry (directory, target, type, key), kept in typed arrays (about 40 bytes
// per inode and 25 per entry, no per-object allocation). After the walk the
// entries are matched against the inodes: entries pointing at nothing, link
// counts, directories with several names, orphans (inodes no entry reaches),
// and the directory tree's connectivity from the PFS root.
import { ObjType } from '../src/media';
import { Finding, hex16 } from './findings';

export const ROOT_INUM = 1n;

const KNOWN_TYPES = new Set<number>([
  ObjType.DIRECTORY,
  ObjType.REGFILE,
  ObjType.FIFO,
  ObjType.CDEV,
  ObjType.BDEV,
  ObjType.SOFTLINK,
  ObjType.SOCKET,
]);
export const knownObjType = (t: number): boolean => KNOWN_TYPES.has(t);

export const TYPE_NAMES: Record<number, string> = {
  0: 'unknown',
  1: 'directory',
  2: 'file',
  4: 'fifo',
  5: 'cdev',
  6: 'bdev',
  7: 'symlink',
  8: 'hardlink',
  9: 'socket',
  10: 'whiteout',
};

function growBig(a: BigUint64Array, n: number): BigUint64Array {
  const b = new BigUint64Array(n);
  b.set(a);
  return b;
}
function grow<T extends Uint8Array | Float64Array>(a: T, n: number): T {
  const b = new (a.constructor as { new (n: number): T })(n);
  b.set(a);
  return b;
}

/** What repair should do to a PFS's namespace (computed from the analysis). */
export interface NamespacePlan {
  pfs: string;
  /** Directory entries to delete, by directory and key. */
  remove: { dir: bigint; key: bigint }[];
  /** Directory entries whose type byte is wrong. */
  retype: { dir: bigint; key: bigint; type: number }[];
  /** Entries outside their name's hash window: move to a valid key. */
  rekey: { dir: bigint; key: bigint }[];
  /** Inodes no entry reaches: give them a name in lost+found. */
  reattach: { inum: bigint; type: number }[];
  /** Link counts to store once the entries above are in place. */
  nlinks: { inum: bigint; nlinks: bigint }[];
  /** Directories whose parent pointer is wrong. */
  iparent: { inum: bigint; iparent: bigint }[];
  /** The PFS root's inode allocator must reach past this inode number. */
  pfsInumAtLeast?: bigint;
  /** Whether reattached directories raise lost+found's link count. */
  orphanDirs: number;
  /** Inodes to give valid compression/check methods (the defaults, lz4 and xxhash64). */
  algo: { inum: bigint; comp?: number; check?: number }[];
}

export class PfsNamespace {
  // inodes
  n = 0;
  inum: BigUint64Array = new BigUint64Array(1024);
  type: Uint8Array = new Uint8Array(1024);
  nlinks: Float64Array = new Float64Array(1024);
  iparent: BigUint64Array = new BigUint64Array(1024);
  // directory entries
  m = 0;
  eDir: BigUint64Array = new BigUint64Array(1024);
  eChild: BigUint64Array = new BigUint64Array(1024);
  eKey: BigUint64Array = new BigUint64Array(1024);
  eType: Uint8Array = new Uint8Array(1024);
  /** Entries already condemned by the walk (e.g. duplicates): not counted. */
  rekey: { dir: bigint; key: bigint }[] = [];
  /** Inodes whose compression/check method bytes are invalid (new blocks could not be written). */
  badAlgo: { inum: bigint; comp: number; check: number }[] = [];
  rootNlinks = 1n;
  rootPfsInum = 0n;
  maxInum = 0n;

  constructor(readonly name: string) {}

  addInode(inum: bigint, type: number, nlinks: bigint, iparent: bigint): void {
    if (this.n === this.inum.length) {
      const n = this.n * 2;
      this.inum = growBig(this.inum, n);
      this.type = grow(this.type, n);
      this.nlinks = grow(this.nlinks, n);
      this.iparent = growBig(this.iparent, n);
    }
    this.inum[this.n] = inum;
    this.type[this.n] = type;
    this.nlinks[this.n] = nlinks > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(nlinks);
    this.iparent[this.n] = iparent;
    this.n++;
    if (inum > this.maxInum) this.maxInum = inum;
  }

  addEntry(dir: bigint, child: bigint, type: number, key: bigint): void {
    if (this.m === this.eDir.length) {
      const n = this.m * 2;
      this.eDir = growBig(this.eDir, n);
      this.eChild = growBig(this.eChild, n);
      this.eKey = growBig(this.eKey, n);
      this.eType = grow(this.eType, n);
    }
    this.eDir[this.m] = dir;
    this.eChild[this.m] = child;
    this.eKey[this.m] = key;
    this.eType[this.m] = type;
    this.m++;
  }

  /** comp_algo: method 0..3 in the low nibble; check_algo: 0..4. */
  checkAlgos(inum: bigint, comp: number, check: number): void {
    if ((comp & 15) > 3 || check > 4) this.badAlgo.push({ inum, comp, check });
  }

  /** Sort the inode table by number (the walk sees it in key order when the tree is sound). */
  private sortInodes(): void {
    let sorted = true;
    for (let i = 1; i < this.n; i++) if (this.inum[i - 1] >= this.inum[i]) sorted = false;
    if (sorted) return;
    const idx = Array.from({ length: this.n }, (_, i) => i).sort((a, b) =>
      this.inum[a] < this.inum[b] ? -1 : this.inum[a] > this.inum[b] ? 1 : 0,
    );
    const perm = <T extends { [i: number]: unknown }>(src: T, dst: T) => {
      for (let i = 0; i < idx.length; i++) dst[i] = src[idx[i]];
      return dst;
    };
    this.inum = perm(this.inum, new BigUint64Array(this.inum.length));
    this.type = perm(this.type, new Uint8Array(this.type.length));
    this.nlinks = perm(this.nlinks, new Float64Array(this.nlinks.length));
    this.iparent = perm(this.iparent, new BigUint64Array(this.iparent.length));
  }

  /** Index of inode `inum` in the (sorted) table, or -1. */
  find(inum: bigint): number {
    let lo = 0;
    let hi = this.n - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const v = this.inum[mid];
      if (v === inum) return mid;
      if (v < inum) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  /**
   * Match entries with inodes. Reports through `add` and returns what a
   * repair would change.
   */
  analyze(add: (f: Finding) => void, zone: number): NamespacePlan {
    this.sortInodes();
    const pfs = this.name;
    const plan: NamespacePlan = { pfs, remove: [], retype: [], rekey: this.rekey.slice(), reattach: [], nlinks: [], iparent: [], orphanDirs: 0, algo: [] };
    const err = (code: string, message: string, inum?: bigint, severity: Finding['severity'] = 'error') =>
      add({ severity, code, message, zone, pfs, inum: inum !== undefined ? hex16(inum) : undefined, fixable: true });

    for (const a of this.badAlgo) {
      err('inode-algo', `invalid comp_algo 0x${a.comp.toString(16)} / check_algo ${a.check} (new blocks could not be written)`, a.inum);
      plan.algo.push({ inum: a.inum, comp: (a.comp & 15) > 3 ? 2 : undefined, check: a.check > 4 ? 3 : undefined });
    }
    for (let i = 1; i < this.n; i++) {
      if (this.inum[i - 1] === this.inum[i]) err('duplicate-inode', `inode number appears twice in the inode index`, this.inum[i]);
    }

    const N = this.n;
    const count = new Uint32Array(N); // entries naming each inode, after removals
    const subdirs = new Uint32Array(N + 1); // directory entries to directories, per directory (N = root)
    const firstParent = new BigUint64Array(N);
    const hasParent = new Uint8Array(N);
    const removed = new Uint8Array(this.m);
    const childIdx = new Int32Array(this.m);
    const rootIdx = N; // the PFS root is not in the index

    const dirIndex = (inum: bigint): number => (inum === ROOT_INUM ? rootIdx : this.find(inum));

    // 1. every entry must name an existing inode of the same type
    for (let e = 0; e < this.m; e++) {
      const child = this.eChild[e];
      const dir = this.eDir[e];
      if (child === ROOT_INUM) {
        err('entry-to-root', `entry ${hex16(this.eKey[e])} in directory 0x${hex16(dir)} names the PFS root`, dir);
        plan.remove.push({ dir, key: this.eKey[e] });
        removed[e] = 1;
        childIdx[e] = -1;
        continue;
      }
      const ci = this.find(child);
      childIdx[e] = ci;
      if (ci < 0) {
        err('dangling-entry', `entry ${hex16(this.eKey[e])} in directory 0x${hex16(dir)} names inode 0x${hex16(child)}, which does not exist`, dir);
        plan.remove.push({ dir, key: this.eKey[e] });
        removed[e] = 1;
        continue;
      }
      if (this.eType[e] !== this.type[ci]) {
        err(
          'entry-type',
          `entry ${hex16(this.eKey[e])} in directory 0x${hex16(dir)} says ${TYPE_NAMES[this.eType[e]] ?? this.eType[e]}, inode 0x${hex16(child)} is a ${TYPE_NAMES[this.type[ci]] ?? this.type[ci]}`,
          dir,
        );
        plan.retype.push({ dir, key: this.eKey[e], type: this.type[ci] });
      }
    }

    // 2. a directory has exactly one name: keep the one its parent pointer agrees with
    for (let e = 0; e < this.m; e++) {
      if (removed[e]) continue;
      const ci = childIdx[e];
      if (this.type[ci] !== ObjType.DIRECTORY) continue;
      if (!hasParent[ci]) {
        hasParent[ci] = 1;
        firstParent[ci] = BigInt(e);
      } else {
        // Several names: prefer the entry in the directory iparent names.
        const prev = Number(firstParent[ci]);
        const keepNew = this.eDir[e] === this.iparent[ci] && this.eDir[prev] !== this.iparent[ci];
        const drop = keepNew ? prev : e;
        if (keepNew) firstParent[ci] = BigInt(e);
        err('dir-hardlink', `directory 0x${hex16(this.inum[ci])} has more than one name; extra entry ${hex16(this.eKey[drop])} in 0x${hex16(this.eDir[drop])}`, this.inum[ci]);
        plan.remove.push({ dir: this.eDir[drop], key: this.eKey[drop] });
        removed[drop] = 1;
      }
    }

    for (let e = 0; e < this.m; e++) {
      if (removed[e]) continue;
      const ci = childIdx[e];
      count[ci]++;
      if (this.type[ci] === ObjType.DIRECTORY) {
        const pi = dirIndex(this.eDir[e]);
        if (pi >= 0) subdirs[pi]++;
      }
    }

    // 3. connectivity: walk directories from the root over the entries left
    const order = Array.from({ length: this.m }, (_, i) => i)
      .filter((e) => !removed[e])
      .sort((a, b) => (this.eDir[a] < this.eDir[b] ? -1 : this.eDir[a] > this.eDir[b] ? 1 : 0));
    const edgesOf = (dir: bigint): number[] => {
      let lo = 0;
      let hi = order.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (this.eDir[order[mid]] < dir) lo = mid + 1;
        else hi = mid;
      }
      const out: number[] = [];
      for (let i = lo; i < order.length && this.eDir[order[i]] === dir; i++) out.push(order[i]);
      return out;
    };
    const reached = new Uint8Array(N);
    const reach = (start: bigint) => {
      const queue: bigint[] = [start];
      while (queue.length) {
        const d = queue.pop()!;
        for (const e of edgesOf(d)) {
          const ci = childIdx[e];
          if (reached[ci]) continue;
          reached[ci] = 1;
          if (this.type[ci] === ObjType.DIRECTORY) queue.push(this.inum[ci]);
        }
      }
    };
    reach(ROOT_INUM);

    // 4. orphans: no entry at all
    const finalParent = new Map<number, bigint | 'lost+found'>();
    for (let i = 0; i < N; i++) {
      if (count[i] !== 0) continue;
      const t = this.type[i];
      // The reference's own "destroy" leaves such inodes behind (and a crash
      // leaves open-but-unlinked files): reported, reattached by -y, not fatal.
      err(
        'orphan',
        `${TYPE_NAMES[t] ?? 'inode'} 0x${hex16(this.inum[i])} has no directory entry (nlinks ${this.nlinks[i]})`,
        this.inum[i],
        'warning',
      );
      plan.reattach.push({ inum: this.inum[i], type: t });
      if (t === ObjType.DIRECTORY) plan.orphanDirs++;
      finalParent.set(i, 'lost+found');
      count[i] = 1;
      reached[i] = 1;
      if (t === ObjType.DIRECTORY) reach(this.inum[i]);
    }
    // Directory cycles cut off from the root: detach one member each, into lost+found.
    for (let i = 0; i < N; i++) {
      if (reached[i] || this.type[i] !== ObjType.DIRECTORY) continue;
      const e = Number(firstParent[i]);
      err('dir-cycle', `directory 0x${hex16(this.inum[i])} is not reachable from the PFS root (directory loop)`, this.inum[i]);
      plan.remove.push({ dir: this.eDir[e], key: this.eKey[e] });
      removed[e] = 1;
      const pi = dirIndex(this.eDir[e]);
      if (pi >= 0) subdirs[pi]--;
      plan.reattach.push({ inum: this.inum[i], type: ObjType.DIRECTORY });
      plan.orphanDirs++;
      finalParent.set(i, 'lost+found');
      reached[i] = 1;
      reach(this.inum[i]);
    }
    for (let i = 0; i < N; i++) {
      if (!reached[i]) add({ severity: 'error', code: 'disconnected', zone, pfs, inum: hex16(this.inum[i]), fixable: false, message: `inode 0x${hex16(this.inum[i])} is only named from directories cut off from the root` });
    }

    // 5. link counts and parent pointers
    for (let i = 0; i < N; i++) {
      const inum = this.inum[i];
      const have = this.nlinks[i];
      if (this.type[i] === ObjType.DIRECTORY) {
        const want = 2 + subdirs[i];
        if (have !== 1 && have !== want) {
          if (!finalParent.has(i)) err('dir-nlinks', `directory nlinks is ${have}, expected ${want} (or 1: not tracked)`, inum, 'warning');
          plan.nlinks.push({ inum, nlinks: BigInt(want) });
        }
        let parent: bigint | undefined;
        const fp = finalParent.get(i);
        if (fp === undefined && hasParent[i]) parent = this.eDir[Number(firstParent[i])];
        if (parent !== undefined && this.iparent[i] !== parent) {
          err('dir-iparent', `directory's parent pointer is 0x${hex16(this.iparent[i])}, its entry is in 0x${hex16(parent)}`, inum);
          plan.iparent.push({ inum, iparent: parent });
        }
      } else {
        const want = count[i];
        if (have !== want) {
          // Too low is corruption (removing a name would free an inode still named);
          // too high only keeps the inode alive (as the reference's destroy leaves it).
          if (!finalParent.has(i)) {
            err('nlinks', `nlinks is ${have}, ${want} directory entr${want === 1 ? 'y names' : 'ies name'} it`, inum, have < want ? 'error' : 'warning');
          }
          plan.nlinks.push({ inum, nlinks: BigInt(want) });
        }
      }
    }
    const rootWant = 2 + subdirs[rootIdx];
    if (this.rootNlinks !== 1n && this.rootNlinks !== BigInt(rootWant)) {
      err('dir-nlinks', `PFS root nlinks is ${this.rootNlinks}, expected ${rootWant} (or 1: not tracked)`, ROOT_INUM, 'warning');
      plan.nlinks.push({ inum: ROOT_INUM, nlinks: BigInt(rootWant) });
    }

    // 6. the inode allocator must not hand out numbers already in use
    if (N && this.rootPfsInum < this.maxInum) {
      err('pfs-inum', `PFS root's next inode number 0x${hex16(this.rootPfsInum)} is below inode 0x${hex16(this.maxInum)}`, ROOT_INUM);
      plan.pfsInumAtLeast = this.maxInum;
    }
    return plan;
  }
}

export function planIsEmpty(p: NamespacePlan): boolean {
  return (
    !p.remove.length &&
    !p.retype.length &&
    !p.rekey.length &&
    !p.reattach.length &&
    !p.nlinks.length &&
    !p.iparent.length &&
    !p.algo.length &&
    p.pfsInumAtLeast === undefined
  );
}
