// The scrub: read every block of one node's copy of a PFS from its media and
// verify its check code, reporting what is damaged in the synchronizer's
// terms (an inode, or a data key of an inode), so that a forced pass from a
// good node can repair exactly that. It yields to the event loop every few
// hundred blocks; a commit in between can free blocks the walk still holds,
// which then show as damage: a repair of an item that was fine rewrites it
// with the same contents, so such false alarms cost a little I/O only.
import { BlockReader, MediaError } from '../engine';
import { BLOCKREF_BYTES, Blockref, brefRadix, BrefType, decodeBlockrefArray, decodeInode, inodeBlockset, InodeData, OPFLAG_DIRECTDATA } from '../media';

export interface VerifyStats {
  blocks: number;
  bytes: number;
  damaged: number;
}

/** A damaged item: inode `inum` whole (key undefined), or its leaf at `key`; `range` for a blocktable of the PFS index. */
export interface Damage {
  inum: bigint;
  key?: bigint;
  /** Keys of the PFS index a damaged index blocktable covered (the inodes there are unknown from this node). */
  range?: [bigint, bigint];
  why: string;
}

const YIELD_EVERY = 256;

export async function verifyPfs(reader: BlockReader, root: InodeData, onDamage: (d: Damage) => void, stats: VerifyStats): Promise<void> {
  let sinceYield = 0;
  const tick = async () => {
    if (++sinceYield >= YIELD_EVERY) {
      sinceYield = 0;
      await new Promise((r) => setImmediate(r));
    }
  };
  const read = (b: Blockref): Buffer | string => {
    stats.blocks++;
    const r = reader.readVerified(b);
    if ('bad' in r) {
      stats.damaged++;
      return r.bad;
    }
    stats.bytes += r.bytes.length;
    return r.bytes;
  };

  // One inode's tree: blocktables and leaves. `inum` 0 is the PFS index (the root's tree).
  const walkTree = async (set: readonly Blockref[], inum: bigint, depth: number): Promise<void> => {
    if (depth > 64) throw new MediaError(`inode ${inum}: tree too deep (loop?)`);
    for (const b of set) {
      if (b.type === BrefType.EMPTY) continue;
      await tick();
      if (b.type === BrefType.INDIRECT) {
        const got = read(b);
        if (typeof got === 'string') {
          const end = b.keybits >= 64 ? (1n << 64n) - 1n : b.key + (1n << BigInt(b.keybits)) - 1n;
          onDamage(inum === 0n ? { inum: 0n, range: [b.key, end], why: got } : { inum, why: got });
          continue;
        }
        await walkTree(decodeBlockrefArray(got, 0, got.length / BLOCKREF_BYTES), inum, depth + 1);
      } else if (b.type === BrefType.INODE) {
        const got = read(b);
        if (typeof got === 'string') {
          onDamage({ inum: b.key, why: got });
          continue;
        }
        let ip: InodeData;
        try {
          ip = decodeInode(got);
        } catch (e) {
          onDamage({ inum: b.key, why: (e as Error).message });
          continue;
        }
        if (!(ip.meta.opFlags & OPFLAG_DIRECTDATA)) await walkTree(inodeBlockset(ip), b.key, 0);
      } else if (brefRadix(b) !== 0) {
        // Data blocks and long directory names.
        const got = read(b);
        if (typeof got === 'string') onDamage({ inum, key: b.key, why: got });
      }
    }
  };
  await walkTree(inodeBlockset(root), 0n, 0);
}
