// A PFS read through the fs layer as a map path -> description (type,
// mode, ownership, times, size, link count, content hash or link target):
// two PFSs hold the same tree exactly when their maps are equal.
import { createHash } from 'node:crypto';
import { FreemapAllocator } from '../../src/engine';
import { newImage } from './cli';
import { checkHammer2 } from '../../fsck';
import { haveRef, refFsck } from './env';
import { Hammer2Fs, Node, Pfs } from '../../src/fs';
import { ObjType } from '../../src/media';

export function pfsTree(pfs: Pfs): Map<string, string> {
  const out = new Map<string, string>();
  const visit = (n: Node, p: string) => {
    const m = n.data.meta;
    let what = '';
    if (m.type === ObjType.REGFILE) what = createHash('sha256').update(pfs.read(n, 0, Number(m.size))).digest('hex');
    else if (m.type === ObjType.SOFTLINK) what = pfs.readlink(n).toString();
    out.set(p, [m.type, m.mode, m.uid.toString('hex'), m.gid.toString('hex'), m.mtime, m.ctime, m.size, m.nlinks, m.inum, m.compAlgo, m.checkAlgo, what].join(' '));
    if (m.type !== ObjType.DIRECTORY) return;
    for (const e of pfs.readdir(n)) visit(pfs.getInode(e.inum), `${p}/${e.name.toString()}`);
  };
  visit(pfs.root, '');
  return out;
}

/** The tree of `label` on `img`, read by a fresh read-only open. */
export async function imageTree(img: string, label: string): Promise<Map<string, string>> {
  const fs = await Hammer2Fs.open(img, { lock: false });
  try {
    const p = fs.pfs(label);
    if (!p) throw new Error(`no PFS ${label} on ${img}`);
    return pfsTree(p);
  } finally {
    fs.close();
  }
}

/** Paths whose descriptions differ (missing on either side included). */
export function treeDiff(a: Map<string, string>, b: Map<string, string>): string[] {
  const out: string[] = [];
  for (const [k, v] of a) if (b.get(k) !== v) out.push(`${k}: ${v} | ${b.get(k)}`);
  for (const k of b.keys()) if (!a.has(k)) out.push(`${k}: missing | ${b.get(k)}`);
  return out;
}

/** Deterministic file contents: incompressible (a hash chain), or text-like when `comp`. */
export function content(seed: number, len: number, comp = false): Buffer {
  const b = Buffer.alloc(len);
  if (comp) {
    for (let i = 0; i < len; i++) b[i] = 97 + ((i >> 7) % 5);
    return b;
  }
  for (let i = 0; i < len; i += 32) createHash('sha256').update(`${seed}:${i}`).digest().copy(b, i);
  return b;
}

let clock = 1_700_000_000_000_000n;
/** A later timestamp (microseconds) at every call. */
export const tick = (): bigint => (clock += 1000n);

/** A regular file with `data` in `dir`, written through the fs layer. */
export function mkfile(p: Pfs, dir: Node, name: string, data: Buffer): Node {
  const n = p.create(dir, Buffer.from(name), ObjType.REGFILE, 0o644, { uid: 0, gid: 0 }, tick());
  if (data.length) p.write(n, 0, data, tick());
  return n;
}

/** An image opened read-write through the fs layer with the freemap allocator. */
export const openRw = (img: string, lock = false): Promise<Hammer2Fs> =>
  Hammer2Fs.open(img, { writable: true, lock, allocator: (d) => new FreemapAllocator(d.vols, d.reader, d.header) });

/**
 * Two fresh images open read-write through the fs layer: A with PFS DATA,
 * B with a node of the same cluster (same cluster id, empty). Closed at teardown.
 */
export async function twoNodes(
  t: { teardown: (fn: () => void) => void; equal: (a: unknown, b: unknown, m?: string) => void },
  bytes: number,
): Promise<{ A: { dir: string; img: string }; B: { dir: string; img: string }; a: Hammer2Fs; b: Hammer2Fs }> {
  const A = await newImage(t, bytes, ['DATA']);
  const B = await newImage(t, bytes, ['none']);
  const a = await openRw(A.img);
  const b = await openRw(B.img);
  t.teardown(() => {
    a.close();
    b.close();
  });
  b.createPfs('DATA', { clid: a.dev.findPfs('DATA')!.inode.meta.pfsClid });
  return { A, B, a, b };
}

/** Our fsck and, where it is built, the reference fsck_hammer2 must both call `img` clean. */
export async function fsckBoth(t: { equal: (a: unknown, b: unknown, m?: string) => void }, img: string, what: string): Promise<void> {
  const r = await checkHammer2(img, { lock: false });
  t.equal(r.report.errors, 0, `${what}: our fsck finds no errors`);
  if (haveRef('fsck_hammer2')) t.equal(refFsck(img).status, 0, `${what}: reference fsck passes`);
}

/** The root bref modify_tid of PFS `label` on `img` (read without the lock: a daemon may hold the image). */
export async function pfsTid(img: string, label: string): Promise<bigint> {
  const h = await Hammer2Fs.open(img, { lock: false });
  try {
    return h.dev.findPfs(label)!.bref.modifyTid;
  } finally {
    h.close();
  }
}
