// Turning one PFS's pending changes into new blocks: file data, directory
// entries, inodes, the inode index, and finally the PFS root inode, whose new
// bref the caller hangs into the super-root. Children are written before the
// blocktables that point at them, so nothing written refers to unwritten media.
import { applyUpdates, BlockWriter, inodeCheck, inodeComp, LeafUpdate, padTable, TreeContext, writeInode } from '../engine';
export { writeInode };
import {
  inodeBlockset,
  Blockref,
  BREF_FLAG_PFSROOT,
  BrefType,
  emptyBlockref,
  encMethods,
  IND_BYTES_MIN,
  IND_BYTES_NOM,
  InodeData,
  ObjType,
  OPFLAG_DIRECTDATA,
  SET_COUNT,
  setDirentHead,
  setInodeBlockset,
  ALLOC_MIN,
} from '../media';
import { physicalSize } from '../engine/writer';
import { cloneInode, DirEntry, Node, Pfs, ROOT_INUM } from './pfs';

const cmp = (a: LeafUpdate, b: LeafUpdate) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);

function treeContext(pfs: Pfs, w: BlockWriter, owner: InodeData): TreeContext {
  const check = inodeCheck(owner);
  const isDir = owner.meta.type === ObjType.DIRECTORY;
  return {
    reader: pfs.reader,
    // The reference's first level under a directory inode is 4 KiB (32 entries), 16 KiB elsewhere.
    indirectBytes: (depth) => (depth === 0 && isDir ? IND_BYTES_MIN : IND_BYTES_NOM),
    writeIndirect: (key, keybits, table) => w.writeIndirect(key, keybits, table, check),
  };
}

/** A DIRENT bref: short names live in the check area, long ones in a block of their own. */
function direntBref(w: BlockWriter, e: DirEntry, dir: InodeData): Blockref {
  const check = inodeCheck(dir);
  const comp = inodeComp(dir) & 15;
  let b: Blockref;
  if (e.name.length <= 64) {
    b = emptyBlockref();
    b.type = BrefType.DIRENT;
    b.key = e.key;
    b.methods = encMethods(check, comp);
    e.name.copy(b.check, 0);
    b.mirrorTid = w.tid;
    b.modifyTid = w.tid;
  } else {
    const blk = Buffer.alloc(ALLOC_MIN);
    e.name.copy(blk, 0);
    b = w.writeMeta(BrefType.DIRENT, e.key, 0, blk, check, comp);
  }
  setDirentHead(b, { inum: e.inum, namlen: e.name.length, type: e.type });
  return b;
}

function padded(buf: Buffer, size: number): Buffer {
  const out = Buffer.alloc(size);
  buf.copy(out);
  return out;
}

/** Content updates (file blocks or directory entries) of one node. */
function contentUpdates(pfs: Pfs, w: BlockWriter, n: Node): { updates: LeafUpdate[]; truncateFrom?: bigint } {
  const m = n.data.meta;
  const updates: LeafUpdate[] = [];
  if (n.dirents) {
    for (const [key, e] of n.dirents) updates.push({ key, bref: e ? direntBref(w, e, n.data) : null });
  }
  if (n.blocks) {
    const comp = inodeComp(n.data);
    const check = inodeCheck(n.data);
    for (const [lbase, buf] of n.blocks) {
      const psize = physicalSize(m.size, lbase);
      if (psize === 0) {
        updates.push({ key: lbase, bref: null });
        continue;
      }
      // The block itself when whole: what sealAhead started for it is found by that.
      // A short pending block (zeros past its end) the file has since grown over is padded.
      const data = psize === buf.length ? buf : psize < buf.length ? buf.subarray(0, psize) : padded(buf, psize);
      const b = w.writeData(lbase, data, comp, check, (n.compHeuristic ??= { n: 0 }));
      updates.push({ key: lbase, bref: b });
    }
  }
  if (n.holes) {
    for (const lbase of n.holes) if (!n.blocks?.has(lbase)) updates.push({ key: lbase, bref: null });
  }
  updates.sort(cmp);
  return { updates, truncateFrom: n.truncFrom };
}

/** Rebuild a node's blockset from its committed one plus its updates. Returns the new table. */
function rebuildBlockset(pfs: Pfs, w: BlockWriter, n: Node, extra: LeafUpdate[] = []): Blockref[] {
  const { updates, truncateFrom } = contentUpdates(pfs, w, n);
  if (n.data.meta.opFlags & OPFLAG_DIRECTDATA) return [];
  const all = extra.length ? [...updates, ...extra].sort(cmp) : updates;
  if (!all.length && truncateFrom === undefined) return inodeBlockset(n.data);
  const table = applyUpdates(treeContext(pfs, w, n.data), pfs.committedFileSet(n), SET_COUNT, all, { truncateFrom });
  const padded = padTable(table, SET_COUNT);
  setInodeBlockset(n.data, padded);
  return padded;
}

/** A PFS's part of a commit: the new root bref, and how to make memory match once it is on media. */
export interface PfsCommit {
  bref: Blockref;
  /** Called only after the volume header is written: pending state becomes committed. */
  apply(): void;
}

/**
 * Write one PFS's pending changes. Memory is not changed until `apply()`:
 * if the commit fails anywhere before the header is written, everything is
 * still pending and the next flush simply tries again.
 */
export function flushPfs(pfs: Pfs, w: BlockWriter): PfsCommit | null {
  if (!pfs.dirty) return null;
  const index: LeafUpdate[] = [];
  const done: [Node, Blockref][] = [];
  for (const n of [...pfs.live.values()]) {
    if (!n.dirty || n.inum === ROOT_INUM) continue;
    if (n.deleted && n.opens === 0) continue; // its index entry goes below
    const table = rebuildBlockset(pfs, w, n);
    const b = writeInode(w, n.data, n.inum, table);
    index.push({ key: n.inum, bref: b });
    done.push([n, b]);
  }
  const removed = [...pfs.removed];
  for (const inum of removed) {
    if (!pfs.removedNew.has(inum)) index.push({ key: inum, bref: null });
  }
  index.sort(cmp);
  const root = pfs.root;
  if (root.data === root.disk) root.data = cloneInode(root.data);
  root.data.meta.pfsInum = pfs.inumAllocator;
  const table = rebuildBlockset(pfs, w, root, index);
  const b = writeInode(w, root.data, pfs.entry.bref.key, table, pfs.entry.bref.flags | BREF_FLAG_PFSROOT);
  // update_tid of a PFS root: the last commit this node made together with
  // another node of its cluster (copies compare it to tell "behind" from "diverged").
  b.updateTid = pfs.replicated ? w.tid : pfs.entry.bref.updateTid;
  return {
    bref: b,
    apply: () => {
      for (const [n, nb] of done) pfs.committed(n, nb);
      for (const inum of removed) pfs.forget(inum);
      pfs.committed(root, b);
      pfs.entry = { ...pfs.entry, bref: b, inode: root.data };
    },
  };
}
