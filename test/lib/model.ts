// A plain in-memory model of a directory tree, and a random operation
// generator that applies the same steps to the model and to a HAMMER2 PFS
// (through the fs layer or through a mounted directory).
import { Rng as BaseRng } from '../../fsck/crash-lib';

export type MNode =
  | { kind: 'file'; id: number; data: Buffer; mode: number }
  | { kind: 'dir'; id: number; mode: number; entries: Map<string, MNode> }
  | { kind: 'symlink'; id: number; target: string };

/** The crash harness's xorshift32, with a pick. */
export class Rng extends BaseRng {
  pick<T>(a: T[]): T {
    return a[this.int(a.length)];
  }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    const kind = this.int(3);
    if (kind === 0) for (let i = 0; i < n; i++) b[i] = this.next() & 0xff;
    else if (kind === 1) b.fill('compressible text ' + this.int(1000) + ' ');
    // kind 2: zeros
    return b;
  }
}

/** Every path in the model, with its node (directories end in no slash). */
export function walkModel(root: MNode & { kind: 'dir' }, prefix = ''): [string, MNode][] {
  const out: [string, MNode][] = [];
  for (const [name, n] of root.entries) {
    const p = `${prefix}/${name}`;
    out.push([p, n]);
    if (n.kind === 'dir') out.push(...walkModel(n, p));
  }
  return out;
}
